"""The two bots the ``webhook`` benchmark compares ``bot serve`` with, each run as its own process.

- :mod:`.aiohttp_echo`: what a developer would write first with aiohttp and wechatpy: check the
  signature, decrypt, parse, reply with the same text, encrypt. No Redis, no dedupe, no state.
- :mod:`.werobot_echo`: a WeRoBot echo bot (the framework most would pick) under gunicorn with one
  sync worker; WeRoBot and gunicorn come from the ``bench`` extra (``pip install -e '.[bench]'``).

Both read the account from the environment (``SB_ECHO_TOKEN``, ``SB_ECHO_AES_KEY``, ``SB_ECHO_APP_ID``)
so the benchmark starts them with the same account and the same messages as ``bot serve``.
"""

from __future__ import annotations

import os

TOKEN_VAR, AES_KEY_VAR, APP_ID_VAR = "SB_ECHO_TOKEN", "SB_ECHO_AES_KEY", "SB_ECHO_APP_ID"


def account() -> tuple[str, str, str]:
    """(token, EncodingAESKey, app_id) from the environment."""
    return os.environ[TOKEN_VAR], os.environ[AES_KEY_VAR], os.environ[APP_ID_VAR]


def account_env(token: str, aes_key: str, app_id: str) -> dict[str, str]:
    return {TOKEN_VAR: token, AES_KEY_VAR: aes_key, APP_ID_VAR: app_id}
