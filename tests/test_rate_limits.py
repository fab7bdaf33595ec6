"""Rate limits: per client address on pages, console and API; per openid in the chat."""

from __future__ import annotations

from typing import Any

from bot.app import create_app
from bot.config import Config
from bot.store.redis import Redis
from bot.web.ratelimit import PerUserLimit
from bot.wechat.emulator import follower
from bot.wechat.emulator.follower import build_callback, read_reply


async def test_one_address_over_its_rate_gets_429_and_others_do_not(
    config: Config, redis: Redis, aiohttp_client: Any
) -> None:
    config.server.rate_per_ip = 5
    config.server.trust_forwarded = True  # lets the test speak as two addresses through one socket
    client = await aiohttp_client(create_app(config, redis))
    statuses = [
        (await client.get("/n/abc", headers={"X-Forwarded-For": "10.0.0.1"}, allow_redirects=False)).status
        for _ in range(7)
    ]
    assert statuses[:5] == [statuses[0]] * 5 and statuses[0] != 429 and statuses[5:] == [429, 429]
    other = await client.get("/n/abc", headers={"X-Forwarded-For": "10.0.0.2"}, allow_redirects=False)
    assert other.status != 429
    assert (await client.get("/healthz")).status == 200  # operations endpoints are not limited


async def test_a_forged_forwarded_header_is_ignored_unless_we_trust_our_proxy(
    config: Config, redis: Redis, aiohttp_client: Any
) -> None:
    config.server.rate_per_ip = 2
    client = await aiohttp_client(create_app(config, redis))
    statuses = [
        (await client.get("/n/abc", headers={"X-Forwarded-For": f"10.0.0.{i}"}, allow_redirects=False)).status
        for i in range(4)
    ]
    assert statuses[-1] == 429  # every request counted for the real address


async def test_a_parent_sending_too_fast_is_asked_to_slow_down(
    config: Config, redis: Redis, aiohttp_client: Any
) -> None:
    config.wechat.rate_per_openid = 3
    client = await aiohttp_client(create_app(config, redis))
    replies = []
    for _ in range(5):
        params, body = build_callback(
            config.wechat, follower.text_message("gh_x", "oFast000000000000000000000001", "帮助")
        )
        resp = await client.post("/wechat", params=params, data=body)
        assert resp.status == 200
        replies.append(follower.parse_reply(read_reply(config.wechat, await resp.read())) or {})
    assert all("平安铃" in str(r.get("content")) for r in replies[:3])
    assert all("稍等" in str(r.get("content")) for r in replies[3:])
    # WeChat's own events for this user are never slowed down
    params, body = build_callback(
        config.wechat, follower.template_finish_event("gh_x", "oFast000000000000000000000001", 1, "success")
    )
    assert (await client.post("/wechat", params=params, data=body)).status == 200


def test_the_per_user_count_starts_again_each_minute() -> None:
    limit = PerUserLimit(2)
    assert [limit.allow("o1", now=60.0) for _ in range(3)] == [True, True, False]
    assert limit.allow("o2", now=61.0) and limit.allow("o1", now=120.0)
