"""A notice's report: the funnel per class, per school and in total, as a table, CSV or JSON.

The funnel: targeted students → reachable guardians → sent → delivered → opened (guardians; the
percentage is of reachable guardians) → confirmed → understood (students; the percentage is of
targeted students). A student counts as confirmed once, whichever guardian confirmed.

Exports carry no more than needed: counts only, never an openid. Student names appear only in one
class's missing list (:func:`missing_csv`, :func:`missing_json` with ``names=True``,
:func:`render_missing`), which the callers give only to that class's class teacher
(``authz.may_list_missing``), and to the operator on the server who asks for it by name
(``bot report notice --missing --names``); everyone else who may view the class gets counts by reason.

CSV files are UTF-8 with a byte-order mark (so Excel opens the Chinese correctly); a text cell that
starts like a formula (``= + - @``) is prefixed with ``'`` so a spreadsheet never evaluates it.
"""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot import clock
from bot.notices.model import Notice
from bot.notices.service import REASONS, ClassReport, Funnel

STAGES = ("targeted", "reachable", "sent", "delivered", "opened", "confirmed", "understood")
OF_REACHABLE = ("sent", "delivered", "opened", "failed")  # guardians
OF_TARGETED = ("confirmed", "understood")  # students

# The report CSV, one row per class, then per school, then the total (the ``level`` column).
REPORT_COLUMNS: dict[str, str] = {
    "level": "class | school | total",
    "school": "school id",
    "school_name": "school name",
    "class_id": "class id (grade-class, e.g. 3-2); empty on school and total rows",
    "class": "class name (三年级（2）班)",
    "targeted": "active students in the audience",
    "reachable": "guardians with a card planned",
    "sent": "guardians whose card WeChat accepted",
    "delivered": "guardians whose card WeChat reported delivered",
    "opened": "guardians who opened the notice page",
    "confirmed": "students confirmed by a guardian (empty when the notice asks no confirmation)",
    "understood": "students whose guardian answered the question right (empty unless mode is understand)",
    "failed": "guardians not reached: blocked, unfollowed, refused or uncertain",
    "confirmed_pct": "confirmed as a percentage of targeted",
    "missing": "students without a confirmation",
    **{f"missing_{code}": f"of them: {label} ({code})" for code, label in REASONS.items()},
}

# The missing list of one class: the only export with names.
MISSING_COLUMNS: dict[str, str] = {
    "school": "school id",
    "class_id": "class id",
    "class": "class name",
    "student_id": "the school's student id (tells apart students of the same name)",
    "name": "student name",
    "reason": "reason code: " + ", ".join(REASONS),
    "reason_label": "the reason in Chinese",
}


@dataclass
class SchoolReport:
    school: str
    name: str
    classes: list[ClassReport] = field(default_factory=list)
    funnel: Funnel = field(default_factory=Funnel)


@dataclass
class Report:
    notice: Notice
    schools: list[SchoolReport]
    totals: Funnel

    @property
    def classes(self) -> list[ClassReport]:
        return [c for s in self.schools for c in s.classes]


def build(notice: Notice, classes: Iterable[ClassReport], school_names: Mapping[str, str]) -> Report:
    by_school: dict[str, SchoolReport] = {}
    totals = Funnel()
    for c in classes:
        school = by_school.setdefault(c.school, SchoolReport(c.school, school_names.get(c.school, c.school)))
        school.classes.append(c)
        school.funnel.add(c.funnel)
        totals.add(c.funnel)
    return Report(notice, list(by_school.values()), totals)


def _asks_confirmation(notice: Notice) -> bool:
    return notice.draft.mode != "none"


def _asks_question(notice: Notice) -> bool:
    return notice.draft.mode == "understand"


def _pct(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 1) if whole else None


def percents(f: Funnel, notice: Notice) -> dict[str, float | None]:
    out = {name: _pct(getattr(f, name), f.reachable) for name in OF_REACHABLE}
    out["confirmed"] = _pct(f.confirmed, f.targeted) if _asks_confirmation(notice) else None
    out["understood"] = _pct(f.understood, f.targeted) if _asks_question(notice) else None
    return out


