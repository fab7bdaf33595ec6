"""The console's web plumbing: who is asking (:class:`Viewer`), forms with CSRF, pages, errors, headers.

The console is an aiohttp sub-application mounted at ``/console`` with its own middleware
(:func:`guard`): whatever a handler raises, the user gets a page in Chinese that says what to do,
never a traceback. Routes are added through :meth:`Console.get` (a signed-in viewer is required;
anonymous visitors are sent to the login page) and :meth:`Console.post` (the same, and the body is a
form read within a size limit whose CSRF token, bound to the session, must be right, from a page of
this site); nothing else registers a console route, so no form goes without a token.

Every page carries a Content-Security-Policy allowing only this site's stylesheet and script (no
inline script), no framing, forms only to this site; pages are never cached.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

import aiohttp
import jinja2
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from redis.exceptions import RedisError

from bot import clock
from bot.console.accounts import ROLE_LABELS, Account, AccountStore
from bot.console.audit import AuditEntry, AuditLog
from bot.console.sessions import ConsoleSession, SessionStore, cookie_name
from bot.console.stats import Stats
from bot.console.throttle import LoginThrottle
from bot.delivery.cards import CardSender
from bot.paths import WEB_TEMPLATES
from bot.roster.authz import Subject
from bot.roster.chat import directory
from bot.roster.model import class_label
from bot.web import pages
from bot.web import security as sec

if TYPE_CHECKING:
    from bot.app import AppContext
    from bot.notices.service import NoticeService
    from bot.roster.store import RosterStore

log = logging.getLogger(__name__)

PREFIX = "/console"
STATIC = WEB_TEMPLATES / "console" / "static"
FORM_LIMIT = 96 * 1024  # a notice's 5,000 characters, percent-encoded, and the rest of its form
UPLOAD_LIMIT = 20 * 1024 * 1024  # a district's roster as XLSX or CSV is a few MB
MAX_FIELDS = 64

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is signed in: their authorization subject, session, and a label for people."""

    subject: Subject
    session: ConsoleSession
    token: str
    label: str
    csrf: str  # the form token of this session (every form of every page carries it)
    account: Account | None = None

    @property
    def role(self) -> str:
        return self.subject.role

    @property
    def is_admin(self) -> bool:
        return self.subject.role in ("district_admin", "school_admin")


@dataclass
class Form:
    """A submitted form: text fields (first value, or all of them) and uploaded files."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # name → (filename, content)

    def get(self, name: str, default: str = "") -> str:
        values = self.fields.get(name)
        return values[0] if values else default

    def getall(self, name: str) -> list[str]:
        return list(self.fields.get(name, []))


VIEWER: web.RequestKey[Viewer] = web.RequestKey("console_viewer", Viewer)
FORM: web.RequestKey[Form] = web.RequestKey("console_form", Form)


class FormRefused(Exception):
    def __init__(self, status: int, title: str, text: str) -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.text = text


# -- pages ------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The H5 pages' environment (autoescape, strict undefined) with the console's filters."""
    env = pages.environment().overlay()
    env.filters["when"] = when
    env.filters["day"] = day
    env.filters["pct"] = pct
    env.filters["klass"] = class_label
    env.globals["static"] = static_url
    return env


def when(ts: float) -> str:
    if not ts:
        return ""
    t = clock.local(ts)
    return f"{t:%Y-%m-%d %H:%M}"


def day(ts: float) -> str:
    return f"{clock.local(ts):%m-%d}" if ts else ""


def pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}%"


@lru_cache(maxsize=8)
def _static_file(name: str) -> tuple[bytes, str]:
    data = (STATIC / name).read_bytes()
    return data, hashlib.sha256(data).hexdigest()[:12]


def static_url(name: str) -> str:
    return f"{PREFIX}/static/{name}?v={_static_file(name)[1]}"


STATIC_FILES = {"console.css": "text/css", "console.js": "text/javascript"}


async def static(request: web.Request) -> web.Response:
    """The console's stylesheet and script; cached for a year (their URL changes with their content)."""
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise web.HTTPNotFound()
    data, digest = _static_file(name)
    cache = "public, max-age=31536000, immutable" if request.query.get("v") == digest else "no-cache"
    return web.Response(body=data, content_type=STATIC_FILES[name], charset="utf-8",
                        headers={"Cache-Control": cache, "X-Content-Type-Options": "nosniff"})  # fmt: skip


