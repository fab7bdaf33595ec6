"""The "when" rules of campaigns: each rule kind gives the right dates for 2026 and 2027."""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.campaigns.calendar import Calendar, CalendarError, DayOff, Overrides, Region, Term
from bot.campaigns.rules import RuleError, When, parse_when

ROOT = Path(__file__).resolve().parent.parent
D = date.fromisoformat

DROWNING_WEEKLY = {"before": "weekend", "school_days": 1, "at": "16:00", "from": "05-01", "to": "09-30"}


@pytest.fixture(scope="module")
def calendar() -> Calendar:
    return Calendar.load(ROOT)


def when(table: Any) -> When:
    return parse_when(table, where="schedules/test.toml: when")


def days(
    cal: Calendar, table: Any, start: str, end: str, region: str = "beijing", school: str | None = None
) -> list[date]:
    fires = when(table).firings(cal, D(start), D(end), region, school)
    return [f.date() for f in fires]


def test_cron_uses_crontab_weekday_numbers_and_shanghai_time(calendar: Calendar) -> None:
    fires = when({"cron": "0 16 * * 5"}).firings(calendar, D("2026-05-01"), D("2026-05-31"), "demo")
    assert [f.date() for f in fires] == [
        D("2026-05-01"),
        D("2026-05-08"),
        D("2026-05-15"),
        D("2026-05-22"),
        D("2026-05-29"),
    ]
    assert all(f.weekday() == 4 and (f.hour, f.minute) == (16, 0) for f in fires)
    assert all(f.utcoffset() == timedelta(hours=8) for f in fires)
    assert days(calendar, {"cron": "0 9 * * 0"}, "2027-01-01", "2027-01-31") == days(
        calendar, {"cron": "0 9 * * 7"}, "2027-01-01", "2027-01-31"
    )
    assert {d.weekday() for d in days(calendar, {"cron": "0 9 * * 0"}, "2027-01-01", "2027-01-31")} == {6}
    assert {d.weekday() for d in days(calendar, {"cron": "30 7 * * 1-5"}, "2027-03-01", "2027-03-31")} == set(range(5))
    assert {d.weekday() for d in days(calendar, {"cron": "0 9 * * 5-0"}, "2027-03-01", "2027-03-31")} == {4, 5, 6}


def test_cron_with_a_window_and_excluded_months(calendar: Calendar) -> None:
    rule = {"cron": "0 16 * * 5", "from": "05-01", "to": "09-30", "exclude_months": [8]}
    fridays = days(calendar, rule, "2027-01-01", "2027-12-31")
    assert {d.month for d in fridays} == {5, 6, 7, 9}
    assert fridays[0] == D("2027-05-07") and fridays[-1] == D("2027-09-24")
    # A window may wrap the year end (carbon monoxide: December to January).
    monthly = days(calendar, {"cron": "0 9 1 * *", "from": "12-01", "to": "01-31"}, "2026-01-01", "2027-12-31")
    assert monthly == [D("2026-01-01"), D("2026-12-01"), D("2027-01-01"), D("2027-12-01")]
    # Absolute dates work too.
    absolute = {"cron": "0 9 1 * *", "from": D("2026-03-01"), "to": "2026-04-30"}
    assert days(calendar, absolute, "2026-01-01", "2027-12-31") == [D("2026-03-01"), D("2026-04-01")]


def test_cron_can_skip_days_that_are_not_school_days(calendar: Calendar) -> None:
    rule = {"cron": "0 16 * * 5", "from": "06-01", "to": "06-30", "if_not_school_day": "skip"}
    assert days(calendar, rule, "2026-01-01", "2026-12-31") == [D("2026-06-05"), D("2026-06-12"), D("2026-06-26")]


