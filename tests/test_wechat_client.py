"""The async WeChat client: one shared token across clients and processes, retries, typed errors.

Against the real emulator over HTTP and a real Redis; nothing of ours is mocked.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from prometheus_client import REGISTRY

from bot.config import Config
from bot.store import keys
from bot.store.redis import Redis, connect
from bot.wechat.client import WeChatAPI
from bot.wechat.errors import (
    BadTemplateArgumentError,
    BusyError,
    CSWindowClosedError,
    DailyQuotaExceededError,
    InvalidOpenIDError,
    TokenInvalidError,
    UserUnfollowedError,
    WeChatAPIError,
    WeChatTransportError,
    error_for,
)

if TYPE_CHECKING:
    from conftest import EmulatorHandle

TEMPLATE = "tmpl-safety-notice"
SEND = "/cgi-bin/message/template/send"
NO_BOT = "http://127.0.0.1:9/wechat"  # nothing listens there: callbacks are dropped
REPO_ROOT = Path(__file__).resolve().parent.parent
BACKOFF_LOG = re.compile(r"busy \(-1\), retrying in ([0-9.]+) s")


@pytest.fixture
async def api(config: Config, redis: Redis, emulator: EmulatorHandle) -> AsyncIterator[WeChatAPI]:
    config.wechat.api_timeout = 0.5
    config.wechat.api_backoff = 0.01
    await emulator.client.configure(callback_url=NO_BOT, push_events=False)
    async with WeChatAPI(config.wechat, redis) as client:
        yield client


def refreshes(forced: bool) -> float:
    value = REGISTRY.get_sample_value("safebell_wechat_token_refreshes_total", {"forced": str(forced).lower()})
    return value or 0.0


def api_errors(code: str) -> float:
    return REGISTRY.get_sample_value("safebell_wechat_api_errors_total", {"code": code}) or 0.0


def fetches(stats: dict[str, Any]) -> int:
    return sum(stats["token_fetches"].values())


# -- one token for everybody ------------------------------------------------------------------------
async def test_two_clients_with_separate_sessions_fetch_one_token_and_refresh_it_once(
    config: Config, redis_url: str, redis: Redis, emulator: EmulatorHandle
) -> None:
    await emulator.client.configure(latency_ms=10)  # a slow token fetch widens the race
    openids = await emulator.client.create_followers(10)
    before = refreshes(False)
    redis_a, redis_b = connect(redis_url), connect(redis_url)
    async with (
        aiohttp.ClientSession() as session_a,
        aiohttp.ClientSession() as session_b,
        WeChatAPI(config.wechat, redis_a, session_a) as a,
        WeChatAPI(config.wechat, redis_b, session_b) as b,
    ):
        calls = [(a if i % 2 else b).user_info(openids[i % 10]) for i in range(100)]
        results = await asyncio.gather(*calls)
        assert all(r["subscribe"] == 1 for r in results)
        assert fetches(await emulator.client.stats()) == 1

        await emulator.client.invalidate_token()
        calls = [(a if i % 2 else b).user_info(openids[i % 10]) for i in range(100)]
        results = await asyncio.gather(*calls)
        assert all(r["subscribe"] == 1 for r in results)
    await redis_a.aclose()
    await redis_b.aclose()
    stats = await emulator.client.stats()
    assert stats["token_fetches"] == {"classic": 0, "stable": 2, "forced": 0}
    assert refreshes(False) - before == 2
    assert stats["errors"].get("40001", 0) <= 100


CHILD = r"""
import asyncio, json, sys
from bot.config import WeChatConfig
from bot.store.redis import connect
from bot.wechat.client import WeChatAPI

async def main() -> None:
    cfg = WeChatConfig(**json.loads(sys.argv[1]))
    redis = connect(sys.argv[2])
    openids = json.loads(sys.argv[3])
    loop = asyncio.get_running_loop()
    async with WeChatAPI(cfg, redis) as api:
        print("ready", flush=True)
        for _ in range(2):
            await loop.run_in_executor(None, sys.stdin.readline)  # "go"
            results = await asyncio.gather(*(api.user_info(o) for o in openids), return_exceptions=True)
            bad = [repr(r) for r in results if not isinstance(r, dict)]
            print(json.dumps({"ok": len(results) - len(bad), "bad": bad}), flush=True)
    await redis.aclose()

