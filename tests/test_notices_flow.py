"""Notices end to end through the emulator: planning, sending, holding, confirming, following up."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

from bot import clock
from bot.app import create_app
from bot.config import Config
from bot.delivery.cards import CardSender, client_msg_id
from bot.delivery.worker import Worker
from bot.notices.followup import sweep
from bot.notices.model import SENDING, Draft, FollowUp, NoticeError, Question, Record
from bot.notices.service import NoticeService
from bot.roster import chat as roster_chat
from bot.roster.authz import Scope, Subject
from bot.roster.model import School, Student, Who
from bot.roster.store import RosterStore
from bot.serve import build_worker
from bot.store import keys
from bot.store.redis import Redis
from bot.wechat.client import WeChatAPI
from bot.wechat.emulator import EmulatorClient

DISTRICT, SCHOOL, CLASS = "d1", "s1", "3-2"
SEND = "/cgi-bin/message/template/send"
AUDIENCE = (Scope(DISTRICT, SCHOOL, 3, CLASS),)
ADMIN = Subject("school_admin", school=SCHOOL, district=DISTRICT)


def at_local(hour: int, minute: int = 0, day: int = 23) -> float:
    return datetime(2026, 11, day, hour, minute, tzinfo=clock.zone()).timestamp()


@dataclass
class World:
    config: Config
    redis: Redis
    em: EmulatorClient
    store: RosterStore
    notices: NoticeService
    api: WeChatAPI
    cards: CardSender
    worker: Worker
    parents: dict[str, list[str]]  # student id -> guardian openids
    teacher: str

    async def drain(self) -> None:
        await build_worker(self.config, self.redis, self.api, name="t").run(burst=True)

    async def cards_of(self, openid: str) -> list[dict[str, Any]]:
        return list((await self.em.inbox(openid))["template"])

    async def say(self, openid: str, text: str) -> str:
        result = await self.em.send_text(openid, text)
        assert result.status == 200
        return result.text or ""

    def draft(self, **kw: Any) -> Draft:
        base: dict[str, Any] = {"title": "周末防溺水提醒", "body": "请家长周末看护好孩子，不去河边玩水。",
                                "audience": AUDIENCE, "sender": "平安路小学三年级2班"}  # fmt: skip
        return Draft(**{**base, **kw})


@pytest.fixture
async def world(config: Config, redis: Redis, emulator: Any, aiohttp_server: Any) -> AsyncIterator[World]:
    config.delivery.quiet_start = config.delivery.quiet_end = "00:00"  # no quiet hours unless a test sets them
    config.notices.reminder_window_start, config.notices.reminder_window_end = "00:00", "23:59"
    roster_chat.forget_directory()
    store = RosterStore(redis)
    await store.put_school(School(SCHOOL, "平安路小学", DISTRICT, "demo"))
    await store.ensure_class(SCHOOL, CLASS)
    students = {"20260301": "王小明", "20260302": "李小红", "20260303": "张伟"}
    await redis.hset(keys.class_students(SCHOOL, CLASS), mapping={sid: f"{n}|a" for sid, n in students.items()})
    em: EmulatorClient = emulator.client
    server = await aiohttp_server(create_app(config, redis))
    await em.configure(callback_url=str(server.make_url("/wechat")))
    openids = await em.create_followers(5)
    parents = {"20260301": openids[0:2], "20260302": openids[2:3], "20260303": []}
    for sid, gs in parents.items():
        for i, g in enumerate(gs):
            await store.bind_guardian(g, Student(SCHOOL, sid, students[sid], CLASS), "m" if i == 0 else "f")
    teacher = openids[4]
    code = await store.create_teacher_invite(SCHOOL, [CLASS], "c", 3600)
    await store.redeem_teacher_invite(code, teacher)
    api = WeChatAPI(config.wechat, redis)
    notices = NoticeService(redis, config, store)
    cards = CardSender(config, redis, api, notices)
    yield World(config, redis, em, store, notices, api, cards, build_worker(config, redis, api), parents, teacher)
    await api.close()
    roster_chat.forget_directory()


async def test_a_teacher_writes_a_notice_in_the_chat_and_every_guardian_gets_one_card(world: World) -> None:
    t = world.teacher
    assert "标题" in await world.say(t, "发通知")
    assert "20个字" in await world.say(t, "这是一个超过二十个字的标题会被退回重新输入的啊")
    assert "全文" in await world.say(t, "周末防溺水提醒")
    assert "怎么回应" in await world.say(t, "周末请看护好孩子，不去河边、水库玩水。")
    assert "什么时候前确认" in await world.say(t, "2")
    preview = await world.say(t, "2")
    assert "周末防溺水提醒" in preview and "发送" in preview
    assert "将发给3位家长" in preview and "1名学生还没有家长绑定" in preview and "额度" not in preview
    sent = await world.say(t, "发送")
    assert "3位家长" in sent and "3名学生" in sent and "1名学生还没有家长绑定" in sent
    await world.drain()
    for g in [*world.parents["20260301"], *world.parents["20260302"]]:
        [card] = await world.cards_of(g)
        assert all(len(v) <= 20 and "\n" not in v for v in card["data"].values())
        assert "/n/" in card["url"]
    assert await world.cards_of(t) == []


async def test_the_chat_preview_warns_when_todays_quota_cannot_take_every_card(world: World) -> None:
    world.config.wechat.template_quota = 2
    t = world.teacher
    preview = ""
    for text in ("发通知", "周末防溺水提醒", "周末请看护好孩子。", "1"):  # mode 1 (no reply needed): the preview
        preview = await world.say(t, text)
    assert "将发给3位家长" in preview and "今日模板消息额度不足：今天发送2条" in preview
    assert await world.redis.zcard(keys.notices_by_time()) == 0


async def test_creating_the_same_notice_twice_with_one_key_gives_one_notice(world: World) -> None:
    a, plan_a, created_a = await world.notices.submit(world.draft(), ADMIN, key="k-1")
    b, plan_b, created_b = await world.notices.submit(world.draft(), ADMIN, key="k-1")
    assert a.id == b.id and created_a and not created_b and plan_a is not None and plan_b is None
    await world.drain()
    assert len(await world.cards_of(world.parents["20260301"][0])) == 1


async def test_a_sender_that_died_after_claiming_the_key_leaves_a_notice_the_repeat_lists_and_plans(
    world: World,
) -> None:
    """The scheduler's kill -9 test caught this: a crash between the key's claim and the notice's
    listing left a notice nobody could find; the repeated key (the restarted scheduler) repairs it."""
    notice, _plan, _created = await world.notices.submit(world.draft(), ADMIN, key="k-crash")
    # what the dead process left: the notice and its key, but no listing and no plan
    async with world.redis.pipeline(transaction=False) as pipe:
        pipe.zrem(keys.notices_by_time(), notice.id)
        pipe.zrem(keys.notices_by_school(SCHOOL), notice.id)
        pipe.delete(keys.notice_records(notice.id), keys.outbox())
        pipe.hset(keys.notice(notice.id), mapping={"status": "planning"})
        pipe.hdel(keys.notice(notice.id), "planning", "planned_at")
        await pipe.execute()
    again, _plan, created = await world.notices.submit(world.draft(), ADMIN, key="k-crash")
    assert again.id == notice.id and not created
    assert await world.redis.zscore(keys.notices_by_time(), notice.id) == notice.created
    assert await world.redis.zscore(keys.notices_by_school(SCHOOL), notice.id) == notice.created
    assert await world.redis.hlen(keys.notice_records(notice.id)) == 3
    await world.drain()
    assert len(await world.cards_of(world.parents["20260301"][0])) == 1


async def test_card_fields_over_20_characters_are_refused_before_wechat(world: World) -> None:
    with pytest.raises(NoticeError) as info:
        await world.notices.submit(world.draft(title="一" * 21), ADMIN)
    assert info.value.field == "title"
    with pytest.raises(NoticeError):
        await world.notices.submit(world.draft(sender="第一行\n第二行"), ADMIN)


async def test_urgent_notices_need_a_role_that_may_send_them_and_skip_quiet_hours(world: World) -> None:
    teacher = Subject.from_who(world.teacher, await world.store.who(world.teacher), {SCHOOL: DISTRICT})
    with pytest.raises(NoticeError):
        await world.notices.submit(world.draft(urgent=True), teacher)
    world.config.delivery.quiet_start, world.config.delivery.quiet_end = "00:00", "23:59"  # always quiet
    notice, _, _ = await world.notices.submit(world.draft(urgent=True, title="暴雨红色预警"), ADMIN)
    await world.drain()
    assert len(await world.cards_of(world.parents["20260302"][0])) == 1
    _ = notice


async def test_quiet_hours_hold_non_urgent_cards_until_morning(world: World) -> None:
    world.config.delivery.quiet_start, world.config.delivery.quiet_end = "21:30", "07:00"
    night = at_local(22)
    notice, _, _ = await world.notices.submit(world.draft(), ADMIN, now=night)
    [(entry_id, fields)] = await world.redis.xrange(keys.outbox())
    await world.cards.run(fields, now=night)
    g = world.parents["20260302"][0]
    assert (await world.notices.record(notice.id, g)).status == "h"  # type: ignore[union-attr]
    held = await world.redis.zrange(keys.outbox_held(), 0, -1, withscores=True)
    assert len(held) == 1 and held[0][1] == at_local(7, 0, day=24)
    assert await world.cards.release_due(now=at_local(6, 59, day=24)) == 0
    assert await world.cards.release_due(now=at_local(7, 0, day=24)) == 1
    await world.redis.xdel(keys.outbox(), entry_id)
    [(_, released)] = await world.redis.xrange(keys.outbox())
    await world.cards.run(released, now=at_local(7, 1, day=24))
    assert len(await world.cards_of(g)) == 1


async def test_a_familys_daily_cap_moves_extra_cards_to_the_next_day(world: World) -> None:
    world.config.delivery.family_daily_cap = 1
    await world.notices.submit(world.draft(title="第一条"), ADMIN)
    await world.notices.submit(world.draft(title="第二条"), ADMIN)
    before = clock.now()
    await world.drain()
    g = world.parents["20260302"][0]
    # the two batches run concurrently: whichever takes the family's one slot today goes out
    titles = [c["data"]["thing1"] for c in await world.cards_of(g)]
    if len(titles) == 2 and clock.day_key(before) != clock.day_key(clock.now()):
        return  # a midnight passed between the two batches, and each day's one slot took a card: right too
    assert titles in (["第一条"], ["第二条"])
    held = await world.redis.zrange(keys.outbox_held(), 0, -1, withscores=True)
    assert held and all(score > clock.now() for _, score in held)


async def test_a_card_retried_after_busy_answers_counts_once_against_the_familys_cap(world: World) -> None:
    """Only a card that goes out counts: -1 and 45011 answers (not sent) give the family's slot back,
    and a resend after a lost answer (maybe sent) was counted on its first try, not again."""
    world.config.delivery.family_daily_cap = 1
    world.config.wechat.api_retries = 0  # the client's own retries of -1 are tested with the client
    notice, _, _ = await world.notices.submit(world.draft(), ADMIN)
    g = world.parents["20260302"][0]
    job = {"k": "cards", "n": notice.id, "u": "0", "r": "0", "to": g}
    start = at_local(10)  # one day, whenever the test runs
    cap = keys.family_cap(g, clock.day_key(start))
    for minute, fault in enumerate(({"errcode": -1}, {"errcode": 45011}, {"http_status": 502})):
        await world.em.inject_fault(SEND, **fault)
        await world.cards.run(job, now=start + 60 * minute)
        assert await world.cards_of(g) == [], fault
    assert await world.redis.smembers(cap) == {f"{notice.id}:0"}  # the lost answer (502): it may have gone out
    assert (await world.notices.record(notice.id, g)).status == "p"  # type: ignore[union-attr]
    await world.cards.run(job, now=start + 180)  # resent inside WeChat's window, not held until tomorrow
    assert len(await world.cards_of(g)) == 1
    assert (await world.notices.record(notice.id, g)).status == "s"  # type: ignore[union-attr]
    assert await world.redis.scard(cap) == 1
    tomorrow = clock.next_at(clock.next_midnight(start), world.config.delivery.quiet_end)  # where the cap holds
    assert tomorrow not in [score for _, score in await world.redis.zrange(keys.outbox_held(), 0, -1, withscores=True)]


async def test_a_batch_redone_after_a_kill_between_charging_and_marking_counts_its_cards_once(world: World) -> None:
    """A worker killed after taking the families' slots but before marking the records: the batch
    is redone, and the cards that took their slots go out today instead of waiting for tomorrow."""
    world.config.delivery.family_daily_cap = 1
    notice, _, _ = await world.notices.submit(world.draft(), ADMIN)
    g = world.parents["20260302"][0]
    start = at_local(10)
    day = clock.day_key(start)
    kept, over = await world.cards._apply_cap([g], {}, f"{notice.id}:0", day, 1)  # where the kill left it
    assert (kept, over) == ([g], [])
    await world.cards.run({"k": "cards", "n": notice.id, "u": "0", "r": "0", "to": g}, now=start)
    assert len(await world.cards_of(g)) == 1
    assert await world.redis.zcard(keys.outbox_held()) == 0
    assert await world.redis.scard(keys.family_cap(g, day)) == 1


async def test_a_resend_after_a_kill_that_gave_its_slot_back_is_counted_again(world: World) -> None:
    """A worker killed after giving back the slot of a card answered -1 but before recording it: the
    record stays "sending" (maybe sent) and is resent; that resend takes its slot again, so the
    family's next card today waits for tomorrow as the cap says."""
    world.config.delivery.family_daily_cap = 1
    first, _, _ = await world.notices.submit(world.draft(title="第一条"), ADMIN)
    second, _, _ = await world.notices.submit(world.draft(title="第二条"), ADMIN)
    g = world.parents["20260302"][0]
    start = at_local(10)
    day = clock.day_key(start)
    await world.cards._mark(first.id, [g], 0, SENDING, start)  # marked sending, slot given back, then killed
    await world.cards.run({"k": "cards", "n": first.id, "u": "0", "r": "0", "to": g}, now=start + 60)
    assert [c["data"]["thing1"] for c in await world.cards_of(g)] == ["第一条"]
    assert await world.redis.smembers(keys.family_cap(g, day)) == {f"{first.id}:0"}
    await world.cards.run({"k": "cards", "n": second.id, "u": "0", "r": "0", "to": g}, now=start + 120)
    assert len(await world.cards_of(g)) == 1  # held: the family had its one card today
    assert await world.redis.zcard(keys.outbox_held()) == 1