@pytest.mark.parametrize("year", [2026, 2027])
def test_drowning_weekly_rule_fires_only_may_to_september_on_the_last_school_day_before_weekends(
    calendar: Calendar, year: int
) -> None:
    fires = days(calendar, DROWNING_WEEKLY, f"{year}-01-01", f"{year}-12-31")
    assert fires and {d.month for d in fires} <= {5, 6, 7, 8, 9}
    for d in fires:
        assert calendar.is_school_day(d, "beijing")
        assert not calendar.is_school_day(d + timedelta(days=1), "beijing")
    # Nothing during the summer break (the whole break is one "weekend"): its last school day fires.
    summer = next(b for b in calendar.breaks(year, "beijing") if b.kind == "summer")
    assert not [d for d in fires if summer.start <= d <= summer.end]
    assert calendar.add_school_days(summer.start, -1, "beijing") in fires


def test_drowning_weekly_rule_moves_before_a_friday_holiday_and_onto_a_make_up_saturday(calendar: Calendar) -> None:
    fires = days(calendar, DROWNING_WEEKLY, "2026-01-01", "2026-12-31")
    assert D("2026-06-18") in fires and D("2026-06-19") not in fires  # 端午 on Friday -> Thursday
    assert D("2026-09-24") in fires and D("2026-09-25") not in fires  # 中秋 on Friday -> Thursday
    assert D("2026-05-09") in fires and D("2026-05-08") not in fires  # make-up Saturday
    assert D("2026-09-18") in fires  # Sunday 9/20 is a make-up workday; the weekend is the Saturday
    assert D("2026-09-30") in fires  # before 国庆
    assert D("2026-04-30") not in fires  # before 劳动节, but outside the May-September window
    assert fires[:3] == [D("2026-05-09"), D("2026-05-15"), D("2026-05-22")]


def test_drowning_weekly_rule_2027_uses_computed_holidays(caplog: pytest.LogCaptureFixture) -> None:
    cal = Calendar.load(ROOT)
    if cal.is_official(2027):  # pragma: no cover
        pytest.skip("2027 has official holiday data now")
    with caplog.at_level(logging.WARNING, logger="bot.campaigns.calendar"):
        fires = days(cal, DROWNING_WEEKLY, "2027-01-01", "2027-12-31")
    assert any("the official 2027 holiday arrangement is not published yet" in r.getMessage() for r in caplog.records)
    assert 2027 in cal.unofficial_years()
    # 端午 2027-06-09 is a Wednesday: computed Mon-Wed, joined to the weekend -> Friday 6/4.
    assert D("2027-06-04") in fires and D("2027-06-08") not in fires
    # 中秋 2027-09-15 (Wed): days off 9/11-9/15, the reminder on Friday 9/10.
    assert D("2027-09-10") in fires and D("2027-09-14") not in fires
    assert fires[0] == D("2027-05-07")  # 劳动节 5/1-5/5 covers the first weekend of May


def test_weekly_rule_counted_in_workdays_continues_through_the_summer_break(calendar: Calendar) -> None:
    rule = {"before": "weekend", "workdays": 1, "at": "16:00", "from": "07-01", "to": "08-31"}
    fires = days(calendar, rule, "2026-01-01", "2026-12-31")
    assert len(fires) == 9 and all(d.weekday() == 4 for d in fires)


BEFORE_HOLIDAYS = {
    "before": "holiday",
    "school_days": 1,
    "at": "16:00",
    "from": "05-01",
    "to": "09-30",
    "window_on": "event",
}


def test_last_school_day_before_each_public_holiday_in_a_window(calendar: Calendar) -> None:
    assert days(calendar, BEFORE_HOLIDAYS, "2026-01-01", "2026-12-31") == [
        D("2026-04-30"),  # 劳动节 starts 5/1: in the window, so its reminder goes on 4/30
        D("2026-06-18"),  # 端午节
        D("2026-09-24"),  # 中秋节 (国庆节 starts 10/1, outside the window)
    ]
    assert days(calendar, BEFORE_HOLIDAYS, "2027-01-01", "2027-12-31") == [
        D("2027-04-30"),
        D("2027-06-04"),  # computed 端午 2027-06-09
        D("2027-09-10"),  # computed 中秋 2027-09-15
    ]
    fires = when(BEFORE_HOLIDAYS).firings(calendar, D("2026-01-01"), D("2026-12-31"), "beijing")
    assert all((f.hour, f.minute) == (16, 0) for f in fires)


