"""Notices in the console: the list, writing one (live card-length checks, card and page preview),
sending it, its live status, the students without a confirmation and why, CSV exports.

Who has not confirmed, by name, is shown only to that class's class teacher
(``authz.may_list_missing``): anyone else who may view the class (a subject teacher, the school's
or the district's administrator) gets the same page with counts by reason and a note that the list
is the class teacher's, and ``missing.csv`` (a list of names, nothing else) answers them 403; the
counts by reason are in ``report.csv``'s ``missing_*`` columns.

Input becomes a notice exactly as through the JSON API: ``draft_from_json`` (validation, field by
field), ``may_send`` and ``check_audience``, then ``NoticeService.submit`` (authorization again,
idempotent creation, planning). The preview form carries an idempotency key, so pressing 发送 twice
sends once. Every send is written to the audit log.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import replace
from typing import Any

from aiohttp import web

from bot import clock
from bot.console import charts
from bot.console.scope import (
    CLASS_RE,
    SCHOOL_RE,
    Place,
    class_order,
    classes_in_scope,
    may_view,
    place_for,
    schools_in_scope,
    taught,
)
from bot.console.stats import LARGE, LIVE_TTL, NoticeStats, SchoolTotals, funnel_rows, visible
from bot.console.web import CONSOLE, FORM, PREFIX, Console, Viewer, forbidden, message, not_found, redirect
from bot.delivery.cards import CardSender
from bot.notices import report
from bot.notices.api import check_audience, draft_from_json, idempotency_key, may_send, notice_json
from bot.notices.model import CARD_FIELD_MAX, Draft, Notice, NoticeError
from bot.notices.pages import Child
from bot.notices.service import REASONS
from bot.roster.authz import NoticeObj, Scope, can, may_list_missing
from bot.roster.chat import directory
from bot.roster.model import class_label, grade_label
from bot.web import pages

FIELD_LABELS = {"title": "标题", "sender": "发送方", "body": "正文", "audience": "发送对象", "mode": "确认方式",
                "question": "问题", "deadline": "截止时间", "urgent": "紧急", "lesson": "安全课",
                "idempotency_key": "表单"}  # fmt: skip
MODE_LABELS = {"none": "无需确认", "confirm": "确认已读", "understand": "确认并答题"}


def _csv(text: str, filename: str) -> web.Response:
    return web.Response(
        text=text,
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"},
    )


# -- the list -----------------------------------------------------------------------------------------
async def notice_list(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    c = request.config_dict[CONSOLE]
    place = await place_for(c, viewer, request.query.get("school", ""), request.query.get("class", ""))
    if place is None:
        return forbidden(viewer)
    days = 90 if request.query.get("days") == "90" else 30
    rows = [await c.stats.stats(viewer, n, place) for n in await c.stats.notices(viewer, place, days=days)]
    return c.page(viewer, "notices.html", nav="notices", title="通知", place=place, rows=rows, days=days,
                  modes=MODE_LABELS, can_write=bool(await _audiences(c, viewer)))  # fmt: skip


# -- writing --------------------------------------------------------------------------------------------
async def _audiences(c: Console, viewer: Viewer) -> list[dict[str, str]]:
    """What the viewer may address: value → label. Teachers: the classes they lead; admins: their
    district or school, then each school (a grade or class is chosen beside it)."""
    s = viewer.subject
    d = await directory(c.roster)
    if s.role == "teacher":
        return [{"value": f"c:{school}/{cid}", "label": f"{d.names.get(school, school)} {class_label(cid)}"}
                for school, cid in taught(s)
                if can(s, "send", NoticeObj((Scope(d.districts.get(school, ""), school, None, cid),)))]  # fmt: skip
    out = []
    if s.role == "district_admin":
        out.append({"value": "d", "label": f"全区（{s.district}）所有学校"})
    for school, name in await schools_in_scope(c, viewer):
        out.append({"value": f"s:{school}", "label": name})
    return out


def _audience_json(form_values: dict[str, Any], viewer: Viewer, districts: dict[str, str]) -> list[dict[str, Any]]:
    s = viewer.subject
    out: list[dict[str, Any]] = []
    for value in form_values.get("audience", []):
        if value.startswith("c:") and "/" in value:
            school, _, cid = value[2:].partition("/")
            out.append({"district": districts.get(school, ""), "school": school, "class_id": cid})
        elif value == "d":
            out.append({"district": s.district})
        elif value.startswith("s:"):
            school = value[2:]
            entry: dict[str, Any] = {"district": districts.get(school, ""), "school": school}
            grade, cid = form_values.get("grade", ""), form_values.get("class_id", "").strip()
            if cid:
                entry["class_id"] = cid
            if grade.isdigit():
                entry["grade"] = int(grade)
            out.append(entry)
    return out


def _values(form: Any) -> dict[str, Any]:
    """The form's fields as the page shows them again."""
    return {
        "title": form.get("title").strip(),
        "sender": form.get("sender").strip(),
        "body": form.get("body").replace("\r\n", "\n").strip(),
        "mode": form.get("mode") or "confirm",
        "q_text": form.get("q_text").strip(),
        "options": [form.get(f"q_opt{i}").strip() for i in range(1, 5)],
        "answer": form.get("q_answer"),
        "deadline": form.get("deadline").strip(),
        "urgent": form.get("urgent") == "1",
        "audience": form.getall("audience"),
        "grade": form.get("grade"),
        "class_id": form.get("class_id"),
        "key": form.get("key"),
    }