def missing_counts(c: ClassReport) -> dict[str, int]:
    counts = dict.fromkeys(REASONS, 0)
    for _sid, _name, reason in c.missing:
        counts[reason] = counts.get(reason, 0) + 1
    return counts


# -- JSON ----------------------------------------------------------------------------------------
def iso(ts: float) -> str | None:
    return clock.local(ts).isoformat(timespec="seconds") if ts else None


def notice_summary(notice: Notice) -> dict[str, Any]:
    d = notice.draft
    return {"id": notice.id, "title": d.title, "sender": d.sender, "mode": d.mode, "urgent": d.urgent,
            "created": iso(notice.created), "deadline": iso(d.deadline), "status": notice.status}  # fmt: skip


def funnel_json(f: Funnel, notice: Notice) -> dict[str, Any]:
    return {**f.as_dict(), "missing": f.targeted - f.confirmed, "percent": percents(f, notice)}


def report_json(report: Report) -> dict[str, Any]:
    n = report.notice
    return {
        "notice": notice_summary(n),
        "totals": funnel_json(report.totals, n),
        "schools": [{"school": s.school, "name": s.name, "funnel": funnel_json(s.funnel, n)} for s in report.schools],
        "classes": [
            {
                "school": c.school,
                "class_id": c.class_id,
                "label": c.label,
                "funnel": funnel_json(c.funnel, n),
                "missing": missing_counts(c),
            }
            for c in report.classes
        ],
        "reasons": REASONS,
    }


# Where the names would be, for anyone but the class teacher: short (the API), and for pages.
LIST_NOTE = "名单仅班主任可见"
LIST_NOTE_PAGE = f"{LIST_NOTE}：为保护孩子和家庭的隐私，这里只显示人数和原因。如需跟进，请与本班班主任沟通。"


def missing_json(c: ClassReport, *, names: bool) -> dict[str, Any]:
    """One class's students without a confirmation: how many and why; by name only if ``names``
    (the class teacher: ``authz.may_list_missing``), else a note where the list would be."""
    body: dict[str, Any] = {
        "school": c.school,
        "class_id": c.class_id,
        "label": c.label,
        "count": len(c.missing),
        "by_reason": missing_counts(c),
        "names_shown": names,
    }
    if names:
        body["missing"] = [
            {"student_id": sid, "name": name, "reason": reason, "reason_label": REASONS.get(reason, reason)}
            for sid, name, reason in c.missing
        ]
    else:
        body["note"] = LIST_NOTE
    return body


