"""Loading and validating campaigns: ``schedules/*.toml``, admin-made ones (JSON in Redis), the alert map.

Everything a campaign refers to is checked when it is loaded, and every error names the file and
the key (``schedules/drowning.toml: what.lesson: unknown lesson 'drowing' ...``): the calendar events
of its ``when`` rules, the regions and region groups of ``who``, the template (it must compile and
render valid card fields), the lesson (in the lesson library), the question of ``understand`` mode.
The format is documented in ``schedules/README.md``.

:class:`Catalog` is what the runner, the CLI and the API share: the calendar, the lesson library,
the templates, the built-in campaigns, the region groups and the alert map. It never changes after
loading (admin-made campaigns are read from Redis when needed and parsed with :meth:`Catalog.parse`).
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, Final, cast

from bot.campaigns.calendar import Calendar, CalendarError
from bot.campaigns.model import ALERT_LEVELS, ID_RE, AlertType, Campaign, CampaignError, Source, What, Who
from bot.campaigns.rules import RuleError, parse_when, shanghai
from bot.campaigns.texts import CampaignTemplate, CampaignTexts, context
from bot.lessons.content import TOPICS, LessonError, Library, load_library
from bot.notices.model import MODES, OPTION_MAX, QUESTION_MAX, Mode, Question
from bot.paths import ROOT
from bot.roster.model import School

log = logging.getLogger(__name__)

SCHEDULES_DIR: Final = Path("schedules")
ALERTS_FILE: Final = "alerts.toml"
REGIONS_FILE: Final = "regions.toml"
RESERVED_FILES: Final = frozenset({ALERTS_FILE, REGIONS_FILE})

CAMPAIGN_KEYS: Final = frozenset({"id", "name", "description", "enabled", "when", "who", "what", "yields_to"})
WHO_KEYS: Final = frozenset({"everyone", "regions", "region_groups", "districts", "schools", "grades", "opt_out"})
OPT_OUT_KEYS: Final = frozenset({"schools", "regions"})
WHAT_KEYS: Final = frozenset(
    {"template", "title", "body", "sender", "mode", "question", "lesson", "urgent", "deadline_hours"}
)
QUESTION_KEYS: Final = frozenset({"text", "options", "answer"})
ALERT_KEYS: Final = frozenset({"name", "campaign", "levels", "urgent"})
NAME_MAX: Final = 40
DEADLINE_HOURS_MAX: Final = 30 * 24
GRADES: Final = range(0, 13)  # 0 = kindergarten


# -- small checks: each raises CampaignError(where.key, message) ----------------------------------------
def _at(where: str, key: str) -> str:
    return f"{where} {key}" if where.endswith(":") else f"{where}.{key}"


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _table(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise CampaignError(where, f"expected a table, got {_show(value)}")
    return cast(Mapping[str, Any], value)


def _keys(table: Mapping[str, Any], where: str, allowed: Collection[str], required: Collection[str] = ()) -> None:
    for key in table:
        if key not in allowed:
            raise CampaignError(_at(where, key), f"unknown key (allowed: {', '.join(sorted(allowed))})")
    for key in required:
        if key not in table:
            raise CampaignError(_at(where, key), "missing")


def _text(value: object, where: str, *, max_len: int = 0) -> str:
    if not isinstance(value, str) or not value.strip():
        raise CampaignError(where, f"expected a non-empty string, got {_show(value)}")
    if max_len and len(value.strip()) > max_len:
        raise CampaignError(where, f"at most {max_len} characters, got {len(value.strip())}")
    return value.strip()


def _bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise CampaignError(where, f"expected true or false, got {_show(value)}")
    return value


def _strings(value: object, where: str) -> list[str]:
    if not isinstance(value, list):
        raise CampaignError(where, f"expected a list of strings, got {_show(value)}")
    return [_text(item, f"{where}[{i}]") for i, item in enumerate(value)]


def _number(value: object, where: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise CampaignError(where, f"expected a number {low:g}..{high:g}, got {_show(value)}")
    return float(value)


def _parse_yields(value: object, where: str, cid: str) -> tuple[str, ...]:
    ids = _strings(value, where)
    for i, other in enumerate(ids):
        if other == cid:
            raise CampaignError(f"{where}[{i}]", "a campaign cannot yield to itself")
    return tuple(dict.fromkeys(ids))


def _check_yields(campaign: Campaign, builtin: Mapping[str, Campaign]) -> None:
    """``yields_to`` names scheduled built-in campaigns (the planner looks them up in the catalog),
    and built-in campaigns do not yield to each other in a circle."""
    where = f"{campaign.where}: yields_to"
    for i, other in enumerate(campaign.yields_to):
        found = builtin.get(other)
        if found is None:
            known = ", ".join(sorted(c for c, x in builtin.items() if x.when is not None))
            raise CampaignError(f"{where}[{i}]", f"unknown campaign {other!r}: one of schedules/ ({known})")
        if found.when is None:
            raise CampaignError(f"{where}[{i}]", f"{other!r} fires on warnings only: it has no day to yield to")
    path = [campaign.id]
    todo = [(campaign.id, iter(campaign.yields_to))]
    while todo:  # depth first through yields_to, looking for the way back
        _, pending = todo[-1]
        nxt = next(pending, None)
        if nxt is None:
            todo.pop()
            path.pop()
            continue
        if nxt in path:
            raise CampaignError(where, f"yields in a circle: {' -> '.join([*path[path.index(nxt) :], nxt])}")
        found = builtin.get(nxt)
        if found is not None:
            path.append(nxt)
            todo.append((nxt, iter(found.yields_to)))


# -- the catalog --------------------------------------------------------------------------------------
@dataclass
class Catalog:
    """Calendar, lessons, templates, built-in campaigns, region groups and the alert map."""

    calendar: Calendar
    library: Library
    texts: CampaignTexts
    groups: Mapping[str, frozenset[str]] = field(default_factory=dict)
    builtin: dict[str, Campaign] = field(default_factory=dict)
    alerts: dict[str, AlertType] = field(default_factory=dict)
    _inline: dict[tuple[str, str, str, str], CampaignTemplate] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, root: Path = ROOT, *, library: Library | None = None) -> Catalog:
        """Read ``root/schedules``; raises CampaignError (or CalendarError) naming the file and key."""
        calendar = Calendar.load(root)
        if library is None:
            try:
                library = load_library(root / "templates" / "lessons")
            except LessonError as exc:
                raise CampaignError("templates/lessons", str(exc)) from None
        catalog = cls(calendar, library, CampaignTexts(root / "templates" / "campaigns"))
        folder = root / SCHEDULES_DIR
        catalog.groups = _parse_groups(_read(folder, REGIONS_FILE, required=False), catalog.calendar)
        for path in sorted(folder.glob("*.toml")):
            if path.name in RESERVED_FILES:
                continue
            shown = f"{SCHEDULES_DIR / path.name}"
            campaign = catalog.parse(_read(folder, path.name, required=True), shown, source="builtin")
            if campaign.id != path.stem:
                raise CampaignError(f"{shown}: id", f"{campaign.id!r} must match the file name ({path.stem})")
            catalog.builtin[campaign.id] = campaign
        for campaign in catalog.builtin.values():  # now that every id is known
            _check_yields(campaign, catalog.builtin)
        catalog.alerts = _parse_alerts(_read(folder, ALERTS_FILE, required=False), catalog.builtin)
        return catalog

    # ---- parsing one campaign (a file, or an admin's JSON)

    def parse(
        self,
        data: object,
        where: str,
        *,
        source: Source = "custom",
        owner_district: str = "",
        owner_school: str = "",
    ) -> Campaign:
        """A validated campaign from its document; ``where`` is the file name or "custom campaign X"."""
        doc = _table(data, where)
        head = where + ":"
        _keys(doc, head, CAMPAIGN_KEYS, {"id", "name", "what"})
        cid = _text(doc["id"], _at(head, "id"))
        if not ID_RE.match(cid) or cid == "alert":  # "alert:<id>:<district>" are the warnings' firings
            raise CampaignError(_at(head, "id"), f"{cid!r}: 1-40 lowercase letters, digits and '-' (not 'alert')")
        name = _text(doc["name"], _at(head, "name"), max_len=NAME_MAX)
        description = _text(doc["description"], _at(head, "description")) if "description" in doc else ""
        enabled = _bool(doc.get("enabled", True), _at(head, "enabled"))
        when = None
        if "when" in doc:
            try:
                when = parse_when(doc["when"], where=_at(head, "when"), events=self.calendar.event_kinds())
            except RuleError as exc:
                raise CampaignError("", str(exc)) from None
        who = self._parse_who(doc.get("who", "everyone"), _at(head, "who"))
        what = self._parse_what(doc["what"], _at(head, "what"))
        yields_to = _parse_yields(doc.get("yields_to", []), _at(head, "yields_to"), cid)
        raw = jsonable(doc)
        campaign = Campaign(
            cid, name, when, who, what, enabled, source, where, description, owner_district, owner_school, raw,
            yields_to=yields_to,
        )  # fmt: skip
        if source != "builtin":  # built-in files are checked once all of them are loaded
            _check_yields(campaign, self.builtin)
        self.check_renders(campaign)
        return campaign

    def _parse_who(self, value: object, where: str) -> Who:
        if value == "everyone":
            return Who()
        table = _table(value, where)
        _keys(table, where, WHO_KEYS)
        everyone = _bool(table.get("everyone", False), _at(where, "everyone"))
        regions = set(_strings(table.get("regions", []), _at(where, "regions")))
        known = {r.id for r in self.calendar.regions()}
        for region in sorted(regions - known):
            raise CampaignError(_at(where, "regions"), f"unknown region {region!r} (known: {', '.join(sorted(known))})")
        groups = _strings(table.get("region_groups", []), _at(where, "region_groups"))
        for group in groups:
            if group not in self.groups:
                shown = ", ".join(sorted(self.groups)) or "none"
                raise CampaignError(
                    _at(where, "region_groups"),
                    f"unknown group {group!r} (defined in schedules/{REGIONS_FILE}: {shown})",
                )
            regions |= self.groups[group]
        districts = frozenset(_strings(table.get("districts", []), _at(where, "districts")))
        schools = frozenset(_strings(table.get("schools", []), _at(where, "schools")))
        restricted = bool(groups or regions or districts or schools)
        if everyone and restricted:
            raise CampaignError(_at(where, "everyone"), "give everyone = true or regions/districts/schools, not both")
        grades: list[int] = []
        raw_grades = table.get("grades", [])
        if not isinstance(raw_grades, list):
            raise CampaignError(_at(where, "grades"), f"expected a list of grades 0-12, got {_show(raw_grades)}")
        for i, grade in enumerate(raw_grades):
            if isinstance(grade, bool) or not isinstance(grade, int) or grade not in GRADES:
                raise CampaignError(
                    f"{_at(where, 'grades')}[{i}]", f"expected a grade 0-12 (0 = kindergarten), got {_show(grade)}"
                )
            grades.append(grade)
        opt_out = _table(table.get("opt_out", {}), _at(where, "opt_out"))
        _keys(opt_out, _at(where, "opt_out"), OPT_OUT_KEYS)
        out_regions = frozenset(_strings(opt_out.get("regions", []), _at(where, "opt_out.regions")))
        for region in sorted(out_regions - known):
            raise CampaignError(_at(where, "opt_out.regions"), f"unknown region {region!r}")
        out_schools = frozenset(_strings(opt_out.get("schools", []), _at(where, "opt_out.schools")))
        return Who(
            restricted, frozenset(regions), districts, schools, tuple(sorted(set(grades))), out_schools, out_regions
        )

    def _parse_what(self, value: object, where: str) -> What:
        table = _table(value, where)
        _keys(table, where, WHAT_KEYS)
        template = ""
        if "template" in table:
            if any(k in table for k in ("title", "body", "sender")):
                raise CampaignError(_at(where, "template"), "give a template or title/body/sender, not both")
            template = _text(table["template"], _at(where, "template"))
            try:
                self.texts.get(template)
            except CampaignError as exc:
                raise CampaignError(_at(where, "template"), str(exc)) from None
        elif "title" not in table or "body" not in table:
            raise CampaignError(where, 'give template = "<name>" (templates/campaigns/<name>.toml) or title and body')
        mode = table.get("mode", "none")
        if mode not in MODES:
            raise CampaignError(_at(where, "mode"), f"expected one of {', '.join(MODES)}, got {_show(mode)}")
        question = None
        if "question" in table:
            question = _parse_question(table["question"], _at(where, "question"))
        if mode == "understand" and question is None:
            raise CampaignError(_at(where, "question"), "understand mode needs a question {text, options, answer}")
        if mode != "understand" and question is not None:
            raise CampaignError(_at(where, "question"), 'only for mode = "understand"')
        lesson, lessons = "", {}
        if "lesson" in table:
            raw = table["lesson"]
            if isinstance(raw, Mapping):
                for month, item in raw.items():
                    key = f"{_at(where, 'lesson')}.{month}"
                    if not str(month).isdigit() or not 1 <= int(month) <= 12:
                        raise CampaignError(key, "expected a month 1-12 as the key")
                    lessons[int(month)] = self._check_lesson(item, key)
            else:
                lesson = self._check_lesson(raw, _at(where, "lesson"))
        urgent = _bool(table.get("urgent", False), _at(where, "urgent"))
        hours = _number(table.get("deadline_hours", 0), _at(where, "deadline_hours"), 0, DEADLINE_HOURS_MAX)
        return What(
            template=template,
            title=str(table.get("title", "")),
            body=str(table.get("body", "")),
            sender=str(table.get("sender", "")),
            mode=cast(Mode, mode),
            question=question,
            lesson=lesson,
            lessons=lessons,
            urgent=urgent,
            deadline_hours=hours,
        )

    def _check_lesson(self, value: object, where: str) -> str:
        lesson = _text(value, where)
        if lesson in TOPICS:
            if not any(item.topic == lesson for item in self.library):
                raise CampaignError(where, f"no lessons for topic {lesson!r} in templates/lessons/")
            return lesson
        if self.library.get(lesson) is None:
            raise CampaignError(
                where, f"unknown lesson {lesson!r}: a topic ({', '.join(TOPICS)}) or a lesson id like drowning-g4-6"
            )
        return lesson

    # ---- templates

    def template(self, campaign: Campaign) -> CampaignTemplate:
        what = campaign.what
        if what.template:
            return self.texts.get(what.template)
        key = (campaign.id, what.title, what.body, what.sender)
        found = self._inline.get(key)
        if found is None:
            found = self.texts.compile(campaign.id, f"{campaign.where}: what.", what.title, what.body, what.sender)
            if len(self._inline) > 1000:
                self._inline.clear()
            self._inline[key] = found
        return found

    def check_renders(self, campaign: Campaign) -> None:
        """Render once with sample data, so that a broken template is an error now, not at 16:00 on Friday."""
        region = next((r.id for r in self.calendar.regions()), "")
        if not region:
            return
        school = School("sample", "示例学校", "sample", region)
        at = datetime.now(shanghai()).replace(hour=9, minute=0, second=0, microsecond=0)
        alert = sample_alert() if campaign.when is None else None
        deadline = (at + timedelta(hours=campaign.what.deadline_hours or 48)).timestamp()
        try:
            self.template(campaign).render(
                context(self.calendar, campaign, at, region, [school], deadline=deadline, alert=alert)
            )
        except CalendarError as exc:  # pragma: no cover - the region comes from the calendar itself
            raise CampaignError(campaign.where, str(exc)) from None


@cache
def load_catalog(root: Path = ROOT) -> Catalog:
    """The catalog of this source tree, loaded once per process (it never changes after loading)."""
    return Catalog.load(root)


def sample_alert() -> dict[str, Any]:
    """What an alert campaign's template sees as ``alert`` (for ``render`` and validation)."""
    until = datetime.now(shanghai()) + timedelta(hours=12)
    return {
        "id": "sample",
        "type": "rainstorm",
        "type_name": "暴雨",
        "level": "orange",
        "level_name": "橙色",
        "regions": ["demo"],
        "valid_until": until,
    }


