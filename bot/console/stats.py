"""Numbers for the console's pages: the notices of a place and their funnels.

Notices are found through the per-school and per-district indexes the service keeps
(``keys.notices_by_school`` / ``notices_by_district``), never by scanning the city's list. A
notice's funnel for a place is ``NoticeService.class_reports`` over the classes it was planned for
that lie in the place and that the viewer may view, summed: the same figures as the JSON API and
``bot report notice``, with each class's missing students.

A large notice seen whole (a district administrator's look at a district-wide notice: 1,300
classes) is counted instead from the notice's own records and confirmations: for lists and the
dashboard its totals in three reads (:meth:`Stats.totals`; the students counted as planned), for its
own page per school, with one read of each class's students (:meth:`Stats.whole`), a fifth of the
round trips of the per-class reports. Both keep every page well under 300 ms. Figures are kept for
:data:`FUNNEL_TTL` seconds per process (:data:`LIVE_TTL` on a notice's own page).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bot import clock
from bot.notices.api import may_see
from bot.notices.model import DELIVERED, OPENED, PROGRESS, SENT, TERMINAL_FAILURES, Notice
from bot.notices.service import ClassReport, Funnel
from bot.roster.authz import Scope, Subject
from bot.roster.chat import directory
from bot.roster.model import ACTIVE
from bot.store import keys

if TYPE_CHECKING:
    from bot.console.scope import Place
    from bot.console.web import Console, Viewer

FUNNEL_TTL = 15.0  # lists and dashboards
LIVE_TTL = 3.0  # a notice's own page and its live figures
LIST_MAX = 200
LARGE = 60  # classes: past this, a notice seen whole is counted per school (Stats.whole)


@dataclass
class SchoolTotals:
    school: str
    classes: int = 0
    targeted: int = 0
    confirmed: int = 0
    understood: int = 0


@dataclass
class NoticeStats:
    notice: Notice
    funnel: Funnel
    classes: list[ClassReport] = field(default_factory=list)  # per class (a notice seen in part, or small)
    schools: list[SchoolTotals] = field(default_factory=list)  # per school (a large notice seen whole)

    @property
    def confirm_pct(self) -> float | None:
        if self.notice.draft.mode == "none" or not self.funnel.targeted:
            return None
        return 100 * self.funnel.confirmed / self.funnel.targeted


def addresses(notice_audience: Iterable[Scope], place: Place) -> bool:
    """Whether a notice's audience reaches into the place (before the roster is consulted)."""
    for s in notice_audience:
        if s.district != place.district and place.kind != "mine":
            continue
        if place.kind == "district":
            return True
        for school in place.schools:
            if s.school in ("", school):
                if place.kind == "school" or not s.class_id:
                    return True
                if place.kind == "class" and s.class_id == place.class_id:
                    return True
                if place.kind == "mine" and (school, s.class_id) in place.classes:
                    return True
    return False


def visible(subject: Subject, notice: Notice, districts: Mapping[str, str]) -> bool:
    """The notice's page may be shown: the JSON API's rule (``may_see``), and for a teacher any notice
    that reaches one of their classes (a campaign's or the district's too); figures stay per class."""
    if may_see(subject, notice):
        return True
    if subject.role != "teacher":
        return False
    return any(
        scope.covers_class(districts.get(t.school, ""), t.school, t.class_id)
        for scope in notice.draft.audience
        for t in subject.who.teaches
    )


