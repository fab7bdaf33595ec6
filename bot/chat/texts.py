"""Texts that parents and teachers read: jinja2 templates under ``templates/messages/``.

Chat texts are plain text (WeChat shows no HTML), so there is nothing to escape for a browser; the
XML layer escapes what it must. Templates are compiled once and cached by jinja2; a missing template
or variable is an error at test time (StrictUndefined), never a blank message to a parent.
"""

from __future__ import annotations

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

    def render(self, name: str, /, **context: Any) -> str:
        template = self._cache.get(name)
        if template is None:
            template = self._cache[name] = self.env.get_template(f"{name}.txt.j2")
        return template.render(**context).strip()

    def names(self) -> list[str]:
        return sorted(n[: -len(".txt.j2")] for n in self.env.list_templates() if n.endswith(".txt.j2"))
