"""Signing in and out: a password (with lockout), or WeChat OAuth for teachers, and logout.

``GET /console/login`` shows the password form (inside WeChat it goes straight to WeChat sign-in).
Its token is bound to a pre-login cookie, so another site cannot sign a browser into an account of
its choosing (login CSRF). ``POST /console/login`` checks the lockout first (:mod:`.throttle`), then
the password (:mod:`.accounts`), and starts a new session (:mod:`.sessions`), ending any the browser
had. Wrong name and wrong password get the same answer.

A teacher signs in through WeChat's silent OAuth, with the same signed ``state`` and browser-bound
nonce as the parents' pages (:mod:`bot.web.security`), at a callback of the console's own
(``/console/oauth/callback``), so every console sign-in is a fresh round trip to WeChat and never
rides on a parent-page cookie. The openid's binding must make them a teacher (``Subject.from_who``);
they then see only their classes, and lose access the moment the binding is removed.
"""

from __future__ import annotations

import hmac
import logging
import re
from urllib.parse import quote

from aiohttp import web

from bot.console.accounts import ROLE_LABELS, normalise_username
from bot.console.sessions import clear_cookie, set_cookie
from bot.console.web import (
    CONSOLE,
    PREFIX,
    Console,
    FormRefused,
    Viewer,
    message,
    read_form,
    redirect,
    render,
    safe_next,
)
from bot.roster.authz import Subject
from bot.roster.chat import directory
from bot.roster.model import class_label
from bot.web import security as sec
from bot.web.ratelimit import client_ip
from bot.wechat.errors import WeChatAPIError, WeChatError
from bot.wechat.protocol import mask_openid

log = logging.getLogger(__name__)

LOGIN_COOKIE = "sb_cl"  # pre-login nonce: the login form's token is bound to this browser
LOGIN_COOKIE_AGE = 3600
_NONCE = re.compile(r"^[A-Za-z0-9_-]{8,32}$")
_CODE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
WRONG = "用户名或密码不正确。"
LOCKED = "尝试次数过多，已暂停登录15分钟。请稍后再试，或请管理员重设密码（bot admin passwd）。"


def _login_session(nonce: str) -> sec.Session:
    return sec.Session("console-login", nonce)


def login_form(c: Console, request: web.Request, *, status: int = 200, error: str = "", username: str = "",
               nxt: str = PREFIX) -> web.Response:  # fmt: skip
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if not _NONCE.match(nonce):
        nonce = sec.new_nonce()
    token = sec.csrf_token(_login_session(nonce), "login", c.key)
    response = render("login.html", status=status, error=error, username=username, next=nxt, csrf=token,
                      wechat=f"{PREFIX}/login/wechat?next={quote(nxt, safe='/')}")  # fmt: skip
    response.set_cookie(LOGIN_COOKIE, nonce, max_age=LOGIN_COOKIE_AGE, path=PREFIX, httponly=True,
                        samesite="Strict", secure=c.secure)  # fmt: skip
    return response


async def login_page(request: web.Request) -> web.StreamResponse:
    c = request.config_dict[CONSOLE]
    nxt = safe_next(request.query.get("next", ""))
    if await c.viewer(request) is not None:
        return redirect(nxt)
    if "MicroMessenger" in request.headers.get("User-Agent", "") and request.query.get("password") != "1":
        return redirect(f"{PREFIX}/login/wechat?next={quote(nxt, safe='/')}", status=302)
    return login_form(c, request, nxt=nxt)


async def login(request: web.Request) -> web.StreamResponse:
    c = request.config_dict[CONSOLE]
    try:
        form = await read_form(request, upload=False)
    except FormRefused as exc:
        return message(exc.status, exc.title, exc.text)
    nxt = safe_next(form.get("next"))
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if (
        not sec.same_origin(request, c.config.server.base_url())
        or not _NONCE.match(nonce)
        or not sec.check_csrf(_login_session(nonce), "login", c.key, form.get("csrf"))
    ):
        return message(403, "页面已过期", "没有登录成功：请重新打开登录页。", f"登录页：{PREFIX}/login")
    username = normalise_username(form.get("username"))[:64]
    password = form.get("password")
    address = client_ip(request, c.config.server)
    if await c.throttle.locked(username, address):
        return login_form(c, request, status=429, error=LOCKED, username=username, nxt=nxt)
    account = await c.accounts.authenticate(username, password)
    if account is None:
        now_locked = await c.throttle.failed(username, address)
        known = await c.accounts.get(username)
        if known is not None:
            label = f"{known.username}（{ROLE_LABELS[known.role]}）"
            action = "login.locked" if now_locked else "login.failed"
            await c.record_as(known.subject(), label, action, summary=f"来自 {address}")
        return login_form(c, request, status=429 if now_locked else 401, error=LOCKED if now_locked else WRONG,
                          username=username, nxt=nxt)  # fmt: skip
    await c.throttle.succeeded(username)
    await c.sessions.end(c.cookie(request))  # a new id at every login: a planted cookie is worthless
    token, _ = await c.sessions.start(f"acct:{account.username}")
    label = f"{account.username}（{ROLE_LABELS[account.role]}）"
    await c.record_as(account.subject(), label, "login", summary=f"密码登录，来自 {address}")
    response = redirect(nxt)
    set_cookie(response, token, secure=c.secure, max_age=c.sessions.absolute)
    response.del_cookie(LOGIN_COOKIE, path=PREFIX)
    return response


