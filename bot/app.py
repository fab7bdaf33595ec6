"""The aiohttp application factory: the callback, the chat engine, capabilities, operations.

A capability is a function ``setup(ctx: AppContext)`` that includes its chat router, adds its pages,
user loaders and help lines. Adding one means adding it to ``CAPABILITIES``; nothing else changes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from wechatpy.messages import BaseMessage

from bot import campaigns, console, lessons, notices, roster
from bot.chat import basic
from bot.chat.engine import ChatEngine, render_reply
from bot.chat.router import Router
from bot.chat.texts import Texts
from bot.config import Config
from bot.delivery.outbox import enqueue_inbound, enqueue_text
from bot.metrics import BATCHED
from bot.store.autopipeline import close_bulk
from bot.store.redis import Redis
from bot.web import ops
from bot.web.ratelimit import PerUserLimit, ip_limit_middleware
from bot.wechat.callback import WeChatCallback
from bot.wechat.client import WeChatAPI
from bot.wechat.errors import WeChatError

log = logging.getLogger(__name__)


@dataclass
class AppContext:
    config: Config
    redis: Redis
    api: WeChatAPI
    texts: Texts
    app: web.Application
    router: Router
    engine: ChatEngine
    help_items: list[str] = field(default_factory=list)
    menu: list[dict[str, Any]] = field(default_factory=list)  # CLICK/VIEW buttons the capability offers
    services: dict[str, Any] = field(default_factory=dict)  # shared objects: "roster", "notices", ...


Capability = Callable[[AppContext], None]

# The capabilities, in the order their chat handlers are tried.
CAPABILITIES: list[Capability] = [roster.setup, notices.setup, lessons.setup, campaigns.setup, console.setup]


def build_menu(buttons: list[dict[str, Any]]) -> dict[str, Any]:
    """WeChat allows 3 top-level buttons with up to 5 sub-buttons each: overflow goes under 「更多」."""
    if len(buttons) <= 3:
        return {"button": buttons}
    return {"button": [*buttons[:2], {"name": "更多", "sub_button": buttons[2:7]}]}


CONTEXT_KEY: web.AppKey[AppContext] = web.AppKey("context", AppContext)
CALLBACK_KEY: web.AppKey[WeChatCallback] = web.AppKey("callback", WeChatCallback)


def create_app(config: Config, redis: Redis, *, api: WeChatAPI | None = None) -> web.Application:
    app = web.Application(
        client_max_size=config.wechat.body_limit,
        middlewares=[ops.timing_middleware, ip_limit_middleware(redis, config.server)],
    )
    texts = Texts()
    own_api = api is None
    api = api or WeChatAPI(config.wechat, redis)

    root = Router(name="root")
    root.include(basic.commands)
    features = Router(name="features")
    root.include(features)
    root.include(basic.fallbacks)

    async def late_reply(openid: str, text: str) -> None:
        await enqueue_text(redis, openid, text)

    engine = ChatEngine(redis, config, root, texts, services={"api": api}, late_reply=late_reply)
    ctx = AppContext(config, redis, api, texts, app, features, engine)
    ctx.help_items.append("放假前、周末前收到安全提醒")
    for setup in CAPABILITIES:
        setup(ctx)
    ctx.help_items.append("回复「取消」结束当前操作")
    ctx.menu.append({"type": "click", "name": "帮助", "key": basic.HELP_KEY})
    engine.provide(help_items=list(ctx.help_items))

    per_user = PerUserLimit(config.wechat.rate_per_openid)

    async def respond(message: BaseMessage, dedupe_key: str, started: float) -> str:
        if getattr(message, "type", "") != "event" and not per_user.allow(str(message.source)):
            return render_reply(texts.render("slow_down"), message)  # not kept: a retry may pass later
        answer = await engine.answer(message, dedupe_key, started=started)
        return answer.xml

    def busy(message: BaseMessage) -> str:
        if getattr(message, "type", "") == "event":
            return ""
        return render_reply(texts.render("busy"), message)

    async def defer(query: str, body: str) -> None:  # a shed callback: `bot worker` answers it
        await enqueue_inbound(engine.pipe, query, body)

    callback = WeChatCallback(config.wechat, respond, busy, defer=defer, deferred=engine.answer_later)
    callback.register(app)
    app[CALLBACK_KEY] = callback
    ops.register(app)
    app[ops.REDIS_KEY] = redis
    app[CONTEXT_KEY] = ctx

    async def on_cleanup(app: web.Application) -> None:
        await engine.drain(config.server.shutdown_timeout)
        if own_api:
            await api.close()
        BATCHED.flush()  # the last second's callback metrics
        await close_bulk(redis)  # reports' connection

    async def create_menu(app: web.Application) -> None:
        try:
            await api.create_menu(build_menu(ctx.menu))
            log.info("WeChat menu created (%d buttons)", len(ctx.menu))
        except WeChatError as exc:
            log.error("could not create the WeChat menu: %s (wechat.menu_on_start)", exc)

    if config.wechat.menu_on_start:
        app.on_startup.append(create_menu)
    app.on_cleanup.append(on_cleanup)
    return app
