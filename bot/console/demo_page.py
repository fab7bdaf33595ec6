"""The clickable demo (``bot demo`` only): a few simulated parents' phones side by side, and the teacher's view.

Each phone shows what that parent received in WeChat (cards, the bot's messages), lets the visitor
write in the chat (a real signed callback through the emulator's control API), open a card (the
phone's own browser goes through WeChat OAuth to the H5 page, which is shown in the phone) and
confirm or answer the question there. Beside them, the class teacher's figures update as the
families act, and one click opens the real console as that teacher.

Nothing here exists outside the demo: :func:`with_demo` adds it to an app that ``bot demo`` built
(``bot/demo.py``). The phones are played by this process over HTTP, through the same pages and
callback a real phone uses; no shortcut into the services.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

from bot import clock
from bot.console.sessions import set_cookie
from bot.console.web import CONSOLE, PREFIX, guard, message, redirect, render
from bot.demo_data import DEMO_SCHOOL
from bot.notices.model import Draft, Question
from bot.notices.service import REASONS
from bot.roster.authz import Scope, Subject
from bot.roster.chat import directory
from bot.roster.model import RELATIONS, class_label
from bot.web import security as sec
from bot.wechat.emulator import EmulatorClient
from bot.wechat.protocol import mask_openid

if TYPE_CHECKING:
    from bot.app import AppContext
    from bot.console.web import Console

log = logging.getLogger(__name__)

DEMO_CLASS = "3-2"
PHONES = 4
COOKIE = "sb_demo"
_NOTICE_ID = re.compile(r"^[0-9a-z]{1,32}$")
_OPENID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
PRESETS = {
    "confirm": (
        "周末防溺水安全提醒",
        "周末请看护好孩子：不去河边、水库、池塘玩水；不独自游泳。\n发现同伴落水，大声呼救，不要手拉手下水。",
        "confirm",
        None,
    ),
    "understand": (
        "放学路上交通安全",
        "过马路走斑马线，看清红绿灯；不在马路上追逐打闹。\n请和孩子一起读一遍，再回答下面的小问题。",
        "understand",
        Question("绿灯闪烁时应该怎么做？", ("加速跑过去", "停下等下一个绿灯", "看情况"), 1),
    ),
}


@dataclass
class Phone:
    """One simulated parent's phone: their WeChat browser (its own cookies) and what the visitor typed."""

    openid: str
    label: str
    http: aiohttp.ClientSession
    said: list[tuple[float, str]] = field(default_factory=list)
    page_html: str = ""
    page_url: str = ""
    notice: str = ""


