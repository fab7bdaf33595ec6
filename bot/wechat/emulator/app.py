"""The WeChat emulator's HTTP app: WeChat's API shapes, simulated followers, a control API.

WeChat side (what the bot calls, through ``wechat.api_base`` / ``wechat.oauth_base``):
``cgi-bin/token``, ``cgi-bin/stable_token``, ``message/template/send``, ``message/custom/send``,
``menu/create|get``, ``qrcode/create``, ``showqrcode``, ``user/info``, ``connect/oauth2/authorize``,
``sns/oauth2/access_token``; answers and errcodes as WeChat gives them.

Follower side: ``POST /_emulator/followers/{openid}/send`` builds the real callback XML, signs and
(in safe/compatible mode) encrypts it, POSTs it to the bot's callback and decrypts the reply.

OAuth: the "browsing" follower is named by the ``emulator_openid`` query parameter of the
authorize URL, else by the ``emulator_openid`` cookie (set by that parameter, or by
``GET /_emulator/browse?openid=…&next=…``).

Control (JSON under ``/_emulator/``): ``health``, ``stats``, ``counts``, ``reset``, ``config``
(GET/POST), ``faults`` (GET/POST/DELETE), ``clock``, ``token/invalidate``, ``followers``,
``followers/{openid}/inbox``, ``followers/{openid}/send``, ``menu``, ``qrcodes``, ``browse``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from bot.config import Config
from bot.wechat.emulator import follower as fx
from bot.wechat.emulator.qr import qr_svg
from bot.wechat.emulator.state import APIError, EmulatorState, Fault, Follower
from bot.wechat.protocol import mask_openid

log = logging.getLogger(__name__)

STATE = web.AppKey("emulator_state", EmulatorState)
SESSION = web.AppKey("emulator_session", aiohttp.ClientSession)
TASKS: web.AppKey[set[asyncio.Task[None]]] = web.AppKey("emulator_tasks")

CONTROL_PREFIX = "/_emulator/"
CALLBACK_DEADLINE = 5.0  # WeChat waits this long for the bot's reply
OPENID_COOKIE = "emulator_openid"
QR_MAX_EXPIRE = 2592000  # 30 days, WeChat's limit for temporary codes
QR_DEFAULT_EXPIRE = 60

_JSON = "application/json"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _state(request: web.Request) -> EmulatorState:
    return request.app[STATE]


def _ok(payload: dict[str, Any] | None = None) -> web.Response:
    body: dict[str, Any] = {"errcode": 0, "errmsg": "ok"}
    body.update(payload or {})
    return web.json_response(body)


def _wechat_error(st: EmulatorState, exc: APIError) -> web.Response:
    # WeChat answers errors with HTTP 200 and an errcode.
    return web.json_response(st.error_body(exc.errcode, exc.detail))


async def _json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        raise APIError(44002)
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise APIError(47001) from exc
    if not isinstance(data, dict):
        raise APIError(47001)
    return data


def _control_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _control_json(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise web.HTTPBadRequest(text='{"error": "body is not JSON"}', content_type=_JSON) from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text='{"error": "body must be an object"}', content_type=_JSON)
    return data


async def _wait_for_disconnect(request: web.Request, limit: float) -> None:
    """Hold a request until the client gives up (its timeout) or ``limit`` passes."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await asyncio.sleep(0.02)


