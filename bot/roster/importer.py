"""Roster and school imports: a CSV or XLSX file → checked rows → only the changes, written to Redis.

One code path for ``bot import roster FILE`` now and the console upload later::

    parsed = parse_roster(path_or_bytes, filename)          # ImportFileError: unreadable file
    report = validate(parsed, await RosterStore(r).schools())
    result = await apply(r, report, partial=False)          # nothing written if a row was rejected

Roster columns. The header row may come in Chinese or English, in any order; spaces, full-width
characters, case and notes in brackets (``学号（必填）``) are ignored; other columns are ignored.

===========  ===============================================  ========  ==================
column       header names accepted                            required  example
===========  ===============================================  ========  ==================
school       学校, 学校代码, 学校名称, school, school_id        yes       demo-s1 or 平安路小学
grade        年级, grade                                      yes       3, 三年级, 初一, 高二
class        班级, 班, class                                  yes       2, 2班, （2）班, 实验班
name         学生姓名, 姓名, name, student_name               yes       王小明
student id   学号, 学籍号, 学生编号, student_id, id             yes       20260301
phone        家长手机, 监护人手机, 家长电话, guardian_phone     no        13800001234
===========  ===============================================  ========  ==================

The school is a school id or the exact name of a school already registered (``bot import schools``).
Student ids are unique within a school. Phones are kept masked only (``138****1234``); when the file
has a phone column it is the truth for phones (an empty cell removes a stored phone), when it has
none, stored phones are left alone.

What an import does, per school present in the file: new students are added, changed names and
phones updated, students found in another class moved (with their guardian links, phone and the
guardians' own records), students missing from the file marked left (never deleted; their guardian
links are kept, so a student who reappears is active again with their family still bound). New
classes get their short codes. Re-importing the same file writes nothing.
"""

from __future__ import annotations

import csv
import io
import os
import re
import sys
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, cast

from bot.roster.model import (
    ACTIVE,
    LEFT,
    RosterError,
    School,
    check_id,
    class_id,
    clean,
    mask_phone,
    parse_class,
    parse_grade,
)
from bot.roster.store import RosterStore, StudentMove
from bot.store import keys
from bot.store.redis import Redis

Source = str | os.PathLike[str] | bytes

MAX_BYTES = 50 * 1024 * 1024  # a city's 500,000 students are ~25 MB of CSV
MAX_ROWS = 1_000_000
NAME_MAX = 20
NAME_FORBIDDEN = "|,;/"  # separators of the compact Redis encodings
HEADER_SEARCH_ROWS = 10  # a title line or two above the header is common in school spreadsheets

# stage, rows done, rows in all (None while unknown). Called every few thousand rows, not per row.
Progress = Callable[[str, int, int | None], None]


class ImportFileError(Exception):
    """The file cannot be read as a roster at all (format, encoding, header, size); ``str()`` says why."""


@dataclass(frozen=True, slots=True)
class Limits:
    max_bytes: int = MAX_BYTES
    max_rows: int = MAX_ROWS


# -- the columns ---------------------------------------------------------------------------------
ROSTER_COLUMNS: dict[str, tuple[str, ...]] = {
    "school": ("学校", "学校代码", "学校名称", "学校编号", "school", "school_id", "school_name"),
    "grade": ("年级", "grade"),
    "class": ("班级", "班", "班别", "class", "class_name"),
    "name": ("学生姓名", "姓名", "学生", "name", "student_name"),
    "student_id": ("学号", "学籍号", "学生编号", "学生学号", "student_id", "student_no", "id"),
    "phone": ("家长手机", "监护人手机", "家长电话", "监护人电话", "家长手机号", "联系电话", "手机", "手机号",
              "guardian_phone", "parent_phone", "phone"),
}  # fmt: skip
ROSTER_REQUIRED = ("school", "grade", "class", "name", "student_id")
COLUMN_WORDS = {"school": "school", "grade": "grade", "class": "class", "name": "name",
                "student_id": "student id", "phone": "guardian phone"}  # fmt: skip

