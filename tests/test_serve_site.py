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
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import REGISTRY

from bot.app import create_app
from bot.config import Config
from bot.serve import new_event_loop, start_site
from bot.store.redis import connect
from bot.web.wire import WireResponse
from bot.wechat.emulator.follower import build_callback, read_reply


def _latency_count(route: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value("safebell_http_request_seconds_count", {"route": route, "outcome": outcome})
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


async def _exchange(
    host: str, port: int, requests: list[bytes]
) -> tuple[list[tuple[str, dict[str, str], bytes]], bool]:
    """Send ``requests`` one after another on one connection; their answers as (status line,
    headers by lower-case name, body), and whether the server closed the connection afterwards."""
    reader, writer = await asyncio.open_connection(host, port)
    answers = []
    try:
        for raw in requests:
            writer.write(raw)
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            headers = {}
            for line in head[1:]:
                if line:
                    name, _, value = line.partition(":")
                    assert name.lower() not in headers, f"{name} twice"
                    headers[name.lower()] = value.strip()
            body = await reader.readexactly(int(headers["content-length"]))
            answers.append((head[0], headers, body))
        closed = await asyncio.wait_for(reader.read(1), 2) == b""
    except TimeoutError:
        closed = False
    finally:
        writer.close()
    return answers, closed


def _post(path: str, body: bytes, version: str = "1.1", extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/{version}\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    ).encode("latin-1") + body


@pytest.mark.parametrize("loop_kind", ["uvloop", "asyncio"])
def test_the_callbacks_answer_is_plain_http_whatever_the_client_asks(config: Config, loop_kind: str) -> None:
    """The direct path writes its answers itself (WireResponse): checked byte by byte on a raw
    connection: keep-alive in HTTP/1.1, Connection: close asked for, HTTP/1.0 with and without
    keep-alive; each answer has one status line, its type, its exact length and a date."""
    config.wechat.menu_on_start = False
    results: dict[str, tuple[list[tuple[str, dict[str, str], bytes]], bool]] = {}

    def callback(n: int, refused: bool = False) -> bytes:
        query, body = build_callback(config.wechat, _text(f"o-wire-parent-{n:05d}", 881000 + n, "帮助"))
        if refused:
            query["signature"] = "0" * 40
        return ("/wechat?" + "&".join(f"{k}={v}" for k, v in query.items())).encode(), body

    async def scenario(base: str) -> None:
        host, port = base.removeprefix("http://").split(":")
        keep = [_post(p.decode(), b) for p, b in (callback(1), callback(2, True), callback(3))]
        results["1.1"] = await _exchange(host, int(port), keep)
        p, b = callback(4)
        results["1.1 close"] = await _exchange(host, int(port), [_post(p.decode(), b, extra="Connection: close\r\n")])
        p, b = callback(5)
        results["1.0"] = await _exchange(host, int(port), [_post(p.decode(), b, "1.0")])
        p, b = callback(6)
        p7, b7 = callback(7)
        results["1.0 keep-alive"] = await _exchange(
            host, int(port), [_post(p.decode(), b, "1.0", "Connection: keep-alive\r\n"),
                              _post(p7.decode(), b7, "1.0", "Connection: keep-alive\r\n")])  # fmt: skip

    _on_loop(loop_kind, lambda: _serving(config, scenario))

    answers, closed = results["1.1"]
    assert [a[0] for a in answers] == ["HTTP/1.1 200 OK", "HTTP/1.1 403 Forbidden", "HTTP/1.1 200 OK"]
    assert not closed
    for _, headers, body in answers:
        assert set(headers) == {"content-type", "content-length", "date"}
        assert len(body) == int(headers["content-length"])
        assert headers["date"].endswith(" GMT")
    assert answers[0][1]["content-type"] == "application/xml; charset=utf-8"
    assert "<Content><![CDATA[" in read_reply(config.wechat, answers[0][2])
    assert answers[1][1]["content-type"] == "text/plain; charset=utf-8"
    assert answers[1][2] == b"bad signature"

    answers, closed = results["1.1 close"]
    assert answers[0][0] == "HTTP/1.1 200 OK" and answers[0][1]["connection"] == "close" and closed

    answers, closed = results["1.0"]
    assert answers[0][0] == "HTTP/1.0 200 OK" and "connection" not in answers[0][1] and closed

    answers, closed = results["1.0 keep-alive"]
    assert [a[0] for a in answers] == ["HTTP/1.0 200 OK"] * 2
    assert all(a[1]["connection"] == "keep-alive" for a in answers) and not closed


async def test_a_wire_response_given_headers_is_written_by_aiohttp(aiohttp_client: Any) -> None:
    """Should something set a header on a WireResponse (a middleware, say), it is written the
    general way, with that header, the same type and body."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return WireResponse(201, "application/xml; charset=utf-8", "<xml>平安</xml>".encode())

    @web.middleware
    async def stamp(request: web.Request, handler: Any) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request)
        response.headers["X-Stamp"] = "1"
        return response

    plain, stamped = web.Application(), web.Application(middlewares=[stamp])
    for app in (plain, stamped):
        app.router.add_post("/", handler)
    for app, stamp_header in ((plain, None), (stamped, "1")):
        client = await aiohttp_client(app)
        async with client.post("/", data=b"x") as resp:
            assert resp.status == 201
            assert resp.headers["Content-Type"] == "application/xml; charset=utf-8"
            assert await resp.read() == "<xml>平安</xml>".encode()
            assert resp.headers.get("X-Stamp") == stamp_header


@pytest.mark.parametrize("loop_kind", ["uvloop", "asyncio"])
def test_a_callback_whose_body_arrives_in_pieces_is_read_whole(config: Config, loop_kind: str) -> None:
    """Over a real network a callback of a few kilobytes (a long message, encrypted and base64'd)
    comes in several TCP segments: the handler may start with only the first. It must read the
    body to its Content-Length, not take the first piece for the whole and refuse it."""
    config.wechat.menu_on_start = False
    answers: list[tuple[str, bytes]] = []

    async def scenario(base: str) -> None:
        host, port = base.removeprefix("http://").split(":")
        text = "请问明天放学后学校有没有安排看护，" * 40  # ~1,700 characters: ~7 KB encrypted
        query, body = build_callback(config.wechat, _text("o-pieces-parent-00001", 882001, text))
        path = "/wechat?" + "&".join(f"{k}={v}" for k, v in query.items())
        head = _post(path, body)[: -len(body)]
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(head + body[:300])
            await writer.drain()
            for i in range(300, len(body), 1000):  # the rest a piece at a time, a little later each
                await asyncio.sleep(0.02)
                writer.write(body[i : i + 1000])
                await writer.drain()
            status = (await reader.readuntil(b"\r\n")).decode().strip()
            headers = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            length = int(next(h.split(":")[1] for h in headers.split("\r\n") if h.lower().startswith("content-length")))
            answers.append((status, await reader.readexactly(length)))
        finally:
            writer.close()

    _on_loop(loop_kind, lambda: _serving(config, scenario))
    ((status, reply),) = answers
    assert status == "HTTP/1.1 200 OK", reply
    assert "<Content><![CDATA[" in read_reply(config.wechat, reply)
