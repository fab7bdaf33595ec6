"""Browser tests: Debian's Chromium, driven by Playwright, against the real system in this process.

The system is the one ``bot demo`` runs: a real Redis, the WeChat emulator, the bot's app and a
worker sending the cards. Chromium is ``/usr/bin/chromium`` (``make browser`` installs Debian's
package when it is missing and we are root; ``SAFEBELL_CHROMIUM`` names another binary), launched
headless with a fresh profile per person, never a browser downloaded by ``playwright install``.
The tests are skipped, saying why, only when no browser can be found or Playwright is not installed.

Screenshots of the main pages go to ``test-artifacts/`` (gitignored).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from bot.app import CONTEXT_KEY, create_app
from bot.config import Config
from bot.console.accounts import AccountStore, ScryptCost
from bot.console.demo_page import with_demo
from bot.demo_data import DEMO_SCHOOL
from bot.demo_data import path as demo_file
from bot.roster.chat import forget_directory
from bot.roster.importer import apply_schools, parse_schools
from bot.serve import build_worker
from bot.store.redis import Redis
from bot.wechat.client import WeChatAPI

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ADMIN, PASSWORD = "pinganlu-admin", "a-long-admin-password"


def chromium_path() -> str | None:
    for candidate in (os.environ.get("SAFEBELL_CHROMIUM", ""), "/usr/bin/chromium", shutil.which("chromium") or ""):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _skip_reason() -> str | None:
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed: run `make install` (it is in the dev extras)"
    if chromium_path() is None:
        return ("no Chromium: run `make browser` as root (installs Debian's chromium package), "
                "or set SAFEBELL_CHROMIUM to a Chromium binary")  # fmt: skip
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _skip_reason()
    if reason is None:
        return
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.skip(reason=reason))


@dataclass
class System:
    base: str
    config: Config
    redis: Redis
    emulator: Any
    tmp: Path
    playwright: Any
    contexts: list[Any] = field(default_factory=list)

    async def person(self, name: str, **options: Any) -> Any:
        """A browser of one's own: a fresh profile (user-data-dir), like another person's phone or PC."""
        profile = self.tmp / f"profile-{name}-{len(self.contexts)}"
        context = await self.playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=chromium_path(),
            headless=True,
            args=LAUNCH_ARGS,
            locale="zh-CN",
            timezone_id="Asia/Shanghai",
            **options,
        )
        context.set_default_timeout(15_000)
        self.contexts.append(context)
        return context

    async def page(self, name: str, **options: Any) -> Any:
        context = await self.person(name, **options)
        return context.pages[0] if context.pages else await context.new_page()


async def screenshot(page: Any, name: str, *, full_page: bool = True) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    target = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(target), full_page=full_page)
    return target


@pytest.fixture
async def system(
    config: Config, redis: Redis, emulator: Any, aiohttp_server: Any, tmp_path: Path
) -> AsyncIterator[System]:
    from playwright.async_api import async_playwright

    forget_directory()
    config.delivery.quiet_start = config.delivery.quiet_end = "00:00"  # the tests run at any hour
    await apply_schools(redis, parse_schools(demo_file("schools.csv")))
    api = WeChatAPI(config.wechat, redis)
    emulator_at = urlsplit(emulator.url)
    config.emulator.host, config.emulator.port = emulator_at.hostname or "127.0.0.1", emulator_at.port or 0
    app = with_demo(create_app(config, redis, api=api))  # as `bot demo` runs it: the demo page too
    server = await aiohttp_server(app)
    config.server.public_url = str(server.make_url("")).rstrip("/")
    console = app[CONTEXT_KEY].services["console"]
    console.accounts.cost = ScryptCost(2**10, 8, 1)
    await AccountStore(redis, cost=console.accounts.cost).create(
        ADMIN, PASSWORD, "school_admin", district="demo-district", school=DEMO_SCHOOL
    )
    worker = build_worker(config, redis, api, name="browser-test-worker")
    task = asyncio.create_task(worker.run())
    async with async_playwright() as pw:
        system = System(config.server.public_url, config, redis, emulator, tmp_path, pw)
        try:
            yield system
        finally:
            for context in system.contexts:
                with contextlib.suppress(Exception):
                    await context.close()
    worker.stop()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(task, 5)
    await api.close()
    forget_directory()
