"""Parts of the dashboard other capabilities fill: what campaigns send next, lesson rates.

Each is read through its capability's public functions (``CampaignRunner.preview``,
``bot.lessons.report.build_report``) and kept per process for a short while: both read many
schools' rosters, and the answer changes slowly. A capability that is not installed leaves its
slot saying so instead of failing the page.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bot import clock
from bot.roster.model import grade_of

if TYPE_CHECKING:
    from bot.campaigns.runner import CampaignRunner
    from bot.console.scope import Place
    from bot.console.web import Console, Viewer
    from bot.lessons.report import LessonReport
    from bot.roster.model import School

log = logging.getLogger(__name__)

UPCOMING_TTL = 60.0
LESSONS_TTL = 120.0
_cache: dict[str, tuple[float, Any]] = {}


def _cached(key: str, ttl: float) -> tuple[bool, Any]:
    hit = _cache.get(key)
    if hit is not None and time.monotonic() - hit[0] < ttl:
        return True, hit[1]
    return False, None


def _keep(key: str, value: Any) -> None:
    if len(_cache) > 500:
        _cache.clear()
    _cache[key] = (time.monotonic(), value)


def forget() -> None:
    """Drop cached slots (after a campaign is switched or edited)."""
    _cache.clear()


@dataclass
class Upcoming:
    available: bool
    entries: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _reaches(firing: Any, place: Place) -> bool:
    if place.kind == "district":
        return bool(firing.district == place.district)
    wanted = [(s, c) for s, c in place.classes] if place.kind == "mine" else [(place.school, place.class_id)]
    grades = firing.campaign.who.grades
    for school, cid in wanted:
        if school not in firing.schools:
            continue
        if not cid or not grades or grade_of(cid) in grades:
            return True
    return False


async def upcoming(c: Console, viewer: Viewer, place: Place, *, days: int) -> Upcoming:
    """The campaign notices that reach the place in the next ``days`` days: the scheduler's own plan
    (``plan_firings``) for the place's schools only, rendered as the runner renders them; with the
    calendar page's notes (``calendar_notes``) for those days: holidays that are computed, and the
    schools without a calendar region among those the viewer manages."""
    runner = c.ctx.services.get("campaigns")
    if runner is None:
        return Upcoming(False)
    from bot.console.views.campaigns import calendar_notes, manages_school

    now = clock.now()
    start, end = clock.local(now).date(), clock.local(now + days * 86400).date()
    key = f"up|{days}|{place.key}|{start}"
    hit, value = _cached(key, UPCOMING_TTL)
    if hit:
        entries, mine = value
    else:
        entries, mine = await _upcoming_entries(runner, place, now, days)
        _keep(key, (entries, mine))
    managed = {sid: s for sid, s in mine.items() if manages_school(viewer.subject, s)}
    return Upcoming(True, entries, calendar_notes(runner.catalog.calendar, start, end, managed))


async def _upcoming_entries(
    runner: CampaignRunner, place: Place, now: float, days: int
) -> tuple[list[dict[str, Any]], dict[str, School]]:
    from bot.campaigns.runner import plan_firings

    schools = await runner.roster.schools()
    mine = {sid: s for sid, s in schools.items()
            if s.district == place.district and (place.kind == "district" or sid in place.schools)}  # fmt: skip
    start, end = clock.local(now).date(), clock.local(now + days * 86400).date()
    firings = plan_firings(runner.catalog, await runner.campaigns(), mine, await runner.store.switches(), start, end)
    entries = []
    for firing in firings:
        if not now < firing.ts <= now + days * 86400 or not _reaches(firing, place):
            continue
        what = firing.campaign.what
        entries.append({"at": firing.at, "name": firing.campaign.name, "title": runner.render(firing, schools).title,
                        "schools": len(firing.schools), "mode": what.mode, "urgent": what.urgent})  # fmt: skip
    return entries, mine


@dataclass
class LessonSlot:
    available: bool
    rates: Any = None  # bot.lessons.report.Rates
    classes: list[Any] = field(default_factory=list)  # ClassRates of the place (school and class places)
    heavy: bool = False  # a district: shown on the lessons page, not computed on every dashboard


async def lesson_rates(c: Console, viewer: Viewer, place: Place) -> LessonSlot:
    if "lesson_store" not in c.ctx.services:
        return LessonSlot(False)
    if place.kind == "district":
        return LessonSlot(True, heavy=True)
    rep = await lesson_report(c, place)
    return LessonSlot(True, rep.totals, rep.classes)


def has_lesson_report(place: Place, topic: str = "") -> bool:
    return _cached(f"les|{topic}|{place.key}", LESSONS_TTL)[0]


async def lesson_report(c: Console, place: Place, topic: str = "") -> LessonReport:
    """The lesson rates of a place (kept :data:`LESSONS_TTL` seconds: a district reads every student)."""
    from bot.lessons.report import build_report

    key = f"les|{topic}|{place.key}"
    hit, value = _cached(key, LESSONS_TTL)
    if hit:
        return value  # type: ignore[no-any-return]
    if place.kind == "mine":
        rep = await build_report(c.redis, c.roster, classes=sorted(place.classes), topic=topic)
    else:
        rep = await build_report(
            c.redis, c.roster, district=place.district, school=place.school, class_id=place.class_id, topic=topic
        )
    _keep(key, rep)
    return rep
