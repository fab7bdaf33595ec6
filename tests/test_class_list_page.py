"""The class list page: a class's teachers see, privately, which families have not confirmed and why.

Real Redis, the real app and the WeChat emulator: cards go out through a worker (so the reasons come
from real delivery outcomes), a parent opens the notice page, another confirms, and each teacher's
browser signs in through the emulator's OAuth exactly as on the parent's notice page:
``/_emulator/browse`` → bot page → emulator ``/connect/oauth2/authorize`` → bot ``/oauth/callback``.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import aiohttp
import pytest

from bot.app import CONTEXT_KEY, create_app
from bot.config import Config
from bot.delivery.cards import CardSender
from bot.notices.model import Draft, Notice, Question
from bot.notices.pages import class_key, class_path
from bot.notices.service import NoticeService
from bot.roster.authz import Scope
from bot.roster.model import School, Student
from bot.roster.store import RosterStore
from bot.serve import build_worker
from bot.store import keys
from bot.store.redis import Redis
from bot.web import security as sec
from bot.wechat.client import WeChatAPI

DISTRICT = "d1"
SCHOOL, CLASS, OTHER_CLASS = "t-s1", "3-2", "3-3"
SCHOOL2, CLASS2 = "t-s2", "7-1"  # another school of the district
ESCAPED = "<b>周</b>杰"
STUDENTS = {
    "20260301": "王小明",  # mum confirms
    "20260302": "李小红",  # aunt opens the page, does not confirm
    "20260303": ESCAPED,  # gran gets the card, never opens it
    "20260304": "刘洋",  # the guardian has unfollowed the account
    "20260305": "陈晨",  # the card was refused (not a follower of this account)
    "20260306": "赵磊",  # nobody has bound
}
MUM, DAD, AUNT, GRAN = "oMum_0001", "oDad_0002", "oAunt_0003", "oGran_0004"
GONE, LOST, OTHER_PARENT, STRANGER = "oGone_0005", "oLost_0006", "oOther_0007", "oStranger_0008"
CLASS_TEACHER, SUBJECT_TEACHER, OTHER_TEACHER, TEACHER2 = "oTeachC_01", "oTeachS_02", "oTeachO_03", "oTeach7_04"
EVERYONE = [MUM, DAD, AUNT, GRAN, GONE, LOST, OTHER_PARENT, STRANGER, CLASS_TEACHER, SUBJECT_TEACHER, OTHER_TEACHER]
PRIVATE = "请私下联系家长，不要在班级群公布名单"
REFUSED = "这份名单只给本班老师看"
LIST_NOTE = "名单仅班主任可见"


@dataclass
class Page:
    status: int
    text: str
    hops: list[str]
    url: str
    browser: aiohttp.ClientSession
    headers: dict[str, str]

    def group(self, label: str) -> str:
        """The part of the list under one reason's heading."""
        start = self.text.index(f"<h2>{label}（")
        rest = self.text[start + 1 :]
        ends = [i for i in (rest.find("<h2>"), rest.find("</section>")) if i >= 0]
        return rest[: min(ends)]

    def count(self, label: str) -> int:
        m = re.search(rf'<th scope="row">{label}</th>\s*<td><b>(\d+)</b>', self.text)
        assert m, f"no {label} row"
        return int(m.group(1))


@dataclass
class World:
    base: str
    emulator: Any
    config: Config
    redis: Redis
    store: RosterStore
    notices: NoticeService
    api: WeChatAPI
    browsers: list[aiohttp.ClientSession]

    def browser(self) -> aiohttp.ClientSession:
        session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.browsers.append(session)
        return session

    async def notice(
        self, mode: str = "confirm", audience: tuple[Scope, ...] | None = None, *, act: bool = True, **fields: Any
    ) -> Notice:
        """A notice planned and sent through a worker against the emulator; then (``act``) aunt opens
        it on the page and mum confirms."""
        draft = Draft(
            title=fields.pop("title", "周五放学安全提醒"),
            body="本周五下午放学后请家长准时接孩子。",
            audience=audience or (Scope(DISTRICT, SCHOOL, None, CLASS),),
            sender="三年级（2）班",
            mode=mode,  # type: ignore[arg-type]
            deadline=time.time() + 86400,
            **fields,
        )
        notice, _ = await self.notices.create(draft)
        assert await self.notices.plan(notice) is not None
        await build_worker(self.config, self.redis, self.api, name="t").run(burst=True)
        if not act:
            return notice
        assert (await self.open(AUNT, f"/n/{notice.id}")).status == 200
        if mode != "none":
            q = draft.question
            answer = q.answer if q is not None else None
            assert (await self.notices.confirm(notice.id, MUM, await self.store.who(MUM), answer=answer)).ok
        return notice

    async def open(self, openid: str, path: str, browser: aiohttp.ClientSession | None = None) -> Page:
        """Tap a link as ``openid``: through WeChat OAuth (emulator) and back to the page."""
        browser = browser or self.browser()
        url = f"{self.emulator.url}/_emulator/browse?openid={openid}&next={quote(self.base + path, safe='')}"
        async with browser.get(url) as resp:
            hops = [str(h.url) for h in resp.history]
            return Page(resp.status, await resp.text(), hops, str(resp.url), browser, dict(resp.headers))

    async def teacher(self, openid: str, school: str, class_id: str, role: str) -> None:
        code = await self.store.create_teacher_invite(school, [class_id], role, 3600)
        assert await self.store.redeem_teacher_invite(code, openid)


