"""External warnings (暴雨, 台风, 高温, 洪水 …): ``POST /api/alerts`` fires the mapped campaign at once.

``schedules/alerts.toml`` maps a warning type to a campaign, the levels that fire it and the levels
that make it urgent (urgent notices are not held by quiet hours). A warning reaches the schools in
its regions that the caller's token covers (a district administrator's district, a school
administrator's school), that the campaign covers and that have not switched it off, one notice per
district, like a scheduled firing.

The same warning posted twice fires once: its id (given, or a hash of type, level, regions and
valid_until) makes the firing id ``alert:<id>:<district>``, claimed once in Redis like any firing
and used as the notice's idempotency key. Every warning received, and what it fired, is kept for
:data:`KEEP_DAYS` (``GET /api/alerts``; the console's list later).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from bot import clock
from bot.campaigns.model import ALERT_LEVELS, Firing
from bot.campaigns.rules import shanghai
from bot.campaigns.runner import CampaignRunner, TickReport
from bot.campaigns.texts import ALERT_LEVELS as LEVEL_NAMES
from bot.roster.authz import Subject
from bot.roster.model import School
from bot.store import keys
from bot.store.redis import hgetall

KEEP_DAYS: Final = 30
REGIONS_MAX: Final = 100
VALID_MAX_DAYS: Final = 15  # a warning valid for longer than this is a mistake
_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class AlertError(ValueError):
    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


@dataclass(frozen=True, slots=True)
class Alert:
    id: str
    type: str
    level: str
    regions: tuple[str, ...]
    valid_until: float

    def context(self, type_name: str) -> dict[str, Any]:
        """What the campaign's template sees as ``alert``."""
        return {
            "id": self.id,
            "type": self.type,
            "type_name": type_name,
            "level": self.level,
            "level_name": LEVEL_NAMES[self.level],
            "regions": list(self.regions),
            "valid_until": datetime.fromtimestamp(self.valid_until, shanghai()),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "level": self.level,
            "regions": list(self.regions),
            "valid_until": datetime.fromtimestamp(self.valid_until, shanghai()).isoformat(),
        }


def parse_alert(body: Mapping[str, Any], *, now: float | None = None) -> Alert:
    """``{type, level, regions, valid_until, id?}``; AlertError names the field to fix."""
    now = clock.now() if now is None else now
    allowed = {"type", "level", "regions", "valid_until", "id"}
    for key in body:
        if key not in allowed:
            raise AlertError(key, f"unknown field (allowed: {', '.join(sorted(allowed))})")
    kind = body.get("type")
    if not isinstance(kind, str) or not re.fullmatch(r"[a-z0-9-]{1,40}", kind):
        raise AlertError("type", "a warning type such as rainstorm, typhoon, heat, flood")
    level = body.get("level")
    if level not in ALERT_LEVELS:
        raise AlertError("level", f"one of {', '.join(ALERT_LEVELS)}")
    regions = body.get("regions")
    if not isinstance(regions, list) or not regions or len(regions) > REGIONS_MAX:
        raise AlertError("regions", f"a list of 1-{REGIONS_MAX} region ids (as in schedules/calendar/terms.toml)")
    if any(not isinstance(r, str) or not r.strip() for r in regions):
        raise AlertError("regions", "region ids are non-empty strings")
    until = _parse_time(body.get("valid_until"))
    if until <= now:
        raise AlertError("valid_until", "the warning has already expired")
    if until > now + VALID_MAX_DAYS * 86400:
        raise AlertError("valid_until", f"at most {VALID_MAX_DAYS} days ahead")
    clean = tuple(sorted({r.strip() for r in regions}))
    given = body.get("id")
    if given is not None:
        if not isinstance(given, str) or not _ID.match(given):
            raise AlertError("id", "1-64 letters, digits, '.', '_' or '-'")
        alert_id = given
    else:
        basis = f"{kind}|{level}|{','.join(clean)}|{int(until)}"
        alert_id = "h" + hashlib.sha256(basis.encode()).hexdigest()[:20]
    return Alert(alert_id, kind, str(level), clean, until)


def _parse_time(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            pass
        else:
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=shanghai())
            return parsed.timestamp()
    raise AlertError("valid_until", "an ISO 8601 time (2026-07-20T20:00+08:00) or epoch seconds")


@dataclass
class AlertResult:
    alert: Alert
    status: str  # fired | duplicate | ignored | no_schools
    reason: str = ""
    campaign: str = ""
    urgent: bool = False
    fired: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "alert": self.alert.to_json(),
            "status": self.status,
            "reason": self.reason,
            "campaign": self.campaign,
            "urgent": self.urgent,
            "fired": self.fired,
        }


