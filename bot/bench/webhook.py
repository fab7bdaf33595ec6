"""``bot bench webhook``: the WeChat callback, full pipeline against two baselines, in one run.

The systems, started by the benchmark on this machine, all with the same account and messages:

- ``full``: ``bot serve`` (one process) in safe mode: signature, timestamp window, decrypt, parse,
  retry dedupe, per-user lock and state, identity, router, handler, reply, encrypt; a fresh embedded
  Redis on a unix socket (AOF off: what is measured is the callback, not the disk).
- ``echo``: a minimal aiohttp + wechatpy echo bot (:mod:`bot.bench.baselines.aiohttp_echo`).
- ``werobot``: a WeRoBot echo bot under gunicorn with one sync worker (:mod:`.baselines.werobot_echo`).

Messages: signed, encrypted text callbacks from 20,000 parents (「帮助」 and ordinary words), each
with its own MsgId (:mod:`bot.bench.load`). Load: ``wrk`` when installed, else the built-in generator,
at 32 connections, after a warm-up on other messages.

The systems are measured in turns (``--rounds``, default 6, of ``--seconds / rounds`` each, their
order rotating), all running meanwhile: whatever else the machine is doing falls on each of them
alike, and every system gets the same messages in each round (the full pipeline sees each once;
``--workers 2``, sharing its Redis, gets them under MsgIds of its own, else they would be retries).
The system measured runs alone on CPU 0, Redis and the load generator on the other CPUs (``--no-pin``
to let the kernel place them): each system gets one core, and ``*_us_per_request`` (its CPU time
per answer) reads the same whatever else ran. ``cpu_other_programs`` says how busy the machine was
with programs other than these: on a shared machine, a run with it above ~0.1 core is noise. The CPU
figures (``*_cpu_*``, in cores) are read over the middle of each turn, while the load runs steadily:
not what the generator spends reading its requests before its clock starts.

Then, for ``full`` only:

- ``bot serve --workers 2``, measured in turns with one process (``scaling_2_workers``). On a 2-core
  machine the load generator and Redis take part of the cores: the CPU each used is reported
  (``*_cpu_*``, in cores) with what that left for the server, so the ratio can be read against it.
- a saturation run: requests offered at 3× what one process answered, where the process must shed
  load (``success`` now, the message kept in the outbox for the worker) rather than answer late: no
  5xx, no answer later than 1 s, every ``success`` kept. With wrk: ``--saturation-connections``
  (1,024) connections each sending at random (exponential) intervals, 3× capacity in all while
  answers are quick; a process that answered slowly would hold them and get less, so the figures
  give what was offered and what was answered. Without wrk: the built-in generator, open loop.

Latencies across turns: p50 and p99 are of all the answers of all the turns together (each turn's
distribution, which wrk gives as percentiles at 1 % steps and 0.1 % steps above 99 %, merged by
answers; rounded up to those steps, never down); ``*_p99_worst_turn`` is the largest of the turns'
own p99s, max the largest latency of all.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bot.bench.core import Figure, Figures, at_least, at_most, bench_redis, benchmark, exactly, note
from bot.bench.load import (
    LoadResult,
    builtin_argv,
    merged_quantile,
    openids,
    run_builtin,
    run_wrk,
    text_requests,
    write_requests,
    wrk_path,
)
from bot.bench.procs import (
    bench_config,
    children,
    cores,
    cpu_seconds,
    env,
    free_port,
    pin,
    process,
    progress,
    redis_pid,
    serve_process,
)

if TYPE_CHECKING:
    import subprocess

    from bot.config import Config
    from bot.store.redis import Redis

SENDERS = 20_000
SYSTEMS = ("werobot", "echo", "full")
_STATEFUL = ("full", "full_2w")  # the systems keeping their dedupe records (and state) in the one Redis


def _options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=18.0, help="measured seconds per system (default 18)")
    p.add_argument("--connections", type=int, default=32, help="connections (default 32)")
    p.add_argument("--senders", type=int, default=SENDERS, help=f"distinct parents writing (default {SENDERS:,})")
    p.add_argument("--rounds", type=int, default=6,
                   help="turns the seconds are split into (default 6: slow spells fall on all alike)")  # fmt: skip
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring, not counted")
    p.add_argument("--generator", choices=("auto", "wrk", "builtin"), default="auto",
                   help="wrk when installed (auto), or the built-in generator")  # fmt: skip
    p.add_argument("--systems", default=",".join(SYSTEMS), help="systems to compare (default werobot,echo,full)")
    p.add_argument("--no-pin", action="store_true",
                   help="do not pin the system measured to CPU 0 and Redis and the load to the others")  # fmt: skip
    p.add_argument("--no-workers", action="store_true", help="skip bot serve --workers 2")
    p.add_argument("--no-saturation", action="store_true", help="skip the saturation run")
    p.add_argument("--saturation", type=float, default=3.0, help="offered load as a multiple of capacity (3)")
    p.add_argument("--saturation-seconds", type=float, default=10.0, help="length of the saturation run (default 10)")
    p.add_argument("--saturation-connections", type=int, default=1024,
                   help="connections WeChat's side holds during the saturation run (default 1024)")  # fmt: skip


# -- measuring ---------------------------------------------------------------------------------------
@dataclass
class Tally:
    """One system's turns added up: answers, latencies, and the CPU each party used meanwhile."""

    name: str
    pids: list[int]
    port: int
    turns: list[LoadResult] = field(default_factory=list)
    cpu_server: float = 0.0  # CPU seconds
    cpu_generator: float = 0.0
    cpu_redis: float = 0.0
    cpu_other: float = 0.0  # the rest of the machine: other programs
    seconds: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> int:
        return sum(t.requests for t in self.turns)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def p99(self) -> float:
        """Of all the answers of all the turns (see ``merged_quantile``)."""
        return merged_quantile(self.turns, 0.99)

    def figures(self, prefix: str) -> Figures:
        t = self.turns
        span = max(self.seconds, 1e-9)
        return {
            f"{prefix}_rps": Figure(self.rps, "req/s"),
            f"{prefix}_p50": Figure(merged_quantile(t, 0.5), "ms"),
            f"{prefix}_p99": Figure(self.p99, "ms"),
            f"{prefix}_p99_worst_turn": Figure(max((x.p99_ms for x in t), default=0.0), "ms"),
            f"{prefix}_errors": Figure(sum(x.errors + x.status_other for x in t), "requests"),
            f"{prefix}_5xx": Figure(sum(x.status_5xx for x in t), "requests"),
            f"{prefix}_cpu_server": Figure(self.cpu_server / span, "cores"),
        }


