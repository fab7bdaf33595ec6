"""A global pace for template sends: one token bucket in Redis shared by every worker process."""

from __future__ import annotations

import asyncio

from bot.store import keys
from bot.store.redis import Redis

# KEYS: bucket. ARGV: rate per second, burst, wanted. Returns {granted, wait_ms}.
# Time comes from Redis (TIME) so workers on different machines share one clock.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate, burst, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
tokens = math.min(burst, tokens + (now - ts) * rate / 1000)
local grant = math.min(want, math.floor(tokens))
tokens = tokens - grant
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], 60000)
local wait = 0
if grant < want then wait = math.ceil((1 - tokens) * 1000 / rate) end
return {grant, wait}
"""


class Pacer:
    def __init__(self, redis: Redis, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._take = redis.register_script(_TAKE)

    async def take(self, want: int) -> int:
        """Up to ``want`` tokens, waiting until at least one is granted; returns how many."""
        while True:
            granted, wait_ms = await self._take(keys=[keys.pace()], args=[self.rate, self.burst, want])
            if int(granted) > 0:
                return int(granted)
            await asyncio.sleep(max(1, int(wait_ms)) / 1000)
