"""The emulator's in-memory model of WeChat: tokens, followers, quotas, windows, faults, stats.

Pure state and rules, no HTTP: :mod:`bot.wechat.emulator.app` maps requests onto these methods.
Everything runs on one event loop, and no method awaits, so each check-then-update is atomic.
"""

from __future__ import annotations

import random
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from bot.config import Config, EncryptMode
from bot.wechat.emulator.follower import new_openid

TOKEN_LIFETIME = 7200
CLASSIC_OVERLAP = 300  # a classic token stays valid 5 minutes after the next one is issued
OAUTH_CODE_LIFETIME = 300
CN_UTC_OFFSET = 8 * 3600  # WeChat's day (quota) rolls over at midnight Beijing time
DAY = 86400

# errmsg texts as WeChat words them (a " rid: …" suffix is added per answer, like WeChat does).
ERRMSG: dict[int, str] = {
    -1: "system error",
    40001: "invalid credential, access_token is invalid or not latest",
    40002: "invalid grant_type",
    40003: "invalid openid",
    40013: "invalid appid",
    40016: "invalid button size",
    40017: "invalid button type",
    40029: "invalid code",
    40037: "invalid template_id",
    40097: "invalid args",
    40125: "invalid appsecret",
    40163: "code been used",
    41001: "access_token missing",
    42001: "access_token expired",
    43004: "require subscribe",
    44002: "empty post data",
    45009: "reach max api daily quota limit",
    45011: "api minute-quota reach limit  mustslower  retry next minute",
    45015: "response out of time limit or subscription is canceled",
    45047: "out of response count limit",
    46003: "menu no exist",
    47001: "data format error",
    47003: "argument invalid!",
}

# Events after which WeChat opens the short customer-service window.
CS_EVENTS = frozenset({"subscribe", "SCAN", "CLICK"})


@dataclass
class IssuedToken:
    value: str
    kind: Literal["classic", "stable"]
    expires_at: float
    invalidated: bool = False
    # Invalidated, yet stable_token without force_refresh still hands it back: what real WeChat
    # does when it considers the token valid; only force_refresh replaces it.
    sticky: bool = False


@dataclass
class Window:
    """A customer-service window: open until ``until``, ``left`` messages allowed."""

    until: float = 0.0
    left: int = 0


@dataclass
class Follower:
    openid: str
    subscribed: bool = True
    subscribe_time: int = 0
    templates: list[dict[str, Any]] = field(default_factory=list)
    custom: list[dict[str, Any]] = field(default_factory=list)
    replies: list[dict[str, Any]] = field(default_factory=list)
    after_message: Window = field(default_factory=Window)
    after_event: Window = field(default_factory=Window)


@dataclass
class Fault:
    """Fail the next ``count`` calls of ``path`` ("*" = any API path).

    Exactly one of: ``errcode`` (answer that errcode), ``http_status`` (answer that status with
    no JSON), ``timeout`` (hold the request until the client gives up). With ``deliver`` the
    request is processed first and only the answer is lost: WeChat acted, the caller cannot know.
    """

    path: str
    count: int = 1
    errcode: int | None = None
    http_status: int | None = None
    timeout: bool = False
    deliver: bool = False
    delay: float = 30.0

    def describe(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "count": self.count,
            "errcode": self.errcode,
            "http_status": self.http_status,
            "timeout": self.timeout,
            "deliver": self.deliver,
            "delay": self.delay,
        }


@dataclass
class Knobs:
    """Runtime settings, changed through ``POST /_emulator/config``; ``None`` = follow the Config."""

    latency_ms: float
    busy_rate: float
    daily_quota: int
    unfollowed: set[str]
    blocking: set[str]
    push_events: bool
    push_delay_ms: float
    callback_url: str | None = None
    encrypt_mode: EncryptMode | None = None
    # Template/custom sends to an openid the emulator has never seen: 40003 (like WeChat) unless
    # this is on, in which case the openid becomes a follower (a demo restarted with old data).
    auto_follow: bool = False

    def describe(self, cfg: Config) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "busy_rate": self.busy_rate,
            "daily_quota": self.daily_quota,
            "unfollowed": sorted(self.unfollowed),
            "blocking": sorted(self.blocking),
            "push_events": self.push_events,
            "push_delay_ms": self.push_delay_ms,
            "callback_url": self.callback_url or cfg.emulator_callback_url(),
            "encrypt_mode": self.encrypt_mode or cfg.wechat.encrypt_mode,
            "auto_follow": self.auto_follow,
        }


