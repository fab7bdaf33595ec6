"""Signed tokens, OAuth state, session cookies, CSRF and redirect targets of the H5 pages; per-address limits."""

from __future__ import annotations

import time
from typing import Any

import pytest
from aiohttp import web

from bot.app import create_app
from bot.config import Config
from bot.store.redis import Redis
from bot.web import security as sec

KEY = b"k" * 32
OTHER_KEY = b"o" * 32


def test_a_signed_value_comes_back_and_survives_a_url() -> None:
    token = sec.sign("飞行员|/n/abc?x=1", KEY)
    assert sec.unsign(token, KEY, max_age=60) == "飞行员|/n/abc?x=1"
    assert all(c.isalnum() or c in "-_." for c in token)


@pytest.mark.parametrize("position", [0, 5, -3, -1])
def test_a_tampered_token_is_refused(position: int) -> None:
    token = sec.sign("openid-1", KEY)
    chars = list(token)
    chars[position] = "A" if chars[position] != "A" else "B"
    assert sec.unsign("".join(chars), KEY, max_age=60) is None


def test_a_token_signed_with_another_key_or_for_another_purpose_is_refused() -> None:
    assert sec.unsign(sec.sign("v", OTHER_KEY), KEY, max_age=60) is None
    state = sec.make_state("/n/abc", "nonce12345ab", KEY)
    assert sec.read_session(state, KEY) is None  # a state is not a session cookie
    cookie = sec.session_token("oUser_1", KEY)
    assert sec.read_state(cookie, KEY) is None  # and the other way round


def test_tokens_expire_by_max_age_and_by_their_own_ttl_and_refuse_the_future() -> None:
    old = sec.sign("v", KEY, now=time.time() - 120)
    assert sec.unsign(old, KEY, max_age=60) is None
    assert sec.unsign(old, KEY, max_age=300) == "v"
    short = sec.sign("v", KEY, ttl=30, now=time.time() - 45)
    assert sec.unsign(short, KEY, max_age=3600) is None
    future = sec.sign("v", KEY, now=time.time() + 3600)
    assert sec.unsign(future, KEY, max_age=7200) is None


@pytest.mark.parametrize("garbage", ["", ".", "a.b.c", "a.b.c.d", "a.b.c.d.e", "é.é.é.é", "x" * 5000])
def test_malformed_tokens_are_refused_without_errors(garbage: str) -> None:
    assert sec.unsign(garbage, KEY, max_age=60) is None
    assert sec.read_state(garbage, KEY) is None
    assert sec.read_session(garbage, KEY) is None


def test_the_oauth_state_fits_wechats_128_bytes_and_expires_after_10_minutes() -> None:
    longest_id = "z" * 32
    state = sec.make_state(f"/n/{longest_id}", sec.new_nonce(), KEY)
    assert len(state.encode()) <= sec.STATE_MAX_BYTES
    nonce, path = sec.read_state(state, KEY) or ("", "")
    assert path == f"/n/{longest_id}" and nonce
    stale = sec.make_state("/n/abc", "nonce12345ab", KEY, now=time.time() - 601)
    assert sec.read_state(stale, KEY) is None


@pytest.mark.parametrize("path", ["/n/abc", "/", "/n/abc?r=ok", "/a/b-c_d.e~f"])
def test_same_site_paths_are_accepted(path: str) -> None:
    assert sec.safe_path(path)


@pytest.mark.parametrize(
    "path",
    ["", "//evil.example/x", "/\\evil.example", "https://evil.example/", "evil.example", "/n/a b", "/n/\nSet-Cookie:x",
     "javascript:alert(1)", "\\\\evil.example", "/n/\u202e"],
)  # fmt: skip
def test_other_sites_and_odd_paths_are_refused_as_redirect_targets(path: str) -> None:
    assert not sec.safe_path(path)
    with pytest.raises(ValueError):
        sec.make_state(path, "nonce12345ab", KEY)
    # even a state signed with our key never sends the browser elsewhere
    forged = sec.sign(f"nonce12345ab|{path}", sec.derive(KEY, "oauth-state"), ttl=600)
    assert sec.read_state(forged, KEY) is None


def test_a_session_carries_the_openid_and_a_fresh_nonce_per_login() -> None:
    a = sec.read_session(sec.session_token("oUser_1", KEY), KEY)
    b = sec.read_session(sec.session_token("oUser_1", KEY), KEY)
    assert a is not None and b is not None
    assert a.openid == b.openid == "oUser_1" and a.nonce != b.nonce
    week_old = sec.session_token("oUser_1", KEY, now=time.time() - sec.SESSION_MAX_AGE - 1)
    assert sec.read_session(week_old, KEY) is None
    with pytest.raises(ValueError):
        sec.session_token("bad|openid", KEY)


def test_csrf_tokens_are_bound_to_the_login_and_to_the_notice() -> None:
    mine = sec.Session("oUser_1", "nonceA")
    token = sec.csrf_token(mine, "confirm:n1", KEY)
    assert sec.check_csrf(mine, "confirm:n1", KEY, token)
    assert not sec.check_csrf(mine, "confirm:n2", KEY, token)  # another notice
    assert not sec.check_csrf(sec.Session("oUser_1", "nonceB"), "confirm:n1", KEY, token)  # another login
    assert not sec.check_csrf(sec.Session("oUser_2", "nonceA"), "confirm:n1", KEY, token)  # another parent
    assert not sec.check_csrf(mine, "confirm:n1", KEY, "")
    assert not sec.check_csrf(mine, "confirm:n1", KEY, "é" * 10)


@pytest.mark.parametrize("secure", [False, True])
def test_cookies_are_httponly_samesite_lax_and_secure_on_https(secure: bool) -> None:
    response = web.Response()
    sec.set_cookie(response, sec.SESSION_COOKIE, "v", max_age=sec.SESSION_MAX_AGE, secure=secure)
    header = response.cookies[sec.SESSION_COOKIE].OutputString()
    assert "HttpOnly" in header and "SameSite=Lax" in header and "Path=/" in header
    assert f"Max-Age={sec.SESSION_MAX_AGE}" in header
    assert ("Secure" in header) is secure


@pytest.mark.parametrize("path", ["/console/login", "/api/notices"])
async def test_the_console_and_the_api_are_rate_limited_per_address(
    path: str, config: Config, redis: Redis, aiohttp_client: Any
) -> None:
    config.server.rate_per_ip, config.server.trust_forwarded = 3, True
    client = await aiohttp_client(create_app(config, redis))

    async def status(address: str) -> int:
        async with client.get(path, headers={"X-Forwarded-For": address}, allow_redirects=False) as resp:
            return resp.status

    # The windows are whole minutes: 2 × limit + 1 requests exceed the limit in one of them, even if
    # a minute turns while they are made (no assumption about the time of day).
    statuses = [await status("10.0.0.1") for _ in range(7)]
    assert 429 in statuses and statuses[0] != 429
    assert await status("10.0.0.2") != 429  # another address is not slowed down
