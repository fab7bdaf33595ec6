"""The WeChat callback at ``/wechat``: verify, decrypt, parse, hand over, reply, encrypt.

Every refusal is a quick 4xx decided before anything touches Redis; everything we accept gets a 200
with a reply or ``success`` inside the reply budget. Never a 5xx, never a traceback: a parent would
see "该公众号暂时无法提供服务" and WeChat would retry.

wechatpy gives the message classes; the AES work (:mod:`bot.wechat.aes`, wechatpy's scheme with
contexts made once) and the signature checks are ours
(constant-time, with a timestamp window), because wechatpy compares with ``!=`` and accepts any
timestamp. Parsing is ours too, for speed only: the envelope's Encrypt is read by a strict pattern of
WeChat's safe-mode body, and a flat message (all WeChat sends but a few events) by a strict pattern
into exactly the dict ``wechatpy.parse_message`` builds with xmltodict, then into wechatpy's class
for it. Anything the patterns do not take exactly as an XML parser would (nesting, entities, a
split CDATA...) goes to xmltodict and ``parse_message`` themselves. About 40 µs less per message
than xmltodict's two parses (``tests/test_callback_parse.py`` checks they agree).

Load shedding: when this process has more callbacks in flight than ``wechat.shed_inflight``, or the
oldest of them has waited longer than ``wechat.shed_wait``, a new callback is answered ``success``
at once, after only its query signature is checked, and its raw body is handed to ``defer`` (the
outbox): a worker verifies, decrypts and answers it later by customer-service message. Nothing is
dropped, not even events without a reply (a TEMPLATESENDJOBFINISH is recorded when the worker gets
to it); what a parent loses under overload is the passive reply, not the message.
"""

from __future__ import annotations

import base64
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from itertools import count
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import hdrs, web
from prometheus_client import Counter
from wechatpy import parse_message
from wechatpy.events import EVENT_TYPES
from wechatpy.messages import MESSAGE_TYPES, BaseMessage, UnknownMessage

from bot.config import WeChatConfig
from bot.metrics import BATCHED, CALLBACK_OUTCOMES
from bot.web.wire import TEXT, XML
from bot.wechat.aes import CipherError, MessageCipher
from bot.wechat.protocol import mask_openid, signature, signature_matches

log = logging.getLogger(__name__)

# (message, dedupe key, time the request arrived) -> plaintext reply XML or "" for success
Responder = Callable[[BaseMessage, str, float], Awaitable[str]]
# the reply to give when the responder failed (Redis down...): plaintext XML or ""
BusyReply = Callable[[BaseMessage], str]
# keep a shed callback for later: (raw query string, body) -> None once it is safely stored
Defer = Callable[[str, str], Awaitable[None]]
# answer a message that was shed, now (by customer-service message): (message, dedupe key)
Deferred = Callable[[BaseMessage, str], Awaitable[None]]

_FORBIDDEN_XML = re.compile(rb"<!\s*(doctype|entity)", re.IGNORECASE)
_FORBIDDEN_TEXT = re.compile(r"<!\s*(doctype|entity)", re.IGNORECASE)
# WeChat's safe-mode body, exactly: anything else (compatible mode, other spacing) is parsed as XML.
_SAFE_BODY = re.compile(
    rb"\s*<xml>\s*<ToUserName><!\[CDATA\[[^\]<>]*\]\]></ToUserName>\s*"
    rb"<Encrypt><!\[CDATA\[([A-Za-z0-9+/=]+)\]\]></Encrypt>\s*</xml>\s*"
)
_REPLY_ENVELOPE = (
    "<xml>\n<Encrypt><![CDATA[{0}]]></Encrypt>\n<MsgSignature><![CDATA[{1}]]></MsgSignature>\n"
    "<TimeStamp>{2}</TimeStamp>\n<Nonce><![CDATA[{3}]]></Nonce>\n</xml>"
)  # wechatpy's WeChatCrypto.encrypt_message template, character for character
_OUTCOMES: dict[str, Counter] = {}
Answer = tuple[int, str, bytes]  # status, content type, body
_SUCCESS: Answer = (200, TEXT, b"success")


def _response(answer: Answer) -> web.Response:
    """An answer as a response for the application (``bot.serve``'s direct path writes it itself)."""
    status, content_type, body = answer
    return web.Response(status=status, body=body, headers={hdrs.CONTENT_TYPE: content_type})


def _outcome(name: str) -> None:
    """``CALLBACK_OUTCOMES.labels(name).inc()`` without looking the child up every time."""
    child = _OUTCOMES.get(name)
    if child is None:
        child = _OUTCOMES[name] = CALLBACK_OUTCOMES.labels(name)
    BATCHED.inc(child)  # added to the counter within a second


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


