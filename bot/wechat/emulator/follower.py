"""A simulated follower's side of the callback protocol: pure functions, no server needed.

Build the XML WeChat would push for a message or an event, sign it (and encrypt it in safe or
compatible mode) exactly as WeChat does, and read the bot's reply back (verify ``MsgSignature``,
decrypt). The emulator uses these to push callbacks; the callback tests and the benchmark's load
generator import them to talk to ``bot serve`` directly. Keep this API stable.
"""

from __future__ import annotations

import base64
import hashlib
import random
import secrets
import string
import time
from collections.abc import Mapping
from typing import Any

import xmltodict
from wechatpy.crypto import PrpCrypto

from bot.config import EncryptMode, WeChatConfig
from bot.wechat.protocol import signature, signature_matches

__all__ = [
    "ReplyError",
    "account_id",
    "build_callback",
    "build_verification",
    "event_message",
    "image_message",
    "link_message",
    "location_message",
    "message",
    "new_msg_id",
    "new_nonce",
    "new_openid",
    "parse_reply",
    "read_reply",
    "template_finish_event",
    "text_message",
    "voice_message",
]

# Real openids are 28 characters: "o" then 27 from the URL-safe base64 alphabet.
_OPENID_ALPHABET = string.ascii_letters + string.digits + "-_"


class ReplyError(ValueError):
    """The bot's reply is one WeChat would reject (bad MsgSignature, wrong encryption, not XML)."""


# -- identities and random parts -----------------------------------------------------------
def account_id(cfg: WeChatConfig) -> str:
    """The account's original id (``gh_…``, the ToUserName of every callback), derived from app_id.

    WeChatConfig has no field for it and the bot never needs it: replies just swap To/From.
    """
    return "gh_" + hashlib.sha1(cfg.app_id.encode()).hexdigest()[:12]


def new_openid(rng: random.Random | None = None) -> str:
    """A realistic openid: 28 characters starting with ``o``."""
    r = rng or random.SystemRandom()
    return "o" + "".join(r.choice(_OPENID_ALPHABET) for _ in range(27))


def new_nonce(rng: random.Random | None = None) -> str:
    """WeChat's nonces are 9-10 decimal digits."""
    r = rng or random.SystemRandom()
    return str(r.randint(100_000_000, 9_999_999_999))


def new_msg_id(rng: random.Random | None = None) -> int:
    """A 64-bit-looking MsgId like WeChat's (``23456789012345678``)."""
    r = rng or random.SystemRandom()
    return r.randint(10**16, 10**17 - 1)


# -- XML builders ----------------------------------------------------------------------------
def _cdata(value: str) -> str:
    # "]]>" cannot appear inside CDATA; split it across two sections, as XML requires.
    return "<![CDATA[" + value.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def _xml(fields: Mapping[str, str | int | float]) -> str:
    parts = ["<xml>"]
    for key, value in fields.items():
        if isinstance(value, str):
            parts.append(f"<{key}>{_cdata(value)}</{key}>")
        else:
            parts.append(f"<{key}>{value}</{key}>")
    parts.append("</xml>")
    return "".join(parts)


def message(
    to: str,
    openid: str,
    msg_type: str,
    fields: Mapping[str, str | int | float] | None = None,
    *,
    msg_id: int | str | None = None,
    create_time: int | None = None,
) -> str:
    """Any user message: the common header, ``fields`` in order, then ``MsgId``."""
    body: dict[str, str | int | float] = {
        "ToUserName": to,
        "FromUserName": openid,
        "CreateTime": int(time.time()) if create_time is None else create_time,
        "MsgType": msg_type,
    }
    body.update(fields or {})
    body["MsgId"] = int(new_msg_id() if msg_id is None else msg_id)
    return _xml(body)


def text_message(
    to: str, openid: str, content: str, msg_id: int | str | None = None, create_time: int | None = None
) -> str:
    return message(to, openid, "text", {"Content": content}, msg_id=msg_id, create_time=create_time)


def image_message(
    to: str,
    openid: str,
    pic_url: str = "http://mmbiz.qpic.cn/emulator.jpg",
    media_id: str = "emulator-media-image",
    msg_id: int | str | None = None,
    create_time: int | None = None,
) -> str:
    return message(
        to, openid, "image", {"PicUrl": pic_url, "MediaId": media_id}, msg_id=msg_id, create_time=create_time
    )


