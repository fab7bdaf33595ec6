"""H5 pages: one jinja2 environment for ``templates/web/`` with autoescaping on, and the page responses.

Every text a user wrote (a notice, a child's name) reaches HTML only through autoescaping: no
template marks user text ``|safe``. The stylesheet is ours, inlined (one request on a slow phone
network) and allowed by its hash in the Content-Security-Policy, which allows nothing else: no
scripts, no outside resources, forms only to this site, no framing.
"""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache
from typing import Any

import jinja2
from aiohttp import web
from markupsafe import Markup

from bot.paths import WEB_TEMPLATES

STYLESHEET = "static/app.css"


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(WEB_TEMPLATES)),
        autoescape=True,  # every template, whatever its extension
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    css = (WEB_TEMPLATES / STYLESHEET).read_text(encoding="utf-8")
    env.globals["stylesheet"] = Markup(css)  # our own constant file, never user text
    return env


@lru_cache(maxsize=1)
def _policy() -> str:
    css = (WEB_TEMPLATES / STYLESHEET).read_text(encoding="utf-8")
    digest = base64.b64encode(hashlib.sha256(css.encode("utf-8")).digest()).decode()
    return (
        f"default-src 'none'; style-src 'sha256-{digest}'; img-src 'self' data:; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )


def headers() -> dict[str, str]:
    """Headers for every page: personal content is never cached or framed, and never sniffed."""
    return {
        "Content-Security-Policy": _policy(),
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
    }


def render(name: str, /, *, status: int = 200, **context: Any) -> web.Response:
    """A page from ``templates/web/<name>`` (which extends ``base.html``)."""
    html = environment().get_template(name).render(**context)
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8", headers=headers())


def message(status: int, title: str, text: str, hint: str = "", *, icon: str = "ℹ️") -> web.Response:
    """A short page that explains what happened and what to do next (errors, refusals)."""
    return render("message.html", status=status, title=title, text=text, hint=hint, icon=icon)


def redirect(location: str, *, status: int = 302) -> web.Response:
    response = web.Response(status=status, headers={**headers(), "Location": location})
    return response
