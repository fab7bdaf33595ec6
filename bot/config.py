"""Typed configuration: one TOML file plus ``BOT__<SECTION>__<KEY>`` environment overrides.

Every key has a default here and is documented in ``config.example.toml`` (a test keeps the two in
step). Loading never raises a traceback at the user: :class:`ConfigError` names the key and where the
bad value came from, and the CLI turns it into exit code 2.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ENV_PREFIX = "BOT__"
ENV_CONFIG_PATH = "BOT_CONFIG"

EncryptMode = Literal["plain", "compatible", "safe"]
EventLoop = Literal["uvloop", "asyncio"]


class ConfigError(Exception):
    """A configuration value is missing or invalid; ``str()`` is the message for the operator."""

    def __init__(self, key: str, source: str, reason: str) -> None:
        super().__init__(f"config error: {key} ({source}): {reason}")
        self.key = key
        self.source = source
        self.reason = reason


@dataclass
class AccountConfig:
    name: str = "平安铃"


@dataclass
class WeChatConfig:
    app_id: str = ""
    app_secret: str = ""
    token: str = ""
    aes_key: str = ""
    encrypt_mode: EncryptMode = "safe"
    api_base: str = "https://api.weixin.qq.com"
    oauth_base: str = "https://open.weixin.qq.com"
    timestamp_window: int = 300
    body_limit: int = 65536
    reply_budget: float = 4.0
    shed_inflight: int = 64
    shed_wait: float = 0.5
    dedupe_ttl: int = 600
    api_timeout: float = 5.0
    api_retries: int = 3
    api_backoff: float = 0.2
    api_connections: int = 512
    token_refresh_margin: int = 300
    force_refresh_interval: int = 30
    template_quota: int = 100000
    template_field_max: int = 20
    client_msg_id_window: int = 600
    cs_after_message: int = 5
    cs_after_message_window: int = 172800
    cs_after_event: int = 3
    cs_after_event_window: int = 60
    menu_on_start: bool = False
    rate_per_openid: int = 30


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    public_url: str = ""
    shutdown_timeout: float = 10.0
    secret: str = ""
    rate_per_ip: int = 600
    trust_forwarded: bool = False
    event_loop: EventLoop = "uvloop"

    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    def signing_key(self, wechat: WeChatConfig) -> bytes:
        """Key for signed cookies and OAuth state: ``server.secret``, else derived from the app secret
        (stable across processes and restarts, so every replica agrees without extra setup)."""
        import hashlib
        import hmac

        if self.secret:
            return hashlib.sha256(self.secret.encode()).digest()
        return hmac.new(wechat.app_secret.encode(), b"safebell-signing-key", hashlib.sha256).digest()


@dataclass
class RedisConfig:
    url: str = ""
    data_dir: str = "var/redis"
    server_binary: str = ""


@dataclass
class ChatConfig:
    state_ttl: int = 86400
    lock_ttl: float = 10.0


@dataclass
class RosterConfig:
    bind_max_failures: int = 5
    bind_failure_window: int = 3600
    teacher_invite_days: int = 7


@dataclass
class DeliveryConfig:
    pace_per_second: float = 200.0
    pace_burst: int = 200
    quiet_start: str = "21:30"
    quiet_end: str = "07:00"
    family_daily_cap: int = 3
    batch_size: int = 100
    retry_after: float = 60.0


@dataclass
class NoticesConfig:
    default_deadline_hours: float = 48.0
    reminder_hours: list[float] = field(default_factory=lambda: [2.0, 24.0])
    reminder_window_start: str = "08:00"
    reminder_window_end: str = "20:00"
    template_id: str = "SAFEBELL_NOTICE"
    template_keys: list[str] = field(
        default_factory=lambda: ["title=thing1", "sender=thing2", "deadline=time3", "action=thing4"]
    )
    teacher_template_id: str = "SAFEBELL_TEACHER"
    teacher_template_keys: list[str] = field(
        default_factory=lambda: ["class=thing1", "count=character_string2", "action=thing3"]
    )
    recent_days: int = 30


@dataclass
class CampaignsConfig:
    grace_seconds: int = 21600
    tick_seconds: int = 60
    lookback_days: int = 35


@dataclass
class LessonsConfig:
    pass_mark: float = 0.8


@dataclass
class PrivacyConfig:
    retention_days: int = 365
    retention_at: str = "03:30"


@dataclass
class LogConfig:
    level: str = "INFO"
    json: bool = False


@dataclass
class WorkerConfig:
    batch: int = 64
    concurrency: int = 64
    block_ms: int = 1000
    reclaim_idle: float = 60.0


@dataclass
class SchedulerConfig:
    token_check_interval: float = 60.0
    sweep_interval: float = 30.0
    timezone: str = "Asia/Shanghai"


@dataclass
class EmulatorConfig:
    host: str = "127.0.0.1"
    port: int = 8081
    callback_url: str = ""
    latency_ms: float = 0.0
    busy_rate: float = 0.0
    daily_quota: int = 100000
    unfollowed: list[str] = field(default_factory=list)
    push_delay_ms: float = 50.0
    push_events: bool = True
    seed: int = 0


@dataclass
class Config:
    account: AccountConfig = field(default_factory=AccountConfig)
    wechat: WeChatConfig = field(default_factory=WeChatConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    chat: ChatConfig = field(default_factory=ChatConfig)
    roster: RosterConfig = field(default_factory=RosterConfig)
    notices: NoticesConfig = field(default_factory=NoticesConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    lessons: LessonsConfig = field(default_factory=LessonsConfig)
    campaigns: CampaignsConfig = field(default_factory=CampaignsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    emulator: EmulatorConfig = field(default_factory=EmulatorConfig)
    source: str = field(default="defaults", compare=False)

    # -- checks that depend on what the process is about to do ------------------------------
    def require_wechat(self) -> None:
        """Keys ``bot serve`` cannot run without; raises :class:`ConfigError` naming the first missing."""
        w = self.wechat
        for key in ("app_id", "app_secret", "token"):
            if not getattr(w, key):
                raise ConfigError(f"wechat.{key}", self.source, f"is required (or set {env_name('wechat', key)})")
        if w.encrypt_mode != "plain":
            if not w.aes_key:
                raise ConfigError(
                    "wechat.aes_key",
                    self.source,
                    f"is required when encrypt_mode is {w.encrypt_mode!r} (or set {env_name('wechat', 'aes_key')})",
                )
            check_aes_key(w.aes_key, self.source)

    def emulator_callback_url(self) -> str:
        return self.emulator.callback_url or f"{self.server.base_url()}/wechat"

    def emulator_base_url(self) -> str:
        return f"http://{self.emulator.host}:{self.emulator.port}"


def env_name(section: str, key: str) -> str:
    return f"{ENV_PREFIX}{section.upper()}__{key.upper()}"


def check_aes_key(value: str, source: str) -> None:
    """EncodingAESKey is 43 base64 characters (32 bytes once '=' is appended)."""
    try:
        raw = base64.b64decode(value + "=", validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(value) != 43 or len(raw) != 32:
        raise ConfigError("wechat.aes_key", source, "must be the 43-character EncodingAESKey from the WeChat console")


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------

_SECTIONS: dict[str, type[Any]] = {
    f.name: f.type if isinstance(f.type, type) else typing.get_type_hints(Config)[f.name]
    for f in dataclasses.fields(Config)
    if f.name != "source"
}


def load_config(path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Load the TOML file (``path``, else ``$BOT_CONFIG``, else defaults) and apply env overrides."""
    env = os.environ if environ is None else environ
    option = "--config"
    if path is None and env.get(ENV_CONFIG_PATH):
        path, option = env[ENV_CONFIG_PATH], ENV_CONFIG_PATH
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        p = Path(path)
        if not p.is_file():
            raise ConfigError(option, source, "file not found")
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(option, source, f"not valid TOML: {exc}") from None

    cfg = Config(source=source)
    for section, value in data.items():
        if section not in _SECTIONS:
            raise ConfigError(section, source, f"unknown section (known: {', '.join(_SECTIONS)})")
        if not isinstance(value, dict):
            raise ConfigError(section, source, "must be a table, e.g. [" + section + "]")
        target = getattr(cfg, section)
        for key, raw in value.items():
            _set(target, section, key, raw, source, from_env=False)

    from_env: dict[str, str] = {}  # "section.key" -> the variable that set it
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX) :].split("__")
        if len(parts) != 2:
            raise ConfigError(name, "environment", "expected BOT__<SECTION>__<KEY>")
        section, key = parts[0].lower(), parts[1].lower()
        if section not in _SECTIONS:
            raise ConfigError(name, "environment", f"unknown section {section!r}")
        _set(getattr(cfg, section), section, key, raw, "environment", from_env=True, env_var=name)
        from_env[f"{section}.{key}"] = name

    try:
        _validate(cfg)
    except ConfigError as exc:
        # A value the environment set is blamed on its variable, not on the file.
        if exc.key in from_env:
            raise ConfigError(from_env[exc.key], "environment", exc.reason) from None
        raise
    return cfg


