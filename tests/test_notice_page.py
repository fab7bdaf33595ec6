"""The notice page: OAuth through the emulator, reading, confirming and answering, and who is kept out.

A parent's browser is an aiohttp session with its own cookie jar that follows the redirects the
way WeChat's browser does: the emulator's ``/_emulator/browse`` names the follower, then
bot ``/n/{id}`` → emulator ``/connect/oauth2/authorize`` → bot ``/oauth/callback`` → the page.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import aiohttp
import pytest

from bot.app import CONTEXT_KEY, create_app
from bot.config import Config
from bot.notices.model import Draft, Notice, Question
from bot.notices.service import NoticeService
from bot.roster.authz import Scope
from bot.roster.model import School, Student
from bot.roster.store import RosterStore
from bot.store import keys
from bot.store.redis import Redis
from bot.web import security as sec
from bot.wechat.emulator.app import STATE

SCHOOL = "t-s1"
CLASS = "3-2"
OTHER_CLASS = "3-3"
STUDENTS = {"20260301": "王小明", "20260302": "李小红"}
MUM, DAD, AUNT, STRANGER, OTHER_PARENT = "oMum_0001", "oDad_0002", "oAunt_0003", "oStranger_0004", "oOther_0005"
BODY = "本周五下午放学后请家长准时接孩子。\n\n不要让孩子独自去河边、水塘玩耍。"


@dataclass
class World:
    base: str  # the bot
    emulator: Any
    notices: NoticeService
    store: RosterStore
    redis: Redis
    config: Config
    browsers: list[aiohttp.ClientSession]

    @property
    def key(self) -> bytes:
        return self.config.server.signing_key(self.config.wechat)

    def browser(self) -> aiohttp.ClientSession:
        # unsafe: accept cookies from an IP host (127.0.0.1), as a browser does
        session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.browsers.append(session)
        return session

    async def notice(self, mode: str = "confirm", **fields: Any) -> Notice:
        draft = Draft(
            title=fields.pop("title", "周五放学安全提醒"),
            body=fields.pop("body", BODY),
            audience=(Scope("d1", SCHOOL, None, CLASS),),
            sender="三年级（2）班",
            mode=mode,  # type: ignore[arg-type]
            question=fields.pop("question", None),
            deadline=time.time() + 86400,
            **fields,
        )
        notice, _ = await self.notices.create(draft)
        assert await self.notices.plan(notice) is not None
        return notice

    async def open(self, openid: str, path: str, browser: aiohttp.ClientSession | None = None) -> Page:
        """Tap the card as ``openid``: through WeChat OAuth (emulator) and back to the page."""
        browser = browser or self.browser()
        url = f"{self.emulator.url}/_emulator/browse?openid={openid}&next={quote(self.base + path, safe='')}"
        async with browser.get(url) as resp:
            return Page(resp.status, await resp.text(), [str(h.url) for h in resp.history], browser, dict(resp.headers))

    async def record(self, notice: Notice, openid: str) -> str:
        rec = await self.notices.record(notice.id, openid)
        return rec.status if rec else ""

    async def confirmations(self, notice: Notice) -> dict[str, str]:
        return dict(await self.redis.hgetall(keys.notice_confirmations(notice.id)))  # type: ignore[misc]


@dataclass
class Page:
    status: int
    text: str
    hops: list[str]
    browser: aiohttp.ClientSession
    headers: dict[str, str]

    @property
    def csrf(self) -> str:
        m = re.search(r'name="csrf" value="([^"]+)"', self.text)
        assert m, "no form on the page"
        return m.group(1)


@pytest.fixture
async def world(config: Config, redis: Redis, emulator: Any, aiohttp_server: Any) -> AsyncIterator[World]:
    store = RosterStore(redis)
    await store.put_school(School(SCHOOL, "平安路小学", "d1", "demo"))
    await store.ensure_class(SCHOOL, CLASS)
    await store.ensure_class(SCHOOL, OTHER_CLASS)
    await redis.hset(keys.class_students(SCHOOL, CLASS), mapping={sid: f"{n}|a" for sid, n in STUDENTS.items()})
    await redis.hset(keys.class_students(SCHOOL, OTHER_CLASS), mapping={"20260399": "赵小刚|a"})
    wang = Student(SCHOOL, "20260301", "王小明", CLASS)
    await store.bind_guardian(MUM, wang, "m")
    await store.bind_guardian(DAD, wang, "f")
    await store.bind_guardian(AUNT, Student(SCHOOL, "20260302", "李小红", CLASS), "o")
    await store.bind_guardian(OTHER_PARENT, Student(SCHOOL, "20260399", "赵小刚", OTHER_CLASS), "m")
    app = create_app(config, redis)
    server = await aiohttp_server(app)
    config.server.public_url = str(server.make_url("")).rstrip("/")
    w = World(config.server.public_url, emulator, app[CONTEXT_KEY].services["notices"], store, redis, config, [])
    yield w
    for browser in w.browsers:
        await browser.close()


async def post_confirm(page: Page, base: str, notice: Notice, **form: str) -> tuple[int, str, str]:
    """Submit the page's form; returns (final status, final text, the first answer's Location)."""
    url = f"{base}/n/{notice.id}/confirm"
    async with page.browser.post(url, data=form, allow_redirects=False) as resp:
        location = resp.headers.get("Location", "")
        if resp.status != 303:
            return resp.status, await resp.text(), location
    async with page.browser.get(base + location) as resp:
        return resp.status, await resp.text(), location


async def test_a_parent_taps_the_card_goes_through_wechat_oauth_and_reads_the_whole_notice(world: World) -> None:
    notice = await world.notice()
    page = await world.open(MUM, f"/n/{notice.id}")
    assert page.status == 200
    paths = [urlsplit(h).path for h in page.hops]
    assert paths == ["/_emulator/browse", f"/n/{notice.id}", "/connect/oauth2/authorize", "/oauth/callback"]
    assert "周五放学安全提醒" in page.text and "不要让孩子独自去河边、水塘玩耍。" in page.text
    assert "三年级（2）班" in page.text and "王小明" in page.text and "我已阅读并确认" in page.text
    assert "李小红" not in page.text  # another family's child
    assert "Content-Security-Policy" in page.headers and page.headers["Cache-Control"] == "no-store"


async def test_opening_the_page_marks_the_guardians_record_opened(world: World) -> None:
    notice = await world.notice()
    assert await world.record(notice, MUM) == "q"
    await world.open(MUM, f"/n/{notice.id}")
    assert await world.record(notice, MUM) == "o"
    assert await world.record(notice, DAD) == "q"


async def test_the_session_cookie_is_httponly_samesite_lax_and_later_visits_skip_oauth(world: World) -> None:
    notice = await world.notice()
    browser = world.browser()
    url = f"{world.emulator.url}/_emulator/browse?openid={MUM}&next={quote(world.base + f'/n/{notice.id}', safe='')}"
    cookies: list[str] = []
    async with browser.get(url) as resp:
        for hop in resp.history:
            cookies += [v for k, v in hop.headers.items() if k.lower() == "set-cookie" and "sb_" in v]
    session = next(c for c in cookies if c.startswith(sec.SESSION_COOKIE + "="))
    assert "HttpOnly" in session and "SameSite=Lax" in session and "Path=/" in session
    assert f"Max-Age={sec.SESSION_MAX_AGE}" in session and "Secure" not in session  # http in tests
    oauth = next(c for c in cookies if c.startswith(sec.OAUTH_COOKIE + "="))
    assert "HttpOnly" in oauth and "SameSite=Lax" in oauth
    async with browser.get(f"{world.base}/n/{notice.id}", allow_redirects=False) as resp:
        assert resp.status == 200  # recognised: no second trip to WeChat


async def test_confirming_records_the_guardian_and_the_student(world: World) -> None:
    notice = await world.notice()
    page = await world.open(MUM, f"/n/{notice.id}")
    status, text, location = await post_confirm(page, world.base, notice, csrf=page.csrf)
    assert status == 200 and location == f"/n/{notice.id}?r=ok"
    assert "您已确认 ✓" in text and "确认时间" in text and "我已阅读并确认" not in text
    assert await world.record(notice, MUM) == "c"
    assert list(await world.confirmations(notice)) == [f"{SCHOOL}/20260301"]


async def test_two_guardians_of_one_child_count_once_and_the_second_sees_it_confirmed(world: World) -> None:
    notice = await world.notice()
    mum = await world.open(MUM, f"/n/{notice.id}")
    dad = await world.open(DAD, f"/n/{notice.id}")  # both pages open before either confirms
    assert (await post_confirm(mum, world.base, notice, csrf=mum.csrf))[0] == 200
    again = await world.open(DAD, f"/n/{notice.id}", dad.browser)
    assert "您的家人已确认 ✓" in again.text and "我已阅读并确认" not in again.text
    status, text, _ = await post_confirm(dad, world.base, notice, csrf=dad.csrf)  # the form still open
    assert status == 200 and "已确认 ✓" in text
    assert len(await world.confirmations(notice)) == 1
    funnel = await world.notices.funnel(notice)
    assert funnel.confirmed == 1 and funnel.targeted == 2


async def test_a_stranger_is_refused_and_sees_nothing_of_the_notice(world: World) -> None:
    notice = await world.notice()
    for openid in (STRANGER, OTHER_PARENT):  # nobody's guardian; a parent of another class
        page = await world.open(openid, f"/n/{notice.id}")
        assert page.status == 403 and "这条通知不是发给您的" in page.text
        assert "周五放学" not in page.text and "河边" not in page.text and "王小明" not in page.text
        cookie = next(c for c in page.browser.cookie_jar if c.key == sec.SESSION_COOKIE).value
        session = sec.read_session(cookie, world.key)
        assert session is not None
        token = sec.csrf_token(session, f"confirm:{notice.id}", world.key)  # even with a valid token
        status, text, _ = await post_confirm(page, world.base, notice, csrf=token)
        assert status == 403 and "这条通知不是发给您的" in text
    assert await world.confirmations(notice) == {}
    assert await world.record(notice, OTHER_PARENT) == ""


async def test_a_wrong_or_missing_csrf_token_is_refused_and_nothing_is_recorded(world: World) -> None:
    notice = await world.notice()
    other = await world.notice(title="另一条通知")
    mum = await world.open(MUM, f"/n/{notice.id}")
    dad = await world.open(DAD, f"/n/{notice.id}")
    mum_other = await world.open(MUM, f"/n/{other.id}", mum.browser)
    for token in ("", "x" * 43, dad.csrf, mum_other.csrf):  # made up, another parent's, another notice's
        status, text, _ = await post_confirm(mum, world.base, notice, csrf=token)
        assert status == 403 and "页面已过期" in text
    assert await world.record(notice, MUM) == "o"
    assert await world.confirmations(notice) == {}


async def test_a_post_from_another_site_or_too_big_or_without_login_records_nothing(world: World) -> None:
    notice = await world.notice()
    mum = await world.open(MUM, f"/n/{notice.id}")
    url = f"{world.base}/n/{notice.id}/confirm"
    async with mum.browser.post(url, data={"csrf": mum.csrf}, headers={"Origin": "https://evil.example"}) as resp:
        assert resp.status == 403
    async with mum.browser.post(url, data={"csrf": mum.csrf, "pad": "x" * 5000}) as resp:
        assert resp.status == 413
    async with world.browser().post(url, data={"csrf": mum.csrf}, allow_redirects=False) as resp:
        assert resp.status == 303 and resp.headers["Location"] == f"/n/{notice.id}"
    assert await world.confirmations(notice) == {}


async def oauth_round_trip(world: World, openid: str, notice: Notice) -> tuple[aiohttp.ClientSession, str, str]:
    """Start at the page and stop before the callback: (browser, code, state) as WeChat hands them back."""
    browser = world.browser()
    async with browser.get(f"{world.base}/n/{notice.id}", allow_redirects=False) as resp:
        assert resp.status == 302
        authorize = resp.headers["Location"]
    assert authorize.startswith(world.emulator.url + "/connect/oauth2/authorize?")
    url, _, _fragment = authorize.partition("#")  # "#wechat_redirect" stays in the browser
    async with browser.get(url + f"&emulator_openid={openid}", allow_redirects=False) as resp:
        back = urlsplit(resp.headers["Location"])
    assert back.path == "/oauth/callback"
    query = parse_qs(back.query)
    state = query["state"][0]
    assert len(state.encode()) <= 128
    return browser, query["code"][0], state


async def callback(browser: aiohttp.ClientSession, world: World, code: str, state: str) -> tuple[int, str, str]:
    url = f"{world.base}/oauth/callback?code={quote(code)}&state={quote(state)}"
    async with browser.get(url, allow_redirects=False) as resp:
        return resp.status, await resp.text(), resp.headers.get("Location", "")


async def test_a_tampered_expired_or_foreign_state_gets_a_kind_400(world: World) -> None:
    notice = await world.notice()
    browser, code, state = await oauth_round_trip(world, MUM, notice)
    nonce = next(c for c in browser.cookie_jar if c.key == sec.OAUTH_COOKIE).value
    tampered = ("A" if state[0] != "A" else "B") + state[1:]
    expired = sec.make_state(f"/n/{notice.id}", nonce, world.key, now=time.time() - 601)
    foreign = sec.make_state(f"/n/{notice.id}", "someoneElse12", world.key)  # another browser's round trip
    for bad in (tampered, expired, foreign, ""):
        status, text, _ = await callback(browser, world, code, bad)
        assert status == 400 and "链接已失效" in text and "回到微信" in text
    status, _, location = await callback(browser, world, code, state)  # the code was never spent
    assert status == 303 and location == f"/n/{notice.id}"


async def test_a_reused_oauth_code_gets_the_expired_link_page(world: World) -> None:
    notice = await world.notice()
    browser, code, state = await oauth_round_trip(world, MUM, notice)
    assert (await callback(browser, world, code, state))[0] == 303
    status, text, location = await callback(browser, world, code, state)
    assert status == 400 and "链接已失效" in text and not location
    assert world.emulator.app[STATE].stats.errors["40163"] == 1  # WeChat said "code been used"


async def test_a_state_pointing_to_another_site_is_refused(world: World) -> None:
    notice = await world.notice()
    browser, code, _ = await oauth_round_trip(world, MUM, notice)
    nonce = next(c for c in browser.cookie_jar if c.key == sec.OAUTH_COOKIE).value
    for target in ("//evil.example/n/x", "https://evil.example/", "/\\evil.example", "evil.example"):
        forged = sec.sign(f"{nonce}|{target}", sec.derive(world.key, "oauth-state"), ttl=600)
        status, _, location = await callback(browser, world, code, forged)
        assert status == 400 and location == ""


async def test_understand_mode_shows_the_right_answer_after_a_wrong_one_and_asks_again(world: World) -> None:
    question = Question("发现同伴落水，应该怎么做？", ("立刻下水救人", "大声呼救并找大人帮忙", "自己跑开"), 1)
    notice = await world.notice("understand", question=question)
    page = await world.open(MUM, f"/n/{notice.id}")
    assert "发现同伴落水" in page.text and page.text.count('type="radio"') == 3
    status, text, location = await post_confirm(page, world.base, notice, csrf=page.csrf, answer="0")
    assert status == 200 and location.endswith("?r=wrong")
    assert "正确答案是「大声呼救并找大人帮忙」" in text and text.count('type="radio"') == 3
    assert await world.record(notice, MUM) == "c"  # read, not yet understood
    status, text, location = await post_confirm(page, world.base, notice, csrf=page.csrf)  # no answer picked
    assert location.endswith("?r=pick") and "请先选择一个答案" in text
    status, text, _ = await post_confirm(page, world.base, notice, csrf=page.csrf, answer="1")
    assert status == 200 and "您已确认 ✓" in text and 'type="radio"' not in text
    assert await world.record(notice, MUM) == "k"
    [given] = (await world.confirmations(notice)).values()
    assert given.endswith("k")


async def test_notice_text_is_escaped_and_keeps_its_line_breaks(world: World) -> None:
    notice = await world.notice(title="<b>注意</b>", body='<script>alert(1)</script>\n第二段 & "引号"')
    page = await world.open(MUM, f"/n/{notice.id}")
    assert "<script>alert" not in page.text and "<b>注意" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;\n第二段 &amp; &#34;引号&#34;" in page.text
    policy = page.headers["Content-Security-Policy"]
    assert "script-src" not in policy and "default-src 'none'" in policy  # no script may run at all
    css = page.text.split("<style>", 1)[1].split("</style>", 1)[0]  # our inline stylesheet, allowed by hash
    assert f"'sha256-{base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()}'" in policy


async def test_a_notice_without_confirmation_has_no_button_and_offers_its_lesson(world: World) -> None:
    notice = await world.notice("none", lesson="drowning")
    page = await world.open(MUM, f"/n/{notice.id}")
    assert page.status == 200 and "<form" not in page.text and "无需确认" in page.text
    assert "回复「学习」" in page.text


async def test_an_unknown_or_malformed_notice_gets_a_kind_404(world: World) -> None:
    notice = await world.notice()
    page = await world.open(MUM, f"/n/{notice.id}")
    for path in ("/n/zzzzzzzzzzzzzz", "/n/NOT-AN-ID", "/n/" + "a" * 60):
        async with page.browser.get(world.base + path, allow_redirects=False) as resp:
            assert resp.status == 404 and "没有找到这条通知" in await resp.text()


async def test_a_campaign_notice_with_a_lesson_reminds_the_parent_what_the_child_missed_last_time(
    world: World,
) -> None:
    from bot.lessons import library
    from bot.lessons.progress import LessonStore

    lesson = library().for_topic_band("drowning", "g1-3")
    assert lesson is not None
    missed = lesson.questions[0]
    await LessonStore(world.redis).finished(
        SCHOOL, "20260301", lesson.id, right=[], wrong=[missed.id], score_pct=0, passed=False, now=1.0
    )
    notice = await world.notice(lesson="drowning", title="防溺水提醒")
    page = await world.open(MUM, f"/n/{notice.id}")
    assert page.status == 200
    assert "复习：王小明上次有1道" in page.text and "回复「学习」" in page.text
