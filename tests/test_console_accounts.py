"""Console accounts: scrypt hashes, password rules, scopes, and ``bot admin create|passwd|list``."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from bot.cli import main
from bot.console.accounts import (
    AccountError,
    AccountStore,
    ScryptCost,
    check_password,
    hash_password,
    parse_hash,
)
from bot.console.sessions import SessionStore
from bot.console.throttle import LoginThrottle
from bot.roster.model import School, TeachRef
from bot.roster.store import RosterStore
from bot.store import keys
from bot.store.redis import Redis

CHEAP = ScryptCost(2**10, 8, 1)


def test_a_hash_carries_its_parameters_and_a_random_salt_and_checks_in_constant_time() -> None:
    first, second = hash_password("correct-horse-battery", CHEAP), hash_password("correct-horse-battery", CHEAP)
    assert first != second and first.startswith("scrypt$ln=10,r=8,p=1$")
    assert check_password("correct-horse-battery", first) and not check_password("correct-horse-batterz", first)
    parsed = parse_hash(first)
    assert parsed is not None and parsed[0] == CHEAP and len(parsed[1]) == 16


@pytest.mark.parametrize("stored", ["", "plain-text", "scrypt$ln=99,r=8,p=1$AAAA$BBBB", "scrypt$x$y$z", "md5$a$b$c"])
def test_a_malformed_or_foreign_hash_never_matches(stored: str) -> None:
    assert not check_password("anything", stored)


def test_the_default_cost_is_owasps_scrypt_setting() -> None:
    cost = ScryptCost()
    assert (cost.n, cost.r, cost.p) == (2**15, 8, 3) and cost.memory == 32 * 1024 * 1024


@pytest.mark.parametrize(
    ("password", "why"),
    [("short", "at least"), ("x" * 200, "at most"), ("alice-is-my-name", "username"), ("aaaaaaaaaaaa", "simple")],
)
async def test_weak_passwords_are_refused(redis: Redis, password: str, why: str) -> None:
    with pytest.raises(AccountError, match=why):
        await AccountStore(redis, cost=CHEAP).create("alice", password, "district_admin", district="d1")


async def test_an_account_is_created_once_and_signs_in_with_its_password_only(redis: Redis) -> None:
    store = AccountStore(redis, cost=CHEAP)
    account = await store.create("Alice", "a-long-password", "district_admin", district="d1")
    assert account.username == "alice" and account.subject().role == "district_admin"
    with pytest.raises(AccountError, match="taken"):
        await store.create("alice", "another-password", "district_admin", district="d1")
    assert await store.authenticate("ALICE", "a-long-password") is not None
    assert await store.authenticate("alice", "a-long-passwore") is None
    assert await store.authenticate("nobody", "a-long-password") is None
    raw = await redis.hgetall(keys.account("alice"))
    assert "a-long-password" not in str(raw) and str(raw["password"]).startswith("scrypt$")


async def test_a_weaker_hash_is_upgraded_at_the_next_login(redis: Redis) -> None:
    await AccountStore(redis, cost=CHEAP).create("bob", "a-long-password", "district_admin", district="d1")
    stronger = ScryptCost(2**11, 8, 1)
    assert await AccountStore(redis, cost=stronger).authenticate("bob", "a-long-password") is not None
    parsed = parse_hash(str(await redis.hget(keys.account("bob"), "password")))
    assert parsed is not None and parsed[0] == stronger


@pytest.mark.parametrize(
    ("role", "district", "school", "classes", "field"),
    [
        ("district_admin", "", "", (), "district"),
        ("district_admin", "d1", "s1", (), "school"),
        ("school_admin", "d1", "", (), "school"),
        ("teacher", "d1", "s1", (), "class"),
        ("teacher", "d1", "s1", (TeachRef("s1", "3/2", "c"),), "class"),
        ("superuser", "d1", "", (), "role"),
    ],
)
async def test_an_account_scope_must_make_sense_for_its_role(
    redis: Redis, role: str, district: str, school: str, classes: tuple[TeachRef, ...], field: str
) -> None:
    with pytest.raises(AccountError) as caught:
        await AccountStore(redis, cost=CHEAP).create("carol", "a-long-password", role, district=district,
                                                     school=school, classes=classes)  # fmt: skip
    assert caught.value.field == field


@pytest.fixture
def config_file(tmp_path: Path, redis_url: str) -> str:
    path = tmp_path / "config.toml"
    path.write_text(f'[redis]\nurl = "{redis_url}"\n', encoding="utf-8")
    return str(path)


async def test_bot_admin_create_passwd_and_list(
    redis: Redis, config_file: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    roster = RosterStore(redis)
    await roster.put_school(School("s1", "平安路小学", "d1", "demo"))
    await roster.ensure_class("s1", "3-2")
    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-password\n"))
    argv = ["--config", config_file, "admin", "create", "--username", "t32", "--role", "teacher", "--school", "s1",
            "--class", "3-2", "--password-stdin"]  # fmt: skip
    assert await _cli(argv) == 0
    assert "teacher of school s1 (district d1), classes 3-2" in capsys.readouterr().out
    account = await AccountStore(redis).get("t32")
    assert account is not None and account.district == "d1" and account.classes == (TeachRef("s1", "3-2", "c"),)

    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-password\n"))
    argv = ["--config", config_file, "admin", "create", "--username", "t99", "--role", "teacher", "--school", "s1",
            "--class", "9-9", "--password-stdin"]  # fmt: skip
    assert await _cli(argv) == 2
    assert "has no class 9-9" in capsys.readouterr().err

    await SessionStore(redis).start("acct:t32")
    await LoginThrottle(redis, account_max=1).failed("t32", "10.0.0.1")
    monkeypatch.setattr("sys.stdin", io.StringIO("another-long-password\n"))
    assert await _cli(["--config", config_file, "admin", "passwd", "--username", "t32", "--password-stdin"]) == 0
    assert "1 session(s) ended, login lockout cleared" in capsys.readouterr().out
    assert await AccountStore(redis).authenticate("t32", "another-long-password") is not None
    assert not await redis.exists(keys.login_failures("a", "t32"))

    assert await _cli(["--config", config_file, "admin", "list"]) == 0
    out = capsys.readouterr().out
    assert "t32" in out and "teacher" in out and "scrypt" not in out
    assert await _cli(["--config", config_file, "admin", "passwd", "--username", "nobody", "--password-stdin"]) == 1


async def _cli(argv: list[str]) -> int:
    import asyncio

    return await asyncio.to_thread(main, argv)  # the command runs its own event loop
