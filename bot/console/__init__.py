"""The web console for administrators and teachers, at ``/console``.

- :mod:`.accounts` console accounts (``bot admin create|passwd|list``, :mod:`.cli`), scrypt hashes;
- :mod:`.sessions` server-side sessions in Redis, the cookie; :mod:`.throttle` login lockout;
- :mod:`.auth` password and WeChat (teacher) sign-in, logout; :mod:`.web` the plumbing (viewer, forms
  with CSRF, pages, the error-catching middleware, security headers);
- :mod:`.scope` which district, school or class a page is about, checked with ``authz.can``;
- :mod:`.stats` notice figures; :mod:`.charts` server-side SVG; :mod:`.audit` the audit log;
- :mod:`.views` the pages.

Templates are in ``templates/web/console/``, with a small stylesheet and script in ``static/``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.app import AppContext


def setup(ctx: AppContext) -> None:
    """Register the console: a sub-application at ``/console`` with its own middleware."""
    from aiohttp import web

    from bot.console import auth
    from bot.console.views import alerts, audit, campaigns, dashboard, lessons, notices, roster
    from bot.console.web import PREFIX, Console, static

    console = Console(ctx)
    ctx.services["console"] = console
    console.app.router.add_get("/static/{name}", static)
    auth.register(console)
    for view in (dashboard, notices, roster, campaigns, lessons, alerts, audit):
        view.register(console)

    async def close(app: web.Application) -> None:
        if console.http is not None:
            await console.http.close()

    console.app.on_cleanup.append(close)
    ctx.app.add_subapp(PREFIX, console.app)
