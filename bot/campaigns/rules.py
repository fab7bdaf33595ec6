"""The "when" of a campaign: small declarative timing rules, evaluated against the calendar.

A rule is one TOML table (the grammar, with examples, is in ``schedules/calendar/README.md``): an
anchor (``cron``, ``date``, ``weekday``+``nth``+``month``, or ``on`` / ``before`` / ``after`` a calendar
event such as ``holiday``, ``summer_break`` or ``weekend``), an offset in calendar days, school days or
workdays (or, from an event, a weekday: ``on_weekday = "fri"`` is the Friday before it), a time of day,
a date window, excluded months and what to do when the date is not a school day. A campaign's
``when`` is one rule or a list of them; :meth:`When.firings` gives the concrete times (Asia/Shanghai)
in a date range for a region and, optionally, a school.

At most one firing per campaign per day: two rules that land on the same day fire once, at the
earlier time. Results are cached per (rule, region, year) and shared by every school of the region;
a school is computed apart only when it has days off of its own (overrides.toml) and the rule counts
school days.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import cache, lru_cache
from typing import Final, Literal, cast
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from bot.campaigns.calendar import EVENT_KINDS, Calendar, Event, OutsideTerms, nth_weekday

TIMEZONE: Final = "Asia/Shanghai"
ONE_DAY: Final = timedelta(days=1)

Unit = Literal["days", "school_days", "workdays"]
Fallback = Literal["keep", "next", "previous", "skip"]
WindowOn = Literal["firing", "event"]
Mode = Literal["on", "before", "after"]
MonthDay = tuple[int, int]

ANCHOR_KEYS: Final = ("cron", "date", "weekday", "on", "before", "after")
OFFSET_KEYS: Final = ("days", "school_days", "workdays")
COMMON_KEYS: Final = ("at", "from", "to", "window_on", "exclude_months", "if_not_school_day")
EVENT_KEYS: Final = ("name", "on_weekday")  # with on / before / after only
DEFAULT_AT: Final = time(9, 0)
# Offsets are kept small so that a year's events can only fire within a few months of that year.
MAX_OFFSET: Final[Mapping[str, int]] = {"days": 90, "school_days": 30, "workdays": 30}
WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
HOLIDAY_ALIASES: Final[Mapping[str, str]] = {
    "清明": "清明节",
    "端午": "端午节",
    "中秋": "中秋节",
    "国庆": "国庆节",
    "五一": "劳动节",
    "十一": "国庆节",
}
# Longest stretch without school days we allow for when bounding which years can fire in a range
# (a summer break plus its weekends), in calendar days.
_BREAK_SLACK: Final = 100


@cache
def shanghai() -> ZoneInfo:
    """The campaigns' time zone (loaded on first use: no file access at import)."""
    return ZoneInfo(TIMEZONE)


class RuleError(ValueError):
    """A ``when`` rule is invalid; ``str()`` names the file and key given as ``where``."""


# ------------------------------------------------------------------------------------------ the model


@dataclass(frozen=True, slots=True)
class Offset:
    unit: Unit
    n: int  # signed for on/date/weekday anchors; positive (a count) for before/after


@dataclass(frozen=True, slots=True)
class Window:
    """Inclusive; each bound is a yearly month-day or an absolute date; month-days may wrap the year."""

    start: MonthDay | date | None
    end: MonthDay | date | None

    def contains(self, d: date) -> bool:
        md = (d.month, d.day)
        start, end = self.start, self.end
        if isinstance(start, tuple) and isinstance(end, tuple) and start > end:
            return md >= start or md <= end  # e.g. 12-01 .. 01-31
        if isinstance(start, date) and d < start:
            return False
        if isinstance(start, tuple) and md < start:
            return False
        if isinstance(end, date) and d > end:
            return False
        return not (isinstance(end, tuple) and md > end)


@dataclass(frozen=True, slots=True)
class Cron:
    expr: str  # as written (standard crontab: day of week 0 or 7 = Sunday)
    apscheduler_expr: str  # day of week spelled with names, as APScheduler 3.x reads it


@dataclass(frozen=True, slots=True)
class OnDate:
    month: int
    day: int


