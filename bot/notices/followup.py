"""Follow-up: private reminders to guardians who have not confirmed, then a list for each class teacher.

The policy is data: a sorted set of ``notice:round`` members scored by when they are due, swept by
``bot scheduler``. A sweep claims a member with ZREM, so two schedulers never run one round twice.
Reminders go only inside the reminder window (default 08:00–20:00); one due at night waits for the
morning. A round sends cards only to guardians whose card went out and who have not confirmed.
Nothing is ever posted to a group: reminders are private cards, lists go only to that class's teacher.
"""

from __future__ import annotations

import json
import logging

from bot import clock
from bot.notices.model import Notice
from bot.notices.service import NoticeService
from bot.store import keys

log = logging.getLogger(__name__)

TEACHER_ROUND = "T"
TEACHER_LIST_DELAY = 3600.0  # after the last reminder, give families an hour before telling the teacher
REMINDABLE = ("s", "d", "o")  # sent, delivered, opened: not confirmed, not failed
CLASSES_PER_JOB = 50


def _due(notice: Notice, planned_at: float, round_: int) -> float:
    hours = notice.draft.followup.after_hours
    return planned_at + hours[round_ - 1] * 3600


async def sweep(service: NoticeService, *, now: float | None = None, limit: int = 100) -> int:
    """Run every follow-up round that is due; returns how many rounds ran."""
    now = clock.now() if now is None else now
    r = service.r
    members: list[str] = await r.zrangebyscore(keys.followups(), "-inf", now, start=0, num=limit)  # type: ignore[assignment]
    ran = 0
    for member in members:
        nid, _, what = member.rpartition(":")
        notice = await service.get(nid)
        if notice is None:
            await r.zrem(keys.followups(), member)
            continue
        start, end = notice.draft.followup.window
        if not clock.in_window(now, start, end):
            # Not at night: move it to the morning (only if it is still ours to move).
            await r.zadd(keys.followups(), {member: clock.into_window(now, start, end)}, xx=True)
            continue
        if not await r.zrem(keys.followups(), member):
            continue  # another scheduler claimed it
        ran += 1
        if what == TEACHER_ROUND:
            await _teacher_lists(service, notice)
        else:
            await _remind(service, notice, int(what), now)
    return ran


async def _remind(service: NoticeService, notice: Notice, round_: int, now: float) -> None:
    r, cfg = service.r, service.config
    planned_at = float(await r.hget(keys.notice(notice.id), "planned_at") or notice.created)
    rounds = notice.draft.followup.after_hours
    past_deadline = bool(notice.draft.deadline) and now > notice.draft.deadline
    sent = 0
    if not past_deadline:
        urgent = "1" if notice.draft.urgent else "0"
        batch: list[str] = []

        async def flush() -> int:
            todo = await service.still_unconfirmed(notice, batch)
            if todo:
                fields = {"k": "cards", "n": notice.id, "to": ",".join(todo), "u": urgent, "r": str(round_)}
                await r.xadd(keys.outbox(), fields)  # type: ignore[arg-type]
            batch.clear()
            return len(todo)

        async for openid, raw in r.hscan_iter(keys.notice_records(notice.id), count=2000):
            if str(raw)[:1] in REMINDABLE:
                batch.append(str(openid))
            if len(batch) >= cfg.delivery.batch_size:
                sent += await flush()
        if batch:
            sent += await flush()
        if sent:
            await r.incrby(keys.quota_used(clock.day_key(now)), sent)
    log.info("notice %s: reminder round %d for %d families", notice.id, round_, sent)
    start, end = notice.draft.followup.window
    if round_ < len(rounds) and not past_deadline:
        due = clock.into_window(max(now + 60, _due(notice, planned_at, round_ + 1)), start, end)
        await r.zadd(keys.followups(), {f"{notice.id}:{round_ + 1}": due})
    elif notice.draft.followup.teacher_list:
        due = clock.into_window(now + TEACHER_LIST_DELAY, start, end)
        await r.zadd(keys.followups(), {f"{notice.id}:{TEACHER_ROUND}": due})


async def _teacher_lists(service: NoticeService, notice: Notice) -> None:
    """Queue one job per group of classes; the worker tells each class teacher privately."""
    raw = await service.r.hget(keys.notice(notice.id), "classes")
    classes = json.loads(raw or "[]")
    for i in range(0, len(classes), CLASSES_PER_JOB):
        await service.r.xadd(keys.outbox(), {"k": "teacher_list", "n": notice.id,
                                             "classes": ",".join(classes[i : i + CLASSES_PER_JOB])})  # fmt: skip
