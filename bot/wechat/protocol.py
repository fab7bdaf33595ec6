"""Small protocol helpers shared by the callback and the emulator's simulated followers."""

from __future__ import annotations

import hashlib
import hmac


def signature(*parts: str) -> str:
    """WeChat's signature: sha1 of the sorted parts joined (token, timestamp, nonce[, Encrypt])."""
    return hashlib.sha1("".join(sorted(parts)).encode("utf-8")).hexdigest()


def signature_matches(expected: str, given: str) -> bool:
    """Constant-time comparison (wechatpy compares with ``!=``)."""
    return hmac.compare_digest(expected.encode("ascii", "replace"), given.encode("ascii", "replace"))


def mask_openid(openid: str) -> str:
    """``oAbC…xyz`` style masking for logs: enough to correlate, not enough to identify."""
    if len(openid) <= 8:
        return "***"
    return f"{openid[:4]}…{openid[-3:]}"
