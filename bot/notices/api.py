"""The notices JSON API (for the console and scripts), authenticated by API tokens (``bot/web/api.py``).

    POST /api/notices                      create and plan (201), or the existing notice (200) for a
                                           repeated idempotency key (body ``idempotency_key`` or the
                                           ``Idempotency-Key`` header; keys are per caller)
    POST /api/notices/estimate             the same body, nothing written: whom it would reach and
                                           how its cards fit today's template quota (the rest spread
                                           over the next days, with the warning the sender will get)
    GET  /api/notices?since=&limit=        recent notices the caller may see, newest first
    GET  /api/notices/{id}                 the notice and its funnel
    GET  /api/notices/{id}/report          funnel per class, per school and in total (?format=csv,
                                           ?school=S, ?class=C)
    GET  /api/notices/{id}/missing?school=S&class=C
                                           the class's students without a confirmation: how many
                                           (``count``) and why (``by_reason``). Names (``missing``,
                                           and ?format=csv) only for that class's class teacher
                                           (``authz.may_list_missing``); API tokens act as school
                                           or district admins, so they get the counts with
                                           ``names_shown: false`` and ``note``, and 403 for the CSV

Reports are scoped: a caller sees the classes they may view (``authz.can(view, ReportObj)``), so a
school admin sees only their school's part of a district notice, and its totals are that part's.
Every sender goes through ``NoticeService.submit``; the helpers that turn input into a Draft are
shared with ``bot send notice`` (``bot/notices/cli.py``).
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bot import clock
from bot.notices import report
from bot.notices.model import MODES, Draft, FollowUp, Notice, NoticeError, Question
from bot.notices.service import NoticeService, Plan
from bot.roster.authz import NoticeObj, ReportObj, Scope, Subject, can, may_list_missing
from bot.roster.model import grade_of
from bot.roster.store import RosterStore
from bot.store import keys
from bot.store.redis import Redis, hget
from bot.web import api as web_api
from bot.web.api import ApiError, invalid, json_response, read_json, subject

if TYPE_CHECKING:
    from bot.app import AppContext

NOTICES: web.AppKey[NoticeService] = web.AppKey("notices", NoticeService)
ROSTER: web.AppKey[RosterStore] = web.AppKey("roster", RosterStore)

KEY_MAX = 100
AUDIENCE_MAX = 200
LIST_DEFAULT, LIST_MAX, LIST_SCAN, LIST_CHUNK = 50, 200, 2000, 200
DEADLINE_MAX_DAYS = 365
FOLLOWUP_MAX_HOURS = 14 * 24
_FIELDS = {"title", "sender", "body", "audience", "mode", "question", "deadline", "urgent", "followup", "lesson",
           "idempotency_key"}  # fmt: skip
_SCOPE_FIELDS = {"district", "school", "grade", "class_id"}
_CLOCK = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


def register(ctx: AppContext) -> None:
    install(ctx.app, ctx.services["notices"], ctx.services["roster"], ctx.redis)


def install(app: web.Application, notices: NoticeService, roster: RosterStore, redis: Redis) -> None:
    web_api.install(app, redis)
    app[NOTICES] = notices
    app[ROSTER] = roster
    app.router.add_post("/api/notices", create_notice)
    app.router.add_post("/api/notices/estimate", estimate_notice)
    app.router.add_get("/api/notices", list_notices)
    app.router.add_get("/api/notices/{id}", get_notice)
    app.router.add_get("/api/notices/{id}/report", notice_report)
    app.router.add_get("/api/notices/{id}/missing", notice_missing)


# -- input → Draft (shared with the CLI) ---------------------------------------------------------
def parse_time(value: object) -> float:
    """ISO 8601 (local time when no offset is given) or epoch seconds; ValueError for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("not a time")
    try:
        if isinstance(value, str) and not re.fullmatch(r"\d{1,12}(\.\d{1,6})?", value.strip()):
            when = datetime.fromisoformat(value.strip())
            ts = (when if when.tzinfo else when.replace(tzinfo=clock.zone())).timestamp()
        else:
            ts = float(value)
    except OverflowError:
        raise ValueError("out of range") from None
    if not 0 <= ts < 1e10:  # before the year 2286: anything else is a typo
        raise ValueError("out of range")
    return ts


