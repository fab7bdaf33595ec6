"""Sending notice cards (template messages): the ``cards`` outbox job.

For each batch of guardians: hold it in quiet hours (non-urgent), after WeChat's 45009 (until
midnight), or past a family's daily cap (until tomorrow); otherwise take tokens from the global
pace, mark each record *sending*, call WeChat with a ``client_msg_id`` derived from notice,
guardian and round, and record the outcome.

Exactly one card per guardian, even when a worker is killed at any point:
- a record still *queued* was never sent: send it;
- a record *sending* was maybe sent: resend with the same ``client_msg_id`` while WeChat's dedupe
  window (10 minutes) lasts, so WeChat drops a duplicate; after it, mark it *uncertain* and never
  resend (a missing card is reported; a doubled one cannot be taken back);
- any other status: already done, skip.

The family's daily cap counts cards that go out: a slot is taken before the send (so two batches
at once cannot both take the last one) and given back when WeChat's answer says the card was not
sent (-1, 45011, 45009, 43004, a refusal). A slot is the card's own (notice and round, in a set per
family and day), so taking it is idempotent and a crash anywhere between the steps neither counts
a card twice (a batch redone after a kill before its records were marked) nor lets one out
uncounted (a resend after a kill that gave its slot back): a resend of a card maybe sent takes its
slot again, past the cap if need be (it may have reached the family already), and no other.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace

from bot import clock
from bot.config import Config
from bot.delivery.pace import Pacer
from bot.notices.model import (
    FAILED,
    HELD,
    QUEUED,
    SENDING,
    SENT,
    UNCERTAIN,
    UNREACHABLE,
    Notice,
    Record,
    card_text,
)
from bot.notices.service import NoticeService
from bot.store import keys
from bot.store.redis import Redis, run_script_many
from bot.wechat.client import WeChatAPI
from bot.wechat.errors import (
    BusyError,
    DailyQuotaExceededError,
    MinuteQuotaExceededError,
    TooFrequentError,
    UserUnfollowedError,
    WeChatAPIError,
    WeChatTransportError,
)
from bot.wechat.protocol import mask_openid

log = logging.getLogger(__name__)

# Move held entries whose time has come back into the stream. KEYS: held, stream. ARGV: now, limit
_RELEASE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, raw in ipairs(due) do
  local fields = cjson.decode(raw)
  local args = {}
  for k, v in pairs(fields) do
    table.insert(args, k)
    table.insert(args, v)
  end
  redis.call('XADD', KEYS[2], '*', unpack(args))
  redis.call('ZREM', KEYS[1], raw)
end
return #due
"""

