"""Lesson rates per class, school and district, by topic and period, as a table, CSV or JSON.

Three rates, as the seed platform (学校安全教育平台) counts them, each over the active students of
the scope as the roster is now:

- participation 参学率: students who started at least one lesson / students
- quiz taken 参考率: students who finished at least one quiz / students
- passed 合格率: students who passed at least one quiz / students

With a topic, only that topic's lessons count; with a period (``since`` and/or ``until``, local
days, both inclusive), only what happened in it (a lesson started, a quiz finished, a pass). A pass
is also a finished quiz, and a finished quiz a started lesson. A student counts once whichever
guardian did the lesson.

Each lesson keeps only the latest time of each of those events (see ``progress.py``), so a period
that ends before today counts a student by those latest times: a lesson started in April and
started again in June is not counted as started in April unless its quiz was finished or passed in
April. Rates for a past period are therefore a lower bound; periods up to today are exact.

Exports are counts only. Student names appear only in :attr:`ClassRates.not_started`, filled for
a teacher's own classes in the chat (「学习情况」); no score of any child is ever listed.
"""

from __future__ import annotations

import asyncio
import csv
import io
import unicodedata
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from bot import clock
from bot.lessons.content import TOPICS
from bot.lessons.progress import LessonResult, LessonStore
from bot.roster.model import ACTIVE, class_label, grade_of
from bot.roster.store import RosterStore
from bot.store import keys
from bot.store.autopipeline import bulk
from bot.store.redis import Redis