def parse_deadline(value: object, now: float, *, field: str = "deadline") -> float:
    """A time (see :func:`parse_time`) in the future, within a year."""
    try:
        ts = parse_time(value)
    except ValueError:
        raise NoticeError(field, f"{str(value)[:40]!r} is not a time like 2026-11-25 18:00 or epoch seconds") from None
    if ts <= now:
        raise NoticeError(field, f"{clock.fmt(ts)} is already past")
    if ts > now + DEADLINE_MAX_DAYS * 86400:
        raise NoticeError(field, f"is more than {DEADLINE_MAX_DAYS} days away")
    return ts


def check_key(key: str, *, field: str = "idempotency_key") -> str:
    if not key or len(key) > KEY_MAX or not key.isprintable() or key != key.strip():
        raise NoticeError(field, f"1–{KEY_MAX} printable characters, no surrounding spaces")
    return key


def idempotency_key(who: Subject, key: str) -> str:
    """Keys are per caller: another caller's identical key neither collides nor reveals their notice."""
    return f"{hashlib.sha256(who.name.encode()).hexdigest()[:12]}:{key}"


def _text(data: dict[str, Any], name: str, *, required: bool = True, default: str = "") -> str:
    value = data.get(name)
    if value is None:
        if required:
            raise NoticeError(name, "is required")
        return default
    if not isinstance(value, str):
        raise NoticeError(name, "must be a string")
    return value


def _scope(raw: object, where: str) -> Scope:
    if not isinstance(raw, dict):
        raise NoticeError(where, "each audience entry is an object {district, school?, grade?, class_id?}")
    unknown = set(raw) - _SCOPE_FIELDS
    if unknown:
        raise NoticeError(f"{where}.{sorted(unknown)[0]}", "unknown field")
    district, school, class_id = (raw.get(k, "") for k in ("district", "school", "class_id"))
    for name, value in (("district", district), ("school", school), ("class_id", class_id)):
        if not isinstance(value, str) or len(value) > 32:
            raise NoticeError(f"{where}.{name}", "must be a string of at most 32 characters")
    if not district:
        raise NoticeError(f"{where}.district", "is required")
    grade = raw.get("grade")
    if grade is not None and (isinstance(grade, bool) or not isinstance(grade, int) or not 0 <= grade <= 12):
        raise NoticeError(f"{where}.grade", "must be a number from 0 (kindergarten) to 12")
    if class_id and not school:
        raise NoticeError(f"{where}.class_id", "a class needs its school")
    return Scope(district, school, grade, class_id)


def _question(raw: object) -> Question:
    if not isinstance(raw, dict):
        raise NoticeError("question", "an object {text, options, answer}")
    text, options, answer = raw.get("text"), raw.get("options"), raw.get("answer")
    if not isinstance(text, str):
        raise NoticeError("question", "text must be a string")
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise NoticeError("question", "options must be a list of strings")
    if isinstance(answer, bool) or not isinstance(answer, int):
        raise NoticeError("question", "answer is the index of the right option, counting from 0")
    return Question(text, tuple(options), answer)


def parse_followup(raw: object) -> FollowUp:
    if not isinstance(raw, dict):
        raise NoticeError("followup", "an object {after_hours, window, teacher_list}")
    default = FollowUp()
    hours = raw.get("after_hours", list(default.after_hours))
    if (
        not isinstance(hours, list)
        or not 1 <= len(hours) <= 5
        or not all(isinstance(h, int | float) and not isinstance(h, bool) for h in hours)
        or not all(0 < h <= FOLLOWUP_MAX_HOURS for h in hours)
    ):
        raise NoticeError("followup", f"after_hours: 1–5 numbers of hours, each in (0, {FOLLOWUP_MAX_HOURS}]")
    window = raw.get("window", list(default.window))
    if not isinstance(window, list) or len(window) != 2 or not all(_CLOCK.match(str(w)) for w in window):
        raise NoticeError("followup", 'window: two local times like ["08:00", "20:00"]')
    teacher_list = raw.get("teacher_list", default.teacher_list)
    if not isinstance(teacher_list, bool):
        raise NoticeError("followup", "teacher_list must be true or false")
    return FollowUp(tuple(sorted(float(h) for h in hours)), (window[0], window[1]), teacher_list)


