"""``bot scheduler``: APScheduler (3.x, asyncio) running the periodic work of the system.

Built in: keep the shared access_token fresh (WeChat asks for one central refresher; the API client
already refreshes early under a Redis lock, so running this in two schedulers is harmless).
Capabilities add their jobs (campaign firings, follow-up sweeps) through ``JOBS``; each job claims
its firing in Redis so that several scheduler processes fire it once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.config import Config
from bot.serve import wait_for_signal
from bot.store.redis import Redis, connect, start_embedded_if_needed
from bot.wechat.client import WeChatAPI
from bot.wechat.errors import WeChatError

log = logging.getLogger(__name__)


@dataclass
class SchedulerContext:
    config: Config
    redis: Redis
    api: WeChatAPI
    scheduler: AsyncIOScheduler


JobSetup = Callable[[SchedulerContext], None]
JOBS: list[JobSetup] = []


async def keep_token_fresh(api: WeChatAPI) -> None:
    try:
        await api.get_token()
    except WeChatError as exc:
        log.error("could not refresh the access_token: %s (check wechat.app_id / wechat.app_secret)", exc)


def build_scheduler(cfg: Config, redis: Redis, api: WeChatAPI) -> SchedulerContext:
    scheduler = AsyncIOScheduler(timezone=cfg.scheduler.timezone)
    ctx = SchedulerContext(cfg, redis, api, scheduler)
    scheduler.add_job(
        keep_token_fresh,
        "interval",
        seconds=cfg.scheduler.token_check_interval,
        args=[api],
        id="token",
        coalesce=True,
        max_instances=1,
        next_run_time=None,
    )
    from bot.notices.followup import sweep
    from bot.notices.service import NoticeService
    from bot.roster.store import RosterStore

    notices = NoticeService(redis, cfg, RosterStore(redis))

    async def follow_up() -> None:
        await notices.resume_stale_plans()
        await sweep(notices)

    scheduler.add_job(follow_up, "interval", seconds=cfg.scheduler.sweep_interval, id="followups",
                      coalesce=True, max_instances=1)  # fmt: skip
    from bot.campaigns.runner import schedule as schedule_campaigns

    schedule_campaigns(ctx)
    from bot.privacy import retention_sweep

    async def retention() -> None:
        await retention_sweep(redis, cfg)

    hour, minute = (int(x) for x in cfg.privacy.retention_at.split(":"))
    scheduler.add_job(retention, "cron", hour=hour, minute=minute, id="retention", coalesce=True, max_instances=1)
    for setup in JOBS:
        setup(ctx)
    return ctx


async def scheduler_forever(cfg: Config) -> None:
    redis = connect(cfg.redis.url)
    api = WeChatAPI(cfg.wechat, redis)
    ctx = build_scheduler(cfg, redis, api)
    ctx.scheduler.start()
    log.info("scheduler running %d jobs", len(ctx.scheduler.get_jobs()))
    try:
        await keep_token_fresh(api)
        await wait_for_signal()
    finally:
        ctx.scheduler.shutdown(wait=False)
        await api.close()
        await redis.aclose()


def run_scheduler(cfg: Config) -> int:
    cfg.require_wechat()
    server = start_embedded_if_needed(cfg)
    try:
        asyncio.run(scheduler_forever(cfg))
    finally:
        if server:
            server.stop()
    return 0