async def test_the_daily_quota_spreads_a_large_notice_over_days_with_a_warning(world: World) -> None:
    world.config.wechat.template_quota = 2
    _, plan, _ = await world.notices.submit(world.draft(), ADMIN)
    assert plan is not None and plan.today == 2 and sum(c for _, c in plan.later) == 1
    assert "额度不足" in plan.warning
    assert await world.redis.zcard(keys.outbox_held()) == 1


async def test_a_notice_planned_in_quiet_hours_counts_against_the_quota_of_the_morning_it_goes_out(
    world: World,
) -> None:
    world.config.delivery.quiet_start, world.config.delivery.quiet_end = "21:30", "07:00"
    world.config.wechat.template_quota = 3
    evening, morning = at_local(22), at_local(8, day=24)
    _, plan, _ = await world.notices.submit(world.draft(title="晚上写的通知"), ADMIN, now=evening)
    assert plan is not None and plan.today == 3 and plan.warning == ""
    assert await world.redis.get(keys.quota_used(clock.day_key(morning))) == "3"
    assert await world.redis.get(keys.quota_used(clock.day_key(evening))) is None
    # the morning's quota is taken by the cards held overnight: the next notice waits a day, with a warning
    _, plan, _ = await world.notices.submit(world.draft(title="早上写的通知"), ADMIN, now=morning)
    assert plan is not None and plan.today == 0 and [c for _, c in plan.later] == [3] and "额度不足" in plan.warning


