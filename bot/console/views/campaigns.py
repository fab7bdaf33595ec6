"""Seasonal campaigns in the console: the calendar of the next 60 days, switching a campaign on or off
for the district or one school, and creating or editing the district's (or school's) own campaigns.

Everything goes through the campaigns capability: ``CampaignRunner.preview`` (the same plan and
rendering the scheduler fires), its store's switches and admin-made documents, and
``Catalog.parse`` to validate a campaign exactly as ``bot campaigns save`` and ``POST /api/campaigns``
do. Administrators only; a district administrator acts on the district or any of its schools, a
school administrator on their school (``authz.can(subject, "manage", …)``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bot import clock
from bot.campaigns.rules import RuleError, parse_rule
from bot.console.scope import SCHOOL_RE, schools_in_scope
from bot.console.views import slots
from bot.console.web import CONSOLE, FORM, PREFIX, Console, Viewer, forbidden, message, not_found, redirect
from bot.roster.authz import DistrictObj, SchoolObj, Subject, can
from bot.roster.model import School, grade_label

if TYPE_CHECKING:
    from bot.campaigns.calendar import Calendar
    from bot.campaigns.model import Campaign
    from bot.campaigns.runner import CampaignRunner

CALENDAR_DAYS = 60
WEEKDAYS = ("一", "二", "三", "四", "五", "六", "日")
ANCHORS = {"date": "每年某一天", "weekday": "某月第几个星期几", "on": "某个日子当天", "before": "某个日子之前",
           "after": "某个日子之后", "cron": "cron 表达式（高级）", "json": "JSON 规则（高级，可多条）",
           "none": "不设日程（不会自动发送）"}  # fmt: skip
EVENTS = {"holiday": "法定节假日", "weekend": "周末", "summer_break": "暑假", "winter_break": "寒假",
          "term_start": "开学", "term_end": "学期结束", "safety_education_day": "全国中小学生安全教育日",
          "disaster_reduction_day": "全国防灾减灾日", "drowning_prevention_day": "世界预防溺水日",
          "fire_day": "全国消防日", "traffic_safety_day": "全国交通安全日", "anti_drug_day": "国际禁毒日"}  # fmt: skip
OFFSETS = {"school_days": "上学日", "workdays": "工作日", "days": "天"}
WEEKDAY_KEYS = {"mon": "星期一", "tue": "星期二", "wed": "星期三", "thu": "星期四", "fri": "星期五", "sat": "星期六",
                "sun": "星期日"}  # fmt: skip
MODE_LABELS = {"none": "无需确认", "confirm": "确认已读", "understand": "确认并答题"}
FIELDS = ("id", "name", "description", "anchor", "date", "weekday", "nth", "month", "event", "holiday_name",
          "offset", "offset_unit", "on_weekday", "at", "from", "to", "cron", "when_json", "title", "sender", "body",
          "mode", "q_text", "q_opt1", "q_opt2", "q_opt3", "q_opt4", "q_answer", "lesson", "deadline_hours",
          "if_not_school_day")  # fmt: skip
# The form's fields that describe the rule (the ``when``).
RULE_FIELDS = frozenset({"anchor", "date", "weekday", "nth", "month", "event", "holiday_name", "offset", "offset_unit",
                         "on_weekday", "at", "from", "to", "cron", "when_json", "if_not_school_day"})  # fmt: skip
# The keys of a rule the simple form shows (with its one anchor); any other rule goes to the JSON field.
SIMPLE_RULE_KEYS = frozenset({"nth", "month", "name", "school_days", "workdays", "days", "on_weekday", "at", "from",
                              "to", "if_not_school_day"})  # fmt: skip
# ``if_not_school_day``, in the form's words ("" is the rule's default, keep)
FALLBACKS = {"": "照常发送", "next": "改到下一个上课日", "previous": "改到前一个上课日", "skip": "这次不发"}
# What the form shows of a document; everything else in a stored document (written through the API or
# `bot campaigns save`) is kept as it was when the form saves it, and named on the form (KEPT_LABELS).
FORM_KEYS = frozenset({"id", "name", "description", "when", "who", "what", "yields_to"})
FORM_WHO_KEYS = frozenset({"grades", "schools", "districts", "everyone"})
FORM_WHAT_KEYS = frozenset({"title", "body", "sender", "mode", "lesson", "deadline_hours", "question"})
KEPT_LABELS = {"enabled": "默认开关", "urgent": "紧急发送（不受免打扰时段限制）", "template": "文本模板",
               "lesson": "按月份安排的安全课", "regions": "按地区发送", "region_groups": "按地区组发送",
               "opt_out": "不参加的学校或地区"}  # fmt: skip


def _runner(c: Console) -> CampaignRunner | None:
    runner: CampaignRunner | None = c.ctx.services.get("campaigns")
    return runner


def _unavailable(viewer: Viewer) -> web.Response:
    return message(503, "活动功能未启用", "季节性安全活动还没有在这个系统里启用。", viewer=viewer)


# -- scope -----------------------------------------------------------------------------------------------
def manages_school(s: Subject, school: School) -> bool:
    return can(s, "manage", SchoolObj(school.district, school.id))


def editable(s: Subject, campaign: Campaign) -> bool:
    """An admin-made campaign of the viewer's district (a district admin) or school (its admin)."""
    if campaign.source != "custom" or not campaign.owner_district:
        return False
    if campaign.owner_school:
        return can(s, "manage", SchoolObj(campaign.owner_district, campaign.owner_school))
    return can(s, "manage", DistrictObj(campaign.owner_district))


