"""The router: handlers registered with decorators and filters; the first whose filters all pass runs.

Modelled on aiogram 3: feature routers are included into the root one; a filter may return a dict
that is injected into the handler's arguments; a handler asks for what it needs by parameter name
(``update``, ``openid``, ``text``, ``state``, ``render``, ``redis``, ``api``, ``config``, or anything a
filter or a middleware put into the context).
"""

from __future__ import annotations

import inspect
import re
import unicodedata
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from wechatpy.messages import BaseMessage

from bot.chat.state import ANY_STATE


@dataclass(slots=True)
class Update:
    """One inbound message or event, with the fields handlers and filters look at most."""

    message: BaseMessage
    openid: str
    kind: str  # "text", "image", "event", ... (wechatpy's message type)
    event: str = ""  # lower-case event name: "subscribe", "subscribe_scan", "scan", "click", ...
    text: str = ""  # normalized text of a text message ("" otherwise)
    key: str = ""  # EventKey: menu key for CLICK, scene for scans

    @classmethod
    def from_message(cls, message: BaseMessage) -> Update:
        kind = str(getattr(message, "type", "unknown") or "unknown")
        # The XML fields as parsed: what wechatpy's field descriptors return for these string fields,
        # without their deep copies and conversions on every access (this runs for every message).
        raw: dict[str, Any] = getattr(message, "_data", None) or {}
        if kind == "text":
            text = normalize_text(str(raw.get("Content") or ""))
            return cls(message, str(raw.get("FromUserName") or ""), kind, text=text)
        event = str(getattr(message, "event", "") or "").lower() if kind == "event" else ""
        key = ""
        if kind == "event":
            raw_key = getattr(message, "key", None) or getattr(message, "scene_id", None) or ""
            key = str(raw_key)
        return cls(message=message, openid=str(message.source or ""), kind=kind, event=event, key=key)


_TRIM = " \t\r\n\u3000。.!！?？~～"


def normalize_text(text: str) -> str:
    """NFKC (full-width → half-width), trimmed of spaces and closing punctuation."""
    return unicodedata.normalize("NFKC", text).strip(_TRIM)


FilterResult = bool | dict[str, Any]


class Filter(Protocol):
    def __call__(self, update: Update, state: str | None) -> FilterResult: ...


# -- filters ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class MsgType:
    kinds: tuple[str, ...]

    def __init__(self, *kinds: str) -> None:
        object.__setattr__(self, "kinds", kinds)

    def __call__(self, update: Update, state: str | None) -> FilterResult:
        return update.kind in self.kinds


@dataclass(frozen=True, slots=True)
class Event:
    events: tuple[str, ...]

    def __init__(self, *events: str) -> None:
        object.__setattr__(self, "events", tuple(e.lower() for e in events))

    def __call__(self, update: Update, state: str | None) -> FilterResult:
        return update.kind == "event" and update.event in self.events


@dataclass(frozen=True, slots=True)
class MenuKey:
    """A CLICK menu button by its key."""

    keys: tuple[str, ...]

    def __init__(self, *keys: str) -> None:
        object.__setattr__(self, "keys", keys)

    def __call__(self, update: Update, state: str | None) -> FilterResult:
        return update.kind == "event" and update.event == "click" and update.key in self.keys


@dataclass(frozen=True, slots=True)
class Command:
    """A text message equal (after normalizing, case-insensitive) to one of the words."""

    words: frozenset[str]

    def __init__(self, *words: str) -> None:
        object.__setattr__(self, "words", frozenset(normalize_text(w).lower() for w in words))

    def __call__(self, update: Update, state: str | None) -> FilterResult:
        return update.kind == "text" and update.text.lower() in self.words


@dataclass(frozen=True, slots=True)
class Pattern:
    """A text message matching a regular expression; injects ``match``."""

    regex: re.Pattern[str]

    def __init__(self, pattern: str, flags: int = re.IGNORECASE) -> None:
        object.__setattr__(self, "regex", re.compile(pattern, flags))

    def __call__(self, update: Update, state: str | None) -> FilterResult:
        if update.kind != "text":
            return False
        m = self.regex.fullmatch(update.text)
        return {"match": m} if m else False


