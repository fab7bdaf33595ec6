"""How `bot serve` listens: its own accept loop (a burst of connections all accepted at once, on
uvloop as on asyncio's loop) and the callback's direct path past the router and middlewares."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import socket
import time
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
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


async def _serving_on(config: Config, host: str, body: Callable[[web.AppRunner], Awaitable[None]]) -> None:
    redis = connect(config.redis.url)
    runner = await start_site(create_app(config, redis), host, 0)
    try:
        await body(runner)
    finally:
        await runner.cleanup()
        await redis.aclose()


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


async def _get_healthz(host: str, port: int) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head = await reader.readline()
    writer.close()
    return head


@pytest.mark.parametrize("loop_kind", ["uvloop", "asyncio"])
def test_an_empty_host_listens_on_every_interface_as_tcpsite_did(config: Config, loop_kind: str) -> None:
    """server.host = "" meant "all interfaces, IPv4 and IPv6" to aiohttp's TCPSite (asyncio's
    create_server): it must still, not fail to resolve "" nor keep only one address family."""
    config.wechat.menu_on_start = False

    async def scenario(runner: web.AppRunner) -> None:
        families = {len(address) for address in runner.addresses}  # (host, port) or (host, port, flow, scope)
        assert 2 in families
        v4 = next(a for a in runner.addresses if len(a) == 2)
        assert (await _get_healthz("127.0.0.1", v4[1])).startswith(b"HTTP/1.1 200")
        if _has_ipv6_loopback():
            assert 4 in families
            v6 = next(a for a in runner.addresses if len(a) == 4)
            assert (await _get_healthz("::1", v6[1])).startswith(b"HTTP/1.1 200")

    _on_loop(loop_kind, lambda: _serving_on(config, "", scenario))


@pytest.mark.parametrize("loop_kind", ["uvloop", "asyncio"])
def test_an_ipv6_host_is_served(config: Config, loop_kind: str) -> None:
    if not _has_ipv6_loopback():
        pytest.skip("no IPv6 loopback here")
    config.wechat.menu_on_start = False

    async def scenario(runner: web.AppRunner) -> None:
        port = runner.addresses[0][1]
        assert (await _get_healthz("::1", port)).startswith(b"HTTP/1.1 200")

    _on_loop(loop_kind, lambda: _serving_on(config, "::1", scenario))


@pytest.mark.parametrize("loop_kind", ["uvloop", "asyncio"])
def test_a_callback_sent_with_expect_100_continue_is_told_to_continue(config: Config, loop_kind: str) -> None:
    """A client that sends ``Expect: 100-continue`` waits for ``100 Continue`` before its body
    (curl does so for bodies over 1 KB): the direct path must not leave it waiting."""
    config.wechat.menu_on_start = False

    async def scenario(base: str) -> None:
        host, port = base.removeprefix("http://").split(":")
        query, body = build_callback(config.wechat, _text("o-expect-parent-0001", 880002, "帮助"))
        raw = body.encode() if isinstance(body, str) else body
        target = "/wechat?" + "&".join(f"{k}={v}" for k, v in query.items())
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: {len(raw)}\r\n"
            "Expect: 100-continue\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readline(), 2.0)
        assert head.startswith(b"HTTP/1.1 100"), head
        await reader.readline()  # the blank line after the interim answer
        writer.write(raw)
        await writer.drain()
        final = await asyncio.wait_for(reader.readline(), 5.0)
        writer.close()
        assert final.startswith(b"HTTP/1.1 200"), final

    _on_loop(loop_kind, lambda: _serving(config, scenario))


@pytest.mark.parametrize("loop_kind", ["uvloop", "asyncio"])
def test_out_of_descriptors_the_accept_loop_pauses_instead_of_spinning(
    config: Config, loop_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """accept() failing with EMFILE leaves the connection queued and the socket readable: retried
    on every loop turn it would spin a core and log thousands of warnings. It pauses, and once
    descriptors are free again the queued connection is answered."""
    config.wechat.menu_on_start = False

    async def scenario(base: str) -> None:
        host, port = base.removeprefix("http://").split(":")
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # made before the descriptors run out
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        fillers: list[int] = []
        turns = 0
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 16, hard))
            with contextlib.suppress(OSError):
                while True:
                    fillers.append(os.open(os.devnull, os.O_RDONLY))
            client.connect((host, int(port)))  # completes in the kernel: waits in the accept queue
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="bot.serve"):
                deadline = time.monotonic() + 0.3
                while time.monotonic() < deadline:
                    await asyncio.sleep(0)
                    turns += 1
            warnings = [r for r in caplog.records if "accept" in r.getMessage()]
            assert 1 <= len(warnings) <= 3, f"{len(warnings)} accept warnings in {turns} loop turns"
        finally:
            for fd in fillers:
                os.close(fd)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        client.setblocking(False)
        loop = asyncio.get_running_loop()
        head = await asyncio.wait_for(loop.sock_recv(client, 64), 5.0)
        client.close()
        assert head.startswith(b"HTTP/1.1 200"), head

    _on_loop(loop_kind, lambda: _serving(config, scenario))


@pytest.mark.parametrize("loop_kind", ["uvloop", "asyncio"])
@pytest.mark.parametrize("yields", [0, 1, 2, 3, 4])
def test_cleanup_leaves_no_accepted_connection_open(config: Config, loop_kind: str, yields: int) -> None:
    """Connections accepted just before shutdown (their hand-over to aiohttp still pending) are
    handed over and shut down with the rest: when runner.cleanup() returns, every client has been
    answered or closed, none is left with a connection nobody will ever serve."""
    config.wechat.menu_on_start = False

    async def scenario(runner: web.AppRunner) -> None:
        host, port = runner.addresses[0][:2]
        clients = []
        for _ in range(50):
            client = socket.create_connection((host, port))
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # keep-alive
            clients.append(client)
        for _ in range(yields):
            await asyncio.sleep(0)
        await runner.cleanup()
        # no more loop turns from here: what cleanup left open stays open
        open_ = 0
        for client in clients:
            client.settimeout(0.5)
            try:
                while client.recv(4096):
                    pass
            except TimeoutError:
                open_ += 1
            except ConnectionError:
                pass  # refused with the listener: closed too
            client.close()
        assert open_ == 0, f"{open_} of {len(clients)} connections left open after cleanup"

    async def run() -> None:
        redis = connect(config.redis.url)
        runner = await start_site(create_app(config, redis), "127.0.0.1", 0)
        try:
            await scenario(runner)
        finally:
            await redis.aclose()

    _on_loop(loop_kind, run)