class DemoPage:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.emulator = EmulatorClient(ctx.config.emulator_base_url())
        self.phones: dict[str, Phone] = {}
        self.key = ctx.config.server.signing_key(ctx.config.wechat)

    @property
    def console(self) -> Console:
        console: Console = self.ctx.services["console"]
        return console

    async def close(self) -> None:
        for phone in self.phones.values():
            await phone.http.close()
        await self.emulator.close()

    # -- who is in the demo ----------------------------------------------------------------------------
    async def parents(self) -> list[Phone]:
        """Up to four followers bound to a child of the demo class (the walkthrough binds some)."""
        roster = self.console.roster
        students = await roster.students(DEMO_SCHOOL, DEMO_CLASS)
        found: list[Phone] = []
        for follower in await self.emulator.followers():
            openid = str(follower.get("openid", ""))
            who = await roster.who(openid)
            mine = [c for c in who.children if c.school == DEMO_SCHOOL and c.class_id == DEMO_CLASS]
            if not mine or not _OPENID.match(openid):
                continue
            child = students.get(mine[0].student)
            label = f"{child.name if child else '孩子'}的{RELATIONS.get(mine[0].relation, '家长')}"
            phone = self.phones.get(openid)
            if phone is None:
                phone = Phone(openid, label, aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)))
                self.phones[openid] = phone
            found.append(phone)
            if len(found) >= PHONES:
                break
        return found

    async def teacher(self) -> str:
        info = await self.console.roster.class_info(DEMO_SCHOOL, DEMO_CLASS)
        return info.teacher if info else ""

    async def latest_notice(self) -> Any:
        """The newest notice to the demo class (the teacher's, a campaign's …)."""
        service = self.console.notices
        from bot.store import keys

        ids = await self.console.redis.zrevrange(keys.notices_by_school(DEMO_SCHOOL), 0, 20)
        for nid in ids:
            notice = await service.cached(str(nid))
            if notice is not None and (DEMO_SCHOOL, DEMO_CLASS) in await service.planned_classes(notice):
                return notice
        return None

    # -- a phone's screen ----------------------------------------------------------------------------------
    async def timeline(self, phone: Phone) -> tuple[list[dict[str, Any]], int]:
        """What the phone shows, and how many messages it has received (the page's version)."""
        inbox = await self.emulator.inbox(phone.openid)
        received = sum(len(inbox.get(k, [])) for k in ("template", "custom", "replies"))
        items: list[dict[str, Any]] = [{"t": t, "kind": "me", "text": text} for t, text in phone.said]
        for reply in inbox.get("replies", []):
            if reply.get("type") == "text":
                items.append(_bot(reply))
        for push in inbox.get("custom", []):
            if push.get("msgtype") == "text":
                items.append(_bot(push))
        for card in inbox.get("template", []):
            data = card.get("data") or {}
            values = {k: str(v.get("value", "")) if isinstance(v, dict) else str(v) for k, v in data.items()}
            url = str(card.get("url", ""))
            nid = url.rsplit("/n/", 1)[-1] if "/n/" in url else ""
            items.append({"t": float(card.get("time", 0)) + 0.5, "kind": "card", "fields": list(values.values()),
                          "notice": nid if _NOTICE_ID.match(nid) else ""})  # fmt: skip
        items.sort(key=lambda i: i["t"])
        return items[-30:], received

    async def open(self, phone: Phone, notice_id: str) -> None:
        """Tap the card: the phone's browser → our page → WeChat OAuth (the emulator) → back, logged in."""
        url = f"{self.config.server.base_url()}/n/{notice_id}"
        async with phone.http.get(url, allow_redirects=False) as resp:
            if resp.status == 200:
                phone.page_html, phone.page_url = await resp.text(), url
                phone.notice = notice_id
                return
            authorize = resp.headers.get("Location", "").partition("#")[0]
        if not authorize.startswith(self.config.wechat.oauth_base):
            raise web.HTTPBadGateway(reason="the notice page did not send the phone to WeChat")
        async with phone.http.get(f"{authorize}&emulator_openid={quote(phone.openid)}", allow_redirects=False) as resp:
            back = resp.headers.get("Location", "")
        if not back.startswith(self.config.server.base_url() + "/oauth/callback"):
            raise web.HTTPBadGateway(reason="WeChat did not send the phone back")
        async with phone.http.get(back) as resp:
            phone.page_html, phone.page_url = await resp.text(), str(resp.url)
            phone.notice = notice_id

    async def confirm(self, phone: Phone, answer: str) -> None:
        found = _CSRF.search(phone.page_html)
        if not found or not phone.notice:
            return
        form = {"csrf": found.group(1)}
        if answer:
            form["answer"] = answer
        url = f"{self.config.server.base_url()}/n/{phone.notice}/confirm"
        headers = {"Origin": self.config.server.base_url()}
        async with phone.http.post(url, data=form, headers=headers) as resp:
            phone.page_html, phone.page_url = await resp.text(), str(resp.url)

    # -- the teacher's figures ---------------------------------------------------------------------------
    async def version(self, phones: list[Phone]) -> str:
        """Changes whenever a phone receives something: the page reloads itself then."""
        counts = [(await self.timeline(p))[1] for p in phones]
        return ",".join(map(str, counts))

    async def figures(self) -> dict[str, Any]:
        notice = await self.latest_notice()
        if notice is None:
            return {"notice": None, "funnel": {}}
        [report] = await self.console.notices.class_reports(notice, classes=[(DEMO_SCHOOL, DEMO_CLASS)])
        f = report.funnel
        return {
            "notice": {"id": notice.id, "title": notice.draft.title, "mode": notice.draft.mode},
            "funnel": {**f.as_dict(), "missing": f.targeted - f.confirmed,
                       "confirmed_pct": f"{round(100 * f.confirmed / f.targeted)}%" if f.targeted else "–"},
            "missing": [{"name": name, "reason": REASONS.get(reason, reason)} for _sid, name, reason in report.missing],
        }  # fmt: skip


