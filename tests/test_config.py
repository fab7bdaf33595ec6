"""Configuration: TOML + BOT__ environment overrides, typed; bad values stop with exit 2 naming the key."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from bot.config import Config, ConfigError, dump_toml, load_config
from bot.paths import ROOT

EXAMPLE = ROOT / "config.example.toml"


def test_example_config_documents_every_key_with_its_default() -> None:
    example = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    defaults = Config()
    sections = {f.name for f in dataclasses.fields(Config) if f.name != "source"}
    assert set(example) == sections
    for section in sections:
        fields = {
            f.name: getattr(getattr(defaults, section), f.name) for f in dataclasses.fields(getattr(defaults, section))
        }
        assert set(example[section]) == set(fields), section
        for key, default in fields.items():
            assert example[section][key] == default, f"{section}.{key}: example shows {example[section][key]!r}"


def test_example_config_loads() -> None:
    cfg = load_config(EXAMPLE, environ={})
    assert cfg.source == str(EXAMPLE) and cfg.wechat.encrypt_mode == "safe"


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[wechat]\ntoken = "from-file"\n[server]\nport = 9000\n', encoding="utf-8")
    env = {
        "BOT__WECHAT__TOKEN": "from-env",
        "BOT__WECHAT__ENCRYPT_MODE": "plain",
        "BOT__SERVER__PORT": "9100",
        "BOT__LOG__JSON": "true",
        "BOT__EMULATOR__UNFOLLOWED": "oA,oB",
        "BOT__WECHAT__REPLY_BUDGET": "3.5",
    }
    cfg = load_config(path, environ=env)
    assert cfg.wechat.token == "from-env"
    assert cfg.wechat.encrypt_mode == "plain"
    assert cfg.server.port == 9100 and cfg.log.json is True
    assert cfg.emulator.unfollowed == ["oA", "oB"] and cfg.wechat.reply_budget == 3.5


@pytest.mark.parametrize(
    ("toml", "env", "key"),
    [
        ('[server]\nport = "eighty"\n', {}, "server.port"),
        ("[server]\nport = 70000\n", {}, "server.port"),
        ('[wechat]\nencrypt_mode = "secret"\n', {}, "wechat.encrypt_mode"),
        ('[wechat]\naes_key = "short"\n', {}, "wechat.aes_key"),
        ("[wechat]\nreply_budget = 6\n", {}, "wechat.reply_budget"),
        ("[nosuch]\nx = 1\n", {}, "nosuch"),
        ("[wechat]\nnosuch = 1\n", {}, "wechat.nosuch"),
        ("this is not toml", {}, "--config"),
        ("", {"BOT__SERVER__PORT": "abc"}, "BOT__SERVER__PORT"),
        ("", {"BOT__NOSUCH__KEY": "1"}, "BOT__NOSUCH__KEY"),
        ("", {"BOT__REDIS__URL": "http://x"}, "BOT__REDIS__URL"),
    ],
)
def test_invalid_values_name_the_key_and_the_source(tmp_path: Path, toml: str, env: dict[str, str], key: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=env)
    assert info.value.key == key
    assert str(path) in str(info.value) or "environment" in str(info.value)


def test_a_bad_value_is_blamed_on_where_it_came_from(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[wechat]\nreply_budget = 7\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={"BOT__SERVER__HOST": "0.0.0.0"})
    assert str(info.value) == f"config error: wechat.reply_budget ({path}): must stay under WeChat's 5 s deadline"
    path.write_text("[server]\nport = 9000\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={"BOT__SERVER__PORT": "0"})
    assert str(info.value) == "config error: BOT__SERVER__PORT (environment): must be a TCP port (1-65535), not 0"
    with pytest.raises(ConfigError) as info:
        load_config(environ={"BOT_CONFIG": str(tmp_path / "missing.toml")})
    assert str(info.value) == f"config error: BOT_CONFIG ({tmp_path / 'missing.toml'}): file not found"


def test_serve_requires_the_wechat_credentials() -> None:
    cfg = Config(source="c.toml")
    with pytest.raises(ConfigError, match=r"wechat\.app_id \(c\.toml\)"):
        cfg.require_wechat()
    cfg.wechat.app_id, cfg.wechat.app_secret, cfg.wechat.token = "wx1", "s", "t"
    with pytest.raises(ConfigError, match=r"wechat\.aes_key"):
        cfg.require_wechat()
    cfg.wechat.encrypt_mode = "plain"
    cfg.require_wechat()


def test_dump_round_trips(tmp_path: Path) -> None:
    cfg = load_config(EXAMPLE, environ={"BOT__EMULATOR__UNFOLLOWED": "oX", "BOT__ACCOUNT__NAME": '平安"铃'})
    path = tmp_path / "dump.toml"
    path.write_text(dump_toml(cfg), encoding="utf-8")
    again = load_config(path, environ={})
    assert dataclasses.asdict(again) | {"source": ""} == dataclasses.asdict(cfg) | {"source": ""}


def _run_bot(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BOT")}
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_cli_exits_2_with_the_key_named_and_no_traceback(tmp_path: Path) -> None:
    result = _run_bot("serve", env={"BOT__WECHAT__APP_ID": "wx1", "BOT__WECHAT__APP_SECRET": "s"})
    assert result.returncode == 2
    assert "wechat.token" in result.stderr and "Traceback" not in result.stderr

    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nport = -1\n", encoding="utf-8")
    result = _run_bot("--config", str(bad), "worker", env={})
    assert result.returncode == 2 and "server.port" in result.stderr and str(bad) in result.stderr

    result = _run_bot("serve", "--config", str(tmp_path / "missing.toml"), env={})
    assert result.returncode == 2 and "file not found" in result.stderr