@dataclass(frozen=True, slots=True)
class NthWeekday:
    month: int
    weekday: int  # 0 = Monday
    nth: int  # 1..5, or -1..-5 from the end


@dataclass(frozen=True, slots=True)
class EventAnchor:
    mode: Mode
    event: str  # an event kind of the calendar, or "weekend"
    name: str | None = None  # only events whose name (or one of its 、-joined parts) is this
    # on_weekday: the first such weekday on/after the event's first day (on), the last one strictly
    # before its first day (before), the first one strictly after its last day (after); 0 = Monday.
    weekday: int | None = None


Anchor = Cron | OnDate | NthWeekday | EventAnchor


@dataclass(frozen=True)
class Rule:
    anchor: Anchor
    offset: Offset | None = None
    at: time = DEFAULT_AT
    window: Window | None = None
    window_on: WindowOn = "firing"
    exclude_months: frozenset[int] = frozenset()
    if_not_school_day: Fallback = "keep"
    where: str = field(default="", compare=False)

    @property
    def uses_school_days(self) -> bool:
        return self.if_not_school_day != "keep" or (self.offset is not None and self.offset.unit == "school_days")

    @property
    def depends_on_region(self) -> bool:
        return self.uses_school_days or isinstance(self.anchor, EventAnchor)

    def reach(self) -> tuple[int, int]:
        """How many days a firing can lie before 1 Jan / after 31 Dec of the year its event is in."""
        early = late = 0
        anchor, offset = self.anchor, self.offset
        if offset is not None:
            if isinstance(anchor, EventAnchor) and anchor.mode != "on":
                backwards = anchor.mode == "before"
            else:
                backwards = offset.n < 0
            if backwards:
                early += _distance(offset)
            else:
                late += _distance(offset)
        if isinstance(anchor, EventAnchor):
            if anchor.weekday is not None:
                if anchor.mode == "before":
                    early += 7
                else:
                    late += 7
            if anchor.event == "weekend":
                early += _BREAK_SLACK
            if anchor.mode == "after":
                late += _BREAK_SLACK  # the event may end in the next year (a winter break from December)
        if self.if_not_school_day == "next":
            late += _BREAK_SLACK
        elif self.if_not_school_day == "previous":
            early += _BREAK_SLACK
        return early, late


def _distance(offset: Offset) -> int:
    n = abs(offset.n)
    if offset.unit == "days":
        return n
    if offset.unit == "workdays":
        return 2 * n + 14
    return 2 * n + _BREAK_SLACK


@dataclass(frozen=True)
class When:
    """A campaign's timing: one or more rules; see :meth:`firings`."""

    rules: tuple[Rule, ...]
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Hashed once: When is the key of the per-school result cache, looked up thousands of times.
        object.__setattr__(self, "_hash", hash(self.rules))

    def __hash__(self) -> int:
        return self._hash

    def firings(
        self, calendar: Calendar, start: date, end: date, region: str, school: str | None = None
    ) -> list[datetime]:
        """Firing times from ``start`` through ``end`` (inclusive), sorted, at most one per day.

        Raises :class:`~bot.campaigns.calendar.CalendarError` for an unknown region. School-day rules
        give nothing where the region has no terms configured.
        """
        if end < start:
            return []
        calendar.region(region)
        memo = _memo(calendar)
        school_key = school if calendar.has_school_overrides(school) else None
        key = (self, region, school_key, start, end)
        found = memo.whens.get(key)
        if found is None:
            found = self._compute(calendar, memo, start, end, region, school_key)
            if len(memo.whens) >= _MAX_WHEN_ENTRIES:
                memo.whens.clear()
            memo.whens[key] = found
        return list(found)

    def _compute(
        self, calendar: Calendar, memo: _Memo, start: date, end: date, region: str, school: str | None
    ) -> tuple[datetime, ...]:
        earliest: dict[date, datetime] = {}
        for rule in self.rules:
            early, late = rule.reach()
            for year in range(start.year - 1, end.year + 2):
                if date(year, 1, 1) - timedelta(days=early) > end or date(year, 12, 31) + timedelta(days=late) < start:
                    continue
                for fire in _rule_year(calendar, memo, rule, year, region, school):
                    day = fire.date()
                    if start <= day <= end and (day not in earliest or fire < earliest[day]):
                        earliest[day] = fire
        return tuple(earliest[d] for d in sorted(earliest))