def voice_message(
    to: str,
    openid: str,
    media_id: str = "emulator-media-voice",
    recognition: str = "",
    msg_id: int | str | None = None,
    create_time: int | None = None,
) -> str:
    fields: dict[str, str | int | float] = {"MediaId": media_id, "Format": "amr"}
    if recognition:
        fields["Recognition"] = recognition
    return message(to, openid, "voice", fields, msg_id=msg_id, create_time=create_time)


def location_message(
    to: str,
    openid: str,
    latitude: float = 39.9042,
    longitude: float = 116.4074,
    label: str = "北京市东城区",
    msg_id: int | str | None = None,
    create_time: int | None = None,
) -> str:
    fields: dict[str, str | int | float] = {
        "Location_X": latitude,
        "Location_Y": longitude,
        "Scale": 15,
        "Label": label,
    }
    return message(to, openid, "location", fields, msg_id=msg_id, create_time=create_time)


def link_message(
    to: str,
    openid: str,
    title: str = "链接",
    description: str = "",
    url: str = "https://example.com/",
    msg_id: int | str | None = None,
    create_time: int | None = None,
) -> str:
    fields: dict[str, str | int | float] = {"Title": title, "Description": description, "Url": url}
    return message(to, openid, "link", fields, msg_id=msg_id, create_time=create_time)


def event_message(
    to: str,
    openid: str,
    event: str,
    event_key: str | None = None,
    create_time: int | None = None,
    *,
    ticket: str | None = None,
    extra: Mapping[str, str | int | float] | None = None,
) -> str:
    """An event push (no MsgId: WeChat retries of events are told apart by FromUserName+CreateTime).

    ``subscribe`` from a parametric QR code carries ``EventKey=qrscene_<scene>`` and a ``Ticket``;
    ``SCAN`` carries the bare scene; ``CLICK`` the menu key. The caller passes the key as WeChat
    would send it.
    """
    body: dict[str, str | int | float] = {
        "ToUserName": to,
        "FromUserName": openid,
        "CreateTime": int(time.time()) if create_time is None else create_time,
        "MsgType": "event",
        "Event": event,
    }
    if event_key is not None:
        body["EventKey"] = event_key
    if ticket is not None:
        body["Ticket"] = ticket
    body.update(extra or {})
    return _xml(body)


def template_finish_event(
    to: str, openid: str, msg_id: int, status: str = "success", create_time: int | None = None
) -> str:
    """``TEMPLATESENDJOBFINISH``; Status: ``success``, ``failed:user block``, ``failed: system failed``."""
    extra: dict[str, str | int | float] = {"MsgID": msg_id, "Status": status}
    return event_message(to, openid, "TEMPLATESENDJOBFINISH", create_time=create_time, extra=extra)


# -- signing, encryption ------------------------------------------------------------------------
def _prp(cfg: WeChatConfig) -> PrpCrypto:
    return PrpCrypto(base64.b64decode(cfg.aes_key + "="))


def _field(xml: str, name: str) -> str | None:
    try:
        doc = xmltodict.parse(xml)
    except Exception:  # any parse failure means "no such field" here
        return None
    root = doc.get("xml") if isinstance(doc, dict) else None
    value = root.get(name) if isinstance(root, dict) else None
    return value if isinstance(value, str) else None


def build_callback(
    cfg: WeChatConfig,
    payload_xml: str,
    *,
    mode: EncryptMode | None = None,
    timestamp: int | str | None = None,
    nonce: str | None = None,
    openid: str | None = None,
) -> tuple[dict[str, str], bytes]:
    """The query parameters and body WeChat would POST to the callback URL for ``payload_xml``.

    ``mode`` defaults to ``cfg.encrypt_mode``. Plain: signature/timestamp/nonce/openid and the XML.
    Safe: plus ``encrypt_type=aes`` and ``msg_signature`` (over the Encrypt), body holds only
    ToUserName and Encrypt. Compatible: the same query as safe, body holds the plaintext fields
    *and* Encrypt. ``openid`` defaults to the payload's FromUserName.
    """
    mode = mode or cfg.encrypt_mode
    ts = str(int(time.time()) if timestamp is None else timestamp)
    nc = nonce or new_nonce()
    who = openid if openid is not None else (_field(payload_xml, "FromUserName") or "")
    params = {"signature": signature(cfg.token, ts, nc), "timestamp": ts, "nonce": nc, "openid": who}
    if mode == "plain":
        return params, payload_xml.encode("utf-8")
    encrypt = _prp(cfg).encrypt(payload_xml, cfg.app_id).decode("ascii")
    params["encrypt_type"] = "aes"
    params["msg_signature"] = signature(cfg.token, ts, nc, encrypt)
    if mode == "safe":
        to = _field(payload_xml, "ToUserName") or account_id(cfg)
        body = f"<xml><ToUserName>{_cdata(to)}</ToUserName><Encrypt>{_cdata(encrypt)}</Encrypt></xml>"
    else:
        # compatible: the plaintext document with Encrypt added as its last field
        head, sep, _ = payload_xml.rpartition("</xml>")
        body = f"{head}<Encrypt>{_cdata(encrypt)}</Encrypt>{sep}" if sep else payload_xml
    return params, body.encode("utf-8")