def test_before_a_holiday_of_next_year_fires_in_december(calendar: Calendar) -> None:
    # 元旦 2027 is Friday 1/1: the last school day before it is Thursday 2026-12-31.
    rule = {"before": "holiday", "name": "元旦", "at": "16:00"}
    assert days(calendar, rule, "2026-12-01", "2026-12-31") == [D("2026-12-31")]
    assert days(calendar, rule, "2027-01-01", "2027-01-31") == []


def test_before_a_named_holiday(calendar: Calendar) -> None:
    rule = {"before": "holiday", "name": "国庆", "school_days": 2, "at": "09:00"}
    assert days(calendar, rule, "2026-01-01", "2026-12-31") == [D("2026-09-29")]
    assert days(calendar, rule, "2025-01-01", "2025-12-31", region="shanghai") == [D("2025-09-29")]


FRIDAY_BEFORE_HOLIDAYS = {"before": "holiday", "on_weekday": "fri", "at": "16:00"}


def test_the_friday_before_each_public_holiday_at_16_00(calendar: Calendar) -> None:
    fires = when(FRIDAY_BEFORE_HOLIDAYS).firings(calendar, D("2026-01-01"), D("2026-12-31"), "beijing")
    assert [f.date() for f in fires] == [
        D("2026-02-13"),  # 春节 from Sunday 2/15: the Friday two days before
        D("2026-04-03"),  # 清明 from Saturday 4/4: the Friday just before
        D("2026-04-24"),  # 劳动节 from Friday 5/1: strictly before, so the Friday a week earlier
        D("2026-06-12"),  # 端午 from Friday 6/19: likewise
        D("2026-09-18"),  # 中秋 from Friday 9/25
        D("2026-09-25"),  # 国庆 from Thursday 10/1: that Friday is 中秋 itself (see below)
        D("2026-12-25"),  # 元旦 2027 from Friday 1/1
    ]
    assert all(f.weekday() == 4 and (f.hour, f.minute) == (16, 0) for f in fires)
    # One holiday by name; moved to the last school day when the Friday is itself a day off.
    national_day = {**FRIDAY_BEFORE_HOLIDAYS, "name": "国庆", "if_not_school_day": "previous"}
    assert days(calendar, national_day, "2026-01-01", "2026-12-31") == [D("2026-09-24")]


def test_the_friday_before_each_public_holiday_in_2027_uses_computed_dates(calendar: Calendar) -> None:
    assert days(calendar, {**FRIDAY_BEFORE_HOLIDAYS, "from": "04-01", "to": "09-30"}, "2027-01-01", "2027-12-31") == [
        D("2027-04-02"),  # 清明 from Saturday 4/3
        D("2027-04-30"),  # 劳动节 from Saturday 5/1
        D("2027-06-04"),  # computed 端午 (Wednesday 6/9): its days off from Saturday 6/5
        D("2027-09-10"),  # computed 中秋 (Wednesday 9/15): from Saturday 9/11
        D("2027-09-24"),  # 国庆 from Friday 10/1: the Friday a week earlier
    ]


def test_a_weekday_on_or_after_an_event(calendar: Calendar) -> None:
    # on: the first Friday of 消防宣传月 (November); after: the first Monday after a holiday.
    assert days(calendar, {"on": "fire_month", "on_weekday": "fri"}, "2026-01-01", "2027-12-31") == [
        D("2026-11-06"),
        D("2027-11-05"),
    ]
    assert when({"on": "fire_month", "on_weekday": "Friday"}) == when({"on": "fire_month", "on_weekday": "fri"})
    assert days(calendar, {"on": "traffic_safety_day", "on_weekday": "wed"}, "2026-01-01", "2026-12-31") == [
        D("2026-12-02")  # 12.2 is a Wednesday: that very day
    ]
    after = {"after": "holiday", "name": "国庆", "on_weekday": "mon"}
    assert days(calendar, after, "2026-01-01", "2026-12-31") == [D("2026-10-12")]  # 国庆 ends Wednesday 10/7


