"""Notices in the chat: delivery reports from WeChat, 确认 by parents, 发通知 and 未确认 for teachers.

未确认 names the students whose families have not confirmed only to the class teacher of that class
(``authz.may_list_missing``); a subject teacher gets, for that class, how many and why.
"""

from __future__ import annotations

import time

from bot import clock
from bot.chat.router import Command, Event, MenuKey, Pattern, Router, State, Update
from bot.chat.state import ChatState
from bot.chat.texts import Texts
from bot.config import Config
from bot.notices.model import CARD_FIELD_MAX, Draft, Notice, NoticeError, Question, card_text
from bot.notices.report import missing_counts
from bot.notices.service import REASONS, NoticeService
from bot.roster import authz
from bot.roster.authz import Scope
from bot.roster.chat import directory
from bot.roster.model import Who, class_label, grade_of
from bot.roster.store import RosterStore
from bot.store import keys

router = Router(name="notices")

NOTICES_KEY = "NOTICES"
LETTERS = "ABCD"
MISSING_ROWS = 25  # keep the passive reply under WeChat's size limit


# -- WeChat's delivery report ------------------------------------------------------------------
@router.handler(Event("templatesendjobfinish"))
async def job_finished(update: Update, notices: NoticeService) -> None:
    raw = getattr(update.message, "_data", {}) or {}
    msgid, status = str(raw.get("MsgID", "")), str(raw.get("Status", ""))
    if msgid:
        await notices.delivered(update.openid, msgid, status)
    return None


# -- parents: 确认 ------------------------------------------------------------------------------
def _letter(text: str) -> int | None:
    t = text.strip().upper().removeprefix("选")
    return LETTERS.index(t) if len(t) == 1 and t in LETTERS else None


async def _confirm(
    notice: Notice, notices: NoticeService, openid: str, who: Who, state: ChatState, texts: Texts
) -> str:
    q = notice.draft.question
    if notice.draft.mode == "understand" and q is not None:
        state.set("notice:answer", n=notice.id)
        return texts.render("notices/question", title=notice.draft.title, question=q.text, options=list(q.options))
    result = await notices.confirm(notice.id, openid, who)
    state.clear()
    if not result.ok:
        return texts.render("notices/not_for_you")
    return texts.render("notices/confirmed", title=notice.draft.title)


@router.handler(Command("确认", "已读", "收到", "已确认"))
async def confirm_in_chat(notices: NoticeService, openid: str, who: Who, state: ChatState, texts: Texts) -> str:
    waiting = await notices.waiting_for(openid)
    if not waiting:
        return texts.render("notices/none_waiting")
    if len(waiting) == 1:
        return await _confirm(waiting[0], notices, openid, who, state, texts)
    state.set("notice:pick", ids=[n.id for n in waiting[:9]])
    return texts.render("notices/pick", notices=[n.draft for n in waiting[:9]])


@router.handler(State("notice:pick"), Pattern(r"\d"))
async def picked(text: str, notices: NoticeService, openid: str, who: Who, state: ChatState, texts: Texts) -> str:
    ids = state.get("ids", [])
    n = int(text)
    if not 1 <= n <= len(ids):
        return texts.render("roster/bad_number", command="确认")
    notice = await notices.cached(ids[n - 1])
    if notice is None:
        state.clear()
        return texts.render("notices/none_waiting")
    return await _confirm(notice, notices, openid, who, state, texts)


@router.handler(State("notice:answer"), Pattern(r"(?:选)?\s*[A-Da-d]"))
async def answered(text: str, notices: NoticeService, openid: str, who: Who, state: ChatState, texts: Texts) -> str:
    notice = await notices.cached(state.get("n", ""))
    answer = _letter(text)
    if notice is None or answer is None:
        state.clear()
        return texts.render("notices/none_waiting")
    result = await notices.confirm(notice.id, openid, who, answer=answer)
    if result.reason == "wrong_answer":
        return texts.render("notices/wrong_answer", right=result.right_answer)
    state.clear()
    if not result.ok:
        return texts.render("notices/not_for_you")
    return texts.render("notices/confirmed", title=notice.draft.title)


@router.handler(Command("通知", "我的通知", "待确认"))
@router.handler(MenuKey(NOTICES_KEY))
async def waiting_list(notices: NoticeService, openid: str, texts: Texts, config: Config) -> str:
    waiting = await notices.waiting_for(openid)
    base = config.server.base_url()
    items = [{"title": n.draft.title, "url": f"{base}/n/{n.id}"} for n in waiting[:5]]
    return texts.render("notices/waiting_list", notices=items)