@pytest.fixture
async def world(config: Config, redis: Redis, emulator: Any, aiohttp_server: Any) -> AsyncIterator[World]:
    config.delivery.quiet_start = config.delivery.quiet_end = "00:00"  # no quiet hours, whatever the time
    store = RosterStore(redis)
    await store.put_school(School(SCHOOL, "平安路小学", DISTRICT, "demo"))
    await store.put_school(School(SCHOOL2, "平安路中学", DISTRICT, "demo"))
    for school, cid in ((SCHOOL, CLASS), (SCHOOL, OTHER_CLASS), (SCHOOL2, CLASS2)):
        await store.ensure_class(school, cid)
    await redis.hset(keys.class_students(SCHOOL, CLASS), mapping={sid: f"{n}|a" for sid, n in STUDENTS.items()})
    await redis.hset(keys.class_students(SCHOOL, OTHER_CLASS), mapping={"20260399": "赵小刚|a"})
    await redis.hset(keys.class_students(SCHOOL2, CLASS2), mapping={"20260701": "孙悟|a", "20260702": "钱多多|a"})
    guardians = [(MUM, "20260301"), (DAD, "20260301"), (AUNT, "20260302"), (GRAN, "20260303"),
                 (GONE, "20260304"), (LOST, "20260305")]  # fmt: skip
    for openid, sid in guardians:
        await store.bind_guardian(openid, Student(SCHOOL, sid, STUDENTS[sid], CLASS), "m")
    await store.bind_guardian(OTHER_PARENT, Student(SCHOOL, "20260399", "赵小刚", OTHER_CLASS), "m")
    await store.bind_guardian(OTHER_PARENT, Student(SCHOOL2, "20260701", "孙悟", CLASS2), "f")
    await emulator.client.create_followers(openids=[MUM, DAD, AUNT, GRAN, CLASS_TEACHER, OTHER_PARENT])
    await emulator.client.configure(unfollowed=[GONE], push_events=False)
    app = create_app(config, redis)
    server = await aiohttp_server(app)
    config.server.public_url = str(server.make_url("")).rstrip("/")
    ctx = app[CONTEXT_KEY]
    w = World(config.server.public_url, emulator, config, redis, store, ctx.services["notices"], ctx.api, [])
    await w.teacher(CLASS_TEACHER, SCHOOL, CLASS, "c")
    await w.teacher(SUBJECT_TEACHER, SCHOOL, CLASS, "s")
    await w.teacher(OTHER_TEACHER, SCHOOL, OTHER_CLASS, "c")
    await w.teacher(TEACHER2, SCHOOL2, CLASS2, "c")
    yield w
    for browser in w.browsers:
        await browser.close()


async def test_the_class_teacher_signs_in_and_sees_who_has_not_confirmed_and_why(world: World) -> None:
    notice = await world.notice()
    path = f"/n/{notice.id}/class/{SCHOOL}/{CLASS}"
    page = await world.open(CLASS_TEACHER, path)
    assert page.status == 200
    assert [urlsplit(h).path for h in page.hops] == ["/_emulator/browse", path, "/connect/oauth2/authorize",
                                                      "/oauth/callback"]  # fmt: skip
    assert "周五放学安全提醒" in page.text and "平安路小学 三年级（2）班" in page.text and "确认截止" in page.text
    assert "李小红" in page.group("已查看未确认")
    assert "&lt;b&gt;周&lt;/b&gt;杰" in page.group("未查看")
    assert "刘洋" in page.group("已取消关注")
    assert "陈晨" in page.group("未送达")
    assert "赵磊" in page.group("未绑定")
    assert "王小明" not in page.text  # confirmed
    assert "还有 5 名学生的家长未确认" in page.text and PRIVATE in page.text
    steps = {label: page.count(label) for label in ("应通知", "已送达", "已查看", "已确认")}
    assert steps == {"应通知": 6, "已送达": 3, "已查看": 2, "已确认": 1}
    assert "答对问题" not in page.text and "<progress" in page.text
    assert "赵小刚" not in page.text  # another class
    for private in [*EVERYONE, *STUDENTS, "****"]:  # no openid, no student number, no (masked) phone
        assert private not in page.text
    assert "<script" not in page.text and "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["Cache-Control"] == "no-store"
    again = await world.open(CLASS_TEACHER, path, page.browser)  # signed in: no second trip to WeChat
    assert again.status == 200 and [urlsplit(h).path for h in again.hops] == ["/_emulator/browse"]