SCHOOL_COLUMNS: dict[str, tuple[str, ...]] = {
    "school_id": ("学校代码", "学校编号", "学校id", "school_id", "id"),
    "name": ("学校名称", "学校", "名称", "name", "school_name"),
    "district": ("区县", "区", "县", "区/县", "district"),
    "region": ("地区", "日历地区", "region"),
    "proof": ("验证方式", "绑定验证", "proof"),
    "approval": ("需审核", "班主任审核", "审核", "approval"),
}
SCHOOL_REQUIRED = ("school_id", "name", "district", "region")

_PROOFS = {"sid4": "sid4", "phone4": "phone4", "学号后四位": "sid4", "学号后4位": "sid4", "学号": "sid4",
           "手机后四位": "phone4", "手机后4位": "phone4", "家长手机后四位": "phone4", "手机": "phone4"}  # fmt: skip
_YES = {"是", "需要", "要", "true", "yes", "y", "1"}
_NO = {"否", "不需要", "不要", "false", "no", "n", "0"}


def _header_key(text: str) -> str:
    t = unicodedata.normalize("NFKC", text).lower()
    t = re.sub(r"[(\[（【].*?[)\]）】]", "", t)  # notes: 学号（必填）
    return re.sub(r"[\s_\-*:：.]", "", t)


def _map_header(cells: Sequence[str], columns: Mapping[str, tuple[str, ...]]) -> tuple[dict[str, int], list[str]]:
    """Column name → index for the columns we know, and the header texts we ignore."""
    lookup = {_header_key(alias): col for col, aliases in columns.items() for alias in aliases}
    found: dict[str, int] = {}
    ignored: list[str] = []
    for i, cell in enumerate(cells):
        col = lookup.get(_header_key(cell))
        if col is not None and col not in found:
            found[col] = i
        elif cell.strip():
            ignored.append(cell.strip())
    return found, ignored


# -- reading tables ------------------------------------------------------------------------------
def _read_source(source: Source, filename: str | None, limits: Limits) -> tuple[bytes, str]:
    if isinstance(source, bytes):
        data, name = source, filename or "upload"
    else:
        path = Path(source)
        name = filename or path.name
        try:
            size = path.stat().st_size
            if size > limits.max_bytes:
                raise ImportFileError(_too_big(name, size, limits))
            data = path.read_bytes()
        except FileNotFoundError:
            raise ImportFileError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise ImportFileError(f"{path}: is a directory, not a file") from None
        except OSError as exc:
            raise ImportFileError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if len(data) > limits.max_bytes:
        raise ImportFileError(_too_big(name, len(data), limits))
    return data, name


def _too_big(name: str, size: int, limits: Limits) -> str:
    return (
        f"{name}: {size / 1e6:.0f} MB is over the {limits.max_bytes / 1e6:.0f} MB limit; "
        "split the file by school and import the parts"
    )


def _decode(data: bytes, name: str) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # Excel's "Unicode text"
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise ImportFileError(f"{name}: damaged UTF-16 text; save it again as CSV UTF-8 or as .xlsx") from None
    for encoding in ("utf-8-sig", "gb18030"):  # gb18030 ⊃ GBK ⊃ GB2312: what Excel in China saves
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise ImportFileError(f"{name}: not UTF-8 or GBK text; save it as CSV UTF-8 or as .xlsx")


def _csv_rows(data: bytes, name: str) -> Iterator[list[str]]:
    text = _decode(data, name)
    # The delimiter is the one the header uses; title lines above it may have none, so look at the
    # first lines that have any and take the most common.
    head = [line for line in text.splitlines()[: HEADER_SEARCH_ROWS + 1] if any(d in line for d in ",\t;")]
    delimiter = max((",", "\t", ";"), key=lambda d: max((line.count(d) for line in head), default=0))
    try:
        yield from csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    except csv.Error as exc:  # e.g. a cell over csv's 131,072-character field limit
        raise ImportFileError(f"{name}: not a readable CSV file ({exc})") from None


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        if abs(value) >= 1e15:  # Excel kept only 15 digits of a long id stored as a number
            return f"{value:.6E}"
        return repr(value)
    return str(value)


