"""Running the processes: ``bot serve`` (one or N processes on one port), ``bot worker``, ``bot scheduler``."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from aiohttp import hdrs, web
from yarl import URL

from bot.app import CALLBACK_KEY, create_app
from bot.config import Config, dump_toml
from bot.delivery.worker import Job, Worker, WorkerContext
from bot.metrics import BATCHED
from bot.store.redis import Redis, connect, start_embedded_if_needed
from bot.web import ops
from bot.web.wire import WireResponse
from bot.wechat.callback import WeChatCallback
from bot.wechat.client import WeChatAPI

log = logging.getLogger(__name__)


async def wait_for_signal() -> None:
    """Return on SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(sig)


# A burst of callbacks opens many connections at once: a short accept queue drops them, and TCP
# retries after 1 s, 3 s... (the kernel caps this at net.core.somaxconn).
BACKLOG = 4096
# accept() errors that mean "out of descriptors or memory": the connection stays in the queue, so
# the socket stays readable and a level-triggered reader would be called again on every loop turn
# (a core spinning, a warning per turn). The socket is left unwatched this long instead (asyncio's
# own accept loop does the same, for the same errors and with the same delay).
_ACCEPT_PAUSE = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
ACCEPT_RETRY_DELAY = 1.0
# On shutdown, how long connections already accepted may take to reach aiohttp (which then closes
# them gracefully): a hand-over takes a loop turn or two.
HANDOVER_TIMEOUT = 1.0


class _Listener:
    """The listening sockets and their accept loop; what aiohttp's runner expects of a site's
    server (``sockets``, ``close``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, factory: Callable[[], Any], backlog: int) -> None:
        self.sockets: list[socket.socket] = []
        self._loop, self._factory, self._backlog = loop, factory, backlog
        # connections accepted, not yet handed to aiohttp: their task -> their socket
        self._handing: dict[asyncio.Task[Any], socket.socket] = {}
        self._paused: dict[int, asyncio.TimerHandle] = {}

    def listen(self, sock: socket.socket) -> None:
        self.sockets.append(sock)
        self._loop.add_reader(sock.fileno(), self._accept, sock)

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(self._backlog):
            try:
                conn, _address = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError, PermissionError):
                # queue empty, or that one client gone (or refused by the firewall): the reader
                # is called again while anything else is waiting
                return
            except OSError as exc:
                if exc.errno not in _ACCEPT_PAUSE:
                    raise
                log.warning("accept: %s; new connections wait %.0f s in the queue", exc, ACCEPT_RETRY_DELAY)
                fd = sock.fileno()
                self._loop.remove_reader(fd)
                self._paused[fd] = self._loop.call_later(ACCEPT_RETRY_DELAY, self._resume, sock)
                return
            conn.setblocking(False)
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = self._loop.create_task(self._loop.connect_accepted_socket(self._factory, sock=conn))
            self._handing[task] = conn
            task.add_done_callback(self._handed)

    def _resume(self, sock: socket.socket) -> None:
        self._paused.pop(sock.fileno(), None)
        self._loop.add_reader(sock.fileno(), self._accept, sock)

    def _handed(self, task: asyncio.Task[Any]) -> None:
        conn = self._handing.pop(task)
        if task.cancelled():
            conn.close()
            return
        exc = task.exception()
        if exc is None:
            return
        if isinstance(exc, OSError):  # the client left before its transport was made
            log.debug("connection dropped on accept: %s", exc)
        else:
            log.error("could not hand a connection to aiohttp", exc_info=exc)
        conn.close()

    def close(self) -> None:
        for handle in self._paused.values():
            handle.cancel()
        self._paused.clear()
        for sock in self.sockets:
            self._loop.remove_reader(sock.fileno())
            sock.close()
        self.sockets = []

    async def wait_closed(self) -> None:
        """Connections accepted before ``close`` reach aiohttp, so the runner's shutdown closes them
        gracefully with the others; one that does not within ``HANDOVER_TIMEOUT`` is closed here."""
        if not self._handing:
            return
        _done, late = await asyncio.wait(list(self._handing), timeout=HANDOVER_TIMEOUT)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)


class AcceptAllSite(web.BaseSite):
    """A TCP site that accepts every waiting connection each time a socket is readable.

    libuv (under uvloop) accepts one connection per loop turn (libuv#3696): when a thousand
    connections arrive while the loop is busy answering, the last of them waits a thousand turns,
    seconds, to be accepted. Here the accepting is ours, a backlog's worth at once on either loop,
    and each connection goes to aiohttp with ``loop.connect_accepted_socket``. It listens where
    aiohttp's ``TCPSite`` would: every address ``host`` resolves to ("" or no host: all interfaces,
    IPv4 and IPv6), IPv6 sockets IPv6-only so that both families can be bound on one port.
    """

    __slots__ = ("_host", "_listener", "_port", "_reuse_port")

    def __init__(self, runner: web.BaseRunner, host: str | None, port: int, *, reuse_port: bool = False,
                 backlog: int = BACKLOG) -> None:  # fmt: skip
        super().__init__(runner, backlog=backlog)
        self._host, self._port, self._reuse_port = host, port, reuse_port
        self._listener: _Listener | None = None

    @property
    def name(self) -> str:
        return str(URL.build(scheme="http", host=self._host or "0.0.0.0", port=self._port))

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(self._host or None, self._port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        server = self._runner.server
        assert server is not None
        listener = _Listener(loop, server, self._backlog)
        try:
            for family, kind, proto, _, address in dict.fromkeys(infos):
                try:
                    sock = socket.socket(family, kind, proto)
                except OSError:  # a family this host has not enabled (IPv6 off): as create_server does
                    log.debug("cannot make a socket for %r", address, exc_info=True)
                    continue
                listener.listen(self._bind(sock, address))
            if not listener.sockets:
                raise OSError(errno.EAFNOSUPPORT, f"no socket could be made to listen on {self.name}")
        except BaseException:
            listener.close()
            raise
        self._port = listener.sockets[0].getsockname()[1]
        self._listener = listener
        self._server = listener  # type: ignore[assignment]  # sockets + close: all the runner uses

    def _bind(self, sock: socket.socket, address: Any) -> socket.socket:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self._reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if sock.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(self._backlog)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"cannot listen on {address!r}: {exc.strerror}") from exc
        return sock

    async def stop(self) -> None:
        await super().stop()  # closes the listening sockets
        if self._listener is not None:
            await self._listener.wait_closed()


class AppRunner(web.AppRunner):
    """aiohttp's runner, with WeChat's callbacks (POST to the callback path) handed straight to the
    callback: they skip the router and the middlewares, none of which does anything for them (the
    per-IP limit, the API's authentication and the console's guard are for other paths), which is
    ~5% of a callback's CPU; and their answer is written in one piece (``WireResponse``: nothing
    else touches it), ~8% more. Their time is recorded as the timing middleware records it. Every
    other request goes through the application as usual, and so does a callback that carries
    ``Expect`` (the application answers it with ``100 Continue`` before the body is read)."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        callback = self.app.get(CALLBACK_KEY)
        if callback is None:
            return server
        full, answer, path, clock = server.request_handler, callback.answer, callback.path, time.perf_counter

        async def handle(request: web.BaseRequest) -> web.StreamResponse:
            if (
                request.method != "POST"
                or request.raw_path.partition("?")[0] != path
                or hdrs.EXPECT in request.headers  # "100 Continue" is the application's to send
            ):
                return await full(request)
            started, status = clock(), 0
            try:
                status, content_type, body = await answer(request)  # type: ignore[arg-type]  # the app's factory made it
                return WireResponse(status, content_type, body)
            finally:
                ops.observe(path, status, clock() - started)

        server.request_handler = handle
        return server