# --------------------------------------------------------------------------------------------
# middleware: latency, faults and counting for the WeChat-side paths
# --------------------------------------------------------------------------------------------
@web.middleware
async def wechat_side(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith(CONTROL_PREFIX):
        return await handler(request)
    st = _state(request)
    st.stats.calls[request.path] += 1
    if st.knobs.latency_ms > 0:
        await asyncio.sleep(st.knobs.latency_ms / 1000)
    fault = st.take_fault(request.path)
    if fault is None:
        try:
            return await handler(request)
        except APIError as exc:
            return _wechat_error(st, exc)
    if fault.errcode is not None:
        return _wechat_error(st, APIError(fault.errcode, "(injected)"))
    if fault.deliver:
        with contextlib.suppress(APIError):
            await handler(request)  # WeChat acted; the answer is what gets lost
    if fault.timeout:
        await _wait_for_disconnect(request, fault.delay)
        return web.Response(status=504, text="Gateway Timeout")
    status = fault.http_status or 502
    return web.Response(status=status, text=f"HTTP {status} (injected by the emulator)")


# --------------------------------------------------------------------------------------------
# access_token
# --------------------------------------------------------------------------------------------
async def classic_token(request: web.Request) -> web.Response:
    st = _state(request)
    q = request.query
    if q.get("grant_type") != "client_credential":
        raise APIError(40002)
    st.check_credentials(q.get("appid"), q.get("secret"))
    token, expires_in = st.classic_token()
    return web.json_response({"access_token": token, "expires_in": expires_in})


async def stable_token(request: web.Request) -> web.Response:
    st = _state(request)
    body = await _json_body(request)
    if body.get("grant_type") != "client_credential":
        raise APIError(40002)
    st.check_credentials(body.get("appid"), body.get("secret"))
    force = body.get("force_refresh", False)
    token, expires_in = st.stable_token(force is True or force == "true")
    return web.json_response({"access_token": token, "expires_in": expires_in})


def _authorized(request: web.Request) -> EmulatorState:
    st = _state(request)
    st.check_token(request.query.get("access_token"))
    return st


# --------------------------------------------------------------------------------------------
# messages
# --------------------------------------------------------------------------------------------
async def template_send(request: web.Request) -> web.Response:
    st = _authorized(request)
    body = await _json_body(request)
    openid = body.get("touser")
    template_id = body.get("template_id")
    if not isinstance(openid, str) or not openid:
        raise APIError(40003)
    if not isinstance(template_id, str) or not template_id:
        raise APIError(40037)
    values = st.validate_template_data(body.get("data"))
    url = body.get("url") if isinstance(body.get("url"), str) else None
    cmid = body.get("client_msg_id")
    client_msg_id = str(cmid) if cmid else None
    follower = st.follower_for_send(openid)
    # From here to record_template nothing awaits: the dedupe check and the record are atomic.
    msgid = st.dedupe_hit(openid, client_msg_id)
    if msgid is not None:
        st.stats.template_deduped += 1
        return _ok({"msgid": msgid})
    if st.busy():
        raise APIError(-1)
    st.take_quota()
    msgid, delivered = st.record_template(follower, template_id, values, url, client_msg_id)
    if st.knobs.push_events:
        status = "success" if delivered else "failed:user block"
        _spawn(request.app, _push_job_finish(request.app, openid, msgid, status))
    return _ok({"msgid": msgid})


async def custom_send(request: web.Request) -> web.Response:
    st = _authorized(request)
    body = await _json_body(request)
    msgtype = body.get("msgtype")
    if not isinstance(msgtype, str) or not isinstance(body.get(msgtype), dict):
        raise APIError(47001, "msgtype and its object are required")
    follower = st.follower_for_send(body.get("touser") if isinstance(body.get("touser"), str) else None)
    if st.busy():
        raise APIError(-1)
    st.take_cs_slot(follower)
    st.stats.cs_sends += 1
    item: dict[str, Any] = {"msgtype": msgtype, "time": int(st.now())}
    payload = body[msgtype]
    if msgtype == "text":
        item["content"] = str(payload.get("content", ""))
    else:
        item[msgtype] = payload
    follower.custom.append(item)
    return _ok()


# --------------------------------------------------------------------------------------------
# menu, QR codes, users
# --------------------------------------------------------------------------------------------
_BUTTON_TYPES = frozenset(
    {
        "click",
        "view",
        "scancode_push",
        "scancode_waitmsg",
        "pic_sysphoto",
        "pic_photo_or_album",
        "pic_weixin",
        "location_select",
        "media_id",
        "article_id",
        "article_view_limited",
        "miniprogram",
    }
)


def _check_buttons(buttons: Any, limit: int) -> None:
    if not isinstance(buttons, list) or not 1 <= len(buttons) <= limit:
        raise APIError(40016)
    for button in buttons:
        if not isinstance(button, dict) or not button.get("name"):
            raise APIError(40016)
        if button.get("sub_button"):
            _check_buttons(button["sub_button"], 5)
        elif button.get("type") not in _BUTTON_TYPES:
            raise APIError(40017)


async def menu_create(request: web.Request) -> web.Response:
    st = _authorized(request)
    body = await _json_body(request)
    _check_buttons(body.get("button"), 3)
    st.menu = {"button": body["button"]}
    return _ok()


async def menu_get(request: web.Request) -> web.Response:
    st = _authorized(request)
    if st.menu is None:
        raise APIError(46003)
    return web.json_response({"menu": st.menu})


async def qrcode_create(request: web.Request) -> web.Response:
    st = _authorized(request)
    body = await _json_body(request)
    action = body.get("action_name")
    info = body.get("action_info")
    scene_obj = info.get("scene") if isinstance(info, dict) else None
    scene = scene_obj.get("scene_str") if isinstance(scene_obj, dict) else None
    if action not in ("QR_STR_SCENE", "QR_LIMIT_STR_SCENE"):
        raise APIError(40097, "action_name must be QR_STR_SCENE or QR_LIMIT_STR_SCENE")
    if not isinstance(scene, str) or not 1 <= len(scene) <= 64:
        raise APIError(40097, "scene_str must be 1-64 characters")
    ticket = "gQ" + secrets.token_urlsafe(48)
    url = f"http://weixin.qq.com/q/{secrets.token_urlsafe(16)}"
    record: dict[str, Any] = {"ticket": ticket, "scene": scene, "action_name": action, "url": url}
    answer: dict[str, Any] = {"ticket": ticket, "url": url}
    if action == "QR_STR_SCENE":
        raw = body.get("expire_seconds", QR_DEFAULT_EXPIRE)
        try:
            expire = min(max(int(raw), 1), QR_MAX_EXPIRE)
        except (TypeError, ValueError):
            raise APIError(40097, "expire_seconds must be a number") from None
        record["expire_seconds"] = answer["expire_seconds"] = expire
        record["expires_at"] = st.now() + expire
    st.qrcodes[ticket] = record
    return web.json_response(answer)


async def show_qrcode(request: web.Request) -> web.Response:
    st = _state(request)
    record = st.qrcodes.get(request.query.get("ticket", ""))
    if record is None or record.get("expires_at", float("inf")) < st.now():
        return web.Response(status=404, text="ticket not found or expired")
    return web.Response(text=qr_svg(record["ticket"], record["scene"]), content_type="image/svg+xml")


async def user_info(request: web.Request) -> web.Response:
    st = _authorized(request)
    openid = request.query.get("openid", "")
    follower = st.followers.get(openid)
    if follower is None and openid in st.knobs.unfollowed:
        return web.json_response({"subscribe": 0, "openid": openid})
    if follower is None:
        raise APIError(40003)
    if not st.is_subscribed(follower):
        return web.json_response({"subscribe": 0, "openid": openid})
    return web.json_response(
        {
            "subscribe": 1,
            "openid": openid,
            "language": "zh_CN",
            "subscribe_time": follower.subscribe_time,
            "remark": "",
            "groupid": 0,
            "tagid_list": [],
            "subscribe_scene": "ADD_SCENE_QR_CODE",
            "qr_scene": 0,
            "qr_scene_str": "",
        }
    )


# --------------------------------------------------------------------------------------------
# OAuth
# --------------------------------------------------------------------------------------------
def _redirect(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location})