def _xlsx_rows(data: bytes, name: str) -> Iterator[list[str]]:
    import openpyxl  # imported here: `bot --help` stays fast

    # A damaged workbook can fail anywhere inside openpyxl (zip, XML parse, a bad cell) with many
    # exception types; all of them mean the same to the person uploading it.
    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:
        raise ImportFileError(f"{name}: not a readable .xlsx workbook ({type(exc).__name__})") from None
    try:
        sheet = book.worksheets[0]
        for values in sheet.iter_rows(values_only=True):
            yield [_cell(v) for v in values]
    except ImportFileError:
        raise
    except Exception as exc:
        raise ImportFileError(f"{name}: a damaged .xlsx workbook ({type(exc).__name__}); save it again") from None
    finally:
        book.close()


def _table(source: Source, filename: str | None, limits: Limits) -> tuple[Iterator[list[str]], str]:
    data, name = _read_source(source, filename, limits)
    suffix = Path(name).suffix.lower()
    if data.startswith(b"PK\x03\x04") or suffix in (".xlsx", ".xlsm"):
        return _xlsx_rows(data, name), name
    if suffix == ".xls" or data.startswith(b"\xd0\xcf\x11\xe0"):
        raise ImportFileError(f"{name}: the old .xls format is not supported; save it as .xlsx or CSV")
    return _csv_rows(data, name), name


def _records(
    rows: Iterator[list[str]],
    name: str,
    columns: Mapping[str, tuple[str, ...]],
    required: Sequence[str],
    limits: Limits,
    progress: Progress | None = None,
    stage: str = "parse",
) -> tuple[dict[str, int], list[str], Iterator[tuple[int, list[str]]]]:
    """Find the header (in the first few non-empty rows); then the data rows with their numbers, as read.

    The rows stream (a city's roster is not held twice); blank rows are skipped, the row limit enforced.
    """
    numbered = enumerate(rows, start=1)
    best: tuple[int, list[str]] = (0, [])
    tried = 0
    for _, cells in numbered:
        if not "".join(cells).strip():
            continue
        found, ignored = _map_header(cells, columns)
        if all(c in found for c in required):
            return found, ignored, _data_rows(numbered, name, limits, progress, stage)
        if len(found) > best[0]:
            best = (len(found), [c for c in required if c not in found])
        tried += 1
        if tried >= HEADER_SEARCH_ROWS:
            break
    missing = best[1] or list(required)
    words = ", ".join(_column_names(columns, c) for c in missing)
    raise ImportFileError(f"{name}: no header row with the columns {words}")


def _data_rows(
    numbered: Iterator[tuple[int, list[str]]], name: str, limits: Limits, progress: Progress | None, stage: str
) -> Iterator[tuple[int, list[str]]]:
    count = 0
    for number, cells in numbered:
        if not "".join(cells).strip():
            continue
        count += 1
        if count > limits.max_rows:
            raise ImportFileError(
                f"{name}: more than {limits.max_rows:,} rows; split the file by school and import the parts"
            )
        if progress is not None and count % 20000 == 0:
            progress(stage, count, None)
        yield number, cells
    if progress is not None:
        progress(stage, count, count)


def _column_names(columns: Mapping[str, tuple[str, ...]], col: str) -> str:
    aliases = columns[col]
    chinese = next((a for a in aliases if not a.isascii()), aliases[0])
    english = next((a for a in aliases if a.isascii()), col)
    return f"{chinese}/{english}"


# -- roster: parse ---------------------------------------------------------------------------------
class RawRow(NamedTuple):
    """One data row as read: trimmed text, nothing checked yet. ``row`` is the number Excel shows."""

    row: int
    school: str
    grade: str
    klass: str
    name: str
    student_id: str
    phone: str


@dataclass
class ParsedRoster:
    filename: str
    rows: list[RawRow]
    has_phone: bool
    ignored_columns: list[str] = field(default_factory=list)


