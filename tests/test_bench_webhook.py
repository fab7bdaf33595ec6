"""`bot bench webhook` and `bot bench ack-burst` at a small size: they run and print the documented JSON.

No timed assertions: whether the targets are met is the benchmark's to say on a real run. These
check that every system answered, nothing was lost and the figures are all there.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bot.paths import ROOT

pytestmark = pytest.mark.slow

# the bench extra (pip install -e '.[bench]'): without it the webhook bench compares two systems
HAS_WEROBOT = Path(sys.executable).with_name("gunicorn").exists() and importlib.util.find_spec("werobot") is not None


def bench(*args: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOT")}
    done = subprocess.run(
        [sys.executable, "-m", "bot", "bench", *args, "--json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("\n") == 1, done.stdout  # exactly one JSON object on stdout
    result: dict[str, Any] = json.loads(done.stdout)
    assert set(result) == {"bench", "machine", "figures"}
    for name, figure in result["figures"].items():
        assert set(figure) == {"value", "unit", "target", "met"}, name
        assert isinstance(figure["value"], int | float), name
        assert (figure["target"] is None) == (figure["met"] is None), name
    return result


def value(result: dict[str, Any], name: str) -> float:
    return float(result["figures"][name]["value"])


@pytest.mark.parametrize("generator", ["auto", "builtin"])
def test_webhook_bench_compares_the_systems_and_sheds_without_losing(generator: str) -> None:
    systems = "werobot,echo,full" if HAS_WEROBOT else "echo,full"
    result = bench("webhook", "--seconds", "2", "--rounds", "1", "--warmup", "0.5", "--systems", systems,
                   "--generator", generator, "--saturation", "1.5", "--saturation-connections", "64",
                   "--saturation-seconds", "2",
                   *(["--no-workers"] if generator == "builtin" else []))  # fmt: skip
    f = result["figures"]
    assert result["bench"] == "webhook"
    assert result["machine"]["redis"] and result["machine"]["load_generator"] in ("wrk", "builtin")
    for system in systems.split(","):
        assert value(result, f"{system}_rps") > 0, system
        assert value(result, f"{system}_errors") == 0 and value(result, f"{system}_5xx") == 0, system
        assert value(result, f"{system}_p99") >= value(result, f"{system}_p50") > 0, system
        assert value(result, f"{system}_p99_worst_turn") > 0, system
    assert value(result, "full_replies") > 0 and value(result, "full_success_answers") == 0
    assert f["ratio_vs_echo"]["target"] == "≥ 1 ×"
    if HAS_WEROBOT:
        assert f["ratio_vs_werobot"]["target"] == "≥ 2.5 ×"
    assert f["full_p99_target"]["target"] == "≤ 15 ms"
    if generator != "builtin":
        assert f["scaling_2_workers"]["target"] == "≥ 1.7 ×" and value(result, "full_2w_rps") > 0
    assert f["saturation_lost"]["met"] and f["saturation_5xx"]["met"] and f["saturation_errors"]["met"]
    assert value(result, "saturation_kept_for_worker") >= value(result, "saturation_shed")
    assert f["pool_wrapped"]["met"]


def test_ack_burst_bench_counts_every_confirmation_it_answered() -> None:
    result = bench("ack-burst", "--seconds", "3", "--warmup", "1", "--max-rate", "6000", "--connections", "16")
    f = result["figures"]
    assert result["bench"] == "ack-burst"
    assert value(result, "confirmations_in_redis") > 0
    assert value(result, "answered_200") > 0
    assert f["lost"]["met"] and f["errors"]["met"] and f["status_5xx"]["met"] and f["pool_wrapped"]["met"]
    assert f["confirmations_per_second"]["target"] == "≥ 2,000 /s"
    assert value(result, "serve_workers") == 2


def test_ack_burst_lowest_window_covers_only_the_burst() -> None:
    """The lowest 5-s rate is taken while confirmations arrive: not over the seconds before the load
    generator starts sending (wrk reads its requests first) or after it has stopped."""
    from bot.bench.ackburst import _lowest_rate

    idle_before = [(t * 0.5, 100) for t in range(8)]  # 4 s of nothing yet
    burst = [(4.0 + t * 0.5, 100 + 1000 * t) for t in range(1, 21)]  # 10 s at 2,000/s
    idle_after = [(14.0 + t * 0.5, 20_100) for t in range(1, 4)]
    assert _lowest_rate(idle_before + burst + idle_after) == 2000.0
    # a real dip inside the burst is seen
    dipped = [(t, c if t < 8.0 else c - 6000) for t, c in burst[:8]] + [(t, c - 6000) for t, c in burst[8:]]
    assert _lowest_rate(idle_before + dipped) < 2000.0
    assert _lowest_rate(idle_before) == 0.0


def test_turns_latencies_merge_into_one_distribution_rounded_up_never_down() -> None:
    """The p99 of several turns is that of all their answers: a turn of 9,900 quick answers and one
    of 100 slow ones give the quick p99 only where the slow ones are under 1 %."""
    from bot.bench.load import QUANTILES, LoadResult, merged_quantile

    def turn(n: int, latencies_ms: list[float]) -> LoadResult:
        lat = sorted(latencies_ms)
        grid = [lat[min(len(lat) - 1, math.ceil(q * len(lat)) - 1)] for q in QUANTILES]
        return LoadResult("test", requests=n, quantiles_ms=grid)

    quick, slow = turn(9_900, [1.0 + i / 10_000 for i in range(9_900)]), turn(100, [50.0] * 100)
    assert merged_quantile([quick, slow], 0.99) <= 2.0  # 1 % slow answers: p99 among the quick
    assert merged_quantile([quick, slow], 0.995) == 50.0
    assert merged_quantile([quick, turn(200, [50.0] * 200)], 0.99) == 50.0  # 2 % slow: p99 is slow
    one = [float(i) for i in range(1, 1001)]
    exact = sorted(one)[math.ceil(0.99 * len(one)) - 1]
    assert merged_quantile([turn(1000, one)], 0.99) == exact  # on the grid: exact
    assert merged_quantile([turn(1000, one)], 0.985) >= sorted(one)[math.ceil(0.985 * len(one)) - 1]  # between: up
    assert merged_quantile([], 0.99) == 0.0


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
async def test_wrk_gives_every_quantile_up_to_its_slowest_answer(aiohttp_server: Any, tmp_path: Path) -> None:
    """The quantiles the merged p99 is made of: one per grid point, never decreasing, the last the
    slowest answer (wrk's own percentile(100) is 0)."""
    from aiohttp import web

    from bot.bench.load import QUANTILES, run_wrk, write_requests

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="success")

    app = web.Application()
    app.router.add_post("/wechat", answer)
    server = await aiohttp_server(app)
    requests = tmp_path / "requests.txt"
    write_requests([(f"/wechat?n={i}", b"<xml/>") for i in range(20_000)], requests)
    result, _ = await asyncio.to_thread(run_wrk, f"http://127.0.0.1:{server.port}", requests, connections=4, seconds=1)
    q = result.quantiles_ms
    assert result.requests > 0 and len(q) == len(QUANTILES)
    assert all(a <= b for a, b in itertools.pairwise(q)) and q[0] > 0
    assert q[-1] == result.max_ms


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
async def test_cpu_is_read_over_the_middle_of_a_turn(aiohttp_server: Any, tmp_path: Path) -> None:
    """The CPU accounting window (``_steady``) finds the running generator and reads each party's
    cores while it runs; once the generator has gone there is nothing to read (the caller falls back)."""
    from aiohttp import web

    from bot.bench.load import run_wrk, write_requests
    from bot.bench.webhook import _generator_pids, _steady

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="success")

    app = web.Application()
    app.router.add_post("/wechat", answer)
    server = await aiohttp_server(app)  # in this process: it is the "server" whose CPU is read
    requests = tmp_path / "requests.txt"
    write_requests([(f"/wechat?n={i}", b"<xml/>") for i in range(50_000)], requests)
    me = os.getpid()
    window = asyncio.ensure_future(_steady([me], me, lead=0.6, span=0.8))
    result, _ = await asyncio.to_thread(run_wrk, f"http://127.0.0.1:{server.port}", requests, connections=4, seconds=2)
    cores = await window
    assert result.requests > 0 and cores is not None
    server_cores, _redis, generator, other = cores
    assert server_cores > 0.05 and generator > 0.01 and other >= 0  # both were busy in the window
    assert server_cores + generator <= (os.cpu_count() or 1) + 0.1
    assert _generator_pids() == []  # wrk has exited
    assert await _steady([me], me, lead=0, span=0.1) is None