def _set(target: Any, section: str, key: str, raw: Any, source: str, *, from_env: bool, env_var: str = "") -> None:
    hints = typing.get_type_hints(type(target))
    label = env_var or f"{section}.{key}"
    if key not in hints:
        raise ConfigError(label, source, f"unknown key (known in [{section}]: {', '.join(hints)})")
    try:
        value = _coerce(hints[key], raw, from_env)
    except (TypeError, ValueError) as exc:
        raise ConfigError(label, source, str(exc)) from None
    setattr(target, key, value)


def _coerce(tp: Any, raw: Any, from_env: bool) -> Any:
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if raw not in allowed:
            raise ValueError(f"must be one of {', '.join(map(str, allowed))}, not {raw!r}")
        return raw
    if tp is bool:
        if isinstance(raw, bool):
            return raw
        if from_env and isinstance(raw, str) and raw.lower() in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
            return raw.lower() in {"1", "true", "yes", "on"}
        raise ValueError(f"must be true or false, not {raw!r}")
    if tp is int:
        if isinstance(raw, bool):
            raise ValueError(f"must be a whole number, not {raw!r}")
        if isinstance(raw, int):
            return raw
        if from_env and isinstance(raw, str):
            try:
                return int(raw.strip())
            except ValueError:
                pass
        raise ValueError(f"must be a whole number, not {raw!r}")
    if tp is float:
        if isinstance(raw, bool):
            raise ValueError(f"must be a number, not {raw!r}")
        if isinstance(raw, int | float):
            return float(raw)
        if from_env and isinstance(raw, str):
            try:
                return float(raw.strip())
            except ValueError:
                pass
        raise ValueError(f"must be a number, not {raw!r}")
    if tp is str:
        if isinstance(raw, str):
            return raw
        raise ValueError(f"must be a string, not {raw!r}")
    if origin is list or (isinstance(tp, types.GenericAlias) and tp.__origin__ is list):
        (item,) = typing.get_args(tp)
        if from_env and isinstance(raw, str):
            raw = [part.strip() for part in raw.split(",") if part.strip()]
        if not isinstance(raw, list):
            raise ValueError(f"must be a list, not {raw!r}")
        try:
            return [_coerce(item, x, from_env) for x in raw]
        except (TypeError, ValueError):
            kind = "strings" if item is str else "numbers"
            raise ValueError(f"must be a list of {kind}, not {raw!r}") from None
    raise TypeError(f"unsupported config type {tp!r}")  # a programming error, caught by tests


