"""Rate limits: per client address on pages, console and API; per openid in the chat.

Both limits count in fixed one-minute windows of the wall clock, so a burst sent by a test may
straddle a minute boundary and be counted in two windows. The tests send 2 × limit + 1 requests
(at least one window then holds more than the limit, so something is refused whatever the time)
and check the answers against what the limit gives for the burst cut at some point; when the
minute did not change during the burst, the cut must be at the end: exactly ``limit`` pass.
"""

from __future__ import annotations

import time
from typing import Any

from bot.app import create_app
from bot.config import Config
from bot.store.redis import Redis
from bot.web.ratelimit import PerUserLimit
from bot.wechat.emulator import follower
from bot.wechat.emulator.follower import build_callback, read_reply


def minute() -> int:
    """The window both limiters count in now (``int(time.time()) // 60``; same process, same clock)."""
    return int(time.time()) // 60


def limited_as_a_fixed_window(refused: list[bool], limit: int, *, one_window: bool) -> bool:
    """Whether ``refused`` (one flag per request, in order) is what a per-minute counter of ``limit``
    gives: in each window the first ``limit`` pass and the rest are refused. The burst may be cut by
    one minute boundary, anywhere, unless it fell in ``one_window``."""
    n = len(refused)

    def window(size: int) -> list[bool]:
        return [i >= limit for i in range(size)]

    cuts = [n] if one_window else range(n + 1)
    return any(refused == window(cut) + window(n - cut) for cut in cuts)


async def test_one_address_over_its_rate_gets_429_and_others_do_not(
    config: Config, redis: Redis, aiohttp_client: Any
) -> None:
    config.server.rate_per_ip = 5
    config.server.trust_forwarded = True  # lets the test speak as two addresses through one socket
    client = await aiohttp_client(create_app(config, redis))
    start = minute()
    statuses = [
        (await client.get("/n/abc", headers={"X-Forwarded-For": "10.0.0.1"}, allow_redirects=False)).status
        for _ in range(2 * 5 + 1)
    ]
    refused = [status == 429 for status in statuses]
    assert limited_as_a_fixed_window(refused, 5, one_window=minute() == start), statuses
    assert statuses[0] != 429 and len({s for s in statuses if s != 429}) == 1  # the page's own answer otherwise
    other = await client.get("/n/abc", headers={"X-Forwarded-For": "10.0.0.2"}, allow_redirects=False)
    assert other.status != 429
    assert (await client.get("/healthz")).status == 200  # operations endpoints are not limited


async def test_a_forged_forwarded_header_is_ignored_unless_we_trust_our_proxy(
    config: Config, redis: Redis, aiohttp_client: Any
) -> None:
    config.server.rate_per_ip = 2
    client = await aiohttp_client(create_app(config, redis))
    start = minute()
    statuses = [
        (await client.get("/n/abc", headers={"X-Forwarded-For": f"10.0.0.{i}"}, allow_redirects=False)).status
        for i in range(2 * 2 + 1)
    ]
    # every request counted for the real address: five "addresses" share one count of 2 a minute
    refused = [status == 429 for status in statuses]
    assert limited_as_a_fixed_window(refused, 2, one_window=minute() == start), statuses


async def test_a_parent_sending_too_fast_is_asked_to_slow_down(
    config: Config, redis: Redis, aiohttp_client: Any
) -> None:
    config.wechat.rate_per_openid = 3
    client = await aiohttp_client(create_app(config, redis))
    replies = []
    start = minute()
    for _ in range(2 * 3 + 1):
        params, body = build_callback(
            config.wechat, follower.text_message("gh_x", "oFast000000000000000000000001", "帮助")
        )
        resp = await client.post("/wechat", params=params, data=body)
        assert resp.status == 200
        replies.append(follower.parse_reply(read_reply(config.wechat, await resp.read())) or {})
    contents = [str(r.get("content")) for r in replies]
    assert all(("平安铃" in c) != ("稍等" in c) for c in contents), contents  # the help text, or slow down
    refused = ["稍等" in c for c in contents]
    assert limited_as_a_fixed_window(refused, 3, one_window=minute() == start), contents
    # WeChat's own events for this user are never slowed down
    params, body = build_callback(
        config.wechat, follower.template_finish_event("gh_x", "oFast000000000000000000000001", 1, "success")
    )
    assert (await client.post("/wechat", params=params, data=body)).status == 200


def test_the_per_user_count_starts_again_each_minute() -> None:
    limit = PerUserLimit(2)
    assert [limit.allow("o1", now=60.0) for _ in range(3)] == [True, True, False]
    assert limit.allow("o2", now=61.0) and limit.allow("o1", now=120.0)
