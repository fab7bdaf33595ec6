"""The Redis connection: embedded server when ``redis.url`` is empty, else the configured one."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import redis.asyncio as aioredis

from bot.config import Config
from bot.store.embedded import EmbeddedRedis

log = logging.getLogger(__name__)

Redis = aioredis.Redis


def connect(url: str, **kwargs: Any) -> Redis:
    """A client on ``url`` (decoded strings; a pool sized for a busy callback process)."""
    kwargs.setdefault("decode_responses", True)
    kwargs.setdefault("max_connections", 256)
    kwargs.setdefault("health_check_interval", 30)
    return aioredis.Redis.from_url(url, **kwargs)


def start_embedded_if_needed(cfg: Config, *, appendonly: bool = True) -> EmbeddedRedis | None:
    """Start the embedded server when no URL is configured, and point ``cfg.redis.url`` at it."""
    if cfg.redis.url:
        return None
    server = EmbeddedRedis(cfg.redis.data_dir, binary=cfg.redis.server_binary, appendonly=appendonly)
    cfg.redis.url = server.start()
    return server


@asynccontextmanager
async def redis_from_config(cfg: Config) -> AsyncIterator[Redis]:
    """Connect (starting the embedded server if needed), yield, close (and stop what we started)."""
    server = start_embedded_if_needed(cfg)
    client = connect(cfg.redis.url)
    try:
        yield client
    finally:
        await client.aclose()
        if server is not None:
            server.stop()


# redis-py types every reply as ``bytes | str``; our clients decode (decode_responses=True), so these
# narrow the types once instead of casting at every call.
async def get(r: Redis, key: str) -> str | None:
    return cast(str | None, await r.get(key))


async def hget(r: Redis, key: str, field: str) -> str | None:
    return cast(str | None, await r.hget(key, field))


async def hgetall(r: Redis, key: str) -> dict[str, str]:
    return cast(dict[str, str], await r.hgetall(key))


async def hmget(r: Redis, key: str, fields: list[str]) -> list[str | None]:
    return cast(list[str | None], await r.hmget(key, fields))
