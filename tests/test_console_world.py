"""The console's test world (imported by the other ``test_console_*`` modules) and its sanity checks.

Two districts; in d1 the school t-s1 with classes 3-2 (王小明, 李小红) and 3-3 (赵小刚), and t-s2; in
d2 the school t-x1. Parents bound through the roster store; a WeChat teacher bound to 3-2; console
accounts for every role: ``dadmin`` (district d1), ``sadmin`` (school t-s1), ``teacher32`` (class
teacher of 3-2), ``subject32`` (a subject teacher of 3-2: may look, not manage, and sees counts where
the class teacher sees names), ``teacher33`` (class teacher of 3-3: "a teacher of another class"). Browsers are
aiohttp sessions with their own cookie jars, talking to the real app over HTTP; WeChat is the emulator.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from bot.app import CONTEXT_KEY, create_app
from bot.config import Config
from bot.console.accounts import AccountStore, ScryptCost
from bot.console.web import Console
from bot.notices.model import Draft, Notice
from bot.notices.service import NoticeService
from bot.roster.authz import Scope
from bot.roster.chat import forget_directory
from bot.roster.model import School, Student, TeachRef
from bot.roster.store import RosterStore
from bot.store import keys
from bot.store.redis import Redis

CHEAP = ScryptCost(2**10, 8, 1)  # fast hashes for tests; the stored parameters travel with each hash
PASSWORD = "correct-horse-battery"
SCHOOL, OTHER_SCHOOL, FAR_SCHOOL = "t-s1", "t-s2", "t-x1"
CLASS, OTHER_CLASS = "3-2", "3-3"
MUM, DAD, AUNT, OTHER_PARENT, NEWCOMER = "oMum_0001", "oDad_0002", "oAunt_0003", "oOther_0005", "oNew_0006"
TEACHER_WX, PARENT_ONLY = "oTeach_0007", "oParent_0008"
# other class, class teacher, subject teacher, school, district
ROLES = ("anonymous", "teacher33", "teacher32", "subject32", "sadmin", "dadmin")
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Browser:
    http: aiohttp.ClientSession
    base: str

    async def get(self, path: str, **kw: Any) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.http.get(self.base + path, allow_redirects=kw.pop("allow_redirects", False), **kw) as resp:
            return resp.status, await resp.text(errors="replace"), resp

    async def post(self, path: str, data: Any, **kw: Any) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.http.post(self.base + path, data=data, allow_redirects=kw.pop("allow_redirects", False),
                                  **kw) as resp:  # fmt: skip
            return resp.status, await resp.text(errors="replace"), resp

    async def csrf(self, path: str = "/console/notices") -> str:
        status, text, _ = await self.get(path)
        found = CSRF.search(text)
        assert found, f"no form token on {path} ({status})"
        return found.group(1)

    def cookie(self, name: str) -> str:
        return next((c.value for c in self.http.cookie_jar if c.key == name), "")


@dataclass
class World:
    base: str
    config: Config
    redis: Redis
    console: Console
    notices: NoticeService
    store: RosterStore
    emulator: Any
    browsers: list[aiohttp.ClientSession] = field(default_factory=list)

    def browser(self, **headers: str) -> Browser:
        http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), headers=headers)
        self.browsers.append(http)
        return Browser(http, self.base)

    async def login(self, username: str, password: str = PASSWORD, **headers: str) -> Browser:
        b = self.browser(**headers)
        if username == "anonymous":
            return b
        status, text, _ = await self.try_login(b, username, password)
        assert status == 303, f"login of {username} answered {status}: {text[:300]}"
        return b

    async def try_login(self, b: Browser, username: str, password: str, **kw: Any) -> tuple[int, str, Any]:
        _, page, _ = await b.get("/console/login")
        token = CSRF.search(page)
        assert token
        return await b.post("/console/login", {"csrf": token.group(1), "username": username, "password": password,
                                               "next": "/console"}, **kw)  # fmt: skip

    async def wechat_login(self, openid: str) -> Browser:
        """A teacher opens the console inside WeChat: OAuth through the emulator, then the console."""
        b = self.browser()
        url = f"{self.emulator.url}/_emulator/browse?openid={openid}&next={quote(self.base + '/console/login/wechat')}"
        async with b.http.get(url) as resp:
            await resp.read()
        return b

    async def campaign(self, cid: str, *, school: str = "") -> None:
        """An admin-made campaign of district d1 (or of one of its schools)."""
        doc = {"id": cid, "name": "放学路上", "when": {"date": "12-01", "at": "16:00"}, "who": {"districts": ["d1"]},
               "what": {"title": "放学路上注意安全", "body": "请提醒孩子。", "mode": "none"}}  # fmt: skip
        await self.console.ctx.services["campaigns"].store.save_custom(cid, doc, district="d1", school=school)

    async def notice(self, title: str = "周五放学安全提醒", *, audience: tuple[Scope, ...] | None = None,
                     mode: str = "confirm") -> Notice:  # fmt: skip
        draft = Draft(title=title, body="请家长准时接孩子。", audience=audience or (Scope("d1", SCHOOL, None, CLASS),),
                      sender="三年级（2）班", mode=mode, deadline=time.time() + 86400)  # type: ignore[arg-type]  # fmt: skip
        notice, _ = await self.notices.create(draft)
        assert await self.notices.plan(notice) is not None
        return notice


async def build_world(config: Config, redis: Redis, emulator: Any, aiohttp_server: Any) -> World:
    forget_directory()
    store = RosterStore(redis)
    await store.put_school(School(SCHOOL, "平安路小学", "d1", "demo"), approval=True)
    await store.put_school(School(OTHER_SCHOOL, "幸福路小学", "d1", "demo"))
    await store.put_school(School(FAR_SCHOOL, "远方小学", "d2", "demo"))
    for school, cid in ((SCHOOL, CLASS), (SCHOOL, OTHER_CLASS), (OTHER_SCHOOL, "1-1"), (FAR_SCHOOL, "2-1")):
        await store.ensure_class(school, cid)
    await redis.hset(keys.class_students(SCHOOL, CLASS), mapping={"20260301": "王小明|a", "20260302": "李小红|a"})
    await redis.hset(keys.class_students(SCHOOL, OTHER_CLASS), mapping={"20260399": "赵小刚|a"})
    await redis.hset(keys.class_students(OTHER_SCHOOL, "1-1"), mapping={"20260101": "钱小多|a"})
    await redis.hset(keys.class_students(FAR_SCHOOL, "2-1"), mapping={"20260201": "孙小远|a"})
    wang = Student(SCHOOL, "20260301", "王小明", CLASS)
    await store.bind_guardian(MUM, wang, "m")
    await store.bind_guardian(DAD, wang, "f")
    await store.bind_guardian(AUNT, Student(SCHOOL, "20260302", "李小红", CLASS), "o")
    await store.bind_guardian(OTHER_PARENT, Student(SCHOOL, "20260399", "赵小刚", OTHER_CLASS), "m")
    await store.bind_guardian(PARENT_ONLY, Student(SCHOOL, "20260302", "李小红", CLASS), "g")
    await store.add_pending(NEWCOMER, Student(SCHOOL, "20260302", "李小红", CLASS), "f")
    code = await store.create_teacher_invite(SCHOOL, [CLASS], "c", 3600)
    await store.redeem_teacher_invite(code, TEACHER_WX)

    app = create_app(config, redis)
    server = await aiohttp_server(app)
    config.server.public_url = str(server.make_url("")).rstrip("/")
    ctx = app[CONTEXT_KEY]
    console: Console = ctx.services["console"]
    console.accounts.cost = CHEAP
    accounts = AccountStore(redis, cost=CHEAP)
    await accounts.create("dadmin", PASSWORD, "district_admin", district="d1")
    await accounts.create("sadmin", PASSWORD, "school_admin", district="d1", school=SCHOOL)
    await accounts.create("teacher32", PASSWORD, "teacher", district="d1", school=SCHOOL,
                          classes=(TeachRef(SCHOOL, CLASS, "c"),))  # fmt: skip
    await accounts.create("subject32", PASSWORD, "teacher", district="d1", school=SCHOOL,
                          classes=(TeachRef(SCHOOL, CLASS, "s"),))  # fmt: skip
    await accounts.create("teacher33", PASSWORD, "teacher", district="d1", school=SCHOOL,
                          classes=(TeachRef(SCHOOL, OTHER_CLASS, "c"),))  # fmt: skip
    await accounts.create("faradmin", PASSWORD, "district_admin", district="d2")
    return World(config.server.public_url, config, redis, console, ctx.services["notices"], store, emulator)


@pytest.fixture
async def world(config: Config, redis: Redis, emulator: Any, aiohttp_server: Any) -> AsyncIterator[World]:
    w = await build_world(config, redis, emulator, aiohttp_server)
    yield w
    for http in w.browsers:
        await http.close()
    forget_directory()


async def test_every_role_of_the_world_signs_in_and_sees_its_own_scope(world: World) -> None:
    expected = {"dadmin": "d1（全区）", "sadmin": "平安路小学", "teacher32": "三年级（2）班",
                "subject32": "三年级（2）班", "teacher33": "三年级（3）班"}  # fmt: skip
    for username, label in expected.items():
        b = await world.login(username)
        status, text, _ = await b.get("/console")
        assert status == 200 and label in text, username
