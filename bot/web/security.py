"""Signed values for the H5 pages: OAuth ``state``, the parent's session cookie, CSRF tokens, body limits.

Everything is an HMAC-SHA256 under ``server.signing_key`` (shared by every replica, so any process
can check what another issued). Each use derives its own key (:func:`derive`), so a token made for
one purpose (a session cookie) is worthless for another (an OAuth state). Tokens are URL-safe:
``payload.issued.ttl.mac``, with the payload in base64url and times in base 36, checked in constant
time and refused once older than ``max_age`` (or their own ``ttl``) or dated in the future.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

from aiohttp import web

# How long a parent stays recognised on our pages before WeChat is asked again (a silent redirect,
# snsapi_base shows nothing to the parent). A stolen cookie is useless after this.
SESSION_MAX_AGE = 7 * 86400
SESSION_COOKIE = "sb_p"
# The pre-login cookie binding an OAuth round trip to the browser that started it (login CSRF).
OAUTH_COOKIE = "sb_o"
STATE_MAX_AGE = 600  # WeChat's code lives 5 minutes; the round trip needs far less than 10
STATE_MAX_BYTES = 128  # WeChat's limit for ``state``
FORM_MAX_BYTES = 2048  # a confirmation form is a token and a digit: anything bigger is refused
CLOCK_SKEW = 60  # seconds a token may be dated ahead of this process's clock (replicas drift)

_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*$")
_OPENID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def derive(key: bytes, purpose: str) -> bytes:
    """A key for one purpose only, so tokens cannot be replayed across purposes."""
    return hmac.new(key, b"safebell:" + purpose.encode(), hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = digits[r] + out
    return out or "0"


def _mac(key: bytes, message: str) -> str:
    return _b64(hmac.new(key, message.encode("ascii"), hashlib.sha256).digest())


def sign(value: str, key: bytes, *, ttl: int | None = None, now: float | None = None) -> str:
    """``value`` signed and timestamped; with ``ttl`` it also expires on its own after that many seconds."""
    issued = int(time.time() if now is None else now)
    body = f"{_b64(value.encode('utf-8'))}.{_b36(issued)}.{_b36(ttl) if ttl is not None else ''}"
    return f"{body}.{_mac(key, body)}"


def unsign(token: str, key: bytes, *, max_age: int, now: float | None = None) -> str | None:
    """The signed value, or None if the token is forged, malformed, expired or from the future."""
    if not token or len(token) > 4096:
        return None
    parts = token.split(".")
    if len(parts) != 4:
        return None
    payload, issued_36, ttl_36, mac = parts
    try:
        body = f"{payload}.{issued_36}.{ttl_36}"
        # compare_digest on str needs ASCII: a non-ASCII token is forged anyway
        if not hmac.compare_digest(_mac(key, body), mac):
            return None
        issued = int(issued_36, 36)
        ttl = int(ttl_36, 36) if ttl_36 else None
        value = _unb64(payload).decode("utf-8")
    except (ValueError, TypeError, UnicodeError, binascii.Error):
        return None
    current = time.time() if now is None else now
    age = current - issued
    if age < -CLOCK_SKEW or age > max_age or (ttl is not None and age > ttl):
        return None
    return value


# -- redirect targets --------------------------------------------------------------------------------
def safe_path(path: str) -> bool:
    """A path on this site: starts with one "/", never "//" or "/\\" (both mean another host to a
    browser), no scheme, no control characters or spaces."""
    return bool(path) and len(path) <= 512 and _SAFE_PATH.match(path) is not None and not path.startswith("//")


# -- OAuth state --------------------------------------------------------------------------------------
def new_nonce() -> str:
    return secrets.token_urlsafe(9)  # 12 characters, 72 bits


def make_state(path: str, nonce: str, key: bytes, *, now: float | None = None) -> str:
    """The OAuth ``state``: where to go after login and the browser's nonce, signed, 10 minutes."""
    if not safe_path(path) or "|" in nonce:
        raise ValueError("not a same-site path")
    state = sign(f"{nonce}|{path}", derive(key, "oauth-state"), ttl=STATE_MAX_AGE, now=now)
    if len(state) > STATE_MAX_BYTES:
        raise ValueError(f"state would be {len(state)} bytes; WeChat allows {STATE_MAX_BYTES}")
    return state


def read_state(state: str, key: bytes, *, now: float | None = None) -> tuple[str, str] | None:
    """(nonce, path) of a state we issued in the last 10 minutes and whose path is same-site, else None."""
    if not state or len(state) > STATE_MAX_BYTES:
        return None
    value = unsign(state, derive(key, "oauth-state"), max_age=STATE_MAX_AGE, now=now)
    if value is None:
        return None
    nonce, sep, path = value.partition("|")
    if not sep or not nonce or not safe_path(path):
        return None
    return nonce, path


# -- the parent's session -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Session:
    openid: str
    nonce: str  # per login: CSRF tokens die with the session they were made for


def session_token(openid: str, key: bytes, *, now: float | None = None) -> str:
    if not _OPENID.match(openid):
        raise ValueError("not an openid")
    return sign(f"{openid}|{new_nonce()}", derive(key, "session"), ttl=SESSION_MAX_AGE, now=now)


def read_session(token: str | None, key: bytes, *, now: float | None = None) -> Session | None:
    if not token:
        return None
    value = unsign(token, derive(key, "session"), max_age=SESSION_MAX_AGE, now=now)
    if value is None:
        return None
    openid, _, nonce = value.partition("|")
    if not _OPENID.match(openid) or not nonce:
        return None
    return Session(openid, nonce)


def csrf_token(session: Session, scope: str, key: bytes) -> str:
    """A form token bound to this login (openid and its nonce) and to what the form acts on."""
    message = f"{session.openid}|{session.nonce}|{scope}"
    return _b64(hmac.new(derive(key, "csrf"), message.encode(), hashlib.sha256).digest())


def check_csrf(session: Session, scope: str, key: bytes, token: str | None) -> bool:
    if not token or len(token) > 64 or not token.isascii():
        return False
    return hmac.compare_digest(csrf_token(session, scope, key), token)


# -- cookies ------------------------------------------------------------------------------------------
def set_cookie(response: web.StreamResponse, name: str, value: str, *, max_age: int, secure: bool) -> None:
    """HttpOnly (no script reads it), SameSite=Lax (sent when the parent taps into the page, not on
    another site's POST), Secure on https, for the whole site."""
    response.set_cookie(name, value, max_age=max_age, path="/", httponly=True, samesite="Lax", secure=secure)


def clear_cookie(response: web.StreamResponse, name: str, *, secure: bool) -> None:
    response.del_cookie(name, path="/", secure=secure, httponly=True, samesite="Lax")


# -- request checks -----------------------------------------------------------------------------------
def same_origin(request: web.Request, base_url: str) -> bool:
    """False when the browser says the request comes from another site (``Origin``); browsers that
    send no Origin (or "null") are left to the CSRF token."""
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return True
    return origin.rstrip("/") == _origin_of(base_url)


def _origin_of(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}".rstrip("/")


class BodyTooLarge(Exception):
    """The request body is bigger than the form it claims to be."""


async def read_body(request: web.Request, limit: int = FORM_MAX_BYTES) -> bytes:
    """The body, refusing anything over ``limit`` bytes before reading it all."""
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(limit + 1 - size)
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)
