"""The outbox: one Redis Stream read by every worker through one consumer group.

An entry is a job: ``k`` (its kind) plus string fields. Producers only append; workers acknowledge
and delete what they finished, so the stream holds only work not yet done.
"""

from __future__ import annotations

from collections.abc import Mapping

from bot.store import keys
from bot.store.autopipeline import Autopipeline
from bot.store.redis import Redis

INBOUND = "inbound"  # a callback shed under load: bot worker verifies and answers it (bot/serve.py)


async def enqueue(redis: Redis, kind: str, fields: Mapping[str, str]) -> str:
    entry = {"k": kind, **fields}
    return str(await redis.xadd(keys.outbox(), entry))  # type: ignore[arg-type]


async def enqueue_text(redis: Redis, openid: str, text: str) -> str:
    """A customer-service text (e.g. the answer of a handler that overran the reply budget)."""
    return await enqueue(redis, "cs_text", {"to": openid, "text": text})


async def enqueue_inbound(pipe: Autopipeline, query: str, body: str) -> None:
    """A callback as it came (query string and body), for ``bot worker`` to verify and answer.

    Sent on the callback's shared connection: shedding must cost far less than answering.
    """
    await pipe.execute("XADD", keys.outbox(), "*", "k", INBOUND, "q", query, "b", body)


async def pending_count(redis: Redis) -> int:
    """Jobs not yet acknowledged (waiting or in flight)."""
    length = int(await redis.xlen(keys.outbox()))
    return length
