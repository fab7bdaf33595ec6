"""Lesson rates (参学率 参考率 合格率) per class, school and district: from conversations, the store,
the CLI and the JSON API."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import test_lesson_chat
from test_lesson_chat import World, answer, choose, parent_of, read

from bot import clock
from bot.app import create_app
from bot.config import Config
from bot.lessons.progress import LessonStore, score
from bot.lessons.report import (
    CSV_COLUMNS,
    build_report,
    parse_period,
    parse_since,
    parse_until,
    render_table,
    report_csv,
    report_json,
)
from bot.roster.model import School
from bot.roster.store import RosterStore
from bot.store import keys
from bot.store.redis import Redis
from bot.web.tokens import TokenStore

# district d1: s1 (3-2 with five students, one of whom left; 3-3), s2 (1-1); district d2: s3 (1-1)
ROSTER = {
    ("s1", "3-2"): {"a": "甲|a", "b": "乙|a", "c": "丙|a", "d": "丁|a", "e": "戊|l"},
    ("s1", "3-3"): {"f": "己|a", "g": "庚|a"},
    ("s2", "1-1"): {"h": "辛|a"},
    ("s3", "1-1"): {"i": "壬|a"},
}
OLD = datetime(2026, 3, 1, 10, tzinfo=clock.zone()).timestamp()
NEW = datetime(2026, 5, 20, 10, tzinfo=clock.zone()).timestamp()


async def seed(redis: Redis) -> RosterStore:
    roster = RosterStore(redis)
    for school, district in (("s1", "d1"), ("s2", "d1"), ("s3", "d2")):
        await roster.put_school(School(school, f"学校{school}", district, "r"))
    for (school, cid), students in ROSTER.items():
        await roster.ensure_class(school, cid)
        await redis.hset(keys.class_students(school, cid), mapping={sid: raw for sid, raw in students.items()})
    store = LessonStore(redis)

    async def quiz(school: str, sid: str, lesson: str, right: int, at: float) -> None:
        pct, passed = score(right, 5)
        await store.started(school, sid, lesson, at)
        await store.finished(school, sid, lesson, right=[], wrong=[], score_pct=pct, passed=passed, now=at)

    await quiz("s1", "a", "drowning-g1-3", 5, NEW)  # passed
    await quiz("s1", "b", "fire-g1-3", 3, NEW)  # took the quiz, failed
    await store.started("s1", "c", "traffic-g1-3", OLD)  # started long ago, never finished
    await quiz("s1", "e", "drowning-g1-3", 5, NEW)  # left the school: not counted
    await quiz("s1", "f", "drowning-g1-3", 4, OLD)  # passed in March
    await quiz("s1", "f", "drowning-g1-3", 2, NEW)  # failed a retry in May: still passed (in March)
    await quiz("s2", "h", "fire-g1-3", 5, NEW)
    await quiz("s3", "i", "fire-g1-3", 5, NEW)
    return roster


world = test_lesson_chat.world  # the emulator world, reused for the conversations below


@pytest.fixture
async def roster(redis: Redis) -> RosterStore:
    return await seed(redis)


def counts(rates: Any) -> tuple[int, int, int, int]:
    return rates.students, rates.started, rates.finished, rates.passed


# -- from real conversations -------------------------------------------------------------------------
async def test_the_three_rates_come_out_right_for_a_class_with_mixed_results(world: World) -> None:
    passing, failing, starting = (await parent_of(world, "20260301"), await parent_of(world, "20260302"),
                                  await parent_of(world, "20260501"))  # fmt: skip
    await world.redis.hset(keys.class_students("s1", "3-2"), "20260303", "张伟|a")  # never starts
    for parent, sid in ((passing, "20260301"), (failing, "20260302")):
        await choose(world, parent, "防溺水")
        lesson = await world.lesson_of(parent, sid)
        await read(world, parent, lesson)
        await answer(world, parent, lesson, wrong_at=set() if parent == passing else {0, 1, 2})
    await choose(world, starting, "防溺水")  # the other class: started only

    report = await build_report(world.redis, world.roster, school="s1", class_id="3-2")
    [klass] = report.classes
    assert counts(klass.rates) == (3, 2, 2, 1)
    assert klass.rates.as_dict()["participation_pct"] == 66.7 and klass.rates.as_dict()["passed_pct"] == 33.3
    whole = await build_report(world.redis, world.roster, school="s1")
    assert counts(whole.totals) == (4, 3, 2, 1)
    assert counts(whole.by_topic["drowning"]) == (4, 3, 2, 1) and counts(whole.by_topic["fire"]) == (4, 0, 0, 0)


# -- rules ---------------------------------------------------------------------------------------------
async def test_a_class_with_mixed_results_and_a_student_who_left(redis: Redis, roster: RosterStore) -> None:
    report = await build_report(redis, roster, school="s1", class_id="3-2", names=True)
    [klass] = report.classes
    assert counts(klass.rates) == (4, 3, 2, 1)  # 参学 75%, 参考 50%, 合格 25%; 戊 left and is not counted
    assert klass.not_started == ["丁"]
    pcts = klass.rates.as_dict()
    assert (pcts["participation_pct"], pcts["quiz_taken_pct"], pcts["passed_pct"]) == (75.0, 50.0, 25.0)


async def test_topic_and_period_filters(redis: Redis, roster: RosterStore) -> None:
    drowning = await build_report(redis, roster, school="s1", topic="drowning")
    assert counts(drowning.totals) == (6, 2, 2, 2)  # 甲, 己 (己 passed in March, failed again in May)
    since_april = await build_report(redis, roster, school="s1", since=parse_since("2026-04-01"))
    assert counts(since_april.totals) == (6, 3, 3, 1)  # 丙's March start and 己's March pass fall outside
    both = await build_report(redis, roster, school="s1", topic="drowning", since=parse_since("2026-04-01"))
    assert counts(both.totals) == (6, 2, 2, 1)


async def test_a_period_with_an_end_day_counts_that_day_and_nothing_after(redis: Redis, roster: RosterStore) -> None:
    march = await build_report(redis, roster, school="s1", until=parse_until("2026-03-31"))
    # 丙 started in March; 己 passed in March (its quiz finished again in May, but a pass is a finished quiz)
    assert counts(march.totals) == (6, 2, 1, 1)
    one_day = await build_report(redis, roster, school="s1", since=parse_since("2026-05-20"),
                                 until=parse_until("2026-05-20"))  # fmt: skip
    assert counts(one_day.totals) == (6, 3, 3, 1)  # 甲 passed, 乙 failed, 己 failed the retry: all on 20 May
    since, until = parse_period("2026-04-01", "2026-05-19")
    day_before = await build_report(redis, roster, school="s1", since=since, until=until)
    assert counts(day_before.totals) == (6, 0, 0, 0)
    assert report_json(one_day)["since"] == "2026-05-20" and report_json(one_day)["until"] == "2026-05-20"
    assert "2026-05-20 to 2026-05-20" in render_table(one_day)
    [row] = [r for r in csv.DictReader(io.StringIO(report_csv(march).lstrip("\ufeff"))) if r["level"] == "total"]
    assert (row["since"], row["until"]) == ("", "2026-03-31")


async def test_a_period_that_ends_before_it_starts_is_refused(redis: Redis, roster: RosterStore) -> None:
    assert parse_period("2026-05-01", "2026-05-01")[1] - parse_period("2026-05-01", "2026-05-01")[0] == 86400
    for since, until in (("2026-05-02", "2026-05-01"), ("", "not-a-day"), ("", "2026-02-30"), ("", "9999-12-31")):
        with pytest.raises(ValueError, match=r"^until:"):
            parse_period(since, until)
    with pytest.raises(ValueError, match=r"^until: the last day 2026-04-30 is before the first day 2026-05-01"):
        await build_report(redis, roster, since=parse_since("2026-05-01"), until=parse_until("2026-04-30"))


async def test_schools_roll_up_into_districts(redis: Redis, roster: RosterStore) -> None:
    d1 = await build_report(redis, roster, district="d1")
    assert [s.school for s in d1.schools] == ["s1", "s2"] and counts(d1.totals) == (7, 5, 4, 3)
    everything = await build_report(redis, roster)
    assert [(d.district, counts(d.rates)) for d in everything.districts] == [("d1", (7, 5, 4, 3)),
                                                                             ("d2", (1, 1, 1, 1))]  # fmt: skip
    assert counts(everything.totals) == (8, 6, 5, 4)


async def test_bad_filters_name_the_option(redis: Redis, roster: RosterStore) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"topic": "sharks"}, "topic"),
        ({"school": "nope"}, "school"),
        ({"school": "s3", "district": "d1"}, "school"),
        ({"school": "s1", "class_id": "9-9"}, "class"),
        ({"class_id": "3-2"}, "class"),
    ]
    for kwargs, field in cases:
        with pytest.raises(ValueError, match=rf"^{field}:"):
            await build_report(redis, roster, **kwargs)
    with pytest.raises(ValueError, match=r"^since:"):
        parse_since("last week")


async def test_table_csv_and_json_carry_counts_never_names(redis: Redis, roster: RosterStore) -> None:
    report = await build_report(redis, roster, district="d1", topic="fire", names=True)
    table = render_table(report)
    assert "学校s1 三年级（2）班" in table and "全部合计" in table and "防溺水" not in table
    assert "1 (25%)" in table  # 乙 started fire in 3-2
    rows = list(csv.DictReader(io.StringIO(report_csv(report).lstrip("\ufeff"))))
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert [r["level"] for r in rows] == ["class", "class", "class", "school", "school", "district", "total"]
    assert rows[0]["started_pct"] == "25.0" and rows[-1]["students"] == "7" and rows[0]["topic"] == "fire"
    data = report_json(report)
    assert (
        data["totals"]["passed"] == 1 and data["districts"][0]["schools"][0]["classes"][0]["label"] == "三年级（2）班"
    )
    for name in ("甲", "乙", "丙", "丁"):
        assert name not in table and name not in report_csv(report) and name not in str(data)


# -- the CLI ---------------------------------------------------------------------------------------------
def bot(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOT")} | {"BOT__REDIS__URL": redis_url}
    return subprocess.run([sys.executable, "-m", "bot", *args], env=env, capture_output=True, text=True, timeout=30,
                          check=False)  # fmt: skip


async def test_bot_report_lessons_prints_a_table_and_writes_csv(
    roster: RosterStore, redis_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "lessons.csv"
    done = bot(redis_url, "report", "lessons", "--school", "s1", "--csv", str(out))
    assert done.returncode == 0, done.stderr
    assert "参学" in done.stdout and "三年级（2）班" in done.stdout and "3 (75%)" in done.stdout
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8-sig"))))
    assert [r["class_id"] for r in rows if r["level"] == "class"] == ["3-2", "3-3"]
    bad = bot(redis_url, "report", "lessons", "--since", "yesterday")
    assert (
        bad.returncode == 2 and bad.stderr.startswith("bot report lessons: --since:") and "Traceback" not in bad.stderr
    )


async def test_bot_report_lessons_takes_an_inclusive_until(roster: RosterStore, redis_url: str) -> None:
    march = bot(redis_url, "report", "lessons", "--school", "s1", "--until", "2026-03-31", "--json")
    assert march.returncode == 0, march.stderr
    data = json.loads(march.stdout)
    assert data["until"] == "2026-03-31" and data["totals"]["started"] == 2 and data["totals"]["passed"] == 1
    for args, message in (
        (("--until", "2026-04-31"), "'2026-04-31' is not a date (YYYY-MM-DD)"),
        (
            ("--since", "2026-05-02", "--until", "2026-05-01"),
            "the last day 2026-05-01 is before the first day 2026-05-02",
        ),
    ):
        bad = bot(redis_url, "report", "lessons", *args)
        assert bad.returncode == 2 and bad.stderr == f"bot report lessons: --until: {message}\n", bad.stderr


# -- the JSON API ------------------------------------------------------------------------------------------
async def test_the_api_is_scoped_by_the_token(
    roster: RosterStore, redis: Redis, config: Config, emulator: Any, aiohttp_client: Any
) -> None:
    client = await aiohttp_client(create_app(config, redis))
    tokens = TokenStore(redis)
    school_token, _ = await tokens.create("s1-admin", "school_admin", "d1", "s1")
    district_token, _ = await tokens.create("d1-admin", "district_admin", "d1")

    async def get(token: str, query: str = "") -> Any:
        return await client.get(f"/api/lessons/report{query}", headers={"Authorization": f"Bearer {token}"})

    assert (await client.get("/api/lessons/report")).status == 401
    mine = await get(school_token)
    assert mine.status == 200 and mine.headers["Cache-Control"] == "no-store"
    data = await mine.json()
    assert [s["school"] for d in data["districts"] for s in d["schools"]] == ["s1"]
    assert data["totals"]["students"] == 6 and data["totals"]["passed"] == 2
    assert (await get(school_token, "?school=s2")).status == 403
    assert (await get(district_token, "?district=d2")).status == 403
    district = await (await get(district_token, "?topic=fire&since=2026-04-01&per_class=0")).json()
    assert district["until"] is None
    march = await (await get(district_token, "?until=2026-03-31")).json()
    assert march["until"] == "2026-03-31" and march["totals"]["started"] == 2 and march["totals"]["passed"] == 1
    backwards = await get(district_token, "?since=2026-05-02&until=2026-05-01")
    assert backwards.status == 422 and (await backwards.json())["error"]["field"] == "until"
    assert district["totals"]["students"] == 7 and district["totals"]["passed"] == 1
    assert "classes" not in district["districts"][0]["schools"][0]
    klass = await (await get(district_token, "?school=s1&class=3-2")).json()
    assert klass["totals"]["students"] == 4
    bad = await get(district_token, "?topic=sharks")
    assert bad.status == 422 and (await bad.json())["error"]["field"] == "topic"
    assert (await (await get(district_token, "?classes=3-2")).json())["error"]["field"] == "classes"
    as_csv = await get(school_token, "?format=csv")
    assert as_csv.status == 200 and as_csv.content_type == "text/csv"
    assert (await as_csv.text()).lstrip("\ufeff").startswith("level,district,school")
