"""The safety calendar: public holidays, make-up workdays, school terms and the national safety days.

Where the holiday data comes from, per year:

1. ``schedules/calendar/overrides.toml`` ``[years.YYYY]``: a published arrangement typed in by the
   operator (for a year ``chinesecalendar`` does not have yet). Official.
2. ``chinesecalendar`` for the years it covers (probed at run time: it raises ``NotImplementedError``
   for others). Official.
3. Otherwise computed, with a warning in the log once per year and :meth:`Calendar.unofficial_years`
   for the console. No make-up workdays are invented for computed years. The rule (see
   :func:`computed_arrangement`) reproduces nearly all 2021-2026 official arrangements for 清明, 端午
   and 中秋 and errs on the long side elsewhere: a holiday that is computed too long makes a "before the
   holiday" reminder go out a little early, one computed too short could make it go out on a day off.

A *holiday* (:class:`Holiday`) is the whole run of days off around a public holiday: its arrangement
days plus the weekend days joined to them (``chinesecalendar`` lists the weekend days of some older
arrangements and not of others; joining them gives one answer for every year).

School days are workdays (weekdays that are not holidays, plus make-up workdays) inside one of the
region's terms, minus the region's and the school's own days off from the overrides file. Winter and
summer breaks are the gaps between consecutive terms.

Everything is computed lazily per year and cached; a :class:`Calendar` never changes after loading.
"""

from __future__ import annotations

import bisect
import logging
import re
import tomllib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cache
from itertools import pairwise
from pathlib import Path
from typing import Any, Final, Literal, cast

import chinese_calendar  # type: ignore[import-untyped]
from lunar_python import Lunar, Solar  # type: ignore[import-untyped]

log = logging.getLogger(__name__)

ONE_DAY: Final = timedelta(days=1)
# A move to the next / previous school day passes days off only; no run of them is this long.
_MOVE_LIMIT: Final = 60

# Public holiday names as the calendar reports them (the State Council's names).
NEW_YEAR: Final = "元旦"
SPRING_FESTIVAL: Final = "春节"
QINGMING: Final = "清明节"
LABOUR_DAY: Final = "劳动节"
DRAGON_BOAT: Final = "端午节"
MID_AUTUMN: Final = "中秋节"
NATIONAL_DAY: Final = "国庆节"
HOLIDAY_NAMES: Final = (NEW_YEAR, SPRING_FESTIVAL, QINGMING, LABOUR_DAY, DRAGON_BOAT, MID_AUTUMN, NATIONAL_DAY)

# chinesecalendar's short Chinese names -> ours.
_CC_NAMES: Final = {"清明": QINGMING, "端午": DRAGON_BOAT, "中秋": MID_AUTUMN, "国庆": NATIONAL_DAY}

BreakKind = Literal["winter", "summer"]
BREAK_NAMES: Final[Mapping[str, str]] = {"winter": "寒假", "summer": "暑假"}

# Event kinds every calendar has (observance kinds may be added in observances.toml).
EVENT_KINDS: Final = (
    "holiday",
    "winter_break",
    "summer_break",
    "term_start",
    "term_end",
    "safety_education_day",
    "national_security_education_day",
    "disaster_reduction_week",
    "disaster_reduction_day",
    "work_safety_month",
    "anti_drug_day",
    "flood_peak",
    "drowning_prevention_day",
    "science_month",
    "science_day",
    "cyber_security_week",
    "fire_month",
    "fire_day",
    "traffic_safety_day",
)

CALENDAR_DIR: Final = Path("schedules") / "calendar"
CALENDAR_FILES: Final = ("terms.toml", "overrides.toml", "observances.toml")


class CalendarError(ValueError):
    """Calendar data is invalid or a question cannot be answered; ``str()`` names the file and key."""


class OutsideTerms(CalendarError):
    """School-day arithmetic went past the school terms configured for a region."""


# --------------------------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class Holiday:
    """A run of days off around a public holiday (names joined with 、 when two holidays merge)."""

    name: str
    start: date
    end: date
    official: bool


@dataclass(frozen=True, slots=True)
class Break:
    kind: BreakKind
    start: date
    end: date


@dataclass(frozen=True, slots=True)
class Event:
    """Something a campaign can be timed against: ``kind`` is the id rules use, ``name`` the Chinese name."""

    kind: str
    name: str
    start: date
    end: date


@dataclass(frozen=True, slots=True)
class Term:
    name: str
    start: date
    end: date


@dataclass(frozen=True, slots=True)
class Region:
    id: str
    name: str
    terms: tuple[Term, ...]


@dataclass(frozen=True, slots=True)
class DayOff:
    name: str
    start: date
    end: date

    def dates(self) -> Iterator[date]:
        return _days(self.start, self.end)


@dataclass(frozen=True, slots=True)
class Arrangement:
    """One year's published holiday arrangement, typed into overrides.toml."""

    holidays: tuple[DayOff, ...]
    workdays: tuple[date, ...] = ()