def _page(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, content_type="text/plain", charset="utf-8")


async def oauth_authorize(request: web.Request) -> web.Response:
    st = _state(request)
    q = request.query
    if q.get("appid") != st.cfg.wechat.app_id:
        return _page(400, "appid 参数错误 (the emulator knows only wechat.app_id)")
    redirect_uri = q.get("redirect_uri", "")
    if not redirect_uri.startswith(("http://", "https://")):
        return _page(400, "redirect_uri 参数错误")
    if q.get("response_type") != "code":
        return _page(400, "response_type 参数错误")
    scope = q.get("scope", "")
    if scope not in ("snsapi_base", "snsapi_userinfo"):
        return _page(400, "scope 参数错误")
    openid = q.get(OPENID_COOKIE) or request.cookies.get(OPENID_COOKIE)
    if not openid:
        return _page(
            400,
            "No follower is browsing: add ?emulator_openid=<openid> to the authorize URL, "
            "or open /_emulator/browse?openid=<openid>&next=<url> first.",
        )
    code = st.issue_code(openid, scope)
    query = {"code": code}
    if "state" in q:
        query["state"] = q["state"]
    sep = "&" if "?" in redirect_uri else "?"
    response = _redirect(redirect_uri + sep + urlencode(query))
    if q.get(OPENID_COOKIE):
        response.set_cookie(OPENID_COOKIE, openid, httponly=True, samesite="Lax")
    return response