def _busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (Linux /proc/stat; 0 elsewhere)."""
    import os

    try:
        with open("/proc/stat", encoding="ascii") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    """CPU seconds of this process's children that have exited (the load generator, once done)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return float(usage.ru_utime + usage.ru_stime)


def _load(
    generator: str, url: str, path: Path, *, seconds: float, connections: int, rate: float = 0.0, warmup: float = 0.0
) -> tuple[LoadResult, subprocess.Popen[bytes]]:
    if generator == "wrk" and not warmup:
        return run_wrk(url, path, connections=connections, seconds=seconds, rate=rate)
    argv = builtin_argv(url, path, seconds=seconds, connections=connections, rate=rate, warmup=warmup,
                        max_connections=connections)  # fmt: skip
    return run_builtin(argv, seconds=seconds + warmup)


async def _turn(tally: Tally, generator: str, path: Path, redis: int, *, seconds: float, connections: int,
                rate: float = 0.0, warmup: float = 0.0) -> LoadResult:  # fmt: skip
    """One measured turn of one system; its CPU accounting added to the tally.

    The CPU each party used is read over the middle of the turn (:func:`_steady`), scaled to the
    turn: what the load generator spends before its clock starts (reading its request file) or a
    warm-up would otherwise be counted as if it had taken CPU from the server meanwhile."""
    before = cpu_seconds(tally.pids), cpu_seconds([redis]), _children_cpu(), _busy_seconds()
    steady = asyncio.ensure_future(_steady(tally.pids, redis, lead=warmup + _STEADY_FROM * seconds,
                                           span=(_STEADY_TO - _STEADY_FROM) * seconds))  # fmt: skip
    try:
        load, _ = await asyncio.to_thread(
            _load, generator, tally.url, path, seconds=seconds, connections=connections, rate=rate, warmup=warmup
        )
    except BaseException:
        steady.cancel()  # the load failed: its error now, not after the window's sleep
        raise
    window = await steady
    after = cpu_seconds(tally.pids), cpu_seconds([redis]), _children_cpu(), _busy_seconds()
    if window is not None:  # cores each party used in the window, times the turn's length
        server, redis_cpu, gen, other = (x * load.seconds for x in window)
    else:  # (the generator ended early, or no /proc: the whole run, an upper bound for the generator)
        share = load.seconds / max(load.seconds + warmup, 1e-9)
        server, redis_cpu, gen = after[0] - before[0], after[1] - before[1], after[2] - before[2]
        other = max(0.0, (after[3] - before[3]) - server - redis_cpu - gen)
        server, redis_cpu, gen, other = server * share, redis_cpu * share, gen * share, other * share
    tally.cpu_server += server
    tally.cpu_redis += redis_cpu
    tally.cpu_generator += gen
    tally.cpu_other += other
    tally.seconds += load.seconds
    tally.turns.append(load)
    return load


