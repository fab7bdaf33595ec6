"""Console sessions: kept server-side in Redis, named by a random cookie, ended by idle or age.

The cookie carries only a random id (256 bits); Redis keeps the SHA-256 of it, so a copy of the
database holds no working cookie. A session ends after :data:`IDLE_TIMEOUT` without a request (the
key's TTL, renewed on each use) and at the latest :data:`ABSOLUTE_TIMEOUT` after login, whatever
the activity. Every login makes a new id (a cookie planted before login is worthless after it), and
logout, a password change or a removed teacher binding end it on the server, not just in the browser.

The cookie is HttpOnly (no script reads it), SameSite=Strict (no other site can make the browser
send it, not even by a link), Secure and ``__Host-`` prefixed when the console is served over
https (``server.public_url``), for the whole site.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from aiohttp import web

from bot import clock
from bot.store import keys
from bot.store.redis import Redis, hgetall
from bot.web import security as sec

IDLE_TIMEOUT = 30 * 60  # seconds without a request before the session ends
ABSOLUTE_TIMEOUT = 12 * 3600  # seconds after login when it ends anyway
COOKIE = "sb_c"
SECURE_COOKIE = "__Host-sb_c"  # the browser accepts it only from https, for "/", without a Domain
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    key: str  # SHA-256 of the cookie value
    user: str  # "acct:<username>" or "wx:<openid>"
    created: float
    nonce: str  # CSRF tokens are bound to it (and die with the session)

    def csrf(self, signing_key: bytes) -> str:
        return sec.csrf_token(sec.Session(self.user, self.nonce), "console", signing_key)

    def check_csrf(self, signing_key: bytes, token: str | None) -> bool:
        return sec.check_csrf(sec.Session(self.user, self.nonce), "console", signing_key, token)


def cookie_name(secure: bool) -> str:
    return SECURE_COOKIE if secure else COOKIE


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


class SessionStore:
    def __init__(self, redis: Redis, *, idle: int = IDLE_TIMEOUT, absolute: int = ABSOLUTE_TIMEOUT) -> None:
        self.r = redis
        self.idle = idle
        self.absolute = absolute

    async def start(self, user: str, *, now: float | None = None) -> tuple[str, ConsoleSession]:
        """A new session for ``user``: (cookie value, session). Always a fresh id."""
        now = clock.now() if now is None else now
        token = secrets.token_urlsafe(32)
        session = ConsoleSession(_hash(token), user, now, secrets.token_urlsafe(12))
        key = keys.console_session(session.key)
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.hset(key, mapping={"user": user, "created": repr(now), "nonce": session.nonce})
            pipe.expire(key, min(self.idle, self.absolute))
            pipe.sadd(keys.console_user_sessions(user), session.key)
            pipe.expire(keys.console_user_sessions(user), self.absolute)
            await pipe.execute()
        return token, session

    async def load(self, token: str | None, *, now: float | None = None) -> ConsoleSession | None:
        """The live session behind a cookie value (its idle time starts again), or None."""
        if not token or not _TOKEN.match(token):
            return None
        now = clock.now() if now is None else now
        key = keys.console_session(_hash(token))
        raw = await hgetall(self.r, key)
        if not raw or not raw.get("user") or not raw.get("nonce"):
            return None
        created = float(raw.get("created") or 0)
        left = created + self.absolute - now
        if left <= 0:
            await self.r.delete(key)
            return None
        await self.r.expire(key, max(1, int(min(self.idle, left))))
        return ConsoleSession(_hash(token), raw["user"], created, raw["nonce"])

    async def end(self, token: str | None) -> str:
        """End the session behind a cookie value; returns its user ("" if there was none)."""
        if not token or not _TOKEN.match(token):
            return ""
        key = keys.console_session(_hash(token))
        user = await self.r.hget(key, "user")
        await self.r.delete(key)
        if user:
            await self.r.srem(keys.console_user_sessions(str(user)), _hash(token))
        return str(user or "")

    async def end_user(self, user: str) -> int:
        """End every session of ``user`` (after a password change or a lost binding)."""
        members = await self.r.smembers(keys.console_user_sessions(user))
        names = [keys.console_session(str(m)) for m in members]
        ended = int(await self.r.delete(*names)) if names else 0
        await self.r.delete(keys.console_user_sessions(user))
        return ended


def set_cookie(response: web.StreamResponse, token: str, *, secure: bool, max_age: int) -> None:
    response.set_cookie(
        cookie_name(secure), token, max_age=max_age, path="/", httponly=True, samesite="Strict", secure=secure
    )


def clear_cookie(response: web.StreamResponse, *, secure: bool) -> None:
    response.del_cookie(cookie_name(secure), path="/", secure=secure, httponly=True, samesite="Strict")
