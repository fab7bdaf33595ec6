"""``bot admin create|passwd|list``: console accounts (next to ``bot admin token …``).

    bot admin create --username U --role district_admin --district D
    bot admin create --username U --role school_admin --school S          (district from the roster)
    bot admin create --username U --role teacher --school S --class 3-2 [--class 3-3] [--subject-class 4-1]
    bot admin passwd --username U          (ends the account's sessions and clears a login lockout)
    bot admin list

The password is asked twice on the terminal (never echoed), or read from one line of standard input
with ``--password-stdin`` (for scripts). Exit codes: 0 done; 1 no such account; 2 a value is wrong
(the message names the option) or Redis cannot be reached. Never a traceback.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import TYPE_CHECKING

from bot.config import Config

if TYPE_CHECKING:
    from bot.store.redis import Redis

ROLE_CHOICES = ("district_admin", "school_admin", "teacher")


def _admin_group(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """The sub-commands of ``bot admin`` (made by the API tokens' commands, or here if they are absent)."""
    admin = sub.choices.get("admin")
    if admin is None:
        admin = sub.add_parser("admin", parents=[common], help="administration: console accounts, API tokens")
        return admin.add_subparsers(dest="what", required=True, metavar="WHAT")
    for action in admin._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return admin.add_subparsers(dest="what", required=True, metavar="WHAT")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    """Registered through ``bot.cli.EXTRA_COMMANDS`` (after the API tokens' ``admin`` group)."""
    what = _admin_group(sub, common)
    c = what.add_parser("create", parents=[common], help="create a console account (asks for the password)")
    c.add_argument("--username", required=True, help="2–32 lowercase letters, digits, '.', '_' or '-'")
    c.add_argument("--role", required=True, choices=ROLE_CHOICES)
    c.add_argument("--district", default="", help="district id (taken from the roster for a school's accounts)")
    c.add_argument("--school", default="", help="school id (school_admin, teacher)")
    c.add_argument("--class", dest="classes", action="append", default=[], metavar="GRADE-CLASS",
                   help="a class the teacher leads (班主任), e.g. 3-2; repeat for several")  # fmt: skip
    c.add_argument("--subject-class", dest="subject_classes", action="append", default=[], metavar="GRADE-CLASS",
                   help="a class the teacher only teaches (view only); repeat for several")  # fmt: skip
    c.add_argument("--password-stdin", action="store_true", help="read the password from one line of stdin")
    c.set_defaults(func=_cmd_create)

    p = what.add_parser("passwd", parents=[common], help="set a console account's password; ends its sessions")
    p.add_argument("--username", required=True)
    p.add_argument("--password-stdin", action="store_true", help="read the password from one line of stdin")
    p.set_defaults(func=_cmd_passwd)

    ls = what.add_parser("list", parents=[common], help="console accounts and their scope (never a password)")
    ls.set_defaults(func=_cmd_list)


def _password(args: argparse.Namespace) -> str | None:
    if args.password_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        print("password: no terminal to ask on; use --password-stdin", file=sys.stderr)
        return None
    first = getpass.getpass("New password: ")
    if getpass.getpass("Repeat it: ") != first:
        print("password: the two entries differ", file=sys.stderr)
        return None
    return first


def _cmd_create(cfg: Config, args: argparse.Namespace) -> int:
    from bot.cliutil import run_with_redis as _run
    from bot.console.accounts import AccountError, AccountStore, check_new_password, check_scope, normalise_username
    from bot.roster.model import TeachRef
    from bot.roster.store import RosterStore

    username = normalise_username(args.username)
    classes = tuple(TeachRef(args.school, cid, "c") for cid in args.classes)
    classes += tuple(TeachRef(args.school, cid, "s") for cid in args.subject_classes if cid not in args.classes)

    async def work(r: Redis) -> int:
        district, school = args.district, args.school
        if school:
            known = await RosterStore(r).school(school)
            if known is None:
                print(f"school: unknown school {school!r} (see bot import schools FILE)", file=sys.stderr)
                return 2
            if district and district != known.district:
                print(f"district: school {school} is in district {known.district}, not {district}", file=sys.stderr)
                return 2
            district = known.district
            existing = await RosterStore(r).classes(school)
            missing = [t.class_id for t in classes if t.class_id not in existing]
            if missing:
                print(f"class: school {school} has no class {', '.join(missing)} (bot classes codes --school {school})",
                      file=sys.stderr)  # fmt: skip
                return 2
        try:
            check_scope(args.role, district, school, classes)
            if await AccountStore(r).get(username) is not None:
                raise AccountError("username", f"{username!r} is taken (bot admin list)")
        except AccountError as exc:
            print(f"{exc.field}: {exc.message}", file=sys.stderr)
            return 2
        password = _password(args)
        if password is None:
            return 2
        try:
            check_new_password(password, username)
            account = await AccountStore(r).create(username, password, args.role, district=district, school=school,
                                                   classes=classes)  # fmt: skip
        except AccountError as exc:
            print(f"{exc.field}: {exc.message}", file=sys.stderr)
            return 2
        print(f"account {account.username!r}: {account.role} of {account.scope}. Sign in at "
              f"{cfg.server.base_url()}/console")  # fmt: skip
        return 0

    return _run(cfg, work)


def _cmd_passwd(cfg: Config, args: argparse.Namespace) -> int:
    from bot.cliutil import run_with_redis as _run
    from bot.console.accounts import AccountError, AccountStore, check_new_password, normalise_username
    from bot.console.sessions import SessionStore
    from bot.console.throttle import LoginThrottle

    username = normalise_username(args.username)

    async def work(r: Redis) -> int:
        store = AccountStore(r)
        if await store.get(username) is None:
            print(f"username: no account {username!r} (bot admin list)", file=sys.stderr)
            return 1
        password = _password(args)
        if password is None:
            return 2
        try:
            check_new_password(password, username)
            await store.set_password(username, password)
        except AccountError as exc:
            print(f"{exc.field}: {exc.message}", file=sys.stderr)
            return 2
        ended = await SessionStore(r).end_user(f"acct:{username}")
        await LoginThrottle(r).succeeded(username)
        print(f"password of {username!r} changed; {ended} session(s) ended, login lockout cleared")
        return 0

    return _run(cfg, work)


def _cmd_list(cfg: Config, args: argparse.Namespace) -> int:
    from bot import clock
    from bot.cliutil import run_with_redis as _run
    from bot.console.accounts import AccountStore

    async def work(r: Redis) -> int:
        accounts = await AccountStore(r).list()
        if not accounts:
            print("no console accounts (bot admin create --username U --role ROLE …)")
            return 0
        rows = [("username", "role", "scope", "password set")]
        for a in accounts:
            rows.append((a.username, a.role, a.scope, clock.fmt(a.updated) if a.updated else ""))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        return 0

    return _run(cfg, work)