async def test_a_reminder_due_at_night_waits_for_the_morning_and_a_notice_may_set_its_own_policy(
    world: World,
) -> None:
    policy = FollowUp((2.0,), ("08:00", "20:00"))  # one reminder only, by day (the fixture allows any hour)
    notice, _, _ = await world.notices.submit(world.draft(followup=policy), ADMIN, now=at_local(19))
    await world.drain()
    assert await sweep(world.notices, now=at_local(21)) == 0  # due, but at night
    assert await world.redis.zscore(keys.followups(), f"{notice.id}:1") == at_local(8, day=24)
    assert await sweep(world.notices, now=at_local(7, 59, day=24)) == 0
    assert await sweep(world.notices, now=at_local(8, day=24)) == 1
    await world.drain()
    assert len(await world.cards_of(world.parents["20260302"][0])) == 2
    # that was the last reminder of this notice's policy: next comes the class teacher's list
    due = await world.redis.zrange(keys.followups(), 0, -1, withscores=True)
    assert due == [(f"{notice.id}:T", at_local(9, day=24))]


async def test_two_guardians_of_one_child_count_once_and_a_stranger_is_refused(world: World) -> None:
    notice, _, _ = await world.notices.submit(world.draft(), ADMIN)
    await world.drain()
    mum, dad = world.parents["20260301"]
    r1 = await world.notices.confirm(notice.id, mum, await world.store.who(mum))
    r2 = await world.notices.confirm(notice.id, dad, await world.store.who(dad))
    assert r1.ok and r1.students == 1 and r2.ok and r2.students == 0
    assert await world.redis.hlen(keys.notice_confirmations(notice.id)) == 1
    stranger = Who()
    assert (await world.notices.confirm(notice.id, world.teacher, stranger)).reason == "not_in_audience"
    funnel = await world.notices.funnel(notice)
    assert funnel.targeted == 3 and funnel.reachable == 3 and funnel.confirmed == 1


