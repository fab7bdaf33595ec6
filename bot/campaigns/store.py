"""Campaign state in Redis: on/off switches, admin-made campaigns, and the record of every firing.

Key names are in ``bot/store/keys.py``. A firing is claimed once with a Lua script (the moral
equivalent of ``SET NX`` on the firing id, plus the indexes that go with it, atomically): whoever
claims it creates the notice; anybody else skips it. A claim left unfinished by a crash is taken
over after :data:`LEASE_SECONDS`, and the notice's idempotency key (the firing id) makes the retry
return the notice the crashed process may already have created: a firing never makes two notices.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

from bot.campaigns.model import Campaign, Firing
from bot.roster.model import School
from bot.store import keys
from bot.store.redis import Redis, hgetall

Status = Literal["claimed", "fired", "missed", "failed"]
LEASE_SECONDS: Final = 300  # a claim unfinished after this is retaken (the notice key prevents a double)
RECORD_DAYS: Final = 400  # firings are remembered this long: a restart never fires twice within a year

# KEYS: firing hash, index, pending. ARGV: status, now, by, ttl, due, lease, firing id, field, value, ...
# Returns 1 claimed, 2 took over a stale claim, 0 someone else has (or had) it.
_CLAIM = """
local st = redis.call('HGET', KEYS[1], 'status')
local now = tonumber(ARGV[2])
if st then
  if st ~= 'claimed' then return 0 end
  if tonumber(redis.call('HGET', KEYS[1], 'claimed_at') or '0') > now - tonumber(ARGV[6]) then return 0 end
  redis.call('HSET', KEYS[1], 'claimed_at', ARGV[2], 'by', ARGV[3])
  redis.call('ZADD', KEYS[3], ARGV[2], ARGV[7])
  return 2