def _validate(cfg: Config) -> None:
    src = cfg.source
    positive = {
        "wechat.timestamp_window": cfg.wechat.timestamp_window,
        "wechat.body_limit": cfg.wechat.body_limit,
        "wechat.reply_budget": cfg.wechat.reply_budget,
        "wechat.shed_inflight": cfg.wechat.shed_inflight,
        "wechat.shed_wait": cfg.wechat.shed_wait,
        "wechat.dedupe_ttl": cfg.wechat.dedupe_ttl,
        "wechat.api_timeout": cfg.wechat.api_timeout,
        "wechat.api_connections": cfg.wechat.api_connections,
        "server.workers": cfg.server.workers,
        "chat.state_ttl": cfg.chat.state_ttl,
        "chat.lock_ttl": cfg.chat.lock_ttl,
        "worker.batch": cfg.worker.batch,
        "worker.concurrency": cfg.worker.concurrency,
        "roster.bind_max_failures": cfg.roster.bind_max_failures,
        "roster.bind_failure_window": cfg.roster.bind_failure_window,
        "roster.teacher_invite_days": cfg.roster.teacher_invite_days,
        "delivery.pace_per_second": cfg.delivery.pace_per_second,
        "delivery.pace_burst": cfg.delivery.pace_burst,
        "delivery.batch_size": cfg.delivery.batch_size,
        "notices.default_deadline_hours": cfg.notices.default_deadline_hours,
        "notices.recent_days": cfg.notices.recent_days,
        "privacy.retention_days": cfg.privacy.retention_days,
        "campaigns.tick_seconds": cfg.campaigns.tick_seconds,
        "campaigns.lookback_days": cfg.campaigns.lookback_days,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(key, src, f"must be greater than 0, not {value}")
    if not 0 < cfg.server.port < 65536:
        raise ConfigError("server.port", src, f"must be a TCP port (1-65535), not {cfg.server.port}")
    if not 0 <= cfg.emulator.port < 65536:
        raise ConfigError("emulator.port", src, f"must be a TCP port, not {cfg.emulator.port}")
    if cfg.wechat.reply_budget >= 5:
        raise ConfigError("wechat.reply_budget", src, "must stay under WeChat's 5 s deadline")
    if not 0 < cfg.lessons.pass_mark <= 1:
        raise ConfigError("lessons.pass_mark", src, "must be a share between 0 and 1, e.g. 0.8 for 80%")
    if cfg.delivery.family_daily_cap < 0:
        raise ConfigError("delivery.family_daily_cap", src, "must be 0 (no cap) or more")
    if not 0 <= cfg.emulator.busy_rate <= 1:
        raise ConfigError("emulator.busy_rate", src, "must be between 0 and 1")
    if cfg.log.level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError("log.level", src, "must be DEBUG, INFO, WARNING or ERROR")
    for key in ("api_base", "oauth_base"):
        url = getattr(cfg.wechat, key)
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"wechat.{key}", src, f"must be an http(s) URL, not {url!r}")
    if cfg.redis.url and not cfg.redis.url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("redis.url", src, "must start with redis://, rediss:// or unix:// (empty = embedded)")
    if cfg.wechat.aes_key:
        check_aes_key(cfg.wechat.aes_key, src)
    for key in ("delivery.quiet_start", "delivery.quiet_end", "notices.reminder_window_start",
                "notices.reminder_window_end", "privacy.retention_at"):  # fmt: skip
        section, name = key.split(".")
        _check_clock(key, getattr(getattr(cfg, section), name), src)
    for key in ("notices.template_keys", "notices.teacher_template_keys"):
        for item in getattr(cfg.notices, key.split(".")[1]):
            if "=" not in item:
                raise ConfigError(key, src, f"entries look like title=thing1, not {item!r}")
    if any(h <= 0 for h in cfg.notices.reminder_hours):
        raise ConfigError("notices.reminder_hours", src, "reminders come after the notice: use hours > 0")


def _check_clock(key: str, value: str, source: str) -> None:
    parts = value.split(":")
    if len(parts) != 2 or not all(p.isdigit() for p in parts) or int(parts[0]) > 23 or int(parts[1]) > 59:
        raise ConfigError(key, source, f"must be a time of day like 21:30, not {value!r}")


def dump_toml(cfg: Config) -> str:
    """Render a config back to TOML (used by the demo to hand one config to its child processes)."""
    lines: list[str] = []
    for section in _SECTIONS:
        lines.append(f"[{section}]")
        for f in dataclasses.fields(getattr(cfg, section)):
            lines.append(f"{f.name} = {_toml_value(getattr(getattr(cfg, section), f.name))}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    s = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'