@lru_cache(maxsize=1)
def policy() -> str:
    # The H5 stylesheet's hash: the notice preview shows the parent's page in a sandboxed srcdoc frame.
    css = (WEB_TEMPLATES / pages.STYLESHEET).read_bytes()
    h5 = base64.b64encode(hashlib.sha256(css).digest()).decode()
    return (
        f"default-src 'none'; script-src 'self'; style-src 'self' 'sha256-{h5}'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )


def headers(*, secure: bool = False) -> dict[str, str]:
    out = {
        "Content-Security-Policy": policy(),
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "same-origin",
    }
    if secure:
        out["Strict-Transport-Security"] = "max-age=31536000"
    return out


def render(name: str, /, *, status: int = 200, **context: Any) -> web.Response:
    """A page from ``templates/web/console/<name>``."""
    for name_, default in (("title", "平安铃"), ("viewer", None), ("nav", "")):
        context.setdefault(name_, default)
    viewer = context["viewer"]
    context.setdefault("csrf", viewer.csrf if viewer is not None else "")
    html = environment().get_template(f"console/{name}").render(**context)
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8", headers=headers())


def message(status: int, title: str, text: str, hint: str = "", *, viewer: Viewer | None = None) -> web.Response:
    return render("message.html", status=status, title=title, text=text, hint=hint, viewer=viewer)


def redirect(location: str, *, status: int = 303) -> web.Response:
    return web.Response(status=status, headers={**headers(), "Location": location})


def not_found(viewer: Viewer | None = None) -> web.Response:
    return message(404, "没有找到这个页面", "链接可能不完整，或者内容已被删除。", viewer=viewer)


def forbidden(viewer: Viewer | None = None) -> web.Response:
    hint = "如需查看，请联系学校或区县管理员。"
    return message(403, "没有权限", "这部分内容不在您的管理范围内。", hint, viewer=viewer)


def safe_next(path: str) -> str:
    """A console path to go back to after login; anything else means the dashboard."""
    if path and sec.safe_path(path) and (path == PREFIX or path.startswith(PREFIX + "/")):
        return path
    return PREFIX


def login_url(path: str) -> str:
    return f"{PREFIX}/login?next={quote(safe_next(path), safe='/')}"


_MULTIPART = re.compile(r"^multipart/form-data", re.IGNORECASE)


# -- the console -----------------------------------------------------------------------------------
class Console:
    """What every console handler needs: the app's services and the console's own stores."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.redis = ctx.redis
        self.key = ctx.config.server.signing_key(ctx.config.wechat)
        self.accounts = AccountStore(ctx.redis)
        self.sessions = SessionStore(ctx.redis)
        self.throttle = LoginThrottle(ctx.redis)
        self.audit = AuditLog(ctx.redis)
        self.stats = Stats(self)
        self.cards: CardSender | None = None  # made on first use (the notice preview)
        self.http: aiohttp.ClientSession | None = None  # made on first use (class QR images from WeChat)
        self.app = web.Application(middlewares=[guard])
        self.app[CONSOLE] = self

    @property
    def roster(self) -> RosterStore:
        store: RosterStore = self.ctx.services["roster"]
        return store

    @property
    def notices(self) -> NoticeService:
        service: NoticeService = self.ctx.services["notices"]
        return service

    @property
    def secure(self) -> bool:
        return self.config.server.public_url.startswith("https://")

    def cookie(self, request: web.Request) -> str:
        return request.cookies.get(cookie_name(self.secure), "")

    # -- who is asking ---------------------------------------------------------------------------
    async def viewer(self, request: web.Request) -> Viewer | None:
        token = self.cookie(request)
        session = await self.sessions.load(token)
        if session is None:
            return None
        kind, _, ident = session.user.partition(":")
        if kind == "acct":
            account = await self.accounts.get(ident)
            if account is not None:
                label = f"{account.username}（{ROLE_LABELS[account.role]}）"
                return Viewer(account.subject(), session, token, label, session.csrf(self.key), account)
        elif kind == "wx":
            who = await self.roster.who(ident)
            if who.is_teacher:
                subject = Subject.from_who(ident, who, (await directory(self.roster)).districts)
                classes = "、".join(class_label(t.class_id) for t in who.teaches[:2])
                more = "等" if len(who.teaches) > 2 else ""
                return Viewer(subject, session, token, f"{classes}{more}老师（微信）", session.csrf(self.key))
        await self.sessions.end(token)  # the account is gone, or the teacher no longer teaches
        return None

    # -- routes ----------------------------------------------------------------------------------
    def get(self, path: str, handler: Callable[[web.Request, Viewer], Awaitable[web.StreamResponse]]) -> None:
        self.app.router.add_get(path, self._signed_in(handler))

    def post(
        self,
        path: str,
        handler: Callable[[web.Request, Viewer], Awaitable[web.StreamResponse]],
        *,
        upload: bool = False,
    ) -> None:
        async def checked(request: web.Request, viewer: Viewer) -> web.StreamResponse:
            try:
                form = await read_form(request, upload=upload)
            except FormRefused as exc:
                return message(exc.status, exc.title, exc.text, viewer=viewer)
            if not sec.same_origin(request, self.config.server.base_url()) or not viewer.session.check_csrf(
                self.key, form.get("csrf")
            ):
                log.info("console %s refused: bad CSRF token or another site's form", request.path)
                return message(403, "页面已过期", "没有提交成功：请刷新页面后重试。", viewer=viewer)
            request[FORM] = form
            return await handler(request, viewer)

        self.app.router.add_post(path, self._signed_in(checked))

    def _signed_in(self, handler: Callable[[web.Request, Viewer], Awaitable[web.StreamResponse]]) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            viewer = await self.viewer(request)
            if viewer is None:
                if request.path.endswith(".json"):
                    return web.json_response({"error": "signed out"}, status=401, headers=headers())
                return redirect(login_url(request.path_qs if request.method == "GET" else PREFIX))
            request[VIEWER] = viewer
            return await handler(request, viewer)

        return wrapped

    # -- pages -----------------------------------------------------------------------------------
    def page(self, viewer: Viewer, name: str, /, *, nav: str, status: int = 200, **context: Any) -> web.Response:
        """A signed-in page: the layout gets the viewer, the navigation and the form token."""
        return render(name, status=status, viewer=viewer, nav=nav, **context)

    async def record(self, viewer: Viewer, action: str, *, district: str = "", **fields: Any) -> None:
        """Write an audit entry as ``viewer`` (in their district unless the action names another)."""
        await self.record_as(viewer.subject, viewer.label, action, district=district, **fields)

    async def record_as(self, s: Subject, label: str, action: str, *, district: str = "", **fields: Any) -> None:
        where = district or s.district or next(iter(s.districts.values()), "")
        if "school" not in fields and s.school:
            fields["school"] = s.school
        if "school" not in fields and s.who.teaches:  # a teacher's own entries are readable by them
            fields["school"] = s.who.teaches[0].school
            fields.setdefault("classes", tuple(t.class_id for t in s.who.teaches if t.school == fields["school"]))
        entry = AuditEntry(action, s.name, label, where, **fields)
        try:
            await self.audit.record(entry)
        except RedisError:
            log.error("audit entry %s by %s could not be written", action, s.name)


CONSOLE: web.AppKey[Console] = web.AppKey("console", Console)


# -- forms ------------------------------------------------------------------------------------------
async def read_form(request: web.Request, *, upload: bool) -> Form:
    """The body as a form: URL-encoded (≤ FORM_LIMIT) or, where uploads are allowed, multipart (≤ UPLOAD_LIMIT)."""
    if _MULTIPART.match(request.headers.get("Content-Type", "")):
        if not upload:
            raise FormRefused(415, "无法提交", "这个表单不接受文件。")
        return await _multipart(request)
    try:
        body = await sec.read_body(request, FORM_LIMIT)
    except sec.BodyTooLarge:
        raise FormRefused(413, "内容太长", f"提交的内容超过了 {FORM_LIMIT // 1024} KB。") from None
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise FormRefused(400, "无法提交", "表单内容无法识别，请刷新页面后重试。") from None
    return Form(fields)


async def _multipart(request: web.Request) -> Form:
    if request.content_length is not None and request.content_length > UPLOAD_LIMIT:
        raise FormRefused(413, "文件太大", f"上传的文件不能超过 {UPLOAD_LIMIT // 1024 // 1024} MB。")
    form = Form()
    size = 0
    try:
        reader = await request.multipart()
        for _ in range(MAX_FIELDS):
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, aiohttp.BodyPartReader) or not part.name:
                raise FormRefused(400, "无法提交", "表单内容无法识别，请刷新页面后重试。")
            chunks: list[bytes] = []
            while chunk := await part.read_chunk(64 * 1024):
                size += len(chunk)
                if size > UPLOAD_LIMIT:
                    raise FormRefused(413, "文件太大", f"上传的文件不能超过 {UPLOAD_LIMIT // 1024 // 1024} MB。")
                chunks.append(chunk)
            data = b"".join(chunks)
            if part.filename is not None:
                form.files[part.name] = (part.filename[:200], data)
            else:
                form.fields.setdefault(part.name, []).append(data.decode("utf-8", "replace")[:FORM_LIMIT])
    except (ValueError, AssertionError, UnicodeError, HttpProcessingError) as exc:  # a malformed multipart body
        raise FormRefused(400, "无法提交", "表单内容无法识别，请刷新页面后重试。") from exc
    return form


# -- the middleware ---------------------------------------------------------------------------------
@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Security headers on every answer; a kind page instead of any error."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        viewer = request.get(VIEWER)
        if exc.status == 404:
            return not_found(viewer)
        if exc.status == 405:
            return message(405, "无法这样打开", "请从页面上的按钮或链接进入。", viewer=viewer)
        return message(exc.status, "无法完成", exc.reason or "请求没有完成。", viewer=viewer)
    except RedisError as exc:
        log.error("console %s %s: Redis unavailable (%s)", request.method, request.path, type(exc).__name__)
        return message(503, "系统有点忙", "暂时无法读取数据。", "请稍等一会儿再刷新页面。", viewer=request.get(VIEWER))
    except Exception:
        log.exception("console %s %s failed", request.method, request.path)
        return message(500, "出了点问题", "我们已经记录，会尽快处理。", "请稍后再试。", viewer=request.get(VIEWER))
    console = request.config_dict.get(CONSOLE)
    if console is not None and console.secure:
        response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    for name, value in headers().items():
        response.headers.setdefault(name, value)
    return response