async def test_a_subject_teacher_of_the_class_sees_counts_by_reason_and_no_name(world: World) -> None:
    """The privacy rule: the names go to the class teacher only; a subject teacher of the class sees the
    class's progress and how many families have not confirmed, and why, with a note in the list's place."""
    notice = await world.notice()
    page = await world.open(SUBJECT_TEACHER, f"/n/{notice.id}/class/{SCHOOL}/{CLASS}")
    assert page.status == 200 and "平安路小学 三年级（2）班" in page.text
    assert "还有 5 名学生的家长未确认" in page.text and LIST_NOTE in page.text
    steps = {label: page.count(label) for label in ("应通知", "已送达", "已查看", "已确认")}
    assert steps == {"应通知": 6, "已送达": 3, "已查看": 2, "已确认": 1}
    by_reason = {label: page.count(label) for label in ("已查看未确认", "未查看", "已取消关注", "未送达", "未绑定")}
    assert by_reason == {"已查看未确认": 1, "未查看": 1, "已取消关注": 1, "未送达": 1, "未绑定": 1}
    for secret in [*STUDENTS.values(), *STUDENTS, "&lt;b&gt;周", *EVERYONE, PRIVATE]:
        assert secret not in page.text, secret
    mine = await world.open(CLASS_TEACHER, f"/n/{notice.id}/class/{SCHOOL}/{CLASS}")
    assert "李小红" in mine.group("已查看未确认") and LIST_NOTE not in mine.text  # the class teacher: names


async def test_anyone_else_is_refused_kindly_and_sees_no_name(world: World) -> None:
    notice = await world.notice()
    path = f"/n/{notice.id}/class/{SCHOOL}/{CLASS}"
    # another class's teacher, parents of this class (one confirmed, one not), another class's parent, a stranger
    for openid in (OTHER_TEACHER, MUM, AUNT, OTHER_PARENT, STRANGER):
        page = await world.open(openid, path)
        assert page.status == 403 and REFUSED in page.text, openid
        for secret in [*STUDENTS.values(), "&lt;b&gt;周", "周五放学", "三年级（2）班", PRIVATE]:
            assert secret not in page.text, (openid, secret)


async def test_names_and_the_title_are_escaped(world: World) -> None:
    notice = await world.notice(title="<i>注意</i>&<x>")
    page = await world.open(CLASS_TEACHER, f"/n/{notice.id}/class/{SCHOOL}/{CLASS}")
    assert page.status == 200
    assert "<b>周</b>" not in page.text and "&lt;b&gt;周&lt;/b&gt;杰" in page.text
    assert "<i>注意" not in page.text and "&lt;i&gt;注意&lt;/i&gt;&amp;&lt;x&gt;" in page.text


async def test_a_district_wide_notice_shows_each_teacher_only_their_class(world: World) -> None:
    notice = await world.notice(audience=(Scope(DISTRICT),))
    page = await world.open(TEACHER2, f"/n/{notice.id}/class/{SCHOOL2}/{CLASS2}")
    assert page.status == 200 and "平安路中学 初一（1）班" in page.text
    assert "孙悟" in page.group("未查看") and "钱多多" in page.group("未绑定")
    assert page.count("应通知") == 2 and page.count("已送达") == 1
    assert not any(name in page.text for name in [*STUDENTS.values(), "赵小刚"])
    mine = await world.open(CLASS_TEACHER, f"/n/{notice.id}/class/{SCHOOL}/{CLASS}")
    assert mine.status == 200 and "陈晨" in mine.group("未送达") and "孙悟" not in mine.text
    theirs = await world.open(CLASS_TEACHER, f"/n/{notice.id}/class/{SCHOOL2}/{CLASS2}", mine.browser)
    assert theirs.status == 403 and "孙悟" not in theirs.text