# -- CSV -----------------------------------------------------------------------------------------
def _cell(value: object) -> object:
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _csv(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([_cell(v) for v in row])
    return out.getvalue()


def _reasons(classes: Iterable[ClassReport]) -> dict[str, int]:
    out = dict.fromkeys(REASONS, 0)
    for c in classes:
        for code, count in missing_counts(c).items():
            out[code] = out.get(code, 0) + count
    return out


def _report_row(
    level: str, school: tuple[str, str], c: ClassReport | None, classes: list[ClassReport], f: Funnel, n: Notice
) -> list[object]:
    confirm, question = _asks_confirmation(n), _asks_question(n)
    reasons = _reasons(classes)
    pct = _pct(f.confirmed, f.targeted)
    return [
        level, school[0], school[1],
        c.class_id if c else "", c.label if c else "",
        f.targeted, f.reachable, f.sent, f.delivered, f.opened,
        f.confirmed if confirm else "",
        f.understood if question else "",
        f.failed,
        pct if confirm and pct is not None else "",
        f.targeted - f.confirmed if confirm else "",
        *(reasons[code] if confirm else "" for code in REASONS),
    ]  # fmt: skip


def report_csv(report: Report) -> str:
    """One row per class, then one per school, then the total; columns in :data:`REPORT_COLUMNS`."""
    n = report.notice
    rows: list[list[object]] = []
    for s in report.schools:
        rows.extend(_report_row("class", (s.school, s.name), c, [c], c.funnel, n) for c in s.classes)
    rows.extend(_report_row("school", (s.school, s.name), None, s.classes, s.funnel, n) for s in report.schools)
    rows.append(_report_row("total", ("", ""), None, report.classes, report.totals, n))
    return _csv(list(REPORT_COLUMNS), rows)


def missing_csv(classes: Iterable[ClassReport]) -> str:
    """The students without a confirmation, with names: only for these classes' class teacher."""
    rows = (
        [c.school, c.class_id, c.label, sid, name, reason, REASONS.get(reason, reason)]
        for c in classes
        for sid, name, reason in c.missing
    )
    return _csv(list(MISSING_COLUMNS), rows)


# -- a table for the terminal ---------------------------------------------------------------------
def display_width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def _pad(text: str, width: int, *, right: bool = False) -> str:
    space = " " * max(0, width - display_width(text))
    return space + text if right else text + space


def _count(value: int, pct: float | None, shown: bool = True) -> str:
    if not shown:
        return "-"
    return f"{value} ({pct:.0f}%)" if pct is not None else str(value)


def _table_row(label: str, f: Funnel, n: Notice) -> list[str]:
    p = percents(f, n)
    confirm, question = _asks_confirmation(n), _asks_question(n)
    return [
        label,
        str(f.targeted),
        str(f.reachable),
        _count(f.sent, p["sent"]),
        _count(f.delivered, p["delivered"]),
        _count(f.opened, p["opened"]),
        _count(f.confirmed, p["confirmed"], confirm),
        _count(f.understood, p["understood"], question),
        str(f.targeted - f.confirmed) if confirm else "-",
    ]


def render_table(report: Report, *, per_class: bool = True) -> str:
    n = report.notice
    d = n.draft
    lines = [
        f"通知 {n.id}「{d.title}」 {d.sender} · mode {d.mode}{' · 紧急' if d.urgent else ''}",
        f"created {clock.fmt(n.created)}" + (f" · deadline {clock.fmt(d.deadline)}" if d.deadline else ""),
        "",
    ]
    header = ["class", "targeted", "reachable", "sent", "delivered", "opened", "confirmed", "understood", "missing"]
    rows: list[list[str]] = []
    several = len(report.schools) > 1
    for s in report.schools:
        if per_class:
            rows.extend(_table_row(f"{s.name} {c.label}" if several else c.label, c.funnel, n) for c in s.classes)
        if several or not per_class:
            rows.append(_table_row(f"{s.name} 合计", s.funnel, n))
    rows.append(_table_row("全部合计", report.totals, n))
    widths = [max(display_width(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        cells = [_pad(r[0], widths[0])] + [_pad(v, w, right=True) for v, w in zip(r[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    lines.append("")
    lines.append("sent/delivered/opened: guardians (% of reachable); confirmed/understood/missing: students"
                 " (% of targeted)")  # fmt: skip
    return "\n".join(lines)


def render_missing_counts(c: ClassReport, school_name: str) -> str:
    """How many students without a confirmation, by reason, and no name."""
    if not c.missing:
        return f"{school_name} {c.label}: every student is confirmed"
    lines = [f"{school_name} {c.label}: {len(c.missing)} student(s) without a confirmation"]
    lines.extend(f"  {REASONS.get(code, code)} ({code}): {n}" for code, n in missing_counts(c).items() if n)
    return "\n".join(lines)


def render_missing(c: ClassReport, school_name: str) -> str:
    if not c.missing:
        return f"{school_name} {c.label}: every student is confirmed"
    lines = [f"{school_name} {c.label}: {len(c.missing)} student(s) without a confirmation"]
    width = max(display_width(name) for _sid, name, _r in c.missing)
    for sid, name, reason in c.missing:
        lines.append(f"  {sid}  {_pad(name, width)}  {REASONS.get(reason, reason)} ({reason})")
    return "\n".join(lines)
