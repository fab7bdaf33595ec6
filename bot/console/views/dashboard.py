"""The dashboard of a district, a school, a class or a teacher's classes.

At a glance: the funnel of the latest notices, the confirmation rate of each notice over the last
30 days (an SVG line chart), per school or class for the latest notice (bars), lesson rates, and
what goes out in the next 7 days. Links lead down (district → school → class) within what the
viewer may view.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from bot.console import charts
from bot.console.scope import Place, class_order, classes_in_scope, default_place, place_for, schools_in_scope
from bot.console.stats import NoticeStats, funnel_rows
from bot.console.views import slots
from bot.console.web import CONSOLE, Console, Viewer, day, forbidden
from bot.roster.chat import directory
from bot.roster.model import class_label

RECENT = 20  # notices in the chart
FUNNELS = 3  # notices whose funnel is drawn


async def _below(c: Console, viewer: Viewer, place: Place) -> list[dict[str, str]]:
    """The places one level down: a district's schools, a school's classes, a teacher's classes."""
    if place.kind == "district":
        return [{"label": name, "query": f"school={sid}"} for sid, name in await schools_in_scope(c, viewer)]
    if place.kind == "school":
        return [{"label": class_label(cid), "query": urlencode({"school": place.school, "class": cid})}
                for cid in await classes_in_scope(c, viewer, place.school)]  # fmt: skip
    if place.kind == "mine":
        names = (await directory(c.roster)).names
        return [{"label": f"{names.get(s, s)} {class_label(cid)}", "query": urlencode({"school": s, "class": cid})}
                for s, cid in sorted(place.classes, key=lambda x: (x[0], class_order(x[1])))]  # fmt: skip
    return []


def _parts(latest: NoticeStats, place: Place, names: dict[str, str]) -> list[charts.Point]:
    """The latest notice's confirmation rate per school (district) or per class (school, mine)."""
    if latest.schools:  # a large notice seen whole: counted per school
        rows = sorted(latest.schools, key=lambda s: (names.get(s.school, s.school), s.school))
        return [charts.Point(names.get(s.school, s.school), 100 * s.confirmed / s.targeted if s.targeted else None,
                             names.get(s.school, s.school)) for s in rows]  # fmt: skip
    groups: dict[str, list[int]] = {}
    labels: dict[str, str] = {}
    for r in latest.classes:
        key = r.school if place.kind == "district" else f"{r.school}/{r.class_id}"
        labels[key] = names.get(r.school, r.school) if place.kind == "district" else class_label(r.class_id)
        g = groups.setdefault(key, [0, 0])
        g[0] += r.funnel.confirmed
        g[1] += r.funnel.targeted
    order = sorted(groups, key=lambda k: (k.split("/")[0], class_order(k.split("/")[1]) if "/" in k else (0, 0, "")))
    return [
        charts.Point(labels[k], 100 * groups[k][0] / groups[k][1] if groups[k][1] else None, labels[k]) for k in order
    ]


async def dashboard(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    c = request.config_dict[CONSOLE]
    place = await place_for(c, viewer, request.query.get("school", ""), request.query.get("class", ""))
    if place is None:
        return forbidden(viewer)
    default = default_place(viewer.subject, await directory(c.roster))
    notices = await c.stats.notices(viewer, place, days=30, limit=RECENT)
    rows = [await c.stats.stats(viewer, n, place) for n in notices]
    asked = [r for r in rows if r.notice.draft.mode != "none"]
    line = charts.line_chart(
        [charts.Point(day(r.notice.created), r.confirm_pct, r.notice.draft.title) for r in reversed(asked)],
        label=f"{place.label}：近30天各条通知的确认率",
    )
    funnels: list[dict[str, Any]] = []
    for r in rows[:FUNNELS]:
        stages = funnel_rows(r.funnel, r.notice.draft.mode)
        chart = charts.funnel_chart([(s["label"], s["value"], s["pct"]) for s in stages], label=r.notice.draft.title)
        funnels.append({"stats": r, "chart": chart})
    parts = None
    if asked and place.kind in ("district", "school", "mine"):
        names = (await directory(c.roster)).names
        latest = await c.stats.stats(viewer, asked[0].notice, place, per_school=True)
        points = _parts(latest, place, names)
        if len(points) > 1:
            parts = charts.bar_chart(points[:60], label=f"「{asked[0].notice.draft.title}」的确认率")
    return c.page(
        viewer, "dashboard.html", nav="dashboard", title="概览", place=place, funnels=funnels, line=line,
        parts=parts, latest=asked[0] if asked else None, below=await _below(c, viewer, place),
        upcoming=await slots.upcoming(c, viewer, place, days=7), lessons=await slots.lesson_rates(c, viewer, place),
        narrowed=bool(request.query.get("school")) and place.key != default.key,
    )  # fmt: skip


def register(c: Console) -> None:
    c.get("", dashboard)
    c.get("/", dashboard)
