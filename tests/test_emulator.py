"""The WeChat emulator behaves like WeChat: tokens, sends, dedupe, quotas, windows, OAuth, callbacks.

Everything over real HTTP: raw requests for the WeChat side, EmulatorClient for the control side,
and a tiny stand-in bot (verifies signatures with bot.wechat.protocol, decrypts with wechatpy).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
import xmltodict
from aiohttp import web
from wechatpy import create_reply, parse_message
from wechatpy.crypto import WeChatCrypto

from bot.config import Config, WeChatConfig
from bot.wechat.emulator import follower as fx
from bot.wechat.protocol import signature, signature_matches

if TYPE_CHECKING:
    from conftest import EmulatorHandle

TEMPLATE = "tmpl-safety-notice"


# -- helpers -------------------------------------------------------------------------------------
async def wechat_get(emu: EmulatorHandle, path: str, **params: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.get(emu.url + path, params=params) as resp:
        assert resp.status == 200
        data: dict[str, Any] = await resp.json(content_type=None)
        return data


async def wechat_post(emu: EmulatorHandle, path: str, body: dict[str, Any], **params: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.post(emu.url + path, params=params, json=body) as resp:
        assert resp.status == 200
        data: dict[str, Any] = await resp.json(content_type=None)
        return data


async def stable_token(emu: EmulatorHandle, cfg: Config, force: bool = False) -> dict[str, Any]:
    body = {
        "grant_type": "client_credential",
        "appid": cfg.wechat.app_id,
        "secret": cfg.wechat.app_secret,
        "force_refresh": force,
    }
    return await wechat_post(emu, "/cgi-bin/stable_token", body)


async def token(emu: EmulatorHandle, cfg: Config) -> str:
    return str((await stable_token(emu, cfg))["access_token"])


def card(openid: str, client_msg_id: str | None = None, **values: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "touser": openid,
        "template_id": TEMPLATE,
        "url": "https://school.example/n/1",
        "data": {k: {"value": v} for k, v in (values or {"thing1": "防溺水提醒"}).items()},
    }
    if client_msg_id:
        body["client_msg_id"] = client_msg_id
    return body


@dataclass
class StandInBot:
    """A minimal callback endpoint: checks what WeChat must send, echoes text messages."""

    cfg: WeChatConfig
    url: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    reply_mode: str = "correct"  # or "bad-signature"
    events: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)

    async def handle(self, request: web.Request) -> web.Response:
        q = request.query
        body = await request.read()
        if not signature_matches(signature(self.cfg.token, q["timestamp"], q["nonce"]), q["signature"]):
            self.problems.append("signature")
            return web.Response(status=403)
        crypto = WeChatCrypto(self.cfg.token, self.cfg.aes_key, self.cfg.app_id)
        encrypted = q.get("encrypt_type") == "aes"
        if encrypted:
            expected = signature(self.cfg.token, q["timestamp"], q["nonce"], xmltodict.parse(body)["xml"]["Encrypt"])
            if not signature_matches(expected, q["msg_signature"]):
                self.problems.append("msg_signature")
                return web.Response(status=403)
            xml = crypto.decrypt_message(body, q["msg_signature"], q["timestamp"], q["nonce"])
        else:
            xml = body.decode()
        msg = parse_message(xml)
        entry = {"query": dict(q), "body": body.decode(), "xml": xml, "type": msg.type, "msg": msg}
        self.received.append(entry)
        if msg.type == "event":
            await self.events.put(entry)
        if msg.type != "text":
            return web.Response(text="success")
        reply = create_reply(f"echo:{msg.content}", msg).render()
        if encrypted:
            reply = crypto.encrypt_message(reply, q["nonce"])
            if self.reply_mode == "bad-signature":
                reply = reply.replace("<MsgSignature><![CDATA[", "<MsgSignature><![CDATA[0")
        return web.Response(text=reply, content_type="application/xml")


@pytest.fixture
async def bot(config: Config, emulator: EmulatorHandle, aiohttp_server: Any) -> AsyncIterator[StandInBot]:
    stand_in = StandInBot(config.wechat)
    app = web.Application()
    app.router.add_post("/wechat", stand_in.handle)
    server = await aiohttp_server(app)
    stand_in.url = str(server.make_url("/wechat"))
    await emulator.client.configure(callback_url=stand_in.url, push_delay_ms=0)
    yield stand_in


# -- access_token ----------------------------------------------------------------------------------
async def test_classic_token_issues_a_new_token_each_call_and_the_old_one_lives_five_minutes(
    emulator: EmulatorHandle, config: Config
) -> None:
    params = {"grant_type": "client_credential", "appid": config.wechat.app_id, "secret": config.wechat.app_secret}
    first = await wechat_get(emulator, "/cgi-bin/token", **params)
    second = await wechat_get(emulator, "/cgi-bin/token", **params)
    assert first["access_token"] != second["access_token"]
    assert first["expires_in"] == 7200
    openid = (await emulator.client.create_followers(1))[0]
    for t in (first, second):
        info = await wechat_get(emulator, "/cgi-bin/user/info", access_token=t["access_token"], openid=openid)
        assert info["subscribe"] == 1
    await emulator.client.advance_clock(301)
    old = await wechat_get(emulator, "/cgi-bin/user/info", access_token=first["access_token"], openid=openid)
    assert old["errcode"] == 42001
    new = await wechat_get(emulator, "/cgi-bin/user/info", access_token=second["access_token"], openid=openid)
    assert new["openid"] == openid
    assert (await emulator.client.stats())["token_fetches"]["classic"] == 2


async def test_stable_token_is_stable_and_force_refresh_is_limited_to_one_per_interval(
    emulator: EmulatorHandle, config: Config
) -> None:
    a, b = await stable_token(emulator, config), await stable_token(emulator, config)
    assert a["access_token"] == b["access_token"]
    forced = await stable_token(emulator, config, force=True)
    assert forced["access_token"] != a["access_token"]
    again = await stable_token(emulator, config, force=True)
    assert again["errcode"] == 45011
    await emulator.client.advance_clock(config.wechat.force_refresh_interval + 1)
    assert "access_token" in await stable_token(emulator, config, force=True)
    fetches = (await emulator.client.stats())["token_fetches"]
    assert fetches == {"classic": 0, "stable": 2, "forced": 2}


async def test_wrong_credentials_get_40013_and_40125(emulator: EmulatorHandle, config: Config) -> None:
    body = {"grant_type": "client_credential", "appid": "wxnope", "secret": config.wechat.app_secret}
    assert (await wechat_post(emulator, "/cgi-bin/stable_token", body))["errcode"] == 40013
    body = {"grant_type": "client_credential", "appid": config.wechat.app_id, "secret": "wrong"}
    assert (await wechat_post(emulator, "/cgi-bin/stable_token", body))["errcode"] == 40125


async def test_token_checks_answer_40001_for_unknown_or_invalidated_and_42001_for_expired(
    emulator: EmulatorHandle, config: Config
) -> None:
    openid = (await emulator.client.create_followers(1))[0]
    assert (await wechat_get(emulator, "/cgi-bin/user/info", access_token="bogus", openid=openid))["errcode"] == 40001
    assert (await wechat_get(emulator, "/cgi-bin/user/info", openid=openid))["errcode"] == 41001
    t = await token(emulator, config)
    await emulator.client.invalidate_token()
    assert (await wechat_get(emulator, "/cgi-bin/user/info", access_token=t, openid=openid))["errcode"] == 40001
    fresh = await token(emulator, config)
    assert fresh != t  # stable_token replaces an invalidated token
    await emulator.client.advance_clock(7201)
    assert (await wechat_get(emulator, "/cgi-bin/user/info", access_token=fresh, openid=openid))["errcode"] == 42001


# -- template messages -------------------------------------------------------------------------------
async def test_same_openid_and_client_msg_id_delivers_one_card_with_the_same_msgid(
    emulator: EmulatorHandle, config: Config
) -> None:
    t = await token(emulator, config)
    openid, other = await emulator.client.create_followers(2)
    first = await wechat_post(emulator, "/cgi-bin/message/template/send", card(openid, "n1:g1"), access_token=t)
    second = await wechat_post(emulator, "/cgi-bin/message/template/send", card(openid, "n1:g1"), access_token=t)
    assert first["errcode"] == 0 and second["errcode"] == 0
    assert first["msgid"] == second["msgid"]
    # The same id for another follower is another message.
    third = await wechat_post(emulator, "/cgi-bin/message/template/send", card(other, "n1:g1"), access_token=t)
    assert third["msgid"] != first["msgid"]
    assert await emulator.client.counts() == {openid: 1, other: 1}
    stats = await emulator.client.stats()
    assert stats["template_sends"] == 2 and stats["template_deduped"] == 1
    inbox = await emulator.client.inbox(openid)
    assert inbox["template"][0]["data"] == {"thing1": "防溺水提醒"}
    assert inbox["template"][0]["client_msg_id"] == "n1:g1"
    # Beyond WeChat's dedupe window the same id sends again.
    await emulator.client.advance_clock(config.wechat.client_msg_id_window + 1)
    t = await token(emulator, config)
    later = await wechat_post(emulator, "/cgi-bin/message/template/send", card(openid, "n1:g1"), access_token=t)
    assert later["msgid"] != first["msgid"]
    assert (await emulator.client.counts())[openid] == 2


@pytest.mark.parametrize("value", ["一二三四五六七八九十一二三四五六七八九十一", "第一行\n第二行"])
async def test_template_field_over_20_characters_or_with_a_line_break_gets_47003(
    emulator: EmulatorHandle, config: Config, value: str
) -> None:
    t = await token(emulator, config)
    openid = (await emulator.client.create_followers(1))[0]
    answer = await wechat_post(emulator, "/cgi-bin/message/template/send", card(openid, thing1=value), access_token=t)
    assert answer["errcode"] == 47003
    assert await emulator.client.counts() == {}


async def test_template_to_unfollowed_gets_43004_and_to_a_stranger_40003(
    emulator: EmulatorHandle, config: Config
) -> None:
    t = await token(emulator, config)
    gone, stays = await emulator.client.create_followers(2)
    await emulator.client.configure(unfollowed=[gone])
    send = "/cgi-bin/message/template/send"
    assert (await wechat_post(emulator, send, card(gone), access_token=t))["errcode"] == 43004
    assert (await wechat_post(emulator, send, card(fx.new_openid()), access_token=t))["errcode"] == 40003
    assert (await wechat_post(emulator, send, card(stays), access_token=t))["errcode"] == 0


async def test_daily_quota_gives_45009_until_the_day_rolls(emulator: EmulatorHandle, config: Config) -> None:
    t = await token(emulator, config)
    openid = (await emulator.client.create_followers(1))[0]
    await emulator.client.configure(daily_quota=2)
    send = "/cgi-bin/message/template/send"
    codes = [(await wechat_post(emulator, send, card(openid), access_token=t))["errcode"] for _ in range(3)]
    assert codes == [0, 0, 45009]
    await emulator.client.advance_clock(86400)
    t = await token(emulator, config)
    assert (await wechat_post(emulator, send, card(openid), access_token=t))["errcode"] == 0


async def test_busy_rate_is_seeded_and_injected_faults_fire_once_each(emulator: EmulatorHandle, config: Config) -> None:
    t = await token(emulator, config)
    openid = (await emulator.client.create_followers(1))[0]
    send = "/cgi-bin/message/template/send"
    await emulator.client.configure(busy_rate=1.0)
    assert (await wechat_post(emulator, send, card(openid), access_token=t))["errcode"] == -1
    await emulator.client.configure(busy_rate=0.0)
    await emulator.client.inject_fault(send, errcode=45011, count=2)
    codes = [(await wechat_post(emulator, send, card(openid), access_token=t))["errcode"] for _ in range(3)]
    assert codes == [45011, 45011, 0]
    await emulator.client.inject_fault(send, http_status=502)
    async with aiohttp.ClientSession() as s, s.post(emulator.url + send, json=card(openid)) as resp:
        assert resp.status == 502
    errors = (await emulator.client.stats())["errors"]
    assert errors["-1"] == 1 and errors["45011"] == 2


# -- callbacks to the bot ------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["safe", "compatible", "plain"])
async def test_follower_message_reaches_the_bot_signed_in_each_mode_and_the_reply_is_read_back(
    emulator: EmulatorHandle, bot: StandInBot, mode: str
) -> None:
    await emulator.client.configure(encrypt_mode=mode)
    openid = (await emulator.client.create_followers(1))[0]
    result = await emulator.client.send_text(openid, "你好")
    assert bot.problems == []
    assert result.outcome == "reply", result
    assert result.text == "echo:你好"
    q = bot.received[0]["query"]
    assert q["openid"] == openid
    if mode == "plain":
        assert "encrypt_type" not in q and "<Encrypt>" not in bot.received[0]["body"]
    else:
        assert q["encrypt_type"] == "aes" and "msg_signature" in q
        has_plain_fields = "<Content>" in bot.received[0]["body"]
        assert has_plain_fields is (mode == "compatible")
    inbox = await emulator.client.inbox(openid)
    assert inbox["replies"][0]["content"] == "echo:你好"


async def test_a_forced_retry_resends_the_same_msg_id_and_create_time(
    emulator: EmulatorHandle, bot: StandInBot
) -> None:
    openid = (await emulator.client.create_followers(1))[0]
    await emulator.client.send_text(openid, "1", msg_id=1234567890123456, create_time=1700000000)
    await emulator.client.send_text(openid, "1", msg_id=1234567890123456, create_time=1700000000)
    first, second = (entry["msg"] for entry in bot.received)
    assert first.id == second.id == 1234567890123456
    assert first.create_time == second.create_time


async def test_events_and_other_message_types_are_well_formed(emulator: EmulatorHandle, bot: StandInBot) -> None:
    openid = (await emulator.client.create_followers(1))[0]
    click = await emulator.client.send_event(openid, "CLICK", "MENU_LESSONS")
    assert click.outcome == "no_reply"
    for payload in ({"type": "image"}, {"type": "voice"}, {"type": "location"}, {"type": "link"}, {"type": "unknown"}):
        assert (await emulator.client.send(openid, payload)).status == 200
    types = [entry["type"] for entry in bot.received]
    assert types == ["event", "image", "voice", "location", "link", "unknown"]
    assert bot.received[0]["msg"].key == "MENU_LESSONS"


async def test_scanning_a_qr_code_subscribes_with_qrscene_then_sends_scan(
    emulator: EmulatorHandle, bot: StandInBot, config: Config
) -> None:
    t = await token(emulator, config)
    qr = await wechat_post(
        emulator,
        "/cgi-bin/qrcode/create",
        {"action_name": "QR_LIMIT_STR_SCENE", "action_info": {"scene": {"scene_str": "class:3-2"}}},
        access_token=t,
    )
    assert "expire_seconds" not in qr and qr["url"].startswith("http://weixin.qq.com/q/")
    async with (
        aiohttp.ClientSession() as s,
        s.get(emulator.url + "/cgi-bin/showqrcode", params={"ticket": qr["ticket"]}) as resp,
    ):
        assert resp.status == 200 and "class:3-2" in await resp.text()
    newcomer = "o" + "N" * 27
    await emulator.client.scan(newcomer, "class:3-2")
    await emulator.client.scan(newcomer, "class:3-2")
    first, second = (entry["msg"] for entry in bot.received)
    assert "<EventKey><![CDATA[qrscene_class:3-2]]></EventKey>" in bot.received[0]["xml"]
    assert (first.event, first.scene_id, first.ticket) == ("subscribe_scan", "class:3-2", qr["ticket"])
    assert (second.event, second.scene_id) == ("scan", "class:3-2")
    assert (await emulator.client.qrcodes())[0]["scene"] == "class:3-2"


async def test_a_reply_with_a_bad_msg_signature_is_rejected_like_wechat_would(
    emulator: EmulatorHandle, bot: StandInBot
) -> None:
    bot.reply_mode = "bad-signature"
    openid = (await emulator.client.create_followers(1))[0]
    result = await emulator.client.send_text(openid, "hi")
    assert result.outcome == "bad_reply" and "MsgSignature" in (result.error or "")


async def test_an_unreachable_bot_is_reported_not_crashed_on(emulator: EmulatorHandle, config: Config) -> None:
    await emulator.client.configure(callback_url="http://127.0.0.1:9/wechat", push_delay_ms=0)
    openid = (await emulator.client.create_followers(1))[0]
    result = await emulator.client.send_text(openid, "hi")
    assert result.outcome == "unreachable" and result.status == 0
    t = await token(emulator, config)
    sent = await wechat_post(emulator, "/cgi-bin/message/template/send", card(openid), access_token=t)
    assert sent["errcode"] == 0
    for _ in range(100):
        if (await emulator.client.stats())["pushes"].get("failed"):
            break
        await asyncio.sleep(0.01)
    assert (await emulator.client.stats())["pushes"] == {"failed": 1}


async def test_template_send_pushes_templatesendjobfinish_with_status(
    emulator: EmulatorHandle, bot: StandInBot, config: Config
) -> None:
    t = await token(emulator, config)
    happy, blocking = await emulator.client.create_followers(2)
    await emulator.client.configure(blocking=[blocking])
    send = "/cgi-bin/message/template/send"
    ok = await wechat_post(emulator, send, card(happy), access_token=t)
    blocked = await wechat_post(emulator, send, card(blocking), access_token=t)
    events = [await asyncio.wait_for(bot.events.get(), 2) for _ in range(2)]
    by_openid = {e["msg"].source: e["msg"] for e in events}
    assert by_openid[happy].event == "templatesendjobfinish"
    assert int(by_openid[happy].id) == ok["msgid"] and by_openid[happy].status == "success"
    assert int(by_openid[blocking].id) == blocked["msgid"] and by_openid[blocking].status == "failed:user block"
    assert await emulator.client.counts() == {happy: 1}


async def test_no_push_when_push_events_is_off(emulator: EmulatorHandle, bot: StandInBot, config: Config) -> None:
    await emulator.client.configure(push_events=False)
    t = await token(emulator, config)
    openid = (await emulator.client.create_followers(1))[0]
    await wechat_post(emulator, "/cgi-bin/message/template/send", card(openid), access_token=t)
    await asyncio.sleep(0.05)
    assert bot.received == []


# -- customer-service windows -----------------------------------------------------------------------------
async def test_customer_service_window_rules_45015_and_45047(
    emulator: EmulatorHandle, bot: StandInBot, config: Config
) -> None:
    t = await token(emulator, config)
    writer, follower, silent = await emulator.client.create_followers(3)
    send = "/cgi-bin/message/custom/send"

    def text(openid: str) -> dict[str, Any]:
        return {"touser": openid, "msgtype": "text", "text": {"content": "您好"}}

    async def codes(openid: str, n: int) -> list[int]:
        return [(await wechat_post(emulator, send, text(openid), access_token=t))["errcode"] for _ in range(n)]

    assert await codes(silent, 1) == [45015]
    await emulator.client.send_text(writer, "在吗")
    assert await codes(writer, config.wechat.cs_after_message + 1) == [0] * 5 + [45047]
    await emulator.client.send_event(follower, "subscribe")
    assert await codes(follower, config.wechat.cs_after_event + 1) == [0] * 3 + [45047]
    await emulator.client.send_event(follower, "CLICK", "K")
    assert await codes(follower, 1) == [0]
    await emulator.client.advance_clock(config.wechat.cs_after_event_window + 1)
    t = await token(emulator, config)
    assert await codes(follower, 1) == [45015]
    assert len((await emulator.client.inbox(writer))["custom"]) == 5
    assert (await emulator.client.stats())["cs_sends"] == 9


# -- OAuth ------------------------------------------------------------------------------------------------
async def test_oauth_code_works_once_and_for_five_minutes(emulator: EmulatorHandle, config: Config) -> None:
    openid = (await emulator.client.create_followers(1))[0]
    params = {
        "appid": config.wechat.app_id,
        "redirect_uri": "https://school.example/h5/notice/1?x=1",
        "response_type": "code",
        "scope": "snsapi_base",
        "state": "csrf123",
        "emulator_openid": openid,
    }
    # unsafe=True: the client's cookie jar ignores cookies from IP hosts (127.0.0.1) otherwise.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        async with s.get(emulator.url + "/connect/oauth2/authorize", params=params, allow_redirects=False) as r:
            assert r.status == 302
            location = r.headers["Location"]
            assert r.cookies["emulator_openid"].value == openid
        # The cookie alone identifies the browsing follower now.
        del params["emulator_openid"]
        async with s.get(emulator.url + "/connect/oauth2/authorize", params=params, allow_redirects=False) as r:
            assert r.status == 302
            second_location = r.headers["Location"]
    url = aiohttp.client.URL(location)
    assert location.startswith("https://school.example/h5/notice/1?x=1&")
    assert url.query["state"] == "csrf123"
    exchange = {"appid": config.wechat.app_id, "secret": config.wechat.app_secret, "grant_type": "authorization_code"}
    answer = await wechat_get(emulator, "/sns/oauth2/access_token", code=url.query["code"], **exchange)
    assert answer["openid"] == openid and answer["scope"] == "snsapi_base"
    reused = await wechat_get(emulator, "/sns/oauth2/access_token", code=url.query["code"], **exchange)
    assert reused["errcode"] == 40163
    await emulator.client.advance_clock(301)
    late_code = aiohttp.client.URL(second_location).query["code"]
    late = await wechat_get(emulator, "/sns/oauth2/access_token", code=late_code, **exchange)
    assert late["errcode"] == 40029


# -- control API --------------------------------------------------------------------------------------------
async def test_followers_have_realistic_openids_and_reset_forgets_everything(emulator: EmulatorHandle) -> None:
    openids = await emulator.client.create_followers(5)
    assert len(set(openids)) == 5
    assert all(len(o) == 28 and o.startswith("o") for o in openids)
    assert len(await emulator.client.followers()) == 5
    await emulator.client.reset()
    assert await emulator.client.followers() == []
    assert (await emulator.client.stats())["template_sends"] == 0


async def test_unknown_knob_is_refused(emulator: EmulatorHandle) -> None:
    from bot.wechat.emulator import EmulatorControlError

    with pytest.raises(EmulatorControlError, match="unknown knob"):
        await emulator.client.configure(lattency_ms=5)


async def test_menu_is_stored_and_read_back(emulator: EmulatorHandle, config: Config) -> None:
    t = await token(emulator, config)
    assert (await wechat_get(emulator, "/cgi-bin/menu/get", access_token=t))["errcode"] == 46003
    menu = {"button": [{"type": "click", "name": "安全课", "key": "LESSON"}]}
    assert (await wechat_post(emulator, "/cgi-bin/menu/create", menu, access_token=t))["errcode"] == 0
    assert (await wechat_get(emulator, "/cgi-bin/menu/get", access_token=t))["menu"] == menu
    assert await emulator.client.menu() == menu
    too_many = {"button": [{"type": "click", "name": str(i), "key": str(i)} for i in range(4)]}
    assert (await wechat_post(emulator, "/cgi-bin/menu/create", too_many, access_token=t))["errcode"] == 40016


# -- the pure follower helpers (imported by the callback tests and the load generator) -------------------
@pytest.mark.parametrize("mode", ["safe", "compatible", "plain"])
def test_build_callback_signs_like_wechat_and_read_reply_verifies_and_decrypts(config: Config, mode: str) -> None:
    cfg = config.wechat
    openid = fx.new_openid()
    xml = fx.text_message(fx.account_id(cfg), openid, "含 ]]> 的内容", msg_id=42, create_time=1700000000)
    params, body = fx.build_callback(cfg, xml, mode=mode, timestamp=1700000001, nonce="123456789")
    assert params["timestamp"] == "1700000001" and params["nonce"] == "123456789" and params["openid"] == openid
    assert params["signature"] == signature(cfg.token, "1700000001", "123456789")
    crypto = WeChatCrypto(cfg.token, cfg.aes_key, cfg.app_id)
    if mode == "plain":
        assert "msg_signature" not in params
        plain = body.decode()
    else:
        plain = crypto.decrypt_message(body, params["msg_signature"], params["timestamp"], params["nonce"])
    msg = parse_message(plain)
    assert (msg.source, msg.content, msg.id) == (openid, "含 ]]> 的内容", 42)

    reply = create_reply("收到", msg).render()
    wire = reply if mode == "plain" else crypto.encrypt_message(reply, "987654321")
    assert fx.parse_reply(fx.read_reply(cfg, wire.encode(), mode=mode)) == {
        "type": "text",
        "to": openid,
        "from": fx.account_id(cfg),
        "content": "收到",
    }
    assert fx.read_reply(cfg, b"success", mode=mode) == "success"
    if mode != "plain":
        tampered = wire.replace("<TimeStamp>", "<TimeStamp>1")
        with pytest.raises(fx.ReplyError, match="MsgSignature"):
            fx.read_reply(cfg, tampered.encode(), mode=mode)
    if mode == "safe":
        with pytest.raises(fx.ReplyError, match="encrypted"):
            fx.read_reply(cfg, reply.encode(), mode=mode)


async def test_run_emulator_serves_until_cancelled(config: Config, unused_tcp_port: int) -> None:
    from bot.wechat.emulator import EmulatorClient, run_emulator

    config.emulator.port = unused_tcp_port
    task = asyncio.create_task(run_emulator(config))
    async with EmulatorClient(config.emulator_base_url()) as client:
        for _ in range(200):
            try:
                if await client.health():
                    break
            except aiohttp.ClientError:
                await asyncio.sleep(0.01)
        assert await client.health()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