def query_of(request: web.Request) -> Mapping[str, str]:
    """The query's first values by name. WeChat's (hex, digits, openid characters) need no decoding:
    split them as they are (yarl's full parse costs ~8 µs); anything escaped goes to ``request.query``."""
    raw = request.rel_url.raw_query_string
    if "%" in raw or "+" in raw:
        return request.query
    out: dict[str, str] = {}
    for part in raw.split("&"):
        name, _, value = part.partition("=")
        out.setdefault(name, value)
    return out


def parse_inner(xml: bytes | str) -> BaseMessage:
    """The message in a (decrypted) callback, as ``wechatpy.parse_message`` would give it.

    Raises (ValueError, KeyError, an expat error...) for what is not a WeChat message.
    """
    data = _flat_dict(xml)
    if data is None:  # nested or repeated elements, attributes, text between elements
        message: BaseMessage | None = parse_message(xml)
        if message is None:
            raise ValueError("empty message")
        return message
    return _message_of(data)


# A flat WeChat document: <xml>, then fields of CDATA or plain text, then </xml>. What this pattern
# does not take exactly as an XML parser would (entities, a split CDATA, carriage returns, control
# characters, attributes, nesting, namespaces...) goes to the parser instead.
_FLAT_OPEN = re.compile(r"[ \t\n]*<xml>")
_FLAT_FIELD = re.compile(
    r"[ \t\n]*<([A-Za-z_][A-Za-z0-9_.-]*)>"  # <Tag>
    r"(?:<!\[CDATA\[([^\]]*(?:\](?!\]>)[^\]]*)*)\]\]>|([^<&\]]*))"  # one CDATA section, or text without markup
    r"</\1>"
)
_FLAT_CLOSE = re.compile(r"[ \t\n]*</xml>[ \t\n]*")
_NOT_FLAT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\r\ufffe\uffff]")


def _flat_dict(xml: bytes | str) -> dict[str, Any] | None:
    """``xmltodict.parse(xml)["xml"]`` for a flat document; None when it is not one (then parse it)."""
    if isinstance(xml, bytes):
        try:
            xml = xml.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if _NOT_FLAT.search(xml):
        return None
    opened = _FLAT_OPEN.match(xml)
    if opened is None:
        return None
    data: dict[str, Any] = {}
    pos = opened.end()
    match = _FLAT_FIELD.match
    while (f := match(xml, pos)) is not None:
        tag, cdata, text = f.groups()
        if tag in data:
            return None  # xmltodict makes a list of repeated fields
        data[tag] = (cdata if cdata is not None else text).strip() or None  # xmltodict strips; "" is None
        pos = f.end()
    if _FLAT_CLOSE.fullmatch(xml, pos) is None:
        return None
    return data


def _message_of(message: dict[str, Any]) -> BaseMessage:
    # wechatpy.parse_message's choice of class, on the dict it would have built
    message_type = message["MsgType"].lower()
    event_type = None
    if message_type == "event" or message_type.startswith("device_"):
        if "Event" in message:
            event_type = message["Event"].lower()
        if event_type is None and message_type.startswith("device_"):
            event_type = message_type
        elif message_type.startswith("device_"):
            event_type = f"device_{event_type}"
        if event_type == "subscribe" and message.get("EventKey"):
            event_key = message["EventKey"]
            if event_key.startswith(("scanbarcode|", "scanimage|")):
                event_type = "subscribe_scan_product"
                message["Event"] = event_type
            elif event_key.startswith("qrscene_"):
                event_type = "subscribe_scan"
                message["Event"] = event_type
                message["EventKey"] = event_key[len("qrscene_") :]
        message_class = EVENT_TYPES.get(event_type, UnknownMessage)
    else:
        message_class = MESSAGE_TYPES.get(message_type, UnknownMessage)
    result: BaseMessage = message_class(message)
    return result