DEMO: web.AppKey[DemoPage] = web.AppKey("demo_page", DemoPage)


def _bot(message: dict[str, Any]) -> dict[str, Any]:
    # after what the parent sent in the same second: the bot answers what it was sent
    return {"t": float(message.get("time", 0)) + 0.5, "kind": "bot", "text": str(message.get("content", ""))}


def _token(request: web.Request, demo: DemoPage) -> tuple[str, str]:
    nonce = request.cookies.get(COOKIE, "")
    if not re.fullmatch(r"[A-Za-z0-9_-]{8,32}", nonce):
        nonce = sec.new_nonce()
    return nonce, sec.csrf_token(sec.Session("demo", nonce), "demo", demo.key)


def _checked(request: web.Request, demo: DemoPage, form: dict[str, str]) -> bool:
    nonce = request.cookies.get(COOKIE, "")
    return bool(nonce) and sec.check_csrf(sec.Session("demo", nonce), "demo", demo.key, form.get("csrf"))


async def _form(request: web.Request) -> dict[str, str]:
    from bot.console.web import read_form

    form = await read_form(request, upload=False)
    return {k: v[0] for k, v in form.fields.items() if v}


# -- handlers ------------------------------------------------------------------------------------------------
async def demo_page(request: web.Request) -> web.StreamResponse:
    demo = request.app[DEMO]
    phones = await demo.parents()
    screens = []
    counts = []
    for p in phones:
        notice = await demo.console.notices.cached(p.notice) if p.page_html and p.notice else None
        can_act = bool(notice is not None and _CSRF.search(p.page_html) and notice.draft.mode != "none")
        question = notice.draft.question if notice is not None and notice.draft.mode == "understand" else None
        timeline, received = await demo.timeline(p)  # the version is counted from the very same reads
        counts.append(str(received))
        screens.append({"phone": p, "masked": mask_openid(p.openid), "timeline": timeline, "can_act": can_act,
                        "question": question})  # fmt: skip
    nonce, token = _token(request, demo)
    names = (await directory(demo.console.roster)).names
    response = render(
        "demo.html", title="演示：家长的手机", screens=screens, figures=await demo.figures(), csrf=token,
        teacher=await demo.teacher(), presets=PRESETS, klass=f"{names.get(DEMO_SCHOOL, '')} {class_label(DEMO_CLASS)}",
        flash=request.query.get("flash", ""), version=",".join(counts),
    )  # fmt: skip
    response.set_cookie(COOKIE, nonce, max_age=86400, path="/demo", httponly=True, samesite="Strict")
    return response


async def state(request: web.Request) -> web.StreamResponse:
    demo = request.app[DEMO]
    return web.json_response({**await demo.figures(), "version": await demo.version(await demo.parents())})