def parse_roster(
    source: Source, filename: str | None = None, *, limits: Limits | None = None, progress: Progress | None = None
) -> ParsedRoster:
    """Read a roster (CSV in UTF-8, UTF-8 with BOM or GBK/GB18030, or XLSX) into raw rows.

    Raises :class:`ImportFileError` when the file cannot be read as a roster at all.
    """
    limits = limits or Limits()
    table, name = _table(source, filename, limits)
    header, ignored, records = _records(table, name, ROSTER_COLUMNS, ROSTER_REQUIRED, limits, progress, "parse")
    idx = [header.get(c, -1) for c in ("school", "grade", "class", "name", "student_id", "phone")]
    # School, grade and class repeat on every row: one string object each instead of 500,000.
    shared: dict[str, str] = {}
    rows: list[RawRow] = []
    append = rows.append
    for number, cells in records:
        n = len(cells)
        school, grade, klass, student, sid, phone = (cells[i].strip() if 0 <= i < n else "" for i in idx)
        school = shared.setdefault(school, school)
        grade = shared.setdefault(grade, grade)
        klass = shared.setdefault(klass, klass)
        append(RawRow(number, school, grade, klass, student, sid, phone))
    return ParsedRoster(name, rows, "phone" in header, ignored)


# -- roster: validate --------------------------------------------------------------------------------
class RosterRow(NamedTuple):
    """A row that passed every check, in the form stored: ids, class id, normalised name, masked phone."""

    row: int
    school: str
    class_id: str
    student_id: str
    name: str
    phone: str  # masked, "" when none was given


@dataclass(frozen=True, slots=True)
class Rejection:
    row: int
    reasons: tuple[str, ...]


@dataclass
class Report:
    """What :func:`validate` found: the rows to import and every rejected row with its reasons."""

    filename: str
    rows: list[RosterRow]
    rejected: list[Rejection]
    has_phone: bool
    ignored_columns: list[str] = field(default_factory=list)
    # (school, student id) of rejected rows whose student could still be told: an import with
    # --partial leaves those students as they are instead of marking them left.
    held: set[tuple[str, str]] = field(default_factory=set)

    @property
    def total(self) -> int:
        return len(self.rows) + len(self.rejected)

    @property
    def ok(self) -> bool:
        return not self.rejected


_ID_FAST = re.compile(r"[A-Za-z0-9_.-]{1,32}")
_EXCEL_NUMBER = re.compile(r"\d(\.\d+)?E\+\d+", re.IGNORECASE)
_PHONE_SEPARATORS = re.compile(r"[\s\-()+]")
_SPACE = re.compile(r"\s")


def normalise_name(raw: str) -> str:
    """Full-width letters and digits made half-width, runs of spaces made one (``John  Smith``)."""
    name = unicodedata.normalize("NFKC", raw)
    return " ".join(name.split()) if _SPACE.search(name) else name


def check_name(name: str) -> str | None:
    """Why this (normalised) student name cannot be stored, or None."""
    if len(name) > NAME_MAX:
        return f"name {name!r} is longer than {NAME_MAX} characters"
    bad = sorted({c for c in name if c in NAME_FORBIDDEN})
    if bad:
        return f"name {name!r} contains {' '.join(bad)} (not allowed: | , ; /)"
    return None


def check_phone(raw: str) -> str:
    """The masked phone; :class:`RosterError` when it is not a phone number."""
    digits = _PHONE_SEPARATORS.sub("", unicodedata.normalize("NFKC", raw))
    if len(digits) == 13 and digits.startswith("86"):
        digits = digits[2:]
    if not digits.isdigit() or not 7 <= len(digits) <= 15:
        raise RosterError(f"guardian phone {raw!r} is not a phone number (7–15 digits, one number per row)")
    return mask_phone(digits)


def _student_id(raw: str) -> str:
    if _ID_FAST.fullmatch(raw):
        return raw
    if _EXCEL_NUMBER.fullmatch(clean(raw)):
        raise RosterError(
            f"student id {raw!r} was turned into a number by Excel and lost digits; "
            "format the column as text and export again"
        )
    return check_id("student id", raw)


