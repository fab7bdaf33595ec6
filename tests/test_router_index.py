"""The frozen router's candidate index picks exactly the handler trying every one in order would."""

from __future__ import annotations

import itertools
import random
import re
from typing import Any

from bot.app import CONTEXT_KEY, create_app
from bot.chat.router import Command, HandlerEntry, MenuKey, Pattern, State, Update
from bot.config import Config
from bot.store.redis import Redis
from bot.wechat.callback import parse_inner
from bot.wechat.emulator import follower

A, P = "gh_safebell_test", "oTestParent000000000000000001"  # account, parent


async def test_the_index_resolves_like_the_linear_scan_for_every_kind_word_and_state(
    config: Config, redis: Redis
) -> None:
    tree = create_app(config, redis)[CONTEXT_KEY].engine._tree
    frozen = tree.freeze()
    entries = [*frozen.handlers, *frozen.fallbacks]
    words = sorted({w for e in entries for f in e.filters if isinstance(f, Command) for w in f.words})
    keys = sorted({k for e in entries for f in e.filters if isinstance(f, MenuKey) for k in f.keys})
    named: list[str] = sorted({s for e in entries for f in e.filters if isinstance(f, State)
                                       for s in f.states if s is not None})  # fmt: skip
    states: list[str | None] = [*named, None, "some:other"]
    rng = random.Random(3)
    texts = [*words, *(w.upper() for w in words), "你好", "1", "12", "A", "b", "选C", "ABC123", "移除 3", "同意 2",
             "SB-ABCD-1234", "T-12345678", "", " ", "确认！", "ｈｅｌｐ"]  # fmt: skip
    texts += ["".join(rng.choice("0123456789ABCabc确认 -") for _ in range(rng.randint(1, 8))) for _ in range(200)]
    messages = [follower.text_message(A, P, t) for t in texts]
    messages += [follower.event_message(A, P, "CLICK", k) for k in [*keys, "NOPE"]]
    events = (("subscribe", None), ("subscribe", "qrscene_x"), ("SCAN", "class-1"), ("unsubscribe", None),
              ("TEMPLATESENDJOBFINISH", None), ("VIEW", "u"))  # fmt: skip
    messages += [follower.event_message(A, P, e, k) for e, k in events]
    messages += [follower.image_message(A, P), follower.voice_message(A, P), follower.location_message(A, P)]
    updates = [Update.from_message(parse_inner(m)) for m in messages]
    assert any(isinstance(f, Pattern) for e in entries for f in e.filters)  # patterns are in the mix

    def seen(found: tuple[HandlerEntry, dict[str, Any]] | None) -> Any:
        if found is None:
            return None
        entry, injected = found
        return entry.name, {k: v.groups() if isinstance(v, re.Match) else v for k, v in injected.items()}

    for update, state in itertools.product(updates, states):
        assert seen(tree.resolve(update, state)) == seen(frozen.resolve(update, state)), (
            update.kind, update.event, update.text, state)  # fmt: skip
