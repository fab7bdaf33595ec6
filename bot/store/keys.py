"""Every Redis key name SafeBell uses, in one place.

Keys that are used together in one command or script share a hash tag (the part in braces), so the
same code runs on Redis Cluster: per user (``{u:<openid>}``), per WeChat app (``{wx:<appid>}``).
Later capabilities add their keys here, never inline.
"""

from __future__ import annotations

PREFIX = "sb"


# -- per user (one WeChat follower): conversation state, its lock, retry dedupe ---------------
def user_tag(openid: str) -> str:
    return f"{PREFIX}:{{u:{openid}}}"


def chat_state(openid: str) -> str:
    """JSON ``{"s": state | null, "d": {...}}``: the conversation state and its data, one key so one read."""
    return f"{user_tag(openid)}:st"


def chat_lock(openid: str) -> str:
    return f"{user_tag(openid)}:lk"


def dedupe(openid: str, msg_key: str) -> str:
    """The first answer to a callback, kept for WeChat's retries (MsgId or CreateTime+event)."""
    return f"{user_tag(openid)}:dd:{msg_key}"


def cs_window(openid: str) -> str:
    """When the user last wrote to us / last sent an event: gates customer-service messages."""
    return f"{user_tag(openid)}:cs"


# -- per WeChat app: the shared access_token ------------------------------------------------
def wx_tag(app_id: str) -> str:
    return f"{PREFIX}:{{wx:{app_id}}}"


def access_token(app_id: str) -> str:
    return f"{wx_tag(app_id)}:token"


def access_token_lock(app_id: str) -> str:
    return f"{wx_tag(app_id)}:token:lock"


def access_token_forced(app_id: str) -> str:
    """Time of the last ``force_refresh``: WeChat allows one per 30 s and 20 a day."""
    return f"{wx_tag(app_id)}:token:forced"


# -- delivery -----------------------------------------------------------------------------
def outbox() -> str:
    """The Redis Stream the workers read through one consumer group."""
    return f"{PREFIX}:outbox"


OUTBOX_GROUP = "workers"


# -- operations ---------------------------------------------------------------------------
def heartbeat(process: str, ident: str) -> str:
    return f"{PREFIX}:hb:{process}:{ident}"