# ---------------------------------------------------------------------------------------- evaluation


@dataclass
class _Memo:
    rule_years: dict[tuple[Rule, str | None, str | None, int], tuple[datetime, ...]] = field(default_factory=dict)
    whens: dict[tuple[When, str, str | None, date, date], tuple[datetime, ...]] = field(default_factory=dict)


_MAX_WHEN_ENTRIES: Final = 100_000
_MEMOS: weakref.WeakKeyDictionary[Calendar, _Memo] = weakref.WeakKeyDictionary()


def _memo(calendar: Calendar) -> _Memo:
    memo = _MEMOS.get(calendar)
    if memo is None:
        memo = _Memo()
        _MEMOS[calendar] = memo
    return memo


def _rule_year(
    calendar: Calendar, memo: _Memo, rule: Rule, year: int, region: str, school: str | None
) -> tuple[datetime, ...]:
    """The firings of the events of ``year`` (they may fall just outside it), cached."""
    key = (
        rule,
        region if rule.depends_on_region else None,
        school if rule.uses_school_days else None,
        year,
    )
    found = memo.rule_years.get(key)
    if found is None:
        tz = shanghai()
        earliest: dict[date, datetime] = {}
        for event_day, day, at in _candidates(calendar, rule, year, region, school):
            fire_day = _fallback(calendar, rule.if_not_school_day, day, region, school)
            if fire_day is None or fire_day.month in rule.exclude_months:
                continue
            if rule.window is not None and not rule.window.contains(
                event_day if rule.window_on == "event" else fire_day
            ):
                continue
            fire = datetime.combine(fire_day, at, tzinfo=tz)
            if fire_day not in earliest or fire < earliest[fire_day]:
                earliest[fire_day] = fire
        found = tuple(earliest[d] for d in sorted(earliest))
        memo.rule_years[key] = found
    return found


def _candidates(
    calendar: Calendar, rule: Rule, year: int, region: str, school: str | None
) -> Iterator[tuple[date, date, time]]:
    """(event day, firing day, time of day) for the events of ``year``."""
    anchor, offset = rule.anchor, rule.offset
    if isinstance(anchor, Cron):
        for fire in _cron_year(anchor.apscheduler_expr, year):
            yield fire.date(), fire.date(), fire.time()
        return
    if isinstance(anchor, OnDate | NthWeekday):
        if isinstance(anchor, OnDate):
            day: date | None = _month_day(year, anchor.month, anchor.day)
        else:
            day = nth_weekday(year, anchor.month, anchor.weekday, anchor.nth)
        if day is not None:
            fire_day = _shift(calendar, day, offset, 1, region, school)
            if fire_day is not None:
                yield day, fire_day, rule.at
        return
    if anchor.event == "weekend":
        yield from _weekend_candidates(calendar, rule, anchor, year, region, school)
        return
    for event in calendar.occurrences(anchor.event, year, region):
        if anchor.name is not None and anchor.name != event.name and anchor.name not in event.name.split("、"):
            continue
        if anchor.weekday is not None:
            yield event.start, _weekday_from(event, anchor.mode, anchor.weekday), rule.at
            continue
        if anchor.mode == "after":
            fire_day = _shift(calendar, event.end, offset, 1, region, school)
        else:
            fire_day = _shift(calendar, event.start, offset, -1 if anchor.mode == "before" else 1, region, school)
        if fire_day is not None:
            yield event.start, fire_day, rule.at


