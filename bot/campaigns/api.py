"""The campaigns JSON API (for the console and scripts), authenticated by API tokens (``bot/web/api.py``).

    GET  /api/campaigns                      campaigns, their state in the caller's scope, the next
                                             firing, recent firings (missed ones included), warnings
    GET  /api/campaigns/preview?days=60&school=S&campaign=ID
                                             every firing in the next N days: time, audience size,
                                             the rendered card fields and full text
    GET  /api/campaigns/{id}/render?school=S&date=YYYY-MM-DD
                                             one campaign's card fields and full text as a school of
                                             the caller's gets it: its firing on that day, or its next
    POST /api/campaigns                      create or replace one of the caller's own campaigns
                                             (the same document as schedules/*.toml, as JSON)
    POST /api/campaigns/{id}/enable          switch a campaign on / off for the caller's district,
    POST /api/campaigns/{id}/disable         or for one school (body ``{"school": "S"}``)
    POST /api/alerts                         an external warning: ``{type, level, regions, valid_until, id?}``
    GET  /api/alerts                         recent warnings and what they fired

A district administrator acts on their district, a school administrator on their school
(``authz.can(subject, "manage", ...)``); a campaign made through the API only ever reaches its
owner's district (or school), whatever its ``who`` says.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any, Final

from aiohttp import web

from bot import clock
from bot.campaigns.alerts import AlertError, AlertService, parse_alert
from bot.campaigns.model import Campaign, CampaignError
from bot.campaigns.runner import PREVIEW_DAYS_MAX, CampaignRunner, plan_firings
from bot.campaigns.store import Switches, scope_key
from bot.roster.authz import DistrictObj, SchoolObj, Subject, can
from bot.roster.model import School
from bot.store.redis import Redis
from bot.web import api as web_api
from bot.web.api import ApiError, invalid, json_response, read_json, subject

RUNNER: web.AppKey[CampaignRunner] = web.AppKey("campaign_runner", CampaignRunner)
ALERTS: web.AppKey[AlertService] = web.AppKey("campaign_alerts", AlertService)
RECENT_DAYS: Final = 60  # firings shown by GET /api/campaigns
NEXT_DAYS: Final = 366


def install(app: web.Application, runner: CampaignRunner, redis: Redis) -> None:
    web_api.install(app, redis)
    app[RUNNER] = runner
    app[ALERTS] = AlertService(runner)
    app.router.add_get("/api/campaigns", list_campaigns)
    app.router.add_get("/api/campaigns/preview", preview)
    app.router.add_get("/api/campaigns/{id}/render", render)
    app.router.add_post("/api/campaigns", save_campaign)
    app.router.add_post("/api/campaigns/{id}/enable", enable)
    app.router.add_post("/api/campaigns/{id}/disable", disable)
    app.router.add_post("/api/alerts", post_alert)
    app.router.add_get("/api/alerts", list_alerts)


# -- scope ---------------------------------------------------------------------------------------------
def _admin(who: Subject) -> Subject:
    if who.role not in ("district_admin", "school_admin") or not who.district:
        raise ApiError(403, "campaigns are managed by school and district administrators")
    return who


def _in_scope(who: Subject, school: School) -> bool:
    if school.district != who.district:
        return False
    return who.role == "district_admin" or school.id == who.school


def _visible(who: Subject, campaign: Campaign) -> bool:
    if campaign.source == "builtin" or not campaign.owner_district:
        return True
    if campaign.owner_district != who.district:
        return False
    return who.role == "district_admin" or campaign.owner_school in ("", who.school)


def _editable(who: Subject, campaign: Campaign) -> bool:
    if campaign.source != "custom" or campaign.owner_district != who.district:
        return False
    return who.role == "district_admin" or campaign.owner_school == who.school


def _field_of(exc: CampaignError) -> tuple[str, str]:
    """("what.lesson", "unknown lesson ...") from "custom campaign x: what.lesson: unknown lesson ..."."""
    text = str(exc)
    if text.startswith("custom campaign ") and ": " in text:
        text = text.split(": ", 1)[1]
    key, sep, message = text.partition(": ")
    return (key, message) if sep and " " not in key else ("campaign", text)


async def _schools_in_scope(runner: CampaignRunner, who: Subject) -> dict[str, School]:
    return {sid: s for sid, s in (await runner.roster.schools()).items() if _in_scope(who, s)}


def _state(campaign: Campaign, schools: dict[str, School], switches: Switches) -> dict[str, Any]:
    covered = [s for s in schools.values() if campaign.covers(s)]
    on = sum(1 for s in covered if switches.is_on(campaign, s))
    state = "on" if covered and on == len(covered) else "off" if on == 0 else "partial"
    return {"state": state, "schools": len(covered), "schools_on": on}


# -- handlers ------------------------------------------------------------------------------------------
async def list_campaigns(request: web.Request) -> web.Response:
    who = _admin(subject(request))
    runner = request.app[RUNNER]
    now = clock.now()
    schools = await _schools_in_scope(runner, who)
    switches = await runner.store.switches()
    campaigns = [c for c in await runner.campaigns() if _visible(who, c)]
    today = clock.local(now).date()
    upcoming = plan_firings(runner.catalog, campaigns, schools, switches, today, today + timedelta(days=NEXT_DAYS))
    nexts: dict[str, str] = {}
    for firing in upcoming:
        if firing.ts > now:
            nexts.setdefault(firing.campaign.id, firing.at.isoformat())
    scopes = {"*", f"d:{who.district}", *(f"s:{sid}" for sid in schools)}
    items = []
    for c in campaigns:
        overrides = {k: v for k, v in switches.overrides(c.id).items() if k in scopes}
        items.append(
            {
                "id": c.id,
                "name": c.name,
                "description": c.description,
                "source": c.source,
                "enabled": c.enabled,
                "scheduled": c.when is not None,
                "alert_only": c.when is None,
                "editable": _editable(who, c),
                "mode": c.what.mode,
                "urgent": c.what.urgent,
                "lesson": c.what.lesson,
                "next": nexts.get(c.id),
                "overrides": overrides,
                **_state(c, schools, switches),
                "document": dict(c.raw),
            }
        )
    recent = [
        r.to_json() for r in await runner.store.recent(now - RECENT_DAYS * 86400, now) if r.district == who.district
    ]
    warnings = runner.warnings(today, today + timedelta(days=NEXT_DAYS))
    return json_response({"campaigns": items, "recent": recent, "warnings": warnings})


async def preview(request: web.Request) -> web.Response:
    who = _admin(subject(request))
    runner = request.app[RUNNER]
    try:
        days = int(request.query.get("days", "60"))
    except ValueError:
        raise invalid("days", "a whole number of days") from None
    if not 1 <= days <= PREVIEW_DAYS_MAX:
        raise invalid("days", f"from 1 to {PREVIEW_DAYS_MAX}")
    school = request.query.get("school", "") or (who.school if who.role == "school_admin" else "")
    if school:
        found = await runner.roster.school(school)
        if found is None or not _in_scope(who, found):
            raise ApiError(403, "that school is not in your scope", field="school")
    result = await runner.preview(
        days, school=school, district=who.district, campaign=request.query.get("campaign", "")
    )
    entries = [e.to_json() for e in result.entries if _visible(who, e.firing.campaign)]
    return json_response(
        {
            "from": result.start.isoformat(),
            "to": result.end.isoformat(),
            "days": days,
            "school": school,
            "firings": entries,
            "warnings": result.warnings,
        }
    )


async def render(request: web.Request) -> web.Response:
    who = _admin(subject(request))
    runner = request.app[RUNNER]
    cid = request.match_info["id"]
    campaign = await runner.campaign(cid)
    if campaign is None or not _visible(who, campaign):
        raise ApiError(404, f"no campaign {cid!r}")
    text = request.query.get("date", "")
    try:
        start = date.fromisoformat(text) if text else clock.local(clock.now()).date()
    except ValueError:
        raise invalid("date", "a day like 2026-05-01") from None
    schools = await runner.roster.schools()
    wanted = request.query.get("school", "") or (who.school if who.role == "school_admin" else "")
    if wanted:
        found = schools.get(wanted)
        if found is None or not _in_scope(who, found):
            raise ApiError(403, "that school is not in your scope", field="school")
        if not campaign.covers(found):
            raise invalid("school", f"campaign {cid!r} does not reach school {wanted!r}")
        school = found
    else:
        reached = sorted((s for s in schools.values() if _in_scope(who, s) and campaign.covers(s)), key=lambda s: s.id)
        region = next((r.id for r in runner.catalog.calendar.regions()), "demo")
        school = reached[0] if reached else School("sample", "示例学校", who.district, region)
    try:
        result = runner.render_for(
            campaign, school, schools, start, exact=bool(text), switches=await runner.store.switches()
        )
    except CampaignError as exc:
        raise invalid(*_field_of(exc)) from None
    firing, rendered = result.firing, result.rendered
    what = campaign.what
    question = what.question
    return json_response(
        {
            "campaign": campaign.id,
            "name": campaign.name,
            "at": firing.at.isoformat(),
            "scheduled": result.scheduled,  # False: no firing that day (or in the next year); shown as if sent then
            "gives_way_to": list(result.gives_way_to),  # that day a campaign it yields to reaches the school instead
            "school": school.id,
            "school_name": school.name,
            "title": rendered.title,
            "sender": rendered.sender,
            "body": rendered.body,
            "mode": what.mode,
            "urgent": what.urgent,
            "lesson": what.lesson_for(firing.at.month),
            "question": None
            if question is None
            else {"text": question.text, "options": list(question.options), "answer": question.answer},
        }
    )


async def save_campaign(request: web.Request) -> web.Response:
    who = _admin(subject(request))
    runner = request.app[RUNNER]
    data = await read_json(request)
    cid = data.get("id")
    if not isinstance(cid, str) or not cid:
        raise invalid("id", "is required")
    if cid in runner.catalog.builtin:
        raise ApiError(
            409, f"{cid!r} is a built-in campaign: disable it and create your own under another id", field="id"
        )
    stored = (await runner.store.custom_documents()).get(cid)
    owner_school = who.school if who.role == "school_admin" else ""
    if stored is not None:
        owner_district, stored_school = str(stored.get("owner_district") or ""), str(stored.get("owner_school") or "")
        if owner_district != who.district or (who.role == "school_admin" and stored_school != who.school):
            raise ApiError(403, f"campaign {cid!r} belongs to {owner_district or 'the operator'}", field="id")
        owner_school = stored_school  # a district admin editing a school's campaign keeps it the school's
    try:
        campaign = runner.catalog.parse(
            data, f"custom campaign {cid}", owner_district=who.district, owner_school=owner_school
        )
    except CampaignError as exc:
        field, message = _field_of(exc)
        raise invalid(field, message) from None
    schools = await runner.roster.schools()
    for school in sorted(campaign.who.schools):
        if school not in schools or not _in_scope(who, schools[school]):
            raise invalid("who.schools", f"school {school!r} is not in your scope")
    await runner.store.save_custom(cid, data, district=who.district, school=owner_school)
    body = {
        "campaign": {
            "id": campaign.id,
            "name": campaign.name,
            "document": dict(campaign.raw),
            "owner_district": who.district,
            "owner_school": owner_school,
        },
        "created": stored is None,
    }
    return json_response(body, status=201 if stored is None else 200)


async def _switch(request: web.Request, on: bool) -> web.Response:
    who = _admin(subject(request))
    runner = request.app[RUNNER]
    cid = request.match_info["id"]
    campaign = await runner.campaign(cid)
    if campaign is None or not _visible(who, campaign):
        raise ApiError(404, f"no campaign {cid!r}")
    school = ""
    if request.can_read_body:
        data = await read_json(request)
        value = data.get("school", "")
        if not isinstance(value, str):
            raise invalid("school", "a school id")
        school = value
    if who.role == "school_admin":
        school = school or who.school
    if school:
        found = await runner.roster.school(school)
        if found is None or not can(who, "manage", SchoolObj(found.district, found.id)):
            raise ApiError(403, "that school is not in your scope", field="school")
        if not campaign.covers(found):
            raise invalid("school", f"campaign {cid!r} does not reach school {school!r}")
        await runner.store.switch(cid, on, school=school)
    else:
        if not can(who, "manage", DistrictObj(who.district)):
            raise ApiError(403, "only a district administrator switches a campaign for the whole district")
        await runner.store.switch(cid, on, district=who.district)
    schools = await _schools_in_scope(runner, who)
    scope = scope_key(school=school, district=who.district)
    return json_response(
        {"campaign": cid, "on": on, "scope": scope, **_state(campaign, schools, await runner.store.switches())}
    )


async def enable(request: web.Request) -> web.Response:
    return await _switch(request, True)


async def disable(request: web.Request) -> web.Response:
    return await _switch(request, False)


async def post_alert(request: web.Request) -> web.Response:
    who = _admin(subject(request))
    data = await read_json(request)
    try:
        alert = parse_alert(data)
    except AlertError as exc:
        raise invalid(exc.field, exc.message) from None
    result = await request.app[ALERTS].receive(alert, who)
    return json_response(result.to_json(), status=201 if result.status == "fired" else 200)


async def list_alerts(request: web.Request) -> web.Response:
    who = _admin(subject(request))
    try:
        limit = int(request.query.get("limit", "50"))
    except ValueError:
        raise invalid("limit", "a whole number") from None
    if not 1 <= limit <= 200:
        raise invalid("limit", "from 1 to 200")
    return json_response({"alerts": await request.app[ALERTS].recent(limit=limit, district=who.district)})
