"""The Redis connection: embedded server when ``redis.url`` is empty, else the configured one."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis

from bot.config import Config
from bot.store.embedded import EmbeddedRedis

log = logging.getLogger(__name__)

Redis = aioredis.Redis


def is_cluster_url(url: str) -> bool:
    """``redis://host:port/0?cluster=true``: a Redis Cluster (any node's address will do)."""
    query = urlsplit(url).query
    return any(part.lower() in ("cluster=true", "cluster=1", "cluster=yes") for part in query.split("&"))


def connect(url: str, **kwargs: Any) -> Redis:
    """A client on ``url`` (decoded strings; a pool sized for a busy callback process).

    With ``?cluster=true`` the client is a ``RedisCluster``: it offers the same commands, and every
    multi-key command, transaction and Lua script SafeBell sends touches keys of one hash tag, so the
    rest of the code does not know which it got.
    """
    kwargs.setdefault("decode_responses", True)
    if is_cluster_url(url):
        from redis.asyncio.cluster import RedisCluster

        parts = urlsplit(url)
        query = "&".join(p for p in parts.query.split("&") if not p.lower().startswith("cluster="))
        plain = urlunsplit((parts.scheme, parts.netloc, "", query, ""))
        kwargs.setdefault("max_connections", 256)
        return cast(Redis, RedisCluster.from_url(plain, **kwargs))
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
        from bot.store.autopipeline import close_bulk

        await close_bulk(client)
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


def is_cluster(r: Redis) -> bool:
    from redis.asyncio.cluster import RedisCluster

    return isinstance(r, RedisCluster)


async def run_script_many(
    r: Redis, script: Any, calls: list[tuple[list[str], list[Any]]], *, concurrency: int = 64
) -> list[Any]:
    """Run one Lua script for many key sets in few round trips.

    A plain Redis takes them in one pipeline. redis-py's cluster pipeline refuses scripts, so on a
    cluster they run concurrently, ``concurrency`` at a time, each routed to its keys' node.
    """
    if not calls:
        return []
    if not is_cluster(r):
        async with r.pipeline(transaction=False) as pipe:
            for ks, args in calls:
                await script(keys=ks, args=args, client=pipe)
            return list(await pipe.execute())
    out: list[Any] = []
    for i in range(0, len(calls), concurrency):
        out += await asyncio.gather(*(script(keys=ks, args=args) for ks, args in calls[i : i + concurrency]))
    return out
