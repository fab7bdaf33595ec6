"""What a campaign says: jinja2 templates in ``templates/campaigns/<name>.toml``, rendered per firing.

A template file has three keys, each a jinja2 template (Simplified Chinese)::

    title = "..."     # the card's title: ≤ 20 characters, one line, after rendering
    sender = "..."    # optional; default: the school's name, or 学校安全提醒 for several schools
    body = \"\"\"...\"\"\"  # the full text on our H5 page (plain text, line breaks kept)

Line breaks in ``title`` and ``sender`` are removed after rendering (so a long ``{% if %}`` may be
written over several lines); the result must then be a valid card field (``check_card_field``).
The variables a template sees are listed in :func:`context` and in ``templates/campaigns/README.md``.
Templates run in jinja2's sandbox with ``StrictUndefined``: admin-made campaigns may carry inline
templates, and a misspelt variable is an error, never a blank in a parent's message.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from bot.campaigns.calendar import Calendar, CalendarError
from bot.campaigns.model import Campaign, CampaignError
from bot.lessons.content import TOPICS
from bot.notices.model import BODY_MAX, NoticeError, card_text, check_card_field
from bot.roster.model import School

TEMPLATE_KEYS: Final = frozenset({"title", "sender", "body"})
SENDER_MANY: Final = "学校安全提醒"
WEEKDAYS_CN: Final = ("周一", "周二", "周三", "周四", "周五", "周六", "周日")
HOLIDAY_SHORT: Final[Mapping[str, str]] = {
    "元旦": "元旦",
    "春节": "春节",
    "清明节": "清明",
    "劳动节": "五一",
    "端午节": "端午",
    "中秋节": "中秋",
    "国庆节": "国庆",
}
ALERT_LEVELS: Final[Mapping[str, str]] = {"blue": "蓝色", "yellow": "黄色", "orange": "橙色", "red": "红色"}
UPCOMING_DAYS: Final = 60  # how far ahead upcoming() looks for an event
_LINE_BREAKS = re.compile(r"\s*[\r\n\u2028\u2029]+\s*")
_BLANK_LINES = re.compile(r"\n{3,}")


@dataclass(frozen=True, slots=True)
class Rendered:
    title: str
    sender: str
    body: str


@dataclass(frozen=True, slots=True)
class EventView:
    """An event as templates see it: ``{{ holiday.short }}``, ``{{ school_break.start | md }}``."""

    kind: str
    name: str
    start: date
    end: date

    @property
    def short(self) -> str:
        return "".join(HOLIDAY_SHORT.get(part, part) for part in self.name.split("、"))

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    @property
    def after(self) -> date:
        """The day after it ends (a break: the first day back)."""
        return self.end + timedelta(days=1)


# -- filters --------------------------------------------------------------------------------------
def md(value: date | datetime) -> str:
    return f"{value.month}月{value.day}日"


def mdw(value: date | datetime) -> str:
    return f"{md(value)}（{WEEKDAYS_CN[value.weekday()]}）"


def hm(value: datetime) -> str:
    return f"{value.hour:02d}:{value.minute:02d}"


def mdhm(value: datetime) -> str:
    return f"{md(value)} {hm(value)}"


def _environment() -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    env.filters.update({"md": md, "mdw": mdw, "hm": hm, "mdhm": mdhm})
    return env


@dataclass(frozen=True)
class CampaignTemplate:
    name: str
    where: str  # the file (or campaign) and key prefix for messages
    title: jinja2.Template
    body: jinja2.Template
    sender: jinja2.Template | None

    def render(self, context: Mapping[str, Any]) -> Rendered:
        """Card fields and full text; CampaignError naming the template if it fails or breaks a limit."""
        title = self._run("title", self.title, context)
        sender = self._run("sender", self.sender, context) if self.sender is not None else ""
        body = self._run("body", self.body, context)
        title = _LINE_BREAKS.sub("", title).strip()
        sender = _LINE_BREAKS.sub("", sender).strip()
        if not sender:
            schools: Sequence[str] = context.get("schools", ())
            sender = card_text(schools[0]) if len(schools) == 1 else SENDER_MANY
        body = _BLANK_LINES.sub("\n\n", body.strip())
        try:
            check_card_field("title", title)
            check_card_field("sender", sender)
        except NoticeError as exc:
            raise CampaignError(
                f"{self.where}{exc.field}", f"{exc.message} (rendered: {title if exc.field == 'title' else sender!r})"
            ) from None
        if not body:
            raise CampaignError(f"{self.where}body", "renders empty")
        if len(body) > BODY_MAX:
            raise CampaignError(f"{self.where}body", f"renders {len(body)} characters; at most {BODY_MAX}")
        return Rendered(title, sender, body)

    def _run(self, key: str, template: jinja2.Template, context: Mapping[str, Any]) -> str:
        try:
            return template.render(**context)
        except jinja2.TemplateError as exc:
            raise CampaignError(f"{self.where}{key}", f"template error: {exc}") from None


class CampaignTexts:
    """The templates under ``templates/campaigns/``, compiled once; inline ones for admin campaigns."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = _environment()
        self._cache: dict[str, CampaignTemplate] = {}

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.stem for p in self.root.glob("*.toml"))

    def get(self, name: str) -> CampaignTemplate:
        found = self._cache.get(name)
        if found is not None:
            return found
        path = self.root / f"{name}.toml"
        shown = f"templates/campaigns/{name}.toml"
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", name) or not path.is_file():
            known = ", ".join(self.names()) or "none"
            raise CampaignError("", f"no template {shown} (known: {known})")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise CampaignError(shown, f"invalid TOML: {exc}") from None
        for key in data:
            if key not in TEMPLATE_KEYS:
                raise CampaignError(f"{shown}: {key}", f"unknown key (allowed: {', '.join(sorted(TEMPLATE_KEYS))})")
        found = self.compile(name, f"{shown}: ", data.get("title"), data.get("body"), data.get("sender"))
        self._cache[name] = found
        return found

    def compile(self, name: str, where: str, title: object, body: object, sender: object = None) -> CampaignTemplate:
        """Compile a template's parts; ``where`` ends with ": " or "." so that keys can be appended."""
        parts: dict[str, jinja2.Template | None] = {}
        for key, value, required in (("title", title, True), ("body", body, True), ("sender", sender, False)):
            if value is None or value == "":
                if required:
                    raise CampaignError(f"{where}{key}", "missing")
                parts[key] = None
                continue
            if not isinstance(value, str):
                raise CampaignError(f"{where}{key}", f"expected a string, got {type(value).__name__}")
            try:
                parts[key] = self.env.from_string(value)
            except jinja2.TemplateSyntaxError as exc:
                raise CampaignError(
                    f"{where}{key}", f"template syntax error, line {exc.lineno}: {exc.message}"
                ) from None
        title_t, body_t = parts["title"], parts["body"]
        assert title_t is not None and body_t is not None
        return CampaignTemplate(name, where, title_t, body_t, parts["sender"])


