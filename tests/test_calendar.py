"""The safety calendar: official and computed holidays, make-up workdays, terms, school days, events."""

from __future__ import annotations

import logging
from datetime import date, timedelta
from pathlib import Path

import pytest

from bot.campaigns.calendar import (
    Calendar,
    CalendarError,
    DayOff,
    Event,
    Holiday,
    OutsideTerms,
    Overrides,
    Region,
    Term,
    computed_arrangement,
    festival_days,
    nth_weekday,
)

ROOT = Path(__file__).resolve().parent.parent
D = date.fromisoformat


@pytest.fixture(scope="module")
def calendar() -> Calendar:
    return Calendar.load(ROOT)


def needs_computed_2027(cal: Calendar) -> None:
    if cal.is_official(2027):  # pragma: no cover - once chinesecalendar or overrides.toml carry 2027
        pytest.skip("2027 has official holiday data now; these tests need a computed year")


def by_name(holidays: list[Holiday]) -> dict[str, tuple[date, date]]:
    return {h.name: (h.start, h.end) for h in holidays}


def test_2026_holidays_are_the_official_arrangement(calendar: Calendar) -> None:
    holidays = calendar.holidays(2026)
    assert all(h.official for h in holidays)
    assert by_name(holidays) == {
        "元旦": (D("2026-01-01"), D("2026-01-03")),
        "春节": (D("2026-02-15"), D("2026-02-23")),
        "清明节": (D("2026-04-04"), D("2026-04-06")),
        "劳动节": (D("2026-05-01"), D("2026-05-05")),
        "端午节": (D("2026-06-19"), D("2026-06-21")),
        "中秋节": (D("2026-09-25"), D("2026-09-27")),
        "国庆节": (D("2026-10-01"), D("2026-10-07")),
    }
    assert 2026 not in calendar.unofficial_years([2026])


def test_merged_mid_autumn_and_national_day_2025_is_one_holiday(calendar: Calendar) -> None:
    merged = [h for h in calendar.holidays(2025) if h.start == D("2025-10-01")]
    assert merged == [Holiday("国庆节、中秋节", D("2025-10-01"), D("2025-10-08"), True)]


def test_lunar_festival_days_2026_and_2027() -> None:
    assert festival_days(2026)["春节"] == D("2026-02-17")
    assert festival_days(2027)["春节"] == D("2027-02-06")
    assert festival_days(2027)["除夕"] == D("2027-02-05")
    assert festival_days(2026)["端午节"] == D("2026-06-19")
    assert festival_days(2027)["端午节"] == D("2027-06-09")
    assert festival_days(2026)["中秋节"] == D("2026-09-25")
    assert festival_days(2027)["中秋节"] == D("2027-09-15")
    assert festival_days(2027)["清明节"] == D("2027-04-05")


def test_2027_holidays_are_computed_and_warn_once_per_year(caplog: pytest.LogCaptureFixture) -> None:
    cal = Calendar.load(ROOT)
    needs_computed_2027(cal)
    with caplog.at_level(logging.WARNING, logger="bot.campaigns.calendar"):
        holidays = by_name(cal.holidays(2027))
        cal.is_workday(D("2027-06-09"))
        cal.holidays(2027)
    warnings = [r.getMessage() for r in caplog.records if "2027" in r.getMessage()]
    assert len(warnings) == 1
    assert "the official 2027 holiday arrangement is not published yet; using computed dates" in warnings[0]
    assert cal.unofficial_years() == [2027]
    assert not any(h.official for h in cal.holidays(2027))
    # 春节 from 除夕 through 初七, joined to the weekend after it; no make-up workdays invented.
    assert holidays["春节"] == (D("2027-02-05"), D("2027-02-14"))
    assert holidays["元旦"] == (D("2027-01-01"), D("2027-01-03"))
    assert holidays["清明节"] == (D("2027-04-03"), D("2027-04-05"))
    assert holidays["劳动节"] == (D("2027-05-01"), D("2027-05-05"))
    assert holidays["端午节"][0] <= D("2027-06-09") <= holidays["端午节"][1]
    assert holidays["中秋节"][0] <= D("2027-09-15") <= holidays["中秋节"][1]
    assert holidays["国庆节"] == (D("2027-10-01"), D("2027-10-07"))
    assert cal.holiday_name(D("2027-02-06")) == "春节"
    assert not cal.is_workday(D("2027-06-09"))
    assert cal.is_workday(D("2027-06-10"))