async def logout(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    c = request.config_dict[CONSOLE]
    await c.record(viewer, "logout")
    await c.sessions.end(viewer.token)
    response = redirect(f"{PREFIX}/login")
    clear_cookie(response, secure=c.secure)
    return response


# -- teachers: WeChat OAuth -----------------------------------------------------------------------------
async def wechat_login(request: web.Request) -> web.StreamResponse:
    c = request.config_dict[CONSOLE]
    nxt = safe_next(request.query.get("next", ""))
    nonce = request.cookies.get(sec.OAUTH_COOKIE, "")
    if not _NONCE.match(nonce):
        nonce = sec.new_nonce()  # reused while valid: two quick taps must not break each other
    try:
        state = sec.make_state(nxt, nonce, c.key)
    except ValueError:  # a long path would not fit WeChat's 128-byte state: start at the dashboard
        state = sec.make_state(PREFIX, nonce, c.key)
    redirect_uri = f"{c.config.server.base_url()}{PREFIX}/oauth/callback"
    response = redirect(c.ctx.api.oauth_authorize_url(redirect_uri, state), status=302)
    sec.set_cookie(response, sec.OAUTH_COOKIE, nonce, max_age=sec.STATE_MAX_AGE, secure=c.secure)
    return response


def _link_expired() -> web.Response:
    text = "为保护您的信息，登录链接只能在10分钟内使用一次。"
    return message(400, "链接已失效", text, "请回到微信，重新打开管理台链接。")


async def oauth_callback(request: web.Request) -> web.StreamResponse:
    c = request.config_dict[CONSOLE]
    found = sec.read_state(request.query.get("state", ""), c.key)
    nonce = request.cookies.get(sec.OAUTH_COOKIE, "")
    if found is None or not nonce.isascii() or not hmac.compare_digest(found[0].encode(), nonce.encode()):
        return _link_expired()
    path = safe_next(found[1])
    code = request.query.get("code", "")
    if not _CODE.match(code):
        return _link_expired()
    try:
        openid = await c.ctx.api.oauth_exchange(code)
    except WeChatAPIError as exc:
        log.info("console OAuth code refused by WeChat: %s", exc.errcode)
        return _link_expired()
    except WeChatError as exc:
        log.warning("console OAuth exchange failed: %s", type(exc).__name__)
        return message(503, "微信暂时没有响应", "暂时无法确认您的身份。", "请稍等一会儿再试。")
    who = await c.roster.who(openid)
    if not who.is_teacher:
        log.info("console sign-in refused to %s: not a teacher", mask_openid(openid))
        return message(403, "这个微信号还不是老师", "只有绑定了班级的老师可以用微信登录管理台。",
                       "请在公众号对话中发送学校给您的教师邀请码，绑定班级后再打开。")  # fmt: skip
    await c.sessions.end(c.cookie(request))
    token, _ = await c.sessions.start(f"wx:{openid}")
    subject = Subject.from_who(openid, who, (await directory(c.roster)).districts)
    label = "、".join(class_label(t.class_id) for t in who.teaches[:2]) + "老师（微信）"
    schools = {t.school for t in who.teaches}
    for district in sorted({subject.districts.get(s, "") for s in schools}):
        await c.record_as(subject, label, "login", district=district, summary="微信登录",
                          classes=tuple(t.class_id for t in who.teaches))  # fmt: skip
    # The way here began on WeChat's site, so the browser would not send our SameSite=Strict cookie
    # with a redirect: a page of ours moves on instead, which makes the next request same-site.
    response = render("continue.html", target=path)
    set_cookie(response, token, secure=c.secure, max_age=c.sessions.absolute)
    return response


def register(c: Console) -> None:
    r = c.app.router
    r.add_get("/login", login_page)
    r.add_post("/login", login)
    r.add_get("/login/wechat", wechat_login)
    r.add_get("/oauth/callback", oauth_callback)
    c.post("/logout", logout)