# The window of a turn its CPU accounting is read over: from a quarter in to a tenth before its end.
_STEADY_FROM, _STEADY_TO = 0.25, 0.9


def _generator_pids() -> list[int]:
    """The load generator now running: this process's child running wrk or ``bot.bench.load``."""
    import os

    out = []
    for pid in children(os.getpid()):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
            if Path(argv[0].decode(errors="replace")).name == "wrk" or b"bot.bench.load" in argv:
                out.append(pid)
    return out


async def _steady(pids: list[int], redis: int, *, lead: float, span: float) -> tuple[float, ...] | None:
    """Cores the server, Redis, the load generator and everything else used from ``lead`` seconds
    after the turn began, for ``span`` seconds; None if the generator was not seen running throughout."""
    await asyncio.sleep(lead)
    gen = _generator_pids()
    if not gen:
        return None
    start = time.monotonic(), cpu_seconds(pids), cpu_seconds([redis]), cpu_seconds(gen), _busy_seconds()
    await asyncio.sleep(span)
    if _generator_pids() != gen:
        return None
    end = time.monotonic(), cpu_seconds(pids), cpu_seconds([redis]), cpu_seconds(gen), _busy_seconds()
    wall = end[0] - start[0]
    if wall <= 0:
        return None
    server, redis_cpu, load, busy = ((end[i] - start[i]) / wall for i in range(1, 5))
    return server, redis_cpu, load, max(0.0, busy - server - redis_cpu - load)


class Messages:
    """The one sequence of distinct requests every system is sent, cut into files as needed."""

    def __init__(self, cfg: Config, folder: Path, senders: int = SENDERS) -> None:
        self.cfg = cfg
        self.folder = folder
        self.senders = openids(senders)
        self.next_id = 10**16 + 7_000_000
        self.files = 0
        self.seed = 0

    def chunk(self, count: int, *, again: bool = False) -> Path:
        """The next ``count`` requests (new MsgIds, fresh timestamps) in a file of their own.

        ``again``: the same senders writing the same words as in the last chunk, under new MsgIds: the
        same messages for a second system that keeps state in the same Redis, new to it (the first one's
        copies would be retries to it, answered from the dedupe record: less work)."""
        self.files += 1
        self.seed += 0 if again else 1
        path = self.folder / f"requests-{self.files}.txt"
        progress(f"  building {count:,} signed, encrypted requests …")
        requests = text_requests(self.cfg.wechat, count, senders=self.senders, seed=self.seed,
                                 first_msg_id=self.next_id)  # fmt: skip
        write_requests(requests, path)
        self.next_id += count
        return path


