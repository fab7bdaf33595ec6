"""The chat's text parsing against generated input (hypothesis): ``normalize_text``, every Command and
Pattern filter the app registers, the router's choice of handler, and the lessons' ``normalize_answer``.

Never an exception, never a slow regular expression on a long message, and a command word still
recognised however a parent decorates it (spaces, full-width characters, case, closing punctuation).
"""

from __future__ import annotations

import time
import unicodedata
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wechatpy.messages import TextMessage

from bot.app import CONTEXT_KEY, create_app
from bot.chat.router import Command, Pattern, Router, State, Update, normalize_text
from bot.config import Config
from bot.lessons.content import FALSE, LETTERS, TRUE, normalize_answer

TRIM = " \t\r\n\u3000。.!！?？~～"
FAST = settings(max_examples=2000, deadline=None, database=None, suppress_health_check=list(HealthCheck))
# A WeChat text message is at most 2,048 bytes; the callback's body limit allows far more (64 KB).
long_text = st.text(max_size=3000) | st.builds(lambda c, n: c * n, st.characters(), st.integers(1, 20_000))


def text_update(content: str) -> Update:
    """What the callback hands the router for a text message (any text: more than XML can carry)."""
    fields = {"ToUserName": "gh_x", "FromUserName": "oParser000000000000000000001", "CreateTime": "1",
              "MsgType": "text", "Content": content, "MsgId": "1"}  # fmt: skip
    return Update.from_message(TextMessage(fields))


@pytest.fixture(scope="module")
def tree() -> Router:
    """The app's whole router, as ``create_app`` builds it (no Redis call is made to build it)."""
    from bot.store.redis import connect

    cfg = Config(source="tests")
    cfg.wechat.token, cfg.wechat.app_id = "t", "wx0000000000000000"
    app = create_app(cfg, connect("unix:///nonexistent.sock"))
    return app[CONTEXT_KEY].engine._tree


def filters_of(tree: Router) -> tuple[list[Command], list[Pattern], set[str | None]]:
    commands: list[Command] = []
    patterns: list[Pattern] = []
    states: set[str | None] = {None}
    for router in tree._walk():
        for entry in [*router.handlers, *router.fallbacks]:
            for f in entry.filters:
                if isinstance(f, Command):
                    commands.append(f)
                elif isinstance(f, Pattern):
                    patterns.append(f)
                elif isinstance(f, State):
                    states.update(f.states)
    return commands, patterns, states


@FAST
@given(st.text(max_size=500))
def test_normalize_text_never_fails_and_leaves_no_padding(text: str) -> None:
    out = normalize_text(text)
    assert out == out.strip(TRIM)
    assert len(out) <= len(unicodedata.normalize("NFKC", text))


def test_every_command_word_is_recognised_however_it_is_decorated(tree: Router, figures: Any) -> None:
    commands, _, _ = filters_of(tree)
    words = sorted({w for c in commands for w in c.words})
    pad = st.text(st.sampled_from(" \t\u3000"), max_size=3)
    tail = st.text(st.sampled_from("。.!！?？~～ "), max_size=3)

    def full_width(s: str) -> str:
        return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in s)

    checked = 0

    def check_word(word: str) -> None:
        @settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(pad, tail, st.booleans(), st.booleans())
        def decorated(head: str, end: str, wide: bool, upper: bool) -> None:
            nonlocal checked
            shown = full_width(word) if wide else word
            shown = shown.upper() if upper else shown
            update = text_update(head + shown + end)
            assert any(c(update, None) for c in commands if word in c.words), (word, head + shown + end)
            checked += 1

        decorated()

    for word in words:
        check_word(word)
    figures(f"chat commands: {len(words)} words × decorations, {checked} cases, all recognised")


def test_no_pattern_the_app_registers_is_slow_or_fails_on_long_or_odd_text(tree: Router, figures: Any) -> None:
    _, patterns, _ = filters_of(tree)
    worst = 0.0
    runs = 0

    @FAST
    @given(long_text)
    def check(text: str) -> None:
        nonlocal worst, runs
        update = text_update(text[:20_000])
        for p in patterns:
            started = time.perf_counter()
            p(update, None)
            worst = max(worst, time.perf_counter() - started)
            runs += 1

    check()
    figures(f"chat patterns: {len(patterns)} regular expressions, {runs} matches, slowest {worst * 1000:.1f} ms")
    assert worst < 0.25  # a backtracking pattern takes seconds on 20,000 characters


def test_the_router_picks_a_handler_or_none_for_any_text_in_any_state(tree: Router) -> None:
    _, _, states = filters_of(tree)
    frozen = tree.freeze()
    known = sorted(s or "" for s in states)

    @FAST
    @given(st.text(max_size=300), st.sampled_from(known) | st.text(max_size=10))
    def check(text: str, state: str) -> None:
        frozen.resolve(text_update(text), state or None)

    check()


@FAST
@given(st.text(max_size=300))
def test_normalize_answer_gives_a_letter_true_false_or_none(text: str) -> None:
    assert normalize_answer(text) in (None, *LETTERS, TRUE, FALSE)


@FAST
@given(
    st.sampled_from(LETTERS),  # letters of a four-option question
    st.sampled_from(["", "选", "我选", "答案：", "答案是 ", "我的答案是", "选项"]),
    st.text(st.sampled_from(" \u3000"), max_size=2),
    st.text(st.sampled_from("。.!！ )）"), max_size=2),
    st.sampled_from(["", "~", "～", "～～"]),
    st.booleans(),
    st.booleans(),
)
def test_normalize_answer_reads_a_decorated_letter(
    letter: str, prefix: str, pad: str, end: str, tilde: str, lower: bool, wide: bool
) -> None:
    shown = letter.lower() if lower else letter
    shown = chr(ord(shown) + 0xFEE0) if wide else shown
    # as the lessons' chat reads it: the message's text is normalized first (that strips ~ and ～)
    assert normalize_answer(normalize_text(pad + prefix + shown + end + tilde)) == letter