async def test_confirming_in_the_chat_with_one_or_several_notices_waiting(world: World) -> None:
    g = world.parents["20260302"][0]
    assert "没有需要确认" in await world.say(g, "确认")
    await world.notices.submit(world.draft(title="通知一"), ADMIN)
    await world.drain()
    assert "已确认「通知一」" in await world.say(g, "确认")
    q = Question("孩子可以独自去河边玩吗？", ("可以", "不可以"), 1)
    await world.notices.submit(world.draft(title="通知二", mode="understand", question=q), ADMIN)
    await world.notices.submit(world.draft(title="通知三"), ADMIN)
    await world.drain()
    pick = await world.say(g, "确认")
    assert "2条通知" in pick
    number = "1" if pick.index("通知二") < pick.index("通知三") else "2"
    assert "小问题" in await world.say(g, number)
    assert "正确答案是：不可以" in await world.say(g, "A")
    assert "已确认「通知二」" in await world.say(g, "b")


async def test_wechat_delivery_reports_mark_records_delivered_or_blocked(world: World) -> None:
    await world.em.configure(push_events=False)  # WeChat's reports are sent below, one by one
    notice, _, _ = await world.notices.submit(world.draft(), ADMIN)
    await world.drain()
    reached, blocking = world.parents["20260302"][0], world.parents["20260301"][0]
    for openid, status in ((reached, "success"), (blocking, "failed:user block")):
        rec = await world.notices.record(notice.id, openid)
        assert rec is not None and rec.status == "s" and rec.msgid
        report = {"MsgID": int(rec.msgid), "Status": status}
        event = {"type": "event", "event": "TEMPLATESENDJOBFINISH", "fields": report}
        assert (await world.em.send(openid, event)).status == 200
    assert (await world.notices.record(notice.id, reached)).status == "d"  # type: ignore[union-attr]
    assert (await world.notices.record(notice.id, blocking)).status == "b"  # type: ignore[union-attr]
    funnel = await world.notices.funnel(notice)
    assert (funnel.sent, funnel.delivered, funnel.failed) == (3, 1, 1)


