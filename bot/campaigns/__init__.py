"""Seasonal campaigns: the safety calendar and the "when" of each campaign.

- :mod:`bot.campaigns.calendar`: public holidays and make-up workdays (official where published,
  computed otherwise), per-region school terms and breaks, per-deployment overrides, and the national
  safety days; school-day arithmetic.
- :mod:`bot.campaigns.rules`: the declarative ``when`` rules of a campaign, evaluated against a
  :class:`~bot.campaigns.calendar.Calendar` to concrete firing times (Asia/Shanghai).
- :mod:`bot.campaigns.model`, :mod:`bot.campaigns.loader`: campaigns (``schedules/*.toml`` and
  admin-made ones in Redis), validated with errors naming the file and key; the alert map.
- :mod:`bot.campaigns.texts`: the templates in ``templates/campaigns/`` and what they may use.
- :mod:`bot.campaigns.runner`: planning firings, firing them once (``bot scheduler``), the preview.
- :mod:`bot.campaigns.store`: switches, admin-made campaigns and firing records in Redis.
- :mod:`bot.campaigns.alerts`: external warnings (``POST /api/alerts``).
- :mod:`bot.campaigns.admin`, :mod:`bot.campaigns.api`: ``bot campaigns ...`` and the JSON API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.app import AppContext


def setup(ctx: AppContext) -> None:
    """Register the campaigns capability: the JSON API (``/api/campaigns``, ``/api/alerts``)."""
    from bot.campaigns import api
    from bot.campaigns.runner import build_runner

    runner = build_runner(ctx.redis, ctx.config, ctx.services.get("roster"), ctx.services.get("notices"))
    ctx.services["campaigns"] = runner
    api.install(ctx.app, runner, ctx.redis)
