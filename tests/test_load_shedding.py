"""Load shedding: a saturated `bot serve` answers `success` at once and loses nothing.

Real server (aiohttp test server), real Redis, the WeChat emulator sending real signed callbacks
and receiving the customer-service messages the worker sends for shed messages. No timed
assertions: which callbacks are shed is decided by the number in flight, not by the clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from bot.app import CALLBACK_KEY, CONTEXT_KEY, create_app
from bot.chat.router import Command, Router
from bot.config import Config
from bot.delivery.outbox import INBOUND
from bot.notices.model import DELIVERED, SENT, Record
from bot.serve import build_worker
from bot.store import keys
from bot.store.redis import Redis, hget
from bot.wechat.client import WeChatAPI
from bot.wechat.emulator import EmulatorClient, follower
from bot.wechat.emulator.follower import build_callback

SLOW = 0.5  # seconds a "慢" message takes: long enough for the others to arrive while it runs


@dataclass
class Bot:
    em: EmulatorClient
    config: Config
    redis: Redis
    server: Any
    calls: list[str]

    async def inbound_jobs(self) -> list[dict[str, str]]:
        entries: list[tuple[str, dict[str, str]]] = await self.redis.xrange(keys.outbox())  # type: ignore[assignment]
        return [f for _id, f in entries if f.get("k") == INBOUND]

    async def three_in_flight(self) -> list[asyncio.Task[Any]]:
        """Three slow messages being answered: the next callback is shed."""
        tasks = [asyncio.create_task(self.em.send_text(p, "慢")) for p in await self.em.create_followers(3)]
        callback = self.server.app[CALLBACK_KEY]
        for _ in range(200):
            if len(callback._inflight) >= 3:
                return tasks
            await asyncio.sleep(0.005)
        raise AssertionError("the slow messages did not arrive")

    async def record(self, notice: str, openid: str) -> Record | None:
        return Record.decode(await hget(self.redis, keys.notice_records(notice), openid))

    async def run_worker(self) -> None:
        api = WeChatAPI(self.config.wechat, self.redis)
        try:
            worker = build_worker(self.config, self.redis, api, name="test", app=self.server.app)
            await worker.run(burst=True)
        finally:
            await api.close()


def slow_router(calls: list[str]) -> Router:
    r = Router(name="test.slow")

    @r.handler(Command("慢"))
    async def slow(openid: str) -> str:
        calls.append(openid)
        await asyncio.sleep(SLOW)
        return f"慢回复 {openid[-4:]}"

    return r


@pytest.fixture
async def bot(config: Config, redis: Redis, emulator: Any, aiohttp_server: Any) -> AsyncIterator[Bot]:
    config.wechat.shed_inflight = 3
    config.wechat.shed_wait = 60.0  # only the number in flight sheds here
    calls: list[str] = []
    app = create_app(config, redis)
    app[CONTEXT_KEY].router.include(slow_router(calls))
    server = await aiohttp_server(app)
    await emulator.client.configure(callback_url=str(server.make_url("/wechat")), push_delay_ms=0)
    yield Bot(emulator.client, config, redis, server, calls)


async def test_over_the_in_flight_limit_a_callback_gets_success_and_the_worker_answers_it_by_message(
    bot: Bot,
) -> None:
    parents = await bot.em.create_followers(12)
    results = await asyncio.gather(*(bot.em.send_text(p, "慢") for p in parents))
    assert {r.status for r in results} == {200}  # never a 5xx, never a timeout
    answered = [p for p, r in zip(parents, results, strict=True) if r.outcome == "reply"]
    shed = [p for p, r in zip(parents, results, strict=True) if r.outcome == "no_reply"]
    assert len(answered) >= 3 and shed and len(answered) + len(shed) == 12  # 3 in flight, others shed meanwhile
    assert sorted(bot.calls) == sorted(answered)  # shed ones have not run yet
    assert len(await bot.inbound_jobs()) == len(shed)

    await bot.run_worker()

    assert sorted(bot.calls) == sorted(parents)  # every message handled, once
    for p in shed:
        custom = (await bot.em.inbox(p))["custom"]
        assert [m["content"] for m in custom] == [f"慢回复 {p[-4:]}"], custom
    for p in answered:
        assert (await bot.em.inbox(p))["custom"] == []  # answered in the reply: nothing more
    assert await bot.inbound_jobs() == []


async def test_a_shed_delivery_report_is_still_recorded(bot: Bot) -> None:
    [parent] = await bot.em.create_followers(1)
    await bot.redis.set(keys.template_msg("4242"), "N-shed")
    await bot.redis.hset(keys.notice_records("N-shed"), parent, Record(SENT, "4242", 1).encode())
    blockers = await bot.three_in_flight()
    report = follower.template_finish_event("gh_x", parent, 4242, "success")
    params, body = build_callback(bot.config.wechat, report)
    async with aiohttp.ClientSession() as session:
        resp = await session.post(str(bot.server.make_url("/wechat")), params=params, data=body)
        assert resp.status == 200 and await resp.text() == "success"
    await asyncio.gather(*blockers)
    assert len(await bot.inbound_jobs()) == 1
    assert await bot.record("N-shed", parent) == Record(SENT, "4242", 1)  # not yet

    await bot.run_worker()

    record = await bot.record("N-shed", parent)
    assert record is not None and record.status == DELIVERED


async def test_a_shed_retry_of_an_answered_message_sends_nothing_again(bot: Bot) -> None:
    [parent] = await bot.em.create_followers(1)
    first = await bot.em.send_text(parent, "帮助", msg_id=777001)
    assert first.outcome == "reply"
    blockers = await bot.three_in_flight()
    retry = await bot.em.send_text(parent, "帮助", msg_id=777001)  # WeChat trying again
    await asyncio.gather(*blockers)
    assert retry.outcome == "no_reply" and len(await bot.inbound_jobs()) == 1

    await bot.run_worker()

    assert (await bot.em.inbox(parent))["custom"] == []  # the parent already has the answer


async def test_shedding_checks_the_signature_and_the_worker_drops_a_forged_body(bot: Bot) -> None:
    blockers = await bot.three_in_flight()
    w = bot.config.wechat
    url = str(bot.server.make_url("/wechat"))
    params, body = build_callback(w, follower.text_message("gh_x", "oForged000000000000000000001", "帮助"))
    async with aiohttp.ClientSession() as session:
        bad_query = await session.post(url, params=dict(params, signature="0" * 40), data=body)
        assert bad_query.status == 403  # a stranger gets nothing into the outbox
        forged = await session.post(url, params=dict(params, msg_signature="0" * 40), data=body)
        assert forged.status == 200 and await forged.text() == "success"  # the body is checked later
    await asyncio.gather(*blockers)
    assert len(await bot.inbound_jobs()) == 1

    await bot.run_worker()

    assert await bot.inbound_jobs() == []
    assert await bot.redis.keys(keys.dedupe("oForged000000000000000000001", "*")) == []  # never reached the chat


async def test_when_the_message_cannot_be_kept_it_is_answered_normally(bot: Bot) -> None:
    async def cannot_keep(query: str, body: str) -> None:
        raise ConnectionError("redis is full")

    bot.server.app[CALLBACK_KEY].defer = cannot_keep
    parents = await bot.em.create_followers(6)
    results = await asyncio.gather(*(bot.em.send_text(p, "慢") for p in parents))
    assert [r.outcome for r in results] == ["reply"] * 6  # slower, but nobody lost
    assert await bot.inbound_jobs() == []


async def test_a_callback_waiting_too_long_sheds_new_ones_even_under_the_in_flight_limit(bot: Bot) -> None:
    bot.config.wechat.shed_inflight = 1000
    bot.config.wechat.shed_wait = 0.1
    [slow_parent, parent] = await bot.em.create_followers(2)
    slow = asyncio.create_task(bot.em.send_text(slow_parent, "慢"))
    callback = bot.server.app[CALLBACK_KEY]
    for _ in range(400):  # until the slow one has waited longer than shed_wait
        if callback._inflight and callback.saturated(time.monotonic()):
            break
        await asyncio.sleep(0.005)
    result = await bot.em.send_text(parent, "帮助")
    assert result.outcome == "no_reply" and (await slow).outcome == "reply"
    assert len(await bot.inbound_jobs()) == 1
    await bot.run_worker()
    [answer] = (await bot.em.inbox(parent))["custom"]
    assert "平安铃" in answer["content"]  # the help text, by customer-service message