async def test_busy_and_per_minute_quota_answers_hold_the_card_and_send_it_later(world: World) -> None:
    world.config.wechat.api_retries = 0  # the client's own retries of -1 are tested with the client
    notice, _, _ = await world.notices.submit(world.draft(), ADMIN)
    [(entry_id, fields)] = await world.redis.xrange(keys.outbox())
    await world.em.inject_fault(SEND, errcode=-1)
    await world.em.inject_fault(SEND, errcode=45011)
    await world.cards.run(fields)
    everyone = [*world.parents["20260301"], *world.parents["20260302"]]
    statuses = [(await world.notices.record(notice.id, g)).status for g in everyone]  # type: ignore[union-attr]
    assert sorted(statuses) == ["q", "q", "s"]
    [(_, retry_at)] = await world.redis.zrange(keys.outbox_held(), 0, -1, withscores=True)
    assert retry_at > clock.now()  # backs off (delivery.retry_after), not at once
    assert await world.cards.release_due(now=retry_at) == 1
    await world.redis.xdel(keys.outbox(), entry_id)
    [(_, again)] = await world.redis.xrange(keys.outbox())
    await world.cards.run(again)
    assert [len(await world.cards_of(g)) for g in everyone] == [1, 1, 1]
    errors = (await world.em.stats())["errors"]
    assert errors["-1"] == 1 and errors["45011"] == 1


