"""Load for the callback benchmarks: distinct signed requests, then ``wrk`` or the built-in generator.

Requests are built ahead of time (every one a real signed, encrypted WeChat callback with its own
MsgId) and written to a file of ``path<TAB>body`` lines; both generators read that file, so the
systems compared get the same messages, and no request is sent twice (a repeated MsgId would be
answered from the dedupe record, cheaper than a new message). ``wrapped`` in a result says a
generator ran out and started again: then the pool was too small for the run.

``wrk`` (C, one thread; the Debian package) is used when installed: on a 2-core machine it takes the
least CPU from the server being measured. Otherwise the built-in generator: this module run as a
process of its own (``python -m bot.bench.load``), so its CPU can be accounted for like wrk's. It is
a minimal HTTP/1.1 client on asyncio protocols (pre-built request bytes, keep-alive, reconnecting
after ``Connection: close``), not aiohttp's client: aiohttp's costs several times more CPU per
request, which on 2 cores would come out of the server's share. Two modes:

- closed loop (``--connections N``): N connections, each sending its next request when answered;
  what ``wrk -c N`` does.
- open loop (``--rate R``): requests start at R a second whatever the server does, like WeChat,
  which does not slow down when we do; a request waits for a free connection (up to
  ``--max-connections``) and its latency counts from when it was due, so queueing is not hidden.

Both print one JSON object (:class:`LoadResult`) on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

if TYPE_CHECKING:
    from bot.config import WeChatConfig

ACCOUNT = "gh_safebell_bench"

# What parents write to a school's account: the help command, and ordinary words nobody routes
# (answered with the "not understood" text). None of them is a command with side effects.
TEXTS = (
    ("帮助", 25),
    ("你好", 15),
    ("老师您好，孩子今天发烧了，想请一天假。", 15),
    ("明天几点放学？", 15),
    ("谢谢老师", 15),
    ("请问周末的安全作业在哪里看？", 15),
)


# -- requests ---------------------------------------------------------------------------------------
def openids(n: int, seed: int = 1) -> list[str]:
    from bot.wechat.emulator.follower import new_openid

    rng = random.Random(seed)
    return [new_openid(rng) for _ in range(n)]


def text_requests(
    cfg: WeChatConfig,
    count: int,
    *,
    senders: Sequence[str],
    texts: Sequence[tuple[str, int]] = TEXTS,
    seed: int = 0,
    first_msg_id: int | None = None,
) -> Iterator[tuple[str, bytes]]:
    """``count`` signed, encrypted (safe mode) text callbacks: (path with query, body), own MsgId each.

    Senders are taken in order (wrapping), texts by weight. The same envelope as the emulator's
    :func:`~bot.wechat.emulator.follower.build_callback` (the tests check the bot answers these),
    built without its XML re-parsing: a 100,000-request pool takes seconds, not minutes.
    """
    from wechatpy.crypto import PrpCrypto

    from bot.wechat.emulator.follower import text_message
    from bot.wechat.protocol import signature

    rng = random.Random(seed)
    words = [t for t, _ in texts]
    weights = [w for _, w in texts]
    msg_id = first_msg_id if first_msg_id is not None else rng.randint(10**16, 10**17 - 10**9)
    prp = PrpCrypto(base64.b64decode(cfg.aes_key + "="))
    ts = str(int(time.time()))
    for i in range(count):
        openid = senders[i % len(senders)]
        nonce = str(1_000_000_000 + rng.randrange(10**9))
        xml = text_message(ACCOUNT, openid, rng.choices(words, weights)[0], msg_id=msg_id + i, create_time=int(ts))
        encrypt = prp.encrypt(xml, cfg.app_id).decode("ascii")
        sig = signature(cfg.token, ts, nonce)
        query = {"signature": sig, "timestamp": ts, "nonce": nonce, "openid": openid, "encrypt_type": "aes",
                 "msg_signature": signature(cfg.token, ts, nonce, encrypt)}  # fmt: skip
        body = f"<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
        yield "/wechat?" + urlencode(query), body.encode("ascii")


def write_requests(requests: Iterable[tuple[str, bytes]], path: Path) -> int:
    """The request file both generators read: one ``path<TAB>body`` line per request."""
    n = 0
    with path.open("wb") as f:
        for target, body in requests:
            if b"\t" in body or b"\n" in body or "\t" in target:
                raise ValueError("a request body with a tab or a newline cannot go in the request file")
            f.write(target.encode("ascii") + b"\t" + body + b"\n")
            n += 1
    return n


def read_requests(path: Path) -> list[tuple[str, bytes]]:
    out = []
    with path.open("rb") as f:
        for line in f:
            target, _, body = line.rstrip(b"\n").partition(b"\t")
            out.append((target.decode("ascii"), body))
    return out


# -- results ----------------------------------------------------------------------------------------
# The quantiles each result gives of its latencies (1 % steps, then 0.1 % steps above 99 %), so that
# several turns' distributions can be merged (:func:`merged_quantile`): wrk gives percentiles only.
QUANTILES: tuple[float, ...] = (*(i / 100 for i in range(1, 100)), *(i / 1000 for i in range(991, 1000)), 0.9999, 1.0)


def merged_quantile(results: Iterable[LoadResult], q: float) -> float:
    """The ``q`` quantile (ms) of all the answers of ``results`` together: each result's latencies
    taken at ``QUANTILES``, weighted by its answers. A latency between two grid points counts as the
    upper one, so the figure can only come out higher than the exact one, never lower."""
    points: list[tuple[float, float]] = []
    for r in results:
        if not r.requests or len(r.quantiles_ms) != len(QUANTILES):
            continue
        below = 0.0
        for g, value in zip(QUANTILES, r.quantiles_ms, strict=True):
            points.append((value, (g - below) * r.requests))
            below = g
    if not points:
        return 0.0
    points.sort()
    total = sum(w for _, w in points)
    seen = 0.0
    for value, weight in points:
        seen += weight
        if seen >= q * total - 1e-9:
            return value
    return points[-1][0]


@dataclass
class LoadResult:
    generator: str
    requests: int = 0  # answered (any status)
    seconds: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    errors: int = 0  # connection errors and timeouts (no answer)
    status_5xx: int = 0
    status_other: int = 0  # answered, but neither 200 nor 5xx
    replies: int = 0  # 200 with a reply body
    success: int = 0  # 200 with "success" or an empty body (no reply, or shed)
    over_1s: int = -1  # answers later than 1 s (-1: this generator cannot count them)
    wrapped: int = 0  # times a generator ran out of distinct requests and started again
    quantiles_ms: list[float] = field(default_factory=list)  # latency at each of QUANTILES
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> LoadResult:
        return cls(**json.loads(text))


# -- wrk --------------------------------------------------------------------------------------------
# Paced: each connection waits an exponential time (mean: connections / rate) before each request,
# so together they offer ``rate`` requests a second as independent arrivals, as long as answers are
# quick; a slow server holds its connections and gets fewer (reported as answered vs offered).
_WRK_DELAY = r"""
function delay()
  return -math.log(1 - math.random()) * mean_delay
