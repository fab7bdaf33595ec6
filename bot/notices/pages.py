"""The notice page a parent opens from the template card: read the full text, then confirm or answer.

``GET /n/{id}``: without our session cookie the parent is sent through WeChat OAuth (snsapi_base,
silent) and comes back through ``GET /oauth/callback``, which sets the cookie. Only a guardian of a
student the notice addresses sees it; anyone else gets a kind refusal and none of its content.
``POST /n/{id}/confirm``: the form, with a CSRF token bound to the session and the notice.
``GET /n/{id}/class/{school}/{class}``: the class's progress and its students without a
confirmation (the link in the class teacher's private card after the last reminder). The names go
to the class teacher only (``authz.may_list_missing``); a subject teacher of the class sees the same
page with how many and why in their place; anyone else gets a kind refusal and nothing of it.
Every answer is a page in Chinese with a next step; nothing shows a traceback.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

from aiohttp import web
from redis.exceptions import RedisError

from bot import clock
from bot.notices.model import CONFIRMED, UNDERSTOOD, Notice, Record
from bot.notices.report import LIST_NOTE_PAGE
from bot.notices.service import REASONS, ClassReport, NoticeService
from bot.roster.authz import ClassObj, Subject, can, may_list_missing
from bot.roster.model import Who, class_label
from bot.store import keys
from bot.web import pages
from bot.web import security as sec
from bot.wechat.errors import WeChatAPIError, WeChatError
from bot.wechat.protocol import mask_openid

if TYPE_CHECKING:
    from bot.app import AppContext
    from bot.roster.store import RosterStore

log = logging.getLogger(__name__)

# new_notice_id(): base-36 time + hex, 14 characters; 32 keeps the OAuth state under 128 bytes
_NOTICE_ID = re.compile(r"^[0-9a-z]{1,32}$")
_CODE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_NONCE = re.compile(r"^[A-Za-z0-9_-]{8,32}$")
# bot.roster.model.check_id; a class is "<grade 0-12>-<class>", the class part from parse_class
_SCHOOL_ID = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
_CLASS_ID = re.compile(r"^(?:[0-9]|1[0-2])-[^\s/|%\x00-\x1f\x7f]{1,8}$")
_CLASS_KEY = re.compile(r"^[A-Za-z0-9_-]{10}$")
REGISTERED: web.AppKey[bool] = web.AppKey("notice_pages", bool)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

AGAIN = "请回到微信，从通知卡片重新点开。"


# -- pages that explain ---------------------------------------------------------------------------
def not_found() -> web.Response:
    return pages.message(404, "没有找到这条通知", "这条通知可能已被撤回，或链接不完整。", AGAIN, icon="🔍")


def refused() -> web.Response:
    return pages.message(
        403,
        "这条通知不是发给您的",
        "只有通知对象的家长可以查看和确认。",
        "如果您是孩子的家长，请先在公众号对话中发送班级码，绑定孩子。",
        icon="🔒",
    )


def link_expired() -> web.Response:
    return pages.message(400, "链接已失效", "为保护您的信息，这个链接只能在10分钟内使用一次。", AGAIN, icon="⏱️")


def page_expired() -> web.Response:
    return pages.message(403, "页面已过期", "没有提交成功，请重新打开通知再确认。", AGAIN, icon="⏱️")


def wechat_unavailable() -> web.Response:
    return pages.message(
        503, "微信暂时没有响应", "暂时无法确认您的身份。", "请稍等一会儿，再从通知卡片点开。", icon="📶"
    )


def busy() -> web.Response:
    return pages.message(
        503, "系统有点忙", "暂时打不开通知。", "请稍等一会儿再试；您也可以在公众号对话中回复「确认」。", icon="⏳"
    )


def broken() -> web.Response:
    return pages.message(
        500, "出了点问题", "我们已经记录，会尽快处理。", "请稍后再试；您也可以在公众号对话中回复「确认」。", icon="🛠️"
    )


def class_refused() -> web.Response:
    return pages.message(
        403,
        "这份名单只给本班老师看",
        "为保护每个家庭的隐私，只有这个班的老师可以查看未确认情况，名单仅班主任可见。",
        "如果您是这个班的老师，请先在公众号对话中用学校给的邀请码绑定班级，再从消息卡片点开。",
        icon="🔒",
    )


def class_not_found() -> web.Response:
    return pages.message(404, "没有找到这个班的名单", "这条通知没有发给这个班，或链接不完整。", AGAIN, icon="🔍")


def _kind(handler: Handler) -> Handler:
    """Whatever fails, the parent gets a page that says what to do, never a traceback."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except RedisError as exc:
            log.error("notice page %s: Redis unavailable (%s)", request.path, type(exc).__name__)
            return busy()
        except Exception:
            log.exception("notice page %s failed", request.path)
            return broken()

    return guarded


