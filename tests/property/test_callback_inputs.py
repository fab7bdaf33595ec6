"""The callback at /wechat against ≥ 10,000 generated requests (hypothesis).

Random bytes and query strings, XML-ish documents, valid safe-mode envelopes with one field
mutated, huge and empty values, unicode, DOCTYPE/ENTITY attempts, wrong signatures, valid signatures
over garbage, and valid signed messages of every kind. For each:

- never a 5xx, never a traceback in the body;
- a refusal (4xx) stores nothing: Redis' key count and its write counter do not move;
- a valid signed message always gets a 200; a request with a broken signature never does.

The app runs in-process (aiohttp test server on one event loop) against the real Redis.
"""

from __future__ import annotations

import asyncio
import base64
import string
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from store_footprint import footprint
from wechatpy.crypto import PrpCrypto
from yarl import URL

from bot.app import create_app
from bot.config import Config, WeChatConfig
from bot.store.redis import connect
from bot.wechat.emulator import follower
from bot.wechat.protocol import signature

EXAMPLES = 10_000
ACCOUNT = "gh_safebell_fuzz"
OPENIDS = [f"oFuzzParent{i:017d}" for i in range(8)]  # a few repeat: locks, dedupe, conversations


@dataclass(frozen=True)
class Case:
    kind: str
    method: str
    query: tuple[tuple[str, str], ...] | str  # pairs, or a raw (already encoded) query string
    body: bytes
    must: str  # "ok": 200; "refused": 4xx; "any": whichever, but never a 5xx


# -- text WeChat can carry --------------------------------------------------------------------------
_XML_BAD = "".join(chr(c) for c in [*range(0, 9), 11, 12, *range(14, 32)]) + "\ufffe\uffff"
xml_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters=_XML_BAD), max_size=200)
any_text = st.text(max_size=200)
tag = st.text(string.ascii_letters + "_", min_size=1, max_size=12)


class _Prp(PrpCrypto):  # type: ignore[misc]
    """wechatpy's AES, with the 16 random bytes fixed: strategies must not use the random module."""

    def get_random_string(self) -> str:
        return "0123456789abcdef"


def prp(cfg: WeChatConfig) -> PrpCrypto:
    return _Prp(base64.b64decode(cfg.aes_key + "="))


def signed_query(cfg: WeChatConfig, encrypt: str | None, **over: str) -> dict[str, str]:
    ts, nonce = over.pop("timestamp", str(int(time.time()))), over.pop("nonce", "n0nce")
    q = {"signature": signature(cfg.token, ts, nonce), "timestamp": ts, "nonce": nonce, "openid": OPENIDS[0]}
    if encrypt is not None:
        q.update(encrypt_type="aes", msg_signature=signature(cfg.token, ts, nonce, encrypt))
    q.update(over)
    return q


def envelope(encrypt: str, to: str = ACCOUNT) -> bytes:
    return f"<xml><ToUserName><![CDATA[{to}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>".encode()


def sealed(
    cfg: WeChatConfig, plaintext: str | bytes, app_id: str | None = None, nonce: str = "n0nce"
) -> tuple[dict[str, str], bytes]:
    """A correctly encrypted and signed safe-mode request around any plaintext (as WeChat sends it)."""
    encrypt = prp(cfg).encrypt(plaintext, app_id or cfg.app_id).decode("ascii")
    return signed_query(cfg, encrypt, nonce=nonce), envelope(encrypt)


# -- valid messages -------------------------------------------------------------------------------------
openids = st.sampled_from(OPENIDS) | st.text(string.ascii_letters + string.digits + "_-", min_size=27,
                                               max_size=27).map(lambda s: "o" + s)  # fmt: skip
msg_ids = st.integers(1, 2**63 - 1) | st.sampled_from([1, 2, 3])  # small ids repeat: WeChat's retries
commands = ["确认", "帮助", "绑定", "解绑", "取消", "1", "A", "选B", "未确认", "发通知", "通知"]
words = st.sampled_from(commands) | xml_text
events = st.sampled_from(["subscribe", "unsubscribe", "SCAN", "CLICK", "VIEW", "LOCATION", "TEMPLATESENDJOBFINISH",
                          "unknown_event"]) | tag  # fmt: skip
event_keys = st.none() | st.sampled_from(["qrscene_bind:ABC123", "bind:ZZZ999", "HELP", "NOTICES"]) | xml_text
kinds = st.sampled_from(["text", "text", "text", "event", "image", "voice", "location", "link", "other"])