end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'claimed_at', ARGV[2], 'by', ARGV[3], 'due', ARGV[5])
for i = 8, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
redis.call('ZADD', KEYS[2], tonumber(ARGV[5]), ARGV[7])
if ARGV[1] == 'claimed' then redis.call('ZADD', KEYS[3], ARGV[2], ARGV[7]) end
return 1
"""

# KEYS: last tick. ARGV: time. The runner's high-water mark only moves forward.
_ADVANCE_TICK = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > cur then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""


def process_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True, slots=True)
class FiringRecord:
    id: str
    status: Status
    due: float
    campaign: str
    district: str
    region: str
    schools: tuple[str, ...]
    notice: str = ""
    error: str = ""
    claimed_at: float = 0.0
    finished_at: float = 0.0
    by: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "due": self.due,
            "campaign": self.campaign,
            "district": self.district,
            "region": self.region,
            "schools": list(self.schools),
            "notice": self.notice,
            "error": self.error,
            "finished_at": self.finished_at,
        }

    @classmethod
    def decode(cls, firing: str, raw: Mapping[str, str]) -> FiringRecord:
        return cls(
            id=firing,
            status=cast(Status, raw.get("status", "claimed")),
            due=float(raw.get("due") or 0),
            campaign=raw.get("campaign", ""),
            district=raw.get("district", ""),
            region=raw.get("region", ""),
            schools=tuple(s for s in raw.get("schools", "").split(",") if s),
            notice=raw.get("notice", ""),
            error=raw.get("error", ""),
            claimed_at=float(raw.get("claimed_at") or 0),
            finished_at=float(raw.get("finished_at") or 0),
            by=raw.get("by", ""),
        )


@dataclass(frozen=True)
class Switches:
    """Runtime on/off per campaign: for a school, then its district, then the file's opt-outs, then everywhere.

    A school's or district's own switch wins over everything (so ``enable --school S`` re-admits a
    school the file opts out); the file's opt-outs win over the global switch; the global switch
    wins over the file's ``enabled``.
    """

    values: Mapping[str, str]

    def state(self, campaign: str, scope: str) -> bool | None:
        raw = self.values.get(f"{campaign}|{scope}")
        return None if raw is None else raw == "1"

    def is_on(self, campaign: Campaign, school: School) -> bool:
        for scope in (f"s:{school.id}", f"d:{school.district}"):
            found = self.state(campaign.id, scope)
            if found is not None:
                return found
        if campaign.who.opted_out(school):
            return False
        found = self.state(campaign.id, "*")
        return campaign.enabled if found is None else found

    def overrides(self, campaign: str) -> dict[str, bool]:
        """scope → on/off for one campaign (what ``campaigns list`` shows)."""
        prefix = f"{campaign}|"
        return {k[len(prefix) :]: v == "1" for k, v in self.values.items() if k.startswith(prefix)}


def scope_key(*, school: str = "", district: str = "") -> str:
    if school:
        return f"s:{school}"
    if district:
        return f"d:{district}"
    return "*"


class CampaignStore:
    def __init__(self, redis: Redis, *, ident: str | None = None) -> None:
        self.r = redis
        self.ident = ident or process_name()
        self._claim = redis.register_script(_CLAIM)
        self._advance = redis.register_script(_ADVANCE_TICK)

    # ---- switches

    async def switches(self) -> Switches:
        return Switches(await hgetall(self.r, keys.campaign_switches()))

    async def switch(self, campaign: str, on: bool, *, school: str = "", district: str = "") -> None:
        await self.r.hset(
            keys.campaign_switches(), f"{campaign}|{scope_key(school=school, district=district)}", "1" if on else "0"
        )

    async def clear_switch(self, campaign: str, *, school: str = "", district: str = "") -> None:
        await self.r.hdel(keys.campaign_switches(), f"{campaign}|{scope_key(school=school, district=district)}")

    # ---- admin-made campaigns (JSON documents; owner fields kept next to the document)

    async def custom_documents(self) -> dict[str, dict[str, Any]]:
        raw = await hgetall(self.r, keys.campaign_custom())
        out: dict[str, dict[str, Any]] = {}
        for cid, text in raw.items():
            try:
                doc = json.loads(text)
            except ValueError:
                continue
            if isinstance(doc, dict):
                out[cid] = doc
        return out

    async def save_custom(self, cid: str, document: Mapping[str, Any], *, district: str = "", school: str = "") -> None:
        stored = {"document": dict(document), "owner_district": district, "owner_school": school}
        await self.r.hset(keys.campaign_custom(), cid, json.dumps(stored, ensure_ascii=False, separators=(",", ":")))

    async def remove_custom(self, cid: str) -> bool:
        return bool(await self.r.hdel(keys.campaign_custom(), cid))

    # ---- firings

    async def claim(
        self, firing: Firing, now: float, *, status: Status = "claimed", ttl_days: int = RECORD_DAYS
    ) -> int:
        """1: ours to fire (or to record as missed); 2: a stale claim taken over; 0: not ours."""
        fields = {
            "campaign": firing.campaign.id,
            "district": firing.district,
            "region": firing.region,
            "schools": ",".join(firing.schools),
        }
        args: list[str | float | int] = [
            status,
            repr(now),
            self.ident,
            ttl_days * 86400,
            repr(firing.ts),
            LEASE_SECONDS,
            firing.id,
        ]
        for k, v in fields.items():
            args += [k, v]
        keys_ = [keys.campaign_firing(firing.id), keys.campaign_firings(), keys.campaign_pending()]
        return int(await self._claim(keys=keys_, args=args))

    async def finish(self, firing_id: str, status: Status, now: float, *, notice: str = "", error: str = "") -> None:
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.hset(
                keys.campaign_firing(firing_id),
                mapping={"status": status, "finished_at": repr(now), "notice": notice, "error": error[:500]},
            )
            pipe.zrem(keys.campaign_pending(), firing_id)
            await pipe.execute()

    async def stale_claims(self, now: float) -> list[FiringRecord]:
        ids = cast(list[str], await self.r.zrangebyscore(keys.campaign_pending(), "-inf", now - LEASE_SECONDS))
        return await self.records(ids)

    async def records(self, ids: Sequence[str]) -> list[FiringRecord]:
        if not ids:
            return []
        async with self.r.pipeline(transaction=False) as pipe:
            for fid in ids:
                pipe.hgetall(keys.campaign_firing(fid))
            raws: list[dict[str, str]] = await pipe.execute()
        return [FiringRecord.decode(fid, raw) for fid, raw in zip(ids, raws, strict=True) if raw]

    async def recent(self, since: float, until: float, *, limit: int = 500) -> list[FiringRecord]:
        """Firings due in [since, until], newest first (and trims the index of forgotten ones)."""
        await self.r.zremrangebyscore(keys.campaign_firings(), "-inf", until - RECORD_DAYS * 86400)
        ids = cast(list[str], await self.r.zrevrangebyscore(keys.campaign_firings(), until, since, start=0, num=limit))
        return await self.records(ids)

    async def last_tick(self) -> float | None:
        raw = await self.r.get(keys.campaign_last_tick())
        return float(raw) if raw else None

    async def advance_tick(self, now: float) -> None:
        await self._advance(keys=[keys.campaign_last_tick()], args=[repr(now)])