@pytest.mark.parametrize(
    ("region", "year", "expected"),
    [
        ("beijing", 2026, "2026-07-03"),
        ("beijing", 2027, "2027-07-07"),
        ("demo", 2026, "2026-07-01"),
        ("demo", 2027, "2027-06-30"),
    ],
)
def test_three_school_days_before_summer_break(calendar: Calendar, region: str, year: int, expected: str) -> None:
    rule = {"before": "summer_break", "school_days": 3, "at": "09:00"}
    fires = days(calendar, rule, f"{year}-01-01", f"{year}-12-31", region=region)
    assert fires == [D(expected)]
    assert calendar.is_school_day(fires[0], region)
    summer = next(b for b in calendar.breaks(year, region) if b.kind == "summer")
    between = [summer.start - timedelta(days=i) for i in range(1, (summer.start - fires[0]).days)]
    assert sum(calendar.is_school_day(d, region) for d in between) == 2


def test_first_school_day_of_term(calendar: Calendar) -> None:
    rule = {"on": "term_start", "if_not_school_day": "next", "at": "08:00"}
    fires = when(rule).firings(calendar, D("2026-01-01"), D("2027-12-31"), "beijing")
    assert [f.date() for f in fires] == [D("2026-03-02"), D("2026-09-01"), D("2027-02-22"), D("2027-09-01")]
    assert all((f.hour, f.minute) == (8, 0) for f in fires)
    # A term that starts on a Sunday is greeted on Monday; "after the winter break" says the same.
    cal = Calendar(
        [Region("x", "X", (Term("a", D("2026-09-01"), D("2027-01-22")), Term("b", D("2027-02-21"), D("2027-07-02"))))]
    )
    assert days(cal, rule, "2027-01-01", "2027-12-31", region="x") == [D("2027-02-22")]
    assert days(cal, {"after": "winter_break"}, "2027-01-01", "2027-12-31", region="x") == [D("2027-02-22")]


# Terms from Monday 31 August 2026; a winter break 23 January - 21 February 2027; nothing after 2 July 2027.
TWO_TERMS = Calendar(
    [Region("x", "X", (Term("a", D("2026-08-31"), D("2027-01-22")), Term("b", D("2027-02-22"), D("2027-07-02"))))]
)


def test_next_school_day_drops_a_date_before_the_first_configured_term() -> None:
    # A new deployment's first day must not collect every reminder of the months before its terms.
    def nxt(day: str) -> list[date]:
        return days(TWO_TERMS, {"date": day, "if_not_school_day": "next"}, "2026-01-01", "2027-12-31", region="x")

    assert nxt("06-01") == [D("2027-06-01")]  # 1 June 2026: no term yet, so not moved to 31 August
    assert nxt("08-28") == []  # Friday before the first term: a workday nobody configured
    assert nxt("08-30") == [D("2026-08-31")]  # a Sunday: only the weekend lies between it and the term
    # Counting school days from an event before the terms is as unknown: 元旦 2026 gives nothing.
    assert days(TWO_TERMS, {"after": "holiday", "name": "元旦"}, "2026-01-01", "2027-12-31", region="x") == [
        D("2027-01-04")
    ]


def test_previous_school_day_and_counting_back_drop_a_date_after_the_last_configured_term() -> None:
    def prev(day: str) -> list[date]:
        return days(TWO_TERMS, {"date": day, "if_not_school_day": "previous"}, "2027-01-01", "2027-12-31", region="x")

    assert prev("07-15") == []  # not moved back to the last day of term, two weeks earlier
    assert prev("07-04") == [D("2027-07-02")]  # a Sunday: back over the weekend to Friday
    # 国庆 2027 lies past the terms configured: no "last school day before" it in July.
    assert days(TWO_TERMS, {"before": "holiday", "name": "国庆"}, "2026-01-01", "2027-12-31", region="x") == [
        D("2026-09-30")
    ]


