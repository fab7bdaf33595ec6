"""``bot bench ack-burst``: parents replying 「确认」 to a notice, through the callback, for a minute.

After a district-wide notice tens of thousands of parents reply within minutes. This seeds a
district (schools, classes, one bound guardian per student, their identities) and a planned notice
that asks for confirmation, in a fresh embedded Redis with AOF on (as in production). Then every
simulated parent sends one signed, encrypted 「确认」 (:mod:`bot.bench.load`) to ``bot serve
--workers 2`` for ``--seconds`` (default 60): the whole path, callback → chat → NoticeService.confirm
→ the confirmation in Redis → the reply.

Figures: confirmations per second over the run (≥ 2,000) and the lowest 5-second rate within it (the
same target: sustained, not a burst); answers and their latencies; and the count that matters: the
confirmations in Redis afterwards against the callbacks answered 200, none lost. A callback shed
under load (answered ``success``, kept in the outbox) is answered afterwards by a worker, as in
production, and counted then.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bot.bench.core import Figure, Figures, at_least, bench_redis, benchmark, exactly, note
from bot.bench.load import LoadResult, builtin_argv, run_builtin, run_wrk, text_requests, write_requests, wrk_path
from bot.bench.procs import bench_config, cores, emulator_process, free_port, progress, serve_process

if TYPE_CHECKING:
    from bot.config import Config
    from bot.store.redis import Redis

TARGET = 2000.0


def _options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=60.0, help="length of the burst (default 60)")
    p.add_argument("--workers", type=int, default=2, help="bot serve processes (default 2)")
    p.add_argument("--connections", type=int, default=64, help="callbacks in flight from WeChat (default 64)")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of 确认 from other parents first, not counted")
    p.add_argument("--max-rate", type=float, default=10000.0,
                   help="most confirmations/s to seed parents for (each confirms once; default 10,000)")  # fmt: skip
    p.add_argument("--generator", choices=("auto", "wrk", "builtin"), default="auto")


def _run_load(generator: str, url: str, path: Path, *, seconds: float, connections: int) -> LoadResult:
    if generator == "wrk":
        return run_wrk(url, path, connections=connections, seconds=seconds)[0]
    return run_builtin(builtin_argv(url, path, seconds=seconds, connections=connections), seconds=seconds)[0]


async def _confirmations(r: Redis, notice_id: str) -> int:
    from bot.store import keys

    return int(await r.hlen(keys.notice_confirmations(notice_id)))


async def _plan(r: Redis, cfg: Config, parents: int) -> tuple[list[str], str]:
    """The district, its guardians (bound, with identities) and a planned notice asking for 确认."""
    from bot.bench.notices import _admin, _draft, seed_guardians
    from bot.notices.service import NoticeService
    from bot.roster.store import RosterStore
    from bot.store import keys

    progress(f"seeding {parents:,} guardians and planning a notice to them …")
    people = await seed_guardians(r, parents, identities=True)
    notice, plan, _ = await NoticeService(r, cfg, RosterStore(r)).submit(_draft(), _admin())
    assert plan is not None and plan.reachable == parents, plan
    await r.delete(keys.outbox())  # the cards themselves are the fanout benchmark's business
    return people, notice.id


async def _answer_shed(cfg: Config, r: Redis) -> int:
    """Callbacks shed during the burst: answered now by a worker, as `bot worker` would."""
    from bot.delivery.outbox import INBOUND
    from bot.serve import build_worker
    from bot.store import keys
    from bot.wechat.client import WeChatAPI

    entries: list[tuple[str, dict[str, str]]] = await r.xrange(keys.outbox())  # type: ignore[assignment]
    shed = sum(1 for _id, f in entries if f.get("k") == INBOUND)
    if shed:
        progress(f"answering {shed:,} shed callbacks with a worker …")
        api = WeChatAPI(cfg.wechat, r)
        try:
            await build_worker(cfg, r, api, name="ack-burst").run(burst=True)
        finally:
            await api.close()
    return shed


@benchmark("ack-burst", help="parents' 确认 through the callback: ≥ 2,000 confirmations/s for 60 s, none lost",
           options=_options)  # fmt: skip
async def ack_burst(args: argparse.Namespace) -> Figures:
    generator = args.generator if args.generator != "auto" else ("wrk" if wrk_path() else "builtin")
    note("load_generator", generator)
    note("serve_workers", str(args.workers))
    warm_parents = int(max(args.warmup, 0) * args.max_rate) + 1000
    measured_parents = int(args.seconds * args.max_rate) + 5000
    async with bench_redis(appendonly=True) as r:
        path = str(r.connection_pool.connection_kwargs.get("path", ""))
        cfg = bench_config(f"unix://{path}", free_port())
        cfg.server.port = free_port()
        people, notice_id = await _plan(r, cfg, warm_parents + measured_parents)
        warm, measured = people[:warm_parents], people[warm_parents:]
        url = f"http://127.0.0.1:{cfg.server.port}"
        with tempfile.TemporaryDirectory(prefix="sb-ackburst-") as folder, emulator_process(cfg):
            from bot.wechat.emulator import EmulatorClient

            async with EmulatorClient(cfg.emulator_base_url()) as em:
                await em.configure(auto_follow=True)
            with serve_process(cfg, args.workers):
                if args.warmup > 0:
                    progress(f"warming up {args.warmup:g} s …")
                    warm_file = Path(folder) / "warm.txt"
                    write_requests(_confirm_requests(cfg, warm, 1), warm_file)
                    load = await asyncio.to_thread(_run_load, generator, url, warm_file, seconds=args.warmup,
                                                   connections=args.connections)  # fmt: skip
                    estimate = load.rps
                else:
                    estimate = args.max_rate
                # parents enough for twice the warm-up's pace: each must send once (a second 确认 from
                # the same parent would be a retry, answered without a new confirmation)
                count = min(len(measured), int(max(estimate, TARGET) * args.seconds * 2) + 5000)
                if count == len(measured) and estimate * args.seconds * 1.2 > count:
                    progress(f"warning: {count:,} parents may run out at {estimate:,.0f}/s (raise --max-rate)")
                progress(f"building {count:,} signed, encrypted 确认 callbacks …")
                burst_file = Path(folder) / "burst.txt"
                write_requests(_confirm_requests(cfg, measured[:count], 2), burst_file)
                before = await _confirmations(r, notice_id)
                progress(f"{args.seconds:g} s of 确认 at {args.connections} connections ({generator}) …")
                samples: list[tuple[float, int]] = []
                sampler = asyncio.create_task(_sample(r, notice_id, samples))
                try:
                    load = await asyncio.to_thread(_run_load, generator, url, burst_file, seconds=args.seconds,
                                                   connections=args.connections)  # fmt: skip
                finally:
                    sampler.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await sampler
                await asyncio.sleep(0.5)  # the answers in flight when the load stopped
            confirmed_live = await _confirmations(r, notice_id) - before
            shed = await _answer_shed(cfg, r)
        confirmed = await _confirmations(r, notice_id) - before
    return _figures(args, load, samples, confirmed, confirmed_live, shed)


def _confirm_requests(cfg: Config, parents: list[str], seed: int) -> list[tuple[str, bytes]]:
    return list(text_requests(cfg.wechat, len(parents), senders=parents, texts=(("确认", 1),), seed=seed))


async def _sample(r: Redis, notice_id: str, out: list[tuple[float, int]]) -> None:
    """The number of confirmations in Redis, every half second, while the burst runs."""
    while True:
        out.append((time.monotonic(), await _confirmations(r, notice_id)))
        await asyncio.sleep(0.5)


def _lowest_rate(samples: list[tuple[float, int]], window: float = 5.0) -> float:
    """The lowest confirmations/s over any ``window`` seconds while the burst ran.

    The burst runs from the first sample that shows a new confirmation to the last one that does:
    the samples before it are the load generator still loading its requests (wrk reads hundreds of
    thousands of them first: seconds), the ones after it the generator gone. Windows wholly inside.
    """
    moved = [i for i in range(1, len(samples)) if samples[i][1] > samples[i - 1][1]]
    if not moved:
        return 0.0
    # the first and last half-second steps that moved may hold only part of the burst: left out
    first, last = moved[0], max(moved[0], moved[-1] - 1)
    lowest = float("inf")
    for i in range(first, last + 1):
        t0, c0 = samples[i]
        for t1, c1 in samples[i + 1 : last + 1]:
            if t1 - t0 >= window:
                lowest = min(lowest, (c1 - c0) / (t1 - t0))
                break
    if lowest == float("inf"):  # a burst shorter than the window: its whole rate
        (t0, c0), (t1, c1) = samples[first], samples[last]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0
    return lowest


def _figures(args: argparse.Namespace, load: LoadResult, samples: list[tuple[float, int]], confirmed: int,
             confirmed_live: int, shed: int) -> Figures:  # fmt: skip
    answered = load.replies + load.success  # 200s: a reply, or success (shed: answered by the worker)
    # An answer that left before wrk stopped counting is in both; one still in flight then is only
    # in Redis (at most one per connection): more confirmed than answered is not a loss.
    lost = max(0, answered - confirmed)
    return {
        "confirmations_per_second": at_least(confirmed_live / load.seconds if load.seconds else 0, "/s", TARGET),
        "lowest_5s_rate": at_least(_lowest_rate(samples), "/s", TARGET),
        "seconds": Figure(load.seconds, "s"),
        "answered_200": Figure(answered, "callbacks"),
        "confirmations_in_redis": Figure(confirmed, "students"),
        "lost": exactly(lost, "confirmations", 0),
        "shed_then_answered_by_worker": Figure(shed, "callbacks"),
        "errors": exactly(load.errors + load.status_other, "requests", 0),
        "status_5xx": exactly(load.status_5xx, "requests", 0),
        "p50": Figure(load.p50_ms, "ms"),
        "p99": Figure(load.p99_ms, "ms"),
        "max": Figure(load.max_ms, "ms"),
        "serve_workers": Figure(args.workers, "processes"),
        "cores": Figure(cores(), "cores"),
        "pool_wrapped": exactly(load.wrapped, "times", 0),
    }


__all__ = ["ack_burst"]