asyncio.run(main())
"""


async def test_a_separate_os_process_shares_the_token_and_the_refresh(
    config: Config, redis_url: str, api: WeChatAPI, emulator: EmulatorHandle
) -> None:
    await emulator.client.configure(latency_ms=10)
    openids = await emulator.client.create_followers(10)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        json.dumps(dataclasses.asdict(config.wechat)),
        redis_url,
        json.dumps(openids * 5),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=str(REPO_ROOT),
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        assert (await asyncio.wait_for(child.stdout.readline(), 20)).strip() == b"ready"
        for round_ in range(2):
            if round_ == 1:
                await emulator.client.invalidate_token()
            child.stdin.write(b"go\n")
            await child.stdin.drain()
            ours = await asyncio.gather(*(api.user_info(o) for o in openids * 5))
            theirs = json.loads(await asyncio.wait_for(child.stdout.readline(), 20))
            assert len(ours) == 50 and theirs == {"ok": 50, "bad": []}
            assert fetches(await emulator.client.stats()) == round_ + 1
    finally:
        if child.returncode is None:
            child.stdin.close()
            try:
                await asyncio.wait_for(child.wait(), 10)
            except TimeoutError:
                child.kill()
                await child.wait()


async def test_the_token_is_cached_in_redis_until_the_refresh_margin(
    config: Config, redis: Redis, api: WeChatAPI
) -> None:
    token = await api.get_token()
    assert await redis.get(keys.access_token(config.wechat.app_id)) == token
    ttl = await redis.ttl(keys.access_token(config.wechat.app_id))
    assert 7200 - config.wechat.token_refresh_margin - 5 <= ttl <= 7200 - config.wechat.token_refresh_margin
    assert await api.get_token() == token


async def test_a_token_wechat_keeps_handing_back_is_replaced_by_one_force_refresh(
    config: Config, redis: Redis, api: WeChatAPI, emulator: EmulatorHandle
) -> None:
    openids = await emulator.client.create_followers(5)
    await api.user_info(openids[0])
    await emulator.client.invalidate_token(sticky=True)
    results = await asyncio.gather(*(api.user_info(o) for o in openids * 10))
    assert len(results) == 50
    stats = await emulator.client.stats()
    # the first fetch, the non-forced refresh that got the same token back, then one forced refresh
    assert stats["token_fetches"] == {"classic": 0, "stable": 2, "forced": 1}
    assert await redis.exists(keys.access_token_forced(config.wechat.app_id))
    # A second dead token within force_refresh_interval cannot be forced away: a typed error, fast.
    await emulator.client.invalidate_token(sticky=True)
    with pytest.raises(TokenInvalidError):
        await api.user_info(openids[0])
    calls_before = (await emulator.client.stats())["calls"].get("/cgi-bin/user/info", 0)
    for outcome in await asyncio.gather(*(api.user_info(o) for o in openids), return_exceptions=True):
        assert isinstance(outcome, TokenInvalidError)
    stats = await emulator.client.stats()
    # fast: each call asked WeChat once and gave up, no retries, no waiting for another refresh
    assert stats["calls"]["/cgi-bin/user/info"] - calls_before == len(openids)
    assert stats["token_fetches"]["forced"] == 1


# -- retries and typed errors ---------------------------------------------------------------------------
async def test_system_busy_is_retried_with_backoff_then_succeeds(
    config: Config, api: WeChatAPI, emulator: EmulatorHandle, caplog: pytest.LogCaptureFixture
) -> None:
    config.wechat.api_backoff = 0.04  # the backoff the client is configured with; it logs each wait it takes
    openid = (await emulator.client.create_followers(1))[0]
    await api.get_token()
    await emulator.client.inject_fault(SEND, errcode=-1, count=2)
    before = api_errors("-1")
    calls_before = (await emulator.client.stats())["calls"].get(SEND, 0)
    with caplog.at_level(logging.INFO, logger="bot.wechat.client"):
        msgid = await api.send_template(openid, TEMPLATE, {"thing1": "防溺水"}, client_msg_id="n1:g1")
    assert msgid > 0
    assert api_errors("-1") - before == 2 and (await emulator.client.stats())["calls"][SEND] - calls_before == 3
    # two waits, exponential with jitter: api_backoff × 2^attempt × 0.5–1.5 (logged to the millisecond)
    waits = [float(m.group(1)) for r in caplog.records if (m := BACKOFF_LOG.search(r.getMessage()))]
    assert len(waits) == 2, waits
    for attempt, wait in enumerate(waits):
        step = config.wechat.api_backoff * 2**attempt
        assert 0.5 * step - 0.0005 <= wait <= 1.5 * step + 0.0005, (attempt, wait)
    assert await emulator.client.counts() == {openid: 1}


async def test_system_busy_beyond_the_retries_raises_busy_error(
    config: Config, api: WeChatAPI, emulator: EmulatorHandle
) -> None:
    openid = (await emulator.client.create_followers(1))[0]
    await emulator.client.inject_fault(SEND, errcode=-1, count=config.wechat.api_retries + 1)
    with pytest.raises(BusyError) as caught:
        await api.send_template(openid, TEMPLATE, {"thing1": "防溺水"})
    assert caught.value.errcode == -1 and caught.value.retryable


@pytest.mark.parametrize(
    ("case", "error", "errcode"),
    [
        ("unfollowed", UserUnfollowedError, 43004),
        ("quota", DailyQuotaExceededError, 45009),
        ("too-long", BadTemplateArgumentError, 47003),
        ("cs-window", CSWindowClosedError, 45015),
        ("stranger", InvalidOpenIDError, 40003),
    ],
)
async def test_wechat_refusals_raise_typed_errors(
    api: WeChatAPI, emulator: EmulatorHandle, case: str, error: type[WeChatAPIError], errcode: int
) -> None:
    openid = (await emulator.client.create_followers(1))[0]
    data = {"thing1": "防溺水"}
    if case == "unfollowed":
        await emulator.client.configure(unfollowed=[openid])
    elif case == "quota":
        await emulator.client.configure(daily_quota=0)
    elif case == "too-long":
        data = {"thing1": "这是一条超过二十个字的通知内容，放不进模板消息的字段"}
    with pytest.raises(error) as caught:
        if case == "cs-window":
            await api.send_text(openid, "您好")
        elif case == "stranger":
            await api.user_info("o" + "x" * 27)
        else:
            await api.send_template(openid, TEMPLATE, data)
    assert caught.value.errcode == errcode
    assert not caught.value.retryable
    assert type(error_for(errcode, "")) is error


async def test_http_502_and_timeouts_are_retried(api: WeChatAPI, emulator: EmulatorHandle) -> None:
    openid = (await emulator.client.create_followers(1))[0]
    await api.get_token()
    await emulator.client.inject_fault(SEND, http_status=502, count=2)
    await emulator.client.inject_fault(SEND, timeout=True, count=1, delay=5)
    before = api_errors("transport")
    assert await api.send_template(openid, TEMPLATE, {"thing1": "防溺水"}) > 0
    assert api_errors("transport") - before == 3


async def test_transport_errors_beyond_the_retries_raise_transport_error(
    config: Config, api: WeChatAPI, emulator: EmulatorHandle
) -> None:
    openid = (await emulator.client.create_followers(1))[0]
    await emulator.client.inject_fault(SEND, http_status=502, count=config.wechat.api_retries + 1)
    with pytest.raises(WeChatTransportError) as caught:
        await api.send_template(openid, TEMPLATE, {"thing1": "防溺水"})
    assert caught.value.retryable and caught.value.status == 502


async def test_a_lost_answer_retried_with_the_same_client_msg_id_delivers_one_card(
    api: WeChatAPI, emulator: EmulatorHandle
) -> None:
    openid = (await emulator.client.create_followers(1))[0]
    await api.get_token()
    # WeChat sends the card, then the answer is lost: the client retries with the same id.
    await emulator.client.inject_fault(SEND, timeout=True, deliver=True, delay=5)
    msgid = await api.send_template(openid, TEMPLATE, {"thing1": "防溺水"}, client_msg_id="notice7:g42")
    assert await emulator.client.counts() == {openid: 1}
    inbox = await emulator.client.inbox(openid)
    assert inbox["template"][0]["msgid"] == msgid
    assert (await emulator.client.stats())["template_deduped"] == 1


async def test_send_template_sends_values_url_and_client_msg_id(api: WeChatAPI, emulator: EmulatorHandle) -> None:
    openid = (await emulator.client.create_followers(1))[0]
    data = {"thing1": "暑期防溺水", "time2": "7月10日"}
    msgid = await api.send_template(openid, TEMPLATE, data, url="https://school.example/n/7", client_msg_id="n7:g1")
    (card,) = (await emulator.client.inbox(openid))["template"]
    assert card["data"] == data and card["url"] == "https://school.example/n/7"
    assert card["client_msg_id"] == "n7:g1" and card["msgid"] == msgid and card["template_id"] == TEMPLATE


async def test_send_text_inside_the_window_reaches_the_follower(api: WeChatAPI, emulator: EmulatorHandle) -> None:
    openid = (await emulator.client.create_followers(1))[0]
    await emulator.client.send_text(openid, "在吗")  # opens the window (the bot is not even up)
    await api.send_text(openid, "您好，请点击菜单绑定孩子的班级。")
    (message,) = (await emulator.client.inbox(openid))["custom"]
    assert message == {"msgtype": "text", "content": "您好，请点击菜单绑定孩子的班级。", "time": message["time"]}


# -- menu, QR codes, OAuth ----------------------------------------------------------------------------------
async def test_menu_and_qrcodes_round_trip(api: WeChatAPI, emulator: EmulatorHandle) -> None:
    menu = {"button": [{"type": "click", "name": "安全课", "key": "LESSON"}]}
    await api.create_menu(menu)
    assert (await api.get_menu())["menu"] == menu
    permanent = await api.create_qrcode("class:3-2")
    temporary = await api.create_qrcode("teacher:9", expire_seconds=600)
    assert permanent.expire_seconds is None and temporary.expire_seconds == 600
    image_url = api.qrcode_image_url(permanent.ticket)
    assert image_url.startswith(emulator.url + "/cgi-bin/showqrcode?ticket=")
    async with aiohttp.ClientSession() as s, s.get(image_url) as resp:
        assert resp.status == 200 and resp.content_type == "image/svg+xml"
        assert "class:3-2" in await resp.text()
    scenes = {q["scene"]: q["action_name"] for q in await emulator.client.qrcodes()}
    assert scenes == {"class:3-2": "QR_LIMIT_STR_SCENE", "teacher:9": "QR_STR_SCENE"}


async def test_oauth_authorize_code_exchange_gives_the_openid_once(
    config: Config, api: WeChatAPI, emulator: EmulatorHandle
) -> None:
    openid = (await emulator.client.create_followers(1))[0]
    url = api.oauth_authorize_url("https://school.example/h5/n/7", "csrf-42")
    assert url.startswith(config.wechat.oauth_base + "/connect/oauth2/authorize?appid=")
    assert url.endswith("&scope=snsapi_base&state=csrf-42#wechat_redirect")
    browser_url = url.split("#", 1)[0] + f"&emulator_openid={openid}"  # the follower browsing
    async with aiohttp.ClientSession() as s, s.get(browser_url, allow_redirects=False) as resp:
        assert resp.status == 302
        location = resp.headers["Location"]
    back = aiohttp.client.URL(location)
    assert str(back.with_query(None)) == "https://school.example/h5/n/7"
    assert back.query["state"] == "csrf-42"
    assert await api.oauth_exchange(back.query["code"]) == openid
    with pytest.raises(WeChatAPIError) as caught:
        await api.oauth_exchange(back.query["code"])
    assert caught.value.errcode == 40163
