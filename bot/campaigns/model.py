"""A campaign: when it fires (rules), who it reaches (schools, regions, grades) and what it says.

Built-in campaigns are TOML files in ``schedules/``; administrators' own campaigns are the same
document stored as JSON in Redis. Both are parsed by :mod:`bot.campaigns.loader` into the frozen
records here; the format is documented in ``schedules/README.md``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

from bot.campaigns.rules import When
from bot.notices.model import Mode, Question
from bot.roster.model import School

ID_RE: Final = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
Source = Literal["builtin", "custom"]


class CampaignError(ValueError):
    """A campaign (or template, or alert mapping) is invalid; ``str()`` names the file and the key."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.where = where
        self.message = message


@dataclass(frozen=True, slots=True)
class Who:
    """The schools a campaign reaches: everyone, or the union of regions, districts and schools.

    ``grades`` narrows it to those grades (empty: all). Opt-outs are the file's defaults; the runtime
    switches (``bot campaigns enable|disable --school``) override them per school or district.
    """

    restricted: bool = False  # False: everyone
    regions: frozenset[str] = frozenset()
    districts: frozenset[str] = frozenset()
    schools: frozenset[str] = frozenset()
    grades: tuple[int, ...] = ()
    opt_out_schools: frozenset[str] = frozenset()
    opt_out_regions: frozenset[str] = frozenset()

    def covers(self, school: School) -> bool:
        if not self.restricted:
            return True
        return school.region in self.regions or school.district in self.districts or school.id in self.schools

    def opted_out(self, school: School) -> bool:
        return school.id in self.opt_out_schools or school.region in self.opt_out_regions

    def includes_grades_of(self, other: Who) -> bool:
        """Whether every grade ``other`` addresses is one of ours (all grades, when ours are not narrowed)."""
        return not self.grades or (bool(other.grades) and set(other.grades) <= set(self.grades))


@dataclass(frozen=True, slots=True)
class What:
    """The notice a firing creates: template (file or inline), confirmation mode, lesson, urgency."""

    template: str = ""  # name of templates/campaigns/<name>.toml; "" when inline
    title: str = ""  # inline jinja2 (admin-made campaigns)
    body: str = ""
    sender: str = ""
    mode: Mode = "none"
    question: Question | None = None
    lesson: str = ""  # a lesson id ("drowning-g4-6") or a topic ("drowning": each child's own band)
    lessons: Mapping[int, str] = field(default_factory=dict)  # month → lesson, for monthly themes
    urgent: bool = False
    deadline_hours: float = 0.0  # 0: the deployment's notices.default_deadline_hours

    def lesson_for(self, month: int) -> str:
        return self.lessons.get(month, self.lesson)


@dataclass(frozen=True)
class Campaign:
    id: str
    name: str
    when: When | None  # None: fired only by external warnings (schedules/alerts.toml)
    who: Who
    what: What
    enabled: bool = True
    source: Source = "builtin"
    where: str = ""  # the file (or "custom campaign <id>") for messages
    description: str = ""
    owner_district: str = ""  # admin-made through the API: only ever reaches this district ...
    owner_school: str = ""  # ... or this school
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)  # the document as written
    # Built-in campaigns whose card already says what this one does: on a day one of them reaches a
    # school (all the grades this one addresses), this one sends that school nothing.
    yields_to: tuple[str, ...] = ()

    def covers(self, school: School) -> bool:
        """Whether the campaign's audience includes the school (before switches and opt-outs)."""
        if self.owner_district and school.district != self.owner_district:
            return False
        if self.owner_school and school.id != self.owner_school:
            return False
        return self.who.covers(school)


@dataclass(frozen=True, slots=True)
class Firing:
    """One notice a campaign sends: the schools of one district that fire at the same moment."""

    id: str  # "campaign:YYYY-MM-DD:district" (+ ":HHMM:region" in the rare case of two moments a day)
    campaign: Campaign
    at: datetime  # Asia/Shanghai
    district: str
    region: str
    schools: tuple[str, ...]  # sorted school ids

    @property
    def ts(self) -> float:
        return self.at.timestamp()


def firing_id(campaign: str, at: datetime, district: str) -> str:
    return f"{campaign}:{at:%Y-%m-%d}:{district}"


ALERT_LEVELS: Final = ("blue", "yellow", "orange", "red")


@dataclass(frozen=True, slots=True)
class AlertType:
    """One warning type of ``schedules/alerts.toml``: the campaign it fires, at which levels, how urgently."""

    type: str  # as posted: rainstorm, typhoon, ...
    name: str  # 暴雨, 台风, ...
    campaign: str
    levels: frozenset[str]  # levels that fire; others are recorded only
    urgent: frozenset[str]  # levels sent as urgent notices (not held by quiet hours)
