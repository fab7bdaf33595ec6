"""The path of one message through the bot, after the callback has verified and parsed it.

1. One Redis round trip (``BEGIN_MESSAGE``): claim the retry-dedupe record, take the per-user lock,
   load the conversation state. A retry finds the record and gets the first answer (waiting for it
   if the first is still being handled) and runs nothing.
2. The middleware chain (errors → user context → whatever capabilities add) and the router's handler.
3. One round trip (``END_MESSAGE``): keep the answer for retries, save the state, release the lock.

The whole of it runs in a task that the callback awaits only until the reply budget (default 4 s)
is spent: then WeChat gets ``success`` at once, and the answer, when it comes, goes out as a
customer-service message through the outbox.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from wechatpy.messages import BaseMessage
from wechatpy.replies import BaseReply, EmptyReply, TextReply

from bot.chat.router import FrozenRouter, ReplyValue, Router, Update
from bot.chat.state import ChatState
from bot.chat.texts import Texts
from bot.config import Config
from bot.metrics import DEDUPE_HITS, HANDLER_ERRORS, LATE_REPLIES
from bot.store import keys
from bot.store.redis import Redis
from bot.store.scripts import BEGIN_MESSAGE, END_MESSAGE, SETTLE_PENDING
from bot.wechat.protocol import mask_openid

log = logging.getLogger(__name__)

Next = Callable[[Update, dict[str, Any]], Awaitable[ReplyValue]]
Middleware = Callable[[Next, Update, dict[str, Any]], Awaitable[ReplyValue]]
LateReplySink = Callable[[str, str], Awaitable[None]]

_NO_ANSWER = "S"  # stored answer meaning "success" (no passive reply)
_ANSWER = "R"  # prefix of a stored reply XML
_PENDING = ""


@dataclass(frozen=True, slots=True)
class Answer:
    """What the callback sends back: plaintext reply XML, or "" for ``success``."""

    xml: str
    duplicate: bool = False
    late: bool = False


@dataclass(slots=True)
class User:
    """Who is writing. Capabilities add what they know (roles, bound children) via user loaders."""

    openid: str
    masked: str
    facts: dict[str, Any]


UserLoader = Callable[[User, dict[str, Any]], Awaitable[None]]


def escape_cdata(text: str) -> str:
    """wechatpy wraps text in CDATA without escaping; a ``]]>`` in it would break the XML."""
    return text.replace("]]>", "]]]]><![CDATA[>")


def render_reply(value: ReplyValue, message: BaseMessage) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        return str(TextReply(message=message, content=escape_cdata(value)).render())
    if isinstance(value, EmptyReply):
        return ""
    if isinstance(value, BaseReply):
        value.source = message.target
        value.target = message.source
        return str(value.render())
    raise TypeError(f"a handler returned {type(value).__name__}; return str, a wechatpy reply or None")


class ChatEngine:
    def __init__(
        self,
        redis: Redis,
        config: Config,
        router: Router,
        texts: Texts,
        *,
        services: dict[str, Any] | None = None,
        late_reply: LateReplySink | None = None,
    ) -> None:
        self.redis = redis
        self.config = config
        self.texts = texts
        self._tree = router
        self._router: FrozenRouter | None = None
        self._middlewares: list[Middleware] = [self._errors_middleware, self._user_middleware]
        self._user_loaders: list[UserLoader] = []
        self._services = dict(services or {})
        self._late_reply = late_reply
        self._begin = redis.register_script(BEGIN_MESSAGE)
        self._end = redis.register_script(END_MESSAGE)
        self._settle = redis.register_script(SETTLE_PENDING)
        self._chain: Next | None = None
        self._background: set[asyncio.Task[Any]] = set()

    # -- extension points (used at start-up by capabilities) ---------------------------------
    def add_middleware(self, middleware: Middleware) -> None:
        self._middlewares.append(middleware)
        self._chain = None

    def add_user_loader(self, loader: UserLoader) -> None:
        self._user_loaders.append(loader)

    def provide(self, **services: Any) -> None:
        self._services.update(services)

    def _build_chain(self) -> Next:
        self._router = self._tree.freeze()
        chain: Next = self._dispatch
        for mw in reversed(self._middlewares):
            chain = _bind(mw, chain)
        self._chain = chain
        return chain

    # -- the path of a message ---------------------------------------------------------------
    async def answer(self, message: BaseMessage, dedupe_key: str, *, started: float | None = None) -> Answer:
        """Answer one verified, parsed callback message within the reply budget."""
        started = time.monotonic() if started is None else started
        deadline = started + self.config.wechat.reply_budget
        update = Update.from_message(message)
        openid = update.openid
        ks = [keys.dedupe(openid, dedupe_key), keys.chat_lock(openid), keys.chat_state(openid), keys.identity(openid)]
        token = secrets.token_hex(8)
        cfg = self.config
        lock_ms = int(cfg.chat.lock_ttl * 1000)
        status, *loaded = await self._begin(keys=ks, args=["1", cfg.wechat.dedupe_ttl, token, lock_ms])
        if status == "dup":
            DEDUPE_HITS.inc()
            return await self._answer_of_duplicate(ks[0], loaded[0], deadline)

        task = asyncio.create_task(self._run(update, ks, token, status, loaded))
        try:
            xml = await asyncio.wait_for(asyncio.shield(task), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            LATE_REPLIES.inc()
            await self._settle(keys=[ks[0]], args=[_NO_ANSWER, cfg.wechat.dedupe_ttl])
            self._background.add(task)
            task.add_done_callback(lambda t: self._late_done(t, update))
            return Answer("", late=True)
        return Answer(xml)

    async def _answer_of_duplicate(self, dedupe_key: str, stored: str, deadline: float) -> Answer:
        delay = 0.01
        while stored == _PENDING and time.monotonic() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.1)
            current = await self.redis.get(dedupe_key)
            stored = _NO_ANSWER if current is None else str(current)  # expired: nothing more to give
        if stored.startswith(_ANSWER):
            return Answer(stored[len(_ANSWER) :], duplicate=True)
        return Answer("", duplicate=True)

    async def _run(self, update: Update, ks: list[str], token: str, status: str, loaded: list[str]) -> str:
        cfg = self.config
        lock_ms = int(cfg.chat.lock_ttl * 1000)
        delay = 0.005
        while status == "locked":
            # Another message of this user is being handled: wait our turn. The lock has a TTL, so
            # a crashed holder delays us at most chat.lock_ttl.
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)
            status, *loaded = await self._begin(keys=ks, args=["0", cfg.wechat.dedupe_ttl, token, lock_ms])
        raw_state, identity = loaded[0], loaded[1]
        state = ChatState(raw_state)
        xml = ""
        try:
            data = self._context(update, state, raw_state)
            data["identity"] = identity
            value = await (self._chain or self._build_chain())(update, data)
            xml = render_reply(value, update.message)
        finally:
            stored = _ANSWER + xml if xml else _NO_ANSWER
            await self._end(keys=ks[:3], args=[stored, cfg.wechat.dedupe_ttl, token, state.dump(), cfg.chat.state_ttl])
        return xml

    def _context(self, update: Update, state: ChatState, raw_state: str) -> dict[str, Any]:
        data = dict(self._services)
        data.update(
            update=update,
            message=update.message,
            openid=update.openid,
            text=update.text,
            state=state,
            raw_state=raw_state,
            render=self.texts.render,
            texts=self.texts,
            redis=self.redis,
            config=self.config,
        )
        return data

    async def _dispatch(self, update: Update, data: dict[str, Any]) -> ReplyValue:
        assert self._router is not None
        state: ChatState = data["state"]
        found = self._router.resolve(update, state.state)
        if found is None:
            return None  # nothing handles this (e.g. an unknown event): answer "success"
        entry, injected = found
        if injected:
            data = {**data, **injected}
        return await entry.call(data)

    # -- built-in middlewares ----------------------------------------------------------------
    async def _errors_middleware(self, call_next: Next, update: Update, data: dict[str, Any]) -> ReplyValue:
        try:
            return await call_next(update, data)
        except Exception:
            HANDLER_ERRORS.inc()
            log.exception("handler failed for %s (%s %s)", mask_openid(update.openid), update.kind, update.event)
            data["state"].discard_changes(data["raw_state"])
            if update.kind == "event" and update.event not in ("subscribe", "subscribe_scan", "scan", "click"):
                return None
            return self.texts.render("error")

    async def _user_middleware(self, call_next: Next, update: Update, data: dict[str, Any]) -> ReplyValue:
        user = User(openid=update.openid, masked=mask_openid(update.openid), facts={})
        data["user"] = user
        for loader in self._user_loaders:
            await loader(user, data)
        return await call_next(update, data)

    # -- late answers -----------------------------------------------------------------------
    def _late_done(self, task: asyncio.Task[str], update: Update) -> None:
        self._background.discard(task)
        if task.cancelled() or task.exception() is not None:
            if not task.cancelled():
                log.error("late handler failed for %s: %r", mask_openid(update.openid), task.exception())
            return
        xml = task.result()
        if not xml or self._late_reply is None:
            return
        content = _text_of(xml)
        if content is None:
            log.warning(
                "late non-text reply for %s dropped (only text goes by customer-service message)",
                mask_openid(update.openid),
            )
            return
        t: asyncio.Task[None] = asyncio.get_running_loop().create_task(self._send_late(update.openid, content))
        self._background.add(t)
        t.add_done_callback(self._background.discard)

    async def _send_late(self, openid: str, text: str) -> None:
        assert self._late_reply is not None
        await self._late_reply(openid, text)

    async def drain(self, limit: float) -> None:
        """Wait for late handlers still running (graceful shutdown)."""
        if self._background:
            await asyncio.wait(list(self._background), timeout=limit)


def _bind(mw: Middleware, call_next: Next) -> Next:
    async def step(update: Update, data: dict[str, Any]) -> ReplyValue:
        return await mw(call_next, update, data)

    return step


def _text_of(xml: str) -> str | None:
    from wechatpy.replies import deserialize_reply

    try:
        reply = deserialize_reply(xml)
    except ValueError:
        return None
    if isinstance(reply, TextReply):
        return str(reply.content).replace("]]]]><![CDATA[>", "]]>")
    return None
