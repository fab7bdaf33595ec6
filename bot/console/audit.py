"""The audit log: who did what, to whom, and when, from the console.

One Redis stream per district (``keys.audit_log``), newest last, capped at :data:`MAX_ENTRIES` and
trimmed to :data:`RETENTION_DAYS` on every write (``XADD … MAXLEN ~`` then ``XTRIM MINID ~``), so
it never grows without bound. Entries say who (the console user or the WeChat teacher), what
(:data:`ACTIONS`), where (school and classes, which decide who may read the entry) and a short
summary for people (a notice's title and audience, an import's counts). No child's name is written
here; a notice is named by its title and id.

Reading walks the stream backwards from ``until`` in pages and stops at ``limit`` entries that pass
the filters and the reader's scope, or after :data:`SCAN_MAX` entries looked at.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import cast

from bot import clock
from bot.store import keys
from bot.store.redis import Redis

MAX_ENTRIES = 100_000  # per district
RETENTION_DAYS = 400
SCAN_MAX = 20_000
PAGE = 500

ACTIONS: dict[str, str] = {
    "login": "登录",
    "login.failed": "登录失败",
    "login.locked": "登录被锁定",
    "logout": "退出登录",
    "notice.send": "发送通知",
    "roster.import": "导入名单",
    "binding.approve": "同意绑定",
    "binding.reject": "拒绝绑定",
    "binding.remove": "移除绑定",
    "campaign.enable": "开启活动",
    "campaign.disable": "关闭活动",
    "campaign.save": "保存活动",
}


@dataclass(frozen=True, slots=True)
class AuditEntry:
    action: str
    actor: str  # Subject.name: "console:<username>" or a WeChat teacher's openid
    actor_label: str  # for people: "alice（学校管理员）"
    district: str
    school: str = ""
    classes: tuple[str, ...] = ()
    target: str = ""  # a notice id, a file name, a campaign id …
    summary: str = ""
    at: float = 0.0
    id: str = ""  # the stream id (set when read)

    @property
    def action_label(self) -> str:
        return ACTIONS.get(self.action, self.action)

    def fields(self) -> dict[str, str]:
        return {"a": self.action, "u": self.actor, "l": self.actor_label, "s": self.school,
                "c": ",".join(self.classes), "t": self.target, "m": self.summary}  # fmt: skip

    @classmethod
    def decode(cls, district: str, entry_id: str, raw: dict[str, str]) -> AuditEntry:
        return cls(
            action=raw.get("a", ""),
            actor=raw.get("u", ""),
            actor_label=raw.get("l", ""),
            district=district,
            school=raw.get("s", ""),
            classes=tuple(c for c in raw.get("c", "").split(",") if c),
            target=raw.get("t", ""),
            summary=raw.get("m", ""),
            at=int(entry_id.split("-", 1)[0]) / 1000,
            id=entry_id,
        )


@dataclass(frozen=True, slots=True)
class AuditFilter:
    since: float = 0.0
    until: float = 0.0  # 0: now
    actor: str = ""  # a substring of the actor or their label
    action: str = ""  # an action, or its prefix ("binding")
    school: str = ""

    def matches(self, e: AuditEntry) -> bool:
        if self.actor and self.actor not in e.actor and self.actor not in e.actor_label:
            return False
        if self.action and e.action != self.action and not e.action.startswith(self.action + "."):
            return False
        return not self.school or e.school == self.school


class AuditLog:
    def __init__(self, redis: Redis, *, max_entries: int = MAX_ENTRIES, retention_days: int = RETENTION_DAYS) -> None:
        self.r = redis
        self.max_entries = max_entries
        self.retention = retention_days * 86400

    async def record(self, entry: AuditEntry, *, now: float | None = None) -> str:
        if not entry.district:
            return ""
        now = clock.now() if now is None else now
        key = keys.audit_log(entry.district)
        oldest = f"{int((now - self.retention) * 1000)}-0"
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.xadd(key, entry.fields(), maxlen=self.max_entries, approximate=True)  # type: ignore[arg-type]
            pipe.xtrim(key, minid=oldest, approximate=True)
            entry_id, _ = await pipe.execute()
        return str(entry_id)

    async def entries(
        self,
        districts: Iterable[str],
        visible: Callable[[AuditEntry], bool],
        wanted: AuditFilter = AuditFilter(),
        *,
        limit: int = 200,
        scan_max: int = SCAN_MAX,
    ) -> list[AuditEntry]:
        """The newest ``limit`` entries of these districts that pass ``wanted`` and ``visible``."""
        found: list[AuditEntry] = []
        upper = f"{int(wanted.until * 1000)}" if wanted.until else "+"
        lower = f"{int(wanted.since * 1000)}" if wanted.since else "-"
        for district in sorted(set(districts)):
            key = keys.audit_log(district)
            top, looked, mine = upper, 0, 0
            while looked < scan_max and mine < limit:
                reply = await self.r.xrevrange(key, max=top, min=lower, count=PAGE)
                page = cast(list[tuple[str, dict[str, str]]], reply)
                if not page:
                    break
                for entry_id, raw in page:
                    looked += 1
                    entry = AuditEntry.decode(district, str(entry_id), raw)
                    if wanted.matches(entry) and visible(entry):
                        found.append(entry)
                        mine += 1
                        if mine >= limit:
                            break
                top = f"({page[-1][0]}"
                if len(page) < PAGE:
                    break
        found.sort(key=lambda e: tuple(int(p) for p in e.id.split("-")), reverse=True)
        return found[:limit]