# -- teachers: 未确认 ---------------------------------------------------------------------------
async def _latest_for_classes(
    notices: NoticeService, classes: set[tuple[str, str]], districts: dict[str, str]
) -> Notice | None:
    now = clock.now()
    ids: list[str] = await notices.r.zrevrangebyscore(  # type: ignore[assignment]
        keys.notices_by_time(), now + 60, now - notices.config.notices.recent_days * 86400, start=0, num=50
    )
    for nid in ids:
        notice = await notices.cached(nid)
        if notice is None or notice.draft.mode == "none":
            continue
        if any(s.covers_class(districts.get(sc, ""), sc, cid) for s in notice.draft.audience for sc, cid in classes):
            return notice
    return None


@router.handler(Command("未确认", "未确认名单", "谁没确认"))
async def missing(notices: NoticeService, store: RosterStore, openid: str, who: Who, texts: Texts) -> str:
    if not who.is_teacher:
        return texts.render("roster/not_teacher")
    classes = {(t.school, t.class_id) for t in who.teaches}
    districts = (await directory(store)).districts
    notice = await _latest_for_classes(notices, classes, districts)
    if notice is None:
        return texts.render("notices/missing", reports=[], title="")
    subject = authz.Subject.from_who(openid, who, districts)
    reports = await notices.class_reports(notice, classes=sorted(classes))
    rows = []
    budget = MISSING_ROWS
    for r in reports:
        row = {"label": r.label, "confirmed": r.funnel.confirmed, "targeted": r.funnel.targeted}
        if authz.may_list_missing(subject, districts.get(r.school, ""), r.school, r.class_id):
            shown = [{"name": name, "reason": REASONS[reason]} for _sid, name, reason in r.missing[:budget]]
            budget -= len(shown)
            row.update(names=True, missing=shown, more=len(r.missing) - len(shown))
        else:  # a subject teacher: how many and why, never who
            counts = [{"reason": REASONS.get(code, code), "count": n} for code, n in missing_counts(r).items() if n]
            row.update(names=False, counts=counts, total=len(r.missing))
        rows.append(row)
    return texts.render("notices/missing", reports=rows, title=notice.draft.title,
                        any_names=any(row["names"] for row in rows))  # fmt: skip


# -- teachers: 发通知, step by step --------------------------------------------------------------
MODE_NAMES = {"none": "仅通知", "confirm": "请家长确认", "understand": "确认并回答问题"}


def _deadline_choices(now: float) -> list[tuple[str, float]]:
    today8 = clock.next_at(now, "20:00")
    return [
        ("今天20:00" if clock.local(today8).date() == clock.local(now).date() else "明天20:00", today8),
        (clock.fmt(today8 + 86400), today8 + 86400),
        (clock.fmt(today8 + 3 * 86400), today8 + 3 * 86400),
    ]


@router.handler(Command("发通知", "发送通知", "新通知"))
async def compose_start(who: Who, state: ChatState, texts: Texts, store: RosterStore) -> str:
    led = [t for t in who.teaches if t.role == "c"]
    if not led:
        return texts.render("roster/not_teacher")
    if len(led) == 1:
        state.set("n:title", classes=[[led[0].school, led[0].class_id]], started=int(time.time()))
        return texts.render("notices/compose_title")
    state.set("n:class", options=[[t.school, t.class_id] for t in led], started=int(time.time()))
    return texts.render("notices/compose_class", classes=[class_label(t.class_id) for t in led])


@router.handler(State("n:class"), Pattern(r"[\d\s,，]+"))
async def compose_class(text: str, state: ChatState, texts: Texts) -> str:
    options = state.get("options", [])
    picks = {int(x) for x in text.replace(",", " ").replace("，", " ").split() if x.isdigit()}
    if not picks or any(not 1 <= p <= len(options) for p in picks):
        return texts.render("notices/compose_class", classes=[class_label(o[1]) for o in options])
    state.set("n:title", classes=[options[p - 1] for p in sorted(picks)], started=state.get("started"))
    return texts.render("notices/compose_title")


@router.handler(State("n:title"), Pattern(r".+"))
async def compose_title(update: Update, state: ChatState, texts: Texts) -> str:
    raw = str(getattr(update.message, "content", "") or "").strip()
    if "\n" in raw or len(raw) > CARD_FIELD_MAX:
        problem = f"标题有{len(raw)}个字" if len(raw) > CARD_FIELD_MAX else "标题只能是一行"
        return texts.render("notices/compose_title_bad", problem=problem)
    state.update(title=raw)
    state.set("n:body", **state.data)
    return texts.render("notices/compose_body")


@router.handler(State("n:body"), Pattern(r".+"))
async def compose_body(update: Update, state: ChatState, texts: Texts) -> str:
    body = str(getattr(update.message, "content", "") or "").strip()
    state.update(body=body[:5000])
    state.set("n:mode", **state.data)
    return texts.render("notices/compose_mode")


@router.handler(State("n:mode"), Pattern(r"[123]"))
async def compose_mode(text: str, state: ChatState, texts: Texts, notices: NoticeService, store: RosterStore) -> str:
    mode = {"1": "none", "2": "confirm", "3": "understand"}[text]
    state.update(mode=mode)
    if mode == "understand":
        state.set("n:question", **state.data)
        return texts.render("notices/compose_question")
    return await _ask_deadline_or_preview(state, texts, notices, store)


