"""Running campaigns: which notices go out when, and sending them once.

**Planning** (:func:`plan_firings`, pure, shared by the runner, the preview and the benchmark): for
each campaign, each school it reaches (audience, opt-outs and switches) gets its firing times from
the rules for its calendar region (computed once per region, or per school with days off of its own).
Schools of one district that fire at the same moment become **one notice** (audience = those
schools): a city's 1,300 schools make a few dozen notices per reminder, not 1,300. The firing id is
``campaign:YYYY-MM-DD:district``; it is the notice's idempotency key as well. A campaign that
``yields_to`` others sends a school nothing on a day one of them reaches it (their card already says
it: the drowning reminder on the eve of 国庆, which the holiday letter covers); the built-in campaigns
it yields to are looked up in the catalog, so a plan of a few campaigns leaves out the same days.

**Firing** (:meth:`CampaignRunner.tick`, run every minute by ``bot scheduler``, with an explicit
``now`` in tests): the firings due since the last tick are claimed in Redis (once, across any
number of schedulers) and created through ``NoticeService.submit`` as a district administrator of
that district would: authorisation, idempotent creation and the planned fan-out, then quiet hours,
pacing, follow-ups and reports apply as to any notice. A firing found late (the scheduler was down)
is sent if it is at most :data:`GRACE_SECONDS` late, else recorded as missed (``campaigns list``,
the API); either way it is recorded, so a restart never fires it twice.

**Preview** (:meth:`CampaignRunner.preview`): the same plan and the same rendering, for the next N
days, with the audience's size from the roster: what the preview shows is what the runner sends.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from bot import clock
from bot.campaigns.calendar import CalendarError
from bot.campaigns.loader import Catalog, sample_alert
from bot.campaigns.model import Campaign, CampaignError, Firing, What, Who, firing_id
from bot.campaigns.rules import shanghai
from bot.campaigns.store import CampaignStore, FiringRecord, Switches
from bot.campaigns.texts import Rendered, context
from bot.config import Config
from bot.notices.model import Draft, NoticeError
from bot.notices.service import NoticeService
from bot.roster.authz import Scope, Subject
from bot.roster.model import ACTIVE, School, grade_of
from bot.roster.store import RosterStore
from bot.store import keys
from bot.store.redis import Redis, get

if TYPE_CHECKING:
    from bot.scheduler import SchedulerContext

log = logging.getLogger(__name__)

# Defaults of [campaigns] in the config (grace_seconds, tick_seconds, lookback_days).
GRACE_SECONDS: Final = 6 * 3600  # a missed firing is still sent this late
TICK_SECONDS: Final = 60  # how often bot scheduler looks for due firings
LOOKBACK_SECONDS: Final = 35 * 86400  # after a long outage, firings older than this are not even recorded as missed
PREVIEW_DAYS_MAX: Final = 400
_WARNED: set[str] = set()


# -- planning ----------------------------------------------------------------------------------------
def plan_firings(
    catalog: Catalog,
    campaigns: Iterable[Campaign],
    schools: Mapping[str, School],
    switches: Switches,
    start: date,
    end: date,
    *,
    problems: list[str] | None = None,
) -> list[Firing]:
    """Every firing of these campaigns on the days ``start``..``end`` (local dates), sorted by time."""
    calendar = catalog.calendar
    ordered = sorted(schools.values(), key=lambda s: s.id)
    yields = _Yields(catalog, switches, start, end)
    bad_regions: set[str] = set()
    out: list[Firing] = []
    for campaign in campaigns:
        when = campaign.when
        if when is None:
            continue
        times: dict[tuple[str, str | None], list[datetime]] = {}
        buckets: dict[tuple[str, date], dict[tuple[datetime, str], list[str]]] = {}
        for school in ordered:
            if school.region in bad_regions or not campaign.covers(school) or not switches.is_on(campaign, school):
                continue
            own = school.id if calendar.has_school_overrides(school.id) else None
            found = times.get((school.region, own))
            if found is None:
                try:
                    found = when.firings(calendar, start, end, school.region, own)
                except CalendarError as exc:
                    bad_regions.add(school.region)
                    if problems is not None:
                        problems.append(f"school {school.id}: {exc}")
                    continue
                times[(school.region, own)] = found
            taken = yields.taken(campaign, school) if campaign.yields_to else _NO_DAYS
            for at in found:
                if taken and at.date() in taken:
                    continue
                buckets.setdefault((school.district, at.date()), {}).setdefault((at, school.region), []).append(
                    school.id
                )
        for (district, _day), groups in buckets.items():
            for i, ((at, region), ids) in enumerate(sorted(groups.items())):
                fid = firing_id(campaign.id, at, district)
                if i:  # a second moment the same day in one district (another region, or a school's own days)
                    fid += f":{at:%H%M}:{region}"
                out.append(Firing(fid, campaign, at, district, region, tuple(ids)))
    out.sort(key=lambda f: (f.at, f.campaign.id, f.district, f.id))
    return out


_NO_DAYS: Final[frozenset[date]] = frozenset()


class _Yields:
    """The days a school gets a card from the campaigns another one yields to (one plan's worth)."""

    def __init__(self, catalog: Catalog, switches: Switches, start: date, end: date) -> None:
        self.catalog, self.switches, self.start, self.end = catalog, switches, start, end
        self._fires: dict[tuple[str, str, str | None], frozenset[date]] = {}  # per region, as the rules are
        self._sends: dict[tuple[str, str], frozenset[date]] = {}
        self._taken: dict[tuple[str, str], frozenset[date]] = {}

    def taken(self, campaign: Campaign, school: School) -> frozenset[date]:
        """Days on which a campaign ``campaign`` yields to reaches the school and all of its grades."""
        key = (campaign.id, school.id)
        found = self._taken.get(key)
        if found is None:
            days: set[date] = set()
            for other_id in campaign.yields_to:
                other = self.catalog.builtin.get(other_id)
                if other is not None and other.who.includes_grades_of(campaign.who):
                    days |= self.sends(other, school)
            found = self._taken[key] = frozenset(days)
        return found

    def giving_way(self, campaign: Campaign, school: School, day: date) -> tuple[str, ...]:
        """The campaigns ``campaign`` yields to that reach the school (all its grades) on ``day``."""
        out: list[str] = []
        for other_id in campaign.yields_to:
            other = self.catalog.builtin.get(other_id)
            if other is not None and other.who.includes_grades_of(campaign.who) and day in self.sends(other, school):
                out.append(other_id)
        return tuple(out)

    def sends(self, campaign: Campaign, school: School) -> frozenset[date]:
        """Days a built-in campaign sends the school a card (after its own yields)."""
        key = (campaign.id, school.id)
        found = self._sends.get(key)
        if found is None:
            found = _NO_DAYS
            if campaign.when is not None and campaign.covers(school) and self.switches.is_on(campaign, school):
                calendar = self.catalog.calendar
                own = school.id if calendar.has_school_overrides(school.id) else None
                region_key = (campaign.id, school.region, own)
                fires = self._fires.get(region_key)
                if fires is None:
                    at = campaign.when.firings(calendar, self.start, self.end, school.region, own)
                    fires = self._fires[region_key] = frozenset(a.date() for a in at)
                found = fires - self.taken(campaign, school) if campaign.yields_to else fires
            self._sends[key] = found
        return found


def audience(firing: Firing) -> tuple[Scope, ...]:
    grades = firing.campaign.who.grades
    if not grades:
        return tuple(Scope(firing.district, school) for school in firing.schools)
    return tuple(Scope(firing.district, school, grade) for school in firing.schools for grade in grades)


def campaign_subject(firing: Firing) -> Subject:
    """Who a campaign sends as: an administrator of the firing's district (authz checks the audience)."""
    return Subject("district_admin", district=firing.district, name=f"campaign:{firing.campaign.id}")


# -- results -------------------------------------------------------------------------------------------
@dataclass
class TickReport:
    fired: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    notices: dict[str, str] = field(default_factory=dict)  # firing id → notice id


@dataclass(frozen=True, slots=True)
class PreviewEntry:
    firing: Firing
    rendered: Rendered
    students: int  # active students the notice addresses (within the preview's filter)
    school_names: tuple[str, ...]
    lesson: str

    def to_json(self) -> dict[str, Any]:
        f = self.firing
        what = f.campaign.what
        return {
            "firing": f.id,
            "campaign": f.campaign.id,
            "name": f.campaign.name,
            "at": f.at.isoformat(),
            "district": f.district,
            "region": f.region,
            "schools": list(f.schools),
            "school_names": list(self.school_names),
            "students": self.students,
            "title": self.rendered.title,
            "sender": self.rendered.sender,
            "body": self.rendered.body,
            "mode": what.mode,
            "urgent": what.urgent,
            "lesson": self.lesson,
        }


@dataclass(frozen=True, slots=True)
class RenderResult:
    """One campaign as one school gets it (:meth:`CampaignRunner.render_for`)."""

    firing: Firing
    rendered: Rendered
    scheduled: bool  # False: it sends the school nothing at ``firing.at`` (shown as if it did)
    # Asked for one day (exact) on which the rules fire but the campaign yields: the campaigns whose
    # card reaches the school instead (so ``scheduled`` is False).
    gives_way_to: tuple[str, ...] = ()


@dataclass
class Preview:
    start: datetime
    end: datetime
    entries: list[PreviewEntry]
    warnings: list[str]


# -- the runner ------------------------------------------------------------------------------------------
class CampaignRunner:
    def __init__(
        self,
        redis: Redis,
        config: Config,
        catalog: Catalog,
        roster: RosterStore,
        notices: NoticeService,
        *,
        ident: str | None = None,
    ) -> None:
        self.r = redis
        self.config = config
        self.grace = config.campaigns.grace_seconds
        self.lookback = config.campaigns.lookback_days * 86400
        self.catalog = catalog
        self.roster = roster
        self.notices = notices
        self.store = CampaignStore(redis, ident=ident)
        self._custom_cache: dict[str, Campaign | None] = {}

    # ---- campaigns

    async def custom(self) -> dict[str, Campaign]:
        """Admin-made campaigns that are valid now (an invalid one is logged once and left out)."""
        out: dict[str, Campaign] = {}
        for cid, stored in (await self.store.custom_documents()).items():
            text = repr(sorted(stored.items()))
            campaign = self._custom_cache.get(text)
            if text not in self._custom_cache:
                try:
                    campaign = self.catalog.parse(
                        stored.get("document"),
                        f"custom campaign {cid}",
                        owner_district=str(stored.get("owner_district") or ""),
                        owner_school=str(stored.get("owner_school") or ""),
                    )
                except CampaignError as exc:
                    log.error("custom campaign %s is not valid any more and is skipped: %s", cid, exc)
                    campaign = None
                if len(self._custom_cache) > 1000:
                    self._custom_cache.clear()
                self._custom_cache[text] = campaign
            if campaign is not None and campaign.id not in self.catalog.builtin:
                out[campaign.id] = campaign
        return out

    async def campaigns(self) -> list[Campaign]:
        return [*self.catalog.builtin.values(), *sorted((await self.custom()).values(), key=lambda c: c.id)]

    async def campaign(self, cid: str) -> Campaign | None:
        return self.catalog.builtin.get(cid) or (await self.custom()).get(cid)

    async def firings(
        self,
        start: date,
        end: date,
        *,
        campaigns: Iterable[Campaign] | None = None,
        schools: Mapping[str, School] | None = None,
        problems: list[str] | None = None,
    ) -> list[Firing]:
        """The firings in ``start``..``end``; with ``schools``, those of these schools only (each
        school's firings do not depend on the others', but a firing then lists only these)."""
        chosen = list(campaigns) if campaigns is not None else await self.campaigns()
        return plan_firings(
            self.catalog,
            chosen,
            schools if schools is not None else await self.roster.schools(),
            await self.store.switches(),
            start,
            end,
            problems=problems,
        )

    # ---- one firing → one draft

    def deadline(self, firing: Firing) -> float:
        hours = firing.campaign.what.deadline_hours or self.config.notices.default_deadline_hours
        return firing.ts + hours * 3600

    def render(
        self, firing: Firing, schools: Mapping[str, School], *, alert: Mapping[str, Any] | None = None
    ) -> Rendered:
        members = [schools[s] for s in firing.schools if s in schools]
        ctx = context(
            self.catalog.calendar,
            firing.campaign,
            firing.at,
            firing.region,
            members,
            deadline=self.deadline(firing),
            alert=alert,
        )
        return self.catalog.template(firing.campaign).render(ctx)

    def render_for(
        self,
        campaign: Campaign,
        school: School,
        schools: Mapping[str, School],
        start: date,
        *,
        exact: bool,
        switches: Switches | None = None,
    ) -> RenderResult:
        """One campaign as one school would get it (``bot campaigns render``, ``GET /api/campaigns/{id}/render``).

        Its firing on ``start`` (``exact``) or its next one within a year, as the preview and the
        scheduler see them: a day it gives way to another campaign (``yields_to``) is not its next
        firing, and asked for exactly such a day the result says to which campaigns (``gives_way_to``).
        When there is no firing, as if on ``start`` at 09:00 (``scheduled`` False). A warnings-only
        campaign renders a sample warning. Raises :class:`CampaignError` when the text does not render
        to valid card fields.
        """
        switches = switches or Switches({})
        at = datetime(start.year, start.month, start.day, 9, 0, tzinfo=shanghai())
        scheduled = False
        gives_way: tuple[str, ...] = ()
        if campaign.when is not None:
            calendar = self.catalog.calendar
            own = school.id if calendar.has_school_overrides(school.id) else None
            end = start if exact else start + timedelta(days=366)
            found = campaign.when.firings(calendar, start, end, school.region, own)
            yields = _Yields(self.catalog, switches, start, end)
            if exact and found:
                at = found[0]
                gives_way = yields.giving_way(campaign, school, at.date()) if campaign.yields_to else ()
                scheduled = not gives_way
            elif found:
                taken = yields.taken(campaign, school) if campaign.yields_to else _NO_DAYS
                first = next((f for f in found if f.date() not in taken), None)
                if first is not None:
                    at, scheduled = first, True
        firing = Firing(f"render:{campaign.id}", campaign, at, school.district, school.region, (school.id,))
        alert = sample_alert() if campaign.when is None else None
        rendered = self.render(firing, {**schools, school.id: school}, alert=alert)
        return RenderResult(firing, rendered, scheduled, gives_way)

    def giving_way(
        self, campaign: Campaign, schools: Iterable[School], switches: Switches, day: date
    ) -> dict[str, tuple[str, ...]]:
        """Schools (id → the campaigns it yields to there) that ``campaign``'s rules reach on ``day`` but
        that get nothing from it that day, because a campaign it yields to reaches them: as the plan."""
        if campaign.when is None or not campaign.yields_to:
            return {}
        calendar = self.catalog.calendar
        yields = _Yields(self.catalog, switches, day, day)
        out: dict[str, tuple[str, ...]] = {}
        for school in schools:
            if not campaign.covers(school) or not switches.is_on(campaign, school):
                continue
            own = school.id if calendar.has_school_overrides(school.id) else None
            try:
                fires = campaign.when.firings(calendar, day, day, school.region, own)
            except CalendarError:
                continue
            others = yields.giving_way(campaign, school, day) if fires else ()
            if others:
                out[school.id] = others
        return out

    def draft(
        self,
        firing: Firing,
        schools: Mapping[str, School],
        *,
        alert: Mapping[str, Any] | None = None,
        urgent: bool | None = None,
    ) -> Draft:
        rendered = self.render(firing, schools, alert=alert)
        what = firing.campaign.what
        return Draft(
            title=rendered.title,
            body=rendered.body,
            audience=audience(firing),
            sender=rendered.sender,
            mode=what.mode,
            question=what.question,
            deadline=self.deadline(firing),
            urgent=what.urgent if urgent is None else urgent,
            lesson=what.lesson_for(firing.at.month),
            campaign=firing.campaign.id,
            created_by=f"campaign:{firing.campaign.id}",
        )

    # ---- running

    async def tick(self, now: float | None = None) -> TickReport:
        """Fire what is due since the last tick; record what is too late; retake crashed claims."""
        now = clock.now() if now is None else now
        report = TickReport()
        last = await self.store.last_tick()
        since = max(now - self.grace if last is None else last, now - self.lookback)
        schools = await self.roster.schools()
        for record in await self.store.stale_claims(now):
            await self._retake(record, now, schools, report)
        if since < now:
            first = datetime.fromtimestamp(since, shanghai()).date()
            last_day = datetime.fromtimestamp(now, shanghai()).date()
            problems: list[str] = []
            for firing in await self.firings(first, last_day, problems=problems):
                if not since < firing.ts <= now:
                    continue
                if now - firing.ts > self.grace:
                    if await self.store.claim(firing, now, status="missed") == 1:
                        late = (now - firing.ts) / 3600
                        log.warning(
                            "campaign firing %s missed: %.1f h late, more than the grace of %d h",
                            firing.id,
                            late,
                            self.grace // 3600,
                        )
                        report.missed.append(firing.id)
                    continue
                if await self.store.claim(firing, now):
                    await self.fire(firing, now, schools, report)
            for problem in problems:
                if problem not in _WARNED:  # once per process, not every minute
                    _WARNED.add(problem)
                    log.error("campaigns: %s (its schools get no campaigns until it is fixed)", problem)
        await self.store.advance_tick(now)
        return report

    async def fire(
        self,
        firing: Firing,
        now: float,
        schools: Mapping[str, School],
        report: TickReport,
        *,
        alert: Mapping[str, Any] | None = None,
        urgent: bool | None = None,
    ) -> str:
        """Create the notice (idempotently by the firing id) and record the outcome; "" when it failed."""
        try:
            draft = self.draft(firing, schools, alert=alert, urgent=urgent)
            notice, _plan, created = await self.notices.submit(draft, campaign_subject(firing), key=firing.id, now=now)
            if not created:
                await self.notices.plan(notice, now=now)  # a crash between create and plan: plan it now (no-op if done)
        except (NoticeError, CampaignError) as exc:
            await self.store.finish(firing.id, "failed", now, error=str(exc))
            log.error("campaign firing %s failed: %s", firing.id, exc)
            report.failed.append(firing.id)
            return ""
        await self.store.finish(firing.id, "fired", now, notice=notice.id)
        log.info("campaign firing %s: notice %s to %d school(s)", firing.id, notice.id, len(firing.schools))
        report.fired.append(firing.id)
        report.notices[firing.id] = notice.id
        return notice.id

    async def fire_early(self, firing: Firing, *, now: float | None = None) -> TickReport:
        """Send a planned firing now instead of at its time (the demo; an operator in a hurry).

        It is claimed like any firing, so it will not fire again when its time comes; a firing
        already claimed gives an empty report.
        """
        now = clock.now() if now is None else now
        report = TickReport()
        if await self.store.claim(firing, now):
            await self.fire(firing, now, await self.roster.schools(), report)
        return report

    async def _retake(
        self, record: FiringRecord, now: float, schools: Mapping[str, School], report: TickReport
    ) -> None:
        """A claim whose process died before finishing it: finish it (never a second notice).

        A warning's firing is left for the warning to be posted again (feeds repeat them; the repost
        takes the stale claim over and has the warning's text), and recorded as missed after the grace.
        """
        if record.id.startswith("alert:"):
            if now - record.due > self.grace:
                await self.store.finish(record.id, "missed", now, error="interrupted; the warning was not posted again")
                report.missed.append(record.id)
            return
        if await self.store.claim(_stub(record), now) != 2:
            return  # another scheduler took it over first
        campaign = await self.campaign(record.campaign)
        if campaign is None:
            await self.store.finish(record.id, "failed", now, error="the campaign no longer exists")
            return
        firing = Firing(
            record.id,
            campaign,
            datetime.fromtimestamp(record.due, shanghai()),
            record.district,
            record.region,
            record.schools,
        )
        if now - record.due > self.grace:
            existing = await get(self.r, keys.notice_idempotency(record.id))
            if existing:
                await self.store.finish(record.id, "fired", now, notice=existing)
                report.fired.append(record.id)
            else:
                await self.store.finish(record.id, "missed", now, error="claimed by a process that stopped")
                report.missed.append(record.id)
            return
        await self.fire(firing, now, schools, report)

    # ---- preview

    async def preview(
        self,
        days: int,
        *,
        now: float | None = None,
        school: str = "",
        district: str = "",
        campaign: str = "",
    ) -> Preview:
        """Every firing in (now, now + days], rendered, with the number of students it addresses."""
        days = max(1, min(days, PREVIEW_DAYS_MAX))
        now = clock.now() if now is None else now
        tz = shanghai()
        start, end = datetime.fromtimestamp(now, tz), datetime.fromtimestamp(now + days * 86400, tz)
        schools = await self.roster.schools()
        chosen = await self.campaigns()
        if campaign:
            chosen = [c for c in chosen if c.id == campaign]
        problems: list[str] = []
        # Firings are per district: planning only the district asked for (a school's, when only a
        # school is) gives its firings exactly, for a fraction of a city's schools.
        home = district or (schools[school].district if school in schools else "")
        planned = {k: v for k, v in schools.items() if v.district == home} if home else schools
        firings = plan_firings(
            self.catalog, chosen, planned, await self.store.switches(), start.date(), end.date(), problems=problems
        )
        counts = _StudentCounter(self.r)
        entries: list[PreviewEntry] = []
        for firing in firings:
            if not now < firing.ts <= now + days * 86400:
                continue
            if district and firing.district != district:
                continue
            if school and school not in firing.schools:
                continue
            members = [school] if school else list(firing.schools)
            students = await counts.count(members, firing.campaign.who.grades)
            names = tuple(schools[s].name for s in firing.schools if s in schools)
            entries.append(
                PreviewEntry(
                    firing,
                    self.render(firing, schools),
                    students,
                    names,
                    firing.campaign.what.lesson_for(firing.at.month),
                )
            )
        return Preview(start, end, entries, self.warnings(start.date(), end.date(), problems))

    def warnings(self, start: date, end: date, problems: Sequence[str] = ()) -> list[str]:
        out = list(dict.fromkeys(problems))
        for year in self.catalog.calendar.unofficial_years(range(start.year, end.year + 1)):
            out.append(
                f"{year}: the official holiday arrangement is not published yet; holiday dates are computed "
                f"(upgrade chinesecalendar, or add [years.{year}] to schedules/calendar/overrides.toml)"
            )
        for line in out:
            if line not in _WARNED:  # once per process: list and preview are called again and again
                _WARNED.add(line)
                log.warning("campaigns: %s", line)
        return out


def _stub(record: FiringRecord) -> Firing:
    """Enough of a Firing to re-claim a record (the claim only needs ids and times)."""
    placeholder = Campaign(record.campaign, record.campaign, None, Who(), What())
    return Firing(
        record.id,
        placeholder,
        datetime.fromtimestamp(record.due, shanghai()),
        record.district,
        record.region,
        record.schools,
    )


class _StudentCounter:
    """Active students per school and grade, read once per school for a preview."""

    def __init__(self, redis: Redis) -> None:
        self.r = redis
        self._by_school: dict[str, dict[int, int]] = {}

    async def count(self, schools: Sequence[str], grades: Sequence[int]) -> int:
        missing = [s for s in schools if s not in self._by_school]
        if missing:
            await self._load(missing)
        total = 0
        for school in schools:
            per_grade = self._by_school.get(school, {})
            total += sum(n for g, n in per_grade.items() if not grades or g in grades)
        return total

    async def _load(self, schools: Sequence[str]) -> None:
        classes: list[tuple[str, str]] = []
        async with self.r.pipeline(transaction=False) as pipe:
            for school in schools:
                pipe.hkeys(keys.school_classes(school))
            class_ids: list[list[str]] = await pipe.execute()
        for school, ids in zip(schools, class_ids, strict=True):
            self._by_school[school] = {}
            classes += [(school, cid) for cid in ids]
        for i in range(0, len(classes), 500):
            part = classes[i : i + 500]
            async with self.r.pipeline(transaction=False) as pipe:
                for school, cid in part:
                    pipe.hvals(keys.class_students(school, cid))
                replies: list[list[str]] = await pipe.execute()
            for (school, cid), values in zip(part, replies, strict=True):
                try:
                    grade = grade_of(cid)
                except ValueError:
                    grade = -1
                active = sum(1 for v in values if v.endswith("|" + ACTIVE))
                per_grade = self._by_school[school]
                per_grade[grade] = per_grade.get(grade, 0) + active


# -- wiring --------------------------------------------------------------------------------------------
def build_runner(
    redis: Redis, config: Config, roster: RosterStore | None = None, notices: NoticeService | None = None
) -> CampaignRunner:
    """The runner on this tree's catalog; an invalid campaign file is a ConfigError naming file and key."""
    from bot.campaigns.loader import load_catalog
    from bot.config import ConfigError

    try:
        catalog = load_catalog()
    except (CampaignError, CalendarError) as exc:
        raise ConfigError("campaigns", "schedules/", str(exc)) from None
    roster = roster or RosterStore(redis)
    notices = notices or NoticeService(redis, config, roster)
    return CampaignRunner(redis, config, catalog, roster, notices)


def schedule(ctx: SchedulerContext) -> CampaignRunner:
    """Add the campaign job to ``bot scheduler``: every TICK_SECONDS, and once at start (missed firings)."""
    from redis.exceptions import RedisError

    runner = build_runner(ctx.redis, ctx.config)
    today = datetime.now(shanghai()).date()
    runner.warnings(today, today + timedelta(days=365))

    async def fire_due() -> None:
        try:
            await runner.tick()
        except RedisError as exc:
            log.error("campaigns: redis unavailable, will retry: %s", exc)

    ctx.scheduler.add_job(
        fire_due,
        "interval",
        seconds=ctx.config.campaigns.tick_seconds,
        id="campaigns",
        coalesce=True,
        max_instances=1,
        next_run_time=datetime.now(shanghai()),
    )
    return runner