def build_verification(
    cfg: WeChatConfig,
    echostr: str | None = None,
    *,
    timestamp: int | str | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """Query parameters of WeChat's URL-verification ``GET`` (the bot must echo ``echostr``)."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    nc = nonce or new_nonce()
    return {
        "signature": signature(cfg.token, ts, nc),
        "timestamp": ts,
        "nonce": nc,
        "echostr": echostr or secrets.token_hex(8),
    }


def read_reply(cfg: WeChatConfig, body: bytes, *, mode: EncryptMode | None = None) -> str:
    """The plaintext of the bot's passive reply, as WeChat would read it.

    ``""`` and ``"success"`` (no reply) come back as they are. An encrypted reply has its
    ``MsgSignature`` checked against its own TimeStamp/Nonce and is decrypted. Raises
    :class:`ReplyError` for what WeChat would reject: a bad signature, an undecryptable or foreign
    Encrypt, a plaintext reply in safe mode, an encrypted one in plain mode.
    """
    mode = mode or cfg.encrypt_mode
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReplyError("reply is not UTF-8") from exc
    stripped = text.strip()
    if stripped in ("", "success"):
        return stripped
    try:
        doc = xmltodict.parse(stripped)
    except Exception as exc:  # xmltodict raises several types; all mean "not XML"
        raise ReplyError(f"reply is not XML: {exc}") from exc
    root = doc.get("xml") if isinstance(doc, dict) else None
    if not isinstance(root, dict):
        raise ReplyError("reply has no <xml> root")
    encrypt = root.get("Encrypt")
    if encrypt is None:
        if mode == "safe":
            raise ReplyError("safe mode needs an encrypted reply")
        return stripped
    if mode == "plain":
        raise ReplyError("plain mode cannot read an encrypted reply")
    ts, nc, sig = root.get("TimeStamp"), root.get("Nonce"), root.get("MsgSignature")
    if not (isinstance(encrypt, str) and isinstance(ts, str) and isinstance(nc, str) and isinstance(sig, str)):
        raise ReplyError("encrypted reply lacks TimeStamp, Nonce or MsgSignature")
    if not signature_matches(signature(cfg.token, ts, nc, encrypt), sig):
        raise ReplyError("reply MsgSignature does not verify")
    try:
        plain = _prp(cfg).decrypt(encrypt, cfg.app_id)
    except Exception as exc:  # bad padding, bad base64, foreign app id
        raise ReplyError(f"reply does not decrypt for this app: {type(exc).__name__}") from exc
    return str(plain)


def parse_reply(plain: str) -> dict[str, Any] | None:
    """A small summary of a plaintext reply: ``{"type", "content" | "media_id" | "articles", ...}``.

    ``None`` for "no reply" (empty or ``success``). Unknown shapes keep their raw fields.
    """
    if plain.strip() in ("", "success"):
        return None
    try:
        doc = xmltodict.parse(plain)
    except Exception as exc:  # any parse failure: not XML
        raise ReplyError(f"reply is not XML: {exc}") from exc
    root = doc.get("xml") if isinstance(doc, dict) else None
    if not isinstance(root, dict):
        raise ReplyError("reply has no <xml> root")
    msg_type = str(root.get("MsgType") or "")
    out: dict[str, Any] = {
        "type": msg_type,
        "to": root.get("ToUserName"),
        "from": root.get("FromUserName"),
    }
    if msg_type == "text":
        out["content"] = root.get("Content") or ""
    elif msg_type in ("image", "voice", "video"):
        media = root.get(msg_type.capitalize())
        out["media_id"] = media.get("MediaId") if isinstance(media, dict) else None
    elif msg_type == "news":
        articles = root.get("Articles") or {}
        items = articles.get("item") if isinstance(articles, dict) else None
        if isinstance(items, dict):
            items = [items]
        out["articles"] = [
            {"title": it.get("Title"), "description": it.get("Description"), "url": it.get("Url")}
            for it in (items or [])
            if isinstance(it, dict)
        ]
    else:
        out["fields"] = {k: v for k, v in root.items() if k not in ("ToUserName", "FromUserName", "MsgType")}
    return out
