"""Roster and school import: the sample files, re-import as a no-op, changes, bad rows, formats, the CLI."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from bot import demo_data
from bot.paths import ROOT
from bot.roster.importer import (
    ImportFileError,
    Limits,
    Report,
    apply,
    apply_schools,
    parse_roster,
    parse_schools,
    validate,
)
from bot.roster.model import ChildRef
from bot.roster.store import RosterStore
from bot.store import keys
from bot.store.redis import Redis, hgetall

SCHOOL = demo_data.DEMO_SCHOOL
ROSTER_ROWS = 240


async def snapshot(r: Redis) -> dict[str, Any]:
    """Every key with its type and value: equal snapshots mean nothing was written."""
    out: dict[str, Any] = {}
    async for key in r.scan_iter(count=1000):
        kind = await r.type(key)
        if kind == "hash":
            out[key] = await r.hgetall(key)
        elif kind == "string":
            out[key] = await r.get(key)
        else:
            out[key] = kind
    return out


async def with_schools(r: Redis) -> RosterStore:
    result = await apply_schools(r, parse_schools(demo_data.path("schools.csv")))
    assert result.written and result.rejected == 0
    return RosterStore(r)


async def import_file(r: Redis, source: Path | bytes, filename: str | None = None, **kw: Any) -> tuple[Report, Any]:
    report = validate(parse_roster(source, filename), await RosterStore(r).schools())
    return report, await apply(r, report, **kw)


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def sample_rows() -> list[list[str]]:
    with demo_data.path("roster.csv").open(encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


# -- the sample files ------------------------------------------------------------------------------
async def test_sample_schools_register_with_their_settings_and_reimport_unchanged(redis: Redis) -> None:
    store = await with_schools(redis)
    schools = await store.schools()
    assert schools[SCHOOL].name == "平安路小学" and schools[SCHOOL].district == "demo-district"
    assert (await store.settings("demo-s2")).proof == "phone4"
    assert (await store.settings("demo-s3")).approval is True
    again = await apply_schools(redis, parse_schools(demo_data.path("schools.csv")))
    assert (again.added, again.updated, again.unchanged) == (0, 0, 3)


async def test_sample_roster_imports_every_row_with_classes_codes_and_masked_phones(redis: Redis) -> None:
    store = await with_schools(redis)
    report, result = await import_file(redis, demo_data.path("roster.csv"))
    assert report.ok and len(report.rows) == ROSTER_ROWS
    assert (result.added, result.classes_created, result.schools) == (ROSTER_ROWS, 12, 1)
    classes = await store.classes(SCHOOL)
    assert sorted(classes) == sorted(f"{g}-{c}" for g in range(1, 7) for c in (1, 2))
    codes = await hgetall(redis, keys.class_codes())
    assert {codes[c.code] for c in classes.values()} == {f"{SCHOOL}/{cid}" for cid in classes}
    ming = (await store.students(SCHOOL, "3-2"))["20260321"]
    assert (ming.name, ming.status) == ("王小明", "a")
    phones = await hgetall(redis, keys.class_phones(SCHOOL, "3-2"))
    assert phones["20260321"] == "138****1234"
    assert not any("13800001234" in str(v) for v in (await snapshot(redis)).values())


async def test_reimporting_the_same_file_changes_and_writes_nothing(redis: Redis) -> None:
    await with_schools(redis)
    await import_file(redis, demo_data.path("roster.csv"))
    before = await snapshot(redis)
    _, result = await import_file(redis, demo_data.path("roster.csv"))
    assert result.changes == 0 and result.unchanged == ROSTER_ROWS
    assert (result.added, result.updated, result.moved, result.left) == (0, 0, 0, 0)
    assert await snapshot(redis) == before


# -- a changed file --------------------------------------------------------------------------------
async def test_changed_file_renames_moves_with_guardian_marks_left_and_brings_back(
    redis: Redis, tmp_path: Path
) -> None:
    store = await with_schools(redis)
    await import_file(redis, demo_data.path("roster.csv"))
    ming = (await store.students(SCHOOL, "3-2"))["20260321"]
    await store.bind_guardian("oMingMum000000000000000000000", ming, "m")
    await store.add_pending("oMingDad000000000000000000000", ming, "f")

    rows = sample_rows()
    changed = []
    for row in rows:
        if row[4] == "20260321":  # 王小明 moves from 3-2 to 3-1
            row = [row[0], row[1], "1班", row[3], row[4], row[5]]
        elif row[4] == "20260102":  # renamed
            row = [*row[:3], "闫泽宇", *row[4:]]
        elif row[4] == "20260640":  # left the school
            continue
        changed.append(row)
    _, result = await import_file(redis, write_csv(tmp_path / "changed.csv", changed))
    assert (result.added, result.updated, result.moved, result.left, result.returned) == (0, 1, 1, 1, 0)
    assert result.unchanged == ROSTER_ROWS - 3 and result.guardians_followed == 1

    assert "20260321" not in await store.students(SCHOOL, "3-2")
    assert (await store.students(SCHOOL, "3-1"))["20260321"].name == "王小明"
    assert [g.openid for g in (await store.guardians(SCHOOL, "3-1"))["20260321"]] == ["oMingMum000000000000000000000"]
    assert "20260321" not in await store.guardians(SCHOOL, "3-2")
    assert (await hgetall(redis, keys.class_phones(SCHOOL, "3-1")))["20260321"] == "138****1234"
    who = await store.who("oMingMum000000000000000000000")
    assert who.children == (ChildRef(SCHOOL, "3-1", "20260321", "m"),)
    assert [p[:2] for p in await store.pending(SCHOOL, ["3-1"])] == [("3-1", "20260321")]
    assert (await store.students(SCHOOL, "1-1"))["20260102"].name == "闫泽宇"
    assert (await store.students(SCHOOL, "6-2"))["20260640"].status == "l"

    # The original file again: back to 3-2, the left student active again, guardian still bound.
    _, back = await import_file(redis, demo_data.path("roster.csv"))
    assert (back.moved, back.returned, back.updated, back.left) == (1, 1, 1, 0)
    assert (await store.students(SCHOOL, "6-2"))["20260640"].status == "a"
    assert (await store.who("oMingMum000000000000000000000")).children[0].class_id == "3-2"


async def test_phone_column_is_the_truth_for_phones_when_present(redis: Redis, tmp_path: Path) -> None:
    await with_schools(redis)
    await import_file(redis, demo_data.path("roster.csv"))
    rows = sample_rows()
    for row in rows[1:]:
        if row[4] == "20260321":
            row[5] = "139 0000 5678"
        elif row[4] == "20260101":
            row[5] = ""
    _, result = await import_file(redis, write_csv(tmp_path / "phones.csv", rows))
    assert result.updated == 2
    assert (await hgetall(redis, keys.class_phones(SCHOOL, "3-2")))["20260321"] == "139****5678"
    assert "20260101" not in await hgetall(redis, keys.class_phones(SCHOOL, "1-1"))
    no_phone_column = [row[:5] for row in sample_rows()]
    _, result = await import_file(redis, write_csv(tmp_path / "nophones.csv", no_phone_column))
    assert result.changes == 0  # no phone column: stored phones are left alone


# -- bad rows --------------------------------------------------------------------------------------
async def test_bad_roster_gets_a_row_numbered_report_and_nothing_is_written(redis: Redis) -> None:
    await with_schools(redis)
    before = await snapshot(redis)
    report, result = await import_file(redis, demo_data.path("bad_roster.csv"))
    reasons = {rej.row: " ".join(rej.reasons) for rej in report.rejected}
    assert sorted(reasons) == list(range(3, 13))
    assert "missing name" in reasons[3]
    assert "unknown grade" in reasons[4]
    assert "unknown class" in reasons[5]
    assert "student id" in reasons[6]
    assert "unknown school" in reasons[7]
    assert "rows 8, 9" in reasons[8] and "rows 8, 9" in reasons[9]
    assert "contains |" in reasons[10]
    assert "longer than 20" in reasons[11]
    assert "phone" in reasons[12]
    assert not result.written and result.rejected == 10
    assert await snapshot(redis) == before


async def test_partial_import_writes_the_good_rows_only(redis: Redis) -> None:
    store = await with_schools(redis)
    _, result = await import_file(redis, demo_data.path("bad_roster.csv"), partial=True)
    assert result.written and (result.added, result.rejected) == (2, 10)
    assert sorted(await store.students(SCHOOL, "3-1")) == ["20269901", "20269912"]


async def test_partial_import_does_not_mark_students_of_rejected_rows_left(redis: Redis, tmp_path: Path) -> None:
    store = await with_schools(redis)
    await import_file(redis, demo_data.path("roster.csv"))
    rows = sample_rows()
    for row in rows[1:]:
        if row[4] == "20260321":
            row[5] = "not a phone"
    report, result = await import_file(redis, write_csv(tmp_path / "one-bad.csv", rows), partial=True)
    assert [r.row for r in report.rejected] == [next(i for i, r in enumerate(rows, 1) if r[4] == "20260321")]
    assert result.left == 0
    assert (await store.students(SCHOOL, "3-2"))["20260321"].status == "a"


# -- formats and headers ---------------------------------------------------------------------------
async def test_gbk_and_bom_csv_read_the_same_as_utf8(redis: Redis) -> None:
    await with_schools(redis)
    text = demo_data.path("roster.csv").read_text(encoding="utf-8")
    plain = parse_roster(text.encode("utf-8"), "roster.csv").rows
    assert parse_roster(text.encode("gbk"), "roster.csv").rows == plain
    assert parse_roster(b"\xef\xbb\xbf" + text.encode("utf-8"), "roster.csv").rows == plain
    _, result = await import_file(redis, text.encode("gb18030"), "名单.csv")
    assert result.added == ROSTER_ROWS


async def test_xlsx_with_a_title_row_numbers_and_english_headers_imports(redis: Redis, tmp_path: Path) -> None:
    store = await with_schools(redis)
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["平安路小学 2026 学年学生名单"])
    sheet.append(["Student ID", "Name", "Grade", "Class", "School", "Note"])
    sheet.append([20260101, "王小红", 1, 1, "平安路小学", "x"])
    sheet.append([None, None, None, None, None, None])
    sheet.append([20260321.0, "王小明", "三年级", "（2）班", "demo-s1", ""])
    sheet.append(["20260322", "", 3, 2, "demo-s1", ""])
    path = tmp_path / "roster.xlsx"
    book.save(path)
    report, result = await import_file(redis, path)
    assert [(r.row, r.reasons) for r in report.rejected] == [(6, ("missing name",))]
    assert report.ignored_columns == ["Note"]
    assert not result.written
    report, result = await import_file(redis, path, partial=True)
    assert result.added == 2
    assert (await store.students(SCHOOL, "3-2"))["20260321"].name == "王小明"


def test_full_width_and_annotated_headers_are_recognised() -> None:
    data = "学校（必填）, 年 级,班级,姓名,Ｓｔｕｄｅｎｔ＿ＩＤ,监护人手机\ndemo-s1,1,1,王小红,20260101,\n".encode()
    parsed = parse_roster(data, "x.csv")
    assert parsed.rows[0].student_id == "20260101" and parsed.has_phone


def test_unreadable_files_raise_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ImportFileError, match="no header row with the columns 学号/student_id"):
        parse_roster("学校,年级,班级,姓名\ndemo-s1,1,1,王小红\n".encode(), "x.csv")
    with pytest.raises(ImportFileError, match="over the"):
        parse_roster(demo_data.path("roster.csv"), limits=Limits(max_bytes=1000))
    with pytest.raises(ImportFileError, match="more than 10 rows"):
        parse_roster(demo_data.path("roster.csv"), limits=Limits(max_rows=10))
    with pytest.raises(ImportFileError, match="no such file"):
        parse_roster(tmp_path / "missing.csv")
    with pytest.raises(ImportFileError, match=r"\.xls format"):
        parse_roster(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 100, "old.xls")
    with pytest.raises(ImportFileError, match=r"not a readable \.xlsx"):
        parse_roster(b"PK\x03\x04 broken", "broken.xlsx")


def test_excel_scientific_notation_ids_are_explained() -> None:
    data = "学校,年级,班级,姓名,学号\ndemo-s1,1,1,王小红,1.23457E+17\n".encode()
    report = validate(parse_roster(data, "x.csv"), {})
    assert "format the column as text" in " ".join(report.rejected[0].reasons)


# -- the command line ------------------------------------------------------------------------------
def bot(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOT")}
    env["BOT__REDIS__URL"] = redis_url
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )


@pytest.mark.slow
async def test_cli_exit_codes_reports_codes_and_invites(redis: Redis, redis_url: str, tmp_path: Path) -> None:
    ok = bot(redis_url, "import", "schools", str(demo_data.path("schools.csv")))
    assert ok.returncode == 0, ok.stderr
    assert "added" in ok.stdout

    bad = bot(redis_url, "import", "roster", str(demo_data.path("bad_roster.csv")), "--report", str(tmp_path / "r.csv"))
    assert bad.returncode == 1, bad.stderr
    assert "10 row(s) rejected" in bad.stdout and "Nothing was written" in bad.stdout
    assert "Traceback" not in bad.stderr
    with (tmp_path / "r.csv").open(encoding="utf-8-sig") as f:
        assert [row[0] for row in csv.reader(f)][1:] == [str(n) for n in range(3, 13)]
    assert await redis.exists(keys.school_classes(SCHOOL)) == 0

    missing = bot(redis_url, "import", "roster", str(tmp_path / "nope.csv"))
    assert missing.returncode == 2 and "no such file" in missing.stderr and "Traceback" not in missing.stderr

    good = bot(redis_url, "import", "roster", str(demo_data.path("roster.csv")))
    assert good.returncode == 0, good.stderr
    assert "240" in good.stdout

    codes = bot(redis_url, "classes", "codes", "--school", SCHOOL)
    assert codes.returncode == 0, codes.stderr
    info = await RosterStore(redis).class_info(SCHOOL, "3-2")
    assert info is not None and f"bind:{info.code}" in codes.stdout

    invite = bot(redis_url, "teacher", "invite", "--school", SCHOOL, "--class", "3-2", "--class", "3-3")
    assert invite.returncode == 1 and "3-3" in invite.stderr
    invite = bot(redis_url, "teacher", "invite", "--school", SCHOOL, "--class", "3-2", "--role", "subject")
    assert invite.returncode == 0, invite.stderr
    code = invite.stdout.strip()
    assert await hgetall(redis, keys.teacher_invite(code)) == {"school": SCHOOL, "classes": "3-2", "role": "s"}
