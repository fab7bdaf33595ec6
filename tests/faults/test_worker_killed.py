"""kill -9 the worker process again and again during a fan-out: exactly one card per guardian.

Real processes: ``bot worker`` (killed about every second, restarted at once) and ``bot emulator``,
both configured only by the environment; a real Redis. The emulator counts what WeChat delivered.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import pytest
from fault_support import (
    bot_process,
    card_figures,
    district_admin,
    district_draft,
    kill9,
    poll,
    record_statuses,
    tail,
    terminate,
    unfinished,
)

from bot.bench.notices import seed_guardians
from bot.bench.procs import bench_config, emulator_process, free_port
from bot.notices.service import NoticeService
from bot.roster.store import RosterStore
from bot.store import keys
from bot.store.redis import Redis
from bot.wechat.emulator import EmulatorClient

pytestmark = [pytest.mark.faults, pytest.mark.slow]

GUARDIANS = 2000
MAX_KILLS = 25
TIME_LIMIT = 90.0


async def test_a_worker_killed_every_second_during_a_fan_out_sends_exactly_one_card_each(
    redis_url: str, redis: Redis, tmp_path: Path, figures: Any
) -> None:
    people = await seed_guardians(redis, GUARDIANS)
    cfg = bench_config(redis_url, free_port())
    cfg.emulator.latency_ms = 5  # a send takes a while: kills land with cards in flight
    cfg.delivery.pace_per_second, cfg.delivery.pace_burst = 600, 60
    # Outcomes are recorded when a job (delivery.batch_size cards) ends, so a worker killed every
    # second must be able to finish jobs within its life: small jobs, few in flight (160 cards).
    cfg.delivery.batch_size = 20
    cfg.worker.batch, cfg.worker.concurrency = 8, 8
    cfg.worker.reclaim_idle = 1.0  # a dead worker's jobs are taken over a second later
    cfg.worker.block_ms = 200
    notice, plan, _ = await NoticeService(redis, cfg, RosterStore(redis)).submit(district_draft(), district_admin())
    assert plan is not None and plan.reachable == GUARDIANS
    log = tmp_path / "worker.log"
    rng = random.Random(9)
    kills = 0
    started = time.monotonic()
    with emulator_process(cfg):
        async with EmulatorClient(f"http://127.0.0.1:{cfg.emulator.port}") as em:
            await em.configure(auto_follow=True)
            worker = bot_process(cfg, "worker", log=log)
            try:
                while kills < MAX_KILLS and time.monotonic() - started < TIME_LIMIT:
                    await asyncio.sleep(rng.uniform(0.7, 1.3))
                    if await unfinished(redis, notice.id) == 0:
                        break
                    kill9(worker)
                    kills += 1
                    worker = bot_process(cfg, "worker", log=log)

                # the last one finishes the notice (and is stopped gracefully)
                async def finished() -> bool:
                    return not (await unfinished(redis, notice.id) or await redis.xlen(keys.outbox()))

                await poll(finished, limit=TIME_LIMIT - (time.monotonic() - started), every=0.2)
            finally:
                terminate(worker)
            counts = await em.counts()
            stats = await em.stats()
    seconds = time.monotonic() - started
    statuses = await record_statuses(redis, notice.id)
    f = card_figures(people, counts, statuses)
    figures(
        f"worker kill -9 ×{kills} during a fan-out to {GUARDIANS} guardians: cards sent {f['sent']}, "
        f"missing {f['missing']}, doubled {f['doubled']}, uncertain {f['uncertain']}; "
        f"resends dropped by WeChat's client_msg_id {stats['template_deduped']}; {seconds:.1f} s"
    )
    assert kills >= 5, f"the fan-out ended before the worker was killed often enough ({kills})"
    assert f["unfinished"] == 0, f"cards still to send after {seconds:.0f} s:\n{tail(log)}"
    assert (f["missing"], f["doubled"], f["uncertain"]) == (0, 0, 0), tail(log)
    assert f["sent"] == GUARDIANS
