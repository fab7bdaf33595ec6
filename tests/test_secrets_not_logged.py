"""Secrets come only from config or the environment and never reach a log line."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from bot.app import create_app
from bot.config import Config
from bot.store.redis import Redis
from bot.wechat.client import WeChatAPI


async def test_app_secret_token_aes_key_and_access_token_never_appear_in_logs(
    config: Config, redis: Redis, emulator: Any, aiohttp_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = await aiohttp_server(create_app(config, redis))
    await emulator.client.configure(callback_url=str(server.make_url("/wechat")))
    [parent] = await emulator.client.create_followers(1)
    await emulator.client.send_text(parent, "帮助")
    async with WeChatAPI(config.wechat, redis) as api:
        token = await api.get_token()
        await emulator.client.invalidate_token()
        await api.user_info(parent)  # 40001, a refresh, a retry: the paths that would log a token
    # aiohttp's access log here is the test servers' (the emulator's URLs carry the token, as WeChat's
    # do); `bot serve` runs without an access log, so only our own loggers count.
    text = "\n".join(r.getMessage() for r in caplog.records if r.name != "aiohttp.access")
    assert token and token not in text
    for secret in (config.wechat.app_secret, config.wechat.aes_key, config.wechat.token):
        assert secret not in text