async def phone_action(request: web.Request) -> web.StreamResponse:
    demo = request.app[DEMO]
    openid, action = request.match_info["openid"], request.match_info["action"]
    form = await _form(request)
    if not _checked(request, demo, form):
        return message(403, "页面已过期", "请刷新演示页面后再试。")
    phone = next((p for p in await demo.parents() if p.openid == openid), None)
    if phone is None:
        return message(404, "没有这部手机", "请刷新演示页面。")
    if action == "say":
        text = form.get("text", "").strip()[:200]
        if text:
            phone.said.append((time.time(), text))
            await demo.emulator.send_text(openid, text)
    elif action == "open":
        nid = form.get("notice", "")
        if _NOTICE_ID.match(nid):
            await demo.open(phone, nid)
    elif action == "confirm":
        answer = form.get("answer", "")
        await demo.confirm(phone, answer if answer.isdigit() else "")
    elif action == "close":
        phone.page_html = ""
    else:
        raise web.HTTPNotFound()
    return redirect(f"/demo#phone-{openid}")


async def send_notice(request: web.Request) -> web.StreamResponse:
    """The class teacher sends a notice to the demo class (as from their console)."""
    demo = request.app[DEMO]
    form = await _form(request)
    if not _checked(request, demo, form):
        return message(403, "页面已过期", "请刷新演示页面后再试。")
    teacher = await demo.teacher()
    if not teacher:
        return message(409, "这个班还没有班主任", "演示的班主任还没有绑定：请先让演示流程跑完一遍。")
    title, body, mode, question = PRESETS.get(form.get("preset", ""), PRESETS["confirm"])
    roster = demo.console.roster
    who = await roster.who(teacher)
    subject = Subject.from_who(teacher, who, (await directory(roster)).districts)
    district = subject.districts.get(DEMO_SCHOOL, "")
    draft = Draft(title=title, body=body, audience=(Scope(district, DEMO_SCHOOL, None, DEMO_CLASS),),
                  sender=class_label(DEMO_CLASS), mode=mode, question=question,  # type: ignore[arg-type]
                  deadline=clock.now() + 86400, created_by=teacher)  # fmt: skip
    notice, _, _ = await demo.console.notices.submit(draft, subject, key=f"demo:{secrets.token_hex(6)}")
    await demo.console.record_as(subject, f"{class_label(DEMO_CLASS)}老师（微信）", "notice.send", district=district,
                                 school=DEMO_SCHOOL, classes=(DEMO_CLASS,), target=notice.id,
                                 summary=f"「{title}」→ {class_label(DEMO_CLASS)}（演示）")  # fmt: skip
    return redirect("/demo?flash=sent")


async def as_teacher(request: web.Request) -> web.StreamResponse:
    """Open the real console as the demo class teacher (as if they had signed in from WeChat)."""
    demo = request.app[DEMO]
    teacher = await demo.teacher()
    if not teacher:
        return message(409, "这个班还没有班主任", "演示的班主任还没有绑定：请先让演示流程跑完一遍。")
    console = demo.console
    token, _ = await console.sessions.start(f"wx:{teacher}")
    response = render("continue.html", target=PREFIX)
    set_cookie(response, token, secure=console.secure, max_age=console.sessions.absolute)
    return response


def with_demo(app: web.Application) -> web.Application:
    """Add the demo page to an app made by ``create_app`` (``bot demo`` only); returns the app."""
    from bot.app import CONTEXT_KEY

    setup(app[CONTEXT_KEY])
    return app


def setup(ctx: AppContext) -> None:
    """The demo capability: ``/demo`` and its actions, with the console's error page and headers."""
    demo = DemoPage(ctx)
    sub = web.Application(middlewares=[guard])
    sub[DEMO] = demo
    sub[CONSOLE] = ctx.services["console"]
    sub.router.add_get("", demo_page)
    sub.router.add_get("/", demo_page)
    sub.router.add_get("/state.json", state)
    sub.router.add_post("/notice", send_notice)
    sub.router.add_get("/teacher", as_teacher)
    sub.router.add_post("/phone/{openid}/{action}", phone_action)

    async def close(_app: web.Application) -> None:
        await demo.close()

    sub.on_cleanup.append(close)
    ctx.app.add_subapp("/demo", sub)
