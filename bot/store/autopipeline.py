"""Automatic pipelining for the callback's hot path: every task's commands on one connection.

redis-py takes a connection from its pool for each command, writes it, waits for the reply and
gives the connection back: 50-80 µs of Python per command (redis-py 8), which on one core is more
than a third of what a whole callback may cost. Here the commands issued in one turn of the event loop go out in
one write on one connection, and the replies (parsed by hiredis, in C) resolve their callers in
order: Redis answers a connection's commands in the order they came, so no ids are needed.

What it is for: the few commands every callback sends (the BEGIN/END scripts, the dedupe poll, the
enqueue of a shed message) and the few a hot handler sends (a parent's 「确认」: see
``NoticeService.waiting_for``/``confirm``). One per Redis client (:func:`shared`). Everything else
keeps using the redis-py client, which it is built from (same server, database, credentials, TLS),
or, for bulk reads, a second autopipeline on a connection of its own (:func:`bulk`).
Errors are redis-py's: ``ResponseError`` (``NoScriptError`` for an unknown script),
``ConnectionError`` when the connection is lost (every command in flight on it fails; the next
command reconnects). Replies are decoded as with ``decode_responses=True``.

Order is the point as much as speed: two commands sent one after the other by this process run in
that order in Redis (one connection), which lets the chat engine send its END script without waiting
for it (see :mod:`bot.chat.engine`). A client it cannot share a connection with (Redis Cluster, whose
keys live on several nodes) gets the same methods, sent through redis-py one by one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import ssl
import weakref
from collections import deque
from typing import Any

import hiredis
from redis import exceptions
from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection

log = logging.getLogger(__name__)


def _pack(command: tuple[Any, ...]) -> bytes:
    """RESP for one command, packed by hiredis (in C)."""
    packed: bytes = hiredis.pack_command(command)
    return packed


class Script:
    """A Lua script known by its SHA1: sent as EVALSHA, as EVAL once when Redis does not know it."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode("utf-8")).hexdigest()


def _reply_error(message: str) -> exceptions.ResponseError:
    if message.startswith("NOSCRIPT"):
        return exceptions.NoScriptError(message)
    return exceptions.ResponseError(message)


class _Unwatched:
    """In place of a future for a command nobody waits for: what to send if Redis lacks the script."""

    __slots__ = ("retry",)

    def __init__(self, retry: tuple[Any, ...] | None) -> None:
        self.retry = retry  # the EVAL command, packed only if needed (a script source is long)


class _Group:
    """In place of a future for several commands sent together (one entry per command in the queue):
    their replies gathered, then one result, the list, or the first error once all have come."""

    __slots__ = ("future", "replies", "size")

    def __init__(self, future: asyncio.Future[list[Any]], size: int) -> None:
        self.future = future
        self.replies: list[Any] = []
        self.size = size

    def add(self, reply: Any) -> None:
        replies = self.replies
        replies.append(reply)
        if len(replies) < self.size or self.future.done():  # (done: its caller gave up)
            return
        for r in replies:
            if isinstance(r, exceptions.ResponseError):
                self.future.set_exception(r)
                return
        self.future.set_result(replies)