@dataclass
class Scoped:
    runner: CampaignRunner
    schools: dict[str, School]  # the schools the viewer manages
    school: School | None  # the one chosen (?school=), or a school admin's


async def _scoped(c: Console, viewer: Viewer, school_id: str) -> Scoped | None:
    runner = _runner(c)
    if runner is None or not viewer.is_admin:
        return None
    everything = await runner.roster.schools()
    mine = {sid: s for sid, s in everything.items() if manages_school(viewer.subject, s)}
    chosen = None
    if viewer.subject.role == "school_admin":
        if school_id and school_id != viewer.subject.school:
            return None
        chosen = mine.get(viewer.subject.school)
    elif school_id:
        chosen = mine.get(school_id) if SCHOOL_RE.match(school_id) else None
        if chosen is None:
            return None
    return Scoped(runner, mine, chosen)


def _visible(campaign: Campaign, scoped: Scoped, s: Subject) -> bool:
    return editable(s, campaign) or any(campaign.covers(school) for school in scoped.schools.values())


# -- the list ----------------------------------------------------------------------------------------------
async def campaign_list(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    c = request.config_dict[CONSOLE]
    if _runner(c) is None:
        return _unavailable(viewer)
    scoped = await _scoped(c, viewer, request.query.get("school", ""))
    if scoped is None:
        return forbidden(viewer)
    runner, s = scoped.runner, viewer.subject
    switches = await runner.store.switches()
    campaigns = [camp for camp in await runner.campaigns() if _visible(camp, scoped, s)]
    today = clock.local(clock.now()).date()
    targets = {scoped.school.id: scoped.school} if scoped.school else scoped.schools
    firings = await runner.firings(today, today + timedelta(days=CALENDAR_DAYS), campaigns=campaigns, schools=targets)
    nexts: dict[str, Any] = {}
    for f in firings:
        if f.ts > clock.now() and (set(f.schools) & set(targets)):
            nexts.setdefault(f.campaign.id, f.at)
    rows = []
    for camp in campaigns:
        covered = [sc for sc in targets.values() if camp.covers(sc)]
        on = sum(1 for sc in covered if switches.is_on(camp, sc))
        state = "on" if covered and on == len(covered) else "off" if on == 0 else "partial"
        rows.append({"campaign": camp, "state": state, "covered": len(covered), "on": on, "next": nexts.get(camp.id),
                     "editable": editable(s, camp),
                     "mode": MODE_LABELS.get(camp.what.mode, camp.what.mode)})  # fmt: skip
    return c.page(
        viewer, "campaigns.html", nav="campaigns", title="安全活动", rows=rows, scoped=scoped,
        schools=await schools_in_scope(c, viewer), flash=request.query.get("flash", ""),
        district_switch=can(s, "manage", DistrictObj(s.district)) and scoped.school is None,
    )  # fmt: skip


async def switch(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    c = request.config_dict[CONSOLE]
    form = request[FORM]
    scoped = await _scoped(c, viewer, form.get("school"))
    if scoped is None:
        return forbidden(viewer)
    campaign = await scoped.runner.campaign(form.get("campaign"))
    if campaign is None or not _visible(campaign, scoped, viewer.subject):
        return not_found(viewer)
    wanted = form.get("on")
    store, s = scoped.runner.store, viewer.subject
    if scoped.school is not None:
        if not campaign.covers(scoped.school):
            return message(422, "无法切换", "这个活动不覆盖这所学校。", viewer=viewer)
        where = {"school": scoped.school.id}
        district = scoped.school.district
    else:
        if not can(s, "manage", DistrictObj(s.district)):
            return forbidden(viewer)
        where = {"district": s.district}
        district = s.district
    if wanted == "reset":
        await store.clear_switch(campaign.id, **where)
    else:
        await store.switch(campaign.id, wanted == "1", **where)
    slots.forget()
    action = "campaign.enable" if wanted == "1" else "campaign.disable"
    scope_text = scoped.school.name if scoped.school else f"{district} 全区"
    verb = {"1": "开启", "0": "关闭"}.get(wanted, "恢复默认")
    await c.record(viewer, action, district=district, school=scoped.school.id if scoped.school else "",
                   target=campaign.id, summary=f"{verb}「{campaign.name}」：{scope_text}")  # fmt: skip
    back = f"{PREFIX}/campaigns?school={scoped.school.id}&" if scoped.school and s.role == "district_admin" else \
        f"{PREFIX}/campaigns?"  # fmt: skip
    return redirect(f"{back}flash=switched")


# -- the calendar -------------------------------------------------------------------------------------------
def calendar_notes(cal: Calendar, start: date, end: date, schools: Mapping[str, School]) -> list[str]:
    """What the calendar page should warn about, in the console's words.

    The runner logs the same in English for operators, with the fix (``CampaignRunner.warnings``); an
    administrator reading the console cannot apply it, so they are told what it means for them.
    """
    notes = [
        f"{year}年的放假安排国家还没有公布，日历里的节假日是推算的，公布后提醒日期可能会有调整。"
        for year in cal.unofficial_years(range(start.year, end.year + 1))
    ]
    known = {r.id for r in cal.regions()}
    missing = sorted(s.name for s in schools.values() if s.region not in known)
    if missing:
        names = "、".join(missing[:3]) + ("等" if len(missing) > 3 else "")
        notes.append(f"{names}所在的地区还没有校历，暂时收不到季节性安全提醒，请联系系统管理员添加。")
    return notes


async def calendar(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    c = request.config_dict[CONSOLE]
    if _runner(c) is None:
        return _unavailable(viewer)
    scoped = await _scoped(c, viewer, request.query.get("school", ""))
    if scoped is None:
        return forbidden(viewer)
    runner, s = scoped.runner, viewer.subject
    only = request.query.get("campaign", "")
    school = scoped.school.id if scoped.school else ""
    preview = await runner.preview(CALENDAR_DAYS, school=school, district=s.district, campaign=only[:40])
    entries = [e for e in preview.entries if _visible(e.firing.campaign, scoped, s)]
    by_day: dict[date, list[Any]] = {}
    for e in entries:
        by_day.setdefault(e.firing.at.date(), []).append(e)
    start = preview.start.date()
    first = start - timedelta(days=start.weekday())
    last = preview.end.date()
    cal = runner.catalog.calendar
    shown = {scoped.school.id: scoped.school} if scoped.school else scoped.schools
    weeks = []
    day = first
    while day <= last:
        week = []
        for _ in range(7):
            inside = start <= day <= last
            week.append({"date": day, "inside": inside, "entries": by_day.get(day, []) if inside else [],
                         "holiday": cal.holiday_name(day) if inside else None,
                         "off": not cal.is_workday(day), "today": day == start})  # fmt: skip
            day += timedelta(days=1)
        weeks.append(week)
    return c.page(
        viewer, "campaign_calendar.html", nav="campaigns", title="活动日历", weeks=weeks, entries=entries,
        weekdays=WEEKDAYS, scoped=scoped, schools=await schools_in_scope(c, viewer), only=only,
        warnings=calendar_notes(cal, start, last, shown), days=CALENDAR_DAYS, modes=MODE_LABELS,
    )  # fmt: skip


# -- admin-made campaigns -------------------------------------------------------------------------------------
def _blank() -> dict[str, str]:
    values = dict.fromkeys(FIELDS, "")
    values.update(anchor="before", event="weekend", offset="1", offset_unit="school_days", at="16:00", mode="none")
    return values


def when_from(values: Mapping[str, str]) -> Any:
    """The ``when`` of the campaign document the form's fields describe."""
    anchor = values["anchor"]
    when: Any
    if anchor == "none":  # no schedule: the campaign is kept but never fires by itself
        return None
    if anchor == "json":
        try:
            when = json.loads(values["when_json"] or "null")
        except ValueError:
            when = {"json": "invalid"}  # the parser names it
    elif anchor == "cron":
        when = {"cron": values["cron"]}
        for key in ("from", "to", "if_not_school_day"):  # the form shows them for every rule
            if values[key]:
                when[key] = values[key]
    else:
        rule: dict[str, Any] = {}
        if anchor == "date":
            rule["date"] = values["date"]
        elif anchor == "weekday":
            rule["weekday"] = values["weekday"] or "mon"
            rule["nth"] = _int(values["nth"], 1)
            if values["month"]:
                rule["month"] = _int(values["month"], 1)
        else:
            rule[anchor] = values["event"]
            if values["holiday_name"] and values["event"] == "holiday":
                rule["name"] = values["holiday_name"]
            if values["on_weekday"]:
                rule["on_weekday"] = values["on_weekday"]  # the weekday is the offset
            elif values["offset"] and values["offset"] != "0":
                rule[values["offset_unit"] or "days"] = _int(values["offset"], 1)
        rule["at"] = values["at"] or "09:00"
        for key in ("from", "to", "if_not_school_day"):
            if values[key]:
                rule[key] = values[key]
        when = rule
    return when


def document_from(
    values: dict[str, str],
    grades: list[str],
    schools: list[str],
    s: Subject,
    *,
    yields: list[str] | None = None,
    base: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The campaign document (the schedules/*.toml format, as JSON) the form describes.

    ``base`` is the stored document being edited: what the form does not show of it (``kept``) is
    carried over unchanged, so saving from the console never drops a setting made elsewhere.
    """
    when = when_from(values)
    old = base or {}
    old_who, old_what = _table_of(old.get("who")), _table_of(old.get("what"))
    who: dict[str, Any] = {k: v for k, v in old_who.items() if k not in FORM_WHO_KEYS}
    who["grades"] = [int(g) for g in grades if g.isdigit()]
    if s.role == "school_admin":
        who["schools"] = [s.school]
    elif schools:
        who["schools"] = schools
    elif old_who.get("districts") or not (who.get("regions") or who.get("region_groups")):
        # no school picked: the whole district, unless the document reaches regions only (kept above)
        who["districts"] = [s.district]
    what: dict[str, Any] = {k: v for k, v in old_what.items() if k not in FORM_WHAT_KEYS}
    if "template" in what and (values["title"] or values["body"] or values["sender"]):
        del what["template"]  # text typed into the form replaces the template file
    if "template" not in what:
        what.update(title=values["title"], body=values["body"])
    what["mode"] = values["mode"] or "none"
    if values["sender"]:
        what["sender"] = values["sender"]
    if values["lesson"]:
        what["lesson"] = values["lesson"]
    elif isinstance(old_what.get("lesson"), Mapping):
        what["lesson"] = old_what["lesson"]  # a lesson per month, which the form cannot show
    if values["deadline_hours"]:
        what["deadline_hours"] = _int(values["deadline_hours"], 0)
    if values["mode"] == "understand":
        options = [values[f"q_opt{i}"] for i in range(1, 5) if values[f"q_opt{i}"]]
        what["question"] = {"text": values["q_text"], "options": options, "answer": _int(values["q_answer"], 1) - 1}
    doc: dict[str, Any] = {k: v for k, v in old.items() if k not in FORM_KEYS}
    doc.update(id=values["id"], name=values["name"], when=when, who=who, what=what)
    if when is None:
        del doc["when"]  # no schedule: the format leaves "when" out
    if values["description"]:
        doc["description"] = values["description"]
    if yields:
        doc["yields_to"] = list(dict.fromkeys(yields))
    return doc


def kept(doc: Mapping[str, Any]) -> list[str]:
    """What a stored document says that the form does not show (it is kept on save), in the form's words."""
    who, what = _table_of(doc.get("who")), _table_of(doc.get("what"))
    keys = [k for k in doc if k not in FORM_KEYS]
    keys += [k for k in who if k not in FORM_WHO_KEYS]
    keys += [k for k in what if k not in FORM_WHAT_KEYS or (k == "lesson" and isinstance(what[k], Mapping))]
    return list(dict.fromkeys(KEPT_LABELS.get(k, k) for k in keys))


def _table_of(value: object) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _shows_exactly(values: Mapping[str, str], rule: Mapping[str, Any]) -> bool:
    """Whether the form's simple fields, saved unchanged, give back ``rule`` (the same firings): its
    lists can show each value and nothing is lost on the way. A rule they cannot goes to JSON as written."""
    if values["event"] and values["anchor"] in ("on", "before", "after") and values["event"] not in EVENTS:
        return False
    if any(values[k] and values[k] not in WEEKDAY_KEYS for k in ("weekday", "on_weekday")):
        return False
    try:
        return parse_rule(when_from(values), where="form") == parse_rule(rule, where="stored")
    except RuleError:
        return False


def values_from(doc: dict[str, Any]) -> tuple[dict[str, str], list[str], list[str], list[str]]:
    """The form's fields (values, grades, schools, yields_to) for a stored document (a rule the simple
    form cannot show goes to JSON; other settings it does not show are kept on save, see ``kept``)."""
    values = _blank()
    values.update(id=str(doc.get("id", "")), name=str(doc.get("name", "")), description=str(doc.get("description", "")))
    when = doc.get("when")
    simple = isinstance(when, dict) or (isinstance(when, list) and len(when) == 1 and isinstance(when[0], dict))
    rule = (when[0] if isinstance(when, list) else when) if simple else None
    anchors = [k for k in ("date", "weekday", "on", "before", "after", "cron") if isinstance(rule, dict) and k in rule]
    shown = False
    if isinstance(rule, dict) and len(anchors) == 1 and set(rule) <= {*anchors, *SIMPLE_RULE_KEYS}:
        anchor = anchors[0]
        values["anchor"] = anchor
        if anchor in ("on", "before", "after"):
            values["event"] = str(rule[anchor])
        elif anchor != "weekday":
            values[anchor] = str(rule[anchor])
        else:
            values["weekday"] = str(rule["weekday"])
        for key in ("nth", "month", "at", "from", "to"):
            if key in rule:
                values[key] = str(rule[key])
        fallback = str(rule.get("if_not_school_day", ""))
        values["if_not_school_day"] = "" if fallback == "keep" else fallback
        values["holiday_name"] = str(rule.get("name", ""))
        for unit in OFFSETS:
            if unit in rule:
                values["offset"], values["offset_unit"] = str(rule[unit]), unit
        if anchor in ("on", "before", "after") and not any(u in rule for u in OFFSETS):
            values["offset"] = ""
        values["on_weekday"] = str(rule.get("on_weekday", ""))
        for key in ("weekday", "on_weekday"):  # "Friday" is "fri" in the form's list
            values[key] = values[key].strip().lower()[:3]
        shown = _shows_exactly(values, rule)
    if when is None and "id" in doc:  # a stored campaign without a schedule: it stays without one
        values["anchor"] = "none"
    if when is not None and not shown:
        values.update({k: v for k, v in _blank().items() if k in RULE_FIELDS})
        values["anchor"] = "json"
        values["when_json"] = json.dumps(when, ensure_ascii=False, indent=1)
    what = doc.get("what") or {}
    for key in ("title", "sender", "body", "mode", "lesson", "deadline_hours"):
        if key in what and not isinstance(what[key], Mapping):
            values[key] = str(what[key])
    question = what.get("question")
    if isinstance(question, dict):
        values["q_text"] = str(question.get("text", ""))
        for i, option in enumerate(question.get("options", [])[:4], 1):
            values[f"q_opt{i}"] = str(option)
        values["q_answer"] = str(int(question.get("answer", 0)) + 1)
    who = doc.get("who") or {}
    grades = [str(g) for g in who.get("grades", [])] if isinstance(who, dict) else []
    schools = [str(sid) for sid in who.get("schools", [])] if isinstance(who, dict) else []
    raw_yields = doc.get("yields_to")
    yields = [str(cid) for cid in raw_yields] if isinstance(raw_yields, list) else []
    return values, grades, schools, yields


def _int(text: str, default: int) -> int:
    try:
        return int(text)
    except ValueError:
        return default


def _field(error: str) -> tuple[str, str]:
    """("when", "…") from "custom campaign x: when.at: …", for the form to show next to the field."""
    text = error.split(": ", 1)[1] if error.startswith("custom campaign ") and ": " in error else error
    key, sep, rest = text.partition(": ")
    if not sep or " " in key:
        return "campaign", text
    head = key.split(".")[0].split("[")[0]
    if head == "what":
        sub = key.split(".")[1].split("[")[0] if "." in key else "title"
        return (sub if sub in ("title", "body", "sender", "mode", "question", "lesson") else "what"), rest
    return head, rest


async def _form(c: Console, viewer: Viewer, values: dict[str, str], grades: list[str], schools: list[str], *,
                editing: bool, yields: list[str] | None = None, base: Mapping[str, Any] | None = None,
                errors: dict[str, str] | None = None, status: int = 200) -> web.Response:  # fmt: skip
    from bot.lessons.content import TOPICS

    runner = _runner(c)
    builtin = runner.catalog.builtin.values() if runner is not None else ()
    yield_choices = [(camp.id, camp.name) for camp in builtin if camp.when is not None]
    return c.page(
        viewer, "campaign_form.html", nav="campaigns", status=status, title="编辑活动" if editing else "新建活动",
        values=values, grades=grades, picked_schools=schools, errors=errors or {}, editing=editing,
        anchors=ANCHORS, events=EVENTS, offsets=OFFSETS, weekdays=WEEKDAY_KEYS, modes=MODE_LABELS, topics=TOPICS,
        fallbacks=FALLBACKS,
        all_grades=[(str(g), grade_label(g)) for g in range(0, 13)], schools=await schools_in_scope(c, viewer),
        yield_choices=yield_choices, picked_yields=yields or [], kept=kept(base or {}),
        reached_regions=_reached_regions(c, base or {}),
    )  # fmt: skip


def _reached_regions(c: Console, doc: Mapping[str, Any]) -> list[str]:
    """The regions (and groups) a stored document reaches, by name: the form does not show them, and
    schools picked on it are reached as well as these (an audience is a union), which the form says."""
    who = _table_of(doc.get("who"))
    runner = _runner(c)
    names = {r.id: r.name for r in runner.catalog.calendar.regions()} if runner is not None else {}
    regions = [names.get(str(r), str(r)) for r in who.get("regions") or []]
    groups = [f"{g}（地区组）" for g in who.get("region_groups") or []]
    return regions + groups


async def new_campaign(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    c = request.config_dict[CONSOLE]
    if _runner(c) is None:
        return _unavailable(viewer)
    if not viewer.is_admin:
        return forbidden(viewer)
    return await _form(c, viewer, _blank(), [], [], editing=False)


async def edit_campaign(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    c = request.config_dict[CONSOLE]
    runner = _runner(c)
    if runner is None:
        return _unavailable(viewer)
    if not viewer.is_admin:
        return forbidden(viewer)
    cid = request.match_info["id"]
    campaign = await runner.campaign(cid)
    stored = (await runner.store.custom_documents()).get(cid)
    if campaign is None or stored is None:
        return not_found(viewer)
    if not editable(viewer.subject, campaign):
        return forbidden(viewer)
    document = dict(stored.get("document") or {})
    values, grades, schools, yields = values_from(document)
    return await _form(c, viewer, values, grades, schools, editing=True, yields=yields, base=document)


async def save_campaign(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    from bot.campaigns.model import CampaignError

    c = request.config_dict[CONSOLE]
    runner = _runner(c)
    if runner is None:
        return _unavailable(viewer)
    s = viewer.subject
    if not viewer.is_admin or not s.district:
        return forbidden(viewer)
    form = request[FORM]
    values = {k: form.get(k).strip() if k not in ("body", "when_json") else form.get(k) for k in FIELDS}
    values["body"] = values["body"].replace("\r\n", "\n").strip()
    grades, schools = form.getall("grades"), [sid for sid in form.getall("schools") if sid]
    yields = [cid for cid in form.getall("yields_to") if cid]
    editing = form.get("editing") == "1"
    cid = values["id"]
    base: dict[str, Any] | None = None

    def refused(field: str, text: str) -> Awaitable[web.Response]:
        return _form(c, viewer, values, grades, schools, editing=editing, yields=yields, base=base,
                     errors={field: text}, status=422)  # fmt: skip

    if cid in runner.catalog.builtin:
        return await refused("id", "这是内置活动的编号：请换一个编号（内置活动可以在列表中关闭）")
    stored = (await runner.store.custom_documents()).get(cid)
    owner_school = s.school if s.role == "school_admin" else ""
    if stored is not None:
        owner_district, stored_school = str(stored.get("owner_district") or ""), str(stored.get("owner_school") or "")
        if owner_district != s.district or (s.role == "school_admin" and stored_school != s.school):
            return await refused("id", "这个编号已被其他学校或区县使用")
        if not editing:
            return await refused("id", "这个编号已经存在：请换一个，或在列表中编辑它")
        owner_school = stored_school
        base = dict(stored.get("document") or {})
    mine = {sid for sid, _ in await schools_in_scope(c, viewer)}
    outside = [sid for sid in schools if sid not in mine]
    if outside:
        return await refused("schools", f"不在您管理范围内的学校：{', '.join(outside)}")
    doc = document_from(values, grades, schools, s, yields=yields, base=base)
    try:
        campaign = runner.catalog.parse(doc, f"custom campaign {cid}", owner_district=s.district,
                                        owner_school=owner_school)  # fmt: skip
    except CampaignError as exc:
        field, text = _field(str(exc))
        return await refused(field, text)
    await runner.store.save_custom(campaign.id, doc, district=s.district, school=owner_school)
    slots.forget()
    await c.record(viewer, "campaign.save", school=owner_school, target=campaign.id,
                   summary=f"{'修改' if stored is not None else '新建'}活动「{campaign.name}」")  # fmt: skip
    return redirect(f"{PREFIX}/campaigns/calendar?campaign={campaign.id}")


def register(c: Console) -> None:
    c.get("/campaigns", campaign_list)
    c.get("/campaigns/calendar", calendar)
    c.get("/campaigns/new", new_campaign)
    c.get("/campaigns/{id}/edit", edit_campaign)
    c.post("/campaigns/save", save_campaign)
    c.post("/campaigns/switch", switch)