@router.handler(State("n:question"), Pattern(r".{1,100}"))
async def compose_question(text: str, state: ChatState, texts: Texts) -> str:
    state.update(question=text)
    state.set("n:options", **state.data)
    return texts.render("notices/compose_options")


@router.handler(State("n:options"), Pattern(r".+"))
async def compose_options(text: str, state: ChatState, texts: Texts) -> str:
    options = [o for o in text.replace("，", " ").replace(",", " ").replace("、", " ").split() if o][:4]
    if len(options) < 2 or any(len(o) > 40 for o in options):
        return texts.render("notices/compose_options")
    state.update(options=options)
    state.set("n:answer", **state.data)
    return texts.render("notices/compose_answer", options=options)


@router.handler(State("n:answer"), Pattern(r"\d"))
async def compose_answer(text: str, state: ChatState, texts: Texts, notices: NoticeService, store: RosterStore) -> str:
    options = state.get("options", [])
    n = int(text)
    if not 1 <= n <= len(options):
        return texts.render("notices/compose_answer", options=options)
    state.update(answer=n - 1)
    return await _ask_deadline_or_preview(state, texts, notices, store)


async def _ask_deadline_or_preview(state: ChatState, texts: Texts, notices: NoticeService, store: RosterStore) -> str:
    if state.get("mode") == "none":
        state.set("n:preview", **state.data)
        return await _preview(state, texts, notices, store)
    choices = _deadline_choices(clock.now())
    state.set("n:deadline", **state.data, choices=[ts for _, ts in choices])
    return texts.render("notices/compose_deadline", choices=[label for label, _ in choices])


@router.handler(State("n:deadline"), Pattern(r"[123]"))
async def compose_deadline(
    text: str, state: ChatState, texts: Texts, notices: NoticeService, store: RosterStore
) -> str:
    state.update(deadline=state.get("choices", [0, 0, 0])[int(text) - 1])
    state.set("n:preview", **state.data)
    return await _preview(state, texts, notices, store)


async def _audience(store: RosterStore, classes: list[list[str]]) -> tuple[Scope, ...]:
    dirs = await directory(store)
    return tuple(Scope(dirs.districts.get(s, ""), s, grade_of(c), c) for s, c in classes)


async def _preview(state: ChatState, texts: Texts, notices: NoticeService, store: RosterStore) -> str:
    """The notice as it will go out, and whom it reaches now (with the quota warning, if any)."""
    d = state.data
    body = d.get("body", "")
    estimate = await notices.estimate(await _audience(store, d.get("classes", [])))
    return texts.render(
        "notices/compose_preview",
        classes="、".join(class_label(c[1]) for c in d.get("classes", [])),
        title=d.get("title", ""),
        body=body if len(body) <= 120 else body[:118] + "……",
        mode=MODE_NAMES.get(d.get("mode", "confirm"), ""),
        deadline=clock.fmt(d["deadline"]) if d.get("deadline") else "",
        reachable=estimate.reachable,
        targeted=estimate.targeted,
        unbound=estimate.without_guardian,
        warning=estimate.warning,
    )


@router.handler(State("n:preview"), Command("发送", "确认发送", "发"))
async def compose_send(
    state: ChatState, texts: Texts, notices: NoticeService, store: RosterStore, subject: authz.Subject, openid: str
) -> str:
    d = state.data
    state.clear()
    dirs = await directory(store)
    classes: list[list[str]] = d.get("classes", [])
    audience = await _audience(store, classes)
    school_name = dirs.names.get(classes[0][0], "") if classes else ""
    sender = card_text(f"{school_name}{class_label(classes[0][1])}" if len(classes) == 1 else school_name)
    question = None
    if d.get("mode") == "understand":
        question = Question(d.get("question", ""), tuple(d.get("options", [])), int(d.get("answer", 0)))
    draft = Draft(
        title=d.get("title", ""),
        body=d.get("body", ""),
        audience=audience,
        sender=sender,
        mode=d.get("mode", "confirm"),
        question=question,
        deadline=float(d.get("deadline", 0) or 0),
        created_by=openid,
    )
    try:
        _notice, plan, _created = await notices.submit(draft, subject, key=f"chat:{openid}:{d.get('started', '')}")
    except NoticeError as exc:
        return texts.render("notices/compose_bad", problem=f"没能发送：{exc.message}。请回复「发通知」重新开始。")
    if plan is None:
        return texts.render("notices/compose_bad", problem="这条通知已经发送过了。回复「未确认」查看确认情况。")
    return texts.render(
        "notices/sent", reachable=plan.reachable, targeted=plan.targeted, unbound=plan.without_guardian,
        warning=plan.warning,
    )  # fmt: skip