def _weekend_candidates(
    calendar: Calendar, rule: Rule, anchor: EventAnchor, year: int, region: str, school: str | None
) -> Iterator[tuple[date, date, time]]:
    """Weekends are the runs of days off that contain a Saturday or a Sunday.

    "Days off" means not a school day when the rule counts school days, else not a workday. So a
    Friday holiday makes the run start on Friday (the reminder moves to Thursday), a Saturday make-up
    workday leaves only the Sunday off (the reminder comes on Saturday), and a whole break is one run.
    """
    offset = rule.offset
    unit: Unit = offset.unit if offset is not None else "days"
    by_school = unit == "school_days"
    saturday = date(year, 1, 1) + timedelta(days=(5 - date(year, 1, 1).weekday()) % 7)
    while saturday.year == year:
        weekend = (saturday, saturday + ONE_DAY)
        saturday += timedelta(days=7)
        if by_school:
            off = [d for d in weekend if not calendar.is_school_day(d, region, school)]
        else:
            off = [d for d in weekend if not calendar.is_workday(d)]
        if not off:
            continue
        try:
            if by_school:
                run_start = calendar.add_school_days(off[0], -1, region, school) + ONE_DAY
            else:
                run_start = calendar.add_workdays(off[0], -1) + ONE_DAY
        except OutsideTerms:
            continue
        if anchor.mode == "on":
            fire_day = _shift(calendar, run_start, offset, 1, region, school)
        elif anchor.mode == "before":
            # Counting back from the first day off of the weekend passes the rest of the run.
            fire_day = _shift(calendar, run_start if unit == "days" else off[0], offset, -1, region, school)
        else:
            last_off = off[-1]
            if unit == "days":
                last_off = calendar.add_workdays(last_off, 1) - ONE_DAY
            fire_day = _shift(calendar, last_off, offset, 1, region, school)
        if fire_day is not None:
            yield run_start, fire_day, rule.at


def _weekday_from(event: Event, mode: Mode, weekday: int) -> date:
    """The weekday of an ``on_weekday`` rule: on or after the event's first day (``on``), strictly
    before its first day (``before``: a holiday from Saturday gives the Friday just before it, one from
    Friday the Friday a week earlier) or strictly after its last day (``after``)."""
    if mode == "before":
        return event.start - timedelta(days=(event.start.weekday() - weekday - 1) % 7 + 1)
    if mode == "after":
        return event.end + timedelta(days=(weekday - event.end.weekday() - 1) % 7 + 1)
    return event.start + timedelta(days=(weekday - event.start.weekday()) % 7)


