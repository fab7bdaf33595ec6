"""WeChat's message encryption (safe mode), with the AES contexts made once per process.

The scheme (WeChat's, and wechatpy's ``PrpCrypto``): AES-256-CBC with the IV fixed to the key's
first 16 bytes, over 16 random characters, the XML's length (4 bytes, network order), the XML and the
app id, PKCS#7-padded to 32 bytes; base64.

wechatpy builds a new ``Cipher`` context for every message (~2.5 µs each way) and converts types
several times; per callback that is one decryption and one encryption. Here the contexts live as
long as the process, which CBC allows with a little care:

- decryption: CBC decryption is ``P[i] = D(C[i]) xor C[i-1]`` (``C[-1]`` = IV). A long-lived
  context xors a message's first block with the previous message's last block instead of the IV,
  so only that block comes out different, and it is the 16 random characters, which nobody reads.
  Every later block depends only on the message's own cipher text.
- encryption: a CBC context carries its last cipher block into the next ``update()``. To start a
  message from the IV instead, its first plain block is xor-ed with ``IV xor last block`` (then the
  context computes ``E(P[0] xor IV)``, exactly a fresh context's first block).

Every ``update()`` gets whole blocks (a length that is not a multiple of 16 is refused before), so
a context never holds a partial block over to the next message. ``tests/test_wechat_aes.py``
checks both directions against wechatpy's ``PrpCrypto`` over many messages in a row.
"""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from bot.entropy import random_bytes


class CipherError(ValueError):
    """Not a message for this account: bad base64, bad length or padding, or another app id."""


def _xor(a: bytes, b: bytes) -> bytes:
    n = len(a)
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(n, "big")


class MessageCipher:
    """Encrypt and decrypt one account's messages (``encoding_aes_key`` decoded: 32 bytes)."""

    def __init__(self, key: bytes, app_id: str) -> None:
        if len(key) != 32:
            raise ValueError("the AES key must be 32 bytes (EncodingAESKey is 43 base64 characters)")
        self._iv = key[:16]
        self._app_id = app_id.encode("utf-8")
        self._decrypt_chain = Cipher(algorithms.AES(key), modes.CBC(self._iv)).decryptor()
        self._encrypt_chain = Cipher(algorithms.AES(key), modes.CBC(self._iv)).encryptor()
        self._last = self._iv  # the encryption context's carried block
        self._key = key

    def decrypt(self, encrypt: str) -> bytes:
        """The XML (bytes) in a callback's ``Encrypt``; raises :class:`CipherError`."""
        try:
            raw = base64.b64decode(encrypt)
        except ValueError:
            raise CipherError("not base64") from None
        n = len(raw)
        if n < 32 or n % 16:
            raise CipherError("not whole AES blocks")
        plain = self._decrypt_chain.update(raw)  # plain[:16] is not the random prefix: not read
        pad = plain[-1]
        if not 1 <= pad <= 32:
            raise CipherError("bad padding")
        length = int.from_bytes(plain[16:20], "big")
        end = 20 + length
        if end > n - pad or plain[end : n - pad] != self._app_id:
            raise CipherError("another account's message")
        return plain[20:end]

    def encrypt(self, xml: bytes) -> str:
        """``Encrypt`` for a reply: base64 of the encrypted, padded message."""
        plain = b"".join((base64.b64encode(random_bytes(12)), len(xml).to_bytes(4, "big"), xml, self._app_id))
        pad = 32 - len(plain) % 32
        plain += bytes((pad,)) * pad
        first = _xor(plain[:16], _xor(self._iv, self._last))
        try:
            out = self._encrypt_chain.update(first + plain[16:])
        except BaseException:  # never seen; a context in an unknown state is not used again
            self._encrypt_chain = Cipher(algorithms.AES(self._key), modes.CBC(self._iv)).encryptor()
            self._last = self._iv
            raise
        self._last = out[-16:]
        return base64.b64encode(out).decode("ascii")
