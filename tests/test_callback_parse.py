"""The callback's fast paths give exactly what wechatpy gives: parsing, text replies, encryption."""

from __future__ import annotations

import random
import time
import xml.parsers.expat
from typing import Any

import pytest
from wechatpy import parse_message
from wechatpy.crypto import WeChatCrypto
from wechatpy.replies import TextReply

from bot.chat.engine import escape_cdata, render_reply
from bot.config import Config
from bot.wechat.callback import WeChatCallback, _flat_dict, parse_inner
from bot.wechat.emulator import follower

A, P = "gh_safebell_test", "oTestParent000000000000000001"  # account, parent
ev = follower.event_message

DOCUMENTS = [
    follower.text_message(A, P, "你好"),
    follower.text_message(A, P, "  帮助　\n"),
    follower.text_message(A, P, "a]]>b <tag> & &amp; ]] ]"),
    follower.text_message(A, P, ""),
    follower.image_message(A, P, "http://x/y.jpg", "media1"),
    follower.voice_message(A, P, "m", recognition="确认"),
    follower.location_message(A, P, 30.5, 114.3, "武汉"),
    follower.link_message(A, P, "标题", "描述", "http://example.com/?a=1&b=2"),
    follower.message(A, P, "miniprogrampage", {"Title": "x"}),
    ev(A, P, "subscribe"),
    ev(A, P, "subscribe", "qrscene_class-1", ticket="T"),
    ev(A, P, "subscribe", "scanbarcode|EAN_13|6901234567892"),
    ev(A, P, "SCAN", "class-1", ticket="T"),
    ev(A, P, "CLICK", "HELP"),
    ev(A, P, "VIEW", "http://example.com/menu"),
    ev(A, P, "LOCATION", extra={"Latitude": 30.5, "Longitude": 114.3, "Precision": 20}),
    follower.template_finish_event(A, P, 12345, "failed: system failed"),
    ev(A, P, "some_future_event", "k"),
    # shapes the fast parser hands to xmltodict
    "<xml><ToUserName>a</ToUserName><FromUserName>o</FromUserName><MsgType>event</MsgType><Event>scancode_push"
    "</Event><ScanCodeInfo><ScanType>qrcode</ScanType><ScanResult>1</ScanResult></ScanCodeInfo></xml>",
    "<xml><FromUserName>o</FromUserName><MsgType>text</MsgType><Content>x&amp;y</Content></xml>",
    "<xml><FromUserName>o</FromUserName><MsgType>text</MsgType><Content><![CDATA[a]]]]><![CDATA[>b]]></Content></xml>",
    "<xml><FromUserName>o</FromUserName><MsgType>text</MsgType><Content>a<![CDATA[b]]>c</Content></xml>",
    "<xml><FromUserName>o</FromUserName><MsgType>text</MsgType><Content>line\r\nnext</Content></xml>",
    "<xml><FromUserName>o</FromUserName><MsgType>text</MsgType><Content>1</Content><Content>2</Content></xml>",
    '<xml><FromUserName a="1">o</FromUserName><MsgType>text</MsgType></xml>',
    '<?xml version="1.0" encoding="utf-8"?><xml><FromUserName>o</FromUserName><MsgType>text</MsgType></xml>',
    "<xml>\n  <FromUserName>o</FromUserName>\n  <MsgType>TEXT</MsgType>\n  <Content>  </Content>\n</xml>\n",
    "<xml>stray<FromUserName>o</FromUserName><MsgType>text</MsgType></xml>",
    "<xml><x:FromUserName>o</x:FromUserName><MsgType>text</MsgType></xml>",
    "<xml><FromUserName>o</FromUserName><MsgType>device_text</MsgType></xml>",
]


def _wechatpy(xml: str) -> Any:
    try:
        message = parse_message(xml)
    except Exception as exc:
        return type(exc)
    return type(message), message._data


def _ours(xml: str) -> Any:
    try:
        message = parse_inner(xml)
    except Exception as exc:
        return type(exc)
    return type(message), message._data


@pytest.mark.parametrize("xml", DOCUMENTS, ids=range(len(DOCUMENTS)))
def test_the_fast_parser_gives_the_class_and_fields_wechatpy_gives(xml: str) -> None:
    assert _ours(xml) == _wechatpy(xml)


def test_the_fast_parser_agrees_with_wechatpy_on_random_texts() -> None:
    rng = random.Random(8)
    alphabet = "ab 确认帮助\t\n\r]]><>&;!?　\u3000\x01\ufeff" + "".join(chr(c) for c in range(0x20, 0x7F))
    fast = 0
    for _ in range(3000):
        content = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        xml = follower.text_message(A, P, content, msg_id=rng.randint(1, 10**17))
        if rng.random() < 0.2:  # some with the spacing WeChat's docs show
            xml = xml.replace("><", ">\n<")
        ours, theirs = _ours(xml), _wechatpy(xml)
        if isinstance(theirs, type):  # xmltodict refused it (a control character): so must we
            assert ours is theirs or issubclass(ours, (ValueError, xml_errors()))
            continue
        assert ours == theirs, repr(content)
        fast += _flat_dict(xml) is not None
    assert fast > 1500  # most took the fast path (\r and control characters do not)


def xml_errors() -> type[Exception]:
    return xml.parsers.expat.ExpatError


def test_a_text_reply_is_character_for_character_wechatpys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.7)
    message = parse_message(follower.text_message(A, P, "你好"))
    for content in ("抱歉，我没看懂", "a]]>b", "<b>&amp;</b>", "两行\n文字", ""):
        expected = TextReply(message=message, content=escape_cdata(content)).render() if content else ""
        assert render_reply(content, message) == expected


def test_an_encrypted_reply_is_wechatpys_envelope_and_wechatpy_decrypts_it(config: Config) -> None:
    w = config.wechat
    callback = WeChatCallback(w, None, None)  # type: ignore[arg-type]
    crypto = WeChatCrypto(w.token, w.aes_key, w.app_id)
    plain = render_reply("收到，谢谢！" * 40, parse_message(follower.text_message(A, P, "x")))
    ours = callback._encrypt(plain, "1234567890")
    theirs = crypto.encrypt_message(plain, "1234567890")
    import re

    shape = re.compile(r"<xml>\n<Encrypt><!\[CDATA\[[A-Za-z0-9+/=]+\]\]></Encrypt>\n"
                       r"<MsgSignature><!\[CDATA\[[0-9a-f]{40}\]\]></MsgSignature>\n<TimeStamp>\d+</TimeStamp>\n"
                       r"<Nonce><!\[CDATA\[1234567890\]\]></Nonce>\n</xml>")  # fmt: skip
    assert shape.fullmatch(ours) and shape.fullmatch(theirs)
    assert follower.read_reply(w, ours.encode()) == plain  # checks MsgSignature, then decrypts
    doc = follower._field  # the emulator's own reader of single fields
    assert crypto.decrypt_message(ours, doc(ours, "MsgSignature"), doc(ours, "TimeStamp"), "1234567890") == plain
