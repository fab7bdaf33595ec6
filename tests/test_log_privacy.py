"""Logs never hold a full openid or a child's name: a parent binds (after one wrong try), gets a card
(after WeChat was busy once and answered 502 once) and confirms, with the root logger at DEBUG and
the production log set-up (``bot.logs.setup_logging``), plain and JSON.

The emulator plays WeChat in this process; its own log lines are WeChat's, not ours, and are left out.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from bot.app import create_app
from bot.config import Config, LogConfig
from bot.logs import setup_logging
from bot.notices.model import Draft
from bot.notices.service import NoticeService
from bot.roster import chat as roster_chat
from bot.roster.authz import Scope, Subject
from bot.roster.model import School
from bot.roster.store import RosterStore
from bot.serve import build_worker
from bot.store import keys
from bot.store.redis import Redis
from bot.wechat.client import WeChatAPI
from bot.wechat.emulator import EmulatorClient

SCHOOL, CLASS, DISTRICT = "lp-s1", "3-2", "d1"
STUDENTS = {"20260301": "王小明", "20260302": "李小红"}


class Raw(logging.Handler):
    """Every record as our code emitted it, before the masking filter of the real handler."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith("bot.wechat.emulator"):
            self.lines.append(record.getMessage())


@pytest.fixture(params=[False, True], ids=["plain", "json"])
def captured(request: pytest.FixtureRequest) -> Iterator[tuple[io.StringIO, Raw]]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger("aiohttp.access").level)
    setup_logging(LogConfig(level="DEBUG", json=request.param), process="test")
    out = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)
    handler.addFilter(lambda r: not r.name.startswith("bot.wechat.emulator"))
    raw = Raw()
    root.handlers.insert(0, raw)  # before the real handler, whose filter rewrites records in place
    try:
        yield out, raw
    finally:
        root.handlers[:], _, _ = saved
        root.setLevel(saved[1])
        logging.getLogger("aiohttp.access").setLevel(saved[2])


async def test_logs_hold_no_full_openid_and_no_student_name_when_a_parent_binds_and_confirms(
    config: Config, redis: Redis, emulator: Any, aiohttp_server: Any, captured: tuple[io.StringIO, Raw], figures: Any
) -> None:
    out, raw = captured
    config.delivery.quiet_start = config.delivery.quiet_end = "00:00"  # no quiet hours, whatever the time
    roster_chat.forget_directory()
    store = RosterStore(redis)
    await store.put_school(School(SCHOOL, "平安路小学", DISTRICT, "demo"))
    info = await store.ensure_class(SCHOOL, CLASS)
    await redis.hset(keys.class_students(SCHOOL, CLASS), mapping={sid: f"{n}|a" for sid, n in STUDENTS.items()})
    em: EmulatorClient = emulator.client
    server = await aiohttp_server(create_app(config, redis))
    await em.configure(callback_url=str(server.make_url("/wechat")))
    [parent] = await em.create_followers(1)

    async def say(text: str) -> str:
        result = await em.send_text(parent, text)
        assert result.status == 200
        return result.text or ""

    assert "姓名" in (await em.scan(parent, f"bind:{info.code}")).text  # type: ignore[operator]
    assert "后4位" in await say("王小明")
    await say("9999")  # a wrong proof first: asked for the name again
    assert "后4位" in await say("王小明")
    assert "您是孩子的" in await say("0301")
    assert "绑定成功" in await say("妈妈")
    notices = NoticeService(redis, config, store)
    draft = Draft(title="周末防溺水提醒", body="请看护好孩子。", audience=(Scope(DISTRICT, SCHOOL),),
                  sender="平安路小学")  # fmt: skip
    await notices.submit(draft, Subject("school_admin", school=SCHOOL, district=DISTRICT))
    send = "/cgi-bin/message/template/send"
    await em.inject_fault(send, errcode=-1)  # WeChat busy, then a 502: both retried, both logged
    await em.inject_fault(send, http_status=502)
    config.wechat.api_backoff = 0.01
    api = WeChatAPI(config.wechat, redis)
    try:
        await build_worker(config, redis, api, name="t").run(burst=True)
    finally:
        await api.close()
    assert len((await em.inbox(parent))["template"]) == 1
    assert "已确认" in await say("确认")
    roster_chat.forget_directory()

    written = out.getvalue()
    secrets = [parent, *STUDENTS.values()]
    leaks = [s for s in secrets if s in written]
    raw_openids = sum(parent in line for line in raw.lines)
    raw_names = [line for line in raw.lines if any(n in line for n in STUDENTS.values())]
    figures(
        f"logs at DEBUG while a parent binds and confirms: {len(raw.lines)} records, {len(written.splitlines())} "
        f"lines written; full openids written {sum(written.count(s) for s in secrets[:1])}, student names written "
        f"{sum(written.count(s) for s in secrets[1:])}; records with a full openid before the masking filter "
        f"{raw_openids}"
    )
    assert len(raw.lines) >= 3  # at least the token fetch and the two retries
    assert not leaks, f"the log holds {leaks}:\n{written[-3000:]}"
    assert not raw_names, raw_names[:3]
