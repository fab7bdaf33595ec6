"""An async, typed wrapper of the emulator's control API (``/_emulator/…``).

Used by the tests, ``bot demo`` and ``bot bench`` to create followers, make them write to the bot,
inject faults and read what WeChat "delivered".
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import aiohttp


class EmulatorControlError(Exception):
    """The control API refused a request (bad knob, unknown follower…); ``str()`` says why."""


@dataclass(frozen=True)
class CallbackResult:
    """What happened when a follower's message reached the bot.

    ``outcome``: ``reply`` (a passive reply), ``no_reply`` (``success`` or empty), ``timeout``
    (no answer within WeChat's 5 s), ``unreachable``, ``http_error`` or ``bad_reply`` (one WeChat
    would reject: bad signature, wrong encryption, reply to someone else). ``status`` is the bot's
    HTTP status (0 without an answer); ``raw`` the decrypted reply XML (or ``success``/``""``).
    """

    status: int
    outcome: str
    reply: dict[str, Any] | None
    raw: str
    elapsed_ms: float
    error: str | None
    xml: str

    @property
    def text(self) -> str | None:
        """The text of a text reply, else None."""
        if self.reply is None or self.reply.get("type") != "text":
            return None
        return str(self.reply.get("content", ""))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CallbackResult:
        return cls(
            status=int(data.get("status", 0)),
            outcome=str(data.get("outcome", "")),
            reply=data.get("reply"),
            raw=str(data.get("raw", "")),
            elapsed_ms=float(data.get("elapsed_ms", 0.0)),
            error=data.get("error"),
            xml=str(data.get("xml", "")),
        )


class EmulatorClient:
    def __init__(self, base_url: str, session: aiohttp.ClientSession | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = session
        self._own_session = session is None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            # Generous: a follower's send waits up to WeChat's 5 s deadline for the bot.
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return self._session

    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        url = f"{self.base_url}/_emulator/{path}"
        async with self._http().request(method, url, json=body) as resp:
            data = await resp.json(content_type=None)
            if resp.status >= 400:
                message = data.get("error") if isinstance(data, dict) else None
                raise EmulatorControlError(f"{method} {path}: HTTP {resp.status}: {message or data}")
            return data

    # -- inspection -------------------------------------------------------------------------
    async def health(self) -> bool:
        return bool((await self._request("GET", "health")).get("ok"))

    async def stats(self) -> dict[str, Any]:
        """token_fetches {classic, stable, forced}, template_sends, template_deduped, cs_sends,
        errors {code: n}, calls {path: n}, callbacks, pushes, daily_used, followers."""
        data: dict[str, Any] = await self._request("GET", "stats")
        return data

    async def counts(self) -> dict[str, int]:
        """Template cards delivered, per openid (openids with none are left out)."""
        data = await self._request("GET", "counts")
        return {str(k): int(v) for k, v in data["counts"].items()}

    async def inbox(self, openid: str) -> dict[str, list[dict[str, Any]]]:
        """``{"template": [...], "custom": [...], "replies": [...]}`` for one follower."""
        data: dict[str, list[dict[str, Any]]] = await self._request("GET", f"followers/{openid}/inbox")
        return data

    async def followers(self) -> list[dict[str, Any]]:
        data = await self._request("GET", "followers")
        return list(data["followers"])

    async def menu(self) -> dict[str, Any] | None:
        data = await self._request("GET", "menu")
        menu: dict[str, Any] | None = data.get("menu")
        return menu

    async def qrcodes(self) -> list[dict[str, Any]]:
        data = await self._request("GET", "qrcodes")
        return list(data["qrcodes"])

    async def get_config(self) -> dict[str, Any]:
        data: dict[str, Any] = await self._request("GET", "config")
        return data

    # -- control ----------------------------------------------------------------------------
    async def reset(self) -> None:
        """Forget everything: tokens, followers, inboxes, stats, faults; knobs back to the Config."""
        await self._request("POST", "reset")

    async def configure(self, **knobs: Any) -> dict[str, Any]:
        """Change runtime knobs: latency_ms, busy_rate, daily_quota, daily_used, unfollowed,
        blocking, push_events, push_delay_ms, callback_url, encrypt_mode, auto_follow, faults."""
        data: dict[str, Any] = await self._request("POST", "config", knobs)
        return data

    async def inject_fault(
        self,
        path: str,
        *,
        errcode: int | None = None,
        http_status: int | None = None,
        timeout: bool = False,  # noqa: ASYNC109 - the kind of fault, not a deadline for this call
        count: int = 1,
        deliver: bool = False,
        delay: float = 30.0,
    ) -> None:
        """Fail the next ``count`` calls of ``path`` ("*" = any): with ``errcode``, an HTTP status,
        or a timeout (held until the caller gives up). ``deliver``: act first, then lose the answer."""
        fault = {
            "path": path,
            "count": count,
            "errcode": errcode,
            "http_status": http_status,
            "timeout": timeout,
            "deliver": deliver,
            "delay": delay,
        }
        await self._request("POST", "faults", fault)

    async def clear_faults(self) -> None:
        await self._request("DELETE", "faults")

    async def advance_clock(self, seconds: float) -> float:
        """Move WeChat's clock forward (tokens expire, windows close, the quota day rolls)."""
        data = await self._request("POST", "clock", {"advance": seconds})
        return float(data["clock_offset"])

    async def invalidate_token(self, *, sticky: bool = False) -> int:
        """Every valid token answers 40001 from now on. ``sticky``: stable_token without
        force_refresh keeps handing the dead token back (only force_refresh replaces it)."""
        data = await self._request("POST", "token/invalidate", {"sticky": sticky})
        return int(data["invalidated"])

    async def create_followers(self, n: int = 0, openids: list[str] | None = None) -> list[str]:
        """``n`` new followers with realistic openids (plus any ``openids`` given); returns them."""
        data = await self._request("POST", "followers", {"count": n, "openids": openids or []})
        return [str(o) for o in data["openids"]]

    # -- followers writing to the bot ---------------------------------------------------------
    async def send(self, openid: str, payload: dict[str, Any]) -> CallbackResult:
        """Any payload: ``{"type": "text"|"event"|"scan"|"image"|"voice"|"location"|"link"|<other>,
        ...fields, "msg_id"?, "create_time"?, "mode"?}``; same msg_id/create_time = WeChat's retry."""
        return CallbackResult.from_json(await self._request("POST", f"followers/{openid}/send", payload))

    async def send_text(
        self, openid: str, content: str, msg_id: int | None = None, create_time: int | None = None
    ) -> CallbackResult:
        payload: dict[str, Any] = {"type": "text", "content": content}
        if msg_id is not None:
            payload["msg_id"] = msg_id
        if create_time is not None:
            payload["create_time"] = create_time
        return await self.send(openid, payload)

    async def send_event(
        self, openid: str, event: str, event_key: str | None = None, create_time: int | None = None
    ) -> CallbackResult:
        payload: dict[str, Any] = {"type": "event", "event": event}
        if event_key is not None:
            payload["event_key"] = event_key
        if create_time is not None:
            payload["create_time"] = create_time
        return await self.send(openid, payload)

    async def scan(self, openid: str, scene: str) -> CallbackResult:
        """The follower scans the QR code for ``scene``: subscribe (qrscene_…) or SCAN if following."""
        return await self.send(openid, {"type": "scan", "scene": scene})