async def start_site(app: web.Application, host: str, port: int, *, reuse_port: bool = False) -> web.AppRunner:
    runner = AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = AcceptAllSite(runner, host, port, reuse_port=reuse_port)
    await site.start()
    return runner


T = TypeVar("T")


def run_on_loop(kind: str, main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the loop ``server.event_loop`` names (see :func:`new_event_loop`)."""
    with asyncio.Runner(loop_factory=lambda: new_event_loop(kind)) as runner:
        return runner.run(main)


def new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    """``server.event_loop``: uvloop when asked for and installed, else asyncio's own."""
    if kind == "uvloop":
        try:
            import uvloop
        except ImportError:
            log.warning("uvloop is not installed: serving on asyncio's loop (server.event_loop)")
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


async def serve_forever(
    cfg: Config, *, reuse_port: bool = False, until: Callable[[], Awaitable[None]] | None = None
) -> None:
    redis = connect(cfg.redis.url)
    app = create_app(cfg, redis)
    # Everything built so far (capabilities, templates, the calendar...) lives as long as the process:
    # move it out of the collector's reach, so a full collection under load scans only what requests
    # made (tens of thousands of objects fewer: shorter pauses, a lower p99).
    gc.collect()
    gc.freeze()
    runner = await start_site(app, cfg.server.host, cfg.server.port, reuse_port=reuse_port)
    log.info("serving on http://%s:%s (callback at /wechat)", cfg.server.host, cfg.server.port)
    try:
        await (until or wait_for_signal)()
    finally:
        await runner.cleanup()
        await redis.aclose()


def run_serve(cfg: Config, workers: int, *, child: bool = False) -> int:
    """One process: run the app here. N processes: start N children sharing the port (SO_REUSEPORT)."""
    cfg.require_wechat()
    if workers <= 1 or child:
        server = start_embedded_if_needed(cfg)
        try:
            # uvloop by default (~10% less CPU per callback); AcceptAllSite keeps a burst of new
            # connections from waiting on libuv's one accept per loop turn.
            run_on_loop(cfg.server.event_loop, serve_forever(cfg, reuse_port=child))
        finally:
            if server:
                server.stop()
        return 0
    return _supervise(cfg, workers)


def _supervise(cfg: Config, workers: int) -> int:
    server = start_embedded_if_needed(cfg)
    metrics_dir = tempfile.mkdtemp(prefix="safebell-metrics-")
    conf = tempfile.NamedTemporaryFile("w", suffix=".toml", prefix="safebell-", delete=False)  # noqa: SIM115
    with conf:
        conf.write(dump_toml(cfg))  # the children get exactly this config (embedded Redis URL included)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOT__")}
    env["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    children = [
        subprocess.Popen([sys.executable, "-m", "bot", "--config", conf.name, "serve", "--child"], env=env)
        for _ in range(workers)
    ]
    log.info("serving with %d processes on http://%s:%s", workers, cfg.server.host, cfg.server.port)
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for c in children:
            if c.poll() is None:
                c.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = 0
    try:
        while True:
            alive = [c for c in children if c.poll() is None]
            if not alive:
                break
            for i, c in enumerate(children):
                if c.poll() is not None and not stopping:
                    log.error("serve process %s exited with %s; restarting it", c.pid, c.returncode)
                    children[i] = subprocess.Popen(
                        [sys.executable, "-m", "bot", "--config", conf.name, "serve", "--child"], env=env
                    )
            with contextlib.suppress(subprocess.TimeoutExpired):
                alive[0].wait(0.5)
    finally:
        for c in children:
            if c.poll() is None:
                c.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                c.wait(cfg.server.shutdown_timeout)
        os.unlink(conf.name)
        if server:
            server.stop()
    return code


def build_worker(
    cfg: Config, redis: Redis, api: WeChatAPI, *, name: str | None = None, app: web.Application | None = None
) -> Worker:
    """A worker with every job kind registered: customer-service texts, notice cards, and callbacks
    ``bot serve`` shed under load, answered here by customer-service message through ``app``'s
    callback (default: an app built as ``bot serve`` builds it, on the first such job)."""
    from bot.delivery.cards import CardSender
    from bot.delivery.outbox import INBOUND
    from bot.notices.service import NoticeService
    from bot.roster.store import RosterStore

    # Card jobs wait for pace tokens: take only what the pace sends in about a second (plus one), so
    # jobs finish quickly and a worker killed mid-way leaves at most that much to resend.
    d = cfg.delivery
    paced = int(d.pace_per_second // max(1, d.batch_size)) + 1
    worker = Worker(WorkerContext(cfg, redis, api), name=name, max_jobs=paced)
    cards = CardSender(cfg, redis, api, NoticeService(redis, cfg, RosterStore(redis)))
    callback: list[WeChatCallback] = []  # the app is built on the first shed callback, not before

    async def inbound(job: Job, _ctx: WorkerContext) -> None:
        if not callback:
            from bot.app import CALLBACK_KEY

            callback.append((app or create_app(cfg, redis, api=api))[CALLBACK_KEY])
        await callback[0].answer_deferred(job.fields.get("q", ""), job.fields.get("b", ""))

    async def send_cards(job: Job, _ctx: WorkerContext) -> None:
        await cards.run(job.fields)

    async def teacher_lists(job: Job, _ctx: WorkerContext) -> None:
        await cards.teacher_lists(job.fields)

    worker.register("cards", send_cards)
    worker.register("teacher_list", teacher_lists)
    worker.register(INBOUND, inbound)
    worker.every(1.0, cards.release_due)
    return worker


async def worker_forever(cfg: Config, *, burst: bool = False) -> int:
    redis = connect(cfg.redis.url)
    api = WeChatAPI(cfg.wechat, redis)
    worker = build_worker(cfg, redis, api)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, worker.stop)
    try:
        done = await worker.run(burst=burst)
        log.info("worker %s stopped after %d jobs", worker.name, done)
        return done
    finally:
        BATCHED.flush()  # the outcomes of callbacks it answered (shed ones) in its last second
        await api.close()
        await redis.aclose()


def run_worker(cfg: Config, *, burst: bool = False) -> int:
    cfg.require_wechat()
    server = start_embedded_if_needed(cfg)
    try:
        # the same loop as bot serve (server.event_loop): a worker is mostly HTTP calls to WeChat
        run_on_loop(cfg.server.event_loop, worker_forever(cfg, burst=burst))
    finally:
        if server:
            server.stop()
    return 0