@pytest.mark.parametrize("year", range(2021, 2027))
def test_computed_festival_days_reproduce_the_official_arrangements(calendar: Calendar, year: int) -> None:
    computed = computed_arrangement(year)
    official = {h.name: h for h in calendar.holidays(year)}
    for name in ("清明节", "端午节", "中秋节"):
        if name not in official:
            continue  # merged with 国庆 that year
        days = sorted(d for d, n in computed.off.items() if n == name)
        h = official[name]
        if (year, name) == (2023, "清明节"):  # a Wednesday given alone; we compute Mon-Wed (longer)
            assert days[0] <= h.start and h.end <= days[-1]
        else:
            assert (days[0], days[-1]) == (h.start, h.end), name


@pytest.mark.parametrize("year", [2025, 2026])
def test_computed_spring_festival_and_fixed_holidays_fall_within_the_official_ones(
    calendar: Calendar, year: int
) -> None:
    computed = computed_arrangement(year)
    for d, name in computed.off.items():
        if name in ("春节", "劳动节", "国庆节"):
            assert calendar.is_holiday(d), (d, name)


def test_chinesecalendar_coverage_is_probed_not_hard_coded(calendar: Calendar) -> None:
    assert calendar.is_official(2026)
    assert calendar.is_official(2004)
    assert not calendar.is_official(2100)
    assert calendar.unofficial_years([2025, 2026, 2100]) == [2100]


def test_make_up_workdays_are_workdays(calendar: Calendar) -> None:
    for d in ("2026-01-04", "2026-02-14", "2026-02-28", "2026-05-09", "2026-09-20", "2026-10-10"):
        assert calendar.is_makeup_workday(D(d))
        assert calendar.is_workday(D(d))
        assert not calendar.is_holiday(D(d))
    assert not calendar.is_workday(D("2026-10-08") + timedelta(days=3))  # an ordinary Sunday
    assert calendar.is_workday(D("2026-10-08"))
    assert not calendar.is_workday(D("2026-10-05"))  # a Monday in 国庆
    assert calendar.holiday_name(D("2026-10-03")) == "国庆节"
    assert calendar.holiday_name(D("2026-03-03")) is None


def test_school_days_count_across_a_holiday_and_a_make_up_saturday(calendar: Calendar) -> None:
    # 劳动节 2026 is 5/1-5/5; Saturday 5/9 is a make-up workday and a school day in term.
    assert calendar.add_school_days(D("2026-04-30"), 1, "beijing") == D("2026-05-06")
    assert calendar.add_school_days(D("2026-04-29"), 3, "beijing") == D("2026-05-07")
    assert calendar.add_school_days(D("2026-05-06"), -1, "beijing") == D("2026-04-30")
    assert calendar.add_school_days(D("2026-05-08"), 1, "beijing") == D("2026-05-09")
    assert calendar.add_school_days(D("2026-05-11"), -1, "beijing") == D("2026-05-09")
    assert calendar.is_school_day(D("2026-05-09"), "beijing")
    assert calendar.add_school_days(D("2026-05-09"), 0, "beijing") == D("2026-05-09")
    # A make-up Saturday inside the winter break is a workday, not a school day.
    assert calendar.is_workday(D("2026-02-28"))
    assert not calendar.is_school_day(D("2026-02-28"), "beijing")
    # Across the winter break, and across the year end.
    assert calendar.add_school_days(D("2026-01-23"), 1, "beijing") == D("2026-03-02")
    assert calendar.add_school_days(D("2026-03-02"), -1, "beijing") == D("2026-01-23")
    assert calendar.add_school_days(D("2026-12-31"), 1, "beijing") == D("2027-01-04")