@st.composite
def valid_message(draw: st.DrawFn) -> str:
    openid, msg_id, created = draw(openids), draw(msg_ids), draw(st.integers(0, 2**31 - 1))
    kind = draw(kinds)
    m = follower
    if kind == "text":
        return m.text_message(ACCOUNT, openid, draw(words), msg_id=msg_id, create_time=created)
    if kind == "event":
        return m.event_message(ACCOUNT, openid, draw(events), draw(event_keys), create_time=created)
    if kind == "image":
        return m.image_message(ACCOUNT, openid, draw(xml_text), draw(xml_text), msg_id=msg_id)
    if kind == "voice":
        fields = {"MediaId": draw(xml_text), "Format": "amr", "Recognition": draw(xml_text)}
        return m.message(ACCOUNT, openid, "voice", fields, msg_id=msg_id)
    if kind == "location":
        lat, lon = draw(st.floats(-90, 90)), draw(st.floats(-180, 180))
        fields = {"Location_X": lat, "Location_Y": lon, "Scale": 15, "Label": draw(xml_text)}
        return m.message(ACCOUNT, openid, "location", fields, msg_id=msg_id)
    if kind == "link":
        fields = {"Title": draw(xml_text), "Description": draw(xml_text), "Url": draw(xml_text)}
        return m.message(ACCOUNT, openid, "link", fields, msg_id=msg_id)
    return m.message(ACCOUNT, openid, draw(tag), {"Whatever": draw(xml_text)}, msg_id=msg_id)


# -- requests ------------------------------------------------------------------------------------------
QUERY_NAMES = ["signature", "timestamp", "nonce", "openid", "encrypt_type", "msg_signature", "echostr"]
raw_query_chars = string.ascii_letters + string.digits + "-._~%&=;+/?:@!$'()*,"


nonces = st.text(string.ascii_letters + string.digits, min_size=1, max_size=16)


def flip(s: str, at: int) -> str:
    if not s:
        return "x"
    i = at % len(s)
    return s[:i] + ("A" if s[i] != "A" else "B") + s[i + 1 :]


