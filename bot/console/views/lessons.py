"""Lessons in the console: the catalog, a lesson's full text and quiz (with the answers, for staff),
and the rates of the viewer's district, school or classes (参学率, 参考率, 合格率), from
``bot.lessons.report.build_report`` like ``bot report lessons``. No child's score is ever shown.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from aiohttp import web

from bot.console import charts
from bot.console.scope import Place, place_for
from bot.console.views import slots
from bot.console.web import CONSOLE, Console, Viewer, forbidden, message, not_found, render

if TYPE_CHECKING:
    from bot.lessons.content import Library

_LESSON_ID = re.compile(r"^[a-z0-9-]{1,64}$")


def _library(c: Console) -> Library | None:
    library: Library | None = c.ctx.services.get("lesson_library")
    return library


async def lessons_page(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    from bot.lessons.content import BANDS, TOPICS

    c = request.config_dict[CONSOLE]
    library = _library(c)
    if library is None:
        return message(503, "安全课未启用", "安全课还没有在这个系统里启用。", viewer=viewer)
    place = await place_for(c, viewer, request.query.get("school", ""), request.query.get("class", ""))
    if place is None:
        return forbidden(viewer)
    topic = request.query.get("topic", "")
    topic = topic if topic in TOPICS else ""
    # A district's rates read every student's results (~40,000): the page comes at once and they
    # follow (console.js loads them), unless they are at hand already or asked for in the page.
    later = place.kind == "district" and not slots.has_lesson_report(place, topic) and request.query.get("full") != "1"
    rates = {} if later else await _rates(c, place, topic)
    catalog: dict[str, list[object]] = {}
    for lesson in library:
        catalog.setdefault(lesson.topic, []).append(lesson)
    query = urlencode({k: v for k, v in (("topic", topic),) if v})
    return c.page(viewer, "lessons.html", nav="lessons", title="安全课", place=place, topic=topic, topics=TOPICS,
                  bands=BANDS, catalog=catalog, later=later, query=query, **rates)  # fmt: skip


async def _rates(c: Console, place: Place, topic: str) -> dict[str, Any]:
    from bot.lessons.content import TOPICS

    report = await slots.lesson_report(c, place, topic)
    by_topic = charts.bar_chart(
        [charts.Point(TOPICS[t][:4], r.pct(r.started), TOPICS[t]) for t, r in report.by_topic.items() if r.students],
        label=f"{place.label}：各主题参学率",
    )
    rows = report.schools if place.kind == "district" else report.classes
    return {"report": report, "by_topic": by_topic, "rows": rows}


async def lesson_rates(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    """The rates part of the lessons page, alone (what console.js puts into the page)."""
    from bot.lessons.content import TOPICS

    c = request.config_dict[CONSOLE]
    if _library(c) is None:
        return message(503, "安全课未启用", "安全课还没有在这个系统里启用。", viewer=viewer)
    place = await place_for(c, viewer, request.query.get("school", ""), request.query.get("class", ""))
    if place is None:
        return forbidden(viewer)
    topic = request.query.get("topic", "")
    topic = topic if topic in TOPICS else ""
    return render("_lesson_rates.html", place=place, topic=topic, topics=TOPICS, viewer=viewer,
                  **await _rates(c, place, topic))  # fmt: skip


async def lesson_page(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    c = request.config_dict[CONSOLE]
    library = _library(c)
    lesson_id = request.match_info["id"]
    lesson = library.get(lesson_id) if library is not None and _LESSON_ID.match(lesson_id) else None
    if lesson is None:
        return not_found(viewer)
    return c.page(viewer, "lesson.html", nav="lessons", title=lesson.title, lesson=lesson)


def register(c: Console) -> None:
    c.get("/lessons", lessons_page)
    c.get("/lessons/rates", lesson_rates)
    c.get("/lessons/{id}", lesson_page)