@dataclass(frozen=True, slots=True)
class State:
    """The conversation state: ``State("bind:name")``, ``State(None)`` (no conversation), ``State(ANY_STATE)``."""

    states: tuple[str | None, ...]

    def __init__(self, *states: str | None) -> None:
        object.__setattr__(self, "states", states)

    def __call__(self, update: Update, state: str | None) -> FilterResult:
        if ANY_STATE in self.states:
            return state is not None
        return state in self.states


# -- handlers --------------------------------------------------------------------------------
ReplyValue = Any  # str (text reply), a wechatpy reply, or None (answer "success")
HandlerFunc = Callable[..., Awaitable[ReplyValue]]


@dataclass(slots=True)
class HandlerEntry:
    func: HandlerFunc
    filters: tuple[Filter, ...]
    params: tuple[str, ...]
    takes_all: bool
    name: str

    def match(self, update: Update, state: str | None) -> dict[str, Any] | None:
        injected: dict[str, Any] = {}
        for f in self.filters:
            result = f(update, state)
            if result is False:
                return None
            if isinstance(result, dict):
                injected.update(result)
        return injected

    async def call(self, data: dict[str, Any]) -> ReplyValue:
        if self.takes_all:
            return await self.func(**data)
        try:
            kwargs = {p: data[p] for p in self.params}
        except KeyError as exc:
            raise TypeError(f"handler {self.name} asks for {exc.args[0]!r}, which nothing provides") from None
        return await self.func(**kwargs)