@dataclass
class Stats:
    token_fetches: Counter[str] = field(default_factory=Counter)  # classic / stable / forced
    tokens_issued: int = 0
    template_sends: int = 0
    template_deduped: int = 0
    template_blocked: int = 0
    cs_sends: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    calls: Counter[str] = field(default_factory=Counter)
    callbacks: Counter[str] = field(default_factory=Counter)  # by outcome
    pushes: Counter[str] = field(default_factory=Counter)  # by outcome
    faults_fired: int = 0

    def describe(self) -> dict[str, Any]:
        return {
            "token_fetches": {k: self.token_fetches[k] for k in ("classic", "stable", "forced")},
            "tokens_issued": self.tokens_issued,
            "template_sends": self.template_sends,
            "template_deduped": self.template_deduped,
            "template_blocked": self.template_blocked,
            "cs_sends": self.cs_sends,
            "errors": dict(self.errors),
            "calls": dict(self.calls),
            "callbacks": dict(self.callbacks),
            "pushes": dict(self.pushes),
            "faults_fired": self.faults_fired,
        }


class APIError(Exception):
    """An errcode answer (raised inside the emulator's rules, turned into JSON by the app)."""

    def __init__(self, errcode: int, detail: str = "") -> None:
        super().__init__(errcode, detail)
        self.errcode = errcode
        self.detail = detail