class AlertService:
    def __init__(self, runner: CampaignRunner) -> None:
        self.runner = runner
        self.r = runner.r

    async def receive(self, alert: Alert, subject: Subject | None, *, now: float | None = None) -> AlertResult:
        """Fire the mapped campaign for the schools of the warning's regions within the caller's scope."""
        now = clock.now() if now is None else now
        result = await self._receive(alert, subject, now)
        await self._remember(result, now, subject.district if subject is not None else "")
        return result

    async def _receive(self, alert: Alert, subject: Subject | None, now: float) -> AlertResult:
        mapping = self.runner.catalog.alerts.get(alert.type)
        if mapping is None:
            known = ", ".join(sorted(self.runner.catalog.alerts)) or "none"
            return AlertResult(
                alert, "ignored", f"no campaign for warning type {alert.type!r} (schedules/alerts.toml: {known})"
            )
        result = AlertResult(alert, "ignored", campaign=mapping.campaign, urgent=alert.level in mapping.urgent)
        if alert.level not in mapping.levels:
            levels = ", ".join(sorted(mapping.levels))
            result.reason = f"{mapping.name}{LEVEL_NAMES[alert.level]}预警 does not fire (levels: {levels})"
            return result
        campaign = await self.runner.campaign(mapping.campaign)
        if campaign is None:  # pragma: no cover - the loader checks the mapping
            result.reason = f"campaign {mapping.campaign!r} not found"
            return result
        schools = await self.runner.roster.schools()
        switches = await self.runner.store.switches()
        wanted = set(alert.regions)
        by_district: dict[str, list[School]] = {}
        for school in sorted(schools.values(), key=lambda s: s.id):
            if school.region not in wanted or not _in_scope(subject, school):
                continue
            if campaign.covers(school) and switches.is_on(campaign, school):
                by_district.setdefault(school.district, []).append(school)
        if not by_district:
            result.status, result.reason = (
                "no_schools",
                "no school of these regions in your scope receives this campaign",
            )
            return result
        at = datetime.fromtimestamp(now, shanghai())
        context = alert.context(mapping.name)
        duplicates = 0
        for district, members in sorted(by_district.items()):
            firing = Firing(
                f"alert:{alert.id}:{district}", campaign, at, district, members[0].region, tuple(s.id for s in members)
            )
            claim = await self.runner.store.claim(firing, now, ttl_days=KEEP_DAYS)
            if claim == 0:
                found = await self.runner.store.records([firing.id])
                record = found[0] if found else None
                duplicates += 1
                result.fired.append(
                    {
                        "district": district,
                        "firing": firing.id,
                        "schools": list(firing.schools),
                        "notice": record.notice if record else "",
                        "duplicate": True,
                        "status": record.status if record else "claimed",
                    }
                )
                continue
            report = TickReport()
            notice = await self.runner.fire(firing, now, schools, report, alert=context, urgent=result.urgent)
            result.fired.append(
                {
                    "district": district,
                    "firing": firing.id,
                    "schools": list(firing.schools),
                    "notice": notice,
                    "duplicate": False,
                    "status": "fired" if notice else "failed",
                }
            )
        result.status = "duplicate" if duplicates == len(result.fired) else "fired"
        return result

    async def _remember(self, result: AlertResult, now: float, district: str) -> None:
        key = keys.alert(result.alert.id)
        entry = {**result.to_json(), "received": now}
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.hset(key, f"p:{district}", repr(now))  # who posted it may see it, even when it fired nothing
            if result.status != "duplicate":
                pipe.hsetnx(key, "first", json.dumps(entry, ensure_ascii=False))
            pipe.hset(key, "last", json.dumps(entry, ensure_ascii=False))
            for item in result.fired:
                if not item["duplicate"]:
                    pipe.hset(key, f"d:{item['district']}", json.dumps(item, ensure_ascii=False))
            pipe.expire(key, KEEP_DAYS * 86400)
            pipe.zadd(keys.alerts(), {result.alert.id: now}, nx=True)
            pipe.zremrangebyscore(keys.alerts(), "-inf", now - KEEP_DAYS * 86400)
            await pipe.execute()

    async def recent(self, *, limit: int = 50, district: str = "") -> list[dict[str, Any]]:
        """Recent warnings, newest first: as first received, and what they fired (per district)."""
        ids = await self.r.zrevrange(keys.alerts(), 0, max(0, limit - 1))
        out: list[dict[str, Any]] = []
        for alert_id in ids:
            raw = await hgetall(self.r, keys.alert(str(alert_id)))
            if not raw:
                continue
            entry = json.loads(raw.get("first") or raw.get("last") or "{}")
            fired = [json.loads(v) for k, v in sorted(raw.items()) if k.startswith("d:")]
            if district:
                fired = [f for f in fired if f.get("district") == district]
                if not fired and f"p:{district}" not in raw:
                    continue
            entry["fired"] = fired
            out.append(entry)
        return out


def _in_scope(subject: Subject | None, school: School) -> bool:
    if subject is None:
        return True  # the operator (CLI, tests)
    if subject.role == "district_admin":
        return school.district == subject.district
    if subject.role == "school_admin":
        return school.id == subject.school and school.district == subject.district
    return False