class _Protocol(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.WriteTransport | None = None
        self.reader = hiredis.Reader(encoding="utf-8", replyError=_reply_error)
        self.waiting: deque[asyncio.Future[Any] | _Unwatched | _Group] = deque()
        self.out: list[bytes] = []
        self.lost: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport (uvloop's is no subclass)

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        if self.lost is not None:
            raise exceptions.ConnectionError(f"redis connection lost: {self.lost}")
        if not self.out:
            self.loop.call_soon(self._flush)
        self.out.append(packed)
        future: asyncio.Future[Any] = self.loop.create_future()
        self.waiting.append(future)
        return future

    def send_group(self, packed: list[bytes]) -> asyncio.Future[list[Any]]:
        """Several commands in one go; one future for the list of their replies."""
        if self.lost is not None:
            raise exceptions.ConnectionError(f"redis connection lost: {self.lost}")
        if not self.out:
            self.loop.call_soon(self._flush)
        self.out.extend(packed)
        future: asyncio.Future[list[Any]] = self.loop.create_future()
        group = _Group(future, len(packed))
        self.waiting.extend([group] * len(packed))
        return future

    def send_unwatched(self, packed: bytes, retry: tuple[Any, ...] | None) -> None:
        """Send a command whose reply nobody awaits (an error is logged; ``retry`` sent on NOSCRIPT)."""
        if self.lost is not None:
            raise exceptions.ConnectionError(f"redis connection lost: {self.lost}")
        if not self.out:
            self.loop.call_soon(self._flush)
        self.out.append(packed)
        self.waiting.append(_Unwatched(retry))

    def _flush(self) -> None:
        if self.transport is not None and self.out and self.lost is None:
            self.transport.write(b"".join(self.out))
        self.out.clear()

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        while True:
            reply = reader.gets()
            if reply is False:
                return
            if not self.waiting:  # cannot happen with a well-behaved server
                self._fail(exceptions.ConnectionError("redis sent a reply nobody asked for"))
                return
            future = self.waiting.popleft()
            if type(future) is _Group:
                future.add(reply)
                continue
            if type(future) is _Unwatched:
                if isinstance(reply, exceptions.ResponseError):
                    if isinstance(reply, exceptions.NoScriptError) and future.retry is not None:
                        self.send_unwatched(_pack(future.retry), None)
                    else:
                        log.error("a command sent without waiting failed: %s", reply)
                continue
            assert isinstance(future, asyncio.Future)
            if future.done():  # its caller gave up (cancelled): the reply is dropped, the order kept
                continue
            if isinstance(reply, exceptions.ResponseError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exceptions.ConnectionError(f"redis connection lost: {exc or 'closed'}"))

    def _fail(self, error: Exception) -> None:
        self.lost = error
        unwatched = 0
        while self.waiting:
            future = self.waiting.popleft()
            if isinstance(future, _Unwatched):
                unwatched += 1
            elif isinstance(future, _Group):
                if not future.future.done():
                    future.future.set_exception(error)
            elif not future.done():
                future.set_exception(error)
        if unwatched:
            log.error("%d commands sent without waiting may not have run: %s", unwatched, error)
        if self.transport is not None:
            self.transport.close()


Arg = str | int | float | bytes
_SHARED: weakref.WeakKeyDictionary[Any, Autopipeline] = weakref.WeakKeyDictionary()


def shared(redis: Any) -> Autopipeline:
    """The autopipeline of this redis-py client, made on first use (one connection per client)."""
    pipe = _SHARED.get(redis)
    if pipe is None:
        pipe = _SHARED[redis] = Autopipeline(redis)
    return pipe


_BULK: weakref.WeakKeyDictionary[Any, Autopipeline] = weakref.WeakKeyDictionary()


def bulk(redis: Any) -> Autopipeline:
    """A second autopipeline of this client, on a connection of its own, for reads of many keys at
    once (a district's lesson report: tens of thousands). On :func:`shared`'s connection their
    replies would hold up every callback's commands sent meanwhile, which wait their turn in the
    byte stream; here hiredis still packs and parses them in C."""
    pipe = _BULK.get(redis)
    if pipe is None:
        pipe = _BULK[redis] = Autopipeline(redis)
    return pipe


async def close_bulk(redis: Any) -> None:
    """Close this client's :func:`bulk` connection, if it was opened."""
    pipe = _BULK.pop(redis, None)
    if pipe is not None:
        await pipe.aclose()


class Autopipeline:
    """One connection, shared by every task of this process, created on first use."""

    def __init__(self, redis: Any) -> None:
        self._redis = redis
        # Only a plain client (one server) can be shared this way; else commands go through redis-py.
        self.pipelined = isinstance(redis, Redis)
        self._pool = redis.connection_pool if self.pipelined else None
        self._kwargs = dict(redis.connection_pool.connection_kwargs) if self.pipelined else {}
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Task[_Protocol] | None = None

    async def execute(self, *args: Arg) -> Any:
        if not self.pipelined:
            return await self._redis.execute_command(*args)
        protocol = self._protocol
        if protocol is None or protocol.lost is not None:
            protocol = await self._connect()
        return await protocol.send(_pack(args))

    async def execute_many(self, *commands: tuple[Arg, ...]) -> list[Any]:
        """Several commands sent together; their replies in order (the first error is raised)."""
        if not commands:
            return []
        if not self.pipelined:
            return [await self._redis.execute_command(*c) for c in commands]
        protocol = self._protocol
        if protocol is None or protocol.lost is not None:
            protocol = await self._connect()
        return await protocol.send_group([_pack(c) for c in commands])

    async def run(self, script: Script, keys: list[str], args: list[Arg]) -> Any:
        """EVALSHA; when Redis does not know the script (a restart, SCRIPT FLUSH), EVAL it once."""
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except exceptions.NoScriptError:
            return await self.execute("EVAL", script.source, len(keys), *keys, *args)

    def send_script(self, script: Script, keys: list[str], args: list[Arg]) -> bool:
        """Send EVALSHA now without waiting for its reply (False: not connected, nothing sent).

        It runs in Redis before any command this process sends later. A failure is logged. An
        unknown script is sent again as EVAL, then after those later commands: rare (a restart of
        Redis, SCRIPT FLUSH), and callers must tolerate it.
        """
        protocol = self._protocol
        if not self.pipelined or protocol is None or protocol.lost is not None:
            return False
        protocol.send_unwatched(
            _pack(("EVALSHA", script.sha, len(keys), *keys, *args)), ("EVAL", script.source, len(keys), *keys, *args)
        )
        return True

    def send_many(self, *commands: tuple[Arg, ...]) -> bool:
        """Send commands now without waiting for their replies (False: not connected, nothing sent).

        They run in Redis before any command this process sends later; a failure is logged."""
        protocol = self._protocol
        if not self.pipelined or protocol is None or protocol.lost is not None:
            return False
        for c in commands:
            protocol.send_unwatched(_pack(c), None)
        return True

    async def _connect(self) -> _Protocol:
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.ensure_future(self._open())
        try:
            # shield: one caller's cancellation must not cancel the others' connection
            return await asyncio.shield(self._connecting)
        except OSError as exc:
            raise exceptions.ConnectionError(f"cannot connect to redis: {exc}") from exc
        except TimeoutError:
            raise exceptions.TimeoutError("timed out connecting to redis") from None

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        kw = self._kwargs
        timeout = kw.get("socket_connect_timeout") or kw.get("socket_timeout") or 5.0
        assert self._pool is not None
        cls = self._pool.connection_class
        async with asyncio.timeout(timeout):
            if issubclass(cls, UnixDomainSocketConnection):
                _t, protocol = await loop.create_unix_connection(lambda: _Protocol(loop), kw["path"])
            else:
                context: ssl.SSLContext | None = None
                if issubclass(cls, SSLConnection):
                    context = self._pool.make_connection().ssl_context.get()
                _t, protocol = await loop.create_connection(
                    lambda: _Protocol(loop), kw.get("host", "localhost"), int(kw.get("port", 6379)), ssl=context
                )
            setup: list[tuple[Any, ...]] = []
            if kw.get("password"):
                user = (kw["username"],) if kw.get("username") else ()
                setup.append(("AUTH", *user, kw["password"]))
            if int(kw.get("db") or 0):
                setup.append(("SELECT", int(kw["db"])))
            for command in setup:
                await protocol.send(_pack(command))
        self._protocol = protocol
        return protocol

    async def aclose(self, wait: float = 2.0) -> None:
        """Send what is queued, wait (up to ``wait`` s) for the replies still due, then close."""
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            if protocol.waiting and protocol.lost is None:
                # Redis answers in order: once this PING is answered, so is everything sent before.
                with contextlib.suppress(exceptions.RedisError, TimeoutError):
                    await asyncio.wait_for(protocol.send(_pack(("PING",))), wait)
            protocol.transport.close()
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
            with contextlib.suppress(BaseException):
                await self._connecting
