"""bot.wechat.aes against wechatpy's PrpCrypto: the same scheme both ways, over many messages in a
row (the contexts live across messages), and a clear refusal for what is not this account's."""

from __future__ import annotations

import base64
import random

import pytest
from wechatpy.crypto import PrpCrypto

from bot.wechat.aes import CipherError, MessageCipher

KEY = bytes(range(1, 33))
APP_ID = "wx1234567890abcdef"


def _texts(n: int, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    alphabet = "abc平安铃<>&]]\n 溺水防范"
    return [
        "".join(
            rng.choice(alphabet) for _ in range(rng.choice((0, 1, 15, 16, 17, 31, 32, 33, rng.randrange(600))))
        ).encode("utf-8")
        for _ in range(n)
    ]


def test_ours_and_wechatpys_read_each_others_messages_many_in_a_row() -> None:
    ours, theirs = MessageCipher(KEY, APP_ID), PrpCrypto(KEY)
    for i, xml in enumerate(_texts(400)):
        sealed = ours.encrypt(xml)
        assert theirs.decrypt(sealed, APP_ID).encode("utf-8") == xml
        assert ours.decrypt(sealed) == xml
        theirs_sealed = theirs.encrypt(xml.decode("utf-8"), APP_ID).decode("ascii")
        assert ours.decrypt(theirs_sealed) == xml
        if i % 7 == 0:  # a refused message in between leaves both contexts right
            with pytest.raises(CipherError):
                ours.decrypt(theirs_sealed[:-8])


def test_each_reply_starts_afresh_from_the_iv() -> None:
    """Equal messages give unrelated cipher texts (16 random characters first), each of which a
    fresh context decrypts alone."""
    ours = MessageCipher(KEY, APP_ID)
    a, b = ours.encrypt(b"<xml/>"), ours.encrypt(b"<xml/>")
    assert a != b
    for sealed in (b, a):
        assert MessageCipher(KEY, APP_ID).decrypt(sealed) == b"<xml/>"


def _raw(plain: bytes) -> str:
    """``plain`` encrypted as it is (no layout, no padding added): for malformed messages."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    encryptor = Cipher(algorithms.AES(KEY), modes.CBC(KEY[:16])).encryptor()
    return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode("ascii")


def test_a_hand_made_message_is_read_when_well_formed() -> None:
    """The malformed cases below differ from this one only where their comment says."""
    well_formed = b"r" * 16 + (6).to_bytes(4, "big") + b"<xml/>" + APP_ID.encode() + bytes((4,)) * 4
    assert MessageCipher(KEY, APP_ID).decrypt(_raw(well_formed)) == b"<xml/>"


@pytest.mark.parametrize(
    "encrypt",
    [
        "",
        "not base64 at all!",
        base64.b64encode(b"x" * 40).decode(),  # not whole blocks
        PrpCrypto(KEY).encrypt("<xml/>", "wx-another-account").decode(),
        PrpCrypto(bytes(32)).encrypt("<xml/>", APP_ID).decode(),  # another key
        _raw(b"r" * 16 + (9999).to_bytes(4, "big") + b"<xml/>" + APP_ID.encode() + bytes((4,)) * 4),  # length too long
        _raw(b"r" * 16 + (6).to_bytes(4, "big") + b"<xml/>" + APP_ID.encode() + bytes(4)),  # padding 0
        _raw(b"r" * 16 + (6).to_bytes(4, "big") + b"<xml/>" + APP_ID.encode() + bytes((33,)) * 4),  # padding > 32
    ],
)
def test_what_is_not_this_accounts_message_is_refused(encrypt: str) -> None:
    ours = MessageCipher(KEY, APP_ID)
    with pytest.raises(CipherError):
        ours.decrypt(encrypt)
    assert ours.decrypt(ours.encrypt(b"<xml>ok</xml>")) == b"<xml>ok</xml>"


def test_a_key_of_the_wrong_size_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        MessageCipher(KEY[:16], APP_ID)