def _entry(func: HandlerFunc, filters: tuple[Filter, ...]) -> HandlerEntry:
    if not inspect.iscoroutinefunction(func):
        raise TypeError(f"handler {func.__qualname__} must be an async function")
    sig = inspect.signature(func)
    params = tuple(n for n, p in sig.parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    takes_all = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    return HandlerEntry(func, filters, params, takes_all, f"{func.__module__}.{func.__qualname__}")


@dataclass
class Router:
    """Handlers in registration order, then included routers, depth first; fallbacks last."""

    name: str
    handlers: list[HandlerEntry] = field(default_factory=list)
    children: list[Router] = field(default_factory=list)
    fallbacks: list[HandlerEntry] = field(default_factory=list)

    def include(self, *routers: Router) -> None:
        for r in routers:
            if r is self or r in self.children:
                raise ValueError(f"router {r.name} is already included")
            self.children.append(r)

    def handler(self, *filters: Filter) -> Callable[[HandlerFunc], HandlerFunc]:
        def register(func: HandlerFunc) -> HandlerFunc:
            self.handlers.append(_entry(func, filters))
            return func

        return register

    def text(self, *filters: Filter) -> Callable[[HandlerFunc], HandlerFunc]:
        return self.handler(MsgType("text"), *filters)

    def command(self, *words: str, state: Filter | None = None) -> Callable[[HandlerFunc], HandlerFunc]:
        return self.handler(Command(*words), *((state,) if state else ()))

    def event(self, *events: str) -> Callable[[HandlerFunc], HandlerFunc]:
        return self.handler(Event(*events))

    def menu(self, *keys: str) -> Callable[[HandlerFunc], HandlerFunc]:
        return self.handler(MenuKey(*keys))

    def fallback(self, *filters: Filter) -> Callable[[HandlerFunc], HandlerFunc]:
        """Tried only after every ordinary handler in the whole tree declined."""

        def register(func: HandlerFunc) -> HandlerFunc:
            self.fallbacks.append(_entry(func, filters))
            return func

        return register

    def _walk(self) -> Iterator[Router]:
        yield self
        for child in self.children:
            yield from child._walk()

    def resolve(self, update: Update, state: str | None) -> tuple[HandlerEntry, dict[str, Any]] | None:
        routers = list(self._walk())
        for r in routers:
            for entry in r.handlers:
                injected = entry.match(update, state)
                if injected is not None:
                    return entry, injected
        for r in routers:
            for entry in r.fallbacks:
                injected = entry.match(update, state)
                if injected is not None:
                    return entry, injected
        return None

    def freeze(self) -> FrozenRouter:
        """A flat, precomputed list for the hot path (the tree does not change after start-up)."""
        routers = list(self._walk())
        return FrozenRouter(
            tuple(e for r in routers for e in r.handlers), tuple(e for r in routers for e in r.fallbacks)
        )


@dataclass(frozen=True, slots=True)
class _Gates:
    """What an entry's built-in filters require of an update, known before any update arrives."""

    kinds: frozenset[str] | None = None  # None: any
    events: frozenset[str] | None = None
    menu_keys: frozenset[str] | None = None
    words: frozenset[str] | None = None
    states: tuple[str | None, ...] | None = None

    @classmethod
    def of(cls, entry: HandlerEntry) -> _Gates:
        kinds: set[str] | None = None
        events = menu_keys = words = None
        states = None

        def need(k: set[str]) -> None:
            nonlocal kinds
            kinds = k if kinds is None else kinds & k

        for f in entry.filters:
            if isinstance(f, MsgType):
                need(set(f.kinds))
            elif isinstance(f, Command):
                need({"text"})
                words = f.words if words is None else words & f.words
            elif isinstance(f, Pattern):
                need({"text"})
            elif isinstance(f, Event):
                need({"event"})
                events = frozenset(f.events) if events is None else events & frozenset(f.events)
            elif isinstance(f, MenuKey):
                need({"event"})
                events = frozenset({"click"}) if events is None else events & {"click"}
                menu_keys = frozenset(f.keys) if menu_keys is None else menu_keys & frozenset(f.keys)
            elif isinstance(f, State) and states is None:  # a second State filter is left to match()
                states = f.states
        return cls(None if kinds is None else frozenset(kinds), events, menu_keys, words, states)

    def allow(self, kind: str, event: str, key: str, word: str | None, state: str | None) -> bool:
        if self.kinds is not None and kind not in self.kinds:
            return False
        if self.events is not None and event not in self.events:
            return False
        if self.menu_keys is not None and key not in self.menu_keys:
            return False
        if self.words is not None and word not in self.words:
            return False
        if self.states is not None:
            if ANY_STATE in self.states:
                return state is not None
            return state in self.states
        return True


@dataclass(frozen=True, slots=True)
class FrozenRouter:
    """The handlers in order, with the candidates for each kind of update worked out once.

    Most filters depend only on the message kind, the event, a menu key, the command word and the
    conversation state; for each combination seen, the entries whose filters could pass are listed
    once, and only those are tried (Patterns still run). Same answer as trying every handler in
    order, without 40 filter calls for a parent's "你好".
    """

    handlers: tuple[HandlerEntry, ...]
    fallbacks: tuple[HandlerEntry, ...]
    _gates: dict[int, _Gates] = field(default_factory=dict, compare=False, repr=False)
    _words: frozenset[str] = field(default=frozenset(), compare=False, repr=False)
    _candidates: dict[tuple[str, str, str, str | None, str | None], tuple[tuple[HandlerEntry, ...], ...]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        words: set[str] = set()
        for entry in (*self.handlers, *self.fallbacks):
            gates = self._gates[id(entry)] = _Gates.of(entry)
            words |= gates.words or set()
        object.__setattr__(self, "_words", frozenset(words))

    def resolve(self, update: Update, state: str | None) -> tuple[HandlerEntry, dict[str, Any]] | None:
        text = update.text.lower() if update.kind == "text" else ""
        key = (update.kind, update.event, update.key if update.event == "click" else "",
               text if text in self._words else None, state)  # fmt: skip
        groups = self._candidates.get(key)
        if groups is None:
            if len(self._candidates) > 4096:  # bounded whatever comes in
                self._candidates.clear()
            groups = self._candidates[key] = tuple(
                tuple(e for e in group if self._gates[id(e)].allow(*key)) for group in (self.handlers, self.fallbacks)
            )
        for group in groups:
            for entry in group:
                injected = entry.match(update, state)
                if injected is not None:
                    return entry, injected
        return None