def _parse_question(value: object, where: str) -> Question:
    table = _table(value, where)
    _keys(table, where, QUESTION_KEYS, QUESTION_KEYS)
    text = _text(table["text"], _at(where, "text"), max_len=QUESTION_MAX)
    options = _strings(table["options"], _at(where, "options"))
    if not 2 <= len(options) <= 4 or any(len(o) > OPTION_MAX for o in options):
        raise CampaignError(_at(where, "options"), f"give 2-4 options of 1-{OPTION_MAX} characters")
    answer = table["answer"]
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(options):
        raise CampaignError(_at(where, "answer"), "the index of the right option, counting from 0")
    return Question(text, tuple(options), answer)


def jsonable(value: Any) -> Any:
    """The document with TOML dates and times as strings (stored as JSON, shown by the API)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if hasattr(value, "isoformat"):
        text = value.isoformat()
        return text[:5] if len(text) == 8 and text.endswith(":00") and text[2] == ":" else text
    return str(value)


def _read(folder: Path, name: str, *, required: bool) -> dict[str, Any]:
    shown = f"{SCHEDULES_DIR / name}"
    path = folder / name
    if not path.is_file():
        if required:
            raise CampaignError(shown, "file not found")
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CampaignError(shown, f"invalid TOML: {exc}") from None


def _parse_groups(data: Mapping[str, Any], calendar: Calendar) -> dict[str, frozenset[str]]:
    shown = f"{SCHEDULES_DIR / REGIONS_FILE}:"
    _keys(data, shown, {"groups"})
    known = {r.id for r in calendar.regions()}
    groups: dict[str, frozenset[str]] = {}
    for name, raw in _table(data.get("groups", {}), _at(shown, "groups")).items():
        where = _at(shown, f"groups.{name}")
        regions = _strings(raw, where)
        for region in regions:
            if region not in known:
                raise CampaignError(where, f"unknown region {region!r} (regions are in schedules/calendar/terms.toml)")
        groups[name] = frozenset(regions)
    return groups


def _parse_alerts(data: Mapping[str, Any], campaigns: Mapping[str, Campaign]) -> dict[str, AlertType]:
    shown = f"{SCHEDULES_DIR / ALERTS_FILE}:"
    out: dict[str, AlertType] = {}
    for kind, raw in data.items():
        where = _at(shown, kind)
        if not ID_RE.match(kind):
            raise CampaignError(where, "a warning type is lowercase letters, digits and '-' (rainstorm, typhoon, ...)")
        table = _table(raw, where)
        _keys(table, where, ALERT_KEYS, {"name", "campaign", "levels"})
        campaign = _text(table["campaign"], _at(where, "campaign"))
        if campaign not in campaigns:
            raise CampaignError(_at(where, "campaign"), f"no campaign {campaign!r} in schedules/")
        levels = _strings(table["levels"], _at(where, "levels"))
        urgent = _strings(table.get("urgent", []), _at(where, "urgent"))
        for key, values in (("levels", levels), ("urgent", urgent)):
            for level in values:
                if level not in ALERT_LEVELS:
                    raise CampaignError(_at(where, key), f"unknown level {level!r} (known: {', '.join(ALERT_LEVELS)})")
        out[kind] = AlertType(
            kind, _text(table["name"], _at(where, "name")), campaign, frozenset(levels), frozenset(urgent)
        )
    return out