# -- the variables a template sees ----------------------------------------------------------------
def _events(calendar: Calendar, region: str, first: date, last: date) -> list[EventView]:
    out: list[EventView] = []
    for year in range(first.year, last.year + 1):
        try:
            events = calendar.events(year, region)
        except CalendarError:
            return []
        out += [EventView(e.kind, e.name, e.start, e.end) for e in events if e.end >= first and e.start <= last]
    unique = {(e.kind, e.name, e.start, e.end): e for e in out}
    return sorted(unique.values(), key=lambda e: (e.start, e.end, e.kind))


def _holiday_ahead(calendar: Calendar, day: date) -> EventView | None:
    """The holiday whose days off come next after ``day`` (None when the next days off are a plain weekend)."""
    d = day + timedelta(days=1)
    for _ in range(14):
        if not calendar.is_workday(d):
            found = calendar.holiday_at(d)
            return EventView("holiday", found.name, found.start, found.end) if found else None
        d += timedelta(days=1)
    return None


def context(
    calendar: Calendar,
    campaign: Campaign,
    at: datetime,
    region: str,
    schools: Sequence[School],
    *,
    deadline: float = 0.0,
    alert: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything a campaign template may use (documented in templates/campaigns/README.md)."""
    day = at.date()
    window = _events(calendar, region, day - timedelta(days=31), day + timedelta(days=UPCOMING_DAYS))

    def upcoming(kind: str, name: str | None = None, within: int = UPCOMING_DAYS) -> EventView | None:
        for event in window:
            soon = event.kind == kind and day < event.start <= day + timedelta(days=within)
            if soon and (name is None or name == event.name or name in event.name.split("、")):
                return event
        return None

    breaks = [e for e in (upcoming("winter_break"), upcoming("summer_break")) if e is not None]
    lesson = campaign.what.lesson_for(day.month)
    topic = lesson if lesson in TOPICS else next((t for t in TOPICS if lesson.startswith(t + "-")), "")
    try:
        region_name = calendar.region(region).name
    except CalendarError:
        region_name = region
    return {
        "campaign": {"id": campaign.id, "name": campaign.name},
        "at": at,
        "date": day,
        "time": hm(at),
        "year": day.year,
        "month": day.month,
        "weekday": WEEKDAYS_CN[day.weekday()],
        "schools": [s.name for s in schools],
        "school": schools[0].name if len(schools) == 1 else "",
        "region": region_name,
        "today": {e.kind for e in window if e.start == day},
        "during": {e.kind for e in window if e.start <= day <= e.end},
        "holiday": _holiday_ahead(calendar, day),
        "school_break": min(breaks, key=lambda e: e.start) if breaks else None,
        "upcoming": upcoming,
        "lesson": lesson,
        "lesson_topic": TOPICS.get(topic, ""),
        "deadline": datetime.fromtimestamp(deadline, at.tzinfo) if deadline else None,
        "alert": dict(alert) if alert is not None else None,
    }
