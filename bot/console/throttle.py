"""Login lockout: too many wrong passwords for one account, or from one address, and logins stop for a while.

Failures are counted per account name (whether it exists or not, so the lockout tells nothing about
which names exist) and per client address, in a window that starts at the first failure. At
:data:`ACCOUNT_MAX_FAILURES` (or :data:`IP_MAX_FAILURES`) further attempts are refused without
checking the password until :data:`LOCKOUT_SECONDS` have passed. A successful login clears the
account's count (not the address's: one right guess must not reset a guessing run from there).
``bot admin passwd`` clears an account's lock.

The client's address is the one the per-IP rate limits use (``bot.web.ratelimit.client_ip``: the
connection's, or behind our own proxy with ``server.trust_forwarded`` the forwarded one).
"""

from __future__ import annotations

from bot.store import keys
from bot.store.redis import Redis

ACCOUNT_MAX_FAILURES = 5
IP_MAX_FAILURES = 20
WINDOW_SECONDS = 15 * 60
LOCKOUT_SECONDS = 15 * 60


class LoginThrottle:
    def __init__(
        self,
        redis: Redis,
        *,
        account_max: int = ACCOUNT_MAX_FAILURES,
        ip_max: int = IP_MAX_FAILURES,
        window: int = WINDOW_SECONDS,
        lockout: int = LOCKOUT_SECONDS,
    ) -> None:
        self.r = redis
        self.account_max = account_max
        self.ip_max = ip_max
        self.window = window
        self.lockout = lockout

    def _keys(self, username: str, address: str) -> tuple[str, str]:
        return keys.login_failures("a", username[:64]), keys.login_failures("ip", address[:64])

    async def locked(self, username: str, address: str) -> bool:
        by_account, by_address = self._keys(username, address)
        async with self.r.pipeline(transaction=False) as pipe:  # two keys, two slots on a cluster
            pipe.get(by_account)
            pipe.get(by_address)
            account, ip = await pipe.execute()
        return int(account or 0) >= self.account_max or int(ip or 0) >= self.ip_max

    async def failed(self, username: str, address: str) -> bool:
        """Count one failure; True when this one locks the account or the address."""
        locked = False
        for key, limit in zip(self._keys(username, address), (self.account_max, self.ip_max), strict=True):
            # The window starts at the first failure (SET NX EX, then INCR keeps the TTL).
            async with self.r.pipeline(transaction=True) as pipe:
                pipe.set(key, 0, ex=self.window, nx=True)
                pipe.incr(key)
                _, count = await pipe.execute()
            if int(count) >= limit:
                await self.r.expire(key, self.lockout)
                locked = True
        return locked

    async def succeeded(self, username: str) -> None:
        await self.r.delete(keys.login_failures("a", username[:64]))