def cases(cfg: Config) -> st.SearchStrategy[Case]:
    w = cfg.wechat
    limit = w.body_limit

    names = st.sampled_from(QUERY_NAMES) | any_text

    @st.composite
    def random_request(draw: st.DrawFn) -> Case:
        query = draw(st.lists(st.tuples(names, any_text), max_size=8))
        if draw(st.booleans()):
            raw: tuple[tuple[str, str], ...] | str = draw(st.text(raw_query_chars, max_size=200))
        else:
            raw = tuple(query)
        body = draw(st.binary(max_size=2000))
        return Case("random", draw(st.sampled_from(["POST", "POST", "GET"])), raw, body, "any")

    leaf = st.builds(lambda t, v: f"<{t}>{v}</{t}>", tag, xml_text)
    cdata = st.builds(lambda t, v: f"<{t}><![CDATA[{v}]]></{t}>", tag, any_text)
    broken = st.sampled_from(["<xml>", "</xml>", "<![CDATA[", "]]>", "<a", "&amp;", "&#0;", "&x;", "<?xml?>", "<b/>"])
    element = st.recursive(
        leaf | cdata | broken | any_text,
        lambda kids: st.builds(lambda t, ks: f"<{t}>{''.join(ks)}</{t}>", tag, st.lists(kids, max_size=4)),
        max_leaves=10,
    )
    xmlish_docs = st.builds(lambda ks, end: "<xml>" + "".join(ks) + end, st.lists(element, max_size=8),
                            st.sampled_from(["</xml>", ""]))  # fmt: skip

    @st.composite
    def xmlish_body(draw: st.DrawFn) -> Case:
        doc = draw(xmlish_docs)
        how = draw(st.sampled_from(["outer", "sealed", "sealed_no_sig"]))
        if how == "outer":  # the XML-ish document as the envelope, with a valid query signature
            return Case("xmlish_outer", "POST", tuple(signed_query(w, "x").items()), doc.encode(), "any")
        q, body = sealed(w, doc)
        if how == "sealed_no_sig":
            q["msg_signature"] = "0" * 40
            return Case("xmlish_bad_sig", "POST", tuple(q.items()), body, "refused")
        return Case("xmlish_sealed", "POST", tuple(q.items()), body, "any")  # valid signature over garbage

    @st.composite
    def valid(draw: st.DrawFn) -> Case:
        q, body = sealed(w, draw(valid_message()), nonce=draw(nonces))
        return Case("valid", "POST", tuple(q.items()), body, "ok")

    @st.composite
    def mutated(draw: st.DrawFn) -> Case:
        q, body = sealed(w, draw(valid_message()), nonce=draw(nonces))
        encrypt = body.split(b"<Encrypt><![CDATA[")[1].split(b"]]>")[0].decode()
        what = draw(st.sampled_from(["signature", "msg_signature", "nonce", "timestamp_stale", "timestamp_future",
                                     "timestamp_junk", "drop", "encrypt_garbage", "encrypt_truncated", "other_app",
                                     "body_truncated", "doctype_outer", "encrypt_type", "extra_param", "openid_param",
                                     "to_user"]))  # fmt: skip
        at = draw(st.integers(0, 10_000))
        must = "refused"
        if what in ("signature", "msg_signature", "nonce"):
            q[what] = flip(q[what], at)
        elif what.startswith("timestamp"):
            junk = st.sampled_from(["", "-1", "1e9", "９９", " 1", "0x10", "9" * 13]) | any_text
            ts = {"timestamp_stale": str(int(time.time()) - w.timestamp_window - 60 - at),
                  "timestamp_future": str(int(time.time()) + w.timestamp_window + 60 + at),
                  "timestamp_junk": draw(junk)}[what]  # fmt: skip
            q = signed_query(w, encrypt, timestamp=ts, nonce=q["nonce"])
        elif what == "drop":
            q.pop(draw(st.sampled_from(["signature", "timestamp", "nonce", "msg_signature", "encrypt_type"])))
        elif what in ("encrypt_garbage", "encrypt_truncated"):  # a valid msg_signature over a broken Encrypt
            bad = draw(st.text(string.ascii_letters + string.digits + "+/=", max_size=400))
            bad = bad if what == "encrypt_garbage" else encrypt[: at % max(1, len(encrypt))]
            q, body = signed_query(w, bad or "A"), envelope(bad or "A")
        elif what == "other_app":
            q, body = sealed(w, follower.text_message(ACCOUNT, OPENIDS[1], "确认", msg_id=1), app_id="wxother000000000")
        elif what == "body_truncated":
            body = body[: at % len(body)]
        elif what == "doctype_outer":
            body = b'<!DOCTYPE xml [<!ENTITY e "x">]>' + body
        elif what == "encrypt_type":
            q["encrypt_type"] = draw(st.sampled_from(["raw", "AES", "Aes", "", "aes "]))
            must = "any"
        elif what == "extra_param":
            q[draw(any_text)] = draw(any_text)
            must = "any"
        elif what == "openid_param":
            q["openid"] = draw(any_text)
            must = "any"
        else:
            body = envelope(encrypt, draw(xml_text))
            must = "any"
        return Case(f"mutated_{what}", "POST", tuple(q.items()), body, must)

    @st.composite
    def entities(draw: st.DrawFn) -> Case:
        attacks = [
            '<!DOCTYPE xml [<!ENTITY x SYSTEM "file:///etc/passwd">]><xml><FromUserName>&x;</FromUserName></xml>',
            '<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]><xml><C>&lol2;</C></xml>',
            "<!doctype xml><xml><FromUserName>o</FromUserName><MsgType>text</MsgType></xml>",
            "<! ENTITY % p SYSTEM 'http://evil/'>%p;<xml/>",
            '<?xml version="1.0"?><!DOCTYPE x PUBLIC "-//x" "http://evil/x.dtd"><xml/>',
        ]
        doc = draw(st.sampled_from(attacks))
        inner = follower.text_message(ACCOUNT, OPENIDS[2], "确认", msg_id=2)
        doc = draw(st.sampled_from([doc, doc.replace("<xml>", inner[:5], 1), doc + inner]))
        q, body = sealed(w, doc)
        return Case("entity_sealed", "POST", tuple(q.items()), body, "refused")

    @st.composite
    def sizes(draw: st.DrawFn) -> Case:
        what = draw(st.sampled_from(["empty", "blank", "over_limit", "at_limit", "huge_query", "huge_plain"]))
        q = signed_query(w, "x")
        if what == "empty":
            return Case("size_empty", "POST", tuple(q.items()), b"", "refused")
        if what == "blank":
            return Case("size_blank", "POST", tuple(q.items()), b" \r\n\t" * draw(st.integers(1, 50)), "refused")
        if what == "over_limit":
            fill = draw(st.sampled_from([b"A", b"<", b"\x00", "确".encode()]))
            body = fill * (limit + 1 + draw(st.integers(0, 5000)))
            return Case("size_over", "POST", tuple(q.items()), body, "refused")
        if what == "at_limit":
            return Case("size_at", "POST", tuple(q.items()), b"<xml>" + b"a" * (limit - 11) + b"</xml>", "refused")
        if what == "huge_query":
            name = draw(st.sampled_from(["signature", "timestamp", "nonce", "msg_signature"]))
            q[name] = draw(st.sampled_from(["9", "a", "确"])) * draw(st.integers(65, 4000))
            return Case("size_query", "POST", tuple(q.items()), envelope("A"), "refused")
        inner = follower.text_message(ACCOUNT, OPENIDS[3], "确" * draw(st.integers(limit // 4, limit)), msg_id=3)
        q, body = sealed(w, inner)
        return Case("size_big_message", "POST", tuple(q.items()), body, "refused" if len(body) > limit else "any")

    @st.composite
    def garbage_sealed(draw: st.DrawFn) -> Case:  # valid signatures over decryptable garbage
        plain = draw(st.binary(max_size=500) | any_text | st.sampled_from(["", "<xml/>", "<xml></xml>", "<x/>",
                     "<xml><MsgType>text</MsgType></xml>", "<xml><FromUserName/></xml>"]))  # fmt: skip
        q, body = sealed(w, plain)
        return Case("garbage_sealed", "POST", tuple(q.items()), body, "any")

    @st.composite
    def verification(draw: st.DrawFn) -> Case:
        echo = draw(st.text(string.ascii_letters + string.digits, max_size=40))
        q = signed_query(w, None, echostr=echo)
        if draw(st.booleans()):
            q["signature"] = flip(q["signature"], draw(st.integers(0, 100)))
            return Case("verify_bad", "GET", tuple(q.items()), b"", "refused")
        return Case("verify", "GET", tuple(q.items()), b"", "ok")

    return st.one_of(random_request(), xmlish_body(), valid(), valid(), mutated(), mutated(), entities(), sizes(),
                     garbage_sealed(), verification())  # fmt: skip


def test_the_callback_never_fails_on_10000_generated_requests_and_refusals_store_nothing(
    config: Config, redis_url: str, figures: Any
) -> None:
    config.wechat.dedupe_ttl = 3600  # nothing expires while the test runs: key counts stay comparable
    config.chat.state_ttl = 3600
    loop = asyncio.new_event_loop()
    r = connect(redis_url)
    client: TestClient[Any, Any] = TestClient(TestServer(create_app(config, r)), loop=loop)
    seen: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    last: list[tuple[int, int]] = []  # the footprint after the previous refusal (still current)

    async def one(case: Case) -> None:
        before = last.pop() if last else await footprint(r)
        if isinstance(case.query, str):
            url = URL(str(client.make_url("/wechat")) + ("?" + case.query if case.query else ""), encoded=True)
            resp = await client.session.request(case.method, url, data=case.body)
        else:
            resp = await client.request(case.method, "/wechat", params=list(case.query), data=case.body)
        async with resp:
            text = await resp.text(errors="replace")
            status = resp.status
        statuses[status] += 1
        seen[case.kind] += 1
        assert status < 500, (case.kind, status, text[:300])
        assert "Traceback" not in text and 'File "' not in text, (case.kind, text[:300])
        if case.must == "ok":
            assert status == 200, (case.kind, status, text[:200])
        if case.must == "refused":
            assert 400 <= status < 500, (case.kind, status, text[:200])
        if 400 <= status < 500:
            assert len(text) < 200, text
            after = await footprint(r)
            assert after[0] == before[0], f"{case.kind}: a refused request added keys"
            assert after[1] <= before[1], f"{case.kind}: a refused request wrote to Redis"
            last.append(after)

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=cases(config))
    def run(case: Case) -> None:
        loop.run_until_complete(one(case))

    started = time.monotonic()
    try:
        loop.run_until_complete(client.start_server())
        loop.run_until_complete(r.flushdb())
        run()
    finally:
        loop.run_until_complete(client.close())
        loop.run_until_complete(r.aclose())
        loop.close()
    total = sum(seen.values())
    by_class = {f"{k // 100}xx": sum(n for s, n in statuses.items() if s // 100 == k // 100) for k in (200, 400)}
    figures(
        f"callback: {total} generated requests in {time.monotonic() - started:.0f} s, "
        f"{by_class} (5xx: {sum(n for s, n in statuses.items() if s >= 500)}); valid signed messages "
        f"{seen['valid']} all 200; kinds {dict(sorted(seen.items()))}"
    )
    assert total >= EXAMPLES