end
"""
WRK_SCRIPT = r"""
-- Requests from a file of "path<TAB>body" lines (args: file, threads); each thread sends its share.
local threads = {}
function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end
function init(args)
  local nthreads = tonumber(args[2])
  local headers = {["Content-Type"] = "text/xml"}
  reqs = {}
  local i = 0
  for line in io.lines(args[1]) do
    if i % nthreads == id then
      local tab = line:find("\t", 1, true)
      reqs[#reqs + 1] = wrk.format("POST", line:sub(1, tab - 1), headers, line:sub(tab + 1))
    end
    i = i + 1
  end
  n, wrapped, five, success, replies, other = 0, 0, 0, 0, 0, 0
  mean_delay = tonumber(args[3]) or 0
  math.randomseed(os.time() + 7919 * id)
end
function request()
  n = n + 1
  if n > #reqs then
    n = 1
    wrapped = wrapped + 1
  end
  return reqs[n]
end
function response(status, headers, body)
  if status >= 500 then
    five = five + 1
  elseif status == 200 then
    if body == "success" or body == "" then success = success + 1 else replies = replies + 1 end
  else
    other = other + 1
  end
end
-- DELAY
function done(summary, latency, requests)
  local t = {five = 0, success = 0, replies = 0, other = 0, wrapped = 0}
  for _, thread in ipairs(threads) do
    for k, _ in pairs(t) do t[k] = t[k] + thread:get(k) end
  end
  local e = summary.errors
  local q = {}
  for _, p in ipairs(grid) do  -- (wrk 4.1's percentile(100) is 0: its rank is one past the count)
    q[#q + 1] = string.format("%d", p >= 100 and latency.max or latency:percentile(p))
  end
  io.write(string.format(
    '\n{"requests": %d, "duration_us": %d, "errors": %d, "status_errors": %d, "p50_us": %d, "p90_us": %d, '
    .. '"p99_us": %d, "max_us": %d, "five": %d, "success": %d, "replies": %d, "other": %d, "wrapped": %d, '
    .. '"quantiles_us": [%s]}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    t.five, t.success, t.replies, t.other, t.wrapped, table.concat(q, ", ")))
end
"""


def wrk_path() -> str | None:
    return shutil.which("wrk")


def run_wrk(
    base_url: str,
    request_file: Path,
    *,
    connections: int,
    seconds: float,
    threads: int = 1,
    timeout: float = 10.0,
    rate: float = 0.0,
) -> tuple[LoadResult, subprocess.Popen[bytes]]:
    """Run wrk to completion: as fast as answered, or paced at ``rate`` requests a second in all.

    Returns its result (and the finished process, for CPU accounting)."""
    wrk = wrk_path()
    if wrk is None:
        raise RuntimeError("wrk is not installed")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="sb-wrk-", delete=False) as script:
        grid = "grid = {" + ", ".join(f"{100 * g:g}" for g in QUANTILES) + "}\n"
        script.write(grid + WRK_SCRIPT.replace("-- DELAY", _WRK_DELAY if rate else ""))
    mean_delay_ms = 1000.0 * connections / rate if rate else 0.0
    try:
        argv = [wrk, "-t", str(threads), "-c", str(max(connections, threads)), "-d", f"{max(1, round(seconds))}s",
                "--timeout", f"{timeout:g}s", "-s", script.name, base_url,
                "--", str(request_file), str(threads), f"{mean_delay_ms:.3f}"]  # fmt: skip
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = proc.communicate(timeout=seconds + timeout + 120)
    finally:
        Path(script.name).unlink(missing_ok=True)
    line = next((x for x in reversed(out.decode().splitlines()) if x.startswith("{")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {err.decode().strip() or out.decode().strip()}")
    w = json.loads(line)
    # wrk counts non-2xx/3xx answers as "status errors": they are answers, split below by status
    result = LoadResult(
        generator="wrk",
        requests=int(w["requests"]),
        seconds=w["duration_us"] / 1e6,
        p50_ms=w["p50_us"] / 1000,
        p90_ms=w["p90_us"] / 1000,
        p99_ms=w["p99_us"] / 1000,
        max_ms=w["max_us"] / 1000,
        errors=int(w["errors"]),
        status_5xx=int(w["five"]),
        status_other=int(w["other"]),
        replies=int(w["replies"]),
        success=int(w["success"]),
        over_1s=0 if w["max_us"] <= 1_000_000 else -1,  # wrk gives no count, only the max
        wrapped=int(w["wrapped"]),
        quantiles_ms=[x / 1000 for x in w["quantiles_us"]],
        extra={"offered_rps": rate} if rate else {},
    )
    return result, proc


# -- the built-in generator -------------------------------------------------------------------------
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_CLOSE = re.compile(rb"\r\nconnection:[ \t]*close", re.IGNORECASE)


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes, bool]] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[: end + 2])
        m = _CONTENT_LENGTH.search(head)
        length = int(m.group(1)) if m else 0
        if len(self.buffer) < end + 4 + length:
            return
        body = bytes(self.buffer[end + 4 : end + 4 + length])
        del self.buffer[: end + 4 + length]
        close = _CLOSE.search(head) is not None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((int(head[9:12]), body, close))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed before the answer"))

    async def request(self, raw: bytes) -> tuple[int, bytes, bool]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _Generator:
    def __init__(self, host: str, port: int, requests: list[tuple[str, bytes]], timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        head = f"Host: {host}:{port}\r\nContent-Type: text/xml\r\n"
        self.raw = [
            f"POST {target} HTTP/1.1\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode("ascii") + body
            for target, body in requests
        ]
        self.next = 0
        self.wrapped = 0
        self.latencies = array("d")
        self.result = LoadResult(generator="built-in")
        self.counting = False
        self.all_success = 0

    def take(self) -> bytes:
        if self.next >= len(self.raw):
            self.next = 0
            self.wrapped += 1
        raw = self.raw[self.next]
        self.next += 1
        return raw

    async def connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _transport, conn = await loop.create_connection(_Connection, self.host, self.port)
        return conn

    def record(self, status: int, body: bytes, latency: float) -> None:
        if status == 200 and body in (b"success", b""):
            self.all_success += 1  # warm-up included: every "success" should have left a trace
        if not self.counting:
            return
        r = self.result
        r.requests += 1
        self.latencies.append(latency)
        if status >= 500:
            r.status_5xx += 1
        elif status == 200:
            if body in (b"success", b""):
                r.success += 1
            else:
                r.replies += 1
        else:
            r.status_other += 1

    async def send(self, conn: _Connection | None, due: float) -> _Connection | None:
        """Send the next request on ``conn`` (or a new connection); the connection to keep, if any."""
        try:
            if conn is None or conn.closed:
                conn = await self.connect()
            status, body, close = await asyncio.wait_for(conn.request(self.take()), self.timeout)
        except (OSError, TimeoutError):
            if self.counting:
                self.result.errors += 1
            if conn is not None:
                conn.close()
            return None
        self.record(status, body, time.perf_counter() - due)
        if close:
            conn.close()
            return None
        return conn

    def finish(self, seconds: float) -> LoadResult:
        r = self.result
        r.seconds = seconds
        r.wrapped = self.wrapped
        lat = sorted(self.latencies)
        if lat:
            r.p50_ms, r.p90_ms, r.p99_ms = (1000 * lat[min(len(lat) - 1, math.ceil(q * len(lat)) - 1)]
                                            for q in (0.5, 0.9, 0.99))  # fmt: skip
            r.max_ms = 1000 * lat[-1]
            r.quantiles_ms = [1000 * lat[min(len(lat) - 1, math.ceil(q * len(lat)) - 1)] for q in QUANTILES]
        r.over_1s = sum(1 for x in lat if x > 1.0)
        return r


async def closed_loop(
    host: str, port: int, requests: list[tuple[str, bytes]], *, connections: int, seconds: float,
    warmup: float = 0.0, answer_timeout: float = 10.0,
) -> LoadResult:  # fmt: skip
    """``connections`` connections, each sending its next request as soon as it has its answer."""
    gen = _Generator(host, port, requests, answer_timeout)
    stop_at = time.perf_counter() + warmup + seconds

    async def one_connection() -> None:
        conn: _Connection | None = None
        while time.perf_counter() < stop_at:
            conn = await gen.send(conn, time.perf_counter())
        if conn is not None:
            conn.close()

    async def start_counting() -> float:
        await asyncio.sleep(warmup)
        gen.counting = True
        return time.perf_counter()

    counter = asyncio.create_task(start_counting())
    await asyncio.gather(*(one_connection() for _ in range(connections)))
    return gen.finish(time.perf_counter() - await counter)


async def open_loop(
    host: str, port: int, requests: list[tuple[str, bytes]], *, rate: float, seconds: float,
    max_connections: int = 4096, warmup: float = 0.0, answer_timeout: float = 10.0,
) -> LoadResult:  # fmt: skip
    """Requests due at ``rate`` a second; each takes an idle connection or opens one (up to the limit)."""
    gen = _Generator(host, port, requests, answer_timeout)
    idle: list[_Connection] = []
    slots = asyncio.Semaphore(max_connections)
    tasks: set[asyncio.Task[None]] = set()
    peak = 0

    async def one(due: float) -> None:
        async with slots:
            conn = idle.pop() if idle else None
            kept = await gen.send(conn, due)
            if kept is not None:
                idle.append(kept)

    start = time.perf_counter()
    count_from = start + warmup
    end = count_from + seconds
    sent = 0
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        if not gen.counting and now >= count_from:
            gen.counting = True
        due_count = int((now - start) * rate) + 1
        while sent < due_count:
            t = asyncio.create_task(one(start + sent / rate))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
            sent += 1
        peak = max(peak, len(tasks))
        await asyncio.sleep(0.001)
    if tasks:
        await asyncio.wait(list(tasks), timeout=answer_timeout + 5)
    for conn in idle:
        conn.close()
    result = gen.finish(seconds)
    result.extra = {"offered_rps": rate, "sent": sent, "peak_outstanding": peak, "all_success": gen.all_success}
    return result


# -- running the built-in generator as a process ------------------------------------------------------
def builtin_argv(base_url: str, request_file: Path, *, seconds: float, connections: int = 32,
                 rate: float = 0.0, warmup: float = 0.0, max_connections: int = 4096) -> list[str]:  # fmt: skip
    argv = [sys.executable, "-m", "bot.bench.load", base_url, str(request_file), "--seconds", f"{seconds:g}",
            "--connections", str(connections), "--warmup", f"{warmup:g}",
            "--max-connections", str(max_connections)]  # fmt: skip
    if rate:
        argv += ["--rate", f"{rate:g}"]
    return argv


def run_builtin(argv: list[str], *, seconds: float) -> tuple[LoadResult, subprocess.Popen[bytes]]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=seconds + 180)
    if proc.returncode != 0:
        raise RuntimeError(f"the load generator failed: {err.decode().strip()[-2000:]}")
    return LoadResult.from_json(out.decode().strip().splitlines()[-1]), proc


def _main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bot.bench.load", description="the built-in load generator")
    p.add_argument("url", help="http://host:port (the request file holds the paths)")
    p.add_argument("requests", type=Path, help="file of path<TAB>body lines")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--connections", type=int, default=32, help="closed loop: connections (default 32)")
    p.add_argument("--rate", type=float, default=0.0, help="open loop: requests per second")
    p.add_argument("--max-connections", type=int, default=4096, help="open loop: most connections at once")
    p.add_argument("--warmup", type=float, default=0.0, help="seconds sent but not counted, first")
    p.add_argument("--timeout", type=float, default=10.0)
    args = p.parse_args(argv)
    host, _, port = args.url.removeprefix("http://").rstrip("/").partition(":")
    requests = read_requests(args.requests)
    runner: Any = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop  # the generator's own loop: the lighter it is, the more CPU the server keeps

        runner = uvloop.run
    if args.rate:
        run = open_loop(host, int(port or 80), requests, rate=args.rate, seconds=args.seconds,
                        max_connections=args.max_connections, warmup=args.warmup,
                        answer_timeout=args.timeout)  # fmt: skip
    else:
        run = closed_loop(host, int(port or 80), requests, connections=args.connections, seconds=args.seconds,
                          warmup=args.warmup, answer_timeout=args.timeout)  # fmt: skip
    print(runner(run).to_json())
    return 0


if __name__ == "__main__":
    sys.exit(_main())