def _when(ts: float) -> str:
    t = clock.local(ts)
    return f"{t.month}月{t.day}日 {t:%H:%M}"


# What each reason means for the teacher, and what they can do about it (REASONS has the label).
REASON_HINTS = {
    "no_guardian": "还没有家长绑定孩子，收不到任何通知。可私下请家长在公众号对话中发送班级码绑定。",
    "unfollowed": "家长已取消关注公众号，收不到通知。",
    "not_reached": "通知还没有送到家长（可能仍在发送，或被微信拒收）。",
    "not_opened": "通知已发给家长，家长还没有点开。",
    "not_confirmed": "家长已查看通知，还没有确认。",
}


@dataclass(frozen=True, slots=True)
class Step:
    """One row of the class's funnel: how many students got this far, of those the notice addresses."""

    label: str
    count: int
    total: int

    @property
    def percent(self) -> int:
        return round(100 * self.count / self.total) if self.total else 0


@dataclass(frozen=True, slots=True)
class Missing:
    """The students without a confirmation for one reason: names only (no ids, openids or phones)."""

    label: str
    hint: str
    names: tuple[str, ...]


def class_steps(report: ClassReport, mode: str) -> list[Step]:
    """The funnel counted in students (families), so every row is a share of the same class.

    The service counts cards per guardian (two parents, two cards) and confirmations per student;
    the reasons of the missing students turn the guardian steps into "some guardian of this child
    got this far", and a confirmed child's family has, of course, received and read the notice."""
    f = report.funnel
    reasons = Counter(reason for _sid, _name, reason in report.missing)
    opened = f.confirmed + reasons["not_confirmed"]
    reached = opened + reasons["not_opened"]
    steps = [
        Step("应通知", f.targeted, f.targeted),
        Step("已送达", reached, f.targeted),
        Step("已查看", opened, f.targeted),
    ]
    if mode != "none":
        steps.append(Step("已确认", f.confirmed, f.targeted))
    if mode == "understand":
        steps.append(Step("答对问题", f.understood, f.targeted))
    return steps


def missing_groups(report: ClassReport) -> list[Missing]:
    """The students without a confirmation, grouped by reason in REASONS' order (then any other)."""
    by_reason: dict[str, list[str]] = {}
    for _sid, name, reason in report.missing:
        by_reason.setdefault(reason, []).append(name)
    order = [*REASONS, *sorted(set(by_reason) - set(REASONS))]
    return [
        Missing(REASONS.get(r, "未确认"), REASON_HINTS.get(r, ""), tuple(by_reason[r])) for r in order if r in by_reason
    ]


def missing_counts(report: ClassReport) -> list[tuple[str, int]]:
    """How many students without a confirmation for each reason (REASONS' order), and no name: what
    a subject teacher of the class sees where the class teacher sees :func:`missing_groups`."""
    counts = Counter(reason for _sid, _name, reason in report.missing)
    order = [*REASONS, *sorted(set(counts) - set(REASONS))]
    return [(REASONS.get(r, "未确认"), counts[r]) for r in order if counts[r]]


def class_key(school: str, class_id: str) -> str:
    """A short, stable name for a class in a path (not a secret: the page checks who may see it)."""
    digest = hashlib.sha256(f"{school}/{class_id}".encode()).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")[:10]


def class_path(notice_id: str, school: str, class_id: str) -> str:
    return f"/n/{notice_id}/class/{quote(school, safe='')}/{quote(class_id, safe='')}"


@dataclass(frozen=True, slots=True)
class Child:
    name: str
    class_label: str
    done: bool


