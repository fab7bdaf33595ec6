"""``bot campaigns list | preview | enable | disable | render | save | remove | check``.

Registered through ``bot.cli.EXTRA_COMMANDS``; nothing heavy is imported until a command runs.
Exit codes: 0 done; 1 the request was wrong (unknown campaign or school); 2 a campaign file is
invalid or Redis could not be reached. Never a traceback: every failure is one line saying what to do.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections.abc import Awaitable, Callable, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.config import Config

if TYPE_CHECKING:
    from bot.campaigns.model import Campaign
    from bot.campaigns.runner import CampaignRunner, Preview
    from bot.store.redis import Redis

    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]


def add_commands(sub: SubParsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("campaigns", parents=[common], help="seasonal campaigns: list, preview, enable, disable, render")
    do = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    c = do.add_parser("list", parents=[common], help="campaigns, their state and next firing; recent missed firings")
    c.add_argument("--json", action="store_true", help="one JSON object")
    c.set_defaults(func=_cmd_list)

    c = do.add_parser("preview", parents=[common], help="every firing in the next N days, as it will be sent")
    c.add_argument("--days", type=int, default=60, help="days ahead (default 60, at most 400)")
    c.add_argument("--school", default="", help="only firings that reach this school (its student count)")
    c.add_argument("--district", default="", help="only this district")
    c.add_argument("--campaign", default="", help="only this campaign")
    c.add_argument("--from", dest="start", default="", metavar="YYYY-MM-DD", help="start on this day (default: now)")
    c.add_argument("--brief", action="store_true", help="one line per firing, without the full text")
    c.add_argument("--json", action="store_true", help="one JSON object")
    c.set_defaults(func=_cmd_preview)

    for name, on in (("enable", True), ("disable", False)):
        c = do.add_parser(
            name,
            parents=[common],
            help=f"switch a campaign {'on' if on else 'off'} (everywhere, or for a school or district)",
        )
        c.add_argument("id", metavar="ID")
        where = c.add_mutually_exclusive_group()
        where.add_argument("--school", default="", help="only for this school")
        where.add_argument("--district", default="", help="only for this district")
        c.add_argument("--reset", action="store_true", help="remove the switch (back to the file's setting)")
        c.set_defaults(func=_cmd_switch, on=on)

    c = do.add_parser("render", parents=[common], help="show a campaign's card fields and full text")
    c.add_argument("id", metavar="ID")
    c.add_argument("--date", default="", metavar="YYYY-MM-DD", help="as on this day (default: its next firing)")
    c.add_argument("--school", default="", help="as for this school (default: the first school it reaches)")
    c.set_defaults(func=_cmd_render)

    c = do.add_parser("save", parents=[common], help="create or replace an admin campaign from a TOML file")
    c.add_argument("file", metavar="FILE")
    c.add_argument("--district", default="", help="it only ever reaches this district")
    c.add_argument("--school", default="", help="it only ever reaches this school")
    c.set_defaults(func=_cmd_save)

    c = do.add_parser("remove", parents=[common], help="delete an admin campaign")
    c.add_argument("id", metavar="ID")
    c.set_defaults(func=_cmd_remove)

    c = do.add_parser("check", parents=[common], help="validate schedules/ and templates/campaigns/ (no Redis)")
    c.set_defaults(func=_cmd_check)


def _run(cfg: Config, work: Callable[[CampaignRunner], Awaitable[int]]) -> int:
    from bot.cliutil import run_with_redis
    from bot.config import ConfigError

    async def main(r: Redis) -> int:
        from bot.campaigns.runner import build_runner

        return await work(build_runner(r, cfg))

    try:
        return run_with_redis(cfg, main)
    except ConfigError as exc:
        print(exc.reason, file=sys.stderr)
        return 2


def _local_midnight(text: str) -> float:
    from bot.campaigns.rules import shanghai

    day = date.fromisoformat(text)
    return datetime(day.year, day.month, day.day, tzinfo=shanghai()).timestamp()


# -- list ------------------------------------------------------------------------------------------------
def _cmd_list(cfg: Config, args: argparse.Namespace) -> int:
    async def work(runner: CampaignRunner) -> int:
        from bot import clock

        now = clock.now()
        today = clock.local(now).date()
        campaigns = await runner.campaigns()
        switches = await runner.store.switches()
        firings = await runner.firings(today, today + timedelta(days=366), campaigns=campaigns)
        nexts: dict[str, datetime] = {}
        for f in firings:
            if f.ts > now:
                nexts.setdefault(f.campaign.id, f.at)
        recent = await runner.store.recent(now - 30 * 86400, now)
        warnings = runner.warnings(today, today + timedelta(days=366))
        if args.json:
            print(
                json.dumps(
                    {
                        "campaigns": [
                            {
                                "id": c.id,
                                "name": c.name,
                                "source": c.source,
                                "enabled": c.enabled,
                                "overrides": switches.overrides(c.id),
                                "next": nexts[c.id].isoformat() if c.id in nexts else None,
                            }
                            for c in campaigns
                        ],
                        "recent": [r.to_json() for r in recent],
                        "warnings": warnings,
                    },
                    ensure_ascii=False,
                )
            )
            return 0
        rows = [("id", "name", "source", "state", "next firing")]
        for c in campaigns:
            overrides = switches.overrides(c.id)
            state = "on" if overrides.get("*", c.enabled) else "off"
            off = sorted(k for k, v in overrides.items() if k != "*" and not v)
            on = sorted(k for k, v in overrides.items() if k != "*" and v)
            if off:
                state += f", off for {len(off)} ({', '.join(off[:3])}{'…' if len(off) > 3 else ''})"
            if on:
                state += f", on for {len(on)}"
            nxt = f"{nexts[c.id]:%Y-%m-%d %H:%M}" if c.id in nexts else ("on warnings" if c.when is None else "-")
            rows.append((c.id, c.name, c.source, state, nxt))
        _print_table(rows)
        late = [r for r in recent if r.status in ("missed", "failed")]
        print(f"\nfirings in the last 30 days: {len(recent)} ({len(late)} missed or failed)")
        for r in late:
            due = datetime.fromtimestamp(r.due, clock.zone())
            print(f"  {r.status.upper():7} {due:%Y-%m-%d %H:%M}  {r.id}  {r.error}")
        for line in warnings:
            print(f"WARNING: {line}")
        return 0

    return _run(cfg, work)


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(_width(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell + " " * (w - _width(cell)) for cell, w in zip(r, widths, strict=True)).rstrip())


def _width(text: str) -> int:
    """Terminal columns: CJK characters take two."""
    return sum(2 if ord(ch) > 0x2E80 else 1 for ch in text)


# -- preview -----------------------------------------------------------------------------------------------
def format_preview(preview: Preview, *, brief: bool = False) -> list[str]:
    """The preview as lines for people: one heading per firing, then the card and (unless brief) the text."""
    lines = [f"{len(preview.entries)} firing(s) from {preview.start:%Y-%m-%d %H:%M} to {preview.end:%Y-%m-%d %H:%M}"]
    for e in preview.entries:
        f, what = e.firing, e.firing.campaign.what
        flags = [what.mode] + (["urgent"] if what.urgent else []) + ([f"lesson {e.lesson}"] if e.lesson else [])
        lines.append(
            f"{f.at:%Y-%m-%d %a %H:%M}  {f.campaign.id:<24} {f.district}: {len(f.schools)} school(s), "
            f"{e.students} students  【{e.rendered.title}】 {e.rendered.sender}  ({', '.join(flags)})"
        )
        if not brief:
            lines += ["    " + line if line else "" for line in e.rendered.body.splitlines()]
            lines.append("")
    lines += [f"WARNING: {w}" for w in preview.warnings]
    return lines


def _cmd_preview(cfg: Config, args: argparse.Namespace) -> int:
    from bot.campaigns.runner import PREVIEW_DAYS_MAX

    if not 1 <= args.days <= PREVIEW_DAYS_MAX:
        print(f"days: from 1 to {PREVIEW_DAYS_MAX}", file=sys.stderr)
        return 1
    try:
        now = _local_midnight(args.start) if args.start else None
    except ValueError:
        print(f"from: {args.start!r} is not a date like 2026-05-01", file=sys.stderr)
        return 1

    async def work(runner: CampaignRunner) -> int:
        if args.school and await runner.roster.school(args.school) is None:
            print(f"school: unknown school {args.school!r} (see bot import schools FILE)", file=sys.stderr)
            return 1
        if args.campaign and await runner.campaign(args.campaign) is None:
            print(f"campaign: unknown campaign {args.campaign!r} (see bot campaigns list)", file=sys.stderr)
            return 1
        preview = await runner.preview(
            args.days, now=now, school=args.school, district=args.district, campaign=args.campaign
        )
        if args.json:
            print(
                json.dumps(
                    {
                        "from": preview.start.isoformat(),
                        "to": preview.end.isoformat(),
                        "firings": [e.to_json() for e in preview.entries],
                        "warnings": preview.warnings,
                    },
                    ensure_ascii=False,
                )
            )
        else:
            print("\n".join(format_preview(preview, brief=args.brief)))
        return 0

    return _run(cfg, work)


# -- enable / disable ------------------------------------------------------------------------------------
def _cmd_switch(cfg: Config, args: argparse.Namespace) -> int:
    async def work(runner: CampaignRunner) -> int:
        campaign = await runner.campaign(args.id)
        if campaign is None:
            print(f"id: unknown campaign {args.id!r} (see bot campaigns list)", file=sys.stderr)
            return 1
        if args.school:
            school = await runner.roster.school(args.school)
            if school is None:
                print(f"school: unknown school {args.school!r}", file=sys.stderr)
                return 1
            if not campaign.covers(school):
                print(f"school: campaign {args.id} does not reach {args.school} (see its who)", file=sys.stderr)
                return 1
        where = (
            f"school {args.school}" if args.school else f"district {args.district}" if args.district else "everywhere"
        )
        if args.reset:
            await runner.store.clear_switch(args.id, school=args.school, district=args.district)
            print(f"{args.id}: switch for {where} removed (the file's setting applies)")
        else:
            await runner.store.switch(args.id, args.on, school=args.school, district=args.district)
            print(f"{args.id}: {'enabled' if args.on else 'disabled'} for {where}")
        return 0

    return _run(cfg, work)


# -- render ---------------------------------------------------------------------------------------------------
def _cmd_render(cfg: Config, args: argparse.Namespace) -> int:
    async def work(runner: CampaignRunner) -> int:
        from bot import clock
        from bot.campaigns.model import CampaignError
        from bot.roster.model import School

        campaign = await runner.campaign(args.id)
        if campaign is None:
            print(f"id: unknown campaign {args.id!r} (see bot campaigns list)", file=sys.stderr)
            return 1
        schools = await runner.roster.schools()
        chosen = [s for s in sorted(schools.values(), key=lambda s: s.id) if campaign.covers(s)]
        if args.school:
            chosen = [s for s in chosen if s.id == args.school]
        if not chosen:
            region = next((r.id for r in runner.catalog.calendar.regions()), "demo")
            chosen = [School("sample", "示例学校", "sample", region)]
        school = chosen[0]
        try:
            start = date.fromisoformat(args.date) if args.date else clock.local(clock.now()).date()
        except ValueError:
            print(f"date: {args.date!r} is not a date like 2026-05-01", file=sys.stderr)
            return 1
        switches = await runner.store.switches()
        try:
            result = runner.render_for(campaign, school, schools, start, exact=bool(args.date), switches=switches)
        except CampaignError as exc:
            print(str(exc), file=sys.stderr)
            return 2
        firing, rendered = result.firing, result.rendered
        if campaign.when is not None and not result.scheduled and not args.date:
            print(f"(no firing for {school.id} in the next year; shown as on {start})", file=sys.stderr)
        if args.date:
            # As the preview and the scheduler: on a day a campaign it yields to reaches a school, it
            # sends that school nothing. Say so for every school asked about, before the text.
            ways = runner.giving_way(campaign, chosen, switches, start)
            for line in _giving_way_lines(runner, campaign, ways, start, school=args.school):
                print(line)
        at = firing.at
        print(f"campaign  {campaign.id} ({campaign.name}), as on {at:%Y-%m-%d %H:%M} for {school.name}")
        print(f"title     {rendered.title}  ({len(rendered.title)}/20)")
        print(f"sender    {rendered.sender}  ({len(rendered.sender)}/20)")
        what = campaign.what
        print(f"mode      {what.mode}{' (urgent)' if what.urgent else ''}; lesson {what.lesson_for(at.month) or '-'}")
        if what.question is not None:
            q = what.question
            print(
                f"question  {q.text} "
                + " / ".join(f"{'*' if i == q.answer else ''}{o}" for i, o in enumerate(q.options))
            )
        print()
        print(rendered.body)
        return 0

    return _run(cfg, work)


def _giving_way_lines(
    runner: CampaignRunner, campaign: Campaign, ways: dict[str, tuple[str, ...]], day: date, *, school: str = ""
) -> list[str]:
    """One line per set of campaigns: "on 2026-09-30 drowning gives way to holiday-safety (…) for 2 school(s): …"."""
    by_others: dict[tuple[str, ...], list[str]] = {}
    for school_id, others in sorted(ways.items()):
        by_others.setdefault(others, []).append(school_id)
    lines = []
    for others, ids in by_others.items():
        names = ", ".join(f"{o} ({runner.catalog.builtin[o].name})" for o in others)
        shown = ", ".join(ids[:5]) + (", …" if len(ids) > 5 else "")
        lines.append(
            f"on {day} {campaign.id} gives way to {names} for {len(ids)} school(s) ({shown}): they get that card "
            f"that day and nothing from {campaign.id} (bot campaigns render {others[0]} --date {day}"
            f"{f' --school {school}' if school else ''})"
        )
    if lines:
        lines.append("the text below is what it would have said:")
        lines.append("")
    return lines


# -- save / remove / check --------------------------------------------------------------------------------------
def _cmd_save(cfg: Config, args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        document: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        print(f"{path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        print(f"{path}: invalid TOML: {exc}", file=sys.stderr)
        return 2

    async def work(runner: CampaignRunner) -> int:
        from bot.campaigns.loader import jsonable
        from bot.campaigns.model import CampaignError

        district = args.district
        if args.school:
            school = await runner.roster.school(args.school)
            if school is None:
                print(f"school: unknown school {args.school!r}", file=sys.stderr)
                return 1
            district = school.district
        cid = str(document.get("id", ""))
        if cid in runner.catalog.builtin:
            print(f"id: {cid!r} is a built-in campaign (schedules/{cid}.toml): choose another id", file=sys.stderr)
            return 1
        try:
            campaign = runner.catalog.parse(document, str(path), owner_district=district, owner_school=args.school)
        except CampaignError as exc:
            print(str(exc), file=sys.stderr)
            return 2
        existed = cid in await runner.store.custom_documents()
        await runner.store.save_custom(campaign.id, jsonable(document), district=district, school=args.school)
        done = "replaced" if existed else "created"
        print(f"campaign {campaign.id} {done} (see: bot campaigns preview --campaign {campaign.id})")
        return 0

    return _run(cfg, work)


def _cmd_remove(cfg: Config, args: argparse.Namespace) -> int:
    async def work(runner: CampaignRunner) -> int:
        if args.id in runner.catalog.builtin:
            print(f"id: {args.id!r} is built in: use bot campaigns disable {args.id}", file=sys.stderr)
            return 1
        if not await runner.store.remove_custom(args.id):
            print(f"id: no admin campaign {args.id!r}", file=sys.stderr)
            return 1
        print(f"campaign {args.id} removed")
        return 0

    return _run(cfg, work)


def _cmd_check(cfg: Config, args: argparse.Namespace) -> int:
    from bot.campaigns.calendar import CalendarError
    from bot.campaigns.loader import Catalog
    from bot.campaigns.model import CampaignError

    try:
        catalog = Catalog.load()
    except (CampaignError, CalendarError) as exc:
        print(str(exc), file=sys.stderr)
        return 2
    scheduled = sum(1 for c in catalog.builtin.values() if c.when is not None)
    print(
        f"{len(catalog.builtin)} campaigns ({scheduled} scheduled, {len(catalog.builtin) - scheduled} on warnings), "
        f"{len(catalog.alerts)} warning types, {len(catalog.texts.names())} templates: ok"
    )
    return 0
