"""The WeChat callback at ``/wechat``: verify, decrypt, parse, hand over, reply, encrypt.

Every refusal is a quick 4xx decided before anything touches Redis; everything we accept gets a 200
with a reply or ``success`` inside the reply budget. Never a 5xx, never a traceback: a parent would
see "该公众号暂时无法提供服务" and WeChat would retry.

wechatpy does the parsing and the AES work; the signature checks are ours (constant-time, with a
timestamp window), because wechatpy compares with ``!=`` and accepts any timestamp.
"""

from __future__ import annotations

import base64
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import xmltodict
from aiohttp import web
from wechatpy import parse_message
from wechatpy.crypto import PrpCrypto, WeChatCrypto
from wechatpy.messages import BaseMessage

from bot.config import WeChatConfig
from bot.metrics import CALLBACK_OUTCOMES
from bot.wechat.protocol import mask_openid, signature, signature_matches

log = logging.getLogger(__name__)

# (message, dedupe key, time the request arrived) -> plaintext reply XML or "" for success
Responder = Callable[[BaseMessage, str, float], Awaitable[str]]
# the reply to give when the responder failed (Redis down...): plaintext XML or ""
BusyReply = Callable[[BaseMessage], str]

_FORBIDDEN_XML = re.compile(rb"<!\s*(doctype|entity)", re.IGNORECASE)