def test_school_day_arithmetic_outside_the_terms_says_which_region(calendar: Calendar) -> None:
    last = calendar.terms("beijing")[-1].end
    with pytest.raises(OutsideTerms, match="beijing"):
        calendar.add_school_days(last, 1, "beijing")
    assert not calendar.is_school_day(last + timedelta(days=70), "beijing")


def test_workday_arithmetic(calendar: Calendar) -> None:
    assert calendar.add_workdays(D("2026-09-30"), 1) == D("2026-10-08")
    assert calendar.add_workdays(D("2026-10-09"), 1) == D("2026-10-10")
    assert calendar.add_workdays(D("2026-01-05"), -1) == D("2026-01-04")


def test_breaks_are_the_gaps_between_terms(calendar: Calendar) -> None:
    assert [(b.kind, b.start, b.end) for b in calendar.breaks(2026, "beijing")] == [
        ("winter", D("2026-01-24"), D("2026-03-01")),
        ("summer", D("2026-07-08"), D("2026-08-31")),
    ]
    summer_2025 = [b for b in calendar.breaks(2025, "shanghai") if b.kind == "summer"]
    assert [(b.start, b.end) for b in summer_2025] == [(D("2025-07-01"), D("2025-08-31"))]
    for region in ("demo", "beijing", "shanghai"):
        assert all(t.start.month == 9 and t.start.day == 1 for t in calendar.terms(region) if t.start.month >= 8)
        assert {b.kind for b in calendar.breaks(2027, region)} == {"winter", "summer"}


def test_school_day_is_a_workday_in_term(calendar: Calendar) -> None:
    assert calendar.is_school_day(D("2026-09-01"), "beijing")
    assert not calendar.is_school_day(D("2026-08-31"), "beijing")  # summer break
    assert not calendar.is_school_day(D("2026-10-02"), "beijing")  # 国庆
    assert not calendar.is_school_day(D("2026-09-05"), "beijing")  # Saturday
    assert calendar.is_school_day(D("2026-09-20"), "beijing")  # make-up Sunday


@pytest.mark.parametrize(("year", "monday"), [(2025, "2025-03-31"), (2026, "2026-03-30"), (2027, "2027-03-29")])
def test_safety_education_day_is_the_monday_of_the_last_week_of_march(
    calendar: Calendar, year: int, monday: str
) -> None:
    assert nth_weekday(year, 3, 0, -1) == D(monday)
    events = [e for e in calendar.events(year, "demo") if e.kind == "safety_education_day"]
    assert events == [Event("safety_education_day", "全国中小学生安全教育日", D(monday), D(monday))]


def test_events_2026_cover_holidays_breaks_terms_and_national_days(calendar: Calendar) -> None:
    events = calendar.events(2026, "beijing")
    assert events == sorted(events, key=lambda e: (e.start, e.end, e.kind, e.name))
    spans = {e.kind: (e.start, e.end) for e in events if e.kind != "holiday"}
    assert spans["national_security_education_day"] == (D("2026-04-15"), D("2026-04-15"))
    assert spans["disaster_reduction_day"] == (D("2026-05-12"), D("2026-05-12"))
    assert spans["disaster_reduction_week"] == (D("2026-05-06"), D("2026-05-12"))
    assert spans["work_safety_month"] == (D("2026-06-01"), D("2026-06-30"))
    assert spans["anti_drug_day"] == (D("2026-06-26"), D("2026-06-26"))
    assert spans["drowning_prevention_day"] == (D("2026-07-25"), D("2026-07-25"))
    assert spans["flood_peak"] == (D("2026-07-16"), D("2026-08-15"))
    assert spans["science_month"] == (D("2026-09-01"), D("2026-09-30"))
    assert spans["fire_month"] == (D("2026-11-01"), D("2026-11-30"))
    assert spans["fire_day"] == (D("2026-11-09"), D("2026-11-09"))
    assert spans["traffic_safety_day"] == (D("2026-12-02"), D("2026-12-02"))
    assert spans["winter_break"] == (D("2026-01-24"), D("2026-03-01"))
    assert spans["summer_break"] == (D("2026-07-08"), D("2026-08-31"))
    assert Event("term_start", "2026-2027学年第一学期", D("2026-09-01"), D("2026-09-01")) in events
    assert [e.name for e in events if e.kind == "holiday"] == [
        "元旦",
        "春节",
        "清明节",
        "劳动节",
        "端午节",
        "中秋节",
        "国庆节",
    ]


