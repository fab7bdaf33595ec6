"""The path of one message through the bot, after the callback has verified and parsed it.

1. One Redis round trip (BEGIN): claim the retry-dedupe record, take the per-user lock, load the
   conversation state. On one Redis server these are plain commands sent together on the shared
   connection (:meth:`ChatEngine._begin`: a script costs Redis several times more); on a Cluster,
   the ``BEGIN_MESSAGE`` script. A retry finds the record and gets the first answer (waiting for it
   if the first is still being handled) and runs nothing.
2. The middleware chain (errors → user context → whatever capabilities add) and the router's handler.
3. END (plain commands, or ``END_MESSAGE`` on a Cluster or after a handler that held the lock for
   more than half its TTL): keep the answer for retries, save the state, release the lock. When the
   handler left the conversation state as it was, END is sent without waiting for its reply, so the
   parent's answer leaves after one round trip, not two. That is safe because BEGIN and END go
   through one shared connection (:mod:`bot.store.autopipeline`), which Redis serves in order: any later
   command of this process (the same user's next message, a retry's poll of the dedupe record)
   runs after END. A retry that comes before END has run finds the record pending and waits for it,
   as it would for a slow handler. If the connection drops first, END is lost: the lock frees itself
   after ``chat.lock_ttl`` and a retry (there is none: the parent got the answer) would get
   ``success``; nothing else depends on it, as the state had not changed. A changed state is
   awaited, so no answer runs ahead of the state it promises (a step of binding, a quiz).

The whole of it (BEGIN included: a slow Redis counts against the budget too) runs in a task that
the callback awaits only until the reply budget (default 4 s) is spent: then WeChat gets
``success`` at once, the dedupe record is settled to ``success`` (a retry must not get the late
answer as well), and the answer, when it comes, goes out as a customer-service message through the
outbox. A message the callback shed under load comes back through :meth:`ChatEngine.answer_later`,
from ``bot worker``: the same path, its answer by customer-service message.
"""

from __future__ import annotations

import asyncio
import logging
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
from bot.entropy import unique_token
from bot.metrics import DEDUPE_HITS, HANDLER_ERRORS, LATE_REPLIES
from bot.store import keys
from bot.store.autopipeline import Autopipeline, Script, shared
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
_BEGIN, _END, _SETTLE = Script(BEGIN_MESSAGE), Script(END_MESSAGE), Script(SETTLE_PENDING)
# wechatpy's TextReply.render(), character for character (tests/test_callback_parse.py checks it)
_TEXT_REPLY = (
    "<xml>\n<MsgType><![CDATA[text]]></MsgType>\n<Content><![CDATA[{0}]]></Content>\n"
    "<FromUserName><![CDATA[{1}]]></FromUserName>\n<ToUserName><![CDATA[{2}]]></ToUserName>\n"
    "<CreateTime>{3}</CreateTime>\n</xml>"
)


@dataclass(frozen=True, slots=True)
class Answer:
    """What the callback sends back: plaintext reply XML, or "" for ``success``."""

    xml: str
    duplicate: bool = False
    late: bool = False


