"""``bot report lessons``: the three lesson rates as a table on the terminal, and as CSV or JSON.

    bot report lessons [--district D] [--school S] [--class C] [--topic T]
                       [--since YYYY-MM-DD] [--until YYYY-MM-DD] [--csv FILE] [--json] [--schools-only]

Registered through ``bot.cli.EXTRA_COMMANDS``. ``report`` is a group other capabilities share
(``bot report notice ...``): :func:`report_group` finds it or creates it, whichever comes first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bot.cliutil import report_group
from bot.config import Config

if TYPE_CHECKING:
    from bot.cliutil import SubParsers


def add_commands(sub: SubParsers, common: argparse.ArgumentParser) -> None:
    p = report_group(sub, common).add_parser(
        "lessons", parents=[common], help="lesson rates (参学率 参考率 合格率) per class, school and district"
    )
    p.add_argument("--district", default="", help="only this district")
    p.add_argument("--school", default="", help="only this school (id)")
    p.add_argument(
        "--class", dest="class_id", default="", metavar="CLASS", help="only this class, e.g. 3-2 (with --school)"
    )
    p.add_argument("--topic", default="", help="only this topic, e.g. drowning (default: every topic)")
    p.add_argument("--since", default="", metavar="YYYY-MM-DD", help="only what happened since this day")
    p.add_argument("--until", default="", metavar="YYYY-MM-DD", help="only what happened up to this day (inclusive)")
    p.add_argument("--csv", metavar="FILE", help="also write the rows to this CSV file (UTF-8 with BOM)")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--schools-only", action="store_true", help="leave out the class rows")
    p.set_defaults(func=_cmd_report_lessons)


def _cmd_report_lessons(cfg: Config, args: argparse.Namespace) -> int:
    return asyncio.run(_report(cfg, args))


async def _report(cfg: Config, args: argparse.Namespace) -> int:
    from bot.lessons.report import ReportError, build_report, parse_period, render_table, report_csv, report_json
    from bot.roster.store import RosterStore
    from bot.store.redis import redis_from_config

    async with redis_from_config(cfg) as r:
        try:
            since, until = parse_period(args.since, args.until)
            report = await build_report(
                r,
                RosterStore(r),
                district=args.district,
                school=args.school,
                class_id=args.class_id,
                topic=args.topic,
                since=since,
                until=until,
            )
        except ReportError as exc:
            option = {"class": "--class"}.get(exc.field, f"--{exc.field}")
            print(f"bot report lessons: {option}: {exc.message}", file=sys.stderr)
            return 2
    per_class = not args.schools_only
    if args.json:
        print(json.dumps(report_json(report, per_class=per_class), ensure_ascii=False, indent=2))
    else:
        print(render_table(report, per_class=per_class))
    if args.csv:
        _write(args.csv, report_csv(report))
        print(f"wrote {args.csv}", file=sys.stderr)
    return 0


def _write(path: str, text: str) -> None:
    Path(path).write_text(text, encoding="utf-8", newline="")