class SchoolIndex:
    """Finds a registered school by id or by its exact name (spaces and full-width ignored)."""

    def __init__(self, schools: Mapping[str, School]) -> None:
        self.by_id = dict(schools)
        by_name: dict[str, list[str]] = defaultdict(list)
        for sid, school in schools.items():
            by_name[clean(school.name)].append(sid)
        self.by_name = dict(by_name)
        self._cache: dict[str, str | RosterError] = {}

    def resolve(self, raw: str) -> str:
        hit = self._cache.get(raw)
        if hit is None:
            hit = self._cache[raw] = self._resolve(raw)
        if isinstance(hit, RosterError):
            raise hit
        return hit

    def _resolve(self, raw: str) -> str | RosterError:
        key = clean(raw)
        if key in self.by_id:
            return key
        ids = self.by_name.get(key, [])
        if len(ids) == 1:
            return ids[0]
        if ids:
            return RosterError(f"school name {raw!r} is used by several schools ({', '.join(sorted(ids))}); use the id")
        return RosterError(f"unknown school {raw!r}: not a registered school id or name (bot import schools FILE)")


def validate(parsed: ParsedRoster, known_schools: Mapping[str, School], *, progress: Progress | None = None) -> Report:
    """Check every row; a row with any problem is rejected with all its reasons, in plain words."""
    schools = SchoolIndex(known_schools)
    classes: dict[tuple[str, str], str | RosterError] = {}  # (grade, class) as written → class id
    rows: list[RosterRow | None] = []
    reasons: dict[int, list[str]] = {}  # index in rows → reasons
    seen: dict[tuple[str, str], list[int]] = {}  # (school, student id) → indexes
    total = len(parsed.rows)
    for i, raw in enumerate(parsed.rows):
        why: list[str] = []
        values = (raw.school, raw.grade, raw.klass, raw.name, raw.student_id)
        missing = [COLUMN_WORDS[col] for col, value in zip(ROSTER_REQUIRED, values, strict=True) if not value]
        if missing:
            why.append(f"missing {', '.join(missing)}")
        school = sid = cid = ""
        if raw.school:
            try:
                school = schools.resolve(raw.school)
            except RosterError as exc:
                why.append(str(exc))
        if raw.grade and raw.klass:
            hit = classes.get((raw.grade, raw.klass))
            if hit is None:
                hit = classes[raw.grade, raw.klass] = _class_of(raw.grade, raw.klass)
            if isinstance(hit, RosterError):
                why.append(str(hit))
            else:
                cid = hit
        if raw.student_id:
            try:
                sid = _student_id(raw.student_id)
            except RosterError as exc:
                why.append(str(exc))
        name = normalise_name(raw.name)
        if name:
            problem = check_name(name)
            if problem:
                why.append(problem)
        phone = ""
        if raw.phone:
            try:
                phone = check_phone(raw.phone)
            except RosterError as exc:
                why.append(str(exc))
        if school and sid:
            seen.setdefault((school, sid), []).append(i)
        if why:
            reasons[i] = why
            rows.append(None)
        else:
            rows.append(RosterRow(raw.row, school, cid, sid, name, phone))
        if progress is not None and (i + 1) % 20000 == 0:
            progress("validate", i + 1, total)
    for (school, sid), where in seen.items():
        if len(where) > 1:
            numbers = ", ".join(str(parsed.rows[j].row) for j in where)
            duplicate = f"student id {sid} appears more than once in school {school}: rows {numbers}"
            for j in where:
                reasons.setdefault(j, []).append(duplicate)
                rows[j] = None
    held = {key for key, where in seen.items() if any(j in reasons for j in where)}
    if progress is not None:
        progress("validate", total, total)
    return Report(
        filename=parsed.filename,
        rows=[r for r in rows if r is not None],
        rejected=[Rejection(parsed.rows[j].row, tuple(reasons[j])) for j in sorted(reasons)],
        has_phone=parsed.has_phone,
        ignored_columns=parsed.ignored_columns,
        held=held,
    )


def _class_of(grade: str, klass: str) -> str | RosterError:
    try:
        return class_id(parse_grade(grade), parse_class(klass))
    except RosterError as exc:
        return exc