def _check_card(values: dict[str, Any]) -> dict[str, str]:
    """The card fields in the words a teacher reads (the service checks them again)."""
    errors = {}
    for name in ("title", "sender"):
        text = values[name]
        if not text:
            errors[name] = "请填写"
        elif "\n" in text:
            errors[name] = "只能写一行"
        elif len(text) > CARD_FIELD_MAX:
            errors[name] = f"最多{CARD_FIELD_MAX}个字，现在{len(text)}个字（完整内容请写在正文里）"
    if not values["body"]:
        errors["body"] = "请填写正文"
    if not values["audience"]:
        errors["audience"] = "请选择发送对象"
    return errors


async def _draft(c: Console, viewer: Viewer, values: dict[str, Any]) -> tuple[Draft | None, dict[str, str]]:
    errors = _check_card(values)
    if errors:
        return None, errors
    districts = (await directory(c.roster)).districts
    data: dict[str, Any] = {
        "title": values["title"],
        "sender": values["sender"],
        "body": values["body"],
        "mode": values["mode"],
        "urgent": values["urgent"],
        "audience": _audience_json(values, viewer, districts),
    }
    if values["deadline"]:
        data["deadline"] = values["deadline"]
    if values["mode"] == "understand":
        answer = values["answer"]
        options = [o for o in values["options"] if o]
        data["question"] = {"text": values["q_text"], "options": options,
                            "answer": int(answer) - 1 if answer.isdigit() else -1}  # fmt: skip
    try:
        draft, _ = draft_from_json(data, viewer.subject, clock.now())
        if not may_send(viewer.subject, draft):
            why = "（紧急通知需要学校或区县管理员）" if draft.urgent else ""
            raise NoticeError("audience", "您不能给这个对象发送通知" + why)
        await check_audience(c.roster, draft.audience)
    except NoticeError as exc:
        return None, {exc.field.split(".")[0].split("[")[0]: exc.message}
    return draft, {}


async def _form_page(c: Console, viewer: Viewer, values: dict[str, Any], *, errors: dict[str, str] | None = None,
                     status: int = 200) -> web.Response:  # fmt: skip
    school_classes: list[dict[str, str]] = []
    if viewer.subject.role == "school_admin":
        school = viewer.subject.school
        mine = await classes_in_scope(c, viewer, school)
        school_classes = [{"value": cid, "label": class_label(cid)} for cid in mine]
    return c.page(
        viewer, "notice_form.html", nav="notices", status=status, title="写通知", values=values, errors=errors or {},
        labels=FIELD_LABELS, audiences=await _audiences(c, viewer), school_classes=school_classes,
        grades=[(g, grade_label(g)) for g in range(0, 13)], modes=MODE_LABELS, card_max=CARD_FIELD_MAX,
        may_urgent=viewer.is_admin,
    )  # fmt: skip