# Take a family's slot for one card today. KEYS: the family's cards of the day.
# ARGV: card, cap, ttl, force ("1": a resend of a card maybe sent, which keeps its slot past the cap).
# Returns 1 when the card has its slot (now or already), 0 when the family is at its cap.
_CHARGE = """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
if ARGV[4] ~= '1' and redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

REMINDER_ELIGIBLE = ("s", "d", "o")  # sent, delivered, opened: not confirmed, not failed
NOT_SENT = (QUEUED, UNREACHABLE, FAILED)  # outcomes WeChat answered without sending (to retry, or never)


def client_msg_id(notice_id: str, openid: str, round_: int) -> str:
    """The same for every attempt at one card, so WeChat drops a resend inside its window."""
    return hashlib.sha1(f"{notice_id}:{openid}:{round_}".encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Outcome:
    openid: str
    status: str  # new record status, or "" to leave it and retry later
    msgid: str = ""
    code: str = ""
    retry_at: float = 0.0


class CardSender:
    def __init__(self, config: Config, redis: Redis, api: WeChatAPI, notices: NoticeService) -> None:
        self.config = config
        self.r = redis
        self.api = api
        self.notices = notices
        d = config.delivery
        self.pacer = Pacer(redis, d.pace_per_second, d.pace_burst)
        self.sends = asyncio.Semaphore(config.worker.concurrency)
        self._release = redis.register_script(_RELEASE)
        self._charge = redis.register_script(_CHARGE)
        self.keymap = dict(item.split("=", 1) for item in config.notices.template_keys)

    # -- holding --------------------------------------------------------------------------------
    async def hold(self, fields: Mapping[str, str], openids: list[str], until: float) -> None:
        if not openids:
            return
        entry = {**fields, "to": ",".join(openids)}
        await self.r.zadd(keys.outbox_held(), {json.dumps(entry, separators=(",", ":"), sort_keys=True): until})

    async def release_due(self, now: float | None = None, limit: int = 500) -> int:
        now = clock.now() if now is None else now
        return int(await self._release(keys=[keys.outbox_held(), keys.outbox()], args=[now, limit]))

    # -- the job --------------------------------------------------------------------------------
    async def run(self, fields: Mapping[str, str], now: float | None = None) -> None:
        now = clock.now() if now is None else now
        nid = fields.get("n", "")
        openids = [o for o in fields.get("to", "").split(",") if o]
        urgent = fields.get("u") == "1"
        round_ = int(fields.get("r", "0") or 0)
        notice = await self.notices.cached(nid)
        if notice is None or not openids:
            log.warning("dropping a cards job for unknown notice %r", nid)
            return
        d = self.config.delivery
        day = clock.day_key(now)
        if not urgent and clock.in_window(now, d.quiet_start, d.quiet_end):
            await self.hold(fields, openids, clock.next_at(now, d.quiet_end))
            await self._mark(nid, openids, round_, HELD, now, only_if=(QUEUED,))
            return
        if await self.r.exists(keys.quota_exhausted(day)):
            await self.hold(fields, openids, clock.next_midnight(now) + 60)
            return

        todo, first_try = await self._eligible(nid, openids, round_, now)
        card = f"{nid}:{round_}"
        charged: set[str] = set()
        if not urgent and todo and d.family_daily_cap > 0:
            kept, over = await self._apply_cap(todo, first_try, card, day, d.family_daily_cap)
            charged = set(kept)
            todo = kept
            tomorrow = clock.next_at(clock.next_midnight(now), d.quiet_end)
            await self.hold(fields, over, tomorrow)
        if not todo:
            return
        # A resend keeps the time of the first try: WeChat's dedupe window runs from there, so
        # a record resent again and again must still turn uncertain once that window has passed.
        await self._mark(nid, todo, round_, SENDING, now, first_try=first_try)
        outcomes: list[Outcome] = []
        pending: list[asyncio.Task[Outcome]] = []
        i = 0
        while i < len(todo):
            granted = await self.pacer.take(len(todo) - i)
            for openid in todo[i : i + granted]:
                await self.sends.acquire()
                task = asyncio.create_task(self._send_one(notice, openid, round_))
                task.add_done_callback(lambda _t: self.sends.release())
                pending.append(task)
            i += granted
        outcomes = list(await asyncio.gather(*pending))
        # before the retries are held (in _record), so a retry finds its family's slot free again
        # (a resend keeps its slot whatever it is answered: the first try may have reached the family)
        new_slots = charged.difference(first_try)
        await self._uncharge(card, day, [o.openid for o in outcomes if o.openid in new_slots and o.status in NOT_SENT])
        # A resend answered with an error we retry (-1, 45011, 45009…) tells nothing about the
        # first try, which may have reached the parent: it stays "sending", with its first time.
        outcomes = [replace(o, status="") if o.openid in first_try and o.status == QUEUED else o for o in outcomes]
        await self._record(notice, fields, round_, outcomes, clock.now())

    async def _eligible(
        self, nid: str, openids: list[str], round_: int, now: float
    ) -> tuple[list[str], dict[str, int]]:
        """Whom to send to now, and for those already tried (maybe sent), the time of the first try."""
        window = self.config.wechat.client_msg_id_window
        records = await self.r.hmget(keys.notice_records(nid), openids)
        marks: list[str | None] = [None] * len(openids)
        if round_ > 0:
            marks = await self.r.hmget(keys.notice_reminders(nid), openids)  # type: ignore[assignment]
        todo: list[str] = []
        first_try: dict[str, int] = {}
        uncertain: list[str] = []
        for openid, raw, mark in zip(openids, records, marks, strict=True):
            rec = Record.decode(raw)  # type: ignore[arg-type]
            if rec is None:
                continue
            if round_ == 0:
                state, at = rec.status, rec.at
            else:
                if rec.status not in REMINDER_ELIGIBLE:
                    continue  # confirmed, failed, or the first card not sent yet
                state, at = QUEUED, 0
                if mark:
                    r, st, at_raw = [*mark.split("|"), "", ""][:3]
                    if int(r or 0) > round_:
                        continue
                    if int(r or 0) == round_:
                        state, at = st, int(at_raw or 0)
            if state in (QUEUED, HELD):
                todo.append(openid)
            elif state == SENDING:
                if now - at <= window - 30:  # a margin so the resend lands inside WeChat's window
                    todo.append(openid)
                    first_try[openid] = at
                else:
                    uncertain.append(openid)
        if uncertain:
            log.warning("%d cards of notice %s left uncertain by a crash past the dedupe window", len(uncertain), nid)
            if round_ == 0:
                await self._mark(nid, uncertain, 0, UNCERTAIN, now)
            else:
                await self.r.hset(keys.notice_reminders(nid), mapping={o: f"{round_}|x|{int(now)}" for o in uncertain})
        return todo, first_try

    async def _apply_cap(
        self, openids: list[str], first_try: Mapping[str, int], card: str, day: str, cap: int
    ) -> tuple[list[str], list[str]]:
        """Take each family's slot for ``card``: those within their cap (or resending), and the rest."""
        ttl = 2 * 86400
        calls = [([keys.family_cap(o, day)], [card, cap, ttl, "1" if o in first_try else "0"]) for o in openids]
        got = await run_script_many(self.r, self._charge, calls)
        keep = [o for o, ok in zip(openids, got, strict=True) if int(ok)]
        over = [o for o, ok in zip(openids, got, strict=True) if not int(ok)]
        return keep, over

    async def _uncharge(self, card: str, day: str, openids: list[str]) -> None:
        """Give back the slots of cards WeChat did not send: only a card that goes out counts."""
        if not openids:
            return
        async with self.r.pipeline(transaction=False) as pipe:
            for o in openids:
                pipe.srem(keys.family_cap(o, day), card)
            await pipe.execute()

    async def _mark(
        self,
        nid: str,
        openids: list[str],
        round_: int,
        status: str,
        now: float,
        only_if: tuple[str, ...] = (),
        first_try: Mapping[str, int] | None = None,
    ) -> None:
        if not openids:
            return
        at = {o: int(now) for o in openids} | {o: t for o, t in (first_try or {}).items() if o in openids}
        if round_ > 0:
            await self.r.hset(keys.notice_reminders(nid), mapping={o: f"{round_}|{status}|{at[o]}" for o in openids})
            return
        if only_if:
            raws = await self.r.hmget(keys.notice_records(nid), openids)
            openids = [o for o, raw in zip(openids, raws, strict=True)
                       if (rec := Record.decode(raw)) is not None and rec.status in only_if]  # type: ignore[arg-type]  # fmt: skip
            if not openids:
                return
        await self.r.hset(keys.notice_records(nid), mapping={o: Record(status, at=at[o]).encode() for o in openids})

    # -- the class teacher's list (after the last reminder) ---------------------------------------
    async def teacher_lists(self, fields: Mapping[str, str]) -> int:
        """Tell each class teacher, privately, how many families of their class have not confirmed.

        The card opens the class's list on our page (teachers only); the names never leave that page
        or the teacher's own chat.
        """
        notice = await self.notices.cached(fields.get("n", ""))
        if notice is None:
            return 0
        classes = [tuple(c.split("/", 1)) for c in fields.get("classes", "").split(",") if "/" in c]
        reports = await self.notices.class_reports(notice, classes=[(s, c) for s, c in classes])
        keymap = dict(item.split("=", 1) for item in self.config.notices.teacher_template_keys)
        sent = 0
        for report in reports:
            info = await self.notices.roster.class_info(report.school, report.class_id)
            if info is None or not info.teacher or not report.missing:
                continue
            values = {"class": card_text(report.label), "count": f"{len(report.missing)}人未确认",
                      "action": "点开查看名单，私下提醒"}  # fmt: skip
            url = f"{self.config.server.base_url()}/n/{notice.id}/class/{report.school}/{report.class_id}"
            try:
                await self.api.send_template(
                    info.teacher,
                    self.config.notices.teacher_template_id,
                    {keymap[k]: v for k, v in values.items() if k in keymap},
                    url=url,
                    client_msg_id=client_msg_id(notice.id, info.teacher, -1),
                )
                sent += 1
            except WeChatAPIError as exc:
                log.warning("class list for %s not sent to its teacher: %s", report.label, exc)
        return sent

    # -- one card -------------------------------------------------------------------------------
    def card_data(self, notice: Notice, round_: int) -> dict[str, str]:
        draft = notice.draft
        title = draft.title if round_ == 0 else card_text("提醒：" + draft.title)
        deadline = clock.local(draft.deadline) if draft.deadline else None
        values = {
            "title": title,
            "sender": draft.sender,
            "deadline": deadline.strftime("%Y年%m月%d日 %H:%M") if deadline else "尽快",
            "action": "请点开查看并确认" if draft.mode != "none" else "请点开查看",
        }
        return {self.keymap[name]: value for name, value in values.items() if name in self.keymap}

    async def _send_one(self, notice: Notice, openid: str, round_: int) -> Outcome:
        url = f"{self.config.server.base_url()}/n/{notice.id}"
        try:
            msgid = await self.api.send_template(
                openid,
                self.config.notices.template_id,
                self.card_data(notice, round_),
                url=url,
                client_msg_id=client_msg_id(notice.id, openid, round_),
            )
        except UserUnfollowedError:
            return Outcome(openid, UNREACHABLE, code="43004")
        except DailyQuotaExceededError:
            return Outcome(openid, QUEUED, code="45009", retry_at=-1)
        except (MinuteQuotaExceededError, TooFrequentError, BusyError) as exc:
            return Outcome(openid, QUEUED, code=str(exc.errcode), retry_at=self.config.delivery.retry_after)
        except WeChatTransportError:
            # WeChat may have sent it: keep "sending" and retry soon with the same client_msg_id.
            return Outcome(openid, "", code="transport", retry_at=self.config.delivery.retry_after)
        except WeChatAPIError as exc:
            log.warning("card to %s refused: %s", mask_openid(openid), exc)
            return Outcome(openid, FAILED, code=str(exc.errcode))
        return Outcome(openid, SENT, msgid=str(msgid))

    async def _record(
        self, notice: Notice, fields: Mapping[str, str], round_: int, outcomes: list[Outcome], now: float
    ) -> None:
        nid = notice.id
        day = clock.day_key(now)
        records: dict[str, str] = {}
        reminders: dict[str, str] = {}
        retry: dict[float, list[str]] = {}
        quota_out: list[str] = []
        async with self.r.pipeline(transaction=False) as pipe:
            for o in outcomes:
                if o.status == SENT:
                    pipe.set(keys.template_msg(o.msgid), nid, ex=3 * 86400)
                if o.code == "45009":
                    quota_out.append(o.openid)
                elif o.retry_at:
                    retry.setdefault(now + o.retry_at, []).append(o.openid)
                if not o.status:
                    continue
                if round_ == 0:
                    records[o.openid] = Record(o.status, o.msgid, int(now), o.code).encode()
                else:
                    reminders[o.openid] = f"{round_}|{o.status}|{int(now)}"
            if records:
                pipe.hset(keys.notice_records(nid), mapping=records)  # type: ignore[arg-type]
            if reminders:
                pipe.hset(keys.notice_reminders(nid), mapping=reminders)  # type: ignore[arg-type]
            if quota_out:
                pipe.set(keys.quota_exhausted(day), "1", ex=int(clock.next_midnight(now) - now) + 60)
            await pipe.execute()
        if quota_out:
            log.error("WeChat's daily template quota is used up (45009); sending resumes after midnight")
            await self.hold(fields, quota_out, clock.next_midnight(now) + 60)
        for at, openids in retry.items():
            await self.hold(fields, openids, at)