async def test_unfollowed_guardians_are_marked_unreachable_and_quota_exhaustion_holds_until_midnight(
    world: World,
) -> None:
    u = world.parents["20260301"][0]
    await world.em.configure(unfollowed=[u])
    notice, _, _ = await world.notices.submit(world.draft(), ADMIN)
    await world.drain()
    assert (await world.notices.record(notice.id, u)).status == "u"  # type: ignore[union-attr]

    await world.em.configure(daily_quota=0)
    second, _, _ = await world.notices.submit(world.draft(title="第二条"), ADMIN)
    before = clock.now()
    await world.drain()
    after = clock.now()  # the worker saw 45009 in between: on the day of one of them, near midnight
    g = world.parents["20260302"][0]
    assert (await world.notices.record(second.id, g)).status == "q"  # type: ignore[union-attr]
    days = {clock.day_key(before), clock.day_key(after)}
    assert await world.redis.exists(*(keys.quota_exhausted(day) for day in days))
    held = await world.redis.zrange(keys.outbox_held(), 0, -1, withscores=True)
    assert held and all(clock.next_midnight(before) <= score <= clock.next_midnight(after) + 60 for _, score in held)


async def test_a_crash_after_sending_resends_inside_the_window_and_never_doubles(world: World) -> None:
    notice, _, _ = await world.notices.submit(world.draft(), ADMIN)
    [(entry_id, fields)] = await world.redis.xrange(keys.outbox())
    g = world.parents["20260302"][0]
    # as if a worker sent this card and died before recording the answer
    await world.api.send_template(g, world.config.notices.template_id, world.cards.card_data(notice, 0),
                                  client_msg_id=client_msg_id(notice.id, g, 0))  # fmt: skip
    await world.redis.hset(keys.notice_records(notice.id), g, Record("p", at=int(clock.now())).encode())
    # and one whose crash is older than WeChat's dedupe window
    old = world.parents["20260301"][0]
    await world.redis.hset(keys.notice_records(notice.id), old, Record("p", at=int(clock.now()) - 3600).encode())
    await world.cards.run(fields)
    assert len(await world.cards_of(g)) == 1  # resent with the same client_msg_id: WeChat dropped it
    assert (await world.notices.record(notice.id, g)).status == "s"  # type: ignore[union-attr]
    assert await world.cards_of(old) == []
    assert (await world.notices.record(notice.id, old)).status == "x"  # type: ignore[union-attr]
    _ = entry_id


async def test_a_card_resent_again_and_again_turns_uncertain_once_the_window_of_its_first_try_has_passed(
    world: World,
) -> None:
    """Resends must not stretch WeChat's dedupe window: it runs from the first try, so a card still
    unanswered 10 minutes after it is marked uncertain, even if it was resent in between."""
    world.config.wechat.api_retries = 0
    notice, _, _ = await world.notices.submit(world.draft(), ADMIN)
    a, b = world.parents["20260302"][0], world.parents["20260301"][0]
    job = {"k": "cards", "n": notice.id, "u": "0", "r": "0"}
    start = clock.now()
    for g in (a, b):  # WeChat sends the card, and its answer is lost
        await world.em.inject_fault(SEND, http_status=502, deliver=True)
        await world.cards.run({**job, "to": g}, now=start)
    # inside the window: resent with the same client_msg_id, and again no answer (a) or a busy one (b)
    await world.em.inject_fault(SEND, http_status=502, deliver=True)
    await world.cards.run({**job, "to": a}, now=start + 300)
    await world.em.inject_fault(SEND, errcode=45011)
    await world.cards.run({**job, "to": b}, now=start + 300)
    for g in (a, b):
        rec = await world.notices.record(notice.id, g)
        assert rec is not None and rec.status == "p" and rec.at == int(start)
    # past the window of the first try (WeChat's clock too): never resent, marked uncertain
    await world.em.advance_clock(700)
    for g in (a, b):
        await world.cards.run({**job, "to": g}, now=start + 700)
        assert (await world.notices.record(notice.id, g)).status == "x"  # type: ignore[union-attr]
        assert len(await world.cards_of(g)) == 1
    assert (await world.em.stats())["template_deduped"] == 1