def draft_from_json(data: dict[str, Any], who: Subject, now: float, *, header_key: str = "") -> tuple[Draft, str]:
    """A validated Draft and the caller's idempotency key ("" if none); NoticeError names the field."""
    unknown = set(data) - _FIELDS
    if unknown:
        raise NoticeError(sorted(unknown)[0], "unknown field")
    audience = data.get("audience")
    if not isinstance(audience, list) or not audience:
        raise NoticeError("audience", "a non-empty list of {district, school?, grade?, class_id?}")
    if len(audience) > AUDIENCE_MAX:
        raise NoticeError("audience", f"at most {AUDIENCE_MAX} entries (address a grade or a school instead)")
    mode = data.get("mode", "confirm")
    if mode not in MODES:
        raise NoticeError("mode", f"must be one of {', '.join(MODES)}")
    question = data.get("question")
    if question is not None and mode != "understand":
        raise NoticeError("question", 'a question is asked only in mode "understand"')
    urgent = data.get("urgent", False)
    if not isinstance(urgent, bool):
        raise NoticeError("urgent", "must be true or false")
    lesson = _text(data, "lesson", required=False)
    if len(lesson) > 64:
        raise NoticeError("lesson", "at most 64 characters")
    key = data.get("idempotency_key")
    key = "" if key is None else key
    if not isinstance(key, str):
        raise NoticeError("idempotency_key", "must be a string")
    if header_key and key and header_key != key:
        raise NoticeError("idempotency_key", "differs from the Idempotency-Key header")
    key = key or header_key
    draft = Draft(
        title=_text(data, "title"),
        body=_text(data, "body"),
        sender=_text(data, "sender"),
        audience=tuple(_scope(s, f"audience[{i}]") for i, s in enumerate(audience)),
        mode=mode,
        question=_question(question) if question is not None else None,
        deadline=parse_deadline(data["deadline"], now) if data.get("deadline") is not None else 0.0,
        urgent=urgent,
        followup=parse_followup(data["followup"]) if data.get("followup") is not None else FollowUp(),
        lesson=lesson,
        created_by=who.name,
    )
    return draft.validate(), check_key(key) if key else ""


async def check_audience(roster: RosterStore, audience: tuple[Scope, ...]) -> None:
    """Every school and class named exists where the audience says (else the notice would reach nobody)."""
    schools = await roster.schools()
    for i, s in enumerate(audience):
        where = f"audience[{i}]"
        if not s.school:
            if not any(school.district == s.district for school in schools.values()):
                raise NoticeError(f"{where}.district", f"no school in district {s.district!r}")
            continue
        school = schools.get(s.school)
        if school is None:
            raise NoticeError(f"{where}.school", f"unknown school {s.school!r}")
        if school.district != s.district:
            raise NoticeError(f"{where}.district", f"school {s.school} is in district {school.district}")
        if s.class_id:
            if await roster.class_info(s.school, s.class_id) is None:
                raise NoticeError(f"{where}.class_id", f"no class {s.class_id} in school {s.school}")
            if s.grade is not None and grade_of(s.class_id) != s.grade:
                raise NoticeError(f"{where}.grade", f"class {s.class_id} is not in grade {s.grade}")


def may_send(who: Subject, draft: Draft) -> bool:
    return can(who, "send_urgent" if draft.urgent else "send", NoticeObj(draft.audience, draft.urgent))


# -- output -----------------------------------------------------------------------------------------
def notice_json(n: Notice, *, body: bool = True) -> dict[str, Any]:
    d = n.draft
    out = report.notice_summary(n)
    out["audience"] = [{"district": s.district, "school": s.school, "grade": s.grade, "class_id": s.class_id}
                       for s in d.audience]  # fmt: skip
    if body:
        out["body"] = d.body
        q = d.question
        out["question"] = {"text": q.text, "options": list(q.options), "answer": q.answer} if q else None
        out["followup"] = d.followup.to_json()
        out["lesson"] = d.lesson
        out["campaign"] = d.campaign
    return out


def plan_json(plan: Plan) -> dict[str, Any]:
    return {
        "classes": plan.classes,
        "targeted": plan.targeted,
        "reachable": plan.reachable,
        "without_guardian": plan.without_guardian,
        "today": plan.today,
        "later": [{"day": f"{d[:4]}-{d[4:6]}-{d[6:]}", "cards": c} for d, c in plan.later],
        "warning": plan.warning,
        "quota_left": plan.quota_left,
        "starts_tomorrow": plan.starts_tomorrow,
    }