# -- roster: apply -----------------------------------------------------------------------------------
@dataclass
class ImportResult:
    """What an import changed. Each accepted row counts once: added, returned, moved, updated or unchanged."""

    added: int = 0
    updated: int = 0  # name or phone changed
    moved: int = 0  # found in another class of the school
    returned: int = 0  # marked left before, in the file again: active again
    left: int = 0  # active before, missing from the file now
    unchanged: int = 0
    rejected: int = 0
    classes_created: int = 0
    guardians_followed: int = 0  # guardians' records updated because their child moved class
    schools: int = 0
    written: bool = False  # False when rows were rejected and --partial was not given

    @property
    def changes(self) -> int:
        return self.added + self.updated + self.moved + self.returned + self.left + self.classes_created


@dataclass
class _Existing:
    """A student as Redis holds them now."""

    class_id: str
    name: str
    status: str


@dataclass
class _SchoolPlan:
    new_classes: list[str] = field(default_factory=list)
    moves: list[StudentMove] = field(default_factory=list)
    # class → {student id: value} to HSET; class → [student ids] to HDEL (phones only)
    students: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    phones: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    drop_phones: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))


class _Writer:
    """Pipelined writes, sent every ``batch`` fields: no per-row round trips, bounded memory."""

    def __init__(self, r: Redis, batch: int) -> None:
        self.r = r
        self.batch = batch
        self.pipe = r.pipeline(transaction=False)
        self.pending = 0

    async def hset(self, key: str, mapping: Mapping[str, str]) -> None:
        items = list(mapping.items())
        for i in range(0, len(items), self.batch):
            self.pipe.hset(key, mapping=dict(items[i : i + self.batch]))
            await self._count(len(items[i : i + self.batch]))

    async def hdel(self, key: str, fields: Sequence[str]) -> None:
        if fields:
            self.pipe.hdel(key, *fields)
            await self._count(len(fields))

    async def _count(self, n: int) -> None:
        self.pending += n
        if self.pending >= self.batch:
            await self.flush()

    async def flush(self) -> None:
        if self.pending:
            await self.pipe.execute()
            self.pending = 0


async def apply(
    r: Redis,
    report: Report,
    *,
    partial: bool = False,
    progress: Progress | None = None,
    batch: int = 5000,
    schools_per_round: int = 64,
) -> ImportResult:
    """Write what changed. Nothing at all when a row was rejected, unless ``partial``.

    Schools are handled ``schools_per_round`` at a time: one pipelined read of their classes and
    class hashes, the diff in Python, then pipelined writes of only the differences.
    """
    result = ImportResult(rejected=len(report.rejected))
    if report.rejected and not partial:
        return result
    result.written = True
    store = RosterStore(r)
    by_school: dict[str, dict[str, RosterRow]] = defaultdict(dict)
    for row in report.rows:
        by_school[row.school][row.student_id] = row
    result.schools = len(by_school)
    total, done = len(report.rows), 0
    writer = _Writer(r, batch)
    order = sorted(by_school)
    held: dict[str, set[str]] = defaultdict(set)
    for school, sid in report.held:
        held[school].add(sid)
    for start in range(0, len(order), schools_per_round):
        group = order[start : start + schools_per_round]
        existing = await _read_schools(r, group, with_phones=report.has_phone, batch=batch)
        for school in group:
            known_classes, students, phones = existing[school]
            plan = _diff(by_school[school], known_classes, students, phones, report.has_phone, held[school], result)
            if plan.new_classes:
                created = await store.create_classes(school, plan.new_classes, batch=batch)
                result.classes_created += len(created)
            if plan.moves:
                result.guardians_followed += await store.move_students(school, plan.moves)
            for cid, mapping in plan.students.items():
                await writer.hset(keys.class_students(school, cid), mapping)
            for cid, mapping in plan.phones.items():
                await writer.hset(keys.class_phones(school, cid), mapping)
            for cid, fields in plan.drop_phones.items():
                await writer.hdel(keys.class_phones(school, cid), fields)
            done += len(by_school[school])
        await writer.flush()
        if progress is not None:
            progress("write", done, total)
    await writer.flush()
    return result


_ExistingSchool = tuple[set[str], dict[str, _Existing], dict[str, str]]


