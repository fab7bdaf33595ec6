"""The callback at /wechat: verification, the three encryption modes, every message type, retries, refusals."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from wechatpy.crypto import WeChatCrypto

from bot.app import CONTEXT_KEY, create_app
from bot.chat.router import Command, Router
from bot.chat.state import ChatState
from bot.config import Config
from bot.delivery.outbox import pending_count
from bot.store import keys
from bot.store.redis import Redis, connect
from bot.wechat.emulator import follower
from bot.wechat.emulator.follower import build_callback, build_verification, read_reply

ACCOUNT = "gh_safebell_test"
OPENID = "oTestParent000000000000000001"

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


async def start_bot(
    aiohttp_client: ClientFactory, config: Config, redis: Redis, *routers: Router
) -> TestClient[Any, Any]:
    app = create_app(config, redis)
    for r in routers:
        app[CONTEXT_KEY].router.include(r)
    return await aiohttp_client(app)


async def post(client: TestClient[Any, Any], config: Config, xml: str, **kw: Any) -> tuple[int, str]:
    params, body = build_callback(config.wechat, xml, **kw)
    resp = await client.post("/wechat", params=params, data=body)
    return resp.status, await resp.text()


def reply_text(config: Config, body: str) -> str | None:
    plain = read_reply(config.wechat, body.encode())
    parsed = follower.parse_reply(plain)
    return None if parsed is None else str(parsed.get("content"))


# -- URL verification ---------------------------------------------------------------------------
async def test_url_verification_echoes_echostr_only_when_signed(
    aiohttp_client: ClientFactory, config: Config, redis: Redis
) -> None:
    client = await start_bot(aiohttp_client, config, redis)
    params = build_verification(config.wechat, "hello-echo")
    resp = await client.get("/wechat", params=params)
    assert resp.status == 200 and await resp.text() == "hello-echo"

    bad = dict(params, signature="0" * 40)
    assert (await client.get("/wechat", params=bad)).status == 403
    stale = build_verification(config.wechat, "x", timestamp=int(time.time()) - 3600)
    assert (await client.get("/wechat", params=stale)).status == 403


# -- modes ---------------------------------------------------------------------------------------
async def test_safe_mode_text_reply_decrypts_with_wechatpy(
    aiohttp_client: ClientFactory, config: Config, redis: Redis
) -> None:
    client = await start_bot(aiohttp_client, config, redis)
    params, body = build_callback(config.wechat, follower.text_message(ACCOUNT, OPENID, "帮助"))
    resp = await client.post("/wechat", params=params, data=body)
    assert resp.status == 200
    raw = await resp.text()
    # decrypt exactly as WeChat (and wechatpy users) would
    import xmltodict

    doc = xmltodict.parse(raw)["xml"]
    crypto = WeChatCrypto(config.wechat.token, config.wechat.aes_key, config.wechat.app_id)
    plain = crypto.decrypt_message(raw, doc["MsgSignature"], doc["TimeStamp"], doc["Nonce"])
    reply = xmltodict.parse(plain)["xml"]
    assert reply["ToUserName"] == OPENID and reply["FromUserName"] == ACCOUNT
    assert "平安铃" in reply["Content"]


@pytest.mark.parametrize("mode", ["plain", "compatible"])
async def test_plain_and_compatible_mode_answer_text(
    aiohttp_client: ClientFactory, config: Config, redis: Redis, mode: str
) -> None:
    config.wechat.encrypt_mode = mode  # type: ignore[assignment]
    client = await start_bot(aiohttp_client, config, redis)
    status, body = await post(client, config, follower.text_message(ACCOUNT, OPENID, "帮助"))
    assert status == 200
    assert "平安铃" in (reply_text(config, body) or "")


async def test_compatible_mode_accepts_an_unencrypted_message_and_answers_in_plain(
    aiohttp_client: ClientFactory, config: Config, redis: Redis
) -> None:
    config.wechat.encrypt_mode = "compatible"
    client = await start_bot(aiohttp_client, config, redis)
    status, body = await post(client, config, follower.text_message(ACCOUNT, OPENID, "帮助"), mode="plain")
    assert status == 200 and "<Encrypt>" not in body and "平安铃" in body


async def test_safe_mode_refuses_an_unencrypted_message(
    aiohttp_client: ClientFactory, config: Config, redis: Redis
) -> None:
    client = await start_bot(aiohttp_client, config, redis)
    status, _ = await post(client, config, follower.text_message(ACCOUNT, OPENID, "帮助"), mode="plain")
    assert status == 400


# -- every message and event type ---------------------------------------------------------------
def _all_kinds() -> list[tuple[str, str]]:
    o, a = OPENID, ACCOUNT
    ev = follower.event_message
    return [
        ("text", follower.text_message(a, o, "你好")),
        ("image", follower.image_message(a, o, "http://x/y.jpg", "media1")),
        ("voice", follower.voice_message(a, o, "media2")),
        ("video", follower.message(a, o, "video", {"MediaId": "m", "ThumbMediaId": "t"})),
        ("shortvideo", follower.message(a, o, "shortvideo", {"MediaId": "m", "ThumbMediaId": "t"})),
        ("location", follower.location_message(a, o, 30.5, 114.3, "武汉")),
        ("link", follower.link_message(a, o, "标题", "描述", "http://example.com")),
        ("unknown message type", follower.message(a, o, "miniprogrampage", {"Title": "x"})),
        ("subscribe", ev(a, o, "subscribe")),
        ("subscribe by QR scene", ev(a, o, "subscribe", "qrscene_class-1", ticket="T")),
        ("subscribe by scan-product", ev(a, o, "subscribe", "scanbarcode|EAN_13|6901234567892")),
        ("unsubscribe", ev(a, o, "unsubscribe")),
        ("SCAN", ev(a, o, "SCAN", "class-1", ticket="T")),
        ("CLICK help", ev(a, o, "CLICK", "HELP")),
        ("CLICK unknown key", ev(a, o, "CLICK", "NO_SUCH_KEY")),
        ("VIEW", ev(a, o, "VIEW", "http://example.com/menu")),
        ("LOCATION", ev(a, o, "LOCATION", extra={"Latitude": 30.5, "Longitude": 114.3, "Precision": 20})),
        ("TEMPLATESENDJOBFINISH", follower.template_finish_event(a, o, 12345, "failed:user block")),
        ("MASSSENDJOBFINISH", ev(a, o, "MASSSENDJOBFINISH", extra={"MsgID": 1, "Status": "send success"})),
        ("card_pass_check", ev(a, o, "card_pass_check", extra={"CardId": "c1"})),
        ("user_get_card", ev(a, o, "user_get_card", extra={"CardId": "c1", "UserCardCode": "123"})),
        ("user_pay_from_pay_cell", ev(a, o, "user_pay_from_pay_cell", extra={"CardId": "c1"})),
        ("scancode_push", ev(a, o, "scancode_push", "k", extra={"ScanCodeInfo": ""})),
        ("pic_sysphoto", ev(a, o, "pic_sysphoto", "k")),
        ("kf_create_session", ev(a, o, "kf_create_session", extra={"KfAccount": "x"})),
        ("unknown event", ev(a, o, "some_future_event", "k")),
    ]


@pytest.mark.parametrize(("kind", "xml"), _all_kinds(), ids=[k for k, _ in _all_kinds()])
async def test_every_message_and_event_type_gets_200_and_a_valid_reply_or_success(
    aiohttp_client: ClientFactory, config: Config, redis: Redis, kind: str, xml: str
) -> None:
    client = await start_bot(aiohttp_client, config, redis)
    status, body = await post(client, config, xml)
    assert status == 200, body
    plain = read_reply(config.wechat, body.encode())  # raises if the reply is not valid for WeChat
    if plain not in ("", "success"):
        parsed = follower.parse_reply(plain)
        assert parsed is not None and parsed["type"] == "text" and parsed["to"] == OPENID


async def test_welcome_on_subscribe_and_fallback_for_unknown_text(
    aiohttp_client: ClientFactory, config: Config, redis: Redis
) -> None:
    client = await start_bot(aiohttp_client, config, redis)
    _, body = await post(client, config, follower.event_message(ACCOUNT, OPENID, "subscribe"))
    assert "欢迎" in (reply_text(config, body) or "")
    _, body = await post(client, config, follower.text_message(ACCOUNT, OPENID, "随便说点什么"))
    assert "帮助" in (reply_text(config, body) or "")
    _, body = await post(client, config, follower.text_message(ACCOUNT, OPENID, "ＨＥＬＰ "))
    assert "平安铃" in (reply_text(config, body) or "")


# -- retry dedupe --------------------------------------------------------------------------------
def counting_router(calls: list[str], delay: float = 0.0) -> Router:
    r = Router(name="test.counting")

    @r.handler(Command("计数"))
    async def count(openid: str) -> str:
        calls.append(openid)
        await asyncio.sleep(delay)
        return f"第{len(calls)}次"

    return r


async def test_same_msgid_three_times_at_once_and_later_runs_handler_once_with_identical_replies(
    aiohttp_client: ClientFactory, config: Config, redis: Redis
) -> None:
    calls: list[str] = []
    client = await start_bot(aiohttp_client, config, redis, counting_router(calls, delay=0.2))
    xml = follower.text_message(ACCOUNT, OPENID, "计数", msg_id=987654321)
    at_once = await asyncio.gather(*(post(client, config, xml) for _ in range(3)))
    later = await post(client, config, xml)
    replies = [reply_text(config, body) for _, body in [*at_once, later]]
    assert [s for s, _ in at_once] == [200, 200, 200] and later[0] == 200
    assert calls == [OPENID]
    assert replies == ["第1次"] * 4


async def test_events_are_deduplicated_by_sender_and_create_time(
    aiohttp_client: ClientFactory, config: Config, redis: Redis
) -> None:
    client = await start_bot(aiohttp_client, config, redis)
    xml = follower.event_message(ACCOUNT, OPENID, "subscribe", create_time=1_700_000_000)
    first = await post(client, config, xml)
    second = await post(client, config, xml)
    assert reply_text(config, first[1]) == reply_text(config, second[1])
    assert await redis.exists(keys.dedupe(OPENID, "e:1700000000:subscribe:")) == 1


async def test_two_messages_of_one_user_are_handled_one_after_the_other(
    aiohttp_client: ClientFactory, config: Config, redis: Redis
) -> None:
    r = Router(name="test.state")

    @r.handler(Command("加一"))
    async def add_one(state: ChatState) -> str:
        n = int(state.get("n", 0))
        await asyncio.sleep(0.05)  # a race without the per-user lock would lose an increment
        state.set("counting", n=n + 1)
        return str(n + 1)

    client = await start_bot(aiohttp_client, config, redis, r)
    results = await asyncio.gather(
        *(post(client, config, follower.text_message(ACCOUNT, OPENID, "加一")) for _ in range(4))
    )
    assert sorted(reply_text(config, b) for _, b in results) == ["1", "2", "3", "4"]
    assert '"n":4' in (await redis.get(keys.chat_state(OPENID)) or "")


async def test_a_retry_after_the_answer_leaves_no_lock_and_runs_nothing(
    aiohttp_client: ClientFactory, config: Config, redis: Redis
) -> None:
    calls: list[str] = []
    client = await start_bot(aiohttp_client, config, redis, counting_router(calls))
    xml = follower.text_message(ACCOUNT, OPENID, "计数", msg_id=555)
    first = await post(client, config, xml)
    retry = await post(client, config, xml)  # the lock is free: the retry takes it and gives it back
    assert reply_text(config, first[1]) == reply_text(config, retry[1]) == "第1次" and calls == [OPENID]
    assert await redis.exists(keys.chat_lock(OPENID)) == 0
    after = await post(client, config, follower.text_message(ACCOUNT, OPENID, "计数"))
    assert reply_text(config, after[1]) == "第2次"


async def test_a_handler_that_outlived_its_lock_does_not_free_the_next_holders(
    aiohttp_client: ClientFactory, config: Config, redis: Redis
) -> None:
    config.chat.lock_ttl = 0.3
    release = asyncio.Event()
    r = Router(name="test.outlived")

    @r.handler(Command("慢"))
    async def slow() -> str:
        await asyncio.sleep(0.5)  # past the lock's TTL: the next message takes the lock meanwhile
        return "慢好了"

    @r.handler(Command("等"))
    async def waits() -> str:
        await release.wait()
        return "等好了"

    client = await start_bot(aiohttp_client, config, redis, r)
    first = asyncio.ensure_future(post(client, config, follower.text_message(ACCOUNT, OPENID, "慢")))
    await asyncio.sleep(0.1)
    second = asyncio.ensure_future(post(client, config, follower.text_message(ACCOUNT, OPENID, "等")))
    assert reply_text(config, (await first)[1]) == "慢好了"
    holder = await redis.get(keys.chat_lock(OPENID))
    assert holder  # the second message's: the first's END checked whose lock it was before freeing it
    release.set()
    assert reply_text(config, (await second)[1]) == "等好了"
    assert await redis.exists(keys.chat_lock(OPENID)) == 0


# -- the reply budget ----------------------------------------------------------------------------
async def test_a_handler_over_budget_answers_success_then_sends_by_customer_service(
    aiohttp_client: ClientFactory, config: Config, redis: Redis
) -> None:
    config.wechat.reply_budget = 0.2
    calls: list[str] = []
    release = asyncio.Event()
    r = Router(name="test.slow")

    @r.handler(Command("计数"))
    async def slow(openid: str) -> str:
        calls.append(openid)
        await release.wait()  # runs past the budget for as long as the test wants
        return f"第{len(calls)}次"

    client = await start_bot(aiohttp_client, config, redis, r)
    xml = follower.text_message(ACCOUNT, OPENID, "计数", msg_id=42)
    # the answer comes while the handler is still running (the wait_for only stops a hang)
    status, body = await asyncio.wait_for(post(client, config, xml), 30)
    assert status == 200 and body == "success" and not release.is_set() and calls == [OPENID]
    # WeChat's retry gets "success" too, and runs nothing again
    assert (await asyncio.wait_for(post(client, config, xml), 30))[1] == "success"
    assert await redis.xlen(keys.outbox()) == 0
    release.set()
    for _ in range(200):
        if await pending_count(redis):
            break
        await asyncio.sleep(0.05)
    entries = await redis.xrange(keys.outbox())
    assert len(entries) == 1 and entries[0][1] == {"k": "cs_text", "to": OPENID, "text": "第1次"}
    assert calls == [OPENID]


# -- refusals ------------------------------------------------------------------------------------
def _bad_requests(config: Config) -> list[tuple[str, dict[str, str], bytes, int]]:
    w = config.wechat
    good_params, good_body = build_callback(w, follower.text_message(ACCOUNT, OPENID, "hi"))
    doctype = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">]><xml><ToUserName>a</ToUserName>'
        "<FromUserName>b</FromUserName><CreateTime>1</CreateTime><MsgType>text</MsgType>"
        "<Content>&lol;</Content><MsgId>1</MsgId></xml>"
    )
    doctype_params, doctype_body = build_callback(w, doctype)
    garbage_params, _ = build_callback(w, follower.text_message(ACCOUNT, OPENID, "hi"))
    return [
        ("wrong signature", dict(good_params, signature="f" * 40), good_body, 403),
        ("wrong msg_signature", dict(good_params, msg_signature="f" * 40), good_body, 403),
        (
            "stale timestamp",
            build_callback(w, follower.text_message(ACCOUNT, OPENID, "hi"), timestamp=int(time.time()) - 3600)[0],
            good_body,
            403,
        ),
        ("missing parameters", {}, good_body, 400),
        ("doctype and entities, encrypted", doctype_params, doctype_body, 400),
        ("doctype in the outer body", good_params, doctype.encode(), 400),
        ("10 MB body", good_params, b"<xml>" + b"a" * (10 * 1024 * 1024) + b"</xml>", 413),
        ("garbage", garbage_params, b"\x00\xff not xml at all <<<", 400),
        ("empty body", garbage_params, b"", 400),
        ("xml without Encrypt", garbage_params, b"<xml><ToUserName>x</ToUserName></xml>", 400),
        ("Encrypt that is not ours", garbage_params, b"<xml><Encrypt>bm90IG91cnM=</Encrypt></xml>", 403),
    ]


@pytest.mark.parametrize("case", range(11))
async def test_bad_requests_get_a_quick_4xx_and_write_nothing(
    aiohttp_client: ClientFactory, config: Config, redis: Redis, case: int, tmp_path: Any, figures: Any
) -> None:
    name, params, body, expected = _bad_requests(config)[case]
    client = await start_bot(aiohttp_client, config, redis)
    started = time.perf_counter()
    resp = await client.post("/wechat", params=params, data=body)
    elapsed = time.perf_counter() - started
    assert resp.status == expected, (name, await resp.text())
    assert "Traceback" not in await resp.text()
    assert await redis.dbsize() == 0, name
    # Decided before Redis is asked anything: a bot whose Redis is gone refuses it the same way
    # (had it waited on Redis, it would have answered 200 with "try again").
    dead = connect(f"unix://{tmp_path}/no-redis.sock", socket_connect_timeout=0.2)
    try:
        no_redis = await aiohttp_client(create_app(config, dead))
        again = await no_redis.post("/wechat", params=params, data=body)
        assert again.status == expected, name
    finally:
        await dead.aclose()
    figures(f"{name}: {resp.status} in {elapsed * 1000:.1f} ms (target 50 ms; measured, not asserted)")


async def test_when_redis_is_down_the_parent_is_asked_to_try_again_not_shown_an_error(
    aiohttp_client: ClientFactory, config: Config, tmp_path: Any
) -> None:
    dead = connect(f"unix://{tmp_path}/no-redis.sock", socket_connect_timeout=0.2)
    app = create_app(config, dead)
    client = await aiohttp_client(app)
    status, body = await post(client, config, follower.text_message(ACCOUNT, OPENID, "帮助"))
    assert status == 200 and "再发一次" in (reply_text(config, body) or "")
    resp = await client.get("/readyz")
    assert resp.status == 503
    await dead.aclose()


async def test_health_ready_and_metrics_endpoints(aiohttp_client: ClientFactory, config: Config, redis: Redis) -> None:
    client = await start_bot(aiohttp_client, config, redis)
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200
    await post(client, config, follower.text_message(ACCOUNT, OPENID, "帮助"))
    text = await (await client.get("/metrics")).text()
    assert "safebell_http_request_seconds_bucket" in text and "safebell_callback_total" in text
