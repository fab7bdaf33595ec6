"""WeChat failing in bursts during a fan-out: -1, HTTP 5xx, timeouts (some after WeChat delivered),
43004, and the daily quota running out (45009, which holds every card until midnight).

The system backs off (the client retries -1 and transport errors, the job holds what is left and
tries again), resumes, loses nothing and doubles nothing. The worker runs in this process so that
the clock can be driven past midnight: ours (``bot.clock.now``) and the emulator's move together.
The emulator runs as a process of its own, so a busy test loop cannot make WeChat look slow.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from fault_support import card_figures, district_admin, district_draft, poll, record_statuses

from bot import clock
from bot.bench.notices import seed_guardians
from bot.bench.procs import emulator_process, free_port
from bot.config import Config
from bot.delivery.cards import CardSender
from bot.notices.model import QUEUED, SENDING, SENT, UNREACHABLE
from bot.notices.service import NoticeService
from bot.roster.store import RosterStore
from bot.serve import build_worker
from bot.store import keys
from bot.store.redis import Redis
from bot.wechat.client import WeChatAPI
from bot.wechat.emulator import EmulatorClient

pytestmark = [pytest.mark.faults, pytest.mark.slow]

GUARDIANS = 400
QUOTA_LEFT = 150  # cards the second notice may send before WeChat answers 45009
SEND = "/cgi-bin/message/template/send"
UNFOLLOWED = 5  # the first five sends answer 43004
BURSTS: list[dict[str, Any]] = [  # one after the other, each once the previous one is used up
    {"errcode": -1, "count": 60},
    {"http_status": 502, "count": 15},
    {"http_status": 503, "count": 10},
    {"http_status": 500, "count": 5},
    {"timeout": True, "deliver": True, "count": 4},  # WeChat sent it; the answer is lost
    {"timeout": True, "count": 3},
    {"errcode": -1, "count": 30},
]


class DrivenClock:
    """The wall clock plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def driven_clock(monkeypatch: pytest.MonkeyPatch) -> DrivenClock:
    c = DrivenClock()
    monkeypatch.setattr(clock, "now", c.now)
    return c


async def away_from_midnight(driven_clock: DrivenClock, em: EmulatorClient, margin: float = 3600) -> None:
    """Move both clocks an hour past midnight when midnight is less than ``margin`` away.

    The test crosses midnight once, when it says so (step 3). A real midnight during the fan-outs
    would start a new quota day on its own: the emulator would forget the sends counted against
    ``daily_quota`` and our quota flag would be looked up under the wrong day."""
    to_midnight = clock.next_midnight(clock.now()) - clock.now()
    if to_midnight < margin:
        driven_clock.offset += to_midnight + 3600
        await em.advance_clock(to_midnight + 3600)


async def until(
    check: Callable[[], Awaitable[object]],
    what: str,
    limit: float = 30.0,
    state: Callable[[], Awaitable[str]] | None = None,
) -> None:
    if not await poll(check, limit=limit):
        raise AssertionError(f"timed out waiting until {what}" + (f": {await state()}" if state else ""))


async def test_wechat_errors_in_bursts_during_a_fan_out_are_retried_held_and_resumed_without_loss_or_double(
    config: Config, redis: Redis, driven_clock: DrivenClock, figures: Any
) -> None:
    config.emulator.port = free_port()
    config.emulator.push_events = False
    config.wechat.api_base = config.wechat.oauth_base = f"http://127.0.0.1:{config.emulator.port}"
    with emulator_process(config):
        async with EmulatorClient(config.wechat.api_base) as em:
            await fan_out_through_bursts(config, redis, em, driven_clock, figures)


