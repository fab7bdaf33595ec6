"""Small pieces the capabilities' command lines share."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeAlias

from bot.config import Config

if TYPE_CHECKING:
    from bot.store.redis import Redis

    SubParsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


def report_group(sub: SubParsers, common: argparse.ArgumentParser) -> SubParsers:
    """The ``report`` command's sub-commands, shared by every capability that reports."""
    existing = sub.choices.get("report")
    if existing is not None:
        for action in existing._actions:
            if isinstance(action, argparse._SubParsersAction):
                return action
    parser = sub.add_parser("report", parents=[common], help="reports: lessons, notices, ...")
    return parser.add_subparsers(dest="report", required=True, metavar="WHAT")


def run_with_redis(cfg: Config, work: Callable[[Redis], Awaitable[int]]) -> int:
    """Run one command's work on the configured Redis (embedded if none); exit 2 if Redis fails."""
    from redis.exceptions import RedisError

    from bot.store.redis import redis_from_config

    async def main() -> int:
        async with redis_from_config(cfg) as r:
            return await work(r)

    try:
        return asyncio.run(main())
    except RedisError as exc:
        print(f"redis: {exc} (check redis.url / BOT__REDIS__URL)", file=sys.stderr)
        return 2
