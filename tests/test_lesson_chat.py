"""Lessons in the chat, end to end: real signed callbacks from emulator followers, real Redis."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from bot.app import create_app
from bot.config import Config
from bot.lessons import library
from bot.lessons.chat import LessonChat, recommend, topic_order
from bot.lessons.content import Lesson, Library, Question
from bot.lessons.progress import LessonResult, LessonStore, Progress
from bot.lessons.review import review_line, review_lines
from bot.notices.model import Draft
from bot.notices.service import NoticeService
from bot.roster import chat as roster_chat
from bot.roster.authz import Scope, Subject
from bot.roster.model import School, Student
from bot.roster.store import RosterStore
from bot.serve import build_worker
from bot.store import keys
from bot.store.redis import Redis
from bot.wechat.client import WeChatAPI
from bot.wechat.emulator import EmulatorClient

DISTRICT, SCHOOL = "d1", "s1"
CLASS, OLDER = "3-2", "5-1"  # grade bands 1–3 and 4–6
STUDENTS = {CLASS: {"20260301": "王小明", "20260302": "李小红"}, OLDER: {"20260501": "王大明"}}
PASSIVE_LIMIT = 2048  # bytes: a passive text reply must stay inside WeChat's limit


@dataclass
class World:
    config: Config
    redis: Redis
    em: EmulatorClient
    roster: RosterStore
    lessons: LessonStore
    library: Library

    async def say(self, openid: str, text: str) -> str:
        result = await self.em.send_text(openid, text)
        assert result.status == 200, result
        reply = result.text or ""
        assert len(reply.encode()) <= PASSIVE_LIMIT, reply
        return reply

    async def click(self, openid: str, key: str) -> str:
        result = await self.em.send_event(openid, "CLICK", key)
        assert result.status == 200, result
        return result.text or ""

    async def progress(self, openid: str, sid: str) -> Progress:
        found = await self.lessons.progress(openid, SCHOOL, sid)
        assert found is not None
        return found

    async def lesson_of(self, openid: str, sid: str) -> Lesson:
        found = self.library.get((await self.progress(openid, sid)).lesson)
        assert found is not None
        return found


@pytest.fixture
async def world(config: Config, redis: Redis, emulator: Any, aiohttp_server: Any) -> AsyncIterator[World]:
    config.delivery.quiet_start = config.delivery.quiet_end = "00:00"
    roster_chat.forget_directory()
    store = RosterStore(redis)
    await store.put_school(School(SCHOOL, "平安路小学", DISTRICT, "demo"))
    for cid, students in STUDENTS.items():
        await store.ensure_class(SCHOOL, cid)
        await redis.hset(keys.class_students(SCHOOL, cid), mapping={sid: f"{n}|a" for sid, n in students.items()})
    server = await aiohttp_server(create_app(config, redis))
    await emulator.client.configure(callback_url=str(server.make_url("/wechat")))
    yield World(config, redis, emulator.client, store, LessonStore(redis), library())
    roster_chat.forget_directory()


async def parent_of(w: World, *sids: str) -> str:
    [openid] = await w.em.create_followers(1)
    for sid in sids:
        cid = next(c for c, students in STUDENTS.items() if sid in students)
        await w.roster.bind_guardian(openid, Student(SCHOOL, sid, STUDENTS[cid][sid], cid), "m")
    return openid


def right(q: Question) -> str:
    return q.answer


def wrong(q: Question) -> str:
    if q.kind == "truefalse":
        return "错" if q.answer == "对" else "对"
    return next(letter for letter in "ABCD"[: len(q.options)] if letter != q.answer)


def topic_number(offer: str, name: str) -> str:
    found = re.search(rf"^(\d+)\. {name}", offer, re.MULTILINE)
    assert found, offer
    return found.group(1)


async def choose(w: World, parent: str, topic_name: str, start: str = "学习") -> str:
    offer = await w.say(parent, start)
    assert "回复序号选择主题" in offer
    return await w.say(parent, topic_number(offer, topic_name))


async def read(w: World, parent: str, lesson: Lesson) -> str:
    """Through the segments (the first is already shown): returns the first question."""
    reply = ""
    for _ in lesson.segments:
        reply = await w.say(parent, "继续")
    return reply


async def answer(w: World, parent: str, lesson: Lesson, wrong_at: frozenset[int] | set[int] = frozenset()) -> str:
    reply = ""
    for i, q in enumerate(lesson.questions):
        reply = await w.say(parent, wrong(q) if i in wrong_at else right(q))
    return reply


# -- the whole lesson ---------------------------------------------------------------------------------
async def test_a_parent_opens_the_menu_reads_the_segments_and_passes_with_every_answer_right(world: World) -> None:
    parent = await parent_of(world, "20260301")
    offer = await world.click(parent, "LESSONS")
    assert "王小明" in offer and "1–3年级" in offer and "回复「开始」" in offer
    first = await world.say(parent, "开始")
    lesson = await world.lesson_of(parent, "20260301")
    assert lesson.band == "g1-3" and lesson.title in first and f"1/{len(lesson.segments)}" in first
    assert "回复「继续」看下一段" in first
    for n in range(2, len(lesson.segments) + 1):
        reply = await world.say(parent, "下一步" if n % 2 else "好的")  # any short acknowledgement moves on
        assert f"{n}/{len(lesson.segments)}" in reply
    assert "开始小测验" in reply
    q1 = await world.say(parent, "继续")
    assert f"第1/{len(lesson.questions)}题" in q1 and lesson.questions[0].text in q1

    # tolerant answers: full-width, lower case, spaces, a "选" prefix, 对的/错误
    def sloppy(q: Question, i: int) -> str:
        if q.kind == "truefalse":
            return "对的！" if q.answer == "对" else "错误"
        return [chr(ord(q.answer) + 0xFEE0), f" {q.answer.lower()} ", f"选{q.answer}"][i % 3]

    for i, q in enumerate(lesson.questions):
        reply = await world.say(parent, sloppy(q, i))
        assert reply.startswith("✅ 答对了！") and q.explain in reply
    assert f"答对{len(lesson.questions)}/{len(lesson.questions)}题" in reply and "得分100分" in reply
    assert "合格！" in reply and "合格线80分" in reply
    [result] = (await world.lessons.results(SCHOOL, "20260301")).values()
    assert (result.lesson, result.best, result.passed) == (lesson.id, 100, True)
    assert await world.lessons.missed(SCHOOL, "20260301", lesson.topic) == []


async def test_a_parent_with_two_children_picks_one_by_number(world: World) -> None:
    parent = await parent_of(world, "20260301", "20260501")
    pick = await world.say(parent, "学习")
    assert "1. 王小明（三年级（2）班）" in pick and "2. 王大明（五年级（1）班）" in pick
    assert "请回复序号 1–2" in await world.say(parent, "7")
    assert "请回复序号 1–2" in await world.say(parent, "随便")
    offer = await world.say(parent, "2")
    assert "王大明" in offer and "4–6年级" in offer
    first = await world.say(parent, topic_number(offer, "防溺水"))
    assert (await world.lesson_of(parent, "20260501")).id == "drowning-g4-6" and "和王大明一起学" in first
    assert await world.lessons.progress(parent, SCHOOL, "20260301") is None


async def test_wrong_answers_below_the_pass_mark_fail_and_a_retry_can_pass(world: World) -> None:
    parent = await parent_of(world, "20260301")
    await choose(world, parent, "消防安全")
    lesson = await world.lesson_of(parent, "20260301")
    await read(world, parent, lesson)
    total = len(lesson.questions)
    first_wrong = await world.say(parent, wrong(lesson.questions[0]))
    assert first_wrong.startswith("❌ 不对哦，正确答案是") and lesson.questions[0].explain in first_wrong
    assert "第2/" in first_wrong  # the next question comes in the same reply
    for q in lesson.questions[1:-1]:
        await world.say(parent, right(q))
    result = await world.say(parent, wrong(lesson.questions[-1]))
    pct = round(100 * (total - 2) / total)
    assert f"答对{total - 2}/{total}题" in result and f"得分{pct}分" in result
    assert "回复「重做」" in result and "合格！" not in result
    ids = [lesson.questions[0].id, lesson.questions[-1].id]
    assert await world.lessons.missed(SCHOOL, "20260301", "fire") == ids
    [failed] = (await world.lessons.results(SCHOOL, "20260301")).values()
    assert failed.finished and not failed.passed and failed.best == pct

    again = await world.say(parent, "重做")
    assert "再答一次" in again and f"第1/{total}题" in again  # straight to the quiz, no segments
    result = await answer(world, parent, lesson)
    assert "得分100分" in result and "合格！" in result and "最好成绩：100分" in result
    [passed] = (await world.lessons.results(SCHOOL, "20260301")).values()
    assert passed.passed and passed.best == 100
    assert await world.lessons.missed(SCHOOL, "20260301", "fire") == []


async def test_the_pass_mark_comes_from_the_config(world: World) -> None:
    world.config.lessons.pass_mark = 1.0  # this deployment wants every answer right
    parent = await parent_of(world, "20260301")
    await choose(world, parent, "消防安全")
    lesson = await world.lesson_of(parent, "20260301")
    await read(world, parent, lesson)
    total = len(lesson.questions)
    assert total >= 5  # one wrong answer still passes the default 80 %
    result = await answer(world, parent, lesson, wrong_at={0})
    assert f"答对{total - 1}/{total}题" in result and "合格线100分" in result and "合格！" not in result
    [failed] = (await world.lessons.results(SCHOOL, "20260301")).values()
    assert failed.finished and not failed.passed


async def test_a_stray_message_mid_quiz_gets_a_reminder_and_keeps_the_place(world: World) -> None:
    parent = await parent_of(world, "20260301")
    await choose(world, parent, "防溺水")
    lesson = await world.lesson_of(parent, "20260301")
    await read(world, parent, lesson)
    await world.say(parent, right(lesson.questions[0]))
    q2 = lesson.questions[1]
    for stray in ("这题我不太懂，孩子在问", "E"):
        reminder = await world.say(parent, stray)
        assert "正在答题，请回复" in reminder and q2.text in reminder and "暂停" in reminder
    image = await world.em.send(parent, {"type": "image", "pic_url": "http://x/y.jpg", "media_id": "m1"})
    assert "正在答题" in (image.text or "")
    p = await world.progress(parent, "20260301")
    assert (p.phase, p.index, p.right, p.wrong) == ("quiz", 1, [lesson.questions[0].id], [])
    after = await world.say(parent, right(q2))
    assert after.startswith("✅") and "第3/" in after


async def test_a_long_message_while_reading_gets_a_hint_not_the_next_segment(world: World) -> None:
    parent = await parent_of(world, "20260301")
    first = await choose(world, parent, "防溺水")
    assert "1/" in first
    hint = await world.say(parent, "我们等一下再看这个可以吗老师")
    assert "回复「继续」看下一段" in hint
    assert (await world.progress(parent, "20260301")).index == 0


async def test_pausing_or_another_command_keeps_the_place_and_学习_resumes(world: World) -> None:
    parent = await parent_of(world, "20260301")
    await choose(world, parent, "交通安全")
    lesson = await world.lesson_of(parent, "20260301")
    await read(world, parent, lesson)
    await world.say(parent, right(lesson.questions[0]))
    paused = await world.say(parent, "暂停")
    assert "学到第2题" in paused and "回复「学习」" in paused
    assert "没看懂" in await world.say(parent, "A")  # paused: an answer is no longer taken as one
    resumed = await world.say(parent, "学习")
    assert "欢迎回来" in resumed and lesson.questions[1].text in resumed

    # another capability's command mid-quiz works, and the lesson waits
    assert "您已绑定" in await world.say(parent, "我的孩子")
    assert (await world.say(parent, right(lesson.questions[1]))).startswith("✅")

    # a long break: the chat state is gone (it expires after a day), the lesson's progress is not
    await world.redis.delete(keys.chat_state(parent))
    assert 0 < await world.redis.ttl(keys.lesson_progress(parent, SCHOOL, "20260301")) <= 7 * 86400
    resumed = await world.say(parent, "学习")
    assert "欢迎回来" in resumed and lesson.questions[2].text in resumed
    result = ""
    for q in lesson.questions[2:]:
        result = await world.say(parent, right(q))
    assert "得分100分" in result


async def test_cancel_leaves_the_lesson_and_switching_offers_another(world: World) -> None:
    parent = await parent_of(world, "20260301")
    await choose(world, parent, "用电安全")
    await world.say(parent, "取消")
    assert "欢迎回来" in await world.say(parent, "学习")
    offer = await world.say(parent, "换一课")
    assert "回复序号选择主题" in offer
    assert await world.lessons.progress(parent, SCHOOL, "20260301") is None


# -- which lesson is offered ----------------------------------------------------------------------------
def test_the_offer_follows_the_season_and_the_childs_results() -> None:
    lib = library()
    july = recommend(lib, "g1-3", 7, {})
    assert july is not None and july.band == "g1-3" and july.peaks_in(7) and july.topic == "drowning"
    passed = {july.id: LessonResult(july.id, started=1, finished=1, best=100, passed_at=1)}
    after = recommend(lib, "g1-3", 7, passed)
    assert after is not None and after.peaks_in(7) and after.topic != "drowning"  # the next risk of July
    december = recommend(lib, "k", 12, {})
    assert december is not None and december.band == "k" and december.peaks_in(12)
    april = recommend(lib, "g7-12", 4, {})  # no topic peaks in April: an all-year lesson
    assert april is not None and april.band == "g7-12" and april.all_year
    assert topic_order(lib, 7)[:2] == ["drowning", "flood-typhoon"]  # the numbered list: this month's risks first


# -- spaced review ------------------------------------------------------------------------------------
async def test_missed_questions_come_back_before_the_next_lesson_on_that_topic(world: World) -> None:
    parent = await parent_of(world, "20260301")
    await choose(world, parent, "防溺水")
    lesson = await world.lesson_of(parent, "20260301")
    await read(world, parent, lesson)
    await answer(world, parent, lesson, wrong_at={1, 3})
    missed = [lesson.questions[1], lesson.questions[3]]

    line = await review_line(world.lessons, world.library, SCHOOL, "20260301", "drowning", child="王小明")
    assert line is not None and "王小明上次有2道防溺水题没答对" in line and "\n" not in line
    assert missed[0].explain in line
    lines = await review_lines(world.lessons, world.library, [(SCHOOL, "20260301", "王小明"),
                                                             (SCHOOL, "20260302", "李小红")], "drowning")  # fmt: skip
    assert set(lines) == {(SCHOOL, "20260301")}

    start = await choose(world, parent, "防溺水")
    assert "先复习上次没答对的2道题" in start and "复习 1/2" in start and missed[0].text in start
    assert "正在答题" not in (reminder := await world.say(parent, "嗯？")) and "复习题" in reminder
    second = await world.say(parent, right(missed[0]))
    assert second.startswith("✅") and "复习 2/2" in second and missed[1].text in second
    done = await world.say(parent, wrong(missed[1]))
    assert "复习完成（答对1/2）" in done and f"1/{len(lesson.segments)}" in done  # then the lesson begins
    assert await world.lessons.missed(SCHOOL, "20260301", "drowning") == [missed[1].id]
    other = await review_line(world.lessons, world.library, SCHOOL, "20260302", "drowning")
    assert other is None


# -- a notice with a lesson attached ------------------------------------------------------------------
async def test_学习_after_a_notice_with_a_lesson_starts_it_and_records_completion_against_it(
    world: World, config: Config
) -> None:
    parent = await parent_of(world, "20260301")
    notices = NoticeService(world.redis, config, world.roster)
    draft = Draft(title="周末防溺水提醒", body="请家长周末看护好孩子。", audience=(Scope(DISTRICT, SCHOOL, 3, CLASS),),
                  sender="平安路小学", lesson="drowning-g7-12", campaign="summer-drowning")  # fmt: skip
    notice, _plan, _ = await notices.submit(draft, Subject("school_admin", school=SCHOOL, district=DISTRICT))
    api = WeChatAPI(config.wechat, world.redis)
    try:
        await build_worker(config, world.redis, api, name="t").run(burst=True)
    finally:
        await api.close()

    first = await world.say(parent, "学习")
    assert "老师通知里附带的安全小课" in first
    lesson = await world.lesson_of(parent, "20260301")
    assert lesson.id == "drowning-g1-3"  # the attached topic, in the child's own grade band
    await read(world, parent, lesson)
    await answer(world, parent, lesson, wrong_at={0})

    [(student, completion)] = (await world.lessons.notice_completions(notice.id)).items()
    total = len(lesson.questions)
    assert student == f"{SCHOOL}/20260301" and completion.lesson == lesson.id
    assert completion.best == round(100 * (total - 1) / total)
    assert list(await world.lessons.campaign_completions("summer-drowning")) == [f"{SCHOOL}/20260301"]
    # done: the next 学习 offers a lesson instead of the notice's again
    assert "回复序号选择主题" in await world.say(parent, "学习")


async def test_a_notices_lesson_is_still_offered_after_many_notices_elsewhere_in_the_city(
    world: World, config: Config
) -> None:
    parent = await parent_of(world, "20260301")
    notices = NoticeService(world.redis, config, world.roster)
    draft = Draft(title="周末防溺水提醒", body="请家长周末看护好孩子。", audience=(Scope(DISTRICT, SCHOOL, 3, CLASS),),
                  sender="平安路小学", lesson="drowning", campaign="drowning")  # fmt: skip
    await notices.submit(draft, Subject("school_admin", school=SCHOOL, district=DISTRICT))
    api = WeChatAPI(config.wechat, world.redis)
    try:
        await build_worker(config, world.redis, api, name="t").run(burst=True)
    finally:
        await api.close()
    # Afterwards the rest of the city sends many notices (more than the lesson looks at in one list).
    await world.roster.put_school(School("s9", "远方小学", "d9", "demo"))
    await world.roster.ensure_class("s9", "1-1")
    for i in range(60):
        other = Draft(
            title=f"班级通知{i}", body="明天请带水杯。", audience=(Scope("d9", "s9", 1, "1-1"),), sender="远方小学"
        )
        await notices.create(other, key=f"elsewhere-{i}")
    first = await world.say(parent, "学习")
    assert "老师通知里附带的安全小课" in first
    assert (await world.lesson_of(parent, "20260301")).id == "drowning-g1-3"


# -- who sees what -------------------------------------------------------------------------------------
async def test_a_teacher_sees_their_class_rates_and_a_parent_only_their_own_child(world: World) -> None:
    parent = await parent_of(world, "20260301")
    await choose(world, parent, "防溺水")
    lesson = await world.lesson_of(parent, "20260301")
    await read(world, parent, lesson)
    await answer(world, parent, lesson)

    [teacher] = await world.em.create_followers(1)
    code = await world.roster.create_teacher_invite(SCHOOL, [CLASS], "c", 3600)
    await world.roster.redeem_teacher_invite(code, teacher)
    seen = await world.say(teacher, "学习情况")
    assert "三年级（2）班：参学率 50%（1/2） · 参考率 50%（1/2） · 合格率 50%（1/2）" in seen
    assert "还没参学：李小红" in seen and "王大明" not in seen and "仅您可见" in seen

    mine = await world.say(parent, "学习情况")
    assert "王小明：学过1课，完成测验1课，合格1课" in mine and "李小红" not in mine and "参学率" not in mine
    assert "绑定" in await world.say((await world.em.create_followers(1))[0], "学习情况")


async def test_a_follower_without_a_child_is_asked_to_bind_first(world: World) -> None:
    [stranger] = await world.em.create_followers(1)
    assert "班级码" in await world.say(stranger, "学习")
    assert "班级码" in await world.click(stranger, "LESSONS")


# -- every reply of every shipped lesson fits one passive reply ------------------------------------------
async def test_every_step_of_every_lesson_fits_one_passive_reply(redis: Redis) -> None:
    from bot.chat.state import ChatState
    from bot.chat.texts import Texts

    lib = library()
    chat = LessonChat("o", ChatState(), Texts(), LessonStore(redis), lib, RosterStore(redis), None)
    worst = 0
    for lesson in lib:
        ids = [q.id for q in lesson.questions[:3]]
        begin = chat.render("intro", lesson=lesson, child="欧阳小明明", linked=True, review=3)
        steps = [begin + "\n\n" + chat.item(Progress(lesson.id, phase="review", review=ids), lesson)]
        for i, q in enumerate(lesson.questions):
            for verdict in (True, False):
                nxt = Progress(lesson.id, phase="quiz", index=i + 1)
                tail = chat.item(nxt, lesson) if i + 1 < len(lesson.questions) else chat.render(
                    "result", lesson=lesson, child="欧阳小明明", right=9, total=10, score=90, passed=True, mark=80,
                    best=90, attempt=2)  # fmt: skip
                steps.append(chat.feedback(q, verdict) + "\n\n" + tail)
            steps.append(chat.reminder(q, Progress(lesson.id, phase="quiz", index=i)))
        for n in range(len(lesson.segments)):
            done = chat.render("review_done", right=2, total=3, lesson=lesson)
            segment = chat.item(Progress(lesson.id, phase="seg", index=n), lesson)
            steps.append(chat.feedback(lesson.questions[0], False) + "\n\n" + done + "\n\n" + segment)
        worst = max(worst, *(len(s.encode()) for s in steps))
    assert worst <= PASSIVE_LIMIT