def test_next_school_day_never_carries_a_date_across_a_break() -> None:
    def nxt(day: str) -> list[date]:
        return days(TWO_TERMS, {"date": day, "if_not_school_day": "next"}, "2027-01-01", "2027-12-31", region="x")

    assert nxt("02-01") == []  # in the winter break: dropped, not sent on 22 February
    assert nxt("02-21") == [D("2027-02-22")]  # the Sunday before the term: over the weekend only
    assert days(TWO_TERMS, {"date": "10-01", "if_not_school_day": "next"}, "2026-01-01", "2026-12-31", region="x") == [
        D("2026-10-08")  # over the 国庆 holiday inside the term, as before
    ]
    # Counting school days still crosses a break: the last school day before 春节 2027 ends the autumn term.
    assert days(TWO_TERMS, {"before": "holiday", "name": "春节"}, "2027-01-01", "2027-12-31", region="x") == [
        D("2027-01-22")
    ]


def test_on_the_day_of_fire_day_and_two_days_before_traffic_safety_day(calendar: Calendar) -> None:
    fire_day = when({"on": "fire_day", "at": "09:00"}).firings(calendar, D("2026-01-01"), D("2027-12-31"), "demo")
    assert fire_day == [
        datetime.fromisoformat("2026-11-09T09:00:00+08:00"),
        datetime.fromisoformat("2027-11-09T09:00:00+08:00"),
    ]
    assert days(calendar, {"date": "11-09", "at": "09:00"}, "2026-01-01", "2027-12-31") == [
        D("2026-11-09"),
        D("2027-11-09"),
    ]
    expected = [D("2026-11-30"), D("2027-11-30")]
    assert days(calendar, {"before": "traffic_safety_day", "days": 2}, "2026-01-01", "2027-12-31") == expected
    assert days(calendar, {"date": "12-02", "days": -2}, "2026-01-01", "2027-12-31") == expected


def test_monday_of_the_last_week_of_march(calendar: Calendar) -> None:
    rule = {"weekday": "mon", "nth": -1, "month": 3, "at": "09:00"}
    expected = [D("2025-03-31"), D("2026-03-30"), D("2027-03-29")]
    assert days(calendar, rule, "2025-01-01", "2027-12-31", region="demo") == expected
    assert days(calendar, {"on": "safety_education_day"}, "2025-01-01", "2027-12-31", region="demo") == expected
    assert days(calendar, {"weekday": "sat", "nth": 3, "month": 9}, "2024-01-01", "2024-12-31") == [D("2024-09-21")]


def test_national_days_and_months_as_events(calendar: Calendar) -> None:
    assert days(calendar, {"on": "work_safety_month"}, "2026-01-01", "2027-12-31") == [D("2026-06-01"), D("2027-06-01")]
    assert days(calendar, {"before": "disaster_reduction_day", "days": 7}, "2026-01-01", "2026-12-31") == [
        D("2026-05-05")
    ]
    assert days(calendar, {"on": "drowning_prevention_day"}, "2027-01-01", "2027-12-31") == [D("2027-07-25")]
    assert days(calendar, {"on": "fire_month", "days": 14}, "2027-01-01", "2027-12-31") == [D("2027-11-15")]


def test_two_rules_on_the_same_day_fire_once_at_the_earlier_time(calendar: Calendar) -> None:
    fires = when([{"date": "11-09", "at": "16:00"}, {"on": "fire_day", "at": "09:00"}]).firings(
        calendar, D("2026-01-01"), D("2026-12-31"), "demo"
    )
    assert fires == [datetime.fromisoformat("2026-11-09T09:00:00+08:00")]
    # And a campaign's firings are sorted, one per day, the same every time.
    drowning = when([DROWNING_WEEKLY, BEFORE_HOLIDAYS, {"on": "drowning_prevention_day", "at": "09:00"}])
    first = drowning.firings(calendar, D("2026-01-01"), D("2026-12-31"), "beijing")
    again = parse_when(
        [DROWNING_WEEKLY, BEFORE_HOLIDAYS, {"on": "drowning_prevention_day", "at": "09:00"}], where="other"
    ).firings(Calendar.load(ROOT), D("2026-01-01"), D("2026-12-31"), "beijing")
    assert first == again == sorted(first)
    assert len({f.date() for f in first}) == len(first)
    assert datetime.fromisoformat("2026-07-25T09:00:00+08:00") in first


