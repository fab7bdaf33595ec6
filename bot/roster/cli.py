"""Roster commands: ``bot import schools|roster FILE``, ``bot teacher invite``, ``bot classes codes``.

Exit codes: 0 done; 1 rows were rejected (nothing written unless ``--partial``) or the request was
wrong (unknown school or class); 2 the file could not be read or Redis could not be reached. Never a
traceback: every failure is one line saying what to do.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from bot.cliutil import run_with_redis
from bot.config import Config

if TYPE_CHECKING:
    from bot.roster.importer import Rejection
    from bot.store.redis import Redis


SHOW_REJECTED = 50  # rows listed on the terminal; --report FILE has them all
TEACHER_ROLES = {"class": "c", "subject": "s"}


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    """Registered through ``bot.cli.EXTRA_COMMANDS``; nothing heavy is imported here."""
    p = sub.add_parser("import", parents=[common], help="import schools or a roster (CSV or XLSX)")
    what = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    s = what.add_parser("schools", parents=[common], help="register or update schools from a file")
    s.add_argument("file", metavar="FILE")
    s.add_argument("--partial", action="store_true", help="import the good rows even if some are rejected")
    s.set_defaults(func=_cmd_import_schools)
    r = what.add_parser(
        "roster",
        parents=[common],
        help="import students: add, update, move, mark missing ones left",
        description="Columns: 学校/school, 年级/grade, 班级/class, 学生姓名/name, 学号/student_id, "
        "optional 家长手机/guardian_phone. Re-importing the same file changes nothing.",
    )
    r.add_argument("file", metavar="FILE")
    r.add_argument("--partial", action="store_true", help="import the good rows even if some are rejected")
    r.add_argument("--report", metavar="OUT.csv", help="write every rejected row and its reasons to this CSV")
    r.set_defaults(func=_cmd_import_roster)

    p = sub.add_parser("teacher", parents=[common], help="teacher invite codes")
    t = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    i = t.add_parser("invite", parents=[common], help="create a code a teacher sends to bind to classes")
    i.add_argument("--school", required=True, help="school id")
    i.add_argument("--class", dest="classes", action="append", required=True, metavar="GRADE-CLASS",
                   help="class id such as 3-2 (repeat for several classes)")  # fmt: skip
    i.add_argument("--role", choices=sorted(TEACHER_ROLES), default="class", help="class teacher or subject teacher")
    i.add_argument("--days", type=int, default=7, help="days the code stays valid (default 7)")
    i.set_defaults(func=_cmd_teacher_invite)

    p = sub.add_parser("classes", parents=[common], help="class codes and QR scenes")
    c = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    k = c.add_parser("codes", parents=[common], help="each class of a school, its code and QR scene")
    k.add_argument("--school", required=True, help="school id")
    k.set_defaults(func=_cmd_class_codes)


# -- running with Redis, without tracebacks --------------------------------------------------------
_run = run_with_redis  # kept under its old name for this module's commands


def _table(rows: Sequence[tuple[str, object]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v:>9}" for k, v in rows)


def _print_rejected(rows: Sequence[Rejection], report_path: str | None) -> None:
    print(f"{len(rows)} row(s) rejected:")
    print("    row  reasons")
    for rej in rows[:SHOW_REJECTED]:
        print(f"  {rej.row:>5}  {'; '.join(rej.reasons)}")
    if len(rows) > SHOW_REJECTED:
        more = f"; all of them are in {report_path}" if report_path else "; use --report OUT.csv to get them all"
        print(f"  … and {len(rows) - SHOW_REJECTED} more{more}")


# -- bot import schools ----------------------------------------------------------------------------
def _cmd_import_schools(cfg: Config, args: argparse.Namespace) -> int:
    from bot.roster.importer import ImportFileError, apply_schools, parse_schools

    try:
        report = parse_schools(args.file)
    except ImportFileError as exc:
        print(str(exc), file=sys.stderr)
        return 2

    async def work(r: Redis) -> int:
        result = await apply_schools(r, report, partial=args.partial)
        print(f"{report.filename}: {len(report.rows) + len(report.rejected)} school row(s)")
        if report.rejected:
            _print_rejected(report.rejected, None)
        if not result.written:
            print("Nothing was written: fix these rows and import again, or use --partial for the others.")
            return 1
        print(_table([("added", result.added), ("updated", result.updated), ("unchanged", result.unchanged),
                      ("rejected", result.rejected)]))  # fmt: skip
        return 1 if report.rejected else 0

    return _run(cfg, work)


# -- bot import roster -----------------------------------------------------------------------------
def _cmd_import_roster(cfg: Config, args: argparse.Namespace) -> int:
    from bot.roster.importer import ImportFileError, TerminalProgress, apply, parse_roster, validate, write_report_csv
    from bot.roster.store import RosterStore

    progress = TerminalProgress()
    started = time.perf_counter()
    try:
        parsed = parse_roster(args.file, progress=progress)
    except ImportFileError as exc:
        progress.close()
        print(str(exc), file=sys.stderr)
        return 2

    async def work(r: Redis) -> int:
        report = validate(parsed, await RosterStore(r).schools(), progress=progress)
        parsed.rows.clear()  # the raw rows are not needed any more: give the memory back
        if report.rejected and args.report:
            write_report_csv(args.report, report.rejected)
        result = await apply(r, report, partial=args.partial, progress=progress)
        progress.close()
        print(f"{report.filename}: {report.total} row(s), {len(report.rows)} accepted, {len(report.rejected)} rejected")
        if report.ignored_columns:
            print(f"columns ignored: {', '.join(report.ignored_columns)}")
        if report.rejected:
            _print_rejected(report.rejected, args.report)
        if not result.written:
            print("Nothing was written: fix these rows and import again, or use --partial to import the others.")
            return 1
        print(
            _table(
                [
                    ("schools", result.schools),
                    ("added", result.added),
                    ("updated", result.updated),
                    ("moved", result.moved),
                    ("returned", result.returned),
                    ("left", result.left),
                    ("unchanged", result.unchanged),
                    ("rejected", result.rejected),
                    ("classes created", result.classes_created),
                    ("guardians followed", result.guardians_followed),
                ]
            )
        )
        note = "nothing changed" if result.changes == 0 else f"{result.changes} change(s) written"
        print(f"{note} in {time.perf_counter() - started:.1f} s")
        return 1 if report.rejected else 0

    try:
        return _run(cfg, work)
    except OSError as exc:  # --report could not be written
        print(f"{exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2


# -- bot teacher invite ----------------------------------------------------------------------------
def _cmd_teacher_invite(cfg: Config, args: argparse.Namespace) -> int:
    from bot.roster.model import RosterError, class_label
    from bot.roster.store import RosterStore

    if args.days < 1:
        print("--days must be 1 or more", file=sys.stderr)
        return 1

    async def work(r: Redis) -> int:
        store = RosterStore(r)
        school = await store.school(args.school)
        if school is None:
            print(f"unknown school {args.school!r} (see bot import schools FILE)", file=sys.stderr)
            return 1
        try:
            code = await store.create_teacher_invite(
                school.id, list(dict.fromkeys(args.classes)), TEACHER_ROLES[args.role], args.days * 86400
            )
        except RosterError as exc:
            print(str(exc), file=sys.stderr)
            return 1
        labels = "、".join(class_label(c) for c in dict.fromkeys(args.classes))
        role = "班主任" if args.role == "class" else "任课老师"
        print(code)
        hint = f"{school.name} {labels} {role}: the teacher sends {code} to the official account"
        print(f"{hint} within {args.days} day(s).", file=sys.stderr)
        return 0

    return _run(cfg, work)


# -- bot classes codes -----------------------------------------------------------------------------
def _cmd_class_codes(cfg: Config, args: argparse.Namespace) -> int:
    from bot.roster.model import class_label, grade_of
    from bot.roster.store import RosterStore

    async def work(r: Redis) -> int:
        store = RosterStore(r)
        school = await store.school(args.school)
        if school is None:
            print(f"unknown school {args.school!r} (see bot import schools FILE)", file=sys.stderr)
            return 1
        classes = await store.classes(school.id)
        if not classes:
            print(f"{school.name} has no classes yet: import its roster (bot import roster FILE)", file=sys.stderr)
            return 1
        print(f"{school.name} ({school.id})")
        print(f"  {'class':<8}{'name':<16}{'code':<9}QR scene")
        for cid in sorted(classes, key=lambda c: (grade_of(c), c.partition("-")[2].zfill(4))):
            info = classes[cid]
            print(f"  {cid:<8}{class_label(cid):<{16 - _wide(class_label(cid))}}{info.code:<9}{qr_scene(info.code)}")
        return 0

    return _run(cfg, work)


def qr_scene(code: str) -> str:
    """The scene string of a class's parametric QR code: scanning it is the same as sending the code."""
    from bot.roster.chat import SCENE_PREFIX  # the binding conversation owns the format

    return f"{SCENE_PREFIX}{code}"


def _wide(text: str) -> int:
    """Extra columns taken by wide (Chinese) characters, to keep the table aligned."""
    return sum(1 for ch in text if ord(ch) > 0x2E80)