def _blank(sender: str) -> dict[str, Any]:
    return {"title": "", "sender": sender, "body": "", "mode": "confirm", "q_text": "", "options": ["", "", "", ""],
            "answer": "", "deadline": "", "urgent": False, "audience": [], "grade": "", "class_id": "",
            "key": ""}  # fmt: skip


async def new_notice(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    c = request.config_dict[CONSOLE]
    audiences = await _audiences(c, viewer)
    if not audiences:
        return forbidden(viewer)
    d = await directory(c.roster)
    s = viewer.subject
    if s.role == "teacher":
        sender = audiences[0]["label"].split(" ", 1)[-1] if len(audiences) == 1 else d.names.get(taught(s)[0][0], "")
    elif s.role == "school_admin":
        sender = d.names.get(s.school, "")
    else:
        sender = f"{s.district}教育局"
    values = _blank(sender[:CARD_FIELD_MAX])
    if len(audiences) == 1:
        values["audience"] = [audiences[0]["value"]]
    return await _form_page(c, viewer, values)


async def edit_notice(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    c = request.config_dict[CONSOLE]
    return await _form_page(c, viewer, _values(request[FORM]))


def card_values(c: Console, draft: Draft) -> dict[str, str]:
    """What the card will show, from the same code the worker sends it with."""
    if c.cards is None:
        c.cards = CardSender(c.config, c.redis, c.ctx.api, c.notices)
    data = c.cards.card_data(Notice("preview", draft, clock.now()), 0)
    names = {v: k for k, v in c.cards.keymap.items()}
    return {names[k]: v for k, v in data.items() if k in names}


def h5_preview(draft: Draft) -> str:
    """The parent's page for this draft, as the H5 template renders it (shown in a sandboxed frame)."""
    question = draft.question if draft.mode == "understand" else None
    context = {
        "notice": draft, "children": [Child("孩子姓名", "班级", False)], "mode": draft.mode,
        "deadline": _when(draft.deadline) if draft.deadline else "", "overdue": False, "done": False,
        "done_text": "", "done_at": "", "question": question, "right_answer": "", "flash": "", "csrf": "preview",
        "action": "#", "lesson": draft.lesson,
    }  # fmt: skip
    return pages.environment().get_template("notice.html").render(**context)


def _when(ts: float) -> str:
    t = clock.local(ts)
    return f"{t.month}月{t.day}日 {t:%H:%M}"


def _quota_day(c: Console, draft: Draft, now: float) -> str:
    """The day whose template quota the first cards use, as the sender reads it: 今日 or 明日.

    A notice that is not urgent, planned in quiet hours, goes out when they end (maybe tomorrow)."""
    delivery = c.config.delivery
    first = now
    if not draft.urgent and clock.in_window(now, delivery.quiet_start, delivery.quiet_end):
        first = clock.next_at(now, delivery.quiet_end)
    return "今日" if clock.day_key(first) == clock.day_key(now) else "明日"


async def preview_notice(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    c = request.config_dict[CONSOLE]
    values = _values(request[FORM])
    draft, errors = await _draft(c, viewer, values)
    if draft is None:
        return await _form_page(c, viewer, values, errors=errors, status=422)
    values["key"] = values["key"] or secrets.token_urlsafe(12)
    now = clock.now()
    # whom it reaches and how its cards fit the template quota, as the chat preview and the API show it
    plan = await c.notices.estimate(draft.audience, urgent=draft.urgent, now=now)
    if not draft.deadline:  # as the service will set it (notices.default_deadline_hours)
        draft = replace(draft, deadline=clock.now() + c.config.notices.default_deadline_hours * 3600)
    return c.page(
        viewer, "notice_preview.html", nav="notices", title="预览通知", values=values, draft=draft,
        card=card_values(c, draft), h5=h5_preview(draft), plan=plan, quota=c.config.wechat.template_quota,
        quota_day=_quota_day(c, draft, now), modes=MODE_LABELS,
        audience=_audience_text(draft, (await directory(c.roster)).names),
    )  # fmt: skip


def _audience_text(draft: Draft, names: dict[str, str]) -> str:
    parts = []
    for s in draft.audience:
        if not s.school:
            parts.append(f"{s.district} 全区")
            continue
        text = names.get(s.school, s.school)
        if s.grade is not None:
            text += f" {grade_label(s.grade)}"
        if s.class_id:
            text += f" {class_label(s.class_id)}"
        parts.append(text)
    return "、".join(parts)


async def send_notice(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    c = request.config_dict[CONSOLE]
    values = _values(request[FORM])
    draft, errors = await _draft(c, viewer, values)
    if draft is None:
        return await _form_page(c, viewer, values, errors=errors, status=422)
    key = values["key"] if 8 <= len(values["key"]) <= 32 else secrets.token_urlsafe(12)
    try:
        notice, plan, created = await c.notices.submit(draft, viewer.subject, key=idempotency_key(viewer.subject, key))
    except NoticeError as exc:
        return await _form_page(c, viewer, values, errors={exc.field.split(".")[0]: exc.message}, status=422)
    if created:
        d = await directory(c.roster)
        schools = sorted({s.school for s in draft.audience if s.school})
        classes = tuple(sorted({s.class_id for s in draft.audience if s.class_id}))
        figures = f"，{plan.reachable} 位家长，{plan.targeted} 名学生" if plan is not None else ""
        await c.record(viewer, "notice.send", district=draft.audience[0].district,
                       school=schools[0] if len(schools) == 1 else "", classes=classes, target=notice.id,
                       summary=f"「{draft.title}」→ {_audience_text(draft, d.names)}{figures}")  # fmt: skip
    flash = "again" if not created else "later" if plan is not None and plan.later else "sent"
    return redirect(f"{PREFIX}/notices/{notice.id}?flash={flash}")


# -- one notice -----------------------------------------------------------------------------------------
async def _notice(request: web.Request, viewer: Viewer) -> tuple[Console, Notice | None, Place | None]:
    c = request.config_dict[CONSOLE]
    notice_id = request.match_info["id"]
    if not notice_id.isalnum() or len(notice_id) > 32:
        return c, None, None
    notice = await c.notices.cached(notice_id)
    districts = (await directory(c.roster)).districts
    if notice is None or not visible(viewer.subject, notice, districts):
        return c, None, None
    place = await place_for(c, viewer, request.query.get("school", ""), request.query.get("class", ""))
    return c, notice, place


def _school_rows(stats: NoticeStats, names: dict[str, str]) -> list[SchoolTotals]:
    """Per school: what Stats.whole counted, or the class reports summed."""
    if stats.schools:
        rows = list(stats.schools)
    else:
        by_school: dict[str, SchoolTotals] = {}
        for r in stats.classes:
            row = by_school.setdefault(r.school, SchoolTotals(r.school))
            row.classes += 1
            row.targeted += r.funnel.targeted
            row.confirmed += r.funnel.confirmed
            row.understood += r.funnel.understood
        rows = list(by_school.values())
    return sorted(rows, key=lambda x: (names.get(x.school, x.school), x.school))


async def notice_page(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    c, notice, place = await _notice(request, viewer)
    if notice is None:
        return not_found(viewer)
    if place is None:
        return forbidden(viewer)
    stats = await c.stats.stats(viewer, notice, place, max_age=LIVE_TTL, per_school=True)
    names = (await directory(c.roster)).names
    classes = sorted(stats.classes, key=lambda r: (names.get(r.school, r.school), class_order(r.class_id)))
    schools = _school_rows(stats, names) if stats.schools or len(classes) > LARGE else []
    stages = funnel_rows(stats.funnel, notice.draft.mode)
    chart = charts.funnel_chart(
        [(s["label"], s["value"], s["pct"]) for s in stages], label=f"「{notice.draft.title}」的送达与确认"
    )
    by_class = None
    if notice.draft.mode != "none" and 1 < len(classes) <= LARGE:
        points = [
            charts.Point(r.label, _pct(r.funnel.confirmed, r.funnel.targeted), f"{names.get(r.school, '')} {r.label}")
            for r in classes
        ]
        by_class = charts.bar_chart(points, label="各班确认率")
    status_url = f"{PREFIX}/notices/{notice.id}/status.json?{place.query()}"
    return c.page(
        viewer, "notice.html", nav="notices", title=notice.draft.title, notice=notice, place=place, stats=stats,
        stages=stages, chart=chart, by_class=by_class, classes=classes, schools=schools, names=names,
        several_schools=len({r.school for r in classes}) > 1,
        modes=MODE_LABELS, reasons=REASONS, flash=request.query.get("flash", ""),
        h5=h5_preview(notice.draft), card=card_values(c, notice.draft), status_url=status_url,
    )  # fmt: skip


def _pct(part: int, whole: int) -> float | None:
    return 100 * part / whole if whole else None


async def notice_status(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    c, notice, place = await _notice(request, viewer)
    if notice is None or place is None:
        return web.json_response({"error": "not found"}, status=404)
    stats = await c.stats.stats(viewer, notice, place, max_age=LIVE_TTL)
    body = {"notice": notice_json(notice, body=False), "funnel": report.funnel_json(stats.funnel, notice),
            "at": report.iso(clock.now())}  # fmt: skip
    return web.json_response(body, dumps=lambda d: json.dumps(d, ensure_ascii=False))


async def _one_class(request: web.Request, viewer: Viewer) -> tuple[Console, Notice | None, Any, bool]:
    """The notice, one class's report (False: may not view the class; None: not found), and whether
    the viewer may see that class's non-confirmers by name."""
    c, notice, _ = await _notice(request, viewer)
    school, cid = request.query.get("school", ""), request.query.get("class", "")
    if notice is None or not SCHOOL_RE.match(school) or not CLASS_RE.match(cid):
        return c, None, None, False
    district = (await directory(c.roster)).districts.get(school, "")
    if not may_view(viewer.subject, district, school, cid):
        return c, notice, False, False
    if (school, cid) not in await c.notices.planned_classes(notice):
        return c, None, None, False
    [class_report] = await c.notices.class_reports(notice, classes=[(school, cid)])
    return c, notice, class_report, may_list_missing(viewer.subject, district, school, cid)


async def missing_page(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    c, notice, class_report, names_shown = await _one_class(request, viewer)
    if class_report is False:
        return forbidden(viewer)
    if notice is None or class_report is None:
        return not_found(viewer)
    names = (await directory(c.roster)).names
    return c.page(viewer, "missing.html", nav="notices", title="未确认名单" if names_shown else "未确认情况",
                  notice=notice, report=class_report, school_name=names.get(class_report.school, class_report.school),
                  reasons=REASONS, counts=report.missing_counts(class_report), names_shown=names_shown,
                  list_note=report.LIST_NOTE_PAGE)  # fmt: skip


async def missing_csv(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    _, notice, class_report, names_shown = await _one_class(request, viewer)
    if class_report is False:
        return forbidden(viewer)
    if notice is None or class_report is None:
        return not_found(viewer)
    if not names_shown:  # a list of names and nothing else: the class teacher's (counts are in report.csv)
        why = "为保护孩子和家庭的隐私，未确认学生的名单只给本班班主任。"
        return message(403, "名单仅班主任可见", why, "各班未确认的人数和原因，可在通知页导出报表 CSV。", viewer=viewer)
    return _csv(report.missing_csv([class_report]), f"notice-{notice.id}-{class_report.class_id}-missing.csv")


async def report_csv(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    c, notice, place = await _notice(request, viewer)
    if notice is None:
        return not_found(viewer)
    if place is None:
        return forbidden(viewer)
    classes, _ = await c.stats.classes(viewer, notice, place)  # every class, even of a large notice: a download
    reports = await c.notices.class_reports(notice, classes=classes) if classes else []
    names = (await directory(c.roster)).names
    return _csv(report.report_csv(report.build(notice, reports, names)), f"notice-{notice.id}-report.csv")


def register(c: Console) -> None:
    c.get("/notices", notice_list)
    c.get("/notices/new", new_notice)
    c.post("/notices/edit", edit_notice)
    c.post("/notices/preview", preview_notice)
    c.post("/notices/send", send_notice)
    c.get("/notices/{id}", notice_page)
    c.get("/notices/{id}/status.json", notice_status)
    c.get("/notices/{id}/missing", missing_page)
    c.get("/notices/{id}/missing.csv", missing_csv)
    c.get("/notices/{id}/report.csv", report_csv)