class WeChatCallback:
    def __init__(
        self,
        cfg: WeChatConfig,
        respond: Responder,
        busy_reply: BusyReply,
        *,
        defer: Defer | None = None,
        deferred: Deferred | None = None,
    ) -> None:
        self.cfg = cfg
        self.respond = respond
        self.busy_reply = busy_reply
        self.defer = defer
        self.deferred = deferred
        self.cipher: MessageCipher | None = None
        if cfg.aes_key:
            self.cipher = MessageCipher(base64.b64decode(cfg.aes_key + "="), cfg.app_id)
        # callbacks being answered: id -> when it started (oldest first), for load shedding
        self._inflight: OrderedDict[int, float] = OrderedDict()
        self._ids = count()
        self.path = "/wechat"  # where register() put it

    def register(self, app: web.Application, path: str = "/wechat") -> None:
        self.path = path
        app.router.add_get(path, self.handle_get, name="wechat")
        app.router.add_post(path, self.handle_post)

    # -- GET: URL verification --------------------------------------------------------------
    async def handle_get(self, request: web.Request) -> web.Response:
        try:
            self._check_query_signature(request.query)
        except Refused as exc:
            return _response(self._refuse(exc))
        echostr = request.query.get("echostr", "")
        _outcome("verified")
        return web.Response(text=echostr, content_type="text/plain")

    # -- POST: messages and events ----------------------------------------------------------
    async def handle_post(self, request: web.Request) -> web.Response:
        return _response(await self.answer(request))

    async def answer(self, request: web.Request) -> Answer:
        """A POST's answer, as (status, content type, body): ``handle_post`` makes it a response
        for the application; ``bot.serve`` writes it to the connection itself (``WireResponse``)."""
        started = time.monotonic()
        body = None
        if self.defer is not None and self.saturated(started):
            shed, body = await self._shed(request)
            if shed is not None:
                return shed
        key = next(self._ids)
        self._inflight[key] = started
        try:
            return await self._answer(request, started, body)
        finally:
            del self._inflight[key]

    def saturated(self, now: float) -> bool:
        """Too many callbacks in flight, or the oldest of them waiting too long: shed this one."""
        inflight = self._inflight
        if not inflight:
            return False
        if len(inflight) >= self.cfg.shed_inflight:
            return True
        return now - next(iter(inflight.values())) > self.cfg.shed_wait

    async def _answer(self, request: web.Request, started: float, body: bytes | None = None) -> Answer:
        try:
            q = query_of(request)
            timestamp, nonce = self._check_query_signature(q)
            if body is None:
                body = await self._body(request)
            inbound = self._inbound(q, body, timestamp, nonce)
        except Refused as exc:
            return self._refuse(exc)

        message = inbound.message
        try:
            xml = await self.respond(message, inbound.dedupe_key, started)
        except Exception:
            # Redis unreachable or a bug below the handlers' own error guard: tell the parent to
            # try again rather than let WeChat show its error page.
            log.exception("could not answer %s from %s", inbound.dedupe_key, mask_openid(str(message.source)))
            _outcome("busy")
            xml = self.busy_reply(message)
        if not xml:
            _outcome("success")
            return _SUCCESS
        _outcome("reply")
        if inbound.encrypted:
            xml = self._encrypt(xml, inbound.nonce)
        return 200, XML, xml.encode("utf-8")

    async def _shed(self, request: web.Request) -> tuple[Answer | None, bytes | None]:
        """Answer ``success`` now and keep the raw callback for the worker; (None, body read so far):
        answer it normally (it could not be kept)."""
        assert self.defer is not None
        raw = None
        try:
            self._check_query_signature(query_of(request))  # strangers do not get into the outbox
            raw = await self._body(request)
            await self.defer(request.rel_url.raw_query_string, raw.decode("utf-8"))
        except Refused as exc:
            return self._refuse(exc), raw
        except UnicodeDecodeError:
            return self._refuse(Refused(400, "bad_xml", "not UTF-8")), raw
        except Exception:
            log.exception("could not keep a shed callback for later; answering it now")
            return None, raw
        _outcome("shed")
        return _SUCCESS, raw

    async def answer_deferred(self, query_string: str, body: str) -> None:
        """A callback that was shed: verify and parse it as on arrival (but for the timestamp window,
        checked when it arrived), then answer it through ``deferred``. A callback that fails the
        checks is dropped with a warning: it was never WeChat's."""
        if self.deferred is None:
            raise RuntimeError("no handler for deferred callbacks")
        q = dict(parse_qsl(query_string, keep_blank_values=True))
        try:
            timestamp, nonce = self._check_query_signature(q, fresh=False)
            inbound = self._inbound(q, body.encode("utf-8"), timestamp, nonce)
        except Refused as exc:
            log.warning("dropping a deferred callback: %s (%s)", exc.reason, exc.outcome)
            return
        await self.deferred(inbound.message, inbound.dedupe_key)

    async def _body(self, request: web.Request) -> bytes:
        """The whole body, at most ``wechat.body_limit`` bytes. It may come in several TCP segments
        (a long message's callback is a few kilobytes), and the handler may start with the first:
        read to the end, not what happens to be there (``StreamReader.read(n)`` returns that)."""
        limit = self.cfg.body_limit
        if request.content_length is not None and request.content_length > limit:
            raise Refused(413, "too_large", "body too large")
        content = request.content
        if content.is_eof():  # all of it came with the headers (most callbacks): no waiting
            body = content.read_nowait()
        else:
            pieces: list[bytes] = []
            size = 0
            while chunk := await content.readany():
                size += len(chunk)
                if size > limit:
                    raise Refused(413, "too_large", "body too large")
                pieces.append(chunk)
            body = b"".join(pieces)
        if len(body) > limit:
            raise Refused(413, "too_large", "body too large")
        return body

    def _inbound(self, q: Mapping[str, str], body: bytes, timestamp: str, nonce: str) -> Inbound:
        cfg = self.cfg
        encrypted = q.get("encrypt_type", "raw").lower() == "aes"
        if cfg.encrypt_mode == "safe" and not encrypted:
            raise Refused(400, "not_encrypted", "this endpoint takes encrypted messages only (safe mode)")
        if encrypted and cfg.encrypt_mode == "plain":
            raise Refused(400, "not_configured", "encrypted message but wechat.encrypt_mode is plain")
        if not body.strip():
            raise Refused(400, "empty", "empty body")
        if _FORBIDDEN_XML.search(body):
            raise Refused(400, "entity", "DOCTYPE and entities are not accepted")

        xml: bytes | str = self._decrypt(body, timestamp, nonce, q.get("msg_signature", "")) if encrypted else body
        try:
            message = parse_inner(xml)
        except Exception:  # expat errors, a missing MsgType, a non-element root...
            raise Refused(400, "bad_xml", "unreadable XML") from None
        if not message.source:
            raise Refused(400, "bad_xml", "no FromUserName")
        return Inbound(message, dedupe_key_of(message), encrypted, nonce)

    def _check_query_signature(self, q: Mapping[str, str], *, fresh: bool = True) -> tuple[str, str]:
        sig, timestamp, nonce = q.get("signature", ""), q.get("timestamp", ""), q.get("nonce", "")
        if not (sig and timestamp and nonce):
            raise Refused(400, "missing_params", "signature, timestamp and nonce are required")
        if len(timestamp) > 12 or len(nonce) > 64 or len(sig) > 64:
            raise Refused(400, "bad_params", "bad query parameters")
        try:
            ts = int(timestamp)
        except ValueError:
            raise Refused(400, "bad_params", "bad timestamp") from None
        if fresh and abs(time.time() - ts) > self.cfg.timestamp_window:
            raise Refused(403, "stale", "timestamp outside the allowed window")
        if not signature_matches(signature(self.cfg.token, timestamp, nonce), sig):
            raise Refused(403, "bad_signature", "bad signature")
        return timestamp, nonce

    def _decrypt(self, body: bytes, timestamp: str, nonce: str, msg_signature: str) -> str:
        if self.cipher is None:
            raise Refused(400, "not_configured", "encrypted message but no wechat.aes_key configured")
        if not msg_signature:
            raise Refused(403, "bad_signature", "msg_signature is required")
        envelope = _SAFE_BODY.fullmatch(body)
        if envelope is not None:
            encrypt: Any = envelope.group(1).decode("ascii")
        else:
            try:
                outer = _flat_dict(body)
                encrypt = outer["Encrypt"] if outer is not None else _nested_encrypt(body)
            except Exception:
                raise Refused(400, "bad_xml", "unreadable XML") from None
        if not isinstance(encrypt, str) or not encrypt:
            raise Refused(400, "bad_xml", "no Encrypt element")
        if not signature_matches(signature(self.cfg.token, timestamp, nonce, encrypt), msg_signature):
            raise Refused(403, "bad_signature", "bad msg_signature")
        try:
            text = self.cipher.decrypt(encrypt).decode("utf-8")
        except (CipherError, UnicodeDecodeError):  # bad padding, base64, or another app's message
            raise Refused(400, "bad_cipher", "cannot decrypt") from None
        if _FORBIDDEN_TEXT.search(text):
            raise Refused(400, "entity", "DOCTYPE and entities are not accepted")
        return text

    def _encrypt(self, xml: str, nonce: str) -> str:
        """``WeChatCrypto.encrypt_message``: the XML encrypted (:mod:`bot.wechat.aes`) and signed, in
        wechatpy's envelope; ``tests/test_callback_parse.py`` decrypts ours with wechatpy."""
        assert self.cipher is not None
        encrypt = self.cipher.encrypt(xml.encode("utf-8"))
        timestamp = str(int(time.time()))
        return _REPLY_ENVELOPE.format(encrypt, signature(self.cfg.token, timestamp, nonce, encrypt), timestamp, nonce)

    def _refuse(self, exc: Refused) -> Answer:
        _outcome(exc.outcome)
        return exc.status, TEXT, exc.reason.encode("utf-8")


def _nested_encrypt(body: bytes) -> Any:
    """Encrypt of an envelope that is not flat (xmltodict's reading: it must be the root's one child of that name)."""
    import xmltodict

    return xmltodict.parse(body)["xml"]["Encrypt"]
