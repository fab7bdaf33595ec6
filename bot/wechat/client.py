"""The async WeChat API client, with one access_token shared by every process through Redis.

wechatpy's client is synchronous and refreshes its token per process, which is how several
processes end up invalidating each other's tokens (wechatpy #334/#684). Here:

* the token lives in Redis (``keys.access_token``) with a TTL ending ``token_refresh_margin``
  seconds before WeChat's expiry, plus a short in-process copy so a hot process does not read
  Redis on every call;
* a refresh happens under a Redis lock (``SET NX PX``) so any number of processes fetch ONE token;
  losers poll briefly and read the winner's token; an ``asyncio.Lock`` keeps one process's
  coroutines to at most one Redis read or refresh at a time;
* on 40001/40014/42001 the caller refreshes only if the cached token is still the bad one
  (compare-and-refresh), so a hundred calls failing together cause one refresh, then retry once.

Everything goes through ``cfg.api_base`` / ``cfg.oauth_base``, so the emulator can stand in.
Secrets and tokens are never logged; openids only through :func:`mask_openid`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, urlencode

import aiohttp

from bot import metrics
from bot.config import WeChatConfig
from bot.store import keys
from bot.store.redis import Redis
from bot.wechat.errors import (
    TOKEN_ERRCODES,
    BusyError,
    TokenInvalidError,
    WeChatAPIError,
    WeChatTransportError,
    error_for,
)
from bot.wechat.protocol import mask_openid

log = logging.getLogger(__name__)

# How long a process trusts its own copy before reading Redis again. Short, so a token refreshed
# by another process is picked up soon even without a 40001; long enough that a busy process reads
# Redis a few times a minute, not once per call.
LOCAL_TOKEN_TTL = 30.0
# How often a process that lost the refresh lock looks for the winner's token.
LOCK_POLL_INTERVAL = 0.02
# After WeChat refused to replace a bad token (force_refresh used too recently), calls still holding
# that token fail at once for this long instead of each asking WeChat again.
REFUSED_REFRESH_HOLD = 1.0
# WeChat serves showqrcode from mp.weixin.qq.com, not from the API host; any other api_base (the
# emulator, a proxy) serves it itself.
DEFAULT_API_BASE = "https://api.weixin.qq.com"
REAL_SHOWQRCODE_BASE = "https://mp.weixin.qq.com"

# Release the lock only if we still own it (it may have expired and been taken by another process).
_RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(frozen=True)
class QRCode:
    """A parametric QR code: show ``url`` (its content) or the image at ``qrcode_image_url(ticket)``."""

    ticket: str
    url: str
    expire_seconds: int | None  # None: permanent


@dataclass(frozen=True)
class _Token:
    value: str
    valid_until: float  # time.monotonic() after which the local copy must be re-read


class WeChatAPI:
    """One WeChat account's API. Share one instance per process; it is safe for concurrent use."""

    def __init__(self, cfg: WeChatConfig, redis: Redis, session: aiohttp.ClientSession | None = None) -> None:
        self._cfg = cfg
        self._redis = redis
        self._session = session
        self._own_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=cfg.api_timeout)
        self._token: _Token | None = None
        self._token_lock = asyncio.Lock()
        self._refused: tuple[str, float] | None = None  # (bad token, monotonic time until)
        self._release = redis.register_script(_RELEASE_LOCK)
        self._rng = random.Random()

    # -- lifecycle ----------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session if this client created it (a session passed in stays open)."""
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        # Created lazily: an aiohttp session must be made inside the running event loop.
        if self._session is None:
            # aiohttp's default pool holds 100 connections: at WeChat's ~50 ms per call that caps a
            # worker at 2,000 sends/s, so the pool follows wechat.api_connections.
            connector = aiohttp.TCPConnector(limit=self._cfg.api_connections, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(timeout=self._timeout, connector=connector)
        return self._session

    # -- access_token -------------------------------------------------------------------------
    async def get_token(self) -> str:
        """The current access_token: local copy, else Redis, else a refresh (one across all processes)."""
        local = self._token
        if local is not None and time.monotonic() < local.valid_until:
            return local.value
        async with self._token_lock:
            local = self._token
            if local is not None and time.monotonic() < local.valid_until:
                return local.value  # another coroutine re-read it while we waited
            cached = await self._read_shared()
            if cached is not None:
                return cached
            return await self._refresh_shared(bad_token=None)

    async def refresh_token(self, bad_token: str | None) -> str:
        """A token other than ``bad_token``: refreshes only if the cached one is still the bad one.

        This is the compare-and-refresh that makes N calls failing with 40001 together cause one
        refresh: the first refreshes, the rest find a different token already cached.
        """
        async with self._token_lock:
            local = self._token
            if local is not None and local.value != bad_token and time.monotonic() < local.valid_until:
                return local.value
            cached = await self._read_shared()
            if cached is not None and cached != bad_token:
                return cached
            refused = self._refused
            if refused is not None and refused[0] == bad_token and time.monotonic() < refused[1]:
                raise TokenInvalidError(40001, "access_token refused; WeChat would not replace it just now")
            try:
                return await self._refresh_shared(bad_token=bad_token)
            except TokenInvalidError:
                if bad_token is not None:
                    self._refused = (bad_token, time.monotonic() + REFUSED_REFRESH_HOLD)
                raise

    async def _read_shared(self) -> str | None:
        """Read the Redis copy and remember it locally for at most LOCAL_TOKEN_TTL (and its TTL)."""
        key = keys.access_token(self._cfg.app_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.get(key)
            pipe.pttl(key)
            value, pttl = await pipe.execute()
        if not value:
            return None
        self._remember(str(value), pttl / 1000 if pttl and pttl > 0 else LOCAL_TOKEN_TTL)
        return str(value)

    def _remember(self, value: str, ttl: float) -> None:
        self._token = _Token(value, time.monotonic() + min(LOCAL_TOKEN_TTL, ttl))

    def _lock_ttl(self) -> float:
        """Long enough for the winner to finish every retry of the token request."""
        c = self._cfg
        backoff = sum(c.api_backoff * 2**i * 1.5 for i in range(c.api_retries))
        return float(2 * (c.api_timeout * (c.api_retries + 1) + backoff) + 1.0)

    async def _refresh_shared(self, bad_token: str | None) -> str:
        """Fetch a new token under the Redis lock, or wait for whoever holds it. Token lock held."""
        lock_key = keys.access_token_lock(self._cfg.app_id)
        lock_ttl = self._lock_ttl()
        owner = secrets.token_hex(8)
        deadline = time.monotonic() + lock_ttl + 1.0
        while True:
            if await self._redis.set(lock_key, owner, nx=True, px=int(lock_ttl * 1000)):
                try:
                    # Someone may have refreshed between our read and taking the lock.
                    cached = await self._read_shared()
                    if cached is not None and cached != bad_token:
                        return cached
                    return await self._fetch_and_store(bad_token)
                finally:
                    await self._release(keys=[lock_key], args=[owner])
            await asyncio.sleep(LOCK_POLL_INTERVAL)
            cached = await self._read_shared()
            if cached is not None and cached != bad_token:
                return cached
            if time.monotonic() > deadline:
                raise WeChatTransportError("timed out waiting for another process's access_token refresh")

    async def _fetch_and_store(self, bad_token: str | None) -> str:
        token, expires_in = await self._request_token(force=False)
        if bad_token is not None and token == bad_token:
            # stable_token hands back the same token while WeChat considers it valid; only a
            # force_refresh replaces it, and WeChat allows one per 30 s (20 a day).
            forced_key = keys.access_token_forced(self._cfg.app_id)
            interval = max(1, self._cfg.force_refresh_interval)
            if not await self._redis.set(forced_key, str(int(time.time())), nx=True, ex=interval):
                raise TokenInvalidError(
                    40001,
                    f"access_token refused and force_refresh was used less than {interval} s ago "
                    "(wechat.force_refresh_interval)",
                )
            token, expires_in = await self._request_token(force=True)
        margin = self._cfg.token_refresh_margin
        # Refresh `margin` seconds early; if WeChat reports less time left than that (stable_token
        # may report the remaining lifetime), still keep it for half of what is left.
        ttl = expires_in - margin if expires_in > 2 * margin else max(1, expires_in // 2)
        await self._redis.set(keys.access_token(self._cfg.app_id), token, ex=ttl)
        self._remember(token, ttl)
        return token

    async def _request_token(self, *, force: bool) -> tuple[str, int]:
        body = {
            "grant_type": "client_credential",
            "appid": self._cfg.app_id,
            "secret": self._cfg.app_secret,
            "force_refresh": force,
        }
        data = await self._call("POST", "/cgi-bin/stable_token", json=body, auth=False)
        metrics.TOKEN_REFRESHES.labels(forced=str(force).lower()).inc()
        log.info("access_token fetched for %s (force_refresh=%s)", self._cfg.app_id, force)
        try:
            return str(data["access_token"]), int(data["expires_in"])
        except (KeyError, TypeError, ValueError) as exc:
            raise WeChatTransportError("stable_token answer lacks access_token/expires_in") from exc

    # -- the one place that talks HTTP --------------------------------------------------------
    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
        auth: bool = True,
    ) -> dict[str, Any]:
        """Call ``{api_base}{path}``; retry -1 and transport errors, refresh a bad token once.

        Retrying a POST after a transport error may repeat an action WeChat already took: template
        sends carry ``client_msg_id`` so WeChat drops the duplicate.
        """
        token = await self.get_token() if auth else None
        refreshed = False
        attempt = 0
        while True:
            query = dict(params or {})
            if token is not None:
                query["access_token"] = token
            try:
                data = await self._request(method, path, query, json)
            except WeChatTransportError as exc:
                metrics.API_ERRORS.labels(code="transport").inc()
                if attempt >= self._cfg.api_retries:
                    raise
                delay = self._backoff_delay(attempt)
                log.warning("WeChat %s transport error (%s), retrying in %.3f s", path, exc, delay)
                await asyncio.sleep(delay)
                attempt += 1
                continue
            errcode = _errcode(data)
            if errcode == 0:
                return data
            metrics.API_ERRORS.labels(code=str(errcode)).inc()
            errmsg = str(data.get("errmsg", ""))
            if token is not None and errcode in TOKEN_ERRCODES and not refreshed:
                refreshed = True
                token = await self.refresh_token(token)
                continue
            error = error_for(errcode, errmsg)
            if isinstance(error, BusyError) and attempt < self._cfg.api_retries:
                delay = self._backoff_delay(attempt)
                log.info("WeChat %s busy (-1), retrying in %.3f s", path, delay)
                await asyncio.sleep(delay)
                attempt += 1
                continue
            raise error

    async def _request(
        self, method: str, path: str, query: dict[str, str], json: dict[str, Any] | None
    ) -> dict[str, Any]:
        metrics.API_CALLS.labels(endpoint=path).inc()
        url = self._cfg.api_base.rstrip("/") + path
        try:
            async with self._http().request(method, url, params=query, json=json, timeout=self._timeout) as resp:
                if resp.status >= 500:
                    raise WeChatTransportError(f"HTTP {resp.status} from {path}", status=resp.status)
                try:
                    # WeChat sometimes labels JSON as text/plain: do not insist on the content type.
                    data = await resp.json(content_type=None)
                except ValueError as exc:
                    raise WeChatTransportError(
                        f"non-JSON answer (HTTP {resp.status}) from {path}", status=resp.status
                    ) from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise WeChatTransportError(f"{type(exc).__name__} calling {path}") from exc
        if not isinstance(data, dict):
            raise WeChatTransportError(f"unexpected JSON from {path}")
        return data

    def _backoff_delay(self, attempt: int) -> float:
        """Seconds to wait before retry ``attempt + 1``: ``api_backoff × 2^attempt`` times 0.5–1.5.

        Exponential with jitter, so many clients hit by the same burst do not retry in step. The
        callers log it, so an operator (and a test) sees what the client waited for."""
        return self._cfg.api_backoff * (2.0**attempt) * (0.5 + self._rng.random())

    # -- messages -----------------------------------------------------------------------------
    async def send_template(
        self,
        openid: str,
        template_id: str,
        data: dict[str, str],
        *,
        url: str | None = None,
        client_msg_id: str | None = None,
    ) -> int:
        """Send a template card; returns WeChat's msgid (matched later by TEMPLATESENDJOBFINISH).

        ``client_msg_id`` is WeChat's idempotency key: the same openid + id within 10 minutes is
        sent once. Pass it always (retries here and resends by a worker rely on it).
        """
        body: dict[str, Any] = {
            "touser": openid,
            "template_id": template_id,
            "data": {key: {"value": value} for key, value in data.items()},
        }
        if url:
            body["url"] = url
        if client_msg_id:
            body["client_msg_id"] = client_msg_id
        try:
            answer = await self._call("POST", "/cgi-bin/message/template/send", json=body)
        except WeChatAPIError as exc:
            log.info("template to %s refused: %s", mask_openid(openid), exc.errcode)
            raise
        return int(answer.get("msgid", 0))

    async def send_text(self, openid: str, text: str) -> None:
        """A customer-service text: only inside the window the user opened (45015/45047 otherwise)."""
        body = {"touser": openid, "msgtype": "text", "text": {"content": text}}
        await self._call("POST", "/cgi-bin/message/custom/send", json=body)

    # -- menu, QR codes, users ----------------------------------------------------------------
    async def create_menu(self, menu: dict[str, Any]) -> None:
        await self._call("POST", "/cgi-bin/menu/create", json=menu)

    async def get_menu(self) -> dict[str, Any]:
        return await self._call("GET", "/cgi-bin/menu/get")

    async def create_qrcode(self, scene: str, expire_seconds: int | None = None) -> QRCode:
        """A parametric QR code for ``scene``: permanent when ``expire_seconds`` is None."""
        body: dict[str, Any] = {
            "action_name": "QR_LIMIT_STR_SCENE" if expire_seconds is None else "QR_STR_SCENE",
            "action_info": {"scene": {"scene_str": scene}},
        }
        if expire_seconds is not None:
            body["expire_seconds"] = expire_seconds
        data = await self._call("POST", "/cgi-bin/qrcode/create", json=body)
        expires = data.get("expire_seconds")
        return QRCode(
            ticket=str(data["ticket"]),
            url=str(data.get("url", "")),
            expire_seconds=int(expires) if expires is not None else None,
        )

    def qrcode_image_url(self, ticket: str) -> str:
        base = self._cfg.api_base.rstrip("/")
        if base == DEFAULT_API_BASE:
            base = REAL_SHOWQRCODE_BASE
        return f"{base}/cgi-bin/showqrcode?ticket={quote(ticket, safe='')}"

    async def user_info(self, openid: str) -> dict[str, Any]:
        """``subscribe`` (0/1), ``openid``, ``subscribe_time``…; WeChat no longer returns nicknames."""
        return await self._call("GET", "/cgi-bin/user/info", params={"openid": openid, "lang": "zh_CN"})

    # -- OAuth for the H5 pages ---------------------------------------------------------------
    def oauth_authorize_url(self, redirect_uri: str, state: str, scope: str = "snsapi_base") -> str:
        """Where to send the browser; WeChat comes back to ``redirect_uri?code=…&state=…``."""
        query = urlencode(
            {
                "appid": self._cfg.app_id,
                "redirect_uri": redirect_uri,
                "response_type": "code",
                "scope": scope,
                "state": state,
            },
            quote_via=quote,
        )
        return f"{self._cfg.oauth_base.rstrip('/')}/connect/oauth2/authorize?{query}#wechat_redirect"

    async def oauth_exchange(self, code: str) -> str:
        """The openid behind an OAuth ``code`` (works once, for 5 minutes: 40029 otherwise)."""
        params = {
            "appid": self._cfg.app_id,
            "secret": self._cfg.app_secret,
            "code": code,
            "grant_type": "authorization_code",
        }
        data = await self._call("GET", "/sns/oauth2/access_token", params=params, auth=False)
        try:
            return str(data["openid"])
        except KeyError as exc:
            raise WeChatTransportError("oauth2/access_token answer lacks openid") from exc


def _errcode(data: dict[str, Any]) -> int:
    try:
        return int(data.get("errcode", 0) or 0)
    except (TypeError, ValueError):
        return -1  # an unreadable errcode: treat like "busy", which is retried