class ReportError(ValueError):
    """A report that cannot be made as asked; ``field`` names the option to fix."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


@dataclass
class Rates:
    students: int = 0
    started: int = 0  # 参学
    finished: int = 0  # 参考
    passed: int = 0  # 合格

    def add(self, other: Rates) -> None:
        self.students += other.students
        self.started += other.started
        self.finished += other.finished
        self.passed += other.passed

    def pct(self, count: int) -> float | None:
        return round(100 * count / self.students, 1) if self.students else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "students": self.students,
            "started": self.started,
            "finished": self.finished,
            "passed": self.passed,
            "participation_pct": self.pct(self.started),
            "quiz_taken_pct": self.pct(self.finished),
            "passed_pct": self.pct(self.passed),
        }


@dataclass
class ClassRates:
    school: str
    class_id: str
    rates: Rates = field(default_factory=Rates)
    not_started: list[str] = field(default_factory=list)  # names; only when asked for (a teacher's class)

    @property
    def label(self) -> str:
        return class_label(self.class_id)


@dataclass
class SchoolRates:
    school: str
    name: str
    district: str
    classes: list[ClassRates] = field(default_factory=list)
    rates: Rates = field(default_factory=Rates)


@dataclass
class DistrictRates:
    district: str
    schools: list[SchoolRates] = field(default_factory=list)
    rates: Rates = field(default_factory=Rates)


@dataclass
class LessonReport:
    topic: str
    since: float
    districts: list[DistrictRates]
    totals: Rates
    by_topic: dict[str, Rates]  # every topic over the same students (ignores the topic filter)
    until: float = 0.0  # the end of the period (exclusive: the midnight after its last day); 0 = none

    @property
    def schools(self) -> list[SchoolRates]:
        return [s for d in self.districts for s in d.schools]

    @property
    def classes(self) -> list[ClassRates]:
        return [c for s in self.schools for c in s.classes]


_NOTHING = (False, False, False)


def status(
    results: Mapping[str, LessonResult], topic: str = "", since: float = 0, until: float = 0
) -> tuple[bool, bool, bool]:
    """(started, finished a quiz, passed) for one student, within the topic and [since, until)."""
    return _fold((r for r in results.values() if not topic or r.topic == topic), since, until)


def _fold(results: Iterable[LessonResult], since: float, until: float) -> tuple[bool, bool, bool]:
    def within(ts: int) -> bool:
        return ts > 0 and ts >= since and (not until or ts < until)

    started = finished = passed = False
    for r in results:
        # A pass is a finished quiz, and a finished quiz a started lesson: in the period, each implies
        # the next even when the later time of the lesser event (a restart) falls outside it.
        passed = passed or within(r.passed_at)
        finished = finished or passed or within(r.finished)
        started = started or finished or within(r.started)
    return started, finished, passed


def statuses(
    results: Mapping[str, LessonResult], since: float = 0, until: float = 0
) -> dict[str, tuple[bool, bool, bool]]:
    """``status`` for each topic the student has results in, and for all of them ("" key), in one pass."""
    by_topic: dict[str, list[LessonResult]] = {}
    for r in results.values():
        by_topic.setdefault(r.topic, []).append(r)
    out = {t: _fold(rs, since, until) for t, rs in by_topic.items() if t}
    out[""] = _fold(results.values(), since, until)
    return out


def _count(rates: Rates, state: tuple[bool, bool, bool]) -> None:
    rates.students += 1
    rates.started += state[0]
    rates.finished += state[1]
    rates.passed += state[2]


def _midnight(text: str, field_name: str, days_after: int = 0) -> float:
    """Local midnight at the start of ``text`` (YYYY-MM-DD) plus ``days_after`` days, in epoch seconds."""
    try:
        day = date.fromisoformat(text.strip()) + timedelta(days=days_after)
        return datetime(day.year, day.month, day.day, tzinfo=clock.zone()).timestamp()
    except (ValueError, OverflowError, OSError):
        raise ReportError(field_name, f"{text!r} is not a date (YYYY-MM-DD)") from None


def parse_since(text: str) -> float:
    """``YYYY-MM-DD`` (local midnight) → epoch seconds; "" → 0 (all time)."""
    return _midnight(text, "since") if text.strip() else 0.0


def parse_until(text: str) -> float:
    """``YYYY-MM-DD``, the period's last day (inclusive) → the epoch seconds of the local midnight
    after it, where the period ends; "" → 0 (up to now)."""
    return _midnight(text, "until", days_after=1) if text.strip() else 0.0


def parse_period(since: str, until: str) -> tuple[float, float]:
    """``--since`` and ``--until`` (or the API's ``since`` and ``until``) → (since, until) for :func:`build_report`."""
    start, end = parse_since(since), parse_until(until)
    check_period(start, end)
    return start, end


def since_day(since: float) -> str:
    """The period's first day as YYYY-MM-DD; "" when it has none."""
    return clock.local(since).date().isoformat() if since else ""


def until_day(until: float) -> str:
    """The period's last day (inclusive) as YYYY-MM-DD; "" when it runs up to now."""
    return clock.local(until - 1).date().isoformat() if until else ""


def check_period(since: float, until: float) -> None:
    if until and until <= since:
        raise ReportError("until", f"the last day {until_day(until)} is before the first day {since_day(since)}")


def term_start(now: float) -> float:
    """The start of the current school term, roughly: 1 September or 1 February (for the chat view)."""
    t = clock.local(now)
    if t.month >= 9:
        year, month = t.year, 9
    elif t.month >= 2:
        year, month = t.year, 2
    else:
        year, month = t.year - 1, 9
    return datetime(year, month, 1, tzinfo=clock.zone()).timestamp()


def _class_order(cid: str) -> tuple[int, str]:
    try:
        return grade_of(cid), cid
    except ValueError:
        return 99, cid


_SCHOOLS_AT_ONCE = 8
# one school's classes (in order), their active students, and those students' lesson results
# per class: its active students as (id, name), by name when names are asked for
_SchoolData = tuple[list[str], dict[str, list[tuple[str, str]]], dict[str, dict[str, LessonResult]]]


async def _active_students(
    redis: Redis, school: str, class_ids: list[str], *, by_name: bool
) -> dict[str, list[tuple[str, str]]]:
    """Each class's active students, (id, name), read raw (hiredis, in C): a district has
    tens of thousands, and building a Student for each was a good part of its report's time. On the
    bulk connection, not the callbacks' (``bulk``)."""
    raws = await bulk(redis).execute_many(*(("HGETALL", keys.class_students(school, cid)) for cid in class_ids))
    out: dict[str, list[tuple[str, str]]] = {}
    for cid, raw in zip(class_ids, raws, strict=True):
        members = []
        # a flat list from our autopipeline; a dict from redis-py (Redis Cluster)
        pairs = raw.items() if isinstance(raw, dict) else zip(raw[::2], raw[1::2], strict=True)
        for sid, value in pairs:
            name, _, state = value.partition("|")  # Student.encode: "name|status", status "" = active
            if (state or ACTIVE) == ACTIVE:
                members.append((sid, name))
        if by_name:
            members.sort(key=lambda m: m[1])
        out[cid] = members
    return out


async def build_report(
    redis: Redis,
    roster: RosterStore,
    *,
    district: str = "",
    school: str = "",
    class_id: str = "",
    classes: list[tuple[str, str]] | None = None,
    topic: str = "",
    since: float = 0.0,
    until: float = 0.0,
    names: bool = False,
) -> LessonReport:
    """Rates for a district, a school, a class, or an explicit list of (school, class); "" = all.

    ``since`` and ``until`` bound the period, as :func:`parse_period` makes them; 0 = open."""
    check_period(since, until)
    if topic and topic not in TOPICS:
        raise ReportError("topic", f"{topic!r} is not one of {', '.join(TOPICS)}")
    if class_id and not school:
        raise ReportError("class", "a class needs its school")
    schools = await roster.schools()
    wanted: dict[str, set[str] | None] = {}
    if classes is not None:
        for s, c in classes:
            chosen = wanted.setdefault(s, set())
            assert chosen is not None
            chosen.add(c)
    elif school:
        found = schools.get(school)
        if found is None or (district and found.district != district):
            raise ReportError("school", f"no school {school!r}" + (f" in district {district!r}" if district else ""))
        wanted[school] = {class_id} if class_id else None
    else:
        wanted = {s.id: None for s in schools.values() if not district or s.district == district}

    store = LessonStore(redis)
    totals = Rates()
    by_topic = {t: Rates() for t in TOPICS}
    by_district: dict[str, DistrictRates] = {}

    async def fetch(school_id: str) -> _SchoolData:
        chosen = wanted[school_id]
        known = await roster.classes(school_id)
        if chosen is not None and class_id and class_id not in known:
            raise ReportError("class", f"no class {class_id!r} in school {school_id!r}")
        class_ids = sorted(chosen if chosen is not None else known, key=_class_order)
        members = await _active_students(redis, school_id, class_ids, by_name=names)
        results = await store.results_many(school_id, [sid for cid in class_ids for sid, _ in members[cid]])
        return class_ids, members, results

    order = [s for s in sorted(wanted, key=lambda s: (schools[s].district if s in schools else "", s)) if s in schools]

    async def in_order() -> AsyncIterator[tuple[str, _SchoolData]]:
        # a few schools at a time: Redis answers one while this process reads the replies of another
        for i in range(0, len(order), _SCHOOLS_AT_ONCE):
            chunk = order[i : i + _SCHOOLS_AT_ONCE]
            for item in zip(chunk, await asyncio.gather(*(fetch(s) for s in chunk)), strict=True):
                yield item

    async for school_id, (class_ids, members, results) in in_order():
        info = schools[school_id]
        s_rates = SchoolRates(school_id, info.name, info.district)
        for cid in class_ids:
            c_rates = ClassRates(school_id, cid)
            idle = 0  # students with no lesson at all (most of a city): counted in bulk below
            for sid, name in members[cid]:
                mine = results.get(sid)
                if not mine:
                    idle += 1
                    if names:
                        c_rates.not_started.append(name)
                    continue
                states = statuses(mine, since, until)
                state = states.get(topic, _NOTHING)
                _count(c_rates.rates, state)
                if names and not state[0]:
                    c_rates.not_started.append(name)
                for t, rates in by_topic.items():
                    _count(rates, states.get(t, _NOTHING))
            c_rates.rates.students += idle
            for rates in by_topic.values():
                rates.students += idle
            s_rates.classes.append(c_rates)
            s_rates.rates.add(c_rates.rates)
        d_rates = by_district.setdefault(info.district, DistrictRates(info.district))
        d_rates.schools.append(s_rates)
        d_rates.rates.add(s_rates.rates)
        totals.add(s_rates.rates)
    return LessonReport(topic, since, list(by_district.values()), totals, by_topic, until)


# -- JSON -----------------------------------------------------------------------------------------
def report_json(report: LessonReport, *, per_class: bool = True) -> dict[str, Any]:
    return {
        "topic": report.topic or None,
        "topic_name": TOPICS.get(report.topic) if report.topic else None,
        "since": since_day(report.since) or None,
        "until": until_day(report.until) or None,
        "totals": report.totals.as_dict(),
        "by_topic": {t: r.as_dict() for t, r in report.by_topic.items()},
        "districts": [
            {
                "district": d.district,
                "rates": d.rates.as_dict(),
                "schools": [
                    {
                        "school": s.school,
                        "name": s.name,
                        "rates": s.rates.as_dict(),
                        **(
                            {
                                "classes": [
                                    {"class_id": c.class_id, "label": c.label, "rates": c.rates.as_dict()}
                                    for c in s.classes
                                ]
                            }
                            if per_class
                            else {}
                        ),
                    }
                    for s in d.schools
                ],
            }
            for d in report.districts
        ],
    }


# -- CSV ------------------------------------------------------------------------------------------
CSV_COLUMNS: dict[str, str] = {
    "level": "class | school | district | total",
    "district": "district id",
    "school": "school id",
    "school_name": "school name",
    "class_id": "class id (grade-class, e.g. 3-2); empty above class level",
    "class": "class name (三年级（2）班)",
    "topic": "the topic filter; empty = every topic",
    "since": "the period's first day (YYYY-MM-DD); empty = from the start",
    "until": "the period's last day, inclusive (YYYY-MM-DD); empty = up to now",
    "students": "active students",
    "started": "students who started at least one lesson (参学)",
    "started_pct": "参学率 %",
    "finished": "students who finished at least one quiz (参考)",
    "finished_pct": "参考率 %",
    "passed": "students who passed at least one quiz (合格)",
    "passed_pct": "合格率 %",
}


def _cell(value: object) -> object:
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value  # a spreadsheet must never evaluate a cell
    return value


def _pct_cell(rates: Rates, count: int) -> object:
    pct = rates.pct(count)
    return "" if pct is None else pct


def _row(level: str, district: str, school: str, name: str, cid: str, r: Rates, rep: LessonReport) -> list[object]:
    return [
        level,
        district,
        school,
        name,
        cid,
        class_label(cid) if cid else "",
        rep.topic,
        since_day(rep.since),
        until_day(rep.until),
        r.students,
        r.started,
        _pct_cell(r, r.started),
        r.finished,
        _pct_cell(r, r.finished),
        r.passed,
        _pct_cell(r, r.passed),
    ]


def report_csv(report: LessonReport) -> str:
    """UTF-8 with BOM (Excel opens the Chinese right): classes, then schools, districts and the total."""
    rows: list[list[object]] = []
    for s in report.schools:
        rows.extend(_row("class", s.district, s.school, s.name, c.class_id, c.rates, report) for c in s.classes)
    rows.extend(_row("school", s.district, s.school, s.name, "", s.rates, report) for s in report.schools)
    rows.extend(_row("district", d.district, "", "", "", d.rates, report) for d in report.districts)
    rows.append(_row("total", "", "", "", "", report.totals, report))
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(list(CSV_COLUMNS))
    for row in rows:
        writer.writerow([_cell(v) for v in row])
    return out.getvalue()


# -- a table for the terminal -----------------------------------------------------------------------
def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def _pad(text: str, width: int, *, right: bool = False) -> str:
    space = " " * max(0, width - _width(text))
    return space + text if right else text + space


def _fmt(rates: Rates, count: int) -> str:
    pct = rates.pct(count)
    return f"{count} ({pct:.0f}%)" if pct is not None else str(count)


def _table_row(label: str, r: Rates) -> list[str]:
    return [label, str(r.students), _fmt(r, r.started), _fmt(r, r.finished), _fmt(r, r.passed)]


def period_text(report: LessonReport) -> str:
    first, last = since_day(report.since), until_day(report.until)
    if first and last:
        return f"{first} to {last}"
    if first:
        return f"since {first}"
    return f"until {last}" if last else "all time"


def render_table(report: LessonReport, *, per_class: bool = True) -> str:
    scope = f"topic {report.topic} {TOPICS[report.topic]}" if report.topic else "every topic"
    period = period_text(report)
    lines = [f"安全课堂 lessons · {scope} · {period}", ""]
    header = ["scope", "students", "参学 started", "参考 quiz taken", "合格 passed"]
    rows: list[list[str]] = []
    several_schools = len(report.schools) > 1
    for d in report.districts:
        for s in d.schools:
            if per_class:
                rows.extend(
                    _table_row(f"{s.name} {c.label}" if several_schools else c.label, c.rates) for c in s.classes
                )
            if several_schools or not per_class:
                rows.append(_table_row(f"{s.name} 合计", s.rates))
        if len(report.districts) > 1:
            rows.append(_table_row(f"区县 {d.district} 合计", d.rates))
    rows.append(_table_row("全部合计", report.totals))
    widths = [max(_width(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        cells = [_pad(r[0], widths[0])] + [_pad(v, w, right=True) for v, w in zip(r[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    lines += ["", "students: active students now; the three rates are % of them"]
    return "\n".join(lines)


def rates_line(rates: Rates) -> str:
    """参学率 67%（2/3）· 参考率 67%（2/3）· 合格率 33%（1/3）: one line for a demo or a chat reply."""

    def one(label: str, count: int) -> str:
        pct = rates.pct(count)
        shown = f"{pct:.0f}%" if pct is not None else "-"
        return f"{label} {shown}（{count}/{rates.students}）"

    return " · ".join([one("参学率", rates.started), one("参考率", rates.finished), one("合格率", rates.passed)])


def rates_short(rates: Rates) -> str:
    """参学67% 参考67% 合格33%: the three rates without counts."""

    def one(label: str, count: int) -> str:
        pct = rates.pct(count)
        return f"{label}{pct:.0f}%" if pct is not None else f"{label}-"

    return " ".join([one("参学", rates.started), one("参考", rates.finished), one("合格", rates.passed)])