async def test_follow_up_reminds_only_the_unconfirmed_then_tells_the_class_teacher(world: World) -> None:
    start = clock.next_at(clock.now(), "09:00")  # every round falls by day, whenever the test runs
    notice, _, _ = await world.notices.submit(world.draft(followup=FollowUp((2.0, 24.0))), ADMIN, now=start)
    await world.drain()
    mum = world.parents["20260301"][0]
    await world.notices.confirm(notice.id, mum, await world.store.who(mum))
    assert await sweep(world.notices, now=start + 3600) == 0
    assert await sweep(world.notices, now=start + 2 * 3600 + 1) == 1
    await world.drain()
    other = world.parents["20260302"][0]
    assert len(await world.cards_of(other)) == 2 and "提醒" in (await world.cards_of(other))[1]["data"]["thing1"]
    assert len(await world.cards_of(mum)) == 1
    assert len(await world.cards_of(world.parents["20260301"][1])) == 1  # dad's child is confirmed by mum
    assert await sweep(world.notices, now=start + 24 * 3600 + 1) == 1
    await world.drain()
    assert len(await world.cards_of(other)) == 3
    assert await sweep(world.notices, now=start + 26 * 3600) == 1  # the class teacher's list
    await world.drain()
    [teacher_card] = await world.cards_of(world.teacher)
    assert "2人未确认" in json.dumps(teacher_card["data"], ensure_ascii=False)
    assert await world.redis.zcard(keys.followups()) == 0


async def test_the_teacher_asks_who_has_not_confirmed_and_sees_reasons_privately(world: World) -> None:
    notice, _, _ = await world.notices.submit(world.draft(), ADMIN)
    await world.drain()
    g = world.parents["20260302"][0]
    await world.notices.opened(notice.id, g)
    reply = await world.say(world.teacher, "未确认")
    assert "已确认0/3" in reply and "李小红：已查看未确认" in reply and "张伟：未绑定" in reply
    assert "仅您可见" in reply and "名单仅班主任可见" not in reply
    assert "仅供班主任" in await world.say(g, "未确认")


async def test_a_subject_teacher_asks_who_has_not_confirmed_and_gets_counts_without_names(world: World) -> None:
    """The privacy rule: names go only to the class teacher; a subject teacher of the class sees how many and why."""
    notice, _, _ = await world.notices.submit(world.draft(), ADMIN)
    await world.drain()
    await world.notices.opened(notice.id, world.parents["20260302"][0])
    [subject_teacher] = await world.em.create_followers(1)
    code = await world.store.create_teacher_invite(SCHOOL, [CLASS], "s", 3600)
    assert await world.store.redeem_teacher_invite(code, subject_teacher)
    reply = await world.say(subject_teacher, "未确认")
    assert "已确认0/3" in reply and "已查看未确认：1人" in reply and "未绑定：1人" in reply, reply
    assert "名单仅班主任可见" in reply and "仅您可见" not in reply
    assert not any(name in reply for name in ("王小明", "李小红", "张伟")), reply


async def test_concurrent_creations_with_one_key_give_one_notice(world: World) -> None:
    results = await asyncio.gather(*(world.notices.create(world.draft(), key="race-1") for _ in range(20)))
    assert len({n.id for n, _ in results}) == 1 and sum(created for _, created in results) == 1
    assert await world.redis.zcard(keys.notices_by_time()) == 1