async def oauth_access_token(request: web.Request) -> web.Response:
    st = _state(request)
    q = request.query
    st.check_credentials(q.get("appid"), q.get("secret"))
    if q.get("grant_type") != "authorization_code":
        raise APIError(40002)
    openid, scope = st.redeem_code(q.get("code"))
    return web.json_response(
        {
            "access_token": secrets.token_urlsafe(64),
            "expires_in": 7200,
            "refresh_token": secrets.token_urlsafe(64),
            "openid": openid,
            "scope": scope,
        }
    )


# --------------------------------------------------------------------------------------------
# pushing callbacks to the bot
# --------------------------------------------------------------------------------------------
def _spawn(app: web.Application, coro: Awaitable[None]) -> None:
    task = asyncio.ensure_future(coro)
    tasks = app[TASKS]
    tasks.add(task)
    task.add_done_callback(tasks.discard)


async def deliver_callback(app: web.Application, openid: str, xml: str, *, mode: str | None = None) -> dict[str, Any]:
    """POST one callback to the bot as WeChat would, read its reply. Never raises."""
    st = app[STATE]
    wcfg = st.cfg.wechat
    enc = mode if mode in ("plain", "compatible", "safe") else st.encrypt_mode
    params, body = fx.build_callback(wcfg, xml, mode=cast(Any, enc), openid=openid)
    url = st.callback_url
    result: dict[str, Any] = {"status": 0, "outcome": "", "reply": None, "raw": "", "error": None}
    started = time.perf_counter()
    try:
        async with app[SESSION].post(
            url,
            params=params,
            data=body,
            headers={"Content-Type": "text/xml; charset=utf-8"},
            timeout=aiohttp.ClientTimeout(total=CALLBACK_DEADLINE),
        ) as resp:
            result["status"] = resp.status
            reply_body = await resp.read()
    except TimeoutError:
        result.update(outcome="timeout", error=f"no answer within {CALLBACK_DEADLINE:g} s")
    except aiohttp.ClientError as exc:
        result.update(outcome="unreachable", error=f"{type(exc).__name__}: {exc}")
    result["elapsed_ms"] = round((time.perf_counter() - started) * 1000, 3)
    if result["outcome"]:
        st.stats.callbacks[result["outcome"]] += 1
        return result
    if result["status"] != 200:
        result.update(outcome="http_error", raw=reply_body.decode("utf-8", "replace")[:2000])
        result["error"] = f"HTTP {result['status']}"
    else:
        try:
            plain = fx.read_reply(wcfg, reply_body, mode=cast(Any, enc))
            result["raw"] = plain
            result["reply"] = fx.parse_reply(plain)
        except fx.ReplyError as exc:
            raw = reply_body.decode("utf-8", "replace")[:2000]
            result.update(outcome="bad_reply", error=str(exc), raw=raw)
        else:
            reply = result["reply"]
            if reply is None:
                result["outcome"] = "no_reply"
            elif reply.get("to") != openid:
                # WeChat delivers a reply only to the user who wrote (To/From swapped).
                result.update(outcome="bad_reply", error=f"reply ToUserName is not {mask_openid(openid)}")
            else:
                result["outcome"] = "reply"
    st.stats.callbacks[result["outcome"]] += 1
    return result


