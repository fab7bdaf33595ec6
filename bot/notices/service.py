"""Notices: create (idempotently), plan the fan-out, record delivery, opening and confirmation, report.

Redis (keys in ``bot/store/keys.py``): per notice, under the hash tag ``{n:<id>}``, the notice hash,
one delivery record per guardian (``status|msgid|time|errcode``, about 100 bytes each in Redis),
and one confirmation per student. The outbox carries batches of guardians, not one entry per
guardian, so planning a city-wide notice writes a few thousand stream entries, not half a million.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bot import clock
from bot.config import Config
from bot.notices.model import (
    BLOCKED,
    CONFIRMED,
    DELIVERED,
    OPENED,
    PROGRESS,
    QUEUED,
    SENDING,
    SENT,
    TERMINAL_FAILURES,
    UNDERSTOOD,
    UNREACHABLE,
    Draft,
    FollowUp,
    Notice,
    NoticeError,
    Record,
)
from bot.roster.authz import Action, NoticeObj, Scope, Subject, can
from bot.roster.model import ACTIVE, Who, class_label, decode_links
from bot.roster.store import RosterStore
from bot.store import keys
from bot.store.autopipeline import Script, shared
from bot.store.redis import Redis, hgetall, run_script_many

log = logging.getLogger(__name__)

# Move a guardian's record forward (never back): opened after delivered, confirmed after opened...
# KEYS: records. ARGV: openid, new status, now, msgid ("" keeps), allowed-from ("" = by progress)
_ADVANCE = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return -1 end
local st, msgid, at, code = string.match(cur, '^([^|]*)|([^|]*)|([^|]*)|?(.*)$')
local rank = {q=0, h=0, p=1, s=2, d=3, o=4, c=5, k=6}
local new = ARGV[2]
if ARGV[5] ~= '' then
  if not string.find(ARGV[5], st, 1, true) then return 0 end
elseif (rank[new] or -1) <= (rank[st] or 99) then
  return 0
end
if ARGV[4] ~= '' then msgid = ARGV[4] end
redis.call('HSET', KEYS[1], ARGV[1], new .. '|' .. (msgid or '') .. '|' .. ARGV[3] .. '|')
return 1
"""

# Add many fields only where missing (planning again after a crash must not reset a record).
# KEYS: hash. ARGV: value, field...
_HSETNX_MANY = """
local added = 0
for i = 2, #ARGV do
  added = added + redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[1])
end
return added
"""

# Claim the planning of a notice. KEYS: notice. ARGV: now, stale seconds.
# "done": planned already; "busy": another process started less than `stale` ago; "go": ours.
_CLAIM_PLAN = """
if redis.call('HEXISTS', KEYS[1], 'planned_at') == 1 then return 'done' end
local started = tonumber(redis.call('HGET', KEYS[1], 'planning') or '')
if started and tonumber(ARGV[1]) - started < tonumber(ARGV[2]) then return 'busy' end
redis.call('HSET', KEYS[1], 'planning', ARGV[1])
return 'go'
"""

PLAN_STALE = 120  # seconds: a plan started longer ago and never finished was cut off by a crash

# One confirmation per student, whoever gives it; an understood answer upgrades a plain one.
# KEYS: records, confirmations. ARGV: openid, now, understood ("1"/"0"), student keys...
_CONFIRM = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return -1 end
local new = 0
for i = 4, #ARGV do
  local prev = redis.call('HGET', KEYS[2], ARGV[i])
  if not prev then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[1] .. '|' .. ARGV[2] .. '|' .. (ARGV[3] == '1' and 'k' or ''))
    new = new + 1
  elseif ARGV[3] == '1' and string.sub(prev, -1) ~= 'k' then
    redis.call('HSET', KEYS[2], ARGV[i], prev .. 'k')
  end
end
local st, msgid = string.match(cur, '^([^|]*)|([^|]*)|')
local status = ARGV[3] == '1' and 'k' or 'c'
local rank = {q=0, h=0, p=1, s=2, d=3, o=4, c=5, k=6}
if (rank[status] or 0) > (rank[st] or 0) or rank[st] == nil then
  redis.call('HSET', KEYS[1], ARGV[1], status .. '|' .. (msgid or '') .. '|' .. ARGV[2] .. '|')
