"""Notices and confirmations: from a teacher's words to every family's confirmation."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.app import AppContext


def setup(ctx: AppContext) -> None:
    from bot.notices import chat
    from bot.notices.service import NoticeService

    service = NoticeService(ctx.redis, ctx.config, ctx.services["roster"])
    ctx.services["notices"] = service
    ctx.engine.provide(notices=service)
    ctx.router.include(chat.router)
    ctx.help_items.append("收到通知后点开查看并确认，或回复「确认」")
    ctx.help_items.append("老师：回复「发通知」给本班家长发通知，「未确认」查看谁还没确认")
    ctx.menu.append({"type": "click", "name": "待确认通知", "key": chat.NOTICES_KEY})

    from bot.notices import pages

    pages.register(ctx)

    from bot.notices import api

    api.register(ctx)