def test_science_day_before_2025_is_the_third_weekend_of_september(calendar: Calendar) -> None:
    science = [e for e in calendar.events(2024, "demo") if e.kind.startswith("science")]
    assert science == [Event("science_day", "全国科普日", D("2024-09-21"), D("2024-09-22"))]


def test_a_new_year_holiday_starting_in_december_belongs_to_both_years(calendar: Calendar) -> None:
    new_year_2024 = Holiday("元旦", D("2023-12-30"), D("2024-01-01"), True)
    assert new_year_2024 in calendar.holidays(2023)
    assert new_year_2024 in calendar.holidays(2024)
    assert calendar.holiday_name(D("2023-12-30")) == "元旦"
    starting = calendar.occurrences("holiday", 2023, "demo")
    assert new_year_2024.start in [e.start for e in starting]
    assert new_year_2024.start not in [e.start for e in calendar.occurrences("holiday", 2024, "demo")]


# --------------------------------------------------------------------------------------- overrides


def write_calendar(root: Path, terms: str, overrides: str = "", observances: str = "") -> Path:
    folder = root / "schedules" / "calendar"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "terms.toml").write_text(terms, encoding="utf-8")
    if overrides:
        (folder / "overrides.toml").write_text(overrides, encoding="utf-8")
    if observances:
        (folder / "observances.toml").write_text(observances, encoding="utf-8")
    return root


TERMS = """
[regions.r1]
name = "测试区"
terms = [
    { name = "春季", start = 2026-03-02, end = 2026-07-03 },
    { name = "秋季", start = 2026-09-01, end = 2027-01-22 },
    { name = "2027春季", start = 2027-02-22, end = 2027-07-02 },
]
"""