async def _push_job_finish(app: web.Application, openid: str, msgid: int, status: str) -> None:
    st = app[STATE]
    await asyncio.sleep(st.knobs.push_delay_ms / 1000)
    xml = fx.template_finish_event(fx.account_id(st.cfg.wechat), openid, msgid, status, int(st.now()))
    result = await deliver_callback(app, openid, xml)
    ok = result["status"] == 200
    st.stats.pushes["sent" if ok else "failed"] += 1
    if not ok:
        # The bot being down must never take the emulator with it: log and drop, like WeChat.
        log.info("TEMPLATESENDJOBFINISH push for %s dropped: %s", mask_openid(openid), result["error"])


# --------------------------------------------------------------------------------------------
# control API
# --------------------------------------------------------------------------------------------
async def health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def stats(request: web.Request) -> web.Response:
    st = _state(request)
    data = st.stats.describe()
    data["daily_used"] = st.quota_used
    data["followers"] = len(st.followers)
    return web.json_response(data)


async def counts(request: web.Request) -> web.Response:
    st = _state(request)
    per = {openid: len(f.templates) for openid, f in st.followers.items() if f.templates}
    return web.json_response({"counts": per, "total": sum(per.values())})


async def reset(request: web.Request) -> web.Response:
    _state(request).reset()
    return web.json_response({"ok": True})


def _fault_from(raw: Any) -> Fault:
    if not isinstance(raw, dict) or not isinstance(raw.get("path"), str):
        raise ValueError('a fault needs a path (or "*")')
    kinds = [k for k in ("errcode", "http_status") if raw.get(k) is not None] + (
        ["timeout"] if raw.get("timeout") else []
    )
    if len(kinds) != 1:
        raise ValueError("a fault needs exactly one of errcode, http_status, timeout")
    return Fault(
        path=raw["path"],
        count=int(raw.get("count", 1)),
        errcode=int(raw["errcode"]) if raw.get("errcode") is not None else None,
        http_status=int(raw["http_status"]) if raw.get("http_status") is not None else None,
        timeout=bool(raw.get("timeout", False)),
        deliver=bool(raw.get("deliver", False)),
        delay=float(raw.get("delay", 30.0)),
    )


def _apply_knobs(st: EmulatorState, data: dict[str, Any]) -> None:
    k = st.knobs
    for key, value in data.items():
        if key in ("latency_ms", "push_delay_ms"):
            setattr(k, key, max(0.0, float(value)))
        elif key == "busy_rate":
            rate = float(value)
            if not 0 <= rate <= 1:
                raise ValueError("busy_rate must be between 0 and 1")
            k.busy_rate = rate
        elif key == "daily_quota":
            k.daily_quota = int(value)
        elif key == "daily_used":
            st.set_quota_used(int(value))
        elif key in ("unfollowed", "blocking"):
            if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                raise ValueError(f"{key} must be a list of openids")
            setattr(k, key, set(value))
        elif key in ("push_events", "auto_follow"):
            if not isinstance(value, bool):
                raise ValueError(f"{key} must be true or false")
            setattr(k, key, value)
        elif key == "callback_url":
            k.callback_url = str(value) if value else None
        elif key == "encrypt_mode":
            if value not in (None, "plain", "compatible", "safe"):
                raise ValueError("encrypt_mode must be plain, compatible or safe")
            k.encrypt_mode = value
        elif key == "faults":
            if not isinstance(value, list):
                raise ValueError("faults must be a list")
            st.faults.extend(_fault_from(item) for item in value)
        else:
            raise ValueError(f"unknown knob {key!r}")


