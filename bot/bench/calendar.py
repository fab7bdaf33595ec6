"""``bot bench calendar``: a year of campaign firings for a city's schools, computed within 1 s.

A synthetic city (``--schools`` schools over every calendar region of ``schedules/calendar/terms.toml``,
about 30 schools per district; ``--own-days`` of them with days off of their own, so they are
computed apart from their region) and the built-in campaigns. The timed part is exactly what the
runner and the preview do: :func:`bot.campaigns.runner.plan_firings` over the whole year, on a
freshly loaded calendar (no cache warm from an earlier run). Then every notice of the year is
rendered once (its card fields and full text), timed apart. No Redis: planning is pure.
"""

from __future__ import annotations

import argparse
from datetime import date

from bot.bench.core import Figure, Figures, at_most, benchmark, timer


def _options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--schools", type=int, default=1300, help="schools in the synthetic city (default 1300)")
    p.add_argument("--per-district", type=int, default=30, help="schools per district (default 30)")
    p.add_argument("--own-days", type=int, default=0, help="schools with days off of their own (default 0)")
    p.add_argument("--year", type=int, default=0, help="the year planned (default: this year)")
    p.add_argument("--limit", type=float, default=1.0, help="target seconds for the year's firings (default 1)")


@benchmark("calendar", help="a year's campaign firings for 1,300 schools (target ≤ 1 s)", options=_options)
async def calendar(args: argparse.Namespace) -> Figures:
    from dataclasses import replace

    from bot.campaigns.calendar import Calendar, DayOff, Overrides
    from bot.campaigns.loader import Catalog
    from bot.campaigns.runner import plan_firings
    from bot.campaigns.store import Switches
    from bot.campaigns.texts import context
    from bot.paths import ROOT
    from bot.roster.model import School

    year = args.year or date.today().year
    with timer() as t_load:
        catalog = Catalog.load(ROOT)
    regions = [r.id for r in catalog.calendar.regions()]
    schools = {
        f"s{i:05d}": School(
            f"s{i:05d}", f"第{i}学校", f"d{i // max(1, args.per_district):03d}", regions[i % len(regions)]
        )
        for i in range(args.schools)
    }
    fresh = Calendar.load(ROOT)  # cold caches: nothing computed for this calendar yet
    if args.own_days:
        own = {
            sid: (DayOff("校运会", date(year, 10, 15), date(year, 10, 16)),) for sid in list(schools)[: args.own_days]
        }
        fresh = Calendar(fresh.regions(), replace(Overrides(), school_days_off=own))
    catalog.calendar = fresh
    campaigns = list(catalog.builtin.values())
    with timer() as t_plan:
        firings = plan_firings(catalog, campaigns, schools, Switches({}), date(year, 1, 1), date(year, 12, 31))
    with timer() as t_render:
        for firing in firings:
            members = [schools[s] for s in firing.schools]
            ctx = context(catalog.calendar, firing.campaign, firing.at, firing.region, members)
            catalog.template(firing.campaign).render(ctx)
    school_firings = sum(len(f.schools) for f in firings)
    return {
        "year_firings_s": at_most(t_plan(), "s", args.limit),
        "notices": Figure(len(firings), "notices"),
        "school_firings": Figure(school_firings, "school-firings"),
        "schools": Figure(len(schools), "schools"),
        "campaigns": Figure(sum(1 for c in campaigns if c.when is not None), "campaigns"),
        "render_all_s": Figure(t_render(), "s"),
        "catalog_load_s": Figure(t_load(), "s"),
    }