@dataclass
class Placement:
    """Which CPUs the system measured gets, and which the rest (Redis, load generator, this process)."""

    server: set[int] | None = None  # None: no pinning, the kernel places everything
    rest: set[int] | None = None
    cores: int = field(default_factory=cores)  # all this benchmark may use (read before pinning)

    @classmethod
    def of(cls, args: argparse.Namespace) -> Placement:
        import os

        if args.no_pin or not hasattr(os, "sched_setaffinity") or cores() < 2:
            return cls()
        cpus = sorted(os.sched_getaffinity(0))
        return cls({cpus[0]}, set(cpus[1:]))

    def __str__(self) -> str:
        if self.server is None:
            return "not pinned"
        rest = ",".join(map(str, sorted(self.rest or ())))
        return f"system measured on CPU {min(self.server)}; Redis, load generator on CPU {rest}"


_PLACEMENT = Placement()


@contextlib.contextmanager
def _start(name: str, cfg: Config) -> Iterator[Tally]:
    """Start one system on a free port (pinned as placed); the tally knows the server's pids."""
    with _start_unpinned(name, cfg) as tally:
        if name != "full_2w":
            pin(tally.pids, _PLACEMENT.server)
        yield tally


@contextlib.contextmanager
def _start_unpinned(name: str, cfg: Config) -> Iterator[Tally]:
    from bot.bench.baselines import account_env

    port = free_port()
    w = cfg.wechat
    environ = {**env(cfg), **account_env(w.token, w.aes_key, w.app_id)}
    if name in ("full", "full_2w"):
        cfg.server.port = port
        with serve_process(cfg, 2 if name == "full_2w" else 1) as proc:
            yield Tally(name, [proc.pid, *children(proc.pid)], port)
    elif name == "echo":
        argv = [sys.executable, "-m", "bot.bench.baselines.aiohttp_echo", "--port", str(port)]
        with process(argv, port=port, environ=environ, quiet=False) as proc:
            yield Tally(name, [proc.pid], port)
    elif name == "werobot":
        gunicorn = Path(sys.executable).with_name("gunicorn")
        if not gunicorn.exists():
            raise RuntimeError("the WeRoBot baseline needs the bench extra: pip install -e '.[bench]' (make bench)")
        argv = [str(gunicorn), "-w", "1", "-k", "sync", "-b", f"127.0.0.1:{port}", "--log-level", "warning",
                "bot.bench.baselines.werobot_echo:app"]  # fmt: skip
        with process(argv, port=port, environ=environ, quiet=False) as proc:
            deadline = time.monotonic() + 10
            while not children(proc.pid) and time.monotonic() < deadline:  # the arbiter forks its worker
                time.sleep(0.05)
            yield Tally(name, [proc.pid, *children(proc.pid)], port)
    else:
        raise ValueError(f"unknown system {name!r} (known: {', '.join(SYSTEMS)})")


@contextlib.asynccontextmanager
async def _running(names: list[str], cfg: Config) -> AsyncIterator[list[Tally]]:
    with contextlib.ExitStack() as stack:
        tallies = []
        for name in names:
            progress(f"{name}: starting …")
            tallies.append(stack.enter_context(_start(name, cfg)))
        yield tallies


async def _in_turns(args: argparse.Namespace, generator: str, tallies: list[Tally], messages: Messages,
                    redis: int) -> None:  # fmt: skip
    """Warm every system up, then measure them in turns on the same chunks of messages."""
    warm = messages.chunk(8000)
    estimate = 0.0
    for t in tallies:
        if args.warmup > 0:
            progress(f"{t.name}: warming up {args.warmup:g} s …")
            load, _ = await asyncio.to_thread(_load, generator, t.url, warm, seconds=args.warmup,
                                              connections=args.connections)  # fmt: skip
            estimate = max(estimate, load.rps)
    rounds = max(1, args.rounds)
    slice_seconds = args.seconds / rounds
    for k in range(rounds):
        count = int(max(estimate, 3000) * slice_seconds * 1.5) + 1000
        chunk = messages.chunk(count)
        files: dict[str, Path] = {}
        taken = False
        for t in tallies:
            if t.name in _STATEFUL and taken:  # ``full_2w`` after ``full``: one Redis, so MsgIds of its own
                files[t.name] = messages.chunk(count, again=True)
            else:
                files[t.name] = chunk
                taken = taken or t.name in _STATEFUL
        for t in tallies[k % len(tallies) :] + tallies[: k % len(tallies)]:
            load = await _turn(t, generator, files[t.name], redis, seconds=slice_seconds, connections=args.connections)
            progress(f"{t.name}: {load.rps:,.0f} req/s, p99 {load.p99_ms:.1f} ms (turn {k + 1}/{rounds})")