async def get_config(request: web.Request) -> web.Response:
    st = _state(request)
    data = st.knobs.describe(st.cfg)
    data["faults"] = [f.describe() for f in st.faults]
    data["clock_offset"] = st.clock_offset
    return web.json_response(data)


async def post_config(request: web.Request) -> web.Response:
    st = _state(request)
    data = await _control_json(request)
    try:
        _apply_knobs(st, data)
    except (TypeError, ValueError) as exc:
        return _control_error(400, str(exc))
    return await get_config(request)


async def get_faults(request: web.Request) -> web.Response:
    return web.json_response({"faults": [f.describe() for f in _state(request).faults]})


async def post_faults(request: web.Request) -> web.Response:
    st = _state(request)
    data = await _control_json(request)
    items = data["faults"] if isinstance(data.get("faults"), list) else [data]
    try:
        st.faults.extend(_fault_from(item) for item in items)
    except (TypeError, ValueError) as exc:
        return _control_error(400, str(exc))
    return await get_faults(request)


async def delete_faults(request: web.Request) -> web.Response:
    _state(request).faults.clear()
    return web.json_response({"faults": []})


async def post_clock(request: web.Request) -> web.Response:
    st = _state(request)
    data = await _control_json(request)
    try:
        st.clock_offset += float(data.get("advance", 0))
    except (TypeError, ValueError):
        return _control_error(400, "advance must be a number of seconds")
    return web.json_response({"clock_offset": st.clock_offset, "now": st.now()})


async def invalidate_token(request: web.Request) -> web.Response:
    st = _state(request)
    data = await _control_json(request)
    count = st.invalidate_tokens(sticky=bool(data.get("sticky", False)))
    return web.json_response({"invalidated": count})


async def post_followers(request: web.Request) -> web.Response:
    st = _state(request)
    data = await _control_json(request)
    openids = data.get("openids") or []
    try:
        count = int(data.get("count", 0))
    except (TypeError, ValueError):
        return _control_error(400, "count must be a whole number")
    if count < 0 or not isinstance(openids, list) or not all(isinstance(o, str) and o for o in openids):
        return _control_error(400, "give count >= 0 and/or openids: [..]")
    return web.json_response({"openids": st.add_followers(count, openids)})


def _describe_follower(st: EmulatorState, f: Follower) -> dict[str, Any]:
    return {
        "openid": f.openid,
        "subscribed": st.is_subscribed(f),
        "subscribe_time": f.subscribe_time,
        "blocking": f.openid in st.knobs.blocking,
        "templates": len(f.templates),
        "custom": len(f.custom),
        "replies": len(f.replies),
    }


async def get_followers(request: web.Request) -> web.Response:
    st = _state(request)
    return web.json_response(
        {"followers": [_describe_follower(st, f) for f in st.followers.values()], "count": len(st.followers)}
    )


async def get_inbox(request: web.Request) -> web.Response:
    st = _state(request)
    follower = st.followers.get(request.match_info["openid"])
    if follower is None:
        return _control_error(404, "unknown follower")
    return web.json_response({"template": follower.templates, "custom": follower.custom, "replies": follower.replies})