end
return new
"""


_CONFIRM_SCRIPT = Script(_CONFIRM)


@dataclass(frozen=True, slots=True)
class Plan:
    notice_id: str
    classes: int
    targeted: int  # active students in the audience
    reachable: int  # distinct guardians with a card planned
    without_guardian: int  # students nobody has bound yet
    today: int  # cards that fit today's template quota
    later: tuple[tuple[str, int], ...]  # (YYYYMMDD, cards) spread over the next days
    warning: str = ""
    quota_left: int = 0  # template sends left on the first sending day, before this notice
    starts_tomorrow: bool = False  # planned in quiet hours: the first cards go out the next morning


@dataclass(frozen=True, slots=True)
class ConfirmResult:
    ok: bool
    reason: str = ""  # "not_in_audience" | "wrong_answer" | "no_confirmation" | "unknown_notice"
    students: int = 0  # students newly confirmed by this call
    right_answer: str = ""


@dataclass
class Funnel:
    targeted: int = 0
    reachable: int = 0
    sent: int = 0
    delivered: int = 0
    opened: int = 0
    confirmed: int = 0
    understood: int = 0
    failed: int = 0

    def add(self, other: Funnel) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass
class ClassReport:
    school: str
    class_id: str
    funnel: Funnel
    missing: list[tuple[str, str, str]] = field(default_factory=list)  # (student id, name, reason)

    @property
    def label(self) -> str:
        return class_label(self.class_id)


REASONS = {
    "no_guardian": "未绑定",
    "unfollowed": "已取消关注",
    "not_reached": "未送达",
    "not_opened": "未查看",
    "not_confirmed": "已查看未确认",
}


def new_notice_id(now: float) -> str:
    """Sortable by time, unguessable: base-36 milliseconds + 6 random characters."""
    ms = int(now * 1000)
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while ms:
        ms, r = divmod(ms, 36)
        out = digits[r] + out
    return out + secrets.token_hex(3)


class NoticeService:
    def __init__(self, redis: Redis, config: Config, roster: RosterStore) -> None:
        self.r = redis
        self.config = config
        self.roster = roster
        self._advance = redis.register_script(_ADVANCE)
        self._hsetnx_many = redis.register_script(_HSETNX_MANY)
        self._claim_plan = redis.register_script(_CLAIM_PLAN)
        self._cache: dict[str, Notice] = {}

    # -- creating -----------------------------------------------------------------------------
    async def create(self, draft: Draft, *, key: str = "", now: float | None = None) -> tuple[Notice, bool]:
        """Store a validated notice. The same idempotency key gives the same notice (created=False)."""
        draft.validate()
        now = clock.now() if now is None else now
        n = self.config.notices
        changes: dict[str, Any] = {}
        if not draft.deadline:
            changes["deadline"] = now + n.default_deadline_hours * 3600
        f = draft.followup
        if not f.after_hours or not all(f.window):
            changes["followup"] = FollowUp(
                f.after_hours or tuple(n.reminder_hours),
                f.window if all(f.window) else (n.reminder_window_start, n.reminder_window_end),
                f.teacher_list,
            )
        if changes:
            draft = Draft(**{**_fields(draft), **changes})
        notice = Notice(new_notice_id(now), draft, now)
        if key and len(key) > 128:
            raise NoticeError("idempotency_key", "at most 128 characters")
        # The notice is written before its key is claimed, so whoever finds the key taken always
        # finds the winner's notice complete; the loser deletes its own and returns the winner's.
        await self.r.hset(keys.notice(notice.id), mapping=notice.to_redis())  # type: ignore[arg-type]
        if key and not await self.r.set(keys.notice_idempotency(key), notice.id, nx=True, ex=7 * 86400):
            await self.r.delete(keys.notice(notice.id))
            existing_id = await self.r.get(keys.notice_idempotency(key))
            existing = await self.get(str(existing_id)) if existing_id else None
            if existing is None:
                raise NoticeError("idempotency_key", "the notice with this key was deleted; use a new key")
            # The first caller may have died between claiming the key and indexing its notice:
            # indexing again (same member, same score) is a no-op otherwise, and repairs that.
            await self._index(existing)
            return existing, False
        await self._index(notice)
        return notice, True

    async def _index(self, notice: Notice) -> None:
        """List the notice by time, and by school or district (so their lists never scan the city's)."""
        entry = {notice.id: notice.created}
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.zadd(keys.notices_by_time(), entry)
            for scope in notice.draft.audience:
                if scope.school:
                    pipe.zadd(keys.notices_by_school(scope.school), entry)
                else:
                    pipe.zadd(keys.notices_by_district(scope.district), entry)
            await pipe.execute()

    async def submit(
        self, draft: Draft, subject: Subject, *, key: str = "", now: float | None = None
    ) -> tuple[Notice, Plan | None, bool]:
        """The one path every sender takes (chat, API, CLI, campaigns): check the sender may address
        this audience (urgent needs a role that may send urgent notices), create, plan.
        Returns (notice, plan, created); a repeated idempotency key returns the first notice."""
        draft.validate()
        action: Action = "send_urgent" if draft.urgent else "send"
        if not can(subject, action, NoticeObj(draft.audience, draft.urgent)):
            raise NoticeError("audience", "you may not send this notice to this audience" +
                              ("（紧急通知需要学校或教育局管理员）" if draft.urgent else ""))  # fmt: skip
        notice, created = await self.create(draft, key=key, now=now)
        # A repeated key after a crash mid-plan finishes the plan; otherwise plan() does nothing.
        plan = await self.plan(notice, now=now)
        if not created:
            plan = None
        return notice, plan, created

    async def get(self, notice_id: str) -> Notice | None:
        if not notice_id or len(notice_id) > 40:
            return None
        raw = await hgetall(self.r, keys.notice(notice_id))
        return Notice.from_redis(raw) if raw.get("id") else None

    async def cached(self, notice_id: str) -> Notice | None:
        """The notice's content (immutable once created), cached in the process."""
        hit = self._cache.get(notice_id)
        if hit is None:
            hit = await self.get(notice_id)
            if hit is not None:
                if len(self._cache) > 1000:
                    self._cache.clear()
                self._cache[notice_id] = hit
        return hit

    # -- audience -----------------------------------------------------------------------------
    async def resolve(self, audience: Iterable[Scope]) -> list[tuple[str, str]]:
        """The (school, class) pairs an audience covers, in a stable order."""
        schools = await self.roster.schools()
        out: dict[tuple[str, str], None] = {}
        for scope in audience:
            in_district = [s.id for s in schools.values() if s.district == scope.district]
            candidates = [scope.school] if scope.school else in_district
            for school_id in candidates:
                school = schools.get(school_id)
                if school is None or school.district != scope.district:
                    continue
                if scope.class_id and scope.grade is None:
                    out[(school_id, scope.class_id)] = None
                    continue
                for cid in sorted(await self.roster.classes(school_id)):
                    if scope.covers_class(school.district, school_id, cid):
                        out[(school_id, cid)] = None
        return list(out)

    async def _audience_members(self, classes: list[tuple[str, str]]) -> tuple[dict[str, int], int, int]:
        """Guardians (openid → number of their children in the audience), targeted students, unbound."""
        guardians: dict[str, int] = {}
        targeted = unbound = 0
        chunk = 500
        for i in range(0, len(classes), chunk):
            part = classes[i : i + chunk]
            async with self.r.pipeline(transaction=False) as pipe:
                for school, cid in part:
                    pipe.hgetall(keys.class_students(school, cid))
                    pipe.hgetall(keys.class_guardians(school, cid))
                replies = await pipe.execute()
            for j in range(len(part)):
                students: dict[str, str] = replies[2 * j]
                links: dict[str, str] = replies[2 * j + 1]
                for sid, raw in students.items():
                    if not raw.endswith("|" + ACTIVE):
                        continue
                    targeted += 1
                    found = decode_links(links.get(sid))
                    if not found:
                        unbound += 1
                    for link in found:
                        guardians[link.openid] = guardians.get(link.openid, 0) + 1
        return guardians, targeted, unbound

    # -- planning -----------------------------------------------------------------------------
    async def plan(self, notice: Notice, *, now: float | None = None, again: bool = False) -> Plan | None:
        """One record per guardian and outbox batches; spread what today's quota cannot take.

        Runs once per notice: None if it already ran, or if another process is planning it right now.
        A plan left unfinished by a crash (started more than PLAN_STALE seconds ago, never finished)
        runs again, and so does ``again=True``: records are only added where missing and a worker
        sends only to guardians whose record still says queued, so a repeated batch never means a
        second card.
        """
        now = clock.now() if now is None else now
        claim = await self._claim_plan(keys=[keys.notice(notice.id)], args=[repr(now), PLAN_STALE])
        if claim != "go" and not again:
            return None
        classes = await self.resolve(notice.draft.audience)
        guardians, targeted, unbound = await self._audience_members(classes)
        openids = list(guardians)
        cfg = self.config
        queued = Record(QUEUED).encode()
        records_key = keys.notice_records(notice.id)
        # HSETNX, 2,000 at a time in one script call: planning again after a crash must not reset
        # records already sent or confirmed, and one command per guardian costs too much here.
        chunks = [([records_key], [queued, *openids[i : i + 2000]]) for i in range(0, len(openids), 2000)]
        await run_script_many(self.r, self._hsetnx_many, chunks, concurrency=8)

        days = await self._spread(len(openids), notice.draft.urgent, now)
        fit_today = days[0][1]

        batch = cfg.delivery.batch_size
        urgent = "1" if notice.draft.urgent else "0"
        pos = 0
        async with self.r.pipeline(transaction=False) as pipe:
            for day, count, release in days:
                if count:
                    pipe.incrby(keys.quota_used(day), count)
                    pipe.expire(keys.quota_used(day), 3 * 86400)
                for start in range(pos, pos + count, batch):
                    to = ",".join(openids[start : min(start + batch, pos + count)])
                    fields = {"k": "cards", "n": notice.id, "to": to, "u": urgent, "r": "0"}
                    if release <= now:
                        pipe.xadd(keys.outbox(), fields)  # type: ignore[arg-type]
                    else:
                        pipe.zadd(keys.outbox_held(), {json.dumps(fields, separators=(",", ":")): release})
                pos += count
            rounds = notice.draft.followup.after_hours if notice.draft.mode != "none" else ()
            if rounds and openids:
                pipe.zadd(keys.followups(), {f"{notice.id}:1": now + rounds[0] * 3600})
            pipe.hset(
                keys.notice(notice.id),
                mapping={
                    "status": "sending",
                    "planned_at": repr(now),
                    "targeted": targeted,
                    "reachable": len(openids),
                    "without_guardian": unbound,
                    "classes": json.dumps([f"{s}/{c}" for s, c in classes]),
                },
            )
            pipe.hdel(keys.notice(notice.id), "planning")
            await pipe.execute()
        later = tuple((d, c) for d, c, _ in days[1:] if c)
        self._cache.pop(notice.id, None)
        tomorrow = days[0][0] != clock.day_key(now)
        warning = quota_warning(fit_today, later, tomorrow=tomorrow)
        return Plan(notice.id, len(classes), targeted, len(openids), unbound, fit_today, later, warning,
                    starts_tomorrow=tomorrow)  # fmt: skip

    async def estimate(self, audience: Iterable[Scope], *, urgent: bool = False, now: float | None = None) -> Plan:
        """What planning this draft now would do, writing nothing: the families it reaches and how
        its cards fit the template quota left today (the rest spread over the next days). Shown to
        the sender before a notice is sent (chat preview, ``POST /api/notices/estimate``,
        ``bot send notice --dry-run``, the console's preview)."""
        now = clock.now() if now is None else now
        classes = await self.resolve(audience)
        guardians, targeted, unbound = await self._audience_members(classes)
        days = await self._spread(len(guardians), urgent, now)
        later = tuple((d, c) for d, c, _ in days[1:] if c)
        today = days[0][1]
        used = int(await self.r.get(keys.quota_used(days[0][0])) or 0)
        left = max(0, self.config.wechat.template_quota - used)
        tomorrow = days[0][0] != clock.day_key(now)
        warning = quota_warning(today, later, tomorrow=tomorrow)
        return Plan("", len(classes), targeted, len(guardians), unbound, today, later, warning, left, tomorrow)

    async def _spread(self, cards: int, urgent: bool, now: float) -> list[tuple[str, int, float]]:
        """(day, cards, release time) for ``cards`` cards: what today's quota takes, then the next days'.

        Non-urgent cards planned in quiet hours go out when these end, maybe on the next day: they
        count against the quota of that day, not of the evening they were planned in. Urgent
        warnings are not postponed (WeChat's 45009 still stops them)."""
        cfg = self.config
        first_day = now
        if not urgent and clock.in_window(now, cfg.delivery.quiet_start, cfg.delivery.quiet_end):
            first_day = clock.next_at(now, cfg.delivery.quiet_end)
        today_key = clock.day_key(first_day)
        quota = cfg.wechat.template_quota
        used = int(await self.r.get(keys.quota_used(today_key)) or 0)
        fit_today = cards if urgent else max(0, min(cards, quota - used))
        days: list[tuple[str, int, float]] = [(today_key, fit_today, now)]
        rest = cards - fit_today
        day_start = first_day
        while rest > 0:
            day_start = clock.next_at(clock.next_midnight(day_start), cfg.delivery.quiet_end)
            day_used = int(await self.r.get(keys.quota_used(clock.day_key(day_start))) or 0)
            take = min(rest, max(0, quota - day_used))
            if take == 0 and day_used >= quota:
                continue
            days.append((clock.day_key(day_start), take, day_start))
            rest -= take
        return days

    async def resume_stale_plans(self, *, now: float | None = None, lookback: float = 86400) -> int:
        """Finish plans a crash cut off (run by the scheduler); returns how many were resumed."""
        now = clock.now() if now is None else now
        ids: list[str] = await self.r.zrangebyscore(keys.notices_by_time(), now - lookback, now)  # type: ignore[assignment]
        resumed = 0
        for nid in ids:
            planning, planned = await self.r.hmget(keys.notice(nid), ["planning", "planned_at"])
            if planning and not planned and now - float(planning) >= PLAN_STALE:
                notice = await self.get(nid)
                if notice is not None and await self.plan(notice, now=now) is not None:
                    resumed += 1
                    log.warning("notice %s: finished a plan cut off by a crash", nid)
        return resumed

    # -- what families do ---------------------------------------------------------------------
    async def record(self, notice_id: str, openid: str) -> Record | None:
        return Record.decode(await self.r.hget(keys.notice_records(notice_id), openid))  # type: ignore[arg-type]

    async def opened(self, notice_id: str, openid: str, *, now: float | None = None) -> bool:
        now = clock.now() if now is None else now
        result = await self._advance(keys=[keys.notice_records(notice_id)], args=[openid, OPENED, int(now), "", ""])
        return int(result) >= 0

    async def delivered(self, openid: str, msgid: str, status: str, *, now: float | None = None) -> bool:
        """TEMPLATESENDJOBFINISH: ``success`` → delivered; ``failed:user block`` → blocked."""
        notice_id = await self.r.get(keys.template_msg(msgid))
        if not notice_id:
            return False
        now = clock.now() if now is None else now
        if status == "success":
            new, allowed = DELIVERED, ""
        else:
            new, allowed = ("b" if "block" in status else "f"), SENDING + SENT
        result = await self._advance(
            keys=[keys.notice_records(str(notice_id))], args=[openid, new, int(now), msgid, allowed]
        )
        return int(result) == 1

    async def children_in(self, notice: Notice, who: Who) -> list[tuple[str, str, str]]:
        """(school, class, student) of this guardian's children that the notice addresses."""
        schools = await self.roster.schools_of(c.school for c in who.children)
        out = []
        for c in who.children:
            school = schools.get(c.school)
            if school and any(s.covers_class(school.district, c.school, c.class_id) for s in notice.draft.audience):
                out.append((c.school, c.class_id, c.student))
        return out

    async def confirm(
        self, notice_id: str, openid: str, who: Who, *, answer: int | None = None, now: float | None = None
    ) -> ConfirmResult:
        notice = await self.cached(notice_id)
        if notice is None:
            return ConfirmResult(False, "unknown_notice")
        if notice.draft.mode == "none":
            return ConfirmResult(False, "no_confirmation")
        children = await self.children_in(notice, who)
        if not children:
            return ConfirmResult(False, "not_in_audience")
        understood = False
        q = notice.draft.question
        if notice.draft.mode == "understand" and q is not None:
            if answer is None or not 0 <= answer < len(q.options):
                return ConfirmResult(False, "wrong_answer", right_answer="")
            understood = answer == q.answer
        now = clock.now() if now is None else now
        students = [f"{s}/{sid}" for s, _c, sid in children]
        result = int(
            await shared(self.r).run(
                _CONFIRM_SCRIPT,
                [keys.notice_records(notice_id), keys.notice_confirmations(notice_id)],
                [openid, int(now), "1" if understood else "0", *students],
            )
        )
        if result < 0:
            return ConfirmResult(False, "not_in_audience")
        if notice.draft.mode == "understand" and not understood and q is not None:
            return ConfirmResult(False, "wrong_answer", students=result, right_answer=q.options[q.answer])
        return ConfirmResult(True, students=result)

    async def still_unconfirmed(self, notice: Notice, openids: list[str]) -> list[str]:
        """Those guardians with a child in the audience whom nobody has confirmed yet.

        (A child confirmed by the other parent needs no reminder to this one.)
        """
        if not openids:
            return []
        schools = await self.roster.schools()
        async with self.r.pipeline(transaction=False) as pipe:
            for o in openids:
                pipe.get(keys.identity(o))
            whos = [Who.decode(raw) for raw in await pipe.execute()]
        wanted: dict[str, list[str]] = {}
        for o, who in zip(openids, whos, strict=True):
            mine = []
            for c in who.children:
                school = schools.get(c.school)
                if school and any(s.covers_class(school.district, c.school, c.class_id) for s in notice.draft.audience):
                    mine.append(f"{c.school}/{c.student}")
            wanted[o] = mine
        flat = sorted({k for ks in wanted.values() for k in ks})
        confirmed: set[str] = set()
        if flat:
            raws = await self.r.hmget(keys.notice_confirmations(notice.id), flat)
            confirmed = {k for k, raw in zip(flat, raws, strict=True) if raw}
        return [o for o in openids if any(k not in confirmed for k in wanted[o])]

    async def waiting_for(self, openid: str, *, now: float | None = None) -> list[Notice]:
        """Recent notices this guardian has a card for and has not confirmed, newest first."""
        now = clock.now() if now is None else now
        since = now - self.config.notices.recent_days * 86400
        # A parent's 「确认」 runs this: on the shared connection (bot.store.autopipeline), not redis-py's pool.
        pipe = shared(self.r)
        ids: list[str] = await pipe.execute("ZREVRANGEBYSCORE", keys.notices_by_time(), repr(now + 60), repr(since))
        if not ids:
            return []
        raws = await pipe.execute_many(*(("HGET", keys.notice_records(nid), openid) for nid in ids))
        out = []
        for nid, raw in zip(ids, raws, strict=True):
            rec = Record.decode(raw)
            if rec is None or rec.status in (CONFIRMED, UNDERSTOOD) or rec.status in TERMINAL_FAILURES:
                continue
            notice = await self.cached(nid)
            if notice is not None and notice.draft.mode != "none":
                out.append(notice)
        return out

    # -- reports ------------------------------------------------------------------------------
    async def planned_classes(self, notice: Notice) -> list[tuple[str, str]]:
        """The (school, class) pairs the notice was planned for."""
        raw = await self.r.hget(keys.notice(notice.id), "classes")
        return [(c.split("/", 1)[0], c.split("/", 1)[1]) for c in json.loads(raw or "[]")]

    async def confirmations(self, notice_id: str, students: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """(school, student) → "openid|time|k?" for those of ``students`` somebody confirmed."""
        if not students:
            return {}
        raws = await self.r.hmget(keys.notice_confirmations(notice_id), [f"{s}/{sid}" for s, sid in students])
        return {st: str(raw) for st, raw in zip(students, raws, strict=True) if raw}

    async def class_reports(self, notice: Notice, *, classes: list[tuple[str, str]] | None = None) -> list[ClassReport]:
        """The funnel and the missing students per class (the roster as it is now).

        Two pipelined round trips per 200 classes (roster, then records and confirmations), so a
        city-wide report reads 15,000 classes in well under a minute.
        """
        wanted = classes if classes is not None else await self.planned_classes(notice)
        reports: list[ClassReport] = []
        for i in range(0, len(wanted), 200):
            reports += await self._class_reports(notice.id, wanted[i : i + 200])
        return reports

    async def _class_reports(self, notice_id: str, chunk: list[tuple[str, str]]) -> list[ClassReport]:
        records_key, conf_key = keys.notice_records(notice_id), keys.notice_confirmations(notice_id)
        async with self.r.pipeline(transaction=False) as pipe:
            for school, cid in chunk:
                pipe.hgetall(keys.class_students(school, cid))
                pipe.hgetall(keys.class_guardians(school, cid))
            roster = await pipe.execute()
        classes = []
        async with self.r.pipeline(transaction=False) as pipe:
            for j, (school, cid) in enumerate(chunk):
                students: dict[str, str] = roster[2 * j]
                links = {sid: decode_links(v) for sid, v in roster[2 * j + 1].items()}
                active = {sid: raw.rpartition("|")[0] for sid, raw in students.items() if raw.endswith("|" + ACTIVE)}
                openids = sorted({g.openid for sid in active for g in links.get(sid, [])})
                pipe.hmget(records_key, openids or ["-"])
                pipe.hmget(conf_key, [f"{school}/{sid}" for sid in active] or ["-"])
                classes.append((school, cid, active, links, openids))
            answers = await pipe.execute()
        reports: list[ClassReport] = []
        for j, (school, cid, active, links, openids) in enumerate(classes):
            recs = {o: r for o, raw in zip(openids, answers[2 * j], strict=False) if (r := Record.decode(raw))}
            confs = dict(zip(active, answers[2 * j + 1], strict=False))
            f = Funnel(targeted=len(active))
            report = ClassReport(school, cid, f)
            for o in openids:
                if o in recs:
                    rank = PROGRESS.get(recs[o].status, -1)
                    f.reachable += 1
                    f.sent += rank >= PROGRESS[SENT] or recs[o].status == BLOCKED  # WeChat took it; the parent blocks
                    f.delivered += rank >= PROGRESS[DELIVERED]
                    f.opened += rank >= PROGRESS[OPENED]
                    f.failed += recs[o].status in TERMINAL_FAILURES
            for sid, name in sorted(active.items(), key=lambda kv: kv[1]):
                conf = confs.get(sid)
                if conf:
                    f.confirmed += 1
                    f.understood += str(conf).endswith("k")
                    continue
                mine = [recs[g.openid] for g in links.get(sid, []) if g.openid in recs]
                report.missing.append((sid, name, _reason(mine)))
            reports.append(report)
        return reports

    async def funnel(self, notice: Notice) -> Funnel:
        total = Funnel()
        for report in await self.class_reports(notice):
            total.add(report.funnel)
        return total


def _reason(records: list[Record]) -> str:
    """Why a student has no confirmation: the furthest any of their guardians got."""
    if not records:
        return "no_guardian"
    best = max(records, key=lambda r: PROGRESS.get(r.status, -1))
    rank = PROGRESS.get(best.status, -1)
    if rank >= PROGRESS[OPENED]:
        return "not_confirmed"
    if rank >= PROGRESS[SENT]:
        return "not_opened"
    if all(r.status == UNREACHABLE for r in records):
        return "unfollowed"
    return "not_reached"


def _fields(draft: Draft) -> dict[str, Any]:
    return {name: getattr(draft, name) for name in draft.__dataclass_fields__}


def quota_warning(today: int, later: tuple[tuple[str, int], ...], *, tomorrow: bool = False) -> str:
    """The sender's warning when the first sending day's template quota cannot take every card ("" when
    it can). ``tomorrow``: written in quiet hours, the cards start the next morning."""
    if not later:
        return ""
    spread = "、".join(f"{d[4:6]}月{d[6:]}日 {c}条" for d, c in later)
    day = "明天" if tomorrow else "今天"
    return f"{day[0]}日模板消息额度不足：{day}发送{today}条，其余顺延：{spread}。"