class Refused(Exception):
    """A request we will not handle; becomes a 4xx with a short reason."""

    def __init__(self, status: int, outcome: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.outcome = outcome
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Inbound:
    message: BaseMessage
    dedupe_key: str
    encrypted: bool
    nonce: str


def dedupe_key_of(message: BaseMessage) -> str:
    """MsgId for messages; CreateTime + event (+ its key or template MsgID) for events.

    WeChat's doc names FromUserName + CreateTime for events; the openid is in the record's hash tag.
    The event key / template MsgID is added because two template-delivery reports for one user can
    share a second, and must not be taken for a retry of each other.
    """
    msg_id = getattr(message, "id", 0)
    if msg_id:
        return f"m:{msg_id}"
    raw = getattr(message, "_data", {}) or {}
    extra = raw.get("MsgID") or raw.get("EventKey") or ""
    event = str(raw.get("Event") or getattr(message, "event", "") or "")
    return f"e:{raw.get('CreateTime', '')}:{event.lower()}:{extra}"


class WeChatCallback:
    def __init__(self, cfg: WeChatConfig, respond: Responder, busy_reply: BusyReply) -> None:
        self.cfg = cfg
        self.respond = respond
        self.busy_reply = busy_reply
        self.crypto: WeChatCrypto | None = None
        self.prp: PrpCrypto | None = None
        if cfg.aes_key:
            self.crypto = WeChatCrypto(cfg.token, cfg.aes_key, cfg.app_id)
            self.prp = PrpCrypto(base64.b64decode(cfg.aes_key + "="))

    def register(self, app: web.Application, path: str = "/wechat") -> None:
        app.router.add_get(path, self.handle_get, name="wechat")
        app.router.add_post(path, self.handle_post)

    # -- GET: URL verification --------------------------------------------------------------
    async def handle_get(self, request: web.Request) -> web.Response:
        try:
            self._check_query_signature(request)
        except Refused as exc:
            return self._refuse(exc)
        echostr = request.query.get("echostr", "")
        CALLBACK_OUTCOMES.labels("verified").inc()
        return web.Response(text=echostr, content_type="text/plain")

    # -- POST: messages and events ----------------------------------------------------------
    async def handle_post(self, request: web.Request) -> web.Response:
        started = time.monotonic()
        try:
            inbound = await self._read(request)
        except Refused as exc:
            return self._refuse(exc)

        message = inbound.message
        try:
            xml = await self.respond(message, inbound.dedupe_key, started)
        except Exception:
            # Redis unreachable or a bug below the handlers' own error guard: tell the parent to
            # try again rather than let WeChat show its error page.
            log.exception("could not answer %s from %s", inbound.dedupe_key, mask_openid(str(message.source)))
            CALLBACK_OUTCOMES.labels("busy").inc()
            xml = self.busy_reply(message)
        if not xml:
            CALLBACK_OUTCOMES.labels("success").inc()
            return web.Response(text="success", content_type="text/plain")
        CALLBACK_OUTCOMES.labels("reply").inc()
        if inbound.encrypted:
            assert self.crypto is not None
            xml = self.crypto.encrypt_message(xml, inbound.nonce, str(int(time.time())))
        return web.Response(text=xml, content_type="application/xml")

    async def _read(self, request: web.Request) -> Inbound:
        q = request.query
        timestamp, nonce = self._check_query_signature(request)
        cfg = self.cfg
        encrypted = q.get("encrypt_type", "raw").lower() == "aes"
        if cfg.encrypt_mode == "safe" and not encrypted:
            raise Refused(400, "not_encrypted", "this endpoint takes encrypted messages only (safe mode)")
        if encrypted and cfg.encrypt_mode == "plain":
            raise Refused(400, "not_configured", "encrypted message but wechat.encrypt_mode is plain")

        if request.content_length is not None and request.content_length > cfg.body_limit:
            raise Refused(413, "too_large", "body too large")
        body = await request.content.read(cfg.body_limit + 1)
        if len(body) > cfg.body_limit:
            raise Refused(413, "too_large", "body too large")
        if not body.strip():
            raise Refused(400, "empty", "empty body")
        if _FORBIDDEN_XML.search(body):
            raise Refused(400, "entity", "DOCTYPE and entities are not accepted")

        xml = self._decrypt(body, timestamp, nonce, q.get("msg_signature", "")) if encrypted else body
        try:
            message = parse_message(xml)
        except Exception:  # xmltodict/expat errors, a missing MsgType, a non-element root...
            raise Refused(400, "bad_xml", "unreadable XML") from None
        if message is None or not message.source:
            raise Refused(400, "bad_xml", "no FromUserName")
        return Inbound(message, dedupe_key_of(message), encrypted, nonce)

    def _check_query_signature(self, request: web.Request) -> tuple[str, str]:
        q = request.query
        sig, timestamp, nonce = q.get("signature", ""), q.get("timestamp", ""), q.get("nonce", "")
        if not (sig and timestamp and nonce):
            raise Refused(400, "missing_params", "signature, timestamp and nonce are required")
        if len(timestamp) > 12 or len(nonce) > 64 or len(sig) > 64:
            raise Refused(400, "bad_params", "bad query parameters")
        try:
            ts = int(timestamp)
        except ValueError:
            raise Refused(400, "bad_params", "bad timestamp") from None
        if abs(time.time() - ts) > self.cfg.timestamp_window:
            raise Refused(403, "stale", "timestamp outside the allowed window")
        if not signature_matches(signature(self.cfg.token, timestamp, nonce), sig):
            raise Refused(403, "bad_signature", "bad signature")
        return timestamp, nonce

    def _decrypt(self, body: bytes, timestamp: str, nonce: str, msg_signature: str) -> bytes:
        if self.prp is None:
            raise Refused(400, "not_configured", "encrypted message but no wechat.aes_key configured")
        if not msg_signature:
            raise Refused(403, "bad_signature", "msg_signature is required")
        try:
            outer = xmltodict.parse(body)["xml"]
            encrypt = outer["Encrypt"]
        except Exception:
            raise Refused(400, "bad_xml", "unreadable XML") from None
        if not isinstance(encrypt, str) or not encrypt:
            raise Refused(400, "bad_xml", "no Encrypt element")
        if not signature_matches(signature(self.cfg.token, timestamp, nonce, encrypt), msg_signature):
            raise Refused(403, "bad_signature", "bad msg_signature")
        try:
            plain = self.prp.decrypt(encrypt, self.cfg.app_id)
        except Exception:  # bad padding, base64, or another app's message
            raise Refused(400, "bad_cipher", "cannot decrypt") from None
        raw = plain if isinstance(plain, bytes) else str(plain).encode("utf-8")
        if _FORBIDDEN_XML.search(raw):
            raise Refused(400, "entity", "DOCTYPE and entities are not accepted")
        return raw

    def _refuse(self, exc: Refused) -> web.Response:
        CALLBACK_OUTCOMES.labels(exc.outcome).inc()
        return web.Response(status=exc.status, text=exc.reason, content_type="text/plain")