def test_a_school_with_its_own_day_off_gets_its_own_dates() -> None:
    terms = (Term("春", D("2026-03-02"), D("2026-07-07")), Term("秋", D("2026-09-01"), D("2027-01-22")))
    cal = Calendar(
        [Region("r", "R", terms)],
        Overrides(school_days_off={"s1": (DayOff("考点", D("2026-07-06"), D("2026-07-06")),)}),
    )
    rule = when({"before": "summer_break", "school_days": 3})
    assert [f.date() for f in rule.firings(cal, D("2026-01-01"), D("2026-12-31"), "r")] == [D("2026-07-03")]
    assert [f.date() for f in rule.firings(cal, D("2026-01-01"), D("2026-12-31"), "r", "s2")] == [D("2026-07-03")]
    assert [f.date() for f in rule.firings(cal, D("2026-01-01"), D("2026-12-31"), "r", "s1")] == [D("2026-07-02")]


def test_school_day_rules_give_nothing_beyond_the_configured_terms(calendar: Calendar) -> None:
    assert days(calendar, {"before": "summer_break", "school_days": 3}, "2029-01-01", "2029-12-31") == []
    assert days(calendar, BEFORE_HOLIDAYS, "2029-01-01", "2029-12-31") == []


def test_empty_range_and_unknown_region(calendar: Calendar) -> None:
    assert when({"cron": "0 9 * * *"}).firings(calendar, D("2026-02-01"), D("2026-01-01"), "demo") == []
    with pytest.raises(CalendarError, match="unknown region 'atlantis'"):
        when({"cron": "0 9 * * *"}).firings(calendar, D("2026-01-01"), D("2026-01-31"), "atlantis")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"before": "summer_brake"}, "schedules/test.toml: when.before: unknown event 'summer_brake'"),
        ({"on": "fire_day", "at": "25:00"}, "schedules/test.toml: when.at: expected a time of day"),
        ({"on": "fire_day", "att": "09:00"}, "schedules/test.toml: when.att: unknown key"),
        ({"on": "fire_day", "cron": "0 9 * * *"}, "schedules/test.toml: when: give exactly one of"),
        ({"at": "09:00"}, "schedules/test.toml: when: give exactly one of"),
        ({"cron": "0 9 1 * 1"}, "schedules/test.toml: when.cron: '0 9 1 * 1' restricts both"),
        ({"cron": "0 9 * *"}, "schedules/test.toml: when.cron: expected 5 fields"),
        ({"cron": "0 25 * * *"}, "schedules/test.toml: when.cron: '0 25 * * *'"),
        ({"cron": "0 0 31 2 *"}, "schedules/test.toml: when.cron: '0 0 31 2 *' never fires"),
        ({"cron": "0 9 * * 5", "at": "09:00"}, "schedules/test.toml: when.at: not allowed with cron"),
        ({"before": "holiday", "school_days": 0}, "schedules/test.toml: when.school_days: expected a count 1..30"),
        ({"before": "holiday", "days": 2, "school_days": 1}, "schedules/test.toml: when: give at most one of"),
        ({"date": "13-01"}, "schedules/test.toml: when.date: expected a month-day"),
        ({"date": "11-09", "from": "May"}, "schedules/test.toml: when.from: expected a month-day"),
        ({"weekday": "monday", "month": 3}, "schedules/test.toml: when: weekday needs nth"),
        ({"weekday": "mo", "nth": 1, "month": 3}, "schedules/test.toml: when.weekday: expected a weekday"),
        ({"weekday": "mon", "nth": 0, "month": 3}, "schedules/test.toml: when.nth"),
        ({"date": "11-09", "nth": 1}, "schedules/test.toml: when.nth: not allowed with date"),
        ({"on": "fire_day", "exclude_months": [13]}, "schedules/test.toml: when.exclude_months[0]"),
        ({"on": "fire_day", "window_on": "events"}, "schedules/test.toml: when.window_on"),
        ({"on": "fire_day", "if_not_school_day": "later"}, "schedules/test.toml: when.if_not_school_day"),
        ({"on": "fire_day", "days": "2"}, "schedules/test.toml: when.days: expected a whole number"),
        ([], "schedules/test.toml: when: give at least one rule"),
        ([{"on": "fire_day"}, {"on": "fire_day", "from": "xx"}], "schedules/test.toml: when[1].from"),
        ("fire_day", "schedules/test.toml: when: expected a table or a list of tables"),
        ({"before": "holiday", "on_weekday": "fr"}, "schedules/test.toml: when.on_weekday: expected a weekday"),
        ({"before": "holiday", "on_weekday": 5}, "schedules/test.toml: when.on_weekday: expected a weekday"),
        ({"before": "holiday", "on_weekday": "fri", "days": 2}, "schedules/test.toml: when.days: not allowed with"),
        ({"before": "weekend", "on_weekday": "fri"}, 'schedules/test.toml: when.on_weekday: not with before = "week'),
        ({"date": "11-09", "on_weekday": "fri"}, "schedules/test.toml: when.on_weekday: not allowed with date"),
        ({"cron": "0 9 * * 5", "on_weekday": "fri"}, "schedules/test.toml: when.on_weekday: not allowed with cron"),
    ],
)
def test_rule_errors_name_the_file_and_key(table: Any, message: str) -> None:
    with pytest.raises(RuleError) as error:
        when(table)
    assert message in str(error.value)