def _month_day(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:  # 29 February in a common year
        return None


def _shift(
    calendar: Calendar, d: date, offset: Offset | None, sign: int, region: str, school: str | None
) -> date | None:
    if offset is None:
        return d
    n = offset.n * sign
    if offset.unit == "days":
        return d + timedelta(days=n)
    if offset.unit == "workdays":
        return calendar.add_workdays(d, n)
    try:
        return calendar.add_school_days(d, n, region, school)
    except OutsideTerms:
        return None


def _fallback(calendar: Calendar, mode: Fallback, d: date, region: str, school: str | None) -> date | None:
    """``if_not_school_day``. ``next`` / ``previous`` move over days off (a weekend, a holiday, the school's
    own days off), never across a break or past the configured terms: a date in the winter break is
    dropped, not carried to the first day of the spring term weeks after its season."""
    if mode == "keep" or calendar.is_school_day(d, region, school):
        return d
    if mode == "skip":
        return None
    try:
        return calendar.move_to_school_day(d, 1 if mode == "next" else -1, region, school)
    except OutsideTerms:
        return None


@lru_cache(maxsize=4096)
def _cron_year(expr: str, year: int) -> tuple[datetime, ...]:
    """A cron's firings in one year, at most one per day (the first)."""
    tz = shanghai()
    trigger = CronTrigger.from_crontab(expr, timezone=tz)
    now = datetime(year, 1, 1, tzinfo=tz)
    stop = datetime(year + 1, 1, 1, tzinfo=tz)
    fires: list[datetime] = []
    while True:
        fire = cast(datetime | None, trigger.get_next_fire_time(None, now))
        if fire is None or fire >= stop:
            return tuple(fires)
        fires.append(fire)
        now = datetime.combine(fire.date() + ONE_DAY, time(), tzinfo=tz)


# ------------------------------------------------------------------------------------------- parsing


def parse_when(
    table: object,
    *,
    where: str,
    events: Collection[str] | None = None,
) -> When:
    """Parse a campaign's ``when``: one rule table or a list of them (as read from TOML).

    ``where`` names the place for error messages (e.g. ``"schedules/drowning.toml: when"``).
    ``events`` are the event kinds rules may refer to (default: the built-in ones; pass
    ``calendar.event_kinds()`` to allow observances configured in observances.toml).
    """
    if isinstance(table, Mapping):
        return When((parse_rule(table, where=where, events=events),))
    if isinstance(table, list | tuple):
        if not table:
            raise RuleError(f"{where}: give at least one rule")
        return When(tuple(parse_rule(item, where=f"{where}[{i}]", events=events) for i, item in enumerate(table)))
    raise RuleError(f"{where}: expected a table or a list of tables, got {_show(table)}")


def parse_rule(table: object, *, where: str, events: Collection[str] | None = None) -> Rule:
    if not isinstance(table, Mapping):
        raise RuleError(f"{where}: expected a table, got {_show(table)}")
    rule = cast(Mapping[str, object], table)
    anchors = [key for key in ANCHOR_KEYS if key in rule]
    if len(anchors) != 1:
        got = ", ".join(anchors) if anchors else "none"
        raise RuleError(f"{where}: give exactly one of {', '.join(ANCHOR_KEYS)} (got {got})")
    kind = anchors[0]
    allowed = {kind, *COMMON_KEYS, *OFFSET_KEYS}
    if kind == "cron":
        allowed -= {"at", *OFFSET_KEYS}
    elif kind == "weekday":
        allowed |= {"nth", "month"}
    elif kind in ("on", "before", "after"):
        allowed.update(EVENT_KEYS)
        if "on_weekday" in rule:
            allowed -= set(OFFSET_KEYS)  # the weekday is the offset
    every_key = {*ANCHOR_KEYS, *OFFSET_KEYS, *COMMON_KEYS, *EVENT_KEYS, "nth", "month"}
    for key in rule:
        if key not in every_key:
            raise RuleError(f"{where}.{key}: unknown key (known: {', '.join(sorted(every_key))})")
        if key not in allowed:
            if key in OFFSET_KEYS and kind in ("on", "before", "after"):
                raise RuleError(
                    f"{where}.{key}: not allowed with on_weekday (the rule fires on that weekday itself; "
                    "if_not_school_day moves it off a day without school)"
                )
            raise RuleError(f"{where}.{key}: not allowed with {kind} (allowed: {', '.join(sorted(allowed))})")

    anchor = _parse_anchor(kind, rule, where, events)
    on_weekday = isinstance(anchor, EventAnchor) and anchor.weekday is not None
    offset = None if on_weekday else _parse_offset(rule, where, counting=kind in ("before", "after"))
    at = _parse_time(rule["at"], f"{where}.at") if "at" in rule else DEFAULT_AT
    window = None
    if "from" in rule or "to" in rule:
        window = Window(
            _parse_bound(rule["from"], f"{where}.from") if "from" in rule else None,
            _parse_bound(rule["to"], f"{where}.to") if "to" in rule else None,
        )
        if isinstance(window.start, date) and isinstance(window.end, date) and window.end < window.start:
            raise RuleError(f"{where}.to: {window.end} is before from {window.start}")
    window_on = _choice(rule.get("window_on", "firing"), f"{where}.window_on", ("firing", "event"))
    fallback = _choice(
        rule.get("if_not_school_day", "keep"), f"{where}.if_not_school_day", ("keep", "next", "previous", "skip")
    )
    months = _parse_months(rule.get("exclude_months", []), f"{where}.exclude_months")
    return Rule(
        anchor=anchor,
        offset=offset,
        at=at,
        window=window,
        window_on=cast(WindowOn, window_on),
        exclude_months=months,
        if_not_school_day=cast(Fallback, fallback),
        where=where,
    )


def _parse_anchor(kind: str, rule: Mapping[str, object], where: str, events: Collection[str] | None) -> Anchor:
    value = rule[kind]
    if kind == "cron":
        return _parse_cron(value, f"{where}.cron")
    if kind == "date":
        month, day = _parse_month_day(value, f"{where}.date")
        return OnDate(month, day)
    if kind == "weekday":
        weekday = _parse_weekday(value, f"{where}.weekday")
        if "nth" not in rule or "month" not in rule:
            raise RuleError(f"{where}: weekday needs nth (1..5, or -1 for the last) and month (1..12)")
        nth = _int(rule["nth"], f"{where}.nth")
        if nth == 0 or not -5 <= nth <= 5:
            raise RuleError(f"{where}.nth: expected 1..5 or -1..-5 (-1 = the last), got {nth}")
        month = _int(rule["month"], f"{where}.month")
        if not 1 <= month <= 12:
            raise RuleError(f"{where}.month: expected 1..12, got {month}")
        return NthWeekday(month, weekday, nth)
    known = {*(EVENT_KINDS if events is None else events), "weekend"}
    if not isinstance(value, str) or value not in known:
        raise RuleError(f"{where}.{kind}: unknown event {_show(value)} (known: {', '.join(sorted(known))})")
    name = None
    if "name" in rule:
        raw = rule["name"]
        if not isinstance(raw, str) or not raw.strip():
            raise RuleError(f"{where}.name: expected an event name such as 春节, got {_show(raw)}")
        name = HOLIDAY_ALIASES.get(raw.strip(), raw.strip())
    on_weekday: int | None = None
    if "on_weekday" in rule:
        on_weekday = _parse_weekday(rule["on_weekday"], f"{where}.on_weekday")
        if value == "weekend":
            raise RuleError(
                f'{where}.on_weekday: not with {kind} = "weekend" (for a weekday every week use cron, '
                'e.g. "0 16 * * 5")'
            )
    return EventAnchor(cast(Mode, kind), value, name, on_weekday)


def _parse_offset(rule: Mapping[str, object], where: str, *, counting: bool) -> Offset | None:
    given = [key for key in OFFSET_KEYS if key in rule]
    if len(given) > 1:
        raise RuleError(f"{where}: give at most one of {', '.join(OFFSET_KEYS)} (got {', '.join(given)})")
    if not given:
        # "before = X" alone means the last school day before X (and "after" the first after it).
        return Offset("school_days", 1) if counting else None
    unit = given[0]
    n = _int(rule[unit], f"{where}.{unit}")
    limit = MAX_OFFSET[unit]
    if counting and not 1 <= n <= limit:
        raise RuleError(f"{where}.{unit}: expected a count 1..{limit} (before/after give the direction), got {n}")
    if not counting and abs(n) > limit:
        raise RuleError(f"{where}.{unit}: expected -{limit}..{limit}, got {n}")
    return Offset(cast(Unit, unit), n)


_DOW_NAMES: Final = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # crontab numbering: 0 = Sunday


def _parse_cron(value: object, where: str) -> Cron:
    if not isinstance(value, str):
        raise RuleError(f'{where}: expected a crontab string like "0 16 * * 5", got {_show(value)}')
    fields = value.split()
    if len(fields) != 5:
        raise RuleError(f"{where}: expected 5 fields (minute hour day-of-month month day-of-week), got {value!r}")
    if fields[2] not in ("*", "?") and fields[4] not in ("*", "?"):
        raise RuleError(
            f"{where}: {value!r} restricts both day of month and day of week (cron ORs them, "
            "APScheduler ANDs them): use two rules"
        )
    # APScheduler 3.x numbers weekdays from Monday = 0, crontab from Sunday = 0: spell them out.
    fields[4] = _crontab_weekdays(fields[4], where)
    fields[2] = "*" if fields[2] == "?" else fields[2]
    translated = " ".join(fields)
    tz = shanghai()
    try:
        trigger = CronTrigger.from_crontab(translated, timezone=tz)
    except ValueError as exc:
        raise RuleError(f"{where}: {value!r}: {exc}") from None
    first = cast(datetime | None, trigger.get_next_fire_time(None, datetime(2024, 1, 1, tzinfo=tz)))
    if first is None or first.year > 2032:
        raise RuleError(f"{where}: {value!r} never fires")
    return Cron(value, translated)


def _crontab_weekdays(spec: str, where: str) -> str:
    if spec in ("*", "?"):
        return "*"
    days: set[int] = set()
    for part in spec.split(","):
        span, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise RuleError(f"{where}: bad step in day of week {spec!r}")
            step = int(step_text)
        if span == "*":
            low, high = 0, 6
        elif "-" in span:
            first, _, last = span.partition("-")
            low, high = _crontab_weekday(first, spec, where), _crontab_weekday(last, spec, where)
            if high == 0 and low > 0:
                high = 7  # "5-0" or "fri-sun": through Sunday
        else:
            low = _crontab_weekday(span, spec, where)
            high = 6 if step_text else low
        if low > high:
            raise RuleError(f"{where}: day-of-week range {span!r} runs backwards in {spec!r}")
        days.update(v % 7 for v in range(low, high + 1, step))
    return ",".join(_DOW_NAMES[d] for d in sorted(days))


def _crontab_weekday(token: str, spec: str, where: str) -> int:
    token = token.strip().lower()
    if token.isdigit() and int(token) <= 7:
        return int(token) if int(token) < 7 else 0
    if token[:3] in _DOW_NAMES and token in (token[:3], _full_day_name(token[:3])):
        return _DOW_NAMES.index(token[:3])
    raise RuleError(f"{where}: bad day of week {token!r} in {spec!r} (0-7 with 0 and 7 = Sunday, or sun..sat)")


def _full_day_name(short: str) -> str:
    return {
        "sun": "sunday",
        "mon": "monday",
        "tue": "tuesday",
        "wed": "wednesday",
        "thu": "thursday",
        "fri": "friday",
        "sat": "saturday",
    }[short]


_MONTH_DAY = re.compile(r"^(\d{1,2})-(\d{1,2})$")
_TIME = re.compile(r"^(\d{1,2}):(\d{2})$")


def _parse_month_day(value: object, where: str) -> MonthDay:
    match = _MONTH_DAY.match(value.strip()) if isinstance(value, str) else None
    if match:
        month, day = int(match.group(1)), int(match.group(2))
        try:
            date(2000, month, day)  # a leap year: 02-29 is allowed (it fires in leap years only)
        except ValueError:
            pass
        else:
            return month, day
    raise RuleError(f'{where}: expected a month-day like "05-01", got {_show(value)}')


def _parse_bound(value: object, where: str) -> MonthDay | date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and len(value.strip()) == 10:
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    try:
        return _parse_month_day(value, where)
    except RuleError:
        raise RuleError(
            f'{where}: expected a month-day like "05-01" or a date like 2026-05-01, got {_show(value)}'
        ) from None


def _parse_time(value: object, where: str) -> time:
    if isinstance(value, time):
        return value.replace(second=0, microsecond=0, tzinfo=None)
    match = _TIME.match(value.strip()) if isinstance(value, str) else None
    if match and int(match.group(1)) < 24 and int(match.group(2)) < 60:
        return time(int(match.group(1)), int(match.group(2)))
    raise RuleError(f'{where}: expected a time of day like "16:00", got {_show(value)}')


def _parse_weekday(value: object, where: str) -> int:
    if isinstance(value, str) and value.strip().lower()[:3] in WEEKDAYS:
        text = value.strip().lower()
        short = text[:3]
        if text in (short, _full_day_name(short)):
            return WEEKDAYS.index(short)
    raise RuleError(f'{where}: expected a weekday like "mon" (mon..sun), got {_show(value)}')


def _parse_months(value: object, where: str) -> frozenset[int]:
    if not isinstance(value, list):
        raise RuleError(f"{where}: expected a list of months like [7, 8], got {_show(value)}")
    months: set[int] = set()
    for i, item in enumerate(value):
        month = _int(item, f"{where}[{i}]")
        if not 1 <= month <= 12:
            raise RuleError(f"{where}[{i}]: expected a month 1..12, got {month}")
        months.add(month)
    return frozenset(months)


def _choice(value: object, where: str, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise RuleError(f"{where}: expected one of {', '.join(choices)}, got {_show(value)}")
    return value


def _int(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RuleError(f"{where}: expected a whole number, got {_show(value)}")
    return value


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