def test_a_second_system_on_the_same_redis_gets_the_same_messages_as_new_ones(tmp_path: Path) -> None:
    """``full`` and ``full_2w`` share Redis: a round's copy for the second (``again``) has the same
    senders and words under MsgIds of its own, else it would be answering retries from the dedupe record."""
    import base64
    from xml.etree import ElementTree

    from bot.bench.load import read_requests
    from bot.bench.procs import bench_config
    from bot.bench.webhook import Messages
    from bot.wechat.aes import MessageCipher

    cfg = bench_config("unix:///nowhere", 1)
    cipher = MessageCipher(base64.b64decode(cfg.wechat.aes_key + "="), cfg.wechat.app_id)
    messages = Messages(cfg, tmp_path, senders=30)

    def opened(path: Path) -> list[tuple[str, str, str]]:
        out = []
        for _target, body in read_requests(path):
            xml = ElementTree.fromstring(cipher.decrypt(ElementTree.fromstring(body).findtext("Encrypt", "")))
            sender, words, msg_id = (xml.findtext(k, "") for k in ("FromUserName", "Content", "MsgId"))
            out.append((sender, words, msg_id))
        return out

    first, copy, other = (opened(messages.chunk(40, again=a)) for a in (False, True, False))
    assert [m[:2] for m in copy] == [m[:2] for m in first]  # the same parents, the same words
    ids = [m[2] for m in first + copy + other]
    assert len(set(ids)) == len(ids) == 120  # but every MsgId new
    assert [m[1] for m in other] != [m[1] for m in first]  # the next round: other words
