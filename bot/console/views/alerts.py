"""External warnings (暴雨, 台风 …) in the console: what came in recently and what each one fired.

Read through ``AlertService.recent`` (the campaigns capability), for the administrator's district;
a school administrator sees the warnings that reached their school. Administrators only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web

from bot.console.web import CONSOLE, Console, Viewer, forbidden, message
from bot.roster.chat import directory

LIMIT = 50


def _when(value: object) -> float:
    if isinstance(value, int | float):
        return float(value)
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return 0.0


async def alerts_page(request: web.Request, viewer: Viewer) -> web.StreamResponse:
    from bot.campaigns.alerts import AlertService
    from bot.campaigns.texts import ALERT_LEVELS

    c = request.config_dict[CONSOLE]
    runner = c.ctx.services.get("campaigns")
    if runner is None:
        return message(503, "预警功能未启用", "外部预警还没有在这个系统里启用。", viewer=viewer)
    s = viewer.subject
    if not viewer.is_admin or not s.district:
        return forbidden(viewer)
    entries: list[dict[str, Any]] = []
    for raw in await AlertService(runner).recent(limit=LIMIT, district=s.district):
        fired = [f for f in raw.get("fired", []) if s.role == "district_admin" or s.school in f.get("schools", [])]
        if s.role == "school_admin" and not fired:
            continue
        alert = raw.get("alert", {})
        entries.append({
            "alert": alert, "level": ALERT_LEVELS.get(str(alert.get("level")), str(alert.get("level", ""))),
            "received": float(raw.get("received") or 0), "valid_until": _when(alert.get("valid_until")),
            "status": raw.get("status", ""), "reason": raw.get("reason", ""), "campaign": raw.get("campaign", ""),
            "urgent": bool(raw.get("urgent")), "fired": fired,
        })  # fmt: skip
    names = (await directory(c.roster)).names
    return c.page(viewer, "alerts.html", nav="alerts", title="外部预警", entries=entries, names=names)


def register(c: Console) -> None:
    c.get("/alerts", alerts_page)
