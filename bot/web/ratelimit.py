"""Rate limits: per client IP on the pages, the console and the API; per openid in the chat.

Fixed one-minute windows counted in Redis, so every process and replica shares one count. The
WeChat callback is not limited per IP (WeChat's servers are few and carry every parent's message);
it is limited per openid instead, by the chat engine.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from bot.config import ServerConfig
from bot.store import keys
from bot.store.redis import Redis

# KEYS: counter. ARGV: window seconds. Returns the count in this window.
_HIT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
"""

LIMITED_PREFIXES = ("/n/", "/oauth/", "/api/", "/console")


class RateLimiter:
    def __init__(self, redis: Redis) -> None:
        self._hit = redis.register_script(_HIT)

    async def allow(self, kind: str, who: str, limit: int, window: int = 60) -> bool:
        """Count one hit for ``who``; False once ``limit`` hits were counted in this window."""
        if limit <= 0:
            return True
        bucket = int(time.time()) // window
        count = int(await self._hit(keys=[keys.rate_counter(kind, who, bucket)], args=[window + 1]))
        return count <= limit


def client_ip(request: web.Request, cfg: ServerConfig) -> str:
    """The client's address; behind our own proxy (server.trust_forwarded) the first X-Forwarded-For hop."""
    if cfg.trust_forwarded:
        forwarded = request.headers.get("X-Forwarded-For", "")
        first = forwarded.split(",")[0].strip()
        if first:
            return first[:64]
    return request.remote or "unknown"


def ip_limit_middleware(redis: Redis, cfg: ServerConfig) -> Middleware:
    limiter = RateLimiter(redis)

    @web.middleware
    async def limit(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if cfg.rate_per_ip > 0 and request.path.startswith(LIMITED_PREFIXES):
            try:
                allowed = await limiter.allow("ip", client_ip(request, cfg), cfg.rate_per_ip)
            except Exception:  # a Redis hiccup must not lock everyone out
                allowed = True
            if not allowed:
                return web.Response(
                    status=429,
                    text="请求太频繁，请稍等一分钟再试。",
                    headers={"Retry-After": "60"},
                    content_type="text/plain",
                )
        return await handler(request)

    return limit


class PerUserLimit:
    """Messages per openid per minute, counted in this process (no Redis round trip on the hot path).

    With N serve processes a flood spread over all of them gets N times the limit before it is
    slowed: still a bound, at no cost to ordinary parents. Events (WeChat's own reports) are never
    limited.
    """

    def __init__(self, per_minute: int, max_users: int = 100_000) -> None:
        self.per_minute = per_minute
        self.max_users = max_users
        self._window = 0
        self._counts: dict[str, int] = {}

    def allow(self, openid: str, now: float | None = None) -> bool:
        if self.per_minute <= 0:
            return True
        window = int((time.time() if now is None else now) // 60)
        if window != self._window or len(self._counts) > self.max_users:
            self._window, self._counts = window, {}
        n = self._counts.get(openid, 0) + 1
        self._counts[openid] = n
        return n <= self.per_minute