async def test_the_link_in_the_class_teachers_card_opens_the_list(world: World) -> None:
    notice = await world.notice()
    cards = CardSender(world.config, world.redis, world.api, world.notices)
    assert await cards.teacher_lists({"n": notice.id, "classes": f"{SCHOOL}/{CLASS}"}) == 1
    [card] = (await world.emulator.client.inbox(CLASS_TEACHER))["template"]
    assert card["data"]["character_string2"] == "5人未确认"
    page = await world.open(CLASS_TEACHER, card["url"].removeprefix(world.base))
    assert page.status == 200 and "陈晨" in page.group("未送达")


async def test_a_class_whose_path_is_too_long_for_the_oauth_state_still_signs_in(world: World) -> None:
    long_class = "3-实验班"  # percent-encoded, the path no longer fits WeChat's 128-byte state
    await world.store.ensure_class(SCHOOL, long_class)
    await world.redis.hset(keys.class_students(SCHOOL, long_class), mapping={"20260310": "吴实验|a"})
    await world.teacher(CLASS_TEACHER, SCHOOL, long_class, "c")
    notice = await world.notice(audience=(Scope(DISTRICT, SCHOOL, None, long_class),), act=False)
    path = class_path(notice.id, SCHOOL, long_class)
    with pytest.raises(ValueError):
        sec.make_state(path, sec.new_nonce(), world.config.server.signing_key(world.config.wechat))
    page = await world.open(CLASS_TEACHER, path)
    assert page.status == 200 and "三年级实验班" in page.text and "吴实验" in page.group("未绑定")
    short = f"/n/{notice.id}/c/{class_key(SCHOOL, long_class)}"
    assert short in [urlsplit(h).path for h in page.hops] and unquote(urlsplit(page.url).path) == unquote(path)
    other = await world.open(SUBJECT_TEACHER, short)  # the short way leads nobody to a class they do not teach
    assert other.status == 403 and "吴实验" not in other.text


async def test_understand_mode_counts_right_answers_and_a_notice_without_confirmation_has_no_list(
    world: World,
) -> None:
    question = Question("发现同伴落水，应该怎么做？", ("立刻下水救人", "大声呼救并找大人帮忙"), 1)
    notice = await world.notice("understand", question=question)
    page = await world.open(CLASS_TEACHER, f"/n/{notice.id}/class/{SCHOOL}/{CLASS}")
    assert page.count("已确认") == 1 and page.count("答对问题") == 1
    quiet = await world.notice("none")
    page = await world.open(CLASS_TEACHER, f"/n/{quiet.id}/class/{SCHOOL}/{CLASS}", page.browser)
    assert page.status == 200 and "无需家长确认" in page.text and "已确认" not in page.text
    assert "李小红" not in page.text and PRIVATE not in page.text


async def test_malformed_ids_get_a_404_before_sign_in_and_unknown_ones_after(world: World) -> None:
    notice = await world.notice()
    browser = world.browser()  # no session
    malformed = [
        f"/n/NOT-AN-ID/class/{SCHOOL}/{CLASS}",
        f"/n/{'a' * 40}/class/{SCHOOL}/{CLASS}",
        f"/n/{notice.id}/class/{'s' * 33}/{CLASS}",
        f"/n/{notice.id}/class/bad%20school/{CLASS}",
        f"/n/{notice.id}/class/{SCHOOL}/13-1",
        f"/n/{notice.id}/class/{SCHOOL}/3-2%7Cx",
        f"/n/{notice.id}/class/{SCHOOL}/3-%3Cscript%3E%20",
        f"/n/{notice.id}/c/short",
    ]
    for path in malformed:
        async with browser.get(world.base + path, allow_redirects=False) as resp:
            assert resp.status == 404 and "没有找到" in await resp.text(), path
            assert "Location" not in resp.headers
    async with browser.get(world.base + f"/n/{notice.id}/class/{SCHOOL}/{CLASS}", allow_redirects=False) as resp:
        assert resp.status == 302 and "/connect/oauth2/authorize" in resp.headers["Location"]
    page = await world.open(CLASS_TEACHER, f"/n/zzzzzzzzzzzzzz/class/{SCHOOL}/{CLASS}")
    assert page.status == 404 and "没有找到这条通知" in page.text
    other = await world.open(OTHER_TEACHER, f"/n/{notice.id}/class/{SCHOOL}/{OTHER_CLASS}")  # not addressed
    assert other.status == 404 and "没有找到这个班的名单" in other.text and "赵小刚" not in other.text
    unknown = await world.open(CLASS_TEACHER, f"/n/{notice.id}/class/{SCHOOL}/3-9")  # nobody teaches it
    assert unknown.status == 403 and REFUSED in unknown.text