def test_configured_observances_can_be_allowed_by_the_calendar(tmp_path: Path) -> None:
    folder = tmp_path / "schedules" / "calendar"
    folder.mkdir(parents=True)
    (folder / "terms.toml").write_text("[regions.r]\nterms = []\n", encoding="utf-8")
    (folder / "observances.toml").write_text(
        '[[observances]]\nkind = "local_day"\nname = "地方安全日"\nstart = 2026-04-01\n', encoding="utf-8"
    )
    cal = Calendar.load(tmp_path)
    with pytest.raises(RuleError, match="unknown event 'local_day'"):
        when({"on": "local_day"})
    rule = parse_when({"on": "local_day"}, where="x", events=cal.event_kinds())
    assert [f.date() for f in rule.firings(cal, D("2026-01-01"), D("2026-12-31"), "r")] == [D("2026-04-01")]


def test_a_year_for_1300_schools_and_30_campaigns_computes() -> None:
    # Speed is shown by `bot bench calendar`, not asserted here.
    cal = Calendar.load(ROOT)
    tables: list[Any] = [
        [DROWNING_WEEKLY, BEFORE_HOLIDAYS, {"on": "drowning_prevention_day"}],
        {"before": "summer_break", "school_days": 3},
        {"before": "winter_break", "school_days": 3},
        {"on": "term_start", "if_not_school_day": "next", "at": "08:00"},
        {"weekday": "mon", "nth": -1, "month": 3},
        {"before": "traffic_safety_day", "days": 2},
        {"cron": "0 9 1 12,1 *"},
        {"cron": "0 16 * * 5", "from": "05-01", "to": "09-30", "if_not_school_day": "skip"},
    ]
    campaigns = [
        parse_when([*(t if isinstance(t, list) else [t]), {"date": f"{i % 12 + 1:02d}-{i % 28 + 1:02d}"}], where=str(i))
        for i, t in enumerate(tables * 4)
    ][:30]
    regions = ["demo", "beijing", "shanghai"]
    total = 0
    for school in range(1300):
        for campaign in campaigns:
            total += len(campaign.firings(cal, D("2027-01-01"), D("2027-12-31"), regions[school % 3], f"s{school}"))
    assert total > 1300 * 30
