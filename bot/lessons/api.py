"""``GET /api/lessons/report``: the three lesson rates, scoped by the caller's API token.

Authentication and the error format come from ``bot/web/api.py`` (``Authorization: Bearer <token>``;
tokens act as a school or a district administrator). The scope asked for is checked with
``authz.can(subject, "view", ReportObj(scope))``: a school admin sees only their school, a district
admin only their district. Teachers see their own classes in the chat (「学习情况」), not here.

Query parameters (all optional):

=============  ======================================================================================
``district``   district id (default: the token's district)
``school``     school id (default for a school admin: their school; a district admin: every school)
``class``      class id such as ``3-2`` (needs ``school``)
``topic``      a topic id (``drowning``, ``traffic``, ...); default every topic
``since``      ``YYYY-MM-DD``: only what happened since that local day; default from the start
``until``      ``YYYY-MM-DD``: only what happened up to that local day, inclusive; default up to now
``per_class``  ``0`` leaves out the class rows (schools and districts only)
``format``     ``json`` (default) or ``csv`` (UTF-8 with BOM, columns in ``report.CSV_COLUMNS``)
=============  ======================================================================================

JSON: ``{"topic", "topic_name", "since", "until", "totals", "by_topic", "districts": [{"district", "rates",
"schools": [{"school", "name", "rates", "classes": [{"class_id", "label", "rates"}]}]}]}`` where each
``rates`` is ``{"students", "started", "finished", "passed", "participation_pct", "quiz_taken_pct",
"passed_pct"}`` (percentages of students, one decimal; null when there are no students). Counts only:
never a child's name or score.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from bot.lessons.report import ReportError, build_report, parse_period, report_csv, report_json
from bot.roster.authz import ReportObj, Scope, can
from bot.roster.store import RosterStore
from bot.store.redis import Redis
from bot.web.api import ApiError, install, invalid, json_response, subject

PATH = "/api/lessons/report"
PARAMS = frozenset({"district", "school", "class", "topic", "since", "until", "per_class", "format"})


@dataclass(frozen=True, slots=True)
class _Deps:
    redis: Redis
    roster: RosterStore


DEPS: web.AppKey[_Deps] = web.AppKey("lessons_api", _Deps)


async def lessons_report(request: web.Request) -> web.Response:
    caller = subject(request)
    query = request.query
    unknown = sorted(set(query) - PARAMS)
    if unknown:
        raise invalid(unknown[0], f"unknown parameter; use {', '.join(sorted(PARAMS))}")
    district = query.get("district", "") or caller.district
    school = query.get("school", "") or (caller.school if caller.role == "school_admin" else "")
    class_id = query.get("class", "")
    fmt = query.get("format", "json")
    if fmt not in ("json", "csv"):
        raise invalid("format", "json or csv")
    if class_id and not school:
        raise invalid("class", "a class needs its school")
    if not can(caller, "view", ReportObj(Scope(district, school, class_id=class_id))):
        raise ApiError(403, "this token may not see lesson reports for that scope")
    deps = request.app[DEPS]
    try:
        since, until = parse_period(query.get("since", ""), query.get("until", ""))
        report = await build_report(
            deps.redis,
            deps.roster,
            district=district,
            school=school,
            class_id=class_id,
            topic=query.get("topic", ""),
            since=since,
            until=until,
        )
    except ReportError as exc:
        raise invalid(exc.field, exc.message) from None
    if fmt == "csv":
        response = web.Response(body=report_csv(report).encode("utf-8"), content_type="text/csv", charset="utf-8")
        response.headers["Content-Disposition"] = 'attachment; filename="lessons-report.csv"'
        return response
    return json_response(report_json(report, per_class=query.get("per_class", "1") != "0"))


def register(app: web.Application, redis: Redis, roster: RosterStore) -> None:
    install(app, redis)
    app[DEPS] = _Deps(redis, roster)
    app.router.add_get(PATH, lessons_report)
