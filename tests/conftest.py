"""Shared fixtures: a real Redis (``REDIS_URL`` or an embedded server), a config, the WeChat emulator.

Never a fake Redis, never mocks of our own code: tests talk to Redis and to the emulator over HTTP.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bot.config import Config
from bot.store.autopipeline import close_bulk
from bot.store.embedded import EmbeddedRedis
from bot.store.redis import Redis, connect, is_cluster

TEST_APP_ID = "wx5afe6e11000000001"
TEST_APP_SECRET = "test-secret-0123456789abcdef"
TEST_TOKEN = "safebell-test-token"


def new_aes_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()[:43]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``$REDIS_URL`` if set (it is flushed between tests: give a disposable database), else our own server."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    server = EmbeddedRedis(Path(tmp_path_factory.mktemp("redis")), appendonly=False)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = connect(redis_url)
    if is_cluster(client):
        await client.flushdb(target_nodes="primaries")  # type: ignore[call-arg]
    else:
        await client.flushdb()
    try:
        yield client
    finally:
        await close_bulk(client)
        await client.aclose()


@pytest.fixture
def config(redis_url: str, tmp_path: Path) -> Config:
    """A safe-mode config for the test account; the emulator fixture points the API base at itself."""
    cfg = Config(source="tests")
    cfg.wechat.app_id = TEST_APP_ID
    cfg.wechat.app_secret = TEST_APP_SECRET
    cfg.wechat.token = TEST_TOKEN
    cfg.wechat.aes_key = new_aes_key()
    cfg.wechat.encrypt_mode = "safe"
    cfg.redis.url = redis_url
    cfg.redis.data_dir = str(tmp_path / "redis")
    return cfg


# -- the WeChat emulator ------------------------------------------------------------------------
from dataclasses import dataclass  # noqa: E402 - appended section, kept next to its fixture
from typing import Any  # noqa: E402

from aiohttp import web  # noqa: E402

from bot.wechat.emulator import EmulatorClient, create_emulator_app  # noqa: E402


@dataclass
class EmulatorHandle:
    """A running emulator: its base URL, a control-API client, and the app (for its state)."""

    url: str
    client: EmulatorClient
    app: web.Application


@pytest.fixture
async def emulator(config: Config, aiohttp_server: Any) -> AsyncIterator[EmulatorHandle]:
    """The WeChat emulator on a free port; ``config.wechat.api_base``/``oauth_base`` point at it."""
    server = await aiohttp_server(create_emulator_app(config))
    url = str(server.make_url("")).rstrip("/")
    config.wechat.api_base = url
    config.wechat.oauth_base = url
    client = EmulatorClient(url)
    try:
        yield EmulatorHandle(url=url, client=client, app=server.app)
    finally:
        await client.close()


# -- figures: fault and property tests state what they measured ------------------------------------
from collections.abc import Callable  # noqa: E402

_FIGURES = pytest.StashKey[list[tuple[str, str]]]()


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """``figures("cards sent 2000, missing 0, doubled 0")``: printed in the terminal summary of every
    run (``-q``, with or without ``-s``), and in the test's captured output."""
    lines = request.config.stash.setdefault(_FIGURES, [])

    def report(text: str) -> None:
        print(text)
        lines.append((request.node.nodeid, text))

    return report


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    lines = config.stash.get(_FIGURES, [])
    if lines:
        terminalreporter.write_sep("-", "figures")
        for nodeid, text in lines:
            terminalreporter.write_line(f"{nodeid.split('::')[-1]}: {text}")