class NoticePages:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.key = ctx.config.server.signing_key(ctx.config.wechat)

    @property
    def notices(self) -> NoticeService:
        service: NoticeService = self.ctx.services["notices"]
        return service

    @property
    def roster(self) -> RosterStore:
        store: RosterStore = self.ctx.services["roster"]
        return store

    @property
    def secure(self) -> bool:
        return self.config.server.public_url.startswith("https://")

    def session(self, request: web.Request) -> sec.Session | None:
        return sec.read_session(request.cookies.get(sec.SESSION_COOKIE), self.key)

    # -- logging in through WeChat ---------------------------------------------------------------
    def login(self, request: web.Request, path: str, *, short: str = "") -> web.Response:
        """Off to WeChat's silent OAuth; the state carries where to come back, bound to this browser.

        WeChat allows a state of 128 bytes; a path too long for it comes back through ``short``."""
        nonce = request.cookies.get(sec.OAUTH_COOKIE, "")
        if not _NONCE.match(nonce):
            nonce = sec.new_nonce()  # reused while valid: two quick taps must not break each other
        try:
            state = sec.make_state(path, nonce, self.key)
        except ValueError:
            if not short:
                raise
            state = sec.make_state(short, nonce, self.key)
        redirect_uri = f"{self.config.server.base_url()}/oauth/callback"
        response = pages.redirect(self.ctx.api.oauth_authorize_url(redirect_uri, state))
        sec.set_cookie(response, sec.OAUTH_COOKIE, nonce, max_age=sec.STATE_MAX_AGE, secure=self.secure)
        return response

    async def callback(self, request: web.Request) -> web.StreamResponse:
        found = sec.read_state(request.query.get("state", ""), self.key)
        nonce = request.cookies.get(sec.OAUTH_COOKIE, "")
        if found is None or not nonce.isascii() or not hmac.compare_digest(found[0].encode(), nonce.encode()):
            return link_expired()
        code = request.query.get("code", "")
        if not _CODE.match(code):
            return link_expired()
        try:
            openid = await self.ctx.api.oauth_exchange(code)
        except WeChatAPIError as exc:  # 40029 invalid/expired code, 40163 code used
            log.info("OAuth code refused by WeChat: %s", exc.errcode)
            return link_expired()
        except WeChatError as exc:
            log.warning("OAuth exchange failed: %s", type(exc).__name__)
            return wechat_unavailable()
        try:
            token = sec.session_token(openid, self.key)
        except ValueError:
            log.warning("OAuth answered an unusable openid")
            return wechat_unavailable()
        response = pages.redirect(found[1], status=303)
        sec.set_cookie(response, sec.SESSION_COOKIE, token, max_age=sec.SESSION_MAX_AGE, secure=self.secure)
        return response

    # -- the notice ------------------------------------------------------------------------------
    async def show(self, request: web.Request) -> web.StreamResponse:
        notice_id = request.match_info["id"]
        if not _NOTICE_ID.match(notice_id):
            return not_found()
        session = self.session(request)
        if session is None:
            return self.login(request, f"/n/{notice_id}")
        notice = await self.notices.cached(notice_id)
        if notice is None:
            return not_found()
        who = await self.roster.who(session.openid)
        children = await self.notices.children_in(notice, who)
        if not children:
            log.info("notice %s refused to %s: not in its audience", notice_id, mask_openid(session.openid))
            return refused()
        await self.notices.opened(notice_id, session.openid)  # only moves a record that exists, forward
        record = await self.notices.record(notice_id, session.openid)
        return await self.page(notice, session, children, record, request.query.get("r", ""))

    async def page(
        self,
        notice: Notice,
        session: sec.Session,
        children: list[tuple[str, str, str]],
        record: Record | None,
        flash: str,
    ) -> web.Response:
        draft = notice.draft
        confirmations = await self.confirmations(notice.id, children)
        needed = "k" if draft.mode == "understand" else ""
        kids = []
        for school, class_id, sid in children:
            student = await self.roster.student(school, class_id, sid)
            conf = confirmations.get(f"{school}/{sid}")
            counted = conf is not None and conf[2].endswith(needed)  # understand mode: answered right
            kids.append(Child(student.name if student else "您的孩子", class_label(class_id), counted))
        own_done = record is not None and record.status in ((UNDERSTOOD,) if needed else (CONFIRMED, UNDERSTOOD))
        family = [c for c in confirmations.values() if c is not None and c[2].endswith(needed)]
        done = own_done or (len(family) == len(children))
        done_at = ""
        if own_done and record is not None and record.at:
            done_at = f"确认时间：{_when(record.at)}"
        elif done and family:
            done_at = f"确认时间：{_when(max(at for _, at, _ in family))}"
        question = draft.question if draft.mode == "understand" else None
        right = question.options[question.answer] if question is not None and flash == "wrong" else ""
        review = await self.review(draft.lesson, children, kids)
        now = clock.now()
        context: dict[str, Any] = {
            "notice": draft,
            "children": kids,
            "mode": draft.mode,
            "deadline": _when(draft.deadline) if draft.deadline else "",
            "overdue": bool(draft.deadline) and now > draft.deadline and not done,
            "done": done,
            "done_text": "您已确认" if own_done else "您的家人已确认",
            "done_at": done_at,
            "question": question,
            "right_answer": right,
            "flash": _flash(flash, done),
            "csrf": sec.csrf_token(session, f"confirm:{notice.id}", self.key),
            "action": f"/n/{notice.id}/confirm",
            "lesson": draft.lesson,
            "review": review,
        }
        return pages.render("notice.html", **context)

    async def review(self, lesson: str, children: list[tuple[str, str, str]], kids: list[Child]) -> list[str]:
        """Before the season of a risk comes back: what each child missed last time on that topic."""
        store, library = self.ctx.services.get("lesson_store"), self.ctx.services.get("lesson_library")
        if not lesson or store is None or library is None:
            return []
        from bot.lessons.content import TOPICS
        from bot.lessons.review import review_lines

        found = library.get(lesson)
        topic = lesson if lesson in TOPICS else (found.topic if found is not None else "")
        if not topic:
            return []
        who = [(school, sid, kid.name) for (school, _c, sid), kid in zip(children, kids, strict=True)]
        lines = await review_lines(store, library, who, topic)
        return list(lines.values())

    async def confirmations(
        self, notice_id: str, children: list[tuple[str, str, str]]
    ) -> dict[str, tuple[str, float, str] | None]:
        """Per child ("school/student"): (openid, time, "k" if understood) of its confirmation, if any.
        (Reads the service's confirmation hash; belongs in NoticeService once it can take it.)"""
        fields = [f"{school}/{sid}" for school, _c, sid in children]
        raws: list[Any] = await self.ctx.redis.hmget(keys.notice_confirmations(notice_id), fields)
        out: dict[str, tuple[str, float, str] | None] = {}
        for name, raw in zip(fields, raws, strict=True):
            if not raw:
                out[name] = None
                continue
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            openid, _, rest = text.partition("|")
            at, _, flag = rest.partition("|")
            out[name] = (openid, float(at or 0), flag)
        return out

    # -- confirming ------------------------------------------------------------------------------
    async def confirm(self, request: web.Request) -> web.StreamResponse:
        notice_id = request.match_info["id"]
        if not _NOTICE_ID.match(notice_id):
            return not_found()
        back = f"/n/{notice_id}"
        if not sec.same_origin(request, self.config.server.base_url()):
            return page_expired()
        session = self.session(request)
        if session is None:
            return pages.redirect(back, status=303)  # the page logs in again; nothing is recorded
        try:
            body = await sec.read_body(request)
            form = parse_qs(body.decode("utf-8", "replace"), max_num_fields=8)
        except sec.BodyTooLarge:
            return pages.message(413, "内容太长", "没有提交成功。", AGAIN)
        except ValueError:
            return page_expired()
        if not sec.check_csrf(session, f"confirm:{notice_id}", self.key, _first(form, "csrf")):
            log.info("confirmation of %s refused: bad CSRF token", notice_id)
            return page_expired()
        notice = await self.notices.cached(notice_id)
        if notice is None:
            return not_found()
        answer: int | None = None
        question = notice.draft.question
        if notice.draft.mode == "understand" and question is not None:
            raw = _first(form, "answer")
            if not (raw.isdigit() and len(raw) <= 2 and int(raw) < len(question.options)):
                return pages.redirect(f"{back}?r=pick", status=303)
            answer = int(raw)
        who: Who = await self.roster.who(session.openid)
        result = await self.notices.confirm(notice_id, session.openid, who, answer=answer)
        if result.ok:
            return pages.redirect(f"{back}?r=ok", status=303)
        if result.reason == "wrong_answer":
            return pages.redirect(f"{back}?r=wrong", status=303)
        if result.reason == "not_in_audience":
            return refused()
        if result.reason == "unknown_notice":
            return not_found()
        return pages.redirect(back, status=303)  # no_confirmation: the page says nothing is needed

    # -- a class's list, for its teachers (names: the class teacher's) -----------------------------
    async def class_list(self, request: web.Request) -> web.StreamResponse:
        notice_id = request.match_info["id"]
        school, class_id = request.match_info["school"], request.match_info["class_id"]
        if not (_NOTICE_ID.match(notice_id) and _SCHOOL_ID.match(school) and _CLASS_ID.match(class_id)):
            return not_found()
        session = self.session(request)
        if session is None:
            short = f"/n/{notice_id}/c/{class_key(school, class_id)}"
            try:
                return self.login(request, class_path(notice_id, school, class_id), short=short)
            except ValueError:  # not even the short way fits: no notice of ours has such an id
                return not_found()
        notice = await self.notices.cached(notice_id)
        if notice is None:
            return not_found()
        schools = await self.roster.schools()
        districts = {s.id: s.district for s in schools.values()}
        subject = Subject.from_who(session.openid, await self.roster.who(session.openid), districts)
        district = districts.get(school, "")
        if not can(subject, "view", ClassObj(district, school, class_id)):
            log.info("class list %s/%s of %s refused to %s", school, class_id, notice_id, mask_openid(session.openid))
            return class_refused()
        addressed = any(s.covers_class(district, school, class_id) for s in notice.draft.audience)
        if not district or not addressed or await self.roster.class_info(school, class_id) is None:
            return class_not_found()
        reports = await self.notices.class_reports(notice, classes=[(school, class_id)])
        if not reports:
            return class_not_found()
        report = reports[0]
        draft = notice.draft
        now = clock.now()
        names = may_list_missing(subject, district, school, class_id)  # else counts by reason
        context: dict[str, Any] = {
            "notice": draft,
            "mode": draft.mode,
            "deadline": _when(draft.deadline) if draft.deadline else "",
            "overdue": bool(draft.deadline) and now > draft.deadline,
            "school_name": schools[school].name,
            "class_label": report.label,
            "steps": class_steps(report, draft.mode),
            "missing": len(report.missing),
            "names": names,
            "groups": missing_groups(report) if draft.mode != "none" and names else [],
            "counts": missing_counts(report) if draft.mode != "none" and not names else [],
            "updated": _when(now),
        }
        return pages.render("class_list.html", list_note=LIST_NOTE_PAGE, **context)

    async def class_link(self, request: web.Request) -> web.StreamResponse:
        """``/n/{id}/c/{key}``: the way back from WeChat when the list's own path is too long for
        the OAuth state (a long school id, a class named in Chinese): on to the signed-in teacher's
        class with that key. Nobody reaches a class they do not teach this way either."""
        notice_id, key = request.match_info["id"], request.match_info["key"]
        if not (_NOTICE_ID.match(notice_id) and _CLASS_KEY.match(key)):
            return not_found()
        session = self.session(request)
        if session is None:
            return self.login(request, f"/n/{notice_id}/c/{key}")
        who = await self.roster.who(session.openid)
        for t in who.teaches:
            if class_key(t.school, t.class_id) == key:
                return pages.redirect(class_path(notice_id, t.school, t.class_id), status=303)
        return class_refused()


def _flash(flag: str, done: bool) -> str:
    """The result of the last submission, as far as it still holds: thanks once done, else the hint."""
    if done:
        return "ok" if flag == "ok" else ""
    return flag if flag in ("wrong", "pick") else ""


def _first(form: dict[str, list[str]], name: str) -> str:
    values = form.get(name)
    return values[0] if values else ""


def register(ctx: AppContext) -> None:
    """Add the notice page, the class lists and the OAuth callback to the app (once, however often
    it is called)."""
    if ctx.app.get(REGISTERED):
        return
    ctx.app[REGISTERED] = True
    p = NoticePages(ctx)
    ctx.app.router.add_get("/n/{id}", _kind(p.show))
    ctx.app.router.add_post("/n/{id}/confirm", _kind(p.confirm))
    ctx.app.router.add_get("/n/{id}/class/{school}/{class_id}", _kind(p.class_list))
    ctx.app.router.add_get("/n/{id}/c/{key}", _kind(p.class_link))
    ctx.app.router.add_get("/oauth/callback", _kind(p.callback))
