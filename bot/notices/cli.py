"""Notice commands: ``bot send notice …`` and ``bot report notice ID``.

``report notice`` prints counts. The students without a confirmation of one class come by reason
with ``--missing``, and by name only with ``--names`` too (``--missing-csv`` needs it): the operator
has all of Redis anyway, so the flag is not a lock but a deliberate step, and the names are for
that class's class teacher, the one person the chat, the console and the API show them to.

``send notice`` takes the same path as the chat and the API (``NoticeService.submit``), acting either
as an API token's admin (``--as-token``) or, for an operator on the server, as an admin of a scope
(``--as-admin district:D`` or ``school:S``). Exit codes: 0 done (also when the idempotency key
already gave a notice); 1 the notice, school or class asked for a report does not exist; 2 a value
is wrong (the message names the option), a file cannot be read or written, or Redis cannot be
reached. Never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from bot.config import Config
from bot.notices.model import MODES

if TYPE_CHECKING:
    from bot.notices.model import Draft, FollowUp, Mode, Question
    from bot.notices.service import Plan
    from bot.roster.authz import Scope, Subject
    from bot.roster.store import RosterStore
    from bot.store.redis import Redis

LARGE_REPORT = 100  # classes: past this, the table shows schools only unless --school is given


class Refused(Exception):
    """A value the operator must fix: ``option: message``, exit 2."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    """Registered through ``bot.cli.EXTRA_COMMANDS``; nothing heavy is imported here."""
    p = sub.add_parser("send", parents=[common], help="send a notice to families")
    what = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    n = what.add_parser(
        "notice",
        parents=[common],
        help="create and plan a notice: prints the plan and any quota warning",
        description="Card fields (--title, --sender) are at most 20 characters on one line. "
        "The audience is a school (optionally a grade or some classes) or a whole district.",
    )
    n.add_argument("--title", required=True, help="card title (≤ 20 characters)")
    n.add_argument("--sender", required=True, help="shown on the card: school or class name (≤ 20 characters)")
    body = n.add_mutually_exclusive_group(required=True)
    body.add_argument("--body", help="the full text (shown on the notice page)")
    body.add_argument("--body-file", metavar="FILE", help="read the full text from a UTF-8 file")
    where = n.add_mutually_exclusive_group(required=True)
    where.add_argument("--school", help="school id")
    where.add_argument("--district", help="district id: every school in it")
    n.add_argument("--grade", help="only this grade (3, 三年级, 初一, …)")
    n.add_argument("--class", dest="classes", action="append", metavar="GRADE-CLASS",
                   help="only this class, e.g. 3-2 (repeat for several; needs --school)")  # fmt: skip
    n.add_argument("--mode", choices=MODES, default=None,
                   help="none | confirm (default) | understand (confirm and answer --question)")  # fmt: skip
    n.add_argument("--question", help="the comprehension question (mode understand)")
    n.add_argument("--option", action="append", default=[], help="an answer option (repeat 2–4 times)")
    n.add_argument("--answer", type=int, help="the number of the right option, counting from 1")
    n.add_argument("--deadline", help='local time, e.g. "2026-11-25 18:00" (default: notices.default_deadline_hours)')
    n.add_argument("--urgent", action="store_true", help="skip quiet hours (school or district admins only)")
    n.add_argument("--reminders", metavar="HOURS",
                   help="private reminders to those who have not confirmed, hours after sending, e.g. 2,24 "
                        "(default: notices.reminder_hours)")  # fmt: skip
    n.add_argument("--reminder-window", metavar="HH:MM-HH:MM",
                   help="reminders only inside this local time window (default: notices.*window*)")  # fmt: skip
    n.add_argument("--no-teacher-list", action="store_true",
                   help="after the last reminder, do not send the class teacher the list of the rest")  # fmt: skip
    n.add_argument("--key", help="idempotency key: sending again with the same key creates nothing new")
    n.add_argument("--dry-run", action="store_true",
                   help="send nothing: print whom it would reach and how it fits today's template quota")  # fmt: skip
    who = n.add_mutually_exclusive_group(required=True)
    who.add_argument("--as-token", metavar="TOKEN", help='act as this API token\'s admin ("-" reads it from stdin)')
    who.add_argument("--as-admin", metavar="SCOPE", help="act as an admin of district:D or school:S (operators)")
    n.set_defaults(func=_cmd_send_notice)

    from bot.cliutil import report_group  # `report` is shared: whichever capability comes first creates it

    r = report_group(sub, common).add_parser(
        "notice",
        parents=[common],
        help="a notice's funnel per class, school and in total",
        description="targeted → reachable → sent → delivered → opened → confirmed → understood. "
        "--csv writes one row per class, per school and the total (columns in bot/notices/report.py).",
    )
    r.add_argument("id", metavar="ID", help="notice id")
    r.add_argument("--school", help="only this school")
    r.add_argument("--class", dest="class_id", metavar="GRADE-CLASS", help="only this class (needs --school)")
    r.add_argument("--csv", metavar="FILE", help="also write the report as CSV")
    r.add_argument("--missing", action="store_true",
                   help="one class's students without a confirmation, counted by reason (names: --names)")  # fmt: skip
    r.add_argument("--missing-csv", metavar="FILE", help="write that list, with names, as CSV (needs --names)")
    r.add_argument("--names", action="store_true",
                   help="show the students' names: only to hand to that class's class teacher (班主任), "
                        "who alone sees them in the chat, the console and the API")  # fmt: skip
    r.set_defaults(func=_cmd_report_notice)


# -- bot send notice --------------------------------------------------------------------------------
def _read_body(args: argparse.Namespace) -> str:
    if args.body is not None:
        return str(args.body)
    try:
        with open(args.body_file, encoding="utf-8") as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise Refused("body-file", f"cannot read {args.body_file}: {reason}") from None


def _question(args: argparse.Namespace) -> Question | None:
    from bot.notices.model import Question

    if args.question is None:
        if args.option or args.answer is not None:
            raise Refused("question", "--option and --answer go with --question")
        return None
    if args.answer is None or not 1 <= args.answer <= len(args.option):
        raise Refused("answer", f"the number of the right option, from 1 to {len(args.option)}")
    return Question(args.question, tuple(args.option), args.answer - 1)


async def _subject(roster: RosterStore, r: Redis, args: argparse.Namespace) -> Subject:
    from bot.roster.authz import Subject
    from bot.web.tokens import TokenStore

    if args.as_token is not None:
        token = sys.stdin.readline().strip() if args.as_token == "-" else args.as_token
        found = await TokenStore(r).lookup(token)
        if found is None:
            raise Refused("as-token", "unknown, revoked or expired token (bot admin token list)")
        return found.subject()
    kind, _, ident = str(args.as_admin).partition(":")
    if kind == "district" and ident:
        if not any(s.district == ident for s in (await roster.schools()).values()):
            raise Refused("as-admin", f"no school in district {ident!r}")
        return Subject("district_admin", district=ident, name=f"cli:district:{ident}")
    if kind == "school" and ident:
        school = await roster.school(ident)
        if school is None:
            raise Refused("as-admin", f"unknown school {ident!r}")
        return Subject("school_admin", school=ident, district=school.district, name=f"cli:school:{ident}")
    raise Refused("as-admin", "district:D or school:S")


async def _audience(roster: RosterStore, args: argparse.Namespace) -> tuple[Scope, ...]:
    from bot.roster.authz import Scope
    from bot.roster.model import RosterError, grade_of, parse_grade

    grade: int | None = None
    if args.grade is not None:
        try:
            grade = parse_grade(args.grade)
        except RosterError as exc:
            raise Refused("grade", str(exc)) from None
    if args.district is not None:
        if args.classes:
            raise Refused("class", "a class needs --school")
        if not any(s.district == args.district for s in (await roster.schools()).values()):
            raise Refused("district", f"no school in district {args.district!r}")
        return (Scope(args.district, grade=grade),)
    school = await roster.school(args.school)
    if school is None:
        raise Refused("school", f"unknown school {args.school!r} (see bot import schools FILE)")
    if not args.classes:
        return (Scope(school.district, school.id, grade),)
    known = await roster.classes(school.id)
    scopes = []
    for cid in dict.fromkeys(args.classes):
        if cid not in known:
            raise Refused("class", f"no class {cid} in school {school.id} (see bot classes codes --school {school.id})")
        if grade is not None and grade_of(cid) != grade:
            raise Refused("class", f"class {cid} is not in grade {grade}")
        scopes.append(Scope(school.district, school.id, class_id=cid))
    return tuple(scopes)


def _followup(cfg: Config, args: argparse.Namespace) -> FollowUp:
    from bot.notices.api import parse_followup
    from bot.notices.model import FollowUp, NoticeError

    if args.reminders is None and args.reminder_window is None and not args.no_teacher_list:
        return FollowUp()
    n = cfg.notices
    raw: dict[str, object] = {"teacher_list": not args.no_teacher_list, "after_hours": list(n.reminder_hours)}
    if args.reminders is not None:
        try:
            raw["after_hours"] = [float(h) for h in str(args.reminders).replace("，", ",").split(",") if h.strip()]
        except ValueError:
            raise Refused("reminders", "hours after sending, separated by commas, e.g. 2,24") from None
    raw["window"] = [n.reminder_window_start, n.reminder_window_end]
    if args.reminder_window is not None:
        raw["window"] = [w.strip() for w in str(args.reminder_window).split("-")]
    try:
        chosen = parse_followup(raw)
    except NoticeError as exc:
        option = "reminder-window" if exc.message.startswith("window") else "reminders"
        raise Refused(option, exc.message.split(": ", 1)[-1]) from None
    # what was not given stays empty: the deployment's defaults fill it when the notice is created
    hours = chosen.after_hours if args.reminders is not None else ()
    window = chosen.window if args.reminder_window is not None else ("", "")
    return FollowUp(hours, window, chosen.teacher_list)


def _print_plan(plan: Plan) -> None:
    from bot.notices.report import display_width

    rows = [
        ("classes", plan.classes),
        ("students targeted", plan.targeted),
        ("students without a bound guardian", plan.without_guardian),
        ("guardians reachable (cards)", plan.reachable),
        ("cards tomorrow" if plan.starts_tomorrow else "cards today", plan.today),
        *((f"cards on {d[:4]}-{d[4:6]}-{d[6:]}", c) for d, c in plan.later),
    ]
    width = max(display_width(k) for k, _ in rows)
    for label, value in rows:
        print(f"  {label:<{width}}  {value:>8}")
    if plan.warning:
        print(f"warning: {plan.warning}")


def _cmd_send_notice(cfg: Config, args: argparse.Namespace) -> int:
    from bot import clock
    from bot.notices.api import check_key, idempotency_key, may_send, parse_deadline
    from bot.notices.model import Draft, NoticeError
    from bot.notices.service import NoticeService
    from bot.roster.store import RosterStore

    try:
        body = _read_body(args)
        question = _question(args)
        mode: Mode = args.mode or ("understand" if question else "confirm")
        if question is not None and mode != "understand":
            raise Refused("question", "a question is asked only with --mode understand")
        deadline = parse_deadline(args.deadline, clock.now()) if args.deadline else 0.0
        key = check_key(args.key, field="key") if args.key is not None else ""
        followup = _followup(cfg, args)
    except Refused as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except NoticeError as exc:
        print(f"{exc.field}: {exc.message}", file=sys.stderr)
        return 2

    async def work(r: Redis) -> int:
        roster = RosterStore(r)
        try:
            who = await _subject(roster, r, args)
            draft: Draft = Draft(
                title=args.title, body=body, sender=args.sender, audience=await _audience(roster, args), mode=mode,
                question=question, deadline=deadline, urgent=args.urgent, followup=followup, created_by=who.name,
            ).validate()  # fmt: skip
            if not may_send(who, draft):
                urgent = " (urgent notices need a school or district admin)" if draft.urgent else ""
                raise Refused("audience", f"{who.name} may not send to this audience{urgent}")
            service = NoticeService(r, cfg, roster)
            if args.dry_run:
                estimate = await service.estimate(draft.audience, urgent=draft.urgent)
                left, quota = estimate.quota_left, cfg.wechat.template_quota
                day = "tomorrow" if estimate.starts_tomorrow else "today"
                print(f"dry run, nothing sent: 「{draft.title}」 (template quota left {day}: {left:,} of {quota:,})")
                _print_plan(estimate)
                return 0
            notice, plan, created = await service.submit(draft, who, key=idempotency_key(who, key) if key else "")
        except Refused as exc:
            print(str(exc), file=sys.stderr)
            return 2
        except NoticeError as exc:
            print(f"{exc.field}: {exc.message}", file=sys.stderr)
            return 2
        if not created:
            print(f"notice {notice.id} 「{notice.draft.title}」 already exists for key {key!r}: nothing new was sent")
            return 0
        print(f"notice {notice.id} 「{notice.draft.title}」 created ({notice.draft.mode}"
              f"{', urgent' if notice.draft.urgent else ''}); deadline {clock.fmt(notice.draft.deadline)}")  # fmt: skip
        if plan is not None:
            _print_plan(plan)
        print(f"report: bot report notice {notice.id}")
        return 0

    from bot.cliutil import run_with_redis as _run

    return _run(cfg, work)


# -- bot report notice ------------------------------------------------------------------------------
def _cmd_report_notice(cfg: Config, args: argparse.Namespace) -> int:
    from bot.notices import report
    from bot.notices.api import build_report, planned_classes
    from bot.notices.service import NoticeService
    from bot.roster.store import RosterStore

    if args.class_id and not args.school:
        print("class: give its --school too", file=sys.stderr)
        return 2
    if (args.missing or args.missing_csv) and not args.class_id:
        print("missing: give one class with --school S --class C", file=sys.stderr)
        return 2
    if args.missing_csv and not args.names:  # a file of names: asked for by name, never by habit
        print("missing-csv: the file lists students by name, for the class teacher only: add --names "
              "(the counts by reason are in --csv)", file=sys.stderr)  # fmt: skip
        return 2
    if args.names and not (args.missing or args.missing_csv):
        print("names: goes with --missing or --missing-csv", file=sys.stderr)
        return 2

    async def work(r: Redis) -> int:
        roster = RosterStore(r)
        service = NoticeService(r, cfg, roster)
        notice = await service.get(args.id)
        if notice is None:
            print(f"id: no notice {args.id!r}", file=sys.stderr)
            return 1
        planned = await planned_classes(service, notice)
        classes = [(s, c) for s, c in planned
                   if (not args.school or s == args.school) and (not args.class_id or c == args.class_id)]  # fmt: skip
        if (args.school or args.class_id) and not classes:
            print("the notice does not address this school or class", file=sys.stderr)
            return 1
        rep = await build_report(service, roster, notice, classes)
        per_class = bool(args.school) or len(classes) <= LARGE_REPORT
        print(report.render_table(rep, per_class=per_class))
        if not per_class:
            print(f"({len(classes)} classes: add --school S to see a school's classes)")
        try:
            if args.csv:
                _write(args.csv, report.report_csv(rep))
                print(f"CSV written to {args.csv}")
            if args.missing or args.missing_csv:
                [one] = rep.classes
                if args.missing:
                    print()
                    if args.names:
                        print(report.render_missing(one, rep.schools[0].name))
                    else:
                        print(report.render_missing_counts(one, rep.schools[0].name))
                        if one.missing:
                            print("(names: add --names; they are for the class teacher only)")
                if args.missing_csv:
                    _write(args.missing_csv, report.missing_csv([one]))
                    print(f"missing list written to {args.missing_csv}")
        except OSError as exc:
            print(f"{exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        return 0

    from bot.cliutil import run_with_redis as _run

    return _run(cfg, work)


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)
