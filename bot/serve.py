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
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from bot.app import CALLBACK_KEY, create_app
from bot.config import Config, dump_toml
from bot.delivery.worker import Job, Worker, WorkerContext
from bot.store.redis import Redis, connect, start_embedded_if_needed
from bot.web import ops
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
# accept() errors that mean "not now" (out of descriptors or memory, a client gone already): the
# connection waits in the queue, and the next readiness tries again
_ACCEPT_LATER = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.ECONNABORTED, errno.EPERM}


class _Listener:
    """What aiohttp's runner expects of a site's server: its sockets, and ``close``."""

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self.sockets = [sock]
        self._loop = loop

    def close(self) -> None:
        for sock in self.sockets:
            self._loop.remove_reader(sock.fileno())
            sock.close()
        self.sockets = []


class AcceptAllSite(web.BaseSite):
    """A TCP site that accepts every waiting connection each time the socket is readable.

    libuv (under uvloop) accepts one connection per loop turn (libuv#3696): when a thousand
    connections arrive while the loop is busy answering, the last of them waits a thousand turns,
    seconds, to be accepted. Here the accepting is ours, a backlog's worth at once on either loop,
    and each connection goes to aiohttp with ``loop.connect_accepted_socket``.
    """

    __slots__ = ("_host", "_pending", "_port", "_reuse_port")

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, reuse_port: bool = False,
                 backlog: int = BACKLOG) -> None:  # fmt: skip
        super().__init__(runner, backlog=backlog)
        self._host, self._port, self._reuse_port = host, port, reuse_port
        self._pending: set[asyncio.Task[Any]] = set()

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(self._host, self._port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self._reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
            sock.listen(self._backlog)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._port = sock.getsockname()[1]
        server = self._runner.server
        assert server is not None
        self._server = _Listener(sock, loop)  # type: ignore[assignment]  # sockets + close: all the runner uses
        loop.add_reader(sock.fileno(), self._accept, loop, sock, server)

    def _accept(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, factory: Callable[[], Any]) -> None:
        for _ in range(self._backlog):
            try:
                conn, _address = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _ACCEPT_LATER:
                    log.warning("accept: %s; the connection waits in the queue", exc)
                    return
                raise
            conn.setblocking(False)
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._track(loop.create_task(_connect(loop, factory, conn)))

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)


async def _connect(loop: asyncio.AbstractEventLoop, factory: Callable[[], Any], conn: socket.socket) -> None:
    try:
        await loop.connect_accepted_socket(factory, sock=conn)
    except OSError as exc:  # the client left before its transport was made
        log.debug("connection dropped on accept: %s", exc)
        conn.close()


class AppRunner(web.AppRunner):
    """aiohttp's runner, with WeChat's callbacks (POST to the callback path) handed straight to the
    callback: they skip the router and the middlewares, none of which does anything for them (the
    per-IP limit, the API's authentication and the console's guard are for other paths), which is
    ~5% of a callback's CPU. Their time is recorded as the timing middleware records it. Every
    other request goes through the application as usual."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        callback = self.app.get(CALLBACK_KEY)
        if callback is None:
            return server
        full, post, path, clock = server.request_handler, callback.handle_post, callback.path, time.perf_counter

        async def handle(request: web.BaseRequest) -> web.StreamResponse:
            if request.method != "POST" or request.raw_path.partition("?")[0] != path:
                return await full(request)
            started, status = clock(), 0
            try:
                response = await post(request)  # type: ignore[arg-type]  # a web.Request: the app's factory made it
                status = response.status
                return response
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
            with asyncio.Runner(loop_factory=lambda: new_event_loop(cfg.server.event_loop)) as runner:
                runner.run(serve_forever(cfg, reuse_port=child))
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
        await api.close()
        await redis.aclose()


def run_worker(cfg: Config, *, burst: bool = False) -> int:
    cfg.require_wechat()
    server = start_embedded_if_needed(cfg)
    try:
        asyncio.run(worker_forever(cfg, burst=burst))
    finally:
        if server:
            server.stop()
    return 0
