"""Notice benchmarks: ``plan`` (fan-out planning), ``fanout`` (sends/s and pace accuracy against the
emulator at 50 ms), ``chaos-worker`` (kill -9 the worker during a notice: exactly one card each),
and the delivery-record section of ``memory``.

Each starts what it needs: a fresh embedded Redis, the emulator as a separate process (so it does
not share this process's event loop with the worker being measured), worker processes for chaos.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from bot.bench.core import Figure, Figures, at_least, at_most, bench_redis, benchmark, exactly, peak_rss_bytes, timer
from bot.bench.procs import bench_config as _bench_config
from bot.bench.procs import emulator_process, free_port
from bot.bench.procs import env as _env
from bot.bench.procs import progress as _progress
from bot.bench.roster import MemoryRun, memory_section, openid
from bot.store.redis import Redis

MB = 1024 * 1024
DISTRICT = "bench-d"
CLASS_SIZE = 40


async def seed_guardians(r: Redis, guardians: int, seed: int = 0, *, identities: bool = False) -> list[str]:
    """A district whose classes hold ``guardians`` bound guardians (one per student), written straight
    into the roster's hashes in pipelines: planning reads exactly these. ``identities``: also each
    guardian's identity (what the chat loads to know who writes, e.g. for 「确认」)."""
    from bot.roster.model import School
    from bot.roster.store import RosterStore
    from bot.store import keys

    rng = random.Random(seed)
    store = RosterStore(r)
    people: list[str] = []
    classes_per_school = 30
    per_school = classes_per_school * CLASS_SIZE
    schools = max(1, -(-guardians // per_school))
    made = 0
    for s in range(schools):
        school = f"b{s:04d}"
        await store.put_school(School(school, f"测试学校{s}", DISTRICT, "demo"))
        async with r.pipeline(transaction=False) as pipe:
            for c in range(classes_per_school):
                if made >= guardians:
                    break
                cid = f"{1 + c % 6}-{1 + c // 6}"
                pipe.hset(keys.school_classes(school), cid, f"C{s:04d}{c:02d}|")
                students: dict[str, str] = {}
                links: dict[str, str] = {}
                for k in range(min(CLASS_SIZE, guardians - made)):
                    sid = f"{s:04d}{c:02d}{k:02d}"
                    o = openid(rng)
                    people.append(o)
                    students[sid] = "学生|a"
                    links[sid] = f"{o}:m"
                    if identities:
                        pipe.set(keys.identity(o), f"g:{school}/{cid}/{sid}/m")
                    made += 1
                pipe.hset(keys.class_students(school, cid), mapping=students)  # type: ignore[arg-type]
                pipe.hset(keys.class_guardians(school, cid), mapping=links)  # type: ignore[arg-type]
            await pipe.execute()
    return people


def _draft(urgent: bool = False) -> Any:
    from bot.notices.model import Draft
    from bot.roster.authz import Scope

    return Draft(title="周末防溺水提醒", body="请看护好孩子。", audience=(Scope(DISTRICT),), sender="教育局",
                 urgent=urgent, mode="confirm")  # fmt: skip


def _admin() -> Any:
    from bot.roster.authz import Subject

    return Subject("district_admin", district=DISTRICT)


@contextlib.asynccontextmanager
async def planned_notice(guardians: int, latency_ms: float) -> AsyncIterator[tuple[Any, Redis, list[str], str]]:
    """Redis with a planned notice to ``guardians`` families, and the emulator running at ``latency_ms``."""
    from bot.notices.service import NoticeService
    from bot.roster.store import RosterStore

    async with bench_redis() as r:
        url = str(r.connection_pool.connection_kwargs.get("path", ""))
        cfg = _bench_config(f"unix://{url}", free_port())
        cfg.emulator.latency_ms = latency_ms
        people = await seed_guardians(r, guardians)
        service = NoticeService(r, cfg, RosterStore(r))
        notice, _, _ = await service.submit(_draft(), _admin())
        with emulator_process(cfg):
            from bot.wechat.emulator import EmulatorClient

            async with EmulatorClient(f"http://127.0.0.1:{cfg.emulator.port}") as em:
                await em.configure(auto_follow=True)  # our synthetic parents follow the account
            yield cfg, r, people, notice.id


async def _drain_with_one_worker(cfg: Any, r: Redis) -> float:
    """Run one in-process worker until the outbox is empty; returns seconds."""
    from bot.serve import build_worker
    from bot.wechat.client import WeChatAPI

    api = WeChatAPI(cfg.wechat, r)
    try:
        await api.get_token()
        worker = build_worker(cfg, r, api, name="bench")
        with timer() as elapsed:
            await worker.run(burst=True)
        return elapsed()
    finally:
        await api.close()


async def _count_cards(cfg: Any) -> dict[str, int]:
    from bot.wechat.emulator import EmulatorClient

    async with EmulatorClient(f"http://127.0.0.1:{cfg.emulator.port}") as em:
        return await em.counts()


# -- plan ---------------------------------------------------------------------------------------------
def _plan_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--guardians", type=int, default=450_000)


@benchmark("plan", help="plan a district-wide notice: records + outbox for N guardians (≤ 10 s, ≤ 500 MB)",
           options=_plan_options)  # fmt: skip
async def plan(args: argparse.Namespace) -> Figures:
    from bot.notices.service import NoticeService
    from bot.roster.store import RosterStore
    from bot.store import keys

    async with bench_redis() as r:
        _progress(f"seeding {args.guardians} guardians …")
        people = await seed_guardians(r, args.guardians)
        del people
        cfg = _bench_config("unix://unused", 1)
        service = NoticeService(r, cfg, RosterStore(r))
        rss_before = peak_rss_bytes()
        _progress("planning …")
        with timer() as elapsed:
            notice, result, _ = await service.submit(_draft(), _admin())
        seconds = elapsed()
        records = int(await r.hlen(keys.notice_records(notice.id)))
        entries = int(await r.xlen(keys.outbox()))
    assert result is not None
    return {
        "guardians": Figure(result.reachable, "guardians"),
        "plan_seconds": at_most(seconds, "s", 10),
        "records_per_second": Figure(records / seconds if seconds else 0, "records/s"),
        "records_written": exactly(records, "records", result.reachable),
        "outbox_entries": Figure(entries, "entries"),
        "peak_rss": at_most(max(peak_rss_bytes(), rss_before) / MB, "MiB", 500),
    }


# -- fanout -------------------------------------------------------------------------------------------
def _fanout_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--guardians", type=int, default=20_000)
    p.add_argument("--latency-ms", type=float, default=50.0)
    p.add_argument("--pace", type=float, default=5000.0, help="sends/s for the throughput run (above the target)")
    p.add_argument("--slow-pace", type=float, default=500.0, help="sends/s for the pace-accuracy run")
    p.add_argument("--concurrency", type=int, default=256, help="sends in flight per worker")


@benchmark("fanout", help="one worker process against the emulator: ≥ 2,000 sends/s; pace within 5 %",
           options=_fanout_options)  # fmt: skip
async def fanout(args: argparse.Namespace) -> Figures:
    figures: Figures = {}
    # 1. throughput with the pace set above what one worker can do
    async with planned_notice(args.guardians, args.latency_ms) as (cfg, r, people, _nid):
        cfg.delivery.pace_per_second, cfg.delivery.pace_burst = args.pace, int(args.pace)
        cfg.worker.concurrency = args.concurrency
        _progress(f"sending {len(people)} cards at {args.latency_ms:.0f} ms latency …")
        seconds = await _drain_with_one_worker(cfg, r)
        counts = await _count_cards(cfg)
        delivered = sum(1 for o in people if counts.get(o, 0) >= 1)
        figures["sends_per_second"] = at_least(delivered / seconds, "sends/s", 2000)
        figures["cards"] = exactly(delivered, "cards", len(people))
    # 2. pace accuracy with the pace below capacity
    n = max(1000, int(args.slow_pace * 8))
    async with planned_notice(n, args.latency_ms) as (cfg, r, people, _nid):
        cfg.delivery.pace_per_second, cfg.delivery.pace_burst = args.slow_pace, max(1, int(args.slow_pace / 10))
        cfg.worker.concurrency = args.concurrency
        _progress(f"pacing {len(people)} cards at {args.slow_pace:.0f}/s …")
        seconds = await _drain_with_one_worker(cfg, r)
        rate = len(people) / seconds
        over = max(0.0, (rate - args.slow_pace) / args.slow_pace * 100)
        figures["paced_rate"] = Figure(rate, "sends/s", f"≈ {args.slow_pace:.0f}", None)
        figures["pace_excess"] = at_most(over, "%", 5)
    figures["peak_rss"] = Figure(peak_rss_bytes() / MB, "MiB")
    return figures


# -- chaos-worker -------------------------------------------------------------------------------------
def _chaos_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--guardians", type=int, default=20_000)
    p.add_argument("--kill-every", type=float, default=2.0, help="seconds between kill -9")
    p.add_argument("--latency-ms", type=float, default=20.0)
    p.add_argument("--pace", type=float, default=1000.0)
    p.add_argument("--timeout", type=float, default=600.0)


@benchmark("chaos-worker", help="kill -9 the worker every ~2 s during a notice: exactly one card each",
           options=_chaos_options)  # fmt: skip
async def chaos_worker(args: argparse.Namespace) -> Figures:
    from bot.notices.model import QUEUED, SENDING, Record
    from bot.store import keys

    async with planned_notice(args.guardians, args.latency_ms) as (cfg, r, people, nid):
        cfg.delivery.pace_per_second, cfg.delivery.pace_burst = args.pace, int(args.pace / 10)
        cfg.worker.reclaim_idle = 3.0
        env = _env(cfg)
        rng = random.Random(0)
        kills = 0
        started = time.monotonic()

        def spawn() -> subprocess.Popen[bytes]:
            return subprocess.Popen([sys.executable, "-m", "bot", "worker"], env=env, stderr=subprocess.DEVNULL)

        async def unfinished() -> int:
            left = 0
            async for _o, raw in r.hscan_iter(keys.notice_records(nid), count=5000):
                rec = Record.decode(str(raw))
                left += rec is not None and rec.status in (QUEUED, SENDING, "h")
            return left

        worker = spawn()
        try:
            while time.monotonic() - started < args.timeout:
                await asyncio.sleep(args.kill_every * rng.uniform(0.5, 1.5))
                left = await unfinished()
                _progress(f"{left} cards to go, {kills} kills")
                if left == 0:
                    break
                worker.send_signal(signal.SIGKILL)
                worker.wait()
                kills += 1
                worker = spawn()
        finally:
            worker.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.wait(15)
            if worker.poll() is None:
                worker.kill()
        counts = await _count_cards(cfg)
        uncertain = 0
        async for _o, raw in r.hscan_iter(keys.notice_records(nid), count=5000):
            rec = Record.decode(str(raw))
            uncertain += rec is not None and rec.status == "x"
    missing = sum(1 for o in people if counts.get(o, 0) == 0)
    doubled = sum(1 for o in people if counts.get(o, 0) > 1)
    return {
        "guardians": Figure(len(people), "guardians"),
        "kills": Figure(kills, "kill -9"),
        "cards_sent": Figure(sum(counts.get(o, 0) for o in people), "cards"),
        "missing": exactly(missing, "cards", 0),
        "doubled": exactly(doubled, "cards", 0),
        "uncertain": exactly(uncertain, "records", 0),
        "seconds": Figure(time.monotonic() - started, "s"),
    }


# -- memory: delivery records -------------------------------------------------------------------------
@memory_section("deliveries", order=30)
async def deliveries_section(run: MemoryRun) -> Figures:
    """Plan a notice to every guardian bound by the bindings section; bytes per delivery record."""
    from bot.notices.model import Draft
    from bot.notices.service import NoticeService
    from bot.roster.authz import Scope, Subject
    from bot.roster.store import RosterStore
    from bot.store import keys

    r = run.redis
    store = RosterStore(r)
    schools = await store.schools()
    districts = sorted({s.district for s in schools.values()})
    cfg = _bench_config("unix://unused", 1)
    service = NoticeService(r, cfg, store)
    before = await run.used_memory()
    records = 0
    for d in districts:
        draft = Draft(title="测试通知", body="内容", audience=(Scope(d),), sender="教育局")
        notice, _, _ = await service.submit(draft, Subject("district_admin", district=d))
        records += int(await r.hlen(keys.notice_records(notice.id)))
    planned = await run.used_memory()
    await r.delete(keys.outbox())  # what stays once the cards are sent: the records
    after = await run.used_memory()
    per_record = (after - before) / max(1, records)
    return {
        "delivery_records": Figure(records, "records"),
        "bytes_per_delivery_record": at_most(per_record, "B", 250),
        "bytes_per_record_while_queued": Figure((planned - before) / max(1, records), "B"),
    }


__all__ = ["chaos_worker", "deliveries_section", "fanout", "plan", "seed_guardians"]
