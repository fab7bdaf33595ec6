"""Roster, identities and binding: who is who, proven, with the least personal data."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.app import AppContext


def setup(ctx: AppContext) -> None:
    """Register the roster capability: the binding conversation, identity loading, menu and help."""
    from bot.roster import chat
    from bot.roster.store import RosterStore

    store = RosterStore(ctx.redis)
    ctx.services["roster"] = store
    ctx.engine.provide(store=store, roster=store)
    ctx.engine.add_user_loader(chat.load_identity)
    ctx.router.include(chat.router)
    ctx.help_items.append("发送班级码或扫描班级二维码，绑定孩子所在班级")
    ctx.help_items.append("回复「我的孩子」查看已绑定的孩子，「解绑」解除绑定")
    ctx.help_items.append("老师：发送教师邀请码绑定班级，「家长名单」查看本班绑定情况")
    ctx.menu.append({"type": "click", "name": "绑定孩子", "key": chat.BIND_KEY})
    ctx.menu.append({"type": "click", "name": "我的孩子", "key": chat.MY_KEY})
