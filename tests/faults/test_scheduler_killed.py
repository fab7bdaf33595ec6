"""kill -9 the scheduler around a campaign's firing time, restart it: one notice, every family planned once.

The scheduler is ``campaign_tick.py`` (one ``CampaignRunner.tick(now)`` in a process of its own, as
``bot scheduler`` runs it every minute). The test watches Redis and freezes it (SIGSTOP) the moment
the firing reaches the chosen point, then kills it (SIGKILL): after the claim, in the middle of
planning the notice, after planning but before the firing is recorded. A scheduler restarted
within the claim's lease does nothing; one restarted after it finishes the firing.

On a busy machine the watcher may stop the tick later than aimed (or not before it finished).
The run still proves what matters, one notice with every family planned once, and is checked
in full; only the point it tested differs, which the figures and a warning report.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import warnings
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from fault_support import DISTRICT, kill9, tail

from bot.bench.notices import seed_guardians
from bot.bench.procs import env
from bot.campaigns.runner import build_runner
from bot.campaigns.store import LEASE_SECONDS
from bot.config import Config
from bot.store import keys
from bot.store.redis import Redis

pytestmark = [pytest.mark.faults, pytest.mark.slow]

GUARDIANS = 20_000  # planning takes long enough to be caught in the middle
TICK = Path(__file__).with_name("campaign_tick.py")
STAGES = ("claimed", "planning", "planned", "finished")


async def stage_of(r: Redis, firing_id: str) -> str:
    status = await r.hget(keys.campaign_firing(firing_id), "status")
    if status is None:
        return "none"
    if status != "claimed":
        return "finished"
    notice_id = await r.get(keys.notice_idempotency(firing_id))
    if not notice_id:
        return "claimed"
    planning, sending = await r.hmget(keys.notice(notice_id), ["planning", "status"])
    if sending == "sending":
        return "planned"
    return "planning" if planning else "claimed"


def tick(cfg: Config, now: float, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as err:
        return subprocess.Popen([sys.executable, str(TICK), repr(now)], env=env(cfg), stdout=err, stderr=err)


async def outbox_openids(r: Redis, notice_id: str) -> Counter[str]:
    """How often each guardian is in the notice's outbox batches (stream and held)."""
    import json

    found: Counter[str] = Counter()
    for _id, fields in await r.xrange(keys.outbox()):
        if fields.get("n") == notice_id:
            found.update(o for o in fields.get("to", "").split(",") if o)
    for raw in await r.zrange(keys.outbox_held(), 0, -1):
        fields = json.loads(raw)
        if fields.get("n") == notice_id:
            found.update(o for o in fields.get("to", "").split(",") if o)
    return found


@pytest.mark.parametrize(
    "kill_at",
    [
        "claimed",
        "planning",
        "planned",
    ],
)
async def test_a_scheduler_killed_around_a_firing_and_restarted_makes_one_notice_planned_for_every_family(
    redis_url: str, redis: Redis, tmp_path: Path, figures: Any, kill_at: str
) -> None:
    await seed_guardians(redis, GUARDIANS)
    cfg = Config(source="fault-test")
    cfg.redis.url = redis_url
    runner = build_runner(redis, cfg)
    firings = [f for f in await runner.firings(date(2026, 5, 1), date(2026, 6, 30)) if f.district == DISTRICT]
    due = firings[0].ts
    same_time = [f for f in firings if f.ts == due]
    firing = same_time[0]
    await runner.store.advance_tick(due - 60)  # the scheduler's last tick: a minute before the firing
    log = tmp_path / "scheduler.log"

    # 1. the tick that fires it, frozen and killed at the chosen point
    proc = tick(cfg, due + 1, log)
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        seen = await stage_of(redis, firing.id)
        if STAGES.index(seen) >= STAGES.index(kill_at) if seen in STAGES else False:
            proc.send_signal(signal.SIGSTOP)
            break
        await asyncio.sleep(0.001)
    kill9(proc)
    seen = await stage_of(redis, firing.id)  # where it really stopped (or "finished": it ran to its end)

    # 2. restarted within the claim's lease: nothing to do yet; 3. after it: the firing is finished
    for now in (due + 61, due + LEASE_SECONDS + 120):
        again = tick(cfg, now, log)
        assert again.wait(60) == 0, tail(log)

    notice_ids = [await redis.get(keys.notice_idempotency(f.id)) for f in same_time]
    record = await redis.hgetall(keys.campaign_firing(firing.id))
    notices = int(await redis.zcard(keys.notices_by_time()))
    planned = await redis.hlen(keys.notice_records(notice_ids[0])) if notice_ids[0] else 0
    queued = await outbox_openids(redis, notice_ids[0] or "")
    doubled = sum(1 for n in queued.values() if n > 1)
    figures(
        f"scheduler kill -9 at '{seen}' (aimed at '{kill_at}'), restarted twice: notices {notices} for "
        f"{len(same_time)} firing(s), firing {record.get('status')}; families planned {planned}, with a card "
        f"queued {len(queued)}, queued twice {doubled}"
    )
    # whatever point the kill landed at: one notice, fired, every family planned and queued once
    assert notices == len(same_time) and all(notice_ids)
    assert record.get("status") == "fired" and record.get("notice") == notice_ids[0]
    assert planned > 0 and set(queued) == set(await redis.hkeys(keys.notice_records(notice_ids[0]))), (
        f"{planned - len(queued)} of {planned} families have no card queued"
    )
    assert doubled == 0
    if seen != kill_at:  # the watcher was late (a busy machine): this run tested another point
        warnings.warn(f"the kill aimed at {kill_at!r} landed at {seen!r}: that point was tested", stacklevel=1)