# -- what a caller may see --------------------------------------------------------------------------
def may_see(who: Subject, notice: Notice) -> bool:
    """The whole notice, or a part of its audience inside the caller's school or district."""
    return _may_see(who, notice.draft.audience, notice.draft.urgent)


def _may_see(who: Subject, audience: tuple[Scope, ...], urgent: bool) -> bool:
    if can(who, "view", NoticeObj(audience, urgent)):
        return True
    if who.role == "school_admin":
        return any(s.district == who.district and s.school in ("", who.school) for s in audience)
    if who.role == "district_admin":
        return any(s.district == who.district for s in audience)
    return False


async def planned_classes(service: NoticeService, notice: Notice) -> list[tuple[str, str]]:
    """The (school, class) pairs the notice was planned for (empty before planning)."""
    raw = await hget(service.r, keys.notice(notice.id), "classes")
    return [(s, c) for s, _, c in (item.partition("/") for item in json.loads(raw or "[]"))]


async def viewable_classes(
    roster: RosterStore, who: Subject | None, classes: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """The classes whose report ``who`` may view (all of them for the operator: ``who`` None)."""
    if who is None:
        return classes
    districts = {sid: s.district for sid, s in (await roster.schools()).items()}
    return [(s, c) for s, c in classes if can(who, "view", ReportObj(Scope(districts.get(s, ""), s, class_id=c)))]


async def build_report(
    service: NoticeService, roster: RosterStore, notice: Notice, classes: list[tuple[str, str]]
) -> report.Report:
    names = {sid: s.name for sid, s in (await roster.schools()).items()}
    return report.build(notice, await service.class_reports(notice, classes=classes), names)


# -- handlers ---------------------------------------------------------------------------------------
async def _notice(request: web.Request) -> Notice:
    notice = await request.app[NOTICES].get(request.match_info["id"])
    if notice is None:
        raise ApiError(404, "no such notice")
    if not may_see(subject(request), notice):
        raise ApiError(403, "this notice is not addressed to your school or district")
    return notice


async def create_notice(request: web.Request) -> web.Response:
    who = subject(request)
    data = await read_json(request)
    service, roster = request.app[NOTICES], request.app[ROSTER]
    try:
        draft, key = draft_from_json(data, who, clock.now(), header_key=request.headers.get("Idempotency-Key", ""))
        if not may_send(who, draft):
            raise ApiError(403, "you may not send this notice to this audience"
                           + (" (urgent notices need a school or district admin)" if draft.urgent else ""),
                           field="audience")  # fmt: skip
        await check_audience(roster, draft.audience)
        notice, plan, created = await service.submit(draft, who, key=idempotency_key(who, key) if key else "")
    except NoticeError as exc:
        raise invalid(exc.field, exc.message) from None
    body = {"notice": notice_json(notice), "plan": plan_json(plan) if plan else None, "created": created}
    if not created:
        return json_response(body)
    return json_response(body, status=201, headers={"Location": f"/api/notices/{notice.id}"})


async def estimate_notice(request: web.Request) -> web.Response:
    """What ``POST /api/notices`` with this body would do now, without doing it."""
    who = subject(request)
    data = await read_json(request)
    service, roster = request.app[NOTICES], request.app[ROSTER]
    try:
        draft, _key = draft_from_json(data, who, clock.now(), header_key=request.headers.get("Idempotency-Key", ""))
        if not may_send(who, draft):
            raise ApiError(403, "you may not send this notice to this audience", field="audience")
        await check_audience(roster, draft.audience)
    except NoticeError as exc:
        raise invalid(exc.field, exc.message) from None
    estimate = await service.estimate(draft.audience, urgent=draft.urgent)
    out = plan_json(estimate)
    out["quota"] = service.config.wechat.template_quota
    return json_response({"estimate": out})


async def list_notices(request: web.Request) -> web.Response:
    who = subject(request)
    service = request.app[NOTICES]
    now = clock.now()
    since = now - service.config.notices.recent_days * 86400
    try:
        if request.query.get("since"):
            since = _since(request.query["since"])
        limit = int(request.query.get("limit", LIST_DEFAULT))
    except ValueError:
        raise invalid("limit", "must be a whole number") from None
    if not 1 <= limit <= LIST_MAX:
        raise invalid("limit", f"from 1 to {LIST_MAX}")
    ids: list[str] = await service.r.zrevrangebyscore(keys.notices_by_time(), "+inf", since, start=0, num=LIST_SCAN)  # type: ignore[assignment]
    found: list[dict[str, Any]] = []
    for i in range(0, len(ids), LIST_CHUNK):
        part = ids[i : i + LIST_CHUNK]
        async with service.r.pipeline(transaction=False) as pipe:  # the audience only: bodies are large
            for nid in part:
                pipe.hmget(keys.notice(nid), ["audience", "urgent"])
            heads: list[list[str | None]] = await pipe.execute()
        for nid, (audience, urgent) in zip(part, heads, strict=True):
            scopes = tuple(Scope(**s) for s in json.loads(audience or "[]"))
            if not _may_see(who, scopes, urgent == "1"):
                continue
            notice = await service.get(nid)
            if notice is not None:
                found.append(notice_json(notice, body=False))
            if len(found) >= limit:
                return json_response({"notices": found, "since": report.iso(since)})
    return json_response({"notices": found, "since": report.iso(since)})


def _since(value: str) -> float:
    try:
        return parse_time(value)
    except ValueError:
        raise invalid("since", f"{value[:40]!r} is not an ISO 8601 time or epoch seconds") from None


async def get_notice(request: web.Request) -> web.Response:
    notice = await _notice(request)
    service, roster = request.app[NOTICES], request.app[ROSTER]
    classes = await viewable_classes(roster, subject(request), await planned_classes(service, notice))
    rep = await build_report(service, roster, notice, classes)
    return json_response({"notice": notice_json(notice), "funnel": report.funnel_json(rep.totals, notice)})


async def _wanted_classes(request: web.Request, notice: Notice) -> list[tuple[str, str]]:
    """The planned classes matching ?school=&class=, all of which the caller may view (else 403)."""
    service, roster = request.app[NOTICES], request.app[ROSTER]
    school, class_id = request.query.get("school", ""), request.query.get("class", "")
    if class_id and not school:
        raise invalid("school", "give the school of the class")
    planned = await planned_classes(service, notice)
    wanted = [(s, c) for s, c in planned if (not school or s == school) and (not class_id or c == class_id)]
    if (school or class_id) and not wanted:
        raise ApiError(404, "the notice does not address this school or class", field="class" if class_id else "school")
    mine = await viewable_classes(roster, subject(request), wanted)
    if school and len(mine) < len(wanted):
        raise ApiError(403, "you may not view this school's or class's report")
    return mine


async def notice_report(request: web.Request) -> web.Response:
    notice = await _notice(request)
    classes = await _wanted_classes(request, notice)
    rep = await build_report(request.app[NOTICES], request.app[ROSTER], notice, classes)
    if request.query.get("format") == "csv":
        return _csv_response(report.report_csv(rep), f"notice-{notice.id}-report.csv")
    return json_response(report.report_json(rep))


async def notice_missing(request: web.Request) -> web.Response:
    notice = await _notice(request)
    if not request.query.get("school") or not request.query.get("class"):
        raise invalid("class" if request.query.get("school") else "school", "give ?school=S&class=C: one class")
    classes = await _wanted_classes(request, notice)
    [class_report] = await request.app[NOTICES].class_reports(notice, classes=classes)
    districts = {sid: s.district for sid, s in (await request.app[ROSTER].schools()).items()}
    school, class_id = class_report.school, class_report.class_id
    names = may_list_missing(subject(request), districts.get(school, ""), school, class_id)
    if request.query.get("format") == "csv":
        if not names:  # the CSV is the list of names and nothing else; the counts are in /report
            why = "names of families who have not confirmed go only to the class teacher; the counts by reason"
            raise ApiError(403, why + " are in this answer without ?format=csv, and in /report")
        return _csv_response(report.missing_csv([class_report]), f"notice-{notice.id}-{class_id}.csv")
    return json_response({"notice": report.notice_summary(notice), **report.missing_json(class_report, names=names)})


def _csv_response(text: str, filename: str) -> web.Response:
    return web.Response(
        text=text,
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"},
    )
