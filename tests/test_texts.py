"""The chat texts of the foundation and of binding: Simplified Chinese, short, and a next step in each.

Every template is rendered twice: with a sample value for every variable (conditions true, lists of
one row) and with nothing (conditions false, lists empty), so both sides of each branch are read.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import jinja2
import pytest

from bot.chat.texts import Texts
from bot.paths import MESSAGES

# The areas these texts belong to: the basic chat (welcome, help, fallback...) and binding.
AREAS = ("", "roster/")
# A greeting always sent with the question that follows it (see bot/roster/chat.py: scanned).
PREFIXES = {"welcome_scan"}
MAX_CHARS = 120  # with one row in each list; WeChat shows about 10 lines without scrolling
NEXT_STEP = re.compile(r"回复|发送|扫描|联系|请|再发|再试")
HAN = re.compile(r"[\u4e00-\u9fff]")
# Traditional forms of characters these texts use; none may appear (a text pasted from a 繁體 source).
TRADITIONAL = set("們這個綁為學對時發後說請還沒關與應會過讓認號碼將電話確護無選擇聯繫機構師課題測驗錯誤審問證資訊")
ENGLISH_WORD = re.compile(r"[A-Za-z]{5,}")


class Sample(jinja2.ChainableUndefined):
    """Any variable: a name-like string, true, a list of one such value."""

    __slots__ = ()

    def __str__(self) -> str:
        return "王小明"

    def __bool__(self) -> bool:
        return True

    def __iter__(self) -> Iterator[Any]:
        yield Sample()

    def __len__(self) -> int:
        return 1

    def __eq__(self, other: object) -> bool:
        return False

    def __hash__(self) -> int:
        return 1


def _names() -> list[str]:
    names = Texts().names()
    return [n for n in names if any(n.startswith(a) and "/" not in n[len(a) :] for a in AREAS)]


def _render(name: str, undefined: type[jinja2.Undefined]) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(MESSAGES)), undefined=undefined, trim_blocks=True, lstrip_blocks=True
    )
    return env.get_template(f"{name}.txt.j2").render().strip()


def test_the_areas_have_texts() -> None:
    names = _names()
    assert {"welcome", "help", "fallback", "roster/locked", "roster/no_match", "roster/bound"} <= set(names)


@pytest.mark.parametrize("name", _names())
@pytest.mark.parametrize("undefined", [Sample, jinja2.ChainableUndefined], ids=["filled", "empty"])
def test_every_text_is_short_simplified_chinese_with_a_next_step(name: str, undefined: type[jinja2.Undefined]) -> None:
    text = _render(name, undefined)
    if not text:  # a list with nothing in it is never sent (the handler answers otherwise)
        return
    assert HAN.search(text), (name, text)
    assert not TRADITIONAL & set(text), (name, sorted(TRADITIONAL & set(text)))
    assert not ENGLISH_WORD.search(text), (name, text)
    assert len(text) <= MAX_CHARS, (name, len(text), text)
    if name not in PREFIXES:
        assert NEXT_STEP.search(text), f"{name}: no next step in {text!r}"