def _generator(args: argparse.Namespace) -> str:
    if args.generator == "wrk" and wrk_path() is None:
        raise RuntimeError("--generator wrk, but wrk is not installed (Debian/Ubuntu: apt install wrk)")
    if args.generator == "auto":
        return "wrk" if wrk_path() else "builtin"
    return str(args.generator)


# -- the benchmark -----------------------------------------------------------------------------------
@benchmark("webhook", help="callbacks/s: bot serve vs aiohttp+wechatpy echo vs WeRoBot; 2 workers; 3× saturation",
           options=_options)  # fmt: skip
async def webhook(args: argparse.Namespace) -> Figures:
    import os

    global _PLACEMENT
    generator = _generator(args)
    _PLACEMENT = Placement.of(args)
    try:
        return await _webhook(args, generator)
    finally:
        pin([os.getpid()], None)  # this process back on every CPU (the machine block reads them)


async def _webhook(args: argparse.Namespace, generator: str) -> Figures:
    import os

    note("load_generator", generator)
    note("connections", str(args.connections))
    note("placement", str(_PLACEMENT))
    names = [s.strip() for s in args.systems.split(",") if s.strip()]
    figures: Figures = {}
    async with bench_redis() as r:
        path = str(r.connection_pool.connection_kwargs.get("path", ""))
        redis = redis_pid(await r.info("server"))
        pin([redis, os.getpid()], _PLACEMENT.rest)  # and the load generators, which this process starts
        cfg = bench_config(f"unix://{path}", free_port())
        with tempfile.TemporaryDirectory(prefix="sb-webhook-") as folder:
            messages = Messages(cfg, Path(folder), args.senders)
            async with _running(names, cfg) as tallies:
                await _in_turns(args, generator, tallies, messages, redis)
            by_name = {t.name: t for t in tallies}
            for t in tallies:
                figures.update(t.figures(t.name))
            full = by_name.get("full")
            if full is not None:
                figures.update(_full_figures(full, by_name))
                if not args.no_workers:
                    figures.update(await _two_workers(args, generator, cfg, messages, redis))
                if not args.no_saturation:
                    figures.update(await _saturation(args, generator, cfg, messages, redis, full.rps, r))
            worst = max(tallies, key=lambda t: t.cpu_other / max(t.seconds, 1e-9))
            figures["cpu_other_programs"] = Figure(worst.cpu_other / max(worst.seconds, 1e-9), "cores")
            wrapped = sum(x.wrapped for t in tallies for x in t.turns)
            figures["pool_wrapped"] = exactly(wrapped, "times", 0)  # else some messages were sent twice
    return figures


def _full_figures(full: Tally, by_name: dict[str, Tally]) -> Figures:
    span = max(full.seconds, 1e-9)
    lr = full.turns
    out: Figures = {
        "full_p99_target": at_most(full.p99, "ms", 15),
        "full_replies": Figure(sum(x.replies for x in lr), "replies"),
        "full_success_answers": Figure(sum(x.success for x in lr), "answers"),
        "full_cpu_generator": Figure(full.cpu_generator / span, "cores"),
        "full_cpu_redis": Figure(full.cpu_redis / span, "cores"),
        "full_us_per_request": Figure(full.cpu_server / max(full.requests, 1) * 1e6, "µs CPU"),
    }
    for name, target in (("werobot", 2.5), ("echo", 1.0)):
        base = by_name.get(name)
        if base is not None and base.rps:
            out[f"ratio_vs_{name}"] = at_least(full.rps / base.rps, "×", target)
            out[f"{name}_us_per_request"] = Figure(base.cpu_server / max(base.requests, 1) * 1e6, "µs CPU")
    return out