async def fan_out_through_bursts(
    config: Config, redis: Redis, em: EmulatorClient, driven_clock: DrivenClock, figures: Any
) -> None:
    people = await seed_guardians(redis, GUARDIANS)
    d, w = config.delivery, config.wechat
    d.quiet_start = d.quiet_end = "00:00"
    d.family_daily_cap = 0
    d.pace_per_second, d.pace_burst, d.batch_size, d.retry_after = 100, 10, 20, 1.0
    w.api_timeout, w.api_retries, w.api_backoff = 2.0, 2, 0.05
    config.worker.block_ms = 100
    await em.configure(auto_follow=True)
    await away_from_midnight(driven_clock, em)
    notices = NoticeService(redis, config, RosterStore(redis))
    api = WeChatAPI(config.wechat, redis)
    cards = CardSender(config, redis, api, notices)
    worker = build_worker(config, redis, api, name="faults")
    nid = ""

    async def faults_left() -> bool:
        return not (await em.get_config())["faults"]

    async def statuses() -> Counter[str]:
        return Counter((await record_statuses(redis, nid)).values())

    async def finished() -> bool:
        return await redis.zcard(keys.outbox_held()) == 0 and set(await statuses()) <= {SENT, UNREACHABLE}

    async def settled() -> bool:  # nothing in the stream, no card between "sending" and an outcome
        return await redis.xlen(keys.outbox()) == 0 and SENDING not in await statuses()

    async def state() -> str:
        held = await redis.zrange(keys.outbox_held(), 0, -1, withscores=True)
        pending = await redis.xpending(keys.outbox(), keys.OUTBOX_GROUP)
        return (f"records {dict(await statuses())}, stream {await redis.xlen(keys.outbox())} "
                f"({pending['pending']} pending), held {[round(s - clock.now()) for _, s in held]}, "
                f"faults {(await em.get_config())['faults']}")  # fmt: skip

    running = asyncio.create_task(worker.run())
    try:
        # 1. a notice through bursts of 43004, -1, 5xx and timeouts: the client retries -1 and
        #    transport errors, the job holds what still failed and tries it again a little later
        await em.inject_fault(SEND, errcode=43004, count=UNFOLLOWED)  # the first sends of all
        first, _, _ = await notices.submit(district_draft(title="第一条：防溺水"), district_admin())
        nid = first.id
        for fault in BURSTS:
            await em.inject_fault(SEND, **fault)
            await until(faults_left, f"the burst {fault} was used", state=state)
        await until(finished, "the first notice was sent", limit=60, state=state)
        after_first = await em.counts()
        first_statuses = await record_statuses(redis, nid)

        # 2. a notice through the day's quota running out (45009): what is left waits for midnight
        used = int((await em.stats())["daily_used"])
        await em.configure(daily_quota=used + QUOTA_LEFT)
        day = clock.now()  # the quota day: the clocks do not pass midnight before step 3 (away_from_midnight)
        second, _, _ = await notices.submit(district_draft(title="第二条：防溺水"), district_admin())
        nid = second.id
        await until(lambda: redis.exists(keys.quota_exhausted(clock.day_key(day))), "45009 was seen")
        await until(settled, "the worker held what was left", state=state)
        now = clock.now()
        assert clock.day_key(now) == clock.day_key(day), "a real midnight passed during the fan-out"
        midnight = clock.next_midnight(day)
        held = await redis.zrange(keys.outbox_held(), 0, -1, withscores=True)
        waiting = (await statuses())[QUEUED]
        assert held and all(score >= midnight for _, score in held)
        assert await cards.release_due(now=midnight - 1) == 0  # nothing goes before midnight
        before_midnight = await em.counts()

        # 3. past midnight (both clocks): the held cards go out
        jump = midnight + 61 - now
        driven_clock.offset += jump
        await em.advance_clock(jump)
        await em.configure(daily_quota=1_000_000)
        await until(finished, "the second notice was sent after midnight", limit=60, state=state)
    finally:
        worker.stop()
        await asyncio.wait_for(running, 30)
        await api.close()

    counts = await em.counts()
    stats = await em.stats()
    unreachable = [o for o, s in first_statuses.items() if s == UNREACHABLE]
    reachable = [o for o in people if o not in unreachable]
    one = card_figures(reachable, after_first, first_statuses)
    second_cards = {o: counts.get(o, 0) - after_first.get(o, 0) for o in people}
    day_one = {o: before_midnight.get(o, 0) - after_first.get(o, 0) for o in people}
    two = card_figures(people, second_cards, await record_statuses(redis, nid))
    figures(
        f"WeChat bursts during a fan-out to {GUARDIANS} (-1 ×90, 5xx ×30, timeouts ×7 of which 4 after WeChat "
        f"sent, 43004 ×{UNFOLLOWED}): cards sent {one['sent']}, missing {one['missing']}, doubled {one['doubled']}, "
        f"uncertain {one['uncertain']}, unreachable {len(unreachable)}; resends dropped by client_msg_id "
        f"{stats['template_deduped']}"
    )
    figures(
        f"45009 during a fan-out to {GUARDIANS}: {sum(day_one.values())} cards before the quota ran out, "
        f"{waiting} held until midnight; cards sent {two['sent']}, missing {two['missing']}, doubled "
        f"{two['doubled']}, uncertain {two['uncertain']}; WeChat errors seen {stats['errors']}"
    )
    assert len(unreachable) == UNFOLLOWED and all(after_first.get(o, 0) == 0 for o in unreachable)
    assert (one["missing"], one["doubled"], one["uncertain"], one["unfinished"]) == (0, 0, 0, 0)
    assert one["sent"] == GUARDIANS - UNFOLLOWED
    assert stats["template_deduped"] >= 1  # a send WeChat had delivered before timing out was resent, and dropped
    assert (two["missing"], two["doubled"], two["uncertain"], two["unfinished"]) == (0, 0, 0, 0)
    assert two["sent"] == GUARDIANS and 0 < sum(day_one.values()) <= QUOTA_LEFT and waiting > 0
