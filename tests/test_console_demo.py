"""The clickable demo page: phones of simulated parents, playing a parent, the teacher's figures."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from bot.app import create_app
from bot.config import Config
from bot.console.demo_page import DEMO_CLASS, with_demo
from bot.demo_data import DEMO_SCHOOL
from bot.demo_data import path as demo_file
from bot.roster.chat import forget_directory
from bot.roster.importer import apply, apply_schools, parse_roster, parse_schools, validate
from bot.roster.store import RosterStore
from bot.serve import build_worker
from bot.store import keys
from bot.store.redis import Redis
from bot.wechat.client import WeChatAPI

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Demo:
    base: str
    http: aiohttp.ClientSession
    redis: Redis
    emulator: Any
    parents: list[str]
    teacher: str
    config: Config

    async def page(self) -> str:
        async with self.http.get(self.base + "/demo") as resp:
            assert resp.status == 200
            return await resp.text()

    async def post(self, path: str, **form: str) -> tuple[int, str]:
        token = CSRF.search(await self.page())
        assert token
        async with self.http.post(self.base + path, data={"csrf": token.group(1), **form}) as resp:
            return resp.status, await resp.text()

    async def deliver(self) -> None:
        worker = build_worker(self.config, self.redis, WeChatAPI(self.config.wechat, self.redis))
        await worker.run(burst=True)


@pytest.fixture
async def demo(config: Config, redis: Redis, emulator: Any, aiohttp_server: Any) -> AsyncIterator[Demo]:
    forget_directory()
    host = urlsplit(emulator.url)
    config.emulator.host, config.emulator.port = host.hostname or "127.0.0.1", host.port or 0
    config.delivery.quiet_start = config.delivery.quiet_end = "00:00"
    await apply_schools(redis, parse_schools(demo_file("schools.csv")))
    store = RosterStore(redis)
    await apply(redis, validate(parse_roster(demo_file("roster.csv")), await store.schools()))
    server = await aiohttp_server(with_demo(create_app(config, redis)))
    config.server.public_url = str(server.make_url("")).rstrip("/")
    client = emulator.client
    [teacher] = await client.create_followers(1)
    await client.send_text(teacher, await store.create_teacher_invite(DEMO_SCHOOL, [DEMO_CLASS], "c", 3600))
    info = await store.class_info(DEMO_SCHOOL, DEMO_CLASS)
    assert info is not None
    parents = []
    for name, proof in (("王小明", "0321"), ("孟婧语", "0322")):
        [parent] = await client.create_followers(1)
        for text in (info.code, name, proof, "妈妈"):
            await client.send_text(parent, text)
        parents.append(parent)
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    yield Demo(config.server.public_url, http, redis, emulator, parents, teacher, config)
    await http.close()
    forget_directory()


async def test_the_demo_shows_each_parents_phone_and_the_class_teachers_figures(demo: Demo) -> None:
    page = await demo.page()
    assert "王小明的妈妈" in page and "孟婧语的妈妈" in page
    assert page.count('class="phone"') == 2 and "班主任看到的" in page and "这个班还没有通知" in page


async def test_a_visitor_plays_a_parent_opens_the_card_answers_and_the_teacher_sees_it(demo: Demo) -> None:
    status, _ = await demo.post("/demo/notice", preset="understand")
    assert status == 200
    await demo.deliver()
    page = await demo.page()
    assert "放学路上交通安全" in page and "详情 ›" in page
    notice_id = re.search(r'name="notice" value="([0-9a-z]+)"', page).group(1)  # type: ignore[union-attr]
    mum = demo.parents[0]
    status, page = await demo.post(f"/demo/phone/{mum}/open", notice=notice_id)
    assert status == 200 and "srcdoc=" in page and "绿灯闪烁时应该怎么做" in page  # the H5 page, in the phone
    assert str(await demo.redis.hget(keys.notice_records(notice_id), mum)).startswith("o")  # opened
    status, page = await demo.post(f"/demo/phone/{mum}/confirm", answer="0")  # wrong first
    assert "回答得不对" in page
    status, page = await demo.post(f"/demo/phone/{mum}/confirm", answer="1")
    assert await demo.redis.hget(keys.notice_confirmations(notice_id), f"{DEMO_SCHOOL}/20260321")
    async with demo.http.get(demo.base + "/demo/state.json") as resp:
        figures = await resp.json()
    assert figures["funnel"]["confirmed"] == 1 and figures["notice"]["title"] == "放学路上交通安全"
    assert "孟婧语" in {m["name"] for m in figures["missing"]}


async def test_a_visitor_writes_in_a_parents_chat_through_the_real_callback(demo: Demo) -> None:
    other = demo.parents[1]
    status, page = await demo.post(f"/demo/phone/{other}/say", text="帮助")
    assert status == 200 and "帮助" in page and "回复「取消」结束当前操作" in page  # the bot's answer in the phone


async def test_the_demo_opens_the_real_console_as_the_class_teacher(demo: Demo) -> None:
    async with demo.http.get(demo.base + "/demo/teacher") as resp:
        assert resp.status == 200 and "登录成功" in await resp.text()
    async with demo.http.get(demo.base + "/console") as resp:
        assert resp.status == 200 and "三年级（2）班老师（微信）" in await resp.text()


async def test_a_demo_action_without_the_pages_token_is_refused(demo: Demo) -> None:
    async with demo.http.post(demo.base + "/demo/notice", data={"preset": "confirm"}) as resp:
        assert resp.status == 403
    assert await demo.redis.zcard(keys.notices_by_time()) == 0


async def test_the_demo_page_exists_only_where_bot_demo_adds_it(
    config: Config, redis: Redis, aiohttp_server: Any
) -> None:
    server = await aiohttp_server(create_app(config, redis))
    async with aiohttp.ClientSession() as http, http.get(str(server.make_url("/demo"))) as resp:
        assert resp.status == 404
