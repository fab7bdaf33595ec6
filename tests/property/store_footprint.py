"""How much is in Redis and how many writes it has taken: a refused input must move neither.

Works on one Redis and on a Redis Cluster (``make test-cluster``): summed over the primaries.
"""

from __future__ import annotations

from typing import Any

from bot.store.redis import Redis, is_cluster


def _total(reply: Any, field: str | None = None) -> int:
    """A reply of one node, or {node: reply} of several, summed (optionally one field of INFO)."""
    replies = reply.values() if isinstance(reply, dict) and (field is None or field not in reply) else [reply]
    return sum(int(r[field] if field else r) for r in replies)


async def footprint(r: Redis) -> tuple[int, int]:
    """(keys, writes so far). The write counter (INFO's rdb_changes_since_last_save) only falls when
    Redis saves a snapshot, so "nothing written" is: keys equal and writes not higher."""
    if is_cluster(r):
        from redis.asyncio.cluster import RedisCluster

        nodes = RedisCluster.PRIMARIES
        size = await r.dbsize(target_nodes=nodes)  # type: ignore[call-arg]
        info = await r.info("persistence", target_nodes=nodes)  # type: ignore[call-arg]
        return _total(size), _total(info, "rdb_changes_since_last_save")
    async with r.pipeline(transaction=False) as p:
        p.dbsize()
        p.info("persistence")
        size, info = await p.execute()
    return int(size), int(info["rdb_changes_since_last_save"])