class Stats:
    def __init__(self, console: Console) -> None:
        self.c = console
        self._funnels: dict[str, tuple[float, list[ClassReport]]] = {}

    async def notice_ids(self, place: Place, *, since: float, limit: int = LIST_MAX) -> list[str]:
        """Ids of notices created since ``since`` addressed to (part of) the place, newest first."""
        d = await directory(self.c.roster)
        indexes = {keys.notices_by_school(s) for s in place.schools}
        if place.kind == "district":
            indexes |= {keys.notices_by_school(s) for s, dist in d.districts.items() if dist == place.district}
        districts = {place.district} | {d.districts.get(s, "") for s in place.schools}
        indexes |= {keys.notices_by_district(dist) for dist in districts if dist}
        async with self.c.redis.pipeline(transaction=False) as pipe:
            for key in sorted(indexes):
                pipe.zrevrangebyscore(key, "+inf", since, start=0, num=limit, withscores=True)
            replies = await pipe.execute()
        scored: dict[str, float] = {}
        for reply in replies:
            for nid, score in reply:
                scored[str(nid)] = float(score)
        return sorted(scored, key=lambda n: scored[n], reverse=True)[:limit]

    async def notices(self, viewer: Viewer, place: Place, *, days: int = 30, limit: int = 50) -> list[Notice]:
        """The place's recent notices the viewer may see, newest first."""
        since = clock.now() - days * 86400
        ids = await self.notice_ids(place, since=since)
        districts = (await directory(self.c.roster)).districts
        out: list[Notice] = []
        for i in range(0, len(ids), 100):
            part = ids[i : i + 100]
            async with self.c.redis.pipeline(transaction=False) as pipe:
                for nid in part:
                    pipe.hmget(keys.notice(nid), ["audience", "urgent"])
                heads: list[list[str | None]] = await pipe.execute()
            for nid, (audience, _urgent) in zip(part, heads, strict=True):
                scopes = tuple(Scope(**s) for s in json.loads(audience or "[]"))
                if not addresses(scopes, place):
                    continue
                notice = await self.c.notices.cached(nid)
                if notice is not None and visible(viewer.subject, notice, districts):
                    out.append(notice)
                if len(out) >= limit:
                    return out
        return out

    async def classes(
        self, viewer: Viewer, notice: Notice, place: Place
    ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(the notice's planned classes inside the place that the viewer may view, all planned classes)."""
        from bot.console.scope import may_view

        d = await directory(self.c.roster)
        planned = await self.c.notices.planned_classes(notice)
        out = []
        for school, cid in planned:
            district = d.districts.get(school, "")
            if place.covers(school, cid, district) and may_view(viewer.subject, district, school, cid):
                out.append((school, cid))
        return out, planned

    async def _class_reports(self, notice: Notice, classes: list[tuple[str, str]]) -> NoticeStats:
        reports = await self.c.notices.class_reports(notice, classes=classes) if classes else []
        total = Funnel()
        for r in reports:
            total.add(r.funnel)
        return NoticeStats(notice, total, reports)

    async def _cached(self, key: str, max_age: float, compute: Any, *args: Any) -> Any:
        hit = self._funnels.get(key)
        now = time.monotonic()
        if hit is not None and now - hit[0] < max_age:
            return hit[1]
        value = await compute(*args)
        if len(self._funnels) > 2000:
            self._funnels.clear()
        self._funnels[key] = (now, value)
        return value

    async def stats(
        self, viewer: Viewer, notice: Notice, place: Place, *, max_age: float = FUNNEL_TTL, per_school: bool = False
    ) -> NoticeStats:
        """The notice's figures for what the viewer sees of it in the place. A large notice seen whole:
        its totals (lists, dashboards), or with ``per_school`` its figures per school (its own page)."""
        classes, planned = await self.classes(viewer, notice, place)
        if len(classes) > LARGE and len(classes) == len(planned):
            if not per_school:
                totals: NoticeStats = await self._cached(f"{notice.id}|t", max_age, self.totals, notice)
                return totals
            whole: NoticeStats = await self._cached(f"{notice.id}|w", max_age, self.whole, notice, planned)
            return whole
        part: NoticeStats = await self._cached(
            f"{notice.id}|c|{hash(tuple(classes))}", max_age, self._class_reports, notice, classes
        )
        return part

    async def totals(self, notice: Notice) -> NoticeStats:
        """The whole notice's funnel in three reads whatever its size: the students it targeted when it
        was planned, its delivery records, its confirmations."""
        async with self.c.redis.pipeline(transaction=False) as pipe:
            pipe.hget(keys.notice(notice.id), "targeted")
            pipe.hvals(keys.notice_records(notice.id))
            if notice.draft.mode == "understand":
                pipe.hvals(keys.notice_confirmations(notice.id))
            else:
                pipe.hlen(keys.notice_confirmations(notice.id))
            targeted, records, confirmations = await pipe.execute()
        f = _delivery(records)
        f.targeted = int(targeted or 0)
        if isinstance(confirmations, list):
            f.confirmed = len(confirmations)
            f.understood = sum(1 for v in confirmations if v.endswith("k"))
        else:
            f.confirmed = int(confirmations)
        return NoticeStats(notice, f)

    async def whole(self, notice: Notice, planned: list[tuple[str, str]]) -> NoticeStats:
        """The whole notice's funnel, and per school, from the notice's records and confirmations and
        each planned class's students (active ones are targeted), in one pipelined round trip."""
        async with self.c.redis.pipeline(transaction=False) as pipe:
            pipe.hvals(keys.notice_records(notice.id))
            pipe.hgetall(keys.notice_confirmations(notice.id))
            for school, cid in planned:
                pipe.hvals(keys.class_students(school, cid))
            replies = await pipe.execute()
        confirmations: dict[str, str] = replies[1]
        f = _delivery(replies[0])
        schools: dict[str, SchoolTotals] = {}
        for (school, _cid), students in zip(planned, replies[2:], strict=True):
            row = schools.setdefault(school, SchoolTotals(school))
            row.classes += 1
            row.targeted += sum(1 for v in students if v.endswith("|" + ACTIVE))
        for student, value in confirmations.items():
            found = schools.get(student.partition("/")[0])
            if found is not None:
                found.confirmed += 1
                found.understood += value.endswith("k")
        for row in schools.values():
            f.targeted += row.targeted
            f.confirmed += row.confirmed
            f.understood += row.understood
        return NoticeStats(notice, f, schools=list(schools.values()))


def _delivery(records: list[str]) -> Funnel:
    """Reachable, sent, delivered, opened and failed guardians, from their delivery records."""
    f = Funnel(reachable=len(records))
    for raw in records:
        status = raw.partition("|")[0]
        rank = PROGRESS.get(status, -1)
        f.sent += rank >= PROGRESS[SENT]
        f.delivered += rank >= PROGRESS[DELIVERED]
        f.opened += rank >= PROGRESS[OPENED]
        f.failed += status in TERMINAL_FAILURES
    return f


def funnel_rows(f: Funnel, mode: str) -> list[dict[str, Any]]:
    """The funnel's stages for a chart: label, count, and the percentage of its base."""
    rows = [
        ("targeted", "学生", f.targeted, None),
        ("reachable", "可送达家长", f.reachable, None),
        ("sent", "已发送", f.sent, f.reachable),
        ("delivered", "已送达", f.delivered, f.reachable),
        ("opened", "已查看", f.opened, f.reachable),
    ]
    if mode != "none":
        rows.append(("confirmed", "已确认（学生）", f.confirmed, f.targeted))
    if mode == "understand":
        rows.append(("understood", "答对（学生）", f.understood, f.targeted))
    return [{"key": k, "label": label, "value": v, "pct": (100 * v / base) if base else None}
            for k, label, v, base in rows]  # fmt: skip
