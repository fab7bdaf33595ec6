"""``bot worker``: reads the outbox through one consumer group and runs each job's handler.

Like arq, it says plainly that a job may run more than once (a worker killed after the WeChat call
and before the acknowledgement); job handlers that call WeChat carry their own idempotency keys.
Entries a dead worker left pending are reclaimed after ``worker.reclaim_idle`` seconds.
Shutdown: stop reading, let the jobs in flight finish (acknowledgements under ``asyncio.shield``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis.exceptions

from bot.config import Config
from bot.store import keys
from bot.store.redis import Redis
from bot.wechat.client import WeChatAPI
from bot.wechat.errors import WeChatError
from bot.wechat.protocol import mask_openid

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    kind: str
    fields: dict[str, str]


JobHandler = Callable[[Job, "WorkerContext"], Awaitable[None]]


@dataclass(slots=True)
class WorkerContext:
    config: Config
    redis: Redis
    api: WeChatAPI


async def send_cs_text(job: Job, ctx: WorkerContext) -> None:
    openid, text = job.fields.get("to", ""), job.fields.get("text", "")
    if not openid or not text:
        log.warning("dropping malformed cs_text job %s", job.id)
        return
    try:
        await ctx.api.send_text(openid, text)
    except WeChatError as exc:
        # 45015/45047 (window closed, quota used), 43004 (unfollowed): nothing more we can do for a
        # chat answer; the client already retried what is retryable.
        log.warning("customer-service text to %s not sent: %s", mask_openid(openid), exc)


DEFAULT_HANDLERS: dict[str, JobHandler] = {"cs_text": send_cs_text}


class Worker:
    def __init__(
        self,
        ctx: WorkerContext,
        handlers: dict[str, JobHandler] | None = None,
        *,
        name: str | None = None,
        max_jobs: int | None = None,
    ) -> None:
        self.ctx = ctx
        # Jobs taken at once: worker.concurrency, or fewer when the caller knows more (cards: what the
        # pace lets through in about a second, so a killed worker leaves little half-done work).
        self.max_jobs = max(1, min(ctx.config.worker.concurrency, max_jobs or ctx.config.worker.concurrency))
        self.handlers = dict(DEFAULT_HANDLERS if handlers is None else handlers)
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self._stopping = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._periodic: list[tuple[float, Callable[[], Awaitable[object]]]] = []
        self.done = 0

    def register(self, kind: str, handler: JobHandler) -> None:
        self.handlers[kind] = handler

    def every(self, seconds: float, func: Callable[[], Awaitable[object]]) -> None:
        """Run ``func`` every ``seconds`` while the worker runs (e.g. releasing held entries)."""
        self._periodic.append((seconds, func))

    def stop(self) -> None:
        self._stopping.set()

    async def _tick(self, seconds: float, func: Callable[[], Awaitable[object]]) -> None:
        while not self._stopping.is_set():
            try:
                await func()
            except Exception:
                log.exception("periodic task %s failed; trying again in %.0f s", func, seconds)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), seconds)

    async def ensure_group(self) -> None:
        try:
            await self.ctx.redis.xgroup_create(keys.outbox(), keys.OUTBOX_GROUP, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self, *, burst: bool = False) -> int:
        """Process jobs until stopped (or, with ``burst``, until the outbox is empty). Returns jobs done."""
        await self.ensure_group()
        ticks = [] if burst else [asyncio.create_task(self._tick(s, f)) for s, f in self._periodic]
        try:
            return await self._loop(burst)
        finally:
            self._stopping.set()
            for t in ticks:
                t.cancel()

    async def _loop(self, burst: bool) -> int:
        cfg = self.ctx.config.worker
        sem = asyncio.Semaphore(self.max_jobs)
        r = self.ctx.redis
        reclaim_ms = int(cfg.reclaim_idle * 1000)
        while not self._stopping.is_set():
            entries: list[tuple[str, dict[str, str] | None]] = []
            # Entries a crashed worker left unacknowledged come first.
            claimed: Any = await r.xautoclaim(
                keys.outbox(), keys.OUTBOX_GROUP, self.name, reclaim_ms, "0-0", count=min(cfg.batch, self.max_jobs)
            )
            entries.extend(claimed[1])
            if not entries:
                block = None if burst else cfg.block_ms
                resp: Any = await r.xreadgroup(
                    keys.OUTBOX_GROUP, self.name, {keys.outbox(): ">"}, count=min(cfg.batch, self.max_jobs), block=block
                )
                for _stream, items in resp or []:
                    entries.extend(items)
            if not entries:
                if burst and not self._inflight:
                    break
                if burst:
                    await asyncio.wait(list(self._inflight), return_when=asyncio.FIRST_COMPLETED)
                continue
            for entry_id, fields in entries:
                if fields is None:  # deleted while pending
                    await r.xack(keys.outbox(), keys.OUTBOX_GROUP, entry_id)
                    continue
                await sem.acquire()
                job = Job(entry_id, fields.get("k", ""), fields)
                task = asyncio.create_task(self._run_one(job, sem))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=self.ctx.config.server.shutdown_timeout)
        return self.done

    async def _run_one(self, job: Job, sem: asyncio.Semaphore) -> None:
        try:
            handler = self.handlers.get(job.kind)
            if handler is None:
                log.error("no handler for job kind %r (%s); leaving it acknowledged", job.kind, job.id)
            else:
                try:
                    await handler(job, self.ctx)
                except Exception:
                    log.exception("job %s (%s) failed; it stays pending and will be retried", job.id, job.kind)
                    return
            await asyncio.shield(self._ack(job.id))
            self.done += 1
        finally:
            sem.release()

    async def _ack(self, entry_id: str) -> None:
        async with self.ctx.redis.pipeline(transaction=True) as p:
            p.xack(keys.outbox(), keys.OUTBOX_GROUP, entry_id)
            p.xdel(keys.outbox(), entry_id)
            await p.execute()