async def _read_schools(
    r: Redis, schools: Sequence[str], *, with_phones: bool, batch: int
) -> dict[str, _ExistingSchool]:
    """For each school: its class ids, its students (id → class, name, status), their masked phones."""
    async with r.pipeline(transaction=False) as pipe:
        for school in schools:
            pipe.hkeys(keys.school_classes(school))
        class_lists = cast(list[list[str]], await pipe.execute())
    wanted = [(school, cid) for school, cids in zip(schools, class_lists, strict=True) for cid in cids]
    out: dict[str, _ExistingSchool] = {s: (set(c), {}, {}) for s, c in zip(schools, class_lists, strict=True)}
    per_call = 2 if with_phones else 1
    step = max(1, batch // 10 // per_call)  # HGETALL replies are ~30 fields each
    for i in range(0, len(wanted), step):
        chunk = wanted[i : i + step]
        async with r.pipeline(transaction=False) as pipe:
            for school, cid in chunk:
                pipe.hgetall(keys.class_students(school, cid))
                if with_phones:
                    pipe.hgetall(keys.class_phones(school, cid))
            replies = cast(list[dict[str, str]], await pipe.execute())
        for j, (school, cid) in enumerate(chunk):
            _, students, phones = out[school]
            for sid, raw in replies[j * per_call].items():
                name, _, status = raw.partition("|")
                before = students.get(sid)
                # a student listed in two classes (only possible after manual edits): the active record wins
                if before is None or before.status != ACTIVE:
                    students[sid] = _Existing(cid, name, status or ACTIVE)
            if with_phones:
                phones.update(replies[j * per_call + 1])
    return out


def _diff(
    rows: Mapping[str, RosterRow],
    known_classes: set[str],
    existing: Mapping[str, _Existing],
    phones: Mapping[str, str],
    has_phone: bool,
    held: set[str],
    result: ImportResult,
) -> _SchoolPlan:
    plan = _SchoolPlan()
    new_classes: dict[str, None] = {}
    for sid, row in rows.items():
        cid = row.class_id
        if cid not in known_classes and cid not in new_classes:
            new_classes[cid] = None
        value = f"{row.name}|{ACTIVE}"
        before = existing.get(sid)
        phone_changed = has_phone and phones.get(sid, "") != row.phone
        if before is None:
            plan.students[cid][sid] = value
            result.added += 1
        elif before.class_id != cid:
            plan.moves.append(StudentMove(sid, before.class_id, cid, value))
            if before.status == ACTIVE:
                result.moved += 1
            else:
                result.returned += 1
        elif before.status != ACTIVE:
            plan.students[cid][sid] = value
            result.returned += 1
        elif before.name != row.name:
            plan.students[cid][sid] = value
            result.updated += 1
        elif phone_changed:
            result.updated += 1
        else:
            result.unchanged += 1
        if phone_changed:
            if row.phone:
                plan.phones[cid][sid] = row.phone
            else:
                plan.drop_phones[cid].append(sid)
    for sid, before in existing.items():
        if before.status == ACTIVE and sid not in rows and sid not in held:
            plan.students[before.class_id][sid] = f"{before.name}|{LEFT}"
            result.left += 1
    plan.new_classes = list(new_classes)
    return plan


# -- schools ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SchoolRow:
    row: int
    school: School
    proof: str | None  # None: keep what the school has (default sid4)
    approval: bool | None


@dataclass
class SchoolsReport:
    filename: str
    rows: list[SchoolRow]
    rejected: list[Rejection]

    @property
    def ok(self) -> bool:
        return not self.rejected


@dataclass
class SchoolsResult:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    written: bool = False


def parse_schools(source: Source, filename: str | None = None, *, limits: Limits | None = None) -> SchoolsReport:
    """Read and check a schools file (CSV or XLSX). Columns: 学校代码/school_id, 学校名称/name,
    区县/district, 地区/region (the calendar region id), optional 验证方式/proof (sid4 or phone4:
    what a parent proves when binding) and 需审核/approval (是/否: bindings wait for the class teacher).
    """
    limits = limits or Limits()
    table, name = _table(source, filename, limits)
    header, _, records = _records(table, name, SCHOOL_COLUMNS, SCHOOL_REQUIRED, limits, None, "parse")
    rows: list[SchoolRow] = []
    rejected: list[Rejection] = []
    seen: dict[str, int] = {}
    for number, cells in records:
        get = {col: (cells[i].strip() if i < len(cells) else "") for col, i in header.items()}
        why: list[str] = []
        missing = [col.replace("_", " ") for col in SCHOOL_REQUIRED if not get.get(col)]
        if missing:
            why.append(f"missing {', '.join(missing)}")
        school_id = region = ""
        for col in ("school_id", "region"):
            if get.get(col):
                try:
                    value = check_id(col.replace("_", " "), get[col])
                except RosterError as exc:
                    why.append(str(exc))
                else:
                    school_id, region = (value, region) if col == "school_id" else (school_id, value)
        district = " ".join(unicodedata.normalize("NFKC", get.get("district", "")).split())
        school_name = " ".join(unicodedata.normalize("NFKC", get.get("name", "")).split())
        if "|" in district:
            why.append(f"district {district!r} contains |")
        if len(school_name) > 60:
            why.append(f"school name {school_name!r} is longer than 60 characters")
        proof: str | None = None
        if get.get("proof"):
            proof = _PROOFS.get(clean(get["proof"]).lower())
            if proof is None:
                why.append(f"proof {get['proof']!r} must be sid4 (学号后四位) or phone4 (手机后四位)")
        approval: bool | None = None
        if get.get("approval"):
            word = clean(get["approval"]).lower()
            if word in _YES or word in _NO:
                approval = word in _YES
            else:
                why.append(f"approval {get['approval']!r} must be 是 or 否")
        if school_id in seen:
            why.append(f"school id {school_id} is also on row {seen[school_id]}")
        elif school_id:
            seen[school_id] = number
        if why:
            rejected.append(Rejection(number, tuple(why)))
        else:
            rows.append(SchoolRow(number, School(school_id, school_name, district, region), proof, approval))
    return SchoolsReport(name, rows, rejected)


async def apply_schools(r: Redis, report: SchoolsReport, *, partial: bool = False) -> SchoolsResult:
    """Register new schools and update changed ones; unchanged schools are not written."""
    result = SchoolsResult(rejected=len(report.rejected))
    if report.rejected and not partial:
        return result
    result.written = True
    store = RosterStore(r)
    known = await store.schools()
    async with r.pipeline(transaction=False) as pipe:
        for row in report.rows:
            pipe.hmget(keys.school_meta(row.school.id), ["proof", "approval"])
        metas = cast(list[list[str | None]], await pipe.execute())
    for row, (proof_now, approval_now) in zip(report.rows, metas, strict=True):
        proof = row.proof or proof_now or "sid4"
        approval = row.approval if row.approval is not None else approval_now == "1"
        before = known.get(row.school.id)
        if before == row.school and proof == proof_now and ("1" if approval else "0") == approval_now:
            result.unchanged += 1
            continue
        await store.put_school(row.school, proof=proof, approval=approval)
        if before is None:
            result.added += 1
        else:
            result.updated += 1
    return result


# -- reports for people ----------------------------------------------------------------------------
def write_report_csv(path: str | os.PathLike[str], rejected: Iterable[Rejection]) -> None:
    """The rejected rows as CSV (UTF-8 with BOM, so Excel shows the Chinese right): row, reasons."""
    with open(path, "w", encoding="utf-8-sig", newline="") as f:
        out = csv.writer(f)
        out.writerow(["row", "reasons"])
        for rej in rejected:
            out.writerow([rej.row, "; ".join(rej.reasons)])


class TerminalProgress:
    """A :data:`Progress` drawing one tqdm bar per stage on stderr; silent when stderr is not a terminal."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._stage = ""
        self._bar: Any = None

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if stage != self._stage:
            self.close()
            self._stage = stage
            self._bar = tqdm(total=total, desc=f"{stage:<8}", unit=" rows", file=sys.stderr, leave=True)
        if total is not None and self._bar.total != total:
            self._bar.total = total
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
