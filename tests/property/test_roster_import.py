"""The roster importer against generated files (hypothesis): ``parse_roster`` and ``validate`` never
fail with anything but the documented ``ImportFileError`` (an unreadable file) or row rejections,
every row is either imported or rejected with a reason, good rows survive any encoding, delimiter and
header spelling, and an import with a rejected row writes nothing to Redis.

Inputs that once crashed the importer are the regression tests at the end,
and the generators here leave them out so that the rest keeps guarding everything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import string
import unicodedata
import zipfile
from typing import Any

import openpyxl
import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st
from store_footprint import footprint

from bot.roster.importer import (
    NAME_FORBIDDEN,
    NAME_MAX,
    ImportFileError,
    ParsedRoster,
    RawRow,
    apply,
    parse_roster,
    validate,
)
from bot.roster.model import School
from bot.roster.store import RosterStore
from bot.store.redis import Redis, connect

SETTINGS = settings(max_examples=1500, deadline=None, database=None, suppress_health_check=list(HealthCheck))
SCHOOLS = {"s1": School("s1", "平安路小学", "d1", "demo"), "s2": School("s2", "和平小学", "d1", "demo")}
HEADERS = {  # spellings a school's spreadsheet may use, per column
    "school": ["学校", "学校代码", "school", "School_ID", "学校（必填）"],
    "grade": ["年级", "grade", "GRADE"],
    "class": ["班级", "班", "class"],
    "name": ["学生姓名", "姓名", "name", "Student Name"],
    "student_id": ["学号", "学籍号", "student_id", "ID"],
    "phone": ["家长手机", "guardian_phone", "联系电话"],
}
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def digit_like(c: str) -> bool:
    """A character Python calls a digit that int() cannot read (it once crashed the importer)."""
    return c.isdigit() and not c.isdecimal()


cell = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30).filter(
    lambda s: not any(digit_like(c) for c in unicodedata.normalize("NFKC", s))
)


def known_crash(data: bytes) -> bool:
    """A UTF-16 file that does not decode (it once crashed the importer)."""
    if not data.startswith(UTF16_BOMS):
        return False
    try:
        data.decode("utf-16")
    except UnicodeDecodeError:
        return True
    return False


# -- files of any bytes -------------------------------------------------------------------------------
def csv_bytes(rows: list[list[str]], encoding: str, delimiter: str) -> bytes:
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter).writerows(rows)
    return out.getvalue().encode(encoding, errors="replace") if encoding != "utf-8-sig" else (
        b"\xef\xbb\xbf" + out.getvalue().encode("utf-8"))  # fmt: skip


header_rows = st.lists(st.sampled_from([a for names in HEADERS.values() for a in names]) | cell, max_size=8)
any_file = st.one_of(
    st.binary(max_size=4000),
    st.builds(
        lambda h, rows, enc, d: csv_bytes([h, *rows], enc, d),
        header_rows,
        st.lists(st.lists(cell, max_size=8), max_size=20),
        st.sampled_from(["utf-8", "utf-8-sig", "gb18030"]),
        st.sampled_from([",", "\t", ";"]),
    ),
    st.builds(
        lambda prefix, rest: prefix + rest,
        st.sampled_from([b"PK\x03\x04", b"\xd0\xcf\x11\xe0", *UTF16_BOMS, b"\xef\xbb\xbf"]),
        st.binary(max_size=2000),
    ),
)


@SETTINGS
@given(any_file, st.sampled_from(["roster.csv", "roster.xlsx", "roster.xls", "upload", "名单.CSV"]))
def test_any_bytes_are_read_as_a_roster_or_refused_with_import_file_error(data: bytes, filename: str) -> None:
    assume(not known_crash(data))
    try:
        parsed = parse_roster(data, filename)
    except ImportFileError as exc:
        assert str(exc)
        return
    assert all(isinstance(r, RawRow) for r in parsed.rows)


# -- rows of anything -----------------------------------------------------------------------------------
trimmed = cell.map(str.strip)  # parse_roster hands validate trimmed cells
raw_rows = st.lists(
    st.builds(
        RawRow,
        st.integers(2, 10_000),
        st.sampled_from(["s1", "s2", "平安路小学", "和平小学", "s9", ""]) | trimmed,
        st.sampled_from(["3", "三年级", "初一", "高三", "幼儿园", "13", "", "0x3"]) | trimmed,
        st.sampled_from(["2", "2班", "（2）班", "实验班", "", "a/b", "很长很长很长很长的班级名字"]) | trimmed,
        st.sampled_from(["王小明", "John  Smith", "Ａｌｉｃｅ", "", "李|红", "名" * 21]) | trimmed,
        st.sampled_from(["20260301", "0301", "6.02E+17", "", "x y", "a" * 33]) | trimmed,
        st.sampled_from(["", "13800001234", "+86 138-0000-1234", "12", "手机"]) | trimmed,
    ),
    max_size=20,
)


@settings(SETTINGS, max_examples=600)
@given(raw_rows)
def test_validate_imports_or_rejects_every_row_and_never_fails(rows: list[RawRow]) -> None:
    report = validate(ParsedRoster("gen.csv", rows, has_phone=True), SCHOOLS)
    assert len(report.rows) + len(report.rejected) == len(rows)
    assert all(rej.reasons and all(rej.reasons) for rej in report.rejected)
    for row in report.rows:
        assert row.school in SCHOOLS and row.student_id and row.class_id
        assert 0 < len(row.name) <= NAME_MAX and not set(row.name) & set(NAME_FORBIDDEN)
        assert row.phone == "" or "****" in row.phone
    ids = [(r.school, r.student_id) for r in report.rows]
    assert len(ids) == len(set(ids))


# -- good rows in any dress -------------------------------------------------------------------------------
good_rows = st.lists(
    st.tuples(
        st.sampled_from(["s1", "s2", "平安路小学"]),
        st.sampled_from(["1", "3", "三年级", "初二", "高一", "6年级"]),
        st.sampled_from(["1", "2班", "（3）班", "实验班", "10"]),
        st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), min_size=1, max_size=NAME_MAX),
        st.text(string.ascii_letters + string.digits, min_size=1, max_size=20),
        st.sampled_from(["", "13800001234", "139 0000 5678"]),
    ),
    min_size=1,
    max_size=25,
    unique_by=lambda r: (r[0].replace("平安路小学", "s1"), r[4]),
)


@SETTINGS
@given(good_rows, st.permutations(list(HEADERS)), st.data(), st.sampled_from(["utf-8", "utf-8-sig", "gb18030"]),
       st.sampled_from([",", "\t", ";"]), st.booleans())  # fmt: skip
def test_good_rows_are_imported_whatever_the_encoding_delimiter_and_header(
    rows: list[tuple[str, ...]], order: list[str], data: Any, encoding: str, delimiter: str, title: bool
) -> None:
    header = [data.draw(st.sampled_from(HEADERS[col])) for col in order]
    columns = list(HEADERS)
    body = [[row[columns.index(col)] for col in order] for row in rows]
    # a title line above the header, as Excel writes it (one cell, the others empty), maybe a blank line
    lines = [["2026学年 学生名单"] + [""] * (len(order) - 1), [], header, *body] if title else [header, *body]
    report = validate(parse_roster(csv_bytes(lines, encoding, delimiter), "roster.csv"), SCHOOLS)
    assert not report.rejected, report.rejected[:3]
    assert sorted(r.student_id for r in report.rows) == sorted(row[4] for row in rows)


# -- nothing written when a row is rejected ----------------------------------------------------------------
def test_an_import_with_a_rejected_row_writes_nothing(redis_url: str, figures: Any) -> None:
    loop = asyncio.new_event_loop()
    r: Redis = connect(redis_url)
    runs = 0

    async def one(rows: list[RawRow]) -> None:
        report = validate(ParsedRoster("gen.csv", rows, has_phone=True), SCHOOLS)
        assume(report.rejected)
        before = await footprint(r)
        result = await apply(r, report)
        after = await footprint(r)
        assert not result.written and after[0] == before[0] and after[1] <= before[1]

    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(raw_rows)
    def check(rows: list[RawRow]) -> None:
        nonlocal runs
        loop.run_until_complete(one(rows))
        runs += 1

    async def setup() -> None:
        await r.flushdb()
        store = RosterStore(r)
        for school in SCHOOLS.values():
            await store.put_school(school)

    try:
        loop.run_until_complete(setup())
        check()
    finally:
        loop.run_until_complete(r.aclose())
        loop.close()
    figures(f"roster import: {runs} generated rosters with a rejected row, none wrote anything")


# -- known crashes ----------------------------------------------------------------------------------------
def small_xlsx() -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["学校", "年级", "班级", "姓名", "学号"])
    sheet.append(["s1", "3", "2", "王小明", "20260301"])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def test_a_cell_longer_than_the_csv_field_limit_is_refused_with_import_file_error() -> None:
    with pytest.raises(ImportFileError):
        parse_roster(b"school,grade,class,name,id\n" + b"a" * 200_000 + b",3,2,x,1\n", "roster.csv")


def test_a_truncated_utf16_file_is_refused_with_import_file_error() -> None:
    with pytest.raises(ImportFileError):
        parse_roster("学校,年级,班级,姓名,学号\n".encode("utf-16") + b"\x00", "roster.csv")


def test_a_grade_written_with_a_digit_int_cannot_read_is_a_rejected_row() -> None:
    row = RawRow(2, "s1", "\u19da", "2", "王小明", "20260301", "")
    report = validate(ParsedRoster("gen.csv", [row], has_phone=False), SCHOOLS)
    assert len(report.rejected) == 1


@pytest.mark.parametrize("delimiter", ["\t", ";"])
def test_a_title_line_above_a_tab_or_semicolon_header_is_read(delimiter: str) -> None:
    text = "\n".join(["2026学年 学生名单", delimiter.join(["学校", "年级", "班级", "姓名", "学号"]),
                      delimiter.join(["s1", "3", "2", "王小明", "20260301"])])  # fmt: skip
    assert len(parse_roster(text.encode(), "roster.csv").rows) == 1


@settings(max_examples=40, deadline=None, database=None, derandomize=True, phases=[Phase.generate],
          suppress_health_check=list(HealthCheck))  # fmt: skip
@given(st.sampled_from(["xl/worksheets/sheet1.xml", "xl/workbook.xml", "[Content_Types].xml", "xl/styles.xml"]),
       st.integers(0, 10_000), st.binary(min_size=1, max_size=20))  # fmt: skip
def test_a_damaged_xlsx_is_refused_with_import_file_error(part: str, at: int, junk: bytes) -> None:
    good = small_xlsx()
    source = zipfile.ZipFile(io.BytesIO(good))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as damaged:
        for name in source.namelist():
            content = source.read(name)
            if name == part:
                i = at % len(content)
                content = content[:i] + junk + content[i + len(junk) :]
            damaged.writestr(name, content)
    with contextlib.suppress(ImportFileError):
        parse_roster(out.getvalue(), "roster.xlsx")