def test_overrides_add_days_off_workdays_and_a_published_year(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    overrides = """
holidays = [{ name = "临时放假", start = 2026-06-01, end = 2026-06-02 }]
workdays = [2026-06-06]

[years.2027]
source = "test"
holidays = [
    { name = "元旦", start = 2027-01-01, end = 2027-01-03 },
    { name = "端午节", start = 2027-06-07, end = 2027-06-09 },
]
workdays = [2027-06-06]

[regions.r1]
days_off = [{ name = "地方节日", start = 2026-04-20, end = 2026-04-21 }]

[schools.s1]
days_off = [2026-05-06, { name = "校运会", start = 2026-10-15, end = 2026-10-16 }]
"""
    cal = Calendar.load(write_calendar(tmp_path, TERMS, overrides))
    assert cal.holiday_name(D("2026-06-01")) == "临时放假"
    assert not cal.is_school_day(D("2026-06-02"), "r1")
    assert cal.is_workday(D("2026-06-06")) and cal.is_school_day(D("2026-06-06"), "r1")
    assert not cal.is_school_day(D("2026-04-20"), "r1")
    assert cal.is_workday(D("2026-04-20"))
    # The school's own days off, and only that school's.
    assert not cal.is_school_day(D("2026-05-06"), "r1", "s1")
    assert cal.is_school_day(D("2026-05-06"), "r1", "s2")
    assert cal.is_school_day(D("2026-05-06"), "r1")
    assert cal.has_school_overrides("s1") and not cal.has_school_overrides("s2")
    assert cal.add_school_days(D("2026-10-14"), 1, "r1", "s1") == D("2026-10-19")
    assert cal.add_school_days(D("2026-10-14"), 1, "r1") == D("2026-10-15")
    # A typed-in arrangement makes the year official: no warning, its days replace the computed ones.
    with caplog.at_level(logging.WARNING, logger="bot.campaigns.calendar"):
        assert cal.is_official(2027)
        holidays = by_name(cal.holidays(2027))
        assert holidays["端午节"] == (D("2027-06-07"), D("2027-06-09"))
        assert "春节" not in holidays
        assert cal.is_school_day(D("2027-06-06"), "r1")  # a make-up Sunday
    assert not [r for r in caplog.records if "2027" in r.getMessage()]
    assert cal.unofficial_years() == []


def test_observances_file_adds_yearly_observances_and_replaces_built_ins(tmp_path: Path) -> None:
    observances = """
[[observances]]
kind = "cyber_security_week"
name = "国家网络安全宣传周"
start = 2026-09-14
end = 2026-09-20

[[observances]]
kind = "disaster_reduction_week"
name = "防灾减灾宣传周"
start = 2026-05-10
end = 2026-05-16

[[observances]]
kind = "local_day"
name = "地方安全日"
start = 2026-04-01
regions = ["r1"]
"""
    cal = Calendar.load(write_calendar(tmp_path, TERMS, observances=observances))
    events = cal.events(2026, "r1")
    kinds = {e.kind: (e.start, e.end) for e in events}
    assert kinds["cyber_security_week"] == (D("2026-09-14"), D("2026-09-20"))
    assert kinds["disaster_reduction_week"] == (D("2026-05-10"), D("2026-05-16"))
    assert [e for e in events if e.kind == "disaster_reduction_week"].__len__() == 1
    assert kinds["local_day"] == (D("2026-04-01"), D("2026-04-01"))
    assert "local_day" in cal.event_kinds()
    # Other years keep the built-in week.
    assert {e.kind: e.start for e in cal.events(2027, "r1")}["disaster_reduction_week"] == D("2027-05-06")


def test_calendar_built_in_code_needs_no_files() -> None:
    cal = Calendar(
        [Region("x", "X", (Term("t", D("2026-09-01"), D("2026-12-31")),))],
        Overrides(school_days_off={"s": (DayOff("运动会", D("2026-09-02"), D("2026-09-02")),)}),
    )
    assert cal.add_school_days(D("2026-09-01"), 1, "x", "s") == D("2026-09-03")
    with pytest.raises(CalendarError, match="unknown region 'nowhere'"):
        cal.is_school_day(D("2026-09-01"), "nowhere")


@pytest.mark.parametrize(
    ("terms", "overrides", "observances", "message"),
    [
        (
            '[regions.r1]\nterms = [{ start = 2026-03-02, end = "2026/07/03" }]',
            "",
            "",
            "schedules/calendar/terms.toml: regions.r1.terms[0].end: expected a date",
        ),
        (
            "[regions.r1]\nterms = [{ start = 2026-03-02, end = 2026-07-03, begin = 1 }]",
            "",
            "",
            "schedules/calendar/terms.toml: regions.r1.terms[0].begin: unknown key",
        ),
        (
            "[regions.r1]\nterms = [{ start = 2026-03-02, end = 2026-02-03 }]",
            "",
            "",
            "schedules/calendar/terms.toml: regions.r1.terms[0].end: 2026-02-03 is before start",
        ),
        (
            "[regions.r1]\nterms = [{ name = 'a', start = 2026-03-02, end = 2026-07-03 },"
            " { name = 'b', start = 2026-07-01, end = 2026-12-03 }]",
            "",
            "",
            "schedules/calendar/terms.toml: regions.r1.terms: 'b' starts 2026-07-01, before 'a' ends",
        ),
        ("[regions.r1]\nname = 'x'", "", "", "schedules/calendar/terms.toml: regions.r1.terms: missing"),
        ("[regions.r1\n", "", "", "schedules/calendar/terms.toml: invalid TOML"),
        (TERMS, "[regions.r2]\ndays_off = [2026-05-01]", "", "schedules/calendar/overrides.toml: regions.r2"),
        (
            TERMS,
            "[schools.s1]\ndays_off = ['May 1']",
            "",
            "schedules/calendar/overrides.toml: schools.s1.days_off[0]: expected a date",
        ),
        (
            TERMS,
            "[years.2027]\nholidays = [2027-01-01]",
            "",
            "schedules/calendar/overrides.toml: years.2027.holidays[0]: expected { name",
        ),
        (
            TERMS,
            "workday = [2026-06-06]",
            "",
            "schedules/calendar/overrides.toml: workday: unknown key",
        ),
        (
            TERMS,
            "",
            "[[observances]]\nkind = 'holiday'\nname = 'x'\nstart = 2026-01-01",
            "schedules/calendar/observances.toml: observances[0].kind",
        ),
        (
            TERMS,
            "",
            "[[observances]]\nkind = 'x'\nname = 'x'\nstart = 2026-01-01\nregions = ['mars']",
            "schedules/calendar/observances.toml: observances[0].regions: unknown region 'mars'",
        ),
    ],
)
def test_load_errors_name_the_file_and_key(
    tmp_path: Path, terms: str, overrides: str, observances: str, message: str
) -> None:
    with pytest.raises(CalendarError) as error:
        Calendar.load(write_calendar(tmp_path, terms, overrides, observances))
    assert message in str(error.value)


def test_load_rejects_missing_and_unknown_files(tmp_path: Path) -> None:
    (tmp_path / "schedules" / "calendar").mkdir(parents=True)
    with pytest.raises(CalendarError, match=r"schedules/calendar/terms\.toml: file not found"):
        Calendar.load(tmp_path)
    write_calendar(tmp_path, TERMS)
    (tmp_path / "schedules" / "calendar" / "override.toml").write_text("", encoding="utf-8")
    with pytest.raises(CalendarError, match=r"schedules/calendar/override\.toml: unknown calendar file"):
        Calendar.load(tmp_path)


def test_shipped_calendar_files_load(calendar: Calendar) -> None:
    assert [r.id for r in calendar.regions()] == ["beijing", "demo", "shanghai"]
    assert calendar.region("beijing").name == "北京市"
    assert calendar.term_coverage("demo") == (D("2025-02-17"), D("2028-07-07"))


def test_school_days_are_not_counted_through_days_no_term_covers() -> None:
    cal = Calendar([Region("x", "X", (Term("t", D("2026-08-31"), D("2027-01-22")),))])
    # Before the first term: only when nothing but days off lie between (a weekend here).
    assert cal.add_school_days(D("2026-08-29"), 1, "x") == D("2026-08-31")
    with pytest.raises(OutsideTerms, match="no terms configured for 2026-08-21"):
        cal.add_school_days(D("2026-08-20"), 1, "x")
    # After the last term, counting back.
    assert cal.add_school_days(D("2027-01-24"), -1, "x") == D("2027-01-22")
    with pytest.raises(OutsideTerms, match="no terms configured"):
        cal.add_school_days(D("2027-03-10"), -1, "x")


def test_moving_to_a_school_day_passes_days_off_but_not_a_break(calendar: Calendar) -> None:
    assert calendar.move_to_school_day(D("2026-05-02"), 1, "beijing") == D("2026-05-06")  # 劳动节
    assert calendar.move_to_school_day(D("2026-05-02"), -1, "beijing") == D("2026-04-30")
    assert calendar.move_to_school_day(D("2026-05-06"), 1, "beijing") == D("2026-05-06")  # already one
    assert calendar.move_to_school_day(D("2026-03-01"), 1, "beijing") == D("2026-03-02")  # Sunday before term
    with pytest.raises(OutsideTerms, match="a break"):
        calendar.move_to_school_day(D("2026-02-10"), 1, "beijing")  # winter break
    with pytest.raises(OutsideTerms, match="no configured term"):
        calendar.move_to_school_day(D("2025-06-02"), 1, "beijing")  # before Beijing's first term