def _payload_xml(st: EmulatorState, f: Follower, data: dict[str, Any]) -> tuple[str, str, str | None]:
    """The callback XML for a control-API payload; returns (xml, msg_type, event)."""
    to = fx.account_id(st.cfg.wechat)
    kind = str(data.get("type", "text"))
    create_time = int(data["create_time"]) if data.get("create_time") is not None else int(st.now())
    msg_id = data.get("msg_id")
    if kind == "text":
        return fx.text_message(to, f.openid, str(data.get("content", "")), msg_id, create_time), "text", None
    if kind == "scan":
        # A follower scans a parametric QR code: subscribe (with qrscene_) if not following yet.
        scene = str(data.get("scene") or "")
        ticket = data.get("ticket")
        if not scene and isinstance(ticket, str) and ticket in st.qrcodes:
            scene = st.qrcodes[ticket]["scene"]
        if not scene:
            raise ValueError("scan needs a scene or a known ticket")
        ticket = ticket or next((t for t, r in st.qrcodes.items() if r["scene"] == scene), None)
        ticket_str = str(ticket) if ticket else None
        if st.is_subscribed(f):
            xml = fx.event_message(to, f.openid, "SCAN", scene, create_time, ticket=ticket_str)
            return xml, "event", "SCAN"
        xml = fx.event_message(to, f.openid, "subscribe", f"qrscene_{scene}", create_time, ticket=ticket_str)
        return xml, "event", "subscribe"
    if kind == "event":
        event = data.get("event")
        if not isinstance(event, str) or not event:
            raise ValueError("an event needs its name in event")
        key = data.get("event_key")
        extra = data.get("fields") if isinstance(data.get("fields"), dict) else None
        xml = fx.event_message(
            to,
            f.openid,
            event,
            None if key is None else str(key),
            create_time,
            ticket=data.get("ticket"),
            extra=extra,
        )
        return xml, "event", event
    if kind == "image":
        xml = fx.image_message(
            to,
            f.openid,
            str(data.get("pic_url", "http://mmbiz.qpic.cn/emulator.jpg")),
            str(data.get("media_id", "emulator-media-image")),
            msg_id,
            create_time,
        )
        return xml, kind, None
    if kind == "voice":
        xml = fx.voice_message(
            to,
            f.openid,
            str(data.get("media_id", "emulator-media-voice")),
            str(data.get("recognition", "")),
            msg_id,
            create_time,
        )
        return xml, kind, None
    if kind == "location":
        xml = fx.location_message(
            to,
            f.openid,
            float(data.get("latitude", 39.9042)),
            float(data.get("longitude", 116.4074)),
            str(data.get("label", "北京市东城区")),
            msg_id,
            create_time,
        )
        return xml, kind, None
    if kind == "link":
        xml = fx.link_message(
            to,
            f.openid,
            str(data.get("title", "链接")),
            str(data.get("description", "")),
            str(data.get("url", "https://example.com/")),
            msg_id,
            create_time,
        )
        return xml, kind, None
    # Anything else (video, shortvideo, or a type WeChat may add tomorrow): the header plus fields.
    fields = data.get("fields") if isinstance(data.get("fields"), dict) else {}
    msg_type = "unknown_emulator_type" if kind == "unknown" else kind
    return fx.message(to, f.openid, msg_type, fields, msg_id=msg_id, create_time=create_time), msg_type, None


async def follower_send(request: web.Request) -> web.Response:
    st = _state(request)
    openid = request.match_info["openid"]
    data = await _control_json(request)
    follower = st.followers.get(openid)
    if follower is None:
        kind = data.get("type")
        joining = kind == "scan" or (kind == "event" and data.get("event") == "subscribe")
        if not joining:
            return _control_error(404, "unknown follower (create it with POST /_emulator/followers)")
        follower = st.followers.setdefault(openid, Follower(openid, subscribed=False))
    try:
        xml, msg_type, event = _payload_xml(st, follower, data)
    except (TypeError, ValueError) as exc:
        return _control_error(400, str(exc))
    # WeChat opens windows and changes follow state when the user acts, whatever the bot answers.
    st.user_acted(follower, msg_type, event)
    result = await deliver_callback(request.app, openid, xml, mode=data.get("mode"))
    if result["reply"] is not None:
        follower.replies.append({**result["reply"], "time": int(st.now())})
    result["xml"] = xml
    return web.json_response(result)


