"""Texts that parents and teachers read: jinja2 templates under ``templates/messages/``.

Chat texts are plain text (WeChat shows no HTML), so there is nothing to escape for a browser; the
XML layer escapes what it must. Templates are compiled once and cached by jinja2; a missing template
or variable is an error at test time (StrictUndefined), never a blank message to a parent.

A template's text depends only on its variables (no globals, no clock), so a text rendered from
plain values (strings, numbers, lists and dicts of them) is kept and given again for the same values:
「帮助」 and the "not understood" answer cost a dict lookup instead of a jinja render (≈10 µs) each time.
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

import jinja2

from bot.paths import MESSAGES


class Texts:
    def __init__(self, root: Path = MESSAGES) -> None:
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(root)),
            autoescape=False,
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
        )
        self._cache: dict[str, jinja2.Template] = {}
        self._rendered: dict[Hashable, str] = {}

    def render(self, name: str, /, **context: Any) -> str:
        key = _plain_key(name, context)
        if key is not None:
            text = self._rendered.get(key)
            if text is not None:
                return text
        template = self._cache.get(name)
        if template is None:
            template = self._cache[name] = self.env.get_template(f"{name}.txt.j2")
        text = template.render(**context).strip()
        if key is not None:
            if len(self._rendered) >= _KEEP:
                self._rendered.clear()
            self._rendered[key] = text
        return text

    def names(self) -> list[str]:
        return sorted(n[: -len(".txt.j2")] for n in self.env.list_templates() if n.endswith(".txt.j2"))


_KEEP = 2048  # rendered texts kept (then forgotten all at once: a parent's name makes a new one)
_PLAIN = (str, int, float, bool, type(None))


def _plain_key(name: str, context: dict[str, Any]) -> Hashable | None:
    """A key for the rendered text when every variable is a plain value; None when one is not."""
    try:
        return (name, *sorted((k, _freeze(v)) for k, v in context.items()))
    except _NotPlain:
        return None


class _NotPlain(Exception):
    pass


def _freeze(value: Any) -> Hashable:
    if isinstance(value, _PLAIN):
        return (type(value).__name__, value)  # 1 and True and 1.0 render differently
    if isinstance(value, list | tuple):
        return (type(value).__name__, *(_freeze(v) for v in value))
    if isinstance(value, dict):
        return ("dict", *((k, _freeze(v)) for k, v in value.items()))
    raise _NotPlain