class EmulatorState:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.reset()

    def reset(self) -> None:
        e = self.cfg.emulator
        self.rng = random.Random(e.seed)
        self.knobs = Knobs(
            latency_ms=e.latency_ms,
            busy_rate=e.busy_rate,
            daily_quota=e.daily_quota,
            unfollowed=set(e.unfollowed),
            blocking=set(),
            push_events=e.push_events,
            push_delay_ms=e.push_delay_ms,
        )
        self.clock_offset = 0.0
        self.tokens: dict[str, IssuedToken] = {}
        self.classic_current: str | None = None
        self.stable_current: str | None = None
        self.last_forced = float("-inf")
        self.followers: dict[str, Follower] = {}
        self.dedupe: dict[tuple[str, str], tuple[int, float]] = {}
        self.quota_day = -1
        self.quota_used = 0
        self.next_msgid = 3_000_000_000_000_000_000 + self.rng.randrange(10**15)
        self.oauth_codes: dict[str, tuple[str, str, float]] = {}  # code -> (openid, scope, issued)
        self.used_codes: set[str] = set()
        self.qrcodes: dict[str, dict[str, Any]] = {}
        self.menu: dict[str, Any] | None = None
        self.faults: list[Fault] = []
        self.stats = Stats()

    # -- time ---------------------------------------------------------------------------------
    def now(self) -> float:
        """WeChat's clock: real time plus what ``POST /_emulator/clock`` advanced it by."""
        return time.time() + self.clock_offset

    @property
    def encrypt_mode(self) -> EncryptMode:
        return self.knobs.encrypt_mode or self.cfg.wechat.encrypt_mode

    @property
    def callback_url(self) -> str:
        return self.knobs.callback_url or self.cfg.emulator_callback_url()

    # -- errors -------------------------------------------------------------------------------
    def error_body(self, errcode: int, detail: str = "") -> dict[str, Any]:
        self.stats.errors[str(errcode)] += 1
        msg = ERRMSG.get(errcode, "error")
        if detail:
            msg = f"{msg} {detail}"
        return {"errcode": errcode, "errmsg": f"{msg} rid: {secrets.token_hex(4)}-{secrets.token_hex(4)}"}

    # -- credentials ----------------------------------------------------------------------------
    def check_credentials(self, appid: str | None, secret: str | None) -> None:
        if appid != self.cfg.wechat.app_id:
            raise APIError(40013)
        if secret != self.cfg.wechat.app_secret:
            raise APIError(40125)

    def _issue(self, kind: Literal["classic", "stable"]) -> IssuedToken:
        self.stats.tokens_issued += 1
        value = f"{self.stats.tokens_issued}_{secrets.token_urlsafe(96)}"
        token = IssuedToken(value=value, kind=kind, expires_at=self.now() + TOKEN_LIFETIME)
        self.tokens[value] = token
        return token

    def classic_token(self) -> tuple[str, int]:
        """``cgi-bin/token``: a new token every call; the previous one lives 5 more minutes."""
        now = self.now()
        previous = self.tokens.get(self.classic_current or "")
        if previous is not None:
            previous.expires_at = min(previous.expires_at, now + CLASSIC_OVERLAP)
        token = self._issue("classic")
        self.classic_current = token.value
        self.stats.token_fetches["classic"] += 1
        return token.value, TOKEN_LIFETIME

    def stable_token(self, force: bool) -> tuple[str, int]:
        """``cgi-bin/stable_token``: the same token while valid; ``force`` replaces it (once per interval)."""
        now = self.now()
        current = self.tokens.get(self.stable_current or "")
        if force:
            interval = self.cfg.wechat.force_refresh_interval
            if now - self.last_forced < interval:
                raise APIError(45011, f"force_refresh allowed once per {interval} s")
            self.last_forced = now
            if current is not None:
                current.invalidated, current.sticky = True, False
            current = None
        elif current is not None and (current.expires_at <= now or (current.invalidated and not current.sticky)):
            current = None
        if current is None:
            current = self._issue("stable")
            self.stable_current = current.value
        self.stats.token_fetches["forced" if force else "stable"] += 1
        return current.value, max(1, int(current.expires_at - now))

    def invalidate_tokens(self, sticky: bool = False) -> int:
        """Every token valid now answers 40001 from now on; returns how many were invalidated."""
        now = self.now()
        count = 0
        for token in self.tokens.values():
            if not token.invalidated and token.expires_at > now:
                token.invalidated = True
                token.sticky = sticky and token.value == self.stable_current
                count += 1
        return count

    def check_token(self, value: str | None) -> None:
        if not value:
            raise APIError(41001)
        token = self.tokens.get(value)
        if token is None or token.invalidated:
            raise APIError(40001)
        if token.expires_at <= self.now():
            raise APIError(42001)

    # -- followers ------------------------------------------------------------------------------
    def add_followers(self, count: int = 0, openids: list[str] | None = None) -> list[str]:
        created: list[str] = []
        now = int(self.now())
        for openid in openids or []:
            if openid not in self.followers:
                self.followers[openid] = Follower(openid, subscribe_time=now)
            created.append(openid)
        for _ in range(count):
            openid = new_openid(self.rng)
            while openid in self.followers:
                openid = new_openid(self.rng)
            self.followers[openid] = Follower(openid, subscribe_time=now)
            created.append(openid)
        return created

    def follower_for_send(self, openid: str | None) -> Follower:
        """The follower a send targets, applying unfollowed rules (40003 / 43004)."""
        if not openid:
            raise APIError(40003)
        follower = self.followers.get(openid)
        if follower is None and self.knobs.auto_follow and openid not in self.knobs.unfollowed:
            self.add_followers(openids=[openid])
            follower = self.followers[openid]
        if openid in self.knobs.unfollowed or (follower is not None and not follower.subscribed):
            raise APIError(43004)
        if follower is None:
            raise APIError(40003)
        return follower

    def is_subscribed(self, follower: Follower) -> bool:
        return follower.subscribed and follower.openid not in self.knobs.unfollowed

    def user_acted(self, follower: Follower, msg_type: str, event: str | None) -> None:
        """A follower's message or event: follow state and customer-service windows."""
        now = self.now()
        w = self.cfg.wechat
        if msg_type == "event":
            if event == "subscribe":
                follower.subscribed = True
                follower.subscribe_time = int(now)
                self.knobs.unfollowed.discard(follower.openid)
            elif event == "unsubscribe":
                follower.subscribed = False
                follower.after_message = Window()
                follower.after_event = Window()
                return
            if event in CS_EVENTS:
                follower.after_event = Window(now + w.cs_after_event_window, w.cs_after_event)
        else:
            follower.after_message = Window(now + w.cs_after_message_window, w.cs_after_message)

    def take_cs_slot(self, follower: Follower) -> None:
        """One customer-service message: 45015 with no open window, 45047 with its quota used."""
        now = self.now()
        # The short event window first, so the long message window's quota lasts.
        open_windows = [win for win in (follower.after_event, follower.after_message) if win.until > now]
        if not open_windows:
            raise APIError(45015)
        for win in open_windows:
            if win.left > 0:
                win.left -= 1
                return
        raise APIError(45047)

    # -- template messages ------------------------------------------------------------------------
    def validate_template_data(self, data: Any) -> dict[str, str]:
        if not isinstance(data, dict):
            raise APIError(47001, "data must be an object")
        values: dict[str, str] = {}
        limit = self.cfg.wechat.template_field_max
        for key, item in data.items():
            if not isinstance(item, dict) or not isinstance(item.get("value"), str):
                raise APIError(47001, f'data.{key} must be {{"value": string}}')
            value: str = item["value"]
            if len(value) > limit or "\n" in value or "\r" in value:
                raise APIError(47003, f"data.{key}.value invalid")
            values[str(key)] = value
        return values

    def dedupe_hit(self, openid: str, client_msg_id: str | None) -> int | None:
        if not client_msg_id:
            return None
        hit = self.dedupe.get((openid, client_msg_id))
        if hit is None:
            return None
        msgid, at = hit
        if self.now() - at > self.cfg.wechat.client_msg_id_window:
            del self.dedupe[(openid, client_msg_id)]
            return None
        return msgid

    def _roll_quota_day(self) -> None:
        day = int((self.now() + CN_UTC_OFFSET) // DAY)
        if day != self.quota_day:
            self.quota_day, self.quota_used = day, 0

    def set_quota_used(self, used: int) -> None:
        """Pretend ``used`` template sends went out today (to reach 45009 without sending them)."""
        self._roll_quota_day()
        self.quota_used = max(0, used)

    def take_quota(self) -> None:
        self._roll_quota_day()
        if self.quota_used >= self.knobs.daily_quota:
            raise APIError(45009)
        self.quota_used += 1

    def busy(self) -> bool:
        return self.knobs.busy_rate > 0 and self.rng.random() < self.knobs.busy_rate

    def record_template(
        self,
        follower: Follower,
        template_id: str,
        values: dict[str, str],
        url: str | None,
        client_msg_id: str | None,
    ) -> tuple[int, bool]:
        """Accept a template send; returns (msgid, delivered). Blocking followers get nothing."""
        msgid = self.next_msgid
        self.next_msgid += 1
        now = self.now()
        if client_msg_id:
            self.dedupe[(follower.openid, client_msg_id)] = (msgid, now)
            self._prune_dedupe(now)
        blocked = follower.openid in self.knobs.blocking
        self.stats.template_sends += 1
        if blocked:
            self.stats.template_blocked += 1
            return msgid, False
        follower.templates.append(
            {
                "template_id": template_id,
                "data": values,
                "url": url,
                "msgid": msgid,
                "client_msg_id": client_msg_id,
                "time": int(now),
            }
        )
        return msgid, True

    def _prune_dedupe(self, now: float) -> None:
        # Amortised: only when the table has grown, drop what is past the window.
        if len(self.dedupe) < 4096 or len(self.dedupe) % 1024:
            return
        window = self.cfg.wechat.client_msg_id_window
        for key in [k for k, (_, at) in self.dedupe.items() if now - at > window]:
            del self.dedupe[key]

    # -- OAuth ----------------------------------------------------------------------------------------
    def issue_code(self, openid: str, scope: str) -> str:
        code = secrets.token_hex(16)
        self.oauth_codes[code] = (openid, scope, self.now())
        return code

    def redeem_code(self, code: str | None) -> tuple[str, str]:
        if code and code in self.used_codes:
            raise APIError(40163)
        entry = self.oauth_codes.pop(code or "", None)
        if entry is None:
            raise APIError(40029)
        openid, scope, issued = entry
        self.used_codes.add(code or "")
        if self.now() - issued > OAUTH_CODE_LIFETIME:
            raise APIError(40029, "code expired")
        return openid, scope

    # -- faults ---------------------------------------------------------------------------------------
    def take_fault(self, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.path in (path, "*") and fault.count > 0:
                fault.count -= 1
                if fault.count == 0:
                    self.faults.remove(fault)
                self.stats.faults_fired += 1
                return fault
        return None