async def _two_workers(args: argparse.Namespace, generator: str, cfg: Config, messages: Messages,
                       redis: int) -> Figures:  # fmt: skip
    """One process and two, in turns, fresh: the scaling ratio and what the cores were busy with.

    Nothing pinned here: two processes need both cores, which Redis and the load share with them."""
    import os

    global _PLACEMENT
    placed, _PLACEMENT = _PLACEMENT, Placement(cores=_PLACEMENT.cores)
    pin([redis, os.getpid()], None)
    try:
        async with _running(["full", "full_2w"], cfg) as tallies:
            await _in_turns(args, generator, tallies, messages, redis)
    finally:
        _PLACEMENT = placed
        pin([redis, os.getpid()], placed.rest)
    one, two = tallies
    n = _PLACEMENT.cores
    span = max(two.seconds, 1e-9)
    out = two.figures("full_2w")
    out["scaling_2_workers"] = at_least(two.rps / one.rps if one.rps else 0.0, "×", 1.7)
    out["full_1w_rps_same_turns"] = Figure(one.rps, "req/s")
    out["full_2w_cpu_redis"] = Figure(two.cpu_redis / span, "cores")
    out["full_2w_cpu_generator"] = Figure(two.cpu_generator / span, "cores")
    out["full_2w_cpu_other_programs"] = Figure(two.cpu_other / span, "cores")
    left = max(0.0, n - (two.cpu_redis + two.cpu_generator + two.cpu_other) / span)
    out["cores_left_for_server_2w"] = Figure(left, "cores")
    # what 2 processes give per core they got, against one process per core it used: the scaling
    # a machine with cores to spare for Redis and the generator would show
    per_one = one.rps / (one.cpu_server / max(one.seconds, 1e-9)) if one.cpu_server else 0.0
    per_two = two.rps / (two.cpu_server / span) if two.cpu_server else 0.0
    out["scaling_per_server_core"] = Figure(2 * per_two / per_one if per_one else 0.0, "× (2 cores)")
    return out


async def _saturation(args: argparse.Namespace, generator: str, cfg: Config, messages: Messages, redis: int,
                      capacity: float, r: Redis) -> Figures:  # fmt: skip
    """Offered 3× capacity: shed rather than late, and every shed message kept for the worker."""
    from bot.store import keys

    rate = capacity * args.saturation
    seconds = args.saturation_seconds
    await r.delete(keys.outbox())
    async with _running(["full"], cfg) as (tally,):
        chunk = messages.chunk(int(rate * (seconds + 1) * 1.1) + 1000)
        n = args.saturation_connections
        progress(f"saturation: {rate:,.0f} req/s offered ({args.saturation:g}× capacity) on {n} connections …")
        lr = await _turn(tally, generator, chunk, redis, seconds=seconds, connections=n, rate=rate)
    span = max(tally.seconds, 1e-9)
    kept = int(await r.xlen(keys.outbox()))  # shed callbacks, and late answers (customer-service texts)
    answered_success = int(lr.extra.get("all_success", lr.success))  # (wrk has no warm-up: all counted)
    progress(f"saturation: {lr.rps:,.0f} answers/s ({lr.success:,} success), max {lr.max_ms:,.0f} ms")
    counted = {"saturation_over_1s": exactly(lr.over_1s, "answers", 0)} if lr.over_1s >= 0 else {}
    return {
        **counted,
        "saturation_offered_rps": Figure(rate, "req/s"),
        "saturation_answered_rps": Figure(lr.rps, "req/s"),
        "saturation_replies": Figure(lr.replies, "replies"),
        "saturation_shed": Figure(lr.success, "answers"),
        "saturation_kept_for_worker": Figure(kept, "messages"),
        "saturation_lost": exactly(max(0, answered_success - kept), "messages", 0),
        "saturation_5xx": exactly(lr.status_5xx, "requests", 0),
        "saturation_errors": exactly(lr.errors + lr.status_other, "requests", 0),
        "saturation_p99": Figure(lr.p99_ms, "ms"),
        "saturation_load": Figure(lr.rps / capacity if capacity else 0.0, "× capacity"),
        "saturation_cpu_server": Figure(tally.cpu_server / span, "cores"),
        "saturation_cpu_redis": Figure(tally.cpu_redis / span, "cores"),
        "saturation_cpu_generator": Figure(tally.cpu_generator / span, "cores"),
        "saturation_max": at_most(lr.max_ms, "ms", 1000),
    }


__all__ = ["webhook"]
