"""Signing in and out of the console: passwords, lockout, session cookies and lifetimes, CSRF, WeChat sign-in."""

from __future__ import annotations

import time
from typing import Any

from test_console_world import (
    CSRF,
    PARENT_ONLY,
    PASSWORD,
    SCHOOL,
    TEACHER_WX,
    World,
    world,
)

from bot.console import sessions as cs
from bot.console.throttle import ACCOUNT_MAX_FAILURES, IP_MAX_FAILURES
from bot.store import keys

__all__ = ["world"]


def set_cookies(resp: Any) -> list[str]:
    return [v for k, v in resp.headers.items() if k.lower() == "set-cookie"]


async def test_a_right_password_starts_a_session_with_a_strict_httponly_cookie(world: World) -> None:
    b = world.browser()
    status, _, resp = await world.try_login(b, "sadmin", PASSWORD)
    assert status == 303 and resp.headers["Location"] == "/console"
    cookie = next(c for c in set_cookies(resp) if c.startswith("sb_c="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain http in tests; see the https test below
    status, text, _ = await b.get("/console")
    assert status == 200 and "sadmin（学校管理员）" in text
    token = b.cookie("sb_c")
    assert token and await world.redis.exists(keys.console_session(cs._hash(token)))  # server-side
    assert not await world.redis.exists(keys.console_session(token))  # stored by hash, never the cookie itself


async def test_over_https_the_cookie_is_secure_and_host_prefixed(world: World) -> None:
    world.config.server.public_url = "https://console.example.cn"
    b = world.browser()
    _, page, _ = await b.get("/console/login")
    token = CSRF.search(page)
    assert token
    nonce = b.cookie("sb_cl")
    async with b.http.post(world.base + "/console/login", allow_redirects=False,
                           data={"csrf": token.group(1), "username": "sadmin", "password": PASSWORD},
                           headers={"Cookie": f"sb_cl={nonce}"}) as resp:  # fmt: skip
        assert resp.status == 303
        cookie = next(c for c in set_cookies(resp) if c.startswith(cs.SECURE_COOKIE + "="))
        assert "Secure" in cookie and "SameSite=Strict" in cookie and "HttpOnly" in cookie
        assert resp.headers["Strict-Transport-Security"].startswith("max-age=")


async def test_a_wrong_password_and_an_unknown_name_get_the_same_answer(world: World) -> None:
    b = world.browser()
    wrong = await world.try_login(b, "sadmin", "not-the-password")
    unknown = await world.try_login(b, "nobody-here", "not-the-password")
    assert wrong[0] == unknown[0] == 401
    assert "用户名或密码不正确" in wrong[1] and "用户名或密码不正确" in unknown[1]
    assert not b.cookie("sb_c")


async def test_five_wrong_passwords_lock_the_account_even_for_the_right_one(world: World) -> None:
    b = world.browser()
    for i in range(ACCOUNT_MAX_FAILURES):
        status, text, _ = await world.try_login(b, "sadmin", f"wrong-{i}-password")
    assert status == 429 and "尝试次数过多" in text
    status, text, _ = await world.try_login(world.browser(), "sadmin", PASSWORD)  # another browser, right password
    assert status == 429 and not world.browser().cookie("sb_c")
    await world.redis.delete(keys.login_failures("a", "sadmin"))  # what `bot admin passwd` clears
    status, _, _ = await world.try_login(world.browser(), "sadmin", PASSWORD)
    assert status == 303


async def test_an_unknown_account_name_locks_too_so_the_lockout_tells_nothing(world: World) -> None:
    b = world.browser()
    for _ in range(ACCOUNT_MAX_FAILURES):
        status, _, _ = await world.try_login(b, "ghost", "whatever-password")
    assert status == 429


async def test_many_failures_from_one_address_lock_that_address_for_every_account(world: World) -> None:
    world.config.server.trust_forwarded = True  # behind our own proxy: the forwarded address is the client
    proxy = {"X-Forwarded-For": "203.0.113.7"}
    b = world.browser(**proxy)
    for i in range(IP_MAX_FAILURES):
        status, _, _ = await world.try_login(b, f"user{i % 4}", "wrong-password-x")  # spread over names
    assert status == 429
    status, _, _ = await world.try_login(world.browser(**proxy), "dadmin", PASSWORD)
    assert status == 429
    status, _, _ = await world.try_login(world.browser(**{"X-Forwarded-For": "198.51.100.9"}), "dadmin", PASSWORD)
    assert status == 303  # another address is not locked


async def test_a_successful_login_resets_the_accounts_count(world: World) -> None:
    b = world.browser()
    for _ in range(ACCOUNT_MAX_FAILURES - 1):
        await world.try_login(b, "sadmin", "wrong-password-1")
    assert (await world.try_login(b, "sadmin", PASSWORD))[0] == 303
    for _ in range(ACCOUNT_MAX_FAILURES - 1):
        await world.try_login(world.browser(), "sadmin", "wrong-password-2")
    assert (await world.try_login(world.browser(), "sadmin", PASSWORD))[0] == 303


async def test_logging_in_gives_a_new_session_id_and_ends_the_one_the_browser_had(world: World) -> None:
    b = world.browser()
    _, page, _ = await b.get("/console/login")  # a login form left open in a tab
    token, nonce = CSRF.search(page).group(1), b.cookie("sb_cl")  # type: ignore[union-attr]
    assert (await world.try_login(b, "sadmin", PASSWORD))[0] == 303
    first = b.cookie("sb_c")
    b.http.cookie_jar.update_cookies({"sb_cl": nonce})
    status, _, _ = await b.post("/console/login", {"csrf": token, "username": "dadmin", "password": PASSWORD})
    assert status == 303
    second = b.cookie("sb_c")
    assert second and second != first
    assert not await world.redis.exists(keys.console_session(cs._hash(first)))


async def test_a_cookie_planted_before_login_is_not_adopted(world: World) -> None:
    b = world.browser()
    planted = "A" * 43  # an attacker's value, set in the victim's browser before they log in
    _, page, _ = await b.get("/console/login")
    token = CSRF.search(page).group(1)  # type: ignore[union-attr]
    status, _, resp = await b.post("/console/login", {"csrf": token, "username": "sadmin", "password": PASSWORD},
                                   headers={"Cookie": f"sb_c={planted}; sb_cl={b.cookie('sb_cl')}"})  # fmt: skip
    assert status == 303
    issued = next(c for c in set_cookies(resp) if c.startswith("sb_c=")).split(";")[0].removeprefix("sb_c=")
    assert issued != planted
    attacker = world.browser()
    status, _, _ = await attacker.get("/console", headers={"Cookie": f"sb_c={planted}"})
    assert status == 303  # the planted value opens nothing


async def test_logout_ends_the_session_on_the_server(world: World) -> None:
    b = await world.login("sadmin")
    token = b.cookie("sb_c")
    status, _, resp = await b.post("/console/logout", {"csrf": await b.csrf()})
    assert status == 303 and resp.headers["Location"] == "/console/login"
    stolen = world.browser()
    stolen.http.cookie_jar.update_cookies({"sb_c": token})  # a copy of the cookie taken before logout
    status, _, resp = await stolen.get("/console")
    assert status == 303 and resp.headers["Location"].startswith("/console/login")


async def test_sessions_end_after_the_idle_timeout_and_after_the_absolute_lifetime(world: World) -> None:
    store = cs.SessionStore(world.redis, idle=60, absolute=3600)
    now = time.time()
    token, _ = await store.start("acct:sadmin", now=now)
    assert 0 < await world.redis.ttl(keys.console_session(cs._hash(token))) <= 60  # idle: the key's TTL
    assert await store.load(token, now=now + 3000) is not None  # used within the idle time: alive
    assert await store.load(token, now=now + 3601) is None  # past the absolute lifetime: ended
    assert not await world.redis.exists(keys.console_session(cs._hash(token)))


async def test_changing_the_password_ends_every_session_of_the_account(world: World) -> None:
    b = await world.login("sadmin")
    await world.console.accounts.set_password("sadmin", "another-long-password")
    assert await world.console.sessions.end_user("acct:sadmin") == 1
    status, _, _ = await b.get("/console")
    assert status == 303


async def test_a_post_without_the_right_csrf_token_or_from_another_site_is_refused(world: World) -> None:
    b = await world.login("teacher32")
    other = await world.login("teacher32")
    form = {"title": "测试", "sender": "三年级（2）班", "body": "正文", "mode": "confirm",
            "audience": f"c:{SCHOOL}/3-2"}  # fmt: skip
    for token in ("", "x" * 43, await other.csrf()):  # none, made up, another session's
        status, text, _ = await b.post("/console/notices/send", {**form, "csrf": token})
        assert status == 403 and "页面已过期" in text
    status, _, _ = await b.post("/console/notices/send", {**form, "csrf": await b.csrf()},
                                headers={"Origin": "https://evil.example"})  # fmt: skip
    assert status == 403
    assert await world.redis.zcard(keys.notices_by_time()) == 0


async def test_the_login_form_itself_needs_its_token_so_no_site_can_sign_a_browser_in(world: World) -> None:
    b = world.browser()
    status, _, _ = await b.post("/console/login", {"username": "sadmin", "password": PASSWORD, "csrf": "forged"})
    assert status == 403 and not b.cookie("sb_c")


async def test_login_goes_back_to_the_page_asked_for_but_never_to_another_site(world: World) -> None:
    status, _, resp = await world.browser().get("/console/audit")
    assert status == 303 and resp.headers["Location"] == "/console/login?next=/console/audit"
    for target, expected in (("/console/audit", "/console/audit"), ("//evil.example/", "/console"),
                             ("https://evil.example/", "/console"), ("/n/abc", "/console")):  # fmt: skip
        b = world.browser()
        _, page, _ = await b.get("/console/login")
        token = CSRF.search(page).group(1)  # type: ignore[union-attr]
        status, _, resp = await b.post("/console/login", {"csrf": token, "username": "sadmin", "password": PASSWORD,
                                                          "next": target})  # fmt: skip
        assert status == 303 and resp.headers["Location"] == expected


# -- teachers in WeChat ----------------------------------------------------------------------------------
async def test_a_teacher_opens_the_console_in_wechat_and_signs_in_through_oauth_without_a_password(
    world: World,
) -> None:
    b = world.browser(**{"User-Agent": "Mozilla/5.0 MicroMessenger/8.0.50"})
    url = f"{world.emulator.url}/_emulator/browse?openid={TEACHER_WX}&next={world.base}/console"
    async with b.http.get(url) as resp:
        text = await resp.text()
        hops = [str(h.url) for h in resp.history]
    assert any("/connect/oauth2/authorize" in h for h in hops) and any("/console/oauth/callback" in h for h in hops)
    assert "登录成功" in text  # the page that moves on, so the SameSite=Strict cookie is sent
    status, page, _ = await b.get("/console")
    assert status == 200 and "三年级（2）班老师（微信）" in page
    status, _, _ = await b.get(f"/console/?school={SCHOOL}&class=3-3")
    assert status == 403  # another class
    status, _, _ = await b.get(f"/console/?school={SCHOOL}")
    assert status == 403  # the whole school


async def test_a_wechat_user_who_teaches_nothing_is_refused(world: World) -> None:
    b = world.browser()
    url = f"{world.emulator.url}/_emulator/browse?openid={PARENT_ONLY}&next={world.base}/console/login/wechat"
    async with b.http.get(url) as resp:
        assert resp.status == 403 and "这个微信号还不是老师" in await resp.text()
    assert not b.cookie("sb_c")
    status, _, _ = await b.get("/console")
    assert status == 303


async def test_a_teacher_whose_binding_is_removed_loses_the_console_at_once(world: World) -> None:
    b = await world.wechat_login(TEACHER_WX)
    assert (await b.get("/console"))[0] == 200
    await world.redis.delete(keys.identity(TEACHER_WX))  # unbound as a teacher
    status, _, resp = await b.get("/console")
    assert status == 303 and resp.headers["Location"].startswith("/console/login")


async def test_a_forged_or_replayed_oauth_callback_is_refused(world: World) -> None:
    b = world.browser()
    for query in ("", "?code=abc&state=forged", "?code=abc"):
        status, text, _ = await b.get("/console/oauth/callback" + query)
        assert status == 400 and "链接已失效" in text
    assert not b.cookie("sb_c")
