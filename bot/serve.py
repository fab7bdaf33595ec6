"""Running the processes: ``bot serve`` (one or N processes on one port), ``bot worker``, ``bot scheduler``."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable

from aiohttp import web

from bot.app import create_app
from bot.config import Config, dump_toml
from bot.delivery.worker import Job, Worker, WorkerContext
from bot.store.redis import Redis, connect, start_embedded_if_needed
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


async def start_site(app: web.Application, host: str, port: int, *, reuse_port: bool = False) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    # A burst of callbacks opens many connections at once: a short accept queue drops them, and
    # TCP retries after 1 s, 3 s... (the kernel caps this at net.core.somaxconn).
    site = web.TCPSite(runner, host, port, reuse_port=reuse_port, backlog=4096)
    await site.start()
    return runner


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
            # asyncio's own loop, not uvloop: uvloop is ~10% cheaper per callback, but its libuv accepts
            # one connection per loop turn (libuv#3696), so ~1,000 connections arriving while the loop
            # is busy wait seconds to be accepted (measured with `bot bench webhook`'s saturation run);
            # asyncio's loop accepts a backlog's worth at once.
            asyncio.run(serve_forever(cfg, reuse_port=child))
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
