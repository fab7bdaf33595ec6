"""How `bot serve` listens: its own accept loop (a burst of connections all accepted at once, on
uvloop as on asyncio's loop) and the callback's direct path past the router and middlewares."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from prometheus_client import REGISTRY

from bot.app import create_app
from bot.config import Config
from bot.serve import new_event_loop, start_site
from bot.store.redis import connect
from bot.wechat.emulator.follower import build_callback, read_reply


def _latency_count(route: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "safebell_http_request_seconds_count", {"route": route, "outcome": outcome}
    )
    return value or 0.0


def _text(openid: str, msg_id: int, content: str) -> str:
    return (
        f"<xml><ToUserName><![CDATA[gh_test]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
        f"<Content><![CDATA[{content}]]></Content><MsgId>{msg_id}</MsgId></xml>"
    )


def _on_loop(kind: str, scenario: Callable[[], Awaitable[None]]) -> None:
    with asyncio.Runner(loop_factory=lambda: new_event_loop(kind)) as runner:
        runner.run(scenario())


async def _serving(config: Config, body: Callable[[str], Awaitable[None]]) -> None:
    redis = connect(config.redis.url)
    app = create_app(config, redis)
    runner = await start_site(app, "127.0.0.1", 0)
    try:
        host, port = runner.addresses[0][:2]
        await body(f"http://{host}:{port}")
    finally:
        await runner.cleanup()
        await redis.aclose()


@pytest.mark.parametrize("loop_kind", ["uvloop", "asyncio"])
def test_callback_fast_path_answers_and_is_timed(config: Config, loop_kind: str) -> None:
    """POST /wechat skips the router and middlewares, yet answers as before and is timed under
    its route; every other path still goes through the application."""
    config.wechat.menu_on_start = False
    before = _latency_count("/wechat", "2xx")

    async def scenario(base: str) -> None:
        async with aiohttp.ClientSession() as http:
            query, body = build_callback(config.wechat, _text("o-fast-path-parent-01", 880001, "帮助"))
            async with http.post(base + "/wechat", params=query, data=body) as resp:
                assert resp.status == 200
                reply = read_reply(config.wechat, await resp.read())
            assert "<Content><![CDATA[" in reply
            # a refused callback: 4xx from the same path, timed as such
            async with http.post(base + "/wechat", params={**query, "signature": "0" * 40}, data=body) as resp:
                assert resp.status == 403
            async with http.get(base + "/healthz") as resp:
                assert resp.status == 200
            async with http.get(base + "/api/notices") as resp:  # the API's middleware still runs
                assert resp.status == 401

    _on_loop(loop_kind, lambda: _serving(config, scenario))
    assert _latency_count("/wechat", "2xx") == before + 1
    assert _latency_count("/wechat", "4xx") >= 1


@pytest.mark.parametrize("loop_kind", ["uvloop", "asyncio"])
def test_a_burst_of_connections_is_accepted_at_once(config: Config, loop_kind: str) -> None:
    """600 connections opened together while the loop is busy answering: every one is accepted
    within a few loop turns (libuv alone accepts one per turn: 600 turns, seconds under load).
    Counted in loop turns, not seconds, so a slow machine does not change the verdict."""
    config.wechat.menu_on_start = False

    async def scenario(base: str) -> None:
        host, port = base.removeprefix("http://").split(":")
        turns = 0

        async def busy() -> None:  # a loop answering callbacks: each turn takes a little while
            nonlocal turns
            while True:
                time.sleep(0.001)  # noqa: ASYNC251 - the point: a loop kept busy answering
                turns += 1
                await asyncio.sleep(0)

        async def one() -> int:
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            await writer.drain()
            head = await reader.readline()
            writer.close()
            assert head.startswith(b"HTTP/1.1 200"), head
            return turns

        hog = asyncio.create_task(busy())
        try:
            answered = await asyncio.gather(*(one() for _ in range(600)))
        finally:
            hog.cancel()
        assert max(answered) < 100, f"the last connection was answered after {max(answered)} loop turns"

    _on_loop(loop_kind, lambda: _serving(config, scenario))
