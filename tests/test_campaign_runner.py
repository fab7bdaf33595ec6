"""The campaign runner against a real Redis: the preview is what fires, once, across schedulers and restarts.

Time is explicit (``tick(now)``), so a run over two months takes a second of real time.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

from bot.app import create_app
from bot.campaigns.loader import load_catalog
from bot.campaigns.rules import shanghai
from bot.campaigns.runner import GRACE_SECONDS, CampaignRunner, campaign_subject
from bot.campaigns.store import LEASE_SECONDS
from bot.config import Config
from bot.notices.model import Notice
from bot.notices.service import NoticeService
from bot.roster.authz import Scope
from bot.roster.model import School, Student
from bot.roster.store import RosterStore
from bot.serve import build_worker
from bot.store import keys
from bot.store.redis import Redis
from bot.wechat.client import WeChatAPI

# district d1: s1 (two classes), s2 (one class), region demo; district d2: s3, region shanghai
SCHOOLS = [School("s1", "平安路小学", "d1", "demo"), School("s2", "和平小学", "d1", "demo"),
           School("s3", "浦江小学", "d2", "shanghai")]  # fmt: skip
CLASSES = {("s1", "3-1"): 3, ("s1", "5-2"): 2, ("s2", "3-1"): 2, ("s3", "1-1"): 1}


def ts(month: int, day: int, hour: int = 0, minute: int = 0, year: int = 2026) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=shanghai()).timestamp()


@dataclass
class World:
    redis: Redis
    config: Config
    roster: RosterStore
    notices: NoticeService

    def runner(self, ident: str = "test") -> CampaignRunner:
        return CampaignRunner(self.redis, self.config, load_catalog(), self.roster, self.notices, ident=ident)

    async def notice_count(self) -> int:
        return int(await self.redis.zcard(keys.notices_by_time()))

    async def notice(self, notice_id: str) -> Notice:
        found = await self.notices.get(notice_id)
        assert found is not None
        return found


async def seed(redis: Redis) -> RosterStore:
    store = RosterStore(redis)
    for school in SCHOOLS:
        await store.put_school(school)
    for (school_id, cid), n in CLASSES.items():
        await store.ensure_class(school_id, cid)
        students = {f"{school_id}-{cid}-{i}": f"学生{i}" for i in range(n)}
        await redis.hset(
            keys.class_students(school_id, cid), mapping={sid: f"{name}|a" for sid, name in students.items()}
        )
        for sid, name in students.items():
            await store.bind_guardian(f"o{sid}".ljust(28, "x"), Student(school_id, sid, name, cid), "m")
    return store


@pytest.fixture
async def world(redis: Redis, config: Config) -> World:
    roster = await seed(redis)
    return World(redis, config, roster, NoticeService(redis, config, roster))


async def test_preview_for_a_school_matches_what_the_runner_fires_in_an_accelerated_run(world: World) -> None:
    runner = world.runner()
    start = ts(5, 1)
    preview = await runner.preview(60, now=start, school="s1")
    assert {e.firing.campaign.id for e in preview.entries} >= {"drowning", "disaster-reduction", "work-safety-month"}
    assert all(e.students == 5 for e in preview.entries)  # s1's active students
    await runner.store.advance_tick(start)
    fired: dict[str, str] = {}
    now = start
    while now < start + 60 * 86400:
        now += 4 * 3600  # well inside the grace time: nothing is late enough to be missed
        report = await runner.tick(now)
        assert not report.missed and not report.failed
        fired.update(report.notices)
    sent: dict[str, tuple[float, str, str, str]] = {}
    records = {r.id: r for r in await runner.store.records(list(fired))}
    for fid, notice_id in fired.items():
        notice = await world.notice(notice_id)
        if any(scope.school == "s1" for scope in notice.draft.audience):
            assert notice.draft.campaign == fid.split(":")[0] and records[fid].status == "fired"
            sent[fid] = (records[fid].due, notice.draft.title, notice.draft.sender, notice.draft.body)
    shown = {e.firing.id: (e.firing.ts, e.rendered.title, e.rendered.sender, e.rendered.body) for e in preview.entries}
    assert sent == shown


async def test_render_says_a_campaign_gives_way_on_a_day_the_preview_leaves_it_out(world: World) -> None:
    runner = world.runner()
    schools = await world.roster.schools()
    drowning = runner.catalog.builtin["drowning"]
    switches = await runner.store.switches()
    # The 国庆 eve 2026: the holiday letter reaches s1 and s2 (demo), so the drowning reminder does not.
    eve = datetime(2026, 9, 30, tzinfo=shanghai()).date()
    result = runner.render_for(drowning, schools["s1"], schools, eve, exact=True, switches=switches)
    assert result.gives_way_to == ("holiday-safety",) and not result.scheduled
    assert runner.giving_way(drowning, schools.values(), switches, eve) == {
        "s1": ("holiday-safety",),
        "s2": ("holiday-safety",),
        "s3": ("holiday-safety",),
    }
    # Switched off for s2, the letter does not reach it: s2 gets the drowning reminder as usual.
    await runner.store.switch("holiday-safety", False, school="s2")
    switches = await runner.store.switches()
    assert set(runner.giving_way(drowning, schools.values(), switches, eve)) == {"s1", "s3"}
    on_s2 = runner.render_for(drowning, schools["s2"], schools, eve, exact=True, switches=switches)
    assert on_s2.scheduled and on_s2.gives_way_to == ()
    # Its next firing from 26 September is the one the preview shows, not the day it gives way.
    since = datetime(2026, 9, 26, tzinfo=shanghai())
    nxt = runner.render_for(drowning, schools["s1"], schools, since.date(), exact=False, switches=switches)
    preview = await runner.preview(365, now=since.timestamp(), school="s1", campaign="drowning")
    assert nxt.scheduled and nxt.firing.at == preview.entries[0].firing.at and nxt.firing.at.date() != eve


async def test_two_schedulers_fire_each_firing_once(world: World) -> None:
    a, b = world.runner("scheduler-a"), world.runner("scheduler-b")
    await a.store.advance_tick(ts(5, 15, 15))
    first, second = await asyncio.gather(a.tick(ts(5, 15, 16, 1)), b.tick(ts(5, 15, 16, 1)))
    fired = first.fired + second.fired
    assert sorted(fired) == ["drowning:2026-05-15:d1", "drowning:2026-05-15:d2"]
    assert await world.notice_count() == 2
    again = await asyncio.gather(a.tick(ts(5, 15, 16, 2)), b.tick(ts(5, 15, 16, 2)))
    assert all(not r.fired for r in again) and await world.notice_count() == 2


async def test_a_firing_missed_while_down_is_sent_inside_the_grace_time(world: World) -> None:
    runner = world.runner()
    await runner.store.advance_tick(ts(5, 15, 10))
    report = await runner.tick(ts(5, 15, 21))  # down from 10:00 to 21:00: 16:00 is 5 h late
    assert "drowning:2026-05-15:d1" in report.fired and not report.missed
    notice = await world.notice(report.notices["drowning:2026-05-15:d1"])
    assert notice.draft.audience == (Scope("d1", "s1"), Scope("d1", "s2"))
    assert notice.draft.lesson == "drowning" and notice.draft.created_by == "campaign:drowning"


async def test_a_firing_missed_beyond_the_grace_time_is_recorded_not_sent(world: World) -> None:
    runner = world.runner()
    await runner.store.advance_tick(ts(5, 22, 10))
    late = ts(5, 22, 16) + GRACE_SECONDS + 1800
    report = await runner.tick(late)
    assert sorted(report.missed) == ["drowning:2026-05-22:d1", "drowning:2026-05-22:d2"] and not report.fired
    assert await world.notice_count() == 0
    recent = {r.id: r.status for r in await runner.store.recent(ts(5, 1), late)}
    assert recent["drowning:2026-05-22:d1"] == "missed"
    assert not (await runner.tick(late + 60)).missed  # recorded once


async def test_a_restart_never_fires_twice(world: World) -> None:
    runner = world.runner()
    await runner.store.advance_tick(ts(5, 15, 15))
    assert len((await runner.tick(ts(5, 15, 17))).fired) == 2
    await world.redis.set(keys.campaign_last_tick(), repr(ts(5, 15, 12)))  # as if the tick state were lost
    restarted = world.runner("after-restart")
    assert not (await restarted.tick(ts(5, 15, 18))).fired
    assert await world.notice_count() == 2


async def test_a_claim_left_by_a_crash_is_finished_with_the_notice_it_made(world: World) -> None:
    crashed, runner = world.runner("crashed"), world.runner("survivor")
    [firing] = [f for f in await crashed.firings(datetime(2026, 5, 15).date(), datetime(2026, 5, 15).date())
                if f.district == "d1"]  # fmt: skip
    at = ts(5, 15, 16)
    assert await crashed.store.claim(firing, at) == 1
    draft = crashed.draft(firing, {s.id: s for s in SCHOOLS})
    notice, _ = await world.notices.create(draft, key=firing.id, now=at)  # created, then the process died
    await crashed.store.advance_tick(at)
    assert not (await runner.tick(at + 60)).fired  # still within the lease: someone may be working on it
    report = await runner.tick(at + LEASE_SECONDS + 60)
    assert report.fired == [firing.id] and report.notices[firing.id] == notice.id
    [record] = await runner.store.records([firing.id])
    assert record.status == "fired" and record.notice == notice.id
    assert await world.notice_count() == 1
    assert await world.redis.hget(keys.notice(notice.id), "planned_at")  # planned by the survivor


async def test_a_firing_sent_early_does_not_fire_again_at_its_time(world: World) -> None:
    runner = world.runner()
    preview = await runner.preview(30, now=ts(5, 10), school="s3")
    first = preview.entries[0].firing
    assert (await runner.fire_early(first, now=ts(5, 10, 9))).fired == [first.id]
    assert not (await runner.fire_early(first, now=ts(5, 10, 9))).fired
    await runner.store.advance_tick(first.ts - 60)
    on_time = await runner.tick(first.ts + 60)
    assert first.id not in on_time.fired and await world.notice_count() == 1 + len(on_time.fired)


async def test_switches_per_school_and_district_and_the_opt_in_over_a_district_off(world: World) -> None:
    runner = world.runner()
    day = datetime(2026, 5, 15).date()

    async def audience() -> dict[str, tuple[str, ...]]:
        return {f.district: f.schools for f in await runner.firings(day, day) if f.campaign.id == "drowning"}

    assert await audience() == {"d1": ("s1", "s2"), "d2": ("s3",)}
    await runner.store.switch("drowning", False, school="s2")
    assert await audience() == {"d1": ("s1",), "d2": ("s3",)}
    await runner.store.switch("drowning", False, district="d1")
    await runner.store.switch("drowning", True, school="s2")
    assert await audience() == {"d1": ("s2",), "d2": ("s3",)}
    await runner.store.switch("drowning", False)
    assert await audience() == {"d1": ("s2",)}  # a school's own switch wins over the global one


async def test_an_admin_campaign_for_some_grades_reaches_only_its_owners_district(world: World) -> None:
    runner = world.runner()
    what = {"title": "三年级骑车安全提醒", "body": "未满12周岁不在道路上骑自行车。"}
    doc = {"id": "grade3-bikes", "name": "三年级骑车安全", "when": {"date": "05-20", "at": "16:30"},
           "who": {"grades": [3]}, "what": what}  # fmt: skip
    await runner.store.save_custom("grade3-bikes", doc, district="d1")
    await runner.store.advance_tick(ts(5, 20, 16))
    report = await runner.tick(ts(5, 20, 17))
    assert report.fired == ["grade3-bikes:2026-05-20:d1"]
    notice = await world.notice(report.notices["grade3-bikes:2026-05-20:d1"])
    assert notice.draft.audience == (Scope("d1", "s1", 3), Scope("d1", "s2", 3))
    assert int(await world.redis.hget(keys.notice(notice.id), "targeted") or 0) == 5  # 3 in s1 3-1, 2 in s2 3-1


async def test_a_firing_that_cannot_be_rendered_is_recorded_as_failed_once(world: World) -> None:
    runner = world.runner()
    body = "{% if '平安路' in schools[0] %}{{ '长' * 6000 }}{% else %}正文{% endif %}"  # fine when checked on a sample
    doc = {"id": "too-long", "name": "x", "when": {"date": "05-20"}, "what": {"title": "标题", "body": body}}
    await runner.store.save_custom("too-long", doc, district="d1")
    day = datetime(2026, 5, 20).date()
    subject = campaign_subject(next(f for f in await runner.firings(day, day) if f.campaign.id == "too-long"))
    assert subject.role == "district_admin" and subject.district == "d1"
    await runner.store.advance_tick(ts(5, 20, 8))
    report = await runner.tick(ts(5, 20, 10))
    assert report.failed == ["too-long:2026-05-20:d1"] and not report.fired
    [record] = await runner.store.records(report.failed)
    assert record.status == "failed" and "at most 5000" in record.error
    assert not (await runner.tick(ts(5, 20, 11))).failed
    await world.redis.hset(keys.campaign_custom(), "broken", '{"document": {"id": "broken"}}')
    assert "broken" not in await runner.custom()  # an invalid stored campaign is logged and left out


# -- end to end: a card in a parent's WeChat ------------------------------------------------------------------
async def test_a_fired_campaign_reaches_the_parents_wechat(
    redis: Redis, config: Config, emulator: Any, aiohttp_server: Any
) -> None:
    config.delivery.quiet_start = config.delivery.quiet_end = "00:00"
    roster = RosterStore(redis)
    await roster.put_school(SCHOOLS[0])
    await roster.ensure_class("s1", "3-1")
    await redis.hset(keys.class_students("s1", "3-1"), mapping={"20260301": "王小明|a"})
    server = await aiohttp_server(create_app(config, redis))
    await emulator.client.configure(callback_url=str(server.make_url("/wechat")))
    [parent] = await emulator.client.create_followers(1)
    await roster.bind_guardian(parent, Student("s1", "20260301", "王小明", "3-1"), "m")
    notices = NoticeService(redis, config, roster)
    runner = CampaignRunner(redis, config, load_catalog(), roster, notices)
    await runner.store.advance_tick(ts(5, 15, 15))
    assert (await runner.tick(ts(5, 15, 16))).fired == ["drowning:2026-05-15:d1"]
    api = WeChatAPI(config.wechat, redis)
    try:
        await build_worker(config, redis, api, name="t").run(burst=True)
    finally:
        await api.close()
    [card] = (await emulator.client.inbox(parent))["template"]
    assert "周末防溺水提醒" in card["data"].values() and "平安路小学" in card["data"].values()
