"""Children's data, kept as briefly as the work needs (PIPL): erasing a person, and retention.

- ``erase_guardian``: what 解绑 of the last child and ``bot privacy erase --guardian`` do: unlink the
  guardian from every child, delete their identity and conversation state (a guardian who also
  teaches keeps their classes; a count of wrong binding proofs runs out its hour), their lesson
  progress and the bindings they asked for that still wait for approval, remove their delivery and
  reminder records from every notice, and blank their openid in confirmations (the school keeps the
  fact that the child's notice was confirmed, not by whom).
- ``retention_sweep``: notices older than ``privacy.retention_days`` keep only their totals; their
  per-guardian records, confirmations and reminders are deleted. Capabilities that store personal
  data of their own (lesson answers) register a function in ``ERASERS`` / ``RETAINERS``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bot import clock
from bot.config import Config
from bot.roster.store import RosterStore
from bot.store import keys
from bot.store.redis import Redis, hgetall
from bot.wechat.protocol import mask_openid

log = logging.getLogger(__name__)

# (redis, openid) -> items deleted; (redis, config, now) -> items deleted
ERASERS: list[Callable[[Redis, str], Awaitable[int]]] = []
RETAINERS: list[Callable[[Redis, Config, float], Awaitable[int]]] = []

# Blank an openid inside confirmation values "openid|time|k". KEYS: confirmations. ARGV: openid
_BLANK_CONFIRMER = """
local n = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local v = all[i + 1]
  if string.sub(v, 1, #ARGV[1] + 1) == ARGV[1] .. '|' then
    redis.call('HSET', KEYS[1], all[i], '-' .. string.sub(v, #ARGV[1] + 1))
    n = n + 1
  end
end
return n
"""


@dataclass(frozen=True, slots=True)
class Erased:
    children_unlinked: int
    notice_records: int
    confirmations_blanked: int
    other: int


async def erase_guardian(redis: Redis, openid: str) -> Erased:
    store = RosterStore(redis)
    children = await store.erase_guardian(openid)  # also forgets the person, unless they teach a class
    blank = redis.register_script(_BLANK_CONFIRMER)
    ids: list[str] = await redis.zrange(keys.notices_by_time(), 0, -1)  # type: ignore[assignment]
    records = blanked = 0
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        async with redis.pipeline(transaction=False) as pipe:
            for nid in chunk:
                pipe.hdel(keys.notice_records(nid), openid)
                pipe.hdel(keys.notice_reminders(nid), openid)
            results = await pipe.execute()
        records += sum(int(x) for x in results[::2])
        for nid in chunk:
            blanked += int(await blank(keys=[keys.notice_confirmations(nid)], args=[openid]))
    other = 0
    for eraser in ERASERS:
        other += await eraser(redis, openid)
    log.info("erased guardian %s: %d children, %d notice records", mask_openid(openid), children, records)
    return Erased(children, records, blanked, other)


async def retention_sweep(redis: Redis, config: Config, *, now: float | None = None) -> int:
    """Reduce notices older than the retention period to their totals; returns notices reduced."""
    from bot.notices.service import NoticeService

    now = clock.now() if now is None else now
    cutoff = now - config.privacy.retention_days * 86400
    old: list[str] = await redis.zrangebyscore(keys.notices_by_time(), "-inf", cutoff)  # type: ignore[assignment]
    service = NoticeService(redis, config, RosterStore(redis))
    reduced = 0
    for nid in old:
        meta = await hgetall(redis, keys.notice(nid))
        if meta.get("retained") == "1" or not meta:
            continue
        notice = await service.get(nid)
        if notice is not None:
            funnel = await service.funnel(notice)
            summary = {
                "summary": json.dumps(funnel.as_dict()),
                "retained": "1",
                "created_by": mask_openid(meta.get("created_by", "")),
            }
            await redis.hset(keys.notice(nid), mapping=summary)  # type: ignore[arg-type]
        await redis.delete(keys.notice_records(nid), keys.notice_confirmations(nid), keys.notice_reminders(nid))
        reduced += 1
    for retain in RETAINERS:
        reduced += await retain(redis, config, now)
    if reduced:
        days = config.privacy.retention_days
        log.info("retention: %d notices older than %d days reduced to their totals", reduced, days)
    return reduced


# -- the command line ------------------------------------------------------------------------------
def add_commands(sub: Any, common: Any) -> None:
    p = sub.add_parser("privacy", parents=[common], help="erase a person's data; apply the retention period")
    psub = p.add_subparsers(dest="privacy_command", required=True, metavar="ACTION")
    e = psub.add_parser("erase", parents=[common], help="delete everything kept about one guardian")
    e.add_argument("--guardian", required=True, metavar="OPENID")
    e.set_defaults(func=_cmd_erase)
    r = psub.add_parser("retention", parents=[common], help="reduce old notices to their totals now")
    r.set_defaults(func=_cmd_retention)


def _run(cfg: Config, job: Callable[[Redis], Awaitable[str]]) -> int:
    from bot.cliutil import run_with_redis

    async def work(redis: Redis) -> int:
        print(await job(redis))
        return 0

    return run_with_redis(cfg, work)


def _cmd_erase(cfg: Config, args: Any) -> int:
    async def job(redis: Redis) -> str:
        done = await erase_guardian(redis, args.guardian)
        return (
            f"erased {mask_openid(args.guardian)}: unlinked from {done.children_unlinked} children, "
            f"{done.notice_records} notice records deleted, {done.confirmations_blanked} confirmations "
            f"made anonymous, {done.other} other items"
        )

    return _run(cfg, job)


def _cmd_retention(cfg: Config, args: Any) -> int:
    async def job(redis: Redis) -> str:
        n = await retention_sweep(redis, cfg)
        return f"{n} items reduced (notices older than {cfg.privacy.retention_days} days keep only their totals)"

    return _run(cfg, job)


async def retain_lesson_results(redis: Redis, config: Config, now: float) -> int:
    """Quiz results untouched for longer than the retention period are deleted, student by student."""
    cutoff = now - config.privacy.retention_days * 86400
    store = RosterStore(redis)
    deleted = 0
    for school in sorted(await store.schools()):
        for cid in sorted(await store.classes(school)):
            students = list(await store.students(school, cid))
            if not students:
                continue
            async with redis.pipeline(transaction=False) as pipe:
                for sid in students:
                    pipe.hgetall(keys.lesson_results(school, sid))
                results: list[dict[str, str]] = await pipe.execute()
            stale = [sid for sid, fields in zip(students, results, strict=True) if fields and _last(fields) < cutoff]
            if stale:
                deleted += int(await redis.delete(*[keys.lesson_results(school, sid) for sid in stale]))
    return deleted


def _last(fields: dict[str, str]) -> float:
    """The newest time in a student's lesson results ("started|finished|best|passed_at" per lesson)."""
    newest = 0.0
    for name, value in fields.items():
        if name.startswith("m:"):
            continue
        for part in value.split("|")[:2] + value.split("|")[3:4]:
            if part.isdigit():
                newest = max(newest, float(part))
    return newest


async def erase_pending_bindings(redis: Redis, openid: str) -> int:
    """Bindings this guardian asked for that still wait for a class teacher's approval, in every school."""
    schools = sorted(await RosterStore(redis).schools())
    removed = 0
    for i in range(0, len(schools), 500):
        chunk = schools[i : i + 500]
        async with redis.pipeline(transaction=False) as pipe:
            for school in chunk:
                pipe.hkeys(keys.pending_bindings(school))
            found: list[list[str]] = await pipe.execute()
        for school, fields in zip(chunk, found, strict=True):
            mine = [f for f in fields if f.split("/", 2)[-1] == openid]  # "class/student/openid"
            if mine:
                removed += int(await redis.hdel(keys.pending_bindings(school), *mine))
    return removed


RETAINERS.append(retain_lesson_results)
ERASERS.append(erase_pending_bindings)
