"""The audit log page: filter by person, action, school and dates; export as CSV.

A district administrator reads their district's entries, a school administrator their school's, a
teacher those about their own classes (and their own sign-ins); each entry is checked with
``authz.can(view, ReportObj(...))`` for the place it names.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import date, datetime, time

from aiohttp import web

from bot import clock
from bot.console.audit import ACTIONS, AuditEntry, AuditFilter
from bot.console.scope import SCHOOL_RE, may_view, schools_in_scope
from bot.console.web import CONSOLE, Console, Viewer, when
from bot.roster.model import class_label
from bot.wechat.protocol import mask_openid

PAGE_ROWS = 200
CSV_ROWS = 10_000
CSV_COLUMNS = ("time", "action", "action_label", "actor", "actor_label", "district", "school", "classes", "target",
               "summary")  # fmt: skip


def visible_to(viewer: Viewer) -> Callable[[AuditEntry], bool]:
    s = viewer.subject

    def visible(e: AuditEntry) -> bool:
        if e.actor == s.name:
            return True
        if s.role == "teacher":
            return bool(e.school) and any(may_view(s, e.district, e.school, cid) for cid in e.classes)
        if e.school:
            return may_view(s, e.district, e.school)
        return may_view(s, e.district)

    return visible


def _day(text: str, *, end: bool) -> float:
    try:
        d = date.fromisoformat(text)
    except ValueError:
        return 0.0
    moment = datetime.combine(d, time.max if end else time.min, tzinfo=clock.zone())
    return moment.timestamp()


def _filter(request: web.Request) -> tuple[AuditFilter, dict[str, str]]:
    q = request.query
    values = {k: q.get(k, "")[:64] for k in ("actor", "action", "school", "since", "until")}
    school = values["school"] if SCHOOL_RE.match(values["school"]) else ""
    known = set(ACTIONS) | {a.split(".")[0] for a in ACTIONS}
    action = values["action"] if values["action"] in known else ""
    wanted = AuditFilter(since=_day(values["since"], end=False), until=_day(values["until"], end=True),
                         actor=values["actor"].strip(), action=action, school=school)  # fmt: skip
    return wanted, values


def _districts(viewer: Viewer) -> set[str]:
    s = viewer.subject
    if s.district:
        return {s.district}
    return {d for d in s.districts.values() if d}


async def _entries(request: web.Request, viewer: Viewer, limit: int) -> tuple[list[AuditEntry], dict[str, str]]:
    c = request.config_dict[CONSOLE]
    wanted, values = _filter(request)
    visible = visible_to(viewer)
    entries = await c.audit.entries(_districts(viewer), visible, wanted, limit=limit)
    return entries, values


async def audit_page(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    c = request.config_dict[CONSOLE]
    entries, values = await _entries(request, viewer, PAGE_ROWS)
    schools = await schools_in_scope(c, viewer)
    names = dict(schools)
    query = "&".join(f"{k}={v}" for k, v in values.items() if v)
    return c.page(viewer, "audit.html", nav="audit", title="操作日志", entries=entries, values=values, actions=ACTIONS,
                  schools=schools, names=names, query=query, limit=PAGE_ROWS)  # fmt: skip


def _actor(actor: str) -> str:
    """A console account's name as it is; a WeChat teacher's openid masked (an export needs no more)."""
    return actor if actor.startswith("console:") else mask_openid(actor)


def _cell(value: str) -> str:
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


async def audit_csv(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    entries, _ = await _entries(request, viewer, CSV_ROWS)
    out = io.StringIO()
    out.write("\ufeff")  # Excel reads the Chinese right
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for e in entries:
        row = (when(e.at), e.action, e.action_label, _actor(e.actor), e.actor_label, e.district, e.school,
               " ".join(class_label(cid) for cid in e.classes), e.target, e.summary)  # fmt: skip
        writer.writerow([_cell(v) for v in row])
    headers = {"Content-Disposition": 'attachment; filename="audit.csv"', "Cache-Control": "no-store"}
    return web.Response(text=out.getvalue(), content_type="text/csv", charset="utf-8", headers=headers)


def register(c: Console) -> None:
    c.get("/audit", audit_page)
    c.get("/audit.csv", audit_csv)