async def get_menu(request: web.Request) -> web.Response:
    return web.json_response({"menu": _state(request).menu})


async def get_qrcodes(request: web.Request) -> web.Response:
    st = _state(request)
    return web.json_response({"qrcodes": list(st.qrcodes.values())})


async def browse(request: web.Request) -> web.Response:
    """Become follower ``openid`` in this browser (cookie), then go to ``next``."""
    openid = request.query.get("openid", "")
    if not openid:
        return _control_error(400, "openid is required")
    target = request.query.get("next", "/_emulator/health")
    response = _redirect(target)
    response.set_cookie(OPENID_COOKIE, openid, httponly=True, samesite="Lax")
    return response


# --------------------------------------------------------------------------------------------
# the app
# --------------------------------------------------------------------------------------------
async def _on_startup(app: web.Application) -> None:
    # One pooled session for every callback and push; no cookies (WeChat sends none).
    # No per-host connection cap: a benchmark drives thousands of concurrent callbacks through here.
    connector = aiohttp.TCPConnector(limit=0)
    app[SESSION] = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())


async def _on_cleanup(app: web.Application) -> None:
    running = app[TASKS]
    tasks = list(running)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if SESSION in app:
        await app[SESSION].close()


def create_emulator_app(cfg: Config) -> web.Application:
    """The emulator for the account in ``cfg.wechat``; state lives in memory, per app."""
    app = web.Application(middlewares=[wechat_side], client_max_size=4 * 1024 * 1024)
    app[STATE] = EmulatorState(cfg)
    app[TASKS] = set()
    app.on_startup.append(_on_startup)
    app.on_cleanup.append(_on_cleanup)
    r = app.router
    r.add_get("/cgi-bin/token", classic_token)
    r.add_post("/cgi-bin/stable_token", stable_token)
    r.add_post("/cgi-bin/message/template/send", template_send)
    r.add_post("/cgi-bin/message/custom/send", custom_send)
    r.add_post("/cgi-bin/menu/create", menu_create)
    r.add_get("/cgi-bin/menu/get", menu_get)
    r.add_post("/cgi-bin/qrcode/create", qrcode_create)
    r.add_get("/cgi-bin/showqrcode", show_qrcode)
    r.add_get("/cgi-bin/user/info", user_info)
    r.add_get("/connect/oauth2/authorize", oauth_authorize)
    r.add_get("/sns/oauth2/access_token", oauth_access_token)
    p = CONTROL_PREFIX
    r.add_get(p + "health", health)
    r.add_get(p + "stats", stats)
    r.add_get(p + "counts", counts)
    r.add_post(p + "reset", reset)
    r.add_get(p + "config", get_config)
    r.add_post(p + "config", post_config)
    r.add_get(p + "faults", get_faults)
    r.add_post(p + "faults", post_faults)
    r.add_delete(p + "faults", delete_faults)
    r.add_post(p + "clock", post_clock)
    r.add_post(p + "token/invalidate", invalidate_token)
    r.add_get(p + "followers", get_followers)
    r.add_post(p + "followers", post_followers)
    r.add_get(p + "followers/{openid}/inbox", get_inbox)
    r.add_post(p + "followers/{openid}/send", follower_send)
    r.add_get(p + "menu", get_menu)
    r.add_get(p + "qrcodes", get_qrcodes)
    r.add_get(p + "browse", browse)
    return app


async def run_emulator(cfg: Config) -> None:
    """Serve the emulator on ``cfg.emulator.host:port`` until cancelled."""
    app = create_emulator_app(cfg)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, cfg.emulator.host, cfg.emulator.port)
    await site.start()
    log.info("WeChat emulator on %s (callbacks to %s)", cfg.emulator_base_url(), app[STATE].callback_url)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