@dataclass(slots=True)
class _Claim:
    """One message's hold on its dedupe record and its user's lock, as the request sees it."""

    keys: list[str]  # dedupe, lock, state, identity
    token: str  # whose lock it is
    stage: str = "begin"  # "begin" (BEGIN on its way), "dup" (a retry), "run" (claimed: handling)
    late: bool = False  # the request was answered "success" at the deadline


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
        raw = message._data  # the parsed fields: what message.target / .source give, without copying
        return _TEXT_REPLY.format(escape_cdata(value), raw.get("ToUserName"), raw.get("FromUserName"), int(time.time()))
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
        self._pipe = shared(redis)
        self._chain: Next | None = None
        self._background: set[asyncio.Task[Any]] = set()

    @property
    def pipe(self) -> Autopipeline:
        """The shared connection the engine's own commands go through (see bot.store.autopipeline)."""
        return self._pipe

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
        if self._middlewares == [self._errors_middleware, self._user_middleware]:
            chain = self._builtin_chain  # the same two, in one coroutine instead of three
        else:
            for mw in reversed(self._middlewares):
                chain = _bind(mw, chain)
        self._chain = chain
        return chain

    async def _builtin_chain(self, update: Update, data: dict[str, Any]) -> ReplyValue:
        """``_errors_middleware`` around ``_user_middleware`` around ``_dispatch``, flattened."""
        try:
            user = User(openid=update.openid, masked=mask_openid(update.openid), facts={})
            data["user"] = user
            for loader in self._user_loaders:
                await loader(user, data)
            return await self._dispatch(update, data)
        except Exception:
            return self._handler_failed(update, data)

    # -- the path of a message ---------------------------------------------------------------
    async def answer(
        self, message: BaseMessage, dedupe_key: str, *, started: float | None = None, budget: float | None = None
    ) -> Answer:
        """Answer one verified, parsed callback message within the reply budget (``budget`` seconds
        from ``started``; default ``wechat.reply_budget``)."""
        started = time.monotonic() if started is None else started
        cfg = self.config
        deadline = started + (cfg.wechat.reply_budget if budget is None else budget)
        update = Update.from_message(message)
        openid = update.openid
        ks = [keys.dedupe(openid, dedupe_key), keys.chat_lock(openid), keys.chat_state(openid), keys.identity(openid)]
        claim = _Claim(ks, unique_token())
        loop = asyncio.get_running_loop()
        # BEGIN, the handler and END run in a task of their own, which the request waits for only
        # until the deadline (then the answer goes later by customer-service message): the task is
        # never cancelled. Cheaper than wait_for(shield(task)), which this replaces.
        task = loop.create_task(self._handle(update, claim, deadline))
        waiter: asyncio.Future[None] = loop.create_future()

        def wake(_: object = None) -> None:
            if not waiter.done():
                waiter.set_result(None)

        timer = loop.call_later(max(0.0, deadline - time.monotonic()), wake)
        task.add_done_callback(wake)
        try:
            await waiter
        except asyncio.CancelledError:
            self._keep_late(task, update)  # the request went away; the answer may still matter
            raise
        finally:
            timer.cancel()
            task.remove_done_callback(wake)
        if task.done():
            return task.result()
        self._keep_late(task, update)
        if claim.stage == "dup":  # a retry still waiting for the first answer: nothing of ours to settle
            return Answer("", duplicate=True)
        LATE_REPLIES.inc()
        claim.late = True
        if claim.stage == "run":  # else the task settles the record once BEGIN has claimed it
            await self._pipe.run(_SETTLE, [ks[0]], [_NO_ANSWER, cfg.wechat.dedupe_ttl])
        return Answer("", late=True)

    async def answer_later(self, message: BaseMessage, dedupe_key: str) -> None:
        """Answer a message the callback shed (``success`` was its passive reply): the answer goes
        out as a customer-service message. A retry's duplicate sends nothing again."""
        answer = await self.answer(message, dedupe_key, budget=self.config.chat.lock_ttl + 60)
        if answer.duplicate or answer.late or not answer.xml or self._late_reply is None:
            return  # a late answer is sent by _late_done
        content = _text_of(answer.xml)
        if content is None:
            log.warning("non-text answer to a shed message for %s dropped", mask_openid(str(message.source)))
            return
        await self._late_reply(str(message.source), content)  # awaited: the job is done once it is queued

    def _keep_late(self, task: asyncio.Task[Answer], update: Update) -> None:
        self._background.add(task)
        task.add_done_callback(lambda t: self._late_done(t, update))

    async def _answer_of_duplicate(self, dedupe_key: str, stored: str, deadline: float) -> Answer:
        delay = 0.01
        while stored == _PENDING and time.monotonic() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.1)
            current = await self._pipe.execute("GET", dedupe_key)
            stored = _NO_ANSWER if current is None else str(current)  # expired: nothing more to give
        if stored.startswith(_ANSWER):
            return Answer(stored[len(_ANSWER) :], duplicate=True)
        return Answer("", duplicate=True)

    async def _handle(self, update: Update, claim: _Claim, deadline: float) -> Answer:
        """BEGIN (claim the dedupe record, take the lock, load state and identity), the handler, END."""
        cfg = self.config
        ks, token = claim.keys, claim.token
        lock_ms = int(cfg.chat.lock_ttl * 1000)
        pipe = self._pipe
        plain = pipe.pipelined  # one connection, commands in order: no scripts needed (see _begin)
        taken = time.monotonic()  # a lock BEGIN takes is ours until at least taken + lock_ttl
        if plain:
            status, loaded = await self._begin(ks, token, lock_ms, first=True)
        else:
            status, *loaded = await pipe.run(_BEGIN, ks, ["1", cfg.wechat.dedupe_ttl, token, lock_ms])
        if status == "dup":
            claim.stage = "dup"
            DEDUPE_HITS.inc()
            return await self._answer_of_duplicate(ks[0], loaded[0], deadline)
        claim.stage = "run"
        if claim.late:  # the request was answered "success" while BEGIN was on its way
            await self._pipe.run(_SETTLE, [ks[0]], [_NO_ANSWER, cfg.wechat.dedupe_ttl])
        delay = 0.005
        while status == "locked":
            # Another message of this user is being handled: wait our turn. The lock has a TTL, so
            # a crashed holder delays us at most chat.lock_ttl.
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)
            taken = time.monotonic()
            if plain:
                status, loaded = await self._begin(ks, token, lock_ms, first=False)
            else:
                status, *loaded = await pipe.run(_BEGIN, ks, ["0", cfg.wechat.dedupe_ttl, token, lock_ms])
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
            dump = state.dump()
            if plain and time.monotonic() - taken < cfg.chat.lock_ttl / 2:
                end = self._end(ks, stored, dump, late=claim.late)
                if dump != "" or not pipe.send_many(*end):
                    await pipe.execute_many(*end)
            else:
                args: list[str | int | float | bytes] = [stored, cfg.wechat.dedupe_ttl, token, dump, cfg.chat.state_ttl]
                if dump != "" or not pipe.send_script(_END, ks[:3], args):
                    await pipe.run(_END, ks[:3], args)
        return Answer(xml)

    async def _begin(self, ks: list[str], token: str, lock_ms: int, *, first: bool) -> tuple[str, list[str]]:
        """``BEGIN_MESSAGE`` in plain commands, one round trip: what it returns, as (status, values).

        A script costs Redis ~15 µs more than the same commands sent plainly (measured: EVALSHA 20 µs
        a call, its five commands 6 µs), and Redis, one thread for every process of the city, is the
        part that does not scale out. The commands differ from the script in one way: they are not
        atomic, so a retry (the dedupe record already there) takes the lock too when it is free, and
        gives it back at once, in its next round trip (rare: WeChat retries only a late answer). The
        state read after the lock is taken is as safe as the script's: only the lock's holder writes it.
        """
        lock = ("SET", ks[1], token, "NX", "PX", lock_ms)
        load = ("MGET", ks[2], ks[3])
        if not first:
            got, values = await self._pipe.execute_many(lock, load)
            return ("locked", []) if got is None else ("ok", [v or "" for v in values])
        claim = ("SET", ks[0], _PENDING, "NX", "EX", self.config.wechat.dedupe_ttl)
        claimed, got, values = await self._pipe.execute_many(claim, lock, load)
        if claimed is None:  # a retry: the first answer (or its pending marker), and the lock back
            give_back = (("DEL", ks[1]),) if got is not None else ()
            *_, prev = await self._pipe.execute_many(*give_back, ("GET", ks[0]))
            return "dup", [_NO_ANSWER if prev is None else prev]  # (expired meanwhile: nothing to give)
        return ("locked", []) if got is None else ("ok", [v or "" for v in values])

    def _end(self, ks: list[str], stored: str, dump: str, *, late: bool) -> list[tuple[str | int, ...]]:
        """``END_MESSAGE`` in plain commands, for a lock certainly still ours (taken less than half of
        ``chat.lock_ttl`` ago: nobody else can have taken it since, so a plain DEL frees only ours).

        The answer is kept for retries unless the request was already answered ``success`` at the
        deadline: then this process has sent the settling of the record to ``success`` before this,
        and the script would leave it so too (it writes only a pending record). A deadline passing
        after this finds the answer kept, as with the script. XX: an expired record is not made again."""
        cfg = self.config
        out: list[tuple[str | int, ...]] = []
        if not late:
            out.append(("SET", ks[0], stored, "XX", "EX", cfg.wechat.dedupe_ttl))
        if dump == "D":
            out.append(("DEL", ks[2]))
        elif dump:
            out.append(("SET", ks[2], dump, "EX", cfg.chat.state_ttl))
        out.append(("DEL", ks[1]))
        return out

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
            return self._handler_failed(update, data)

    def _handler_failed(self, update: Update, data: dict[str, Any]) -> ReplyValue:
        """After a handler raised (inside ``except``): log it, drop its state changes, apologise."""
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
    def _late_done(self, task: asyncio.Task[Answer], update: Update) -> None:
        self._background.discard(task)
        if task.cancelled() or task.exception() is not None:
            if not task.cancelled():
                log.error("late handler failed for %s: %r", mask_openid(update.openid), task.exception())
            return
        answer = task.result()
        if not answer.duplicate:  # a retry's wait: the first message's own answer goes its own way
            self._deliver_late(update.openid, answer.xml)

    def _deliver_late(self, openid: str, xml: str) -> None:
        if not xml or self._late_reply is None:
            return
        content = _text_of(xml)
        if content is None:
            log.warning(
                "late non-text reply for %s dropped (only text goes by customer-service message)", mask_openid(openid)
            )
            return
        t: asyncio.Task[None] = asyncio.get_running_loop().create_task(self._send_late(openid, content))
        self._background.add(t)
        t.add_done_callback(self._background.discard)

    async def _send_late(self, openid: str, text: str) -> None:
        assert self._late_reply is not None
        await self._late_reply(openid, text)

    async def drain(self, limit: float) -> None:
        """Wait for late handlers still running (graceful shutdown), then close the shared connection."""
        if self._background:
            await asyncio.wait(list(self._background), timeout=limit)
        await self._pipe.aclose()


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