@dataclass(frozen=True, slots=True)
class Observance:
    """A dated observance from observances.toml; ``regions`` empty means everywhere."""

    kind: str
    name: str
    start: date
    end: date
    regions: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Overrides:
    years: Mapping[int, Arrangement] = field(default_factory=dict)
    holidays: tuple[DayOff, ...] = ()
    workdays: tuple[date, ...] = ()
    region_days_off: Mapping[str, tuple[DayOff, ...]] = field(default_factory=dict)
    school_days_off: Mapping[str, tuple[DayOff, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Year:
    """The arrangement days (not the weekends joined to them) and make-up workdays of one year."""

    off: Mapping[date, str]
    makeup: frozenset[date]
    official: bool


@dataclass(frozen=True, slots=True)
class _DaySet:
    days: frozenset[date]
    ordinals: tuple[int, ...]  # sorted, for bisect


# ------------------------------------------------------------------------------- holiday data sources


def _days(start: date, end: date) -> Iterator[date]:
    d = start
    while d <= end:
        yield d
        d += ONE_DAY


def _cc_name(value: object) -> str:
    try:
        chinese = str(chinese_calendar.Holiday(value).chinese)
    except ValueError:
        chinese = str(value)
    return _CC_NAMES.get(chinese, chinese)


@cache
def official_arrangement(year: int) -> _Year | None:
    """``chinesecalendar``'s data for ``year``, or None when it does not cover that year."""
    try:
        chinese_calendar.is_workday(date(year, 7, 1))
    except NotImplementedError:
        return None
    off: dict[date, str] = {}
    for day, value in chinese_calendar.holidays.items():
        if day.year == year:
            off[day] = _cc_name(value)
    makeup = frozenset(day for day in chinese_calendar.workdays if day.year == year)
    return _Year(off, makeup, official=True)


def _solar_date(solar: Any) -> date:
    return date(int(solar.getYear()), int(solar.getMonth()), int(solar.getDay()))


@cache
def _festivals(year: int) -> tuple[tuple[str, date], ...]:
    spring = _solar_date(Lunar.fromYmd(year, 1, 1).getSolar())
    qingming = _solar_date(Solar.fromYmd(year, 4, 1).getLunar().getJieQiTable()["清明"])
    if qingming.year != year or qingming.month != 4:  # pragma: no cover - guards the library's table
        raise CalendarError(f"lunar_python gave 清明 {qingming} for {year}")
    return (
        ("除夕", spring - ONE_DAY),
        (SPRING_FESTIVAL, spring),
        (QINGMING, qingming),
        (DRAGON_BOAT, _solar_date(Lunar.fromYmd(year, 5, 5).getSolar())),
        (MID_AUTUMN, _solar_date(Lunar.fromYmd(year, 8, 15).getSolar())),
    )


def festival_days(year: int) -> dict[str, date]:
    """The festival days of ``year`` computed with lunar_python: 除夕, 春节, 清明节, 端午节, 中秋节."""
    return dict(_festivals(year))


# Three days off around a one-day festival, by its weekday (offsets from the festival day): joined to
# the weekend it touches; a Tuesday or Thursday festival bridges the Monday or Friday and a Wednesday
# one takes Monday-Wednesday (official arrangements then add make-up workdays, which we do not
# invent); a weekend festival gets the Monday in lieu. This reproduces every 清明, 端午 and 中秋
# arrangement of 2021-2026 that was not merged with 国庆, except 清明 2023 (a Wednesday given alone):
# erring long, as intended.
_FESTIVAL_SPAN: Final[Mapping[int, tuple[int, int]]] = {
    0: (-2, 0),  # Mon: Sat-Mon
    1: (-2, 0),  # Tue: Sun-Tue
    2: (-2, 0),  # Wed: Mon-Wed
    3: (0, 2),  # Thu: Thu-Sat
    4: (0, 2),  # Fri: Fri-Sun
    5: (0, 2),  # Sat: Sat-Mon
    6: (-1, 1),  # Sun: Sat-Mon
}


def _festival_span(day: date) -> tuple[date, date]:
    before, after = _FESTIVAL_SPAN[day.weekday()]
    return day + timedelta(days=before), day + timedelta(days=after)


@cache
def computed_arrangement(year: int) -> _Year:
    """The holiday days of a year without official data (no make-up workdays).

    - 元旦: 1 January, one day (plus the weekend it touches, as for every holiday).
    - 春节: 除夕 through 初七, 8 days: what the 2025 arrangement gave (4 statutory days from 2025,
      除夕 included) and the core of 2026's (2026 also took the Sunday before 除夕).
    - 清明 (solar term, lunar_python), 端午 (lunar 5/5), 中秋 (lunar 8/15): see ``_FESTIVAL_SPAN``.
    - 劳动节: 1-5 May. 国庆节: 1-7 October, 1-8 October when 中秋 falls inside that week (as in 2017,
      2020 and 2025); a 中秋 just before or after 国庆 joins it through the weekend.
    """
    festivals = dict(_festivals(year))
    off: dict[date, str] = {}

    def put(name: str, start: date, end: date) -> None:
        for day in _days(start, end):
            if day.year == year:
                off[day] = name

    put(NEW_YEAR, date(year, 1, 1), date(year, 1, 1))
    put(SPRING_FESTIVAL, festivals["除夕"], festivals[SPRING_FESTIVAL] + timedelta(days=6))
    put(QINGMING, *_festival_span(festivals[QINGMING]))
    put(LABOUR_DAY, date(year, 5, 1), date(year, 5, 5))
    put(DRAGON_BOAT, *_festival_span(festivals[DRAGON_BOAT]))
    mid_autumn = festivals[MID_AUTUMN]
    if date(year, 10, 1) <= mid_autumn <= date(year, 10, 7):
        put(NATIONAL_DAY, date(year, 10, 1), date(year, 10, 8))
        off[mid_autumn] = MID_AUTUMN
    else:
        put(MID_AUTUMN, *_festival_span(mid_autumn))
        put(NATIONAL_DAY, date(year, 10, 1), date(year, 10, 7))
    return _Year(off, frozenset(), official=False)


# ----------------------------------------------------------------------------------- national days


def nth_weekday(year: int, month: int, weekday: int, nth: int) -> date | None:
    """The ``nth`` ``weekday`` (0 = Monday) of a month; ``nth`` -1 is the last. None if there is none."""
    if nth > 0:
        first = date(year, month, 1)
        day = first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (nth - 1))
    else:
        last = date(year + month // 12, month % 12 + 1, 1) - ONE_DAY
        day = last - timedelta(days=(last.weekday() - weekday) % 7 + 7 * (-nth - 1))
    return day if day.month == month else None


# kind, name, (month, day) first, (month, day) last, first year (SAFETY_CONTENT.md)
_FIXED_OBSERVANCES: Final = (
    ("national_security_education_day", "全民国家安全教育日", (4, 15), (4, 15), 2016),
    ("disaster_reduction_week", "防灾减灾宣传周", (5, 6), (5, 12), 0),
    ("disaster_reduction_day", "全国防灾减灾日", (5, 12), (5, 12), 0),
    ("work_safety_month", "安全生产月", (6, 1), (6, 30), 0),
    ("anti_drug_day", "国际禁毒日", (6, 26), (6, 26), 0),
    ("flood_peak", "主汛期“七下八上”", (7, 16), (8, 15), 0),
    ("drowning_prevention_day", "世界预防溺水日", (7, 25), (7, 25), 2021),
    ("fire_month", "消防宣传月", (11, 1), (11, 30), 0),
    ("fire_day", "全国消防日", (11, 9), (11, 9), 0),
    ("traffic_safety_day", "全国交通安全日", (12, 2), (12, 2), 0),
)


@cache
def _builtin_observances(year: int) -> tuple[Event, ...]:
    # 全国中小学生安全教育日: the Monday of the last week of March = the last Monday of March
    # (a week that starts on 31 March is still "the last week of March": 2025-03-31).
    safety_day = nth_weekday(year, 3, 0, -1)
    assert safety_day is not None
    events = [Event("safety_education_day", "全国中小学生安全教育日", safety_day, safety_day)]
    for kind, name, (m1, d1), (m2, d2), since in _FIXED_OBSERVANCES:
        if year >= since:
            events.append(Event(kind, name, date(year, m1, d1), date(year, m2, d2)))
    if year >= 2025:
        events.append(Event("science_month", "全国科普月", date(year, 9, 1), date(year, 9, 30)))
    else:  # before 2025: 全国科普日, the third weekend of September
        saturday = nth_weekday(year, 9, 5, 3)
        assert saturday is not None
        events.append(Event("science_day", "全国科普日", saturday, saturday + ONE_DAY))
    return tuple(events)


# -------------------------------------------------------------------------------------------- calendar


class Calendar:
    """Holidays, workdays, school days and events; immutable once built, lazily computed per year."""

    def __init__(
        self,
        regions: Iterable[Region] = (),
        overrides: Overrides | None = None,
        observances: Iterable[Observance] = (),
    ) -> None:
        self._regions: dict[str, Region] = {}
        for region in regions:
            self._regions[region.id] = Region(region.id, region.name, tuple(sorted(region.terms, key=_start)))
        self._overrides = overrides or Overrides()
        self._observances = tuple(observances)
        self._region_off = {r: _dates_of(days) for r, days in self._overrides.region_days_off.items()}
        self._school_off = {s: _dates_of(days) for s, days in self._overrides.school_days_off.items()}
        self._breaks = {r: _gaps(region.terms) for r, region in self._regions.items()}
        # Lazy caches (the only mutable state; same answers whenever they are filled).
        self._years: dict[int, _Year] = {}
        self._periods: dict[int, tuple[Holiday, ...]] = {}
        self._holiday_index: dict[int, dict[date, Holiday]] = {}
        self._school_sets: dict[tuple[str, str | None, int], _DaySet] = {}
        self._workday_sets: dict[int, _DaySet] = {}
        self._starting: dict[tuple[str, int], dict[str, tuple[Event, ...]]] = {}

    # ---- loading

    @classmethod
    def load(cls, root: Path) -> Calendar:
        """Read ``root/schedules/calendar/*.toml``; :class:`CalendarError` names the file and key."""
        folder = root / CALENDAR_DIR
        if not folder.is_dir():
            raise CalendarError(f"{CALENDAR_DIR}: folder not found under {root}")
        for path in sorted(folder.glob("*.toml")):
            if path.name not in CALENDAR_FILES:
                raise CalendarError(
                    f"{CALENDAR_DIR / path.name}: unknown calendar file (expected {', '.join(CALENDAR_FILES)})"
                )
        regions = parse_terms(_read_toml(folder, "terms.toml", required=True), str(CALENDAR_DIR / "terms.toml"))
        region_ids = {r.id for r in regions}
        overrides = parse_overrides(
            _read_toml(folder, "overrides.toml", required=False),
            str(CALENDAR_DIR / "overrides.toml"),
            region_ids,
        )
        observances = parse_observances(
            _read_toml(folder, "observances.toml", required=False),
            str(CALENDAR_DIR / "observances.toml"),
            region_ids,
        )
        return cls(regions, overrides, observances)

    # ---- holidays and workdays

    def is_official(self, year: int) -> bool:
        """Whether ``year``'s holidays come from a published arrangement (not computed)."""
        return year in self._overrides.years or official_arrangement(year) is not None

    def unofficial_years(self, years: Iterable[int] | None = None) -> list[int]:
        """Computed years among ``years``, or among the years used so far (for the console's warning)."""
        if years is None:
            return sorted(y for y, data in self._years.items() if not data.official)
        return sorted({y for y in years if not self.is_official(y)})

    def is_workday(self, d: date) -> bool:
        """A weekday that is not a holiday, or a make-up workday."""
        year = self._year(d.year)
        if d in year.makeup:
            return True
        return d.weekday() < 5 and d not in year.off

    def is_makeup_workday(self, d: date) -> bool:
        return d in self._year(d.year).makeup

    def is_holiday(self, d: date) -> bool:
        """``d`` is one of the days off of a public holiday (incl. the weekend days joined to it)."""
        return d in self._index(d.year)

    def holiday_at(self, d: date) -> Holiday | None:
        return self._index(d.year).get(d)

    def holiday_name(self, d: date) -> str | None:
        holiday = self._index(d.year).get(d)
        return holiday.name if holiday else None

    def holidays(self, year: int) -> list[Holiday]:
        """The holidays that have at least one day in ``year``, in date order."""
        return list(self._holiday_periods(year))

    def add_workdays(self, d: date, n: int) -> date:
        """The ``n``-th workday after ``d`` (before it when ``n`` < 0); ``d`` itself when ``n`` is 0."""
        reach = abs(n) // 200 + 2
        found = _step(d, n, self._workday_ordinals, d.year - reach, d.year + reach)
        assert found is not None  # every year has workdays
        return found

    # ---- regions, terms, school days

    def regions(self) -> list[Region]:
        return [self._regions[r] for r in sorted(self._regions)]

    def region(self, region: str) -> Region:
        try:
            return self._regions[region]
        except KeyError:
            known = ", ".join(sorted(self._regions)) or "none"
            raise CalendarError(
                f"unknown region {region!r}: add it to {CALENDAR_DIR / 'terms.toml'} (known: {known})"
            ) from None

    def terms(self, region: str) -> list[Term]:
        return list(self.region(region).terms)

    def term_coverage(self, region: str) -> tuple[date, date] | None:
        """First and last day of the region's configured terms (None when it has none)."""
        terms = self.region(region).terms
        return (terms[0].start, max(t.end for t in terms)) if terms else None

    def breaks(self, year: int, region: str) -> list[Break]:
        """Winter and summer breaks (gaps between consecutive terms) with a day in ``year``."""
        self.region(region)
        return [b for b in self._breaks[region] if b.start.year <= year <= b.end.year]

    def has_school_overrides(self, school: str | None) -> bool:
        """Whether the school has days off of its own (rules then compute it apart from its region)."""
        return school is not None and school in self._school_off

    def is_school_day(self, d: date, region: str, school: str | None = None) -> bool:
        """A workday inside one of the region's terms that is not a region's or school's day off."""
        return d in self._school_set(region, school, d.year).days

    def add_school_days(self, d: date, n: int, region: str, school: str | None = None) -> date:
        """The ``n``-th school day after ``d`` (before it when ``n`` < 0); ``d`` itself when ``n`` is 0.

        Counting may cross a winter or summer break (the last school day before 春节 is the last day
        of the autumn term), but not days nobody configured: raises :class:`OutsideTerms` when the
        answer would lie outside the region's terms, or when the count passes a workday before its
        first term or after its last (an unknown term could hold school days there).
        """
        coverage = self.term_coverage(region)
        found = None
        if coverage is not None:
            found = _step(
                d,
                n,
                lambda year: self._school_set(region, school, year).ordinals,
                coverage[0].year,
                coverage[1].year,
            )
        if found is not None and coverage is not None and n != 0:
            first, last = coverage
            if n > 0 and d < first - ONE_DAY:
                unknown = self._first_workday(d + ONE_DAY, first - ONE_DAY, 1)
            elif n < 0 and d > last + ONE_DAY:
                unknown = self._first_workday(d - ONE_DAY, last + ONE_DAY, -1)
            else:
                unknown = None
            if unknown is not None:
                raise OutsideTerms(
                    f"region {region!r} has no terms configured for {unknown}, so {n:+d} school days from {d} "
                    f"is not known (add its terms to {CALENDAR_DIR / 'terms.toml'})"
                )
        if found is None:
            side = "after" if n > 0 else "before"
            raise OutsideTerms(
                f"region {region!r} has no school days configured {n:+d} school days {side} {d} "
                f"(add its terms to {CALENDAR_DIR / 'terms.toml'})"
            )
        return found

    def move_to_school_day(self, d: date, sign: int, region: str, school: str | None = None) -> date:
        """``d`` if it is a school day, else the first school day after it (``sign`` 1) or before it (-1),
        reached over days off only: weekends, public holidays and the region's or school's own days off.

        This is ``if_not_school_day = "next"`` / ``"previous"``: it moves a date off a day without
        school, never across a winter or summer break, nor into or out of the days before the first
        configured term or after the last. Raises :class:`OutsideTerms` when the way passes a
        workday outside the terms (``d`` itself included): such a date has no school day near it.
        """
        if self.is_school_day(d, region, school):
            return d
        terms = self.region(region).terms
        day = d
        for _ in range(_MOVE_LIMIT):
            if day != d and self.is_school_day(day, region, school):
                return day
            if self.is_workday(day) and not any(t.start <= day <= t.end for t in terms):
                where = "a break" if terms and terms[0].start <= day <= terms[-1].end else "no configured term"
                raise OutsideTerms(
                    f"region {region!r}: {d} is not a school day and the way to the "
                    f"{'next' if sign > 0 else 'previous'} one passes {day}, in {where}"
                )
            day += ONE_DAY if sign > 0 else -ONE_DAY
        raise OutsideTerms(f"region {region!r}: no school day within {_MOVE_LIMIT} days of {d}")

    def _first_workday(self, start: date, stop: date, sign: int) -> date | None:
        """The first workday from ``start`` to ``stop`` (inclusive), walking forward (1) or back (-1)."""
        day, step = start, ONE_DAY if sign > 0 else -ONE_DAY
        while (day <= stop) if sign > 0 else (day >= stop):
            if self.is_workday(day):
                return day
            day += step
        return None

    # ---- events

    def event_kinds(self) -> list[str]:
        return sorted(set(EVENT_KINDS) | {o.kind for o in self._observances})

    def events(self, year: int, region: str) -> list[Event]:
        """Holidays, breaks, term starts and ends, and national days with a day in ``year``."""
        reg = self.region(region)
        first, last = date(year, 1, 1), date(year, 12, 31)
        events = [Event("holiday", h.name, h.start, h.end) for h in self._holiday_periods(year)]
        events += [Event(f"{b.kind}_break", BREAK_NAMES[b.kind], b.start, b.end) for b in self.breaks(year, region)]
        for term in reg.terms:
            if term.start.year == year:
                events.append(Event("term_start", term.name, term.start, term.start))
            if term.end.year == year:
                events.append(Event("term_end", term.name, term.end, term.end))
        events += [
            e for e in self._observances_for(region, year - 1, year, year + 1) if e.start <= last and e.end >= first
        ]
        return sorted(events, key=_event_order)

    def occurrences(self, kind: str, year: int, region: str) -> tuple[Event, ...]:
        """The events of one kind that *start* in ``year`` (each event belongs to exactly one year)."""
        key = (region, year)
        by_kind = self._starting.get(key)
        if by_kind is None:
            by_kind = self._events_starting(year, region)
            self._starting[key] = by_kind
        return by_kind.get(kind, ())

    # ---- internals

    def _year(self, year: int) -> _Year:
        data = self._years.get(year)
        if data is None:
            data = self._build_year(year)
            self._years[year] = data
        return data

    def _build_year(self, year: int) -> _Year:
        arrangement = self._overrides.years.get(year)
        off: dict[date, str]
        if arrangement is not None:
            off = {d: h.name for h in arrangement.holidays for d in h.dates() if d.year == year}
            makeup = {d for d in arrangement.workdays if d.year == year}
            official = True
        else:
            base = official_arrangement(year)
            if base is None:
                base = computed_arrangement(year)
                self._warn_computed(year)
            off, makeup, official = dict(base.off), set(base.makeup), base.official
        # Days of other years' typed-in arrangements that fall in this year (元旦 starting on 30 Dec).
        for other, arr in self._overrides.years.items():
            if other != year:
                off.update((d, h.name) for h in arr.holidays for d in h.dates() if d.year == year)
                makeup.update(d for d in arr.workdays if d.year == year)
        for extra in self._overrides.holidays:
            for d in extra.dates():
                if d.year == year:
                    off[d] = extra.name
                    makeup.discard(d)
        for d in self._overrides.workdays:
            if d.year == year:
                makeup.add(d)
                off.pop(d, None)
        return _Year(off, frozenset(makeup), official)

    def _warn_computed(self, year: int) -> None:
        if official_arrangement(year + 1) is not None:
            log.warning("chinesecalendar has no holiday data for %d; using computed dates", year)
        else:
            log.warning(
                "the official %d holiday arrangement is not published yet; using computed dates "
                "(once it is: upgrade chinesecalendar, or add it to %s [years.%d])",
                year,
                CALENDAR_DIR / "overrides.toml",
                year,
            )

    def _holiday_periods(self, year: int) -> tuple[Holiday, ...]:
        cached = self._periods.get(year)
        if cached is not None:
            return cached
        seeds = sorted(self._year(year).off)
        new_year = date(year + 1, 1, 1)
        if not self.is_workday(date(year, 12, 31)) and new_year in self._year(year + 1).off:
            seeds.append(new_year)  # next year's 元旦 starting on a weekend of this year
        periods: list[Holiday] = []
        covered: set[date] = set()
        for seed in seeds:
            if seed in covered:
                continue
            start = seed
            while not self.is_workday(start - ONE_DAY) and (seed - start).days < 31:
                start -= ONE_DAY
            end = seed
            while not self.is_workday(end + ONE_DAY) and (end - seed).days < 31:
                end += ONE_DAY
            names: list[str] = []
            official = True
            for d in _days(start, end):
                data = self._year(d.year)
                name = data.off.get(d)
                if name is None:
                    continue
                covered.add(d)
                official = official and data.official
                names.extend(part for part in name.split("、") if part not in names)
            periods.append(Holiday("、".join(names), start, end, official))
        result = tuple(periods)
        self._periods[year] = result
        return result

    def _index(self, year: int) -> dict[date, Holiday]:
        index = self._holiday_index.get(year)
        if index is None:
            index = {d: h for h in self._holiday_periods(year) for d in _days(h.start, h.end) if d.year == year}
            self._holiday_index[year] = index
        return index

    def _workday_ordinals(self, year: int) -> tuple[int, ...]:
        got = self._workday_sets.get(year)
        if got is None:
            days = [d for d in _days(date(year, 1, 1), date(year, 12, 31)) if self.is_workday(d)]
            got = _DaySet(frozenset(days), tuple(d.toordinal() for d in days))
            self._workday_sets[year] = got
        return got.ordinals

    def _school_set(self, region: str, school: str | None, year: int) -> _DaySet:
        if school is not None and school not in self._school_off:
            school = None  # schools without days of their own share their region's set
        key = (region, school, year)
        got = self._school_sets.get(key)
        if got is None:
            terms = self.region(region).terms
            off = self._region_off.get(region, frozenset()) | self._school_off.get(school or "", frozenset())
            first, last = date(year, 1, 1), date(year, 12, 31)
            days: list[date] = []
            for term in terms:
                if term.start <= last and term.end >= first:
                    days.extend(
                        d
                        for d in _days(max(term.start, first), min(term.end, last))
                        if d not in off and self.is_workday(d)
                    )
            days.sort()
            got = _DaySet(frozenset(days), tuple(d.toordinal() for d in days))
            self._school_sets[key] = got
        return got

    def _observances_for(self, region: str, *years: int) -> list[Event]:
        configured = [o for o in self._observances if not o.regions or region in o.regions]
        events: list[Event] = []
        for year in years:
            replaced = {o.kind for o in configured if o.start.year == year}
            events += [e for e in _builtin_observances(year) if e.kind not in replaced]
        wanted = set(years)
        events += [Event(o.kind, o.name, o.start, o.end) for o in configured if o.start.year in wanted]
        return events

    def _events_starting(self, year: int, region: str) -> dict[str, tuple[Event, ...]]:
        reg = self.region(region)
        events = [Event("holiday", h.name, h.start, h.end) for h in self._holiday_periods(year) if h.start.year == year]
        events += [Event(f"{b.kind}_break", BREAK_NAMES[b.kind], b.start, b.end) for b in self._breaks[region]]
        events += [Event("term_start", t.name, t.start, t.start) for t in reg.terms]
        events += [Event("term_end", t.name, t.end, t.end) for t in reg.terms]
        events += self._observances_for(region, year)
        by_kind: dict[str, list[Event]] = {}
        for event in sorted(events, key=_event_order):
            if event.start.year == year:
                by_kind.setdefault(event.kind, []).append(event)
        return {kind: tuple(evs) for kind, evs in by_kind.items()}


def _start(term: Term) -> date:
    return term.start


def _event_order(event: Event) -> tuple[date, date, str, str]:
    return (event.start, event.end, event.kind, event.name)


def _dates_of(days_off: Iterable[DayOff]) -> frozenset[date]:
    return frozenset(d for day_off in days_off for d in day_off.dates())


def _gaps(terms: Sequence[Term]) -> tuple[Break, ...]:
    breaks: list[Break] = []
    for before, after in pairwise(terms):
        start, end = before.end + ONE_DAY, after.start - ONE_DAY
        if start <= end:
            breaks.append(Break("summer" if 5 <= start.month <= 9 else "winter", start, end))
    return tuple(breaks)


def _step(d: date, n: int, ordinals_of: Callable[[int], Sequence[int]], first_year: int, last_year: int) -> date | None:
    """The ``n``-th day of a per-year sorted set after ``d`` (before when negative), or None."""
    if n == 0:
        return d
    year, x = d.year, d.toordinal()
    if n > 0:
        ordinals = ordinals_of(year) if first_year <= year <= last_year else ()
        i = bisect.bisect_right(ordinals, x)
        while i + n > len(ordinals):
            n -= len(ordinals) - i
            year += 1
            if year > last_year:
                return None
            ordinals, i = ordinals_of(year), 0
        return date.fromordinal(ordinals[i + n - 1])
    k = -n
    ordinals = ordinals_of(year) if first_year <= year <= last_year else ()
    i = bisect.bisect_left(ordinals, x)
    while i < k:
        k -= i
        year -= 1
        if year < first_year:
            return None
        ordinals = ordinals_of(year)
        i = len(ordinals)
    return date.fromordinal(ordinals[i - k])


# --------------------------------------------------------------------------------------- TOML parsing

_KIND = re.compile(r"^[a-z][a-z0-9_]*$")


def _read_toml(folder: Path, name: str, *, required: bool) -> dict[str, Any]:
    label = CALENDAR_DIR / name
    path = folder / name
    if not path.exists():
        if required:
            raise CalendarError(f"{label}: file not found")
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CalendarError(f"{label}: invalid TOML: {exc}") from None


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _table(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CalendarError(f"{where}: expected a table, got {_show(value)}")
    return cast(dict[str, Any], value)


def _list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise CalendarError(f"{where}: expected a list, got {_show(value)}")
    return value


def _keys(table: Mapping[str, object], where: str, allowed: Collection[str], required: Collection[str] = ()) -> None:
    for key in table:
        if key not in allowed:
            raise CalendarError(f"{_at(where, key)}: unknown key (allowed: {', '.join(sorted(allowed))})")
    for key in required:
        if key not in table:
            raise CalendarError(f"{_at(where, key)}: missing")


def _at(where: str, key: str) -> str:
    """``file: a.b`` + ``c`` -> ``file: a.b.c``; ``file:`` + ``c`` -> ``file: c``."""
    return f"{where} {key}" if where.endswith(":") else f"{where}.{key}"


def _text(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise CalendarError(f"{where}: expected a non-empty string, got {_show(value)}")
    return value.strip()


def parse_date(value: object, where: str) -> date:
    """A TOML date (2026-05-01) or the same as a string."""
    if isinstance(value, date) and not hasattr(value, "hour"):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise CalendarError(f"{where}: expected a date like 2026-05-01, got {_show(value)}")


def _day_off(value: object, where: str, default_name: str) -> DayOff:
    """A date, or a table ``{ name = "...", start = ..., end = ... }`` (``end`` defaults to ``start``)."""
    if not isinstance(value, dict):
        d = parse_date(value, where)
        return DayOff(default_name, d, d)
    table = _table(value, where)
    _keys(table, where, {"name", "start", "end"}, {"start"})
    start = parse_date(table["start"], f"{where}.start")
    end = parse_date(table.get("end", start), f"{where}.end")
    if end < start:
        raise CalendarError(f"{where}.end: {end} is before start {start}")
    name = _text(table["name"], f"{where}.name") if "name" in table else default_name
    return DayOff(name, start, end)


def _days_off(value: object, where: str, default_name: str) -> tuple[DayOff, ...]:
    return tuple(_day_off(item, f"{where}[{i}]", default_name) for i, item in enumerate(_list(value, where)))


def parse_terms(data: Mapping[str, object], file: str) -> list[Region]:
    _keys(data, file + ":", {"regions"})
    regions: list[Region] = []
    for region_id, raw in _table(data.get("regions", {}), f"{file}: regions").items():
        key = f"{file}: regions.{region_id}"
        table = _table(raw, key)
        _keys(table, key, {"name", "terms"}, {"terms"})
        name = _text(table.get("name", region_id), f"{key}.name")
        terms: list[Term] = []
        for i, raw_term in enumerate(_list(table["terms"], f"{key}.terms")):
            where = f"{key}.terms[{i}]"
            term = _table(raw_term, where)
            _keys(term, where, {"name", "start", "end"}, {"start", "end"})
            start = parse_date(term["start"], f"{where}.start")
            end = parse_date(term["end"], f"{where}.end")
            if end < start:
                raise CalendarError(f"{where}.end: {end} is before start {start}")
            term_name = _text(term["name"], f"{where}.name") if "name" in term else f"{start}–{end}"
            terms.append(Term(term_name, start, end))
        terms.sort(key=_start)
        for before, after in pairwise(terms):
            if after.start <= before.end:
                raise CalendarError(
                    f"{key}.terms: {after.name!r} starts {after.start}, before {before.name!r} ends {before.end}"
                )
        regions.append(Region(region_id, name, tuple(terms)))
    return regions


def parse_overrides(data: Mapping[str, object], file: str, region_ids: Collection[str]) -> Overrides:
    _keys(data, file + ":", {"years", "holidays", "workdays", "regions", "schools"})
    years: dict[int, Arrangement] = {}
    for year_key, raw in _table(data.get("years", {}), f"{file}: years").items():
        where = f"{file}: years.{year_key}"
        if not year_key.isdigit() or len(year_key) != 4:
            raise CalendarError(f"{where}: expected a year like [years.2027]")
        table = _table(raw, where)
        _keys(table, where, {"holidays", "workdays", "source"}, {"holidays"})
        items = _list(table["holidays"], f"{where}.holidays")
        for i, item in enumerate(items):
            if not isinstance(item, dict) or "name" not in item:
                raise CalendarError(f"{where}.holidays[{i}]: expected {{ name = ..., start = ..., end = ... }}")
        holidays = _days_off(items, f"{where}.holidays", "假日")
        workdays = tuple(
            parse_date(v, f"{where}.workdays[{i}]")
            for i, v in enumerate(_list(table.get("workdays", []), f"{where}.workdays"))
        )
        years[int(year_key)] = Arrangement(holidays, workdays)
    holidays = _days_off(data.get("holidays", []), f"{file}: holidays", "假日")
    workdays = tuple(
        parse_date(v, f"{file}: workdays[{i}]")
        for i, v in enumerate(_list(data.get("workdays", []), f"{file}: workdays"))
    )
    region_off: dict[str, tuple[DayOff, ...]] = {}
    for region_id, raw in _table(data.get("regions", {}), f"{file}: regions").items():
        where = f"{file}: regions.{region_id}"
        if region_id not in region_ids:
            raise CalendarError(f"{where}: unknown region (regions are defined in {CALENDAR_DIR / 'terms.toml'})")
        table = _table(raw, where)
        _keys(table, where, {"days_off"}, {"days_off"})
        region_off[region_id] = _days_off(table["days_off"], f"{where}.days_off", "放假")
    school_off: dict[str, tuple[DayOff, ...]] = {}
    for school_id, raw in _table(data.get("schools", {}), f"{file}: schools").items():
        where = f"{file}: schools.{school_id}"
        table = _table(raw, where)
        _keys(table, where, {"days_off"}, {"days_off"})
        school_off[school_id] = _days_off(table["days_off"], f"{where}.days_off", "放假")
    return Overrides(years, holidays, workdays, region_off, school_off)


def parse_observances(data: Mapping[str, object], file: str, region_ids: Collection[str]) -> list[Observance]:
    _keys(data, file + ":", {"observances"})
    observances: list[Observance] = []
    for i, raw in enumerate(_list(data.get("observances", []), f"{file}: observances")):
        where = f"{file}: observances[{i}]"
        table = _table(raw, where)
        _keys(table, where, {"kind", "name", "start", "end", "regions"}, {"kind", "name", "start"})
        kind = _text(table["kind"], f"{where}.kind")
        if not _KIND.match(kind) or kind in {
            "holiday",
            "weekend",
            "winter_break",
            "summer_break",
            "term_start",
            "term_end",
        }:
            raise CalendarError(f"{where}.kind: {kind!r} is reserved or not an id like cyber_security_week")
        start = parse_date(table["start"], f"{where}.start")
        end = parse_date(table.get("end", start), f"{where}.end")
        if end < start:
            raise CalendarError(f"{where}.end: {end} is before start {start}")
        regions = frozenset(
            _text(r, f"{where}.regions[{j}]") for j, r in enumerate(_list(table.get("regions", []), f"{where}.regions"))
        )
        for region_id in sorted(regions - set(region_ids)):
            raise CalendarError(f"{where}.regions: unknown region {region_id!r}")
        observances.append(Observance(kind, _text(table["name"], f"{where}.name"), start, end, regions))
    return observances
