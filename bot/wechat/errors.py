"""Typed WeChat API errors: one class per errcode a caller must treat differently.

Every class says what the caller should do. :func:`error_for` maps an ``errcode`` to its class;
codes without a class become a plain :class:`WeChatAPIError` (not retryable: report and move on).
"""

from __future__ import annotations


class WeChatError(Exception):
    """Anything that went wrong talking to WeChat's API."""

    #: True when the same call may succeed if simply made again soon: the client retries these
    #: itself (with backoff) before giving up; the others need a decision by the caller.
    retryable: bool = False


class WeChatTransportError(WeChatError):
    """Timeout, connection failure or HTTP 5xx: WeChat may or may not have acted.

    Retry with backoff (the client does, ``wechat.api_retries`` times). For a template send, retry
    with the *same* ``client_msg_id`` so WeChat drops the duplicate if the first one did go out.
    """

    retryable = True

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class WeChatAPIError(WeChatError):
    """WeChat answered with a non-zero ``errcode``. Unknown codes: log them and do not retry."""

    errcode: int
    errmsg: str

    def __init__(self, errcode: int, errmsg: str = "") -> None:
        super().__init__(f"WeChat errcode {errcode}: {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg


class BusyError(WeChatAPIError):
    """-1 system busy: retry after a backoff (the client does); bursts draw it, so pace sends."""

    retryable = True


class TokenInvalidError(WeChatAPIError):
    """40001/40014/42001: the access_token is bad or expired.

    The client refreshes once (compare-and-refresh) and retries; seeing it escape means even the
    fresh token was refused: check ``wechat.app_id``/``app_secret`` and that nothing else refreshes.
    """


class InvalidOpenIDError(WeChatAPIError):
    """40003: the openid is not a follower of this account (wrong app or made up): mark it, never resend."""


class InvalidTemplateError(WeChatAPIError):
    """40037: the template_id is not one of this account's templates: an operator must fix the config."""


class UserUnfollowedError(WeChatAPIError):
    """43004: the user no longer follows the account: stop sending, mark the guardian unreachable."""


class UserRefusedError(WeChatAPIError):
    """43101: the user refused this kind of message (unsubscribed the template): stop, mark refused."""


class DailyQuotaExceededError(WeChatAPIError):
    """45009: the day's quota is used up: hold all sends until the next day (or a quota reset)."""


class MinuteQuotaExceededError(WeChatAPIError):
    """45011: the per-minute quota is used up: pause this API for a minute, then carry on."""


class TooFrequentError(WeChatAPIError):
    """43117: too many messages to this openid too fast: requeue this one later, keep sending others."""


class CSWindowClosedError(WeChatAPIError):
    """45015: no customer-service window (the user has not written recently): use a template or drop."""


class CSQuotaUsedError(WeChatAPIError):
    """45047: the customer-service window's message quota is used: wait for the user to write again."""


class BadTemplateArgumentError(WeChatAPIError):
    """47003: a template field is too long, has a line break or is the wrong kind.

    Fix the data (the full text belongs on the H5 page); never resend the same arguments.
    """


class NotAuthorizedError(WeChatAPIError):
    """48001: the account lacks permission for this API (unverified account?): an operator must act."""


# Codes without their own class still get a typed error; retrying these cannot help.
_BY_CODE: dict[int, type[WeChatAPIError]] = {
    -1: BusyError,
    40001: TokenInvalidError,
    40014: TokenInvalidError,
    42001: TokenInvalidError,
    40003: InvalidOpenIDError,
    40037: InvalidTemplateError,
    43004: UserUnfollowedError,
    43101: UserRefusedError,
    45009: DailyQuotaExceededError,
    45011: MinuteQuotaExceededError,
    43117: TooFrequentError,
    45015: CSWindowClosedError,
    45047: CSQuotaUsedError,
    47003: BadTemplateArgumentError,
    48001: NotAuthorizedError,
}

TOKEN_ERRCODES = frozenset(code for code, cls in _BY_CODE.items() if cls is TokenInvalidError)


def error_for(errcode: int, errmsg: str = "") -> WeChatAPIError:
    """The typed error for a WeChat ``errcode`` (a plain :class:`WeChatAPIError` if it has no class)."""
    return _BY_CODE.get(errcode, WeChatAPIError)(errcode, errmsg)
