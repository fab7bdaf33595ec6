"""API tokens: stored only as a hash, looked up by it, revoked at once, rotated with a grace period."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from typing import Any

import pytest

from bot.store import keys
from bot.store.redis import Redis
from bot.web.tokens import ROTATE_GRACE, TOKEN_PREFIX, TokenError, TokenStore


async def everything_stored(redis: Redis) -> str:
    """Every key and value in the database, as one string (to look for a leaked token)."""
    out = []
    async for key in redis.scan_iter():
        kind = await redis.type(key)
        value: Any = await redis.hgetall(key) if kind == "hash" else await redis.get(key) if kind == "string" else ""
        out.append(f"{key}={value}")
    return "\n".join(out)


async def test_a_token_is_stored_only_as_its_sha256(redis: Redis) -> None:
    store = TokenStore(redis)
    token, record = await store.create("console", "district_admin", "d1")
    assert token.startswith(TOKEN_PREFIX) and len(token) > 40
    stored = await everything_stored(redis)
    assert token not in stored and token[len(TOKEN_PREFIX) :] not in stored
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert await redis.get(keys.api_token(digest)) == "console"
    assert await redis.hget(keys.api_token_record("console"), "hash") == digest
    found = await store.lookup(token)
    assert found is not None and found.subject().role == "district_admin" and found.subject().district == "d1"
    assert found.subject().name == "token:console" and record.name == "console"


async def test_wrong_or_malformed_tokens_find_nothing(redis: Redis) -> None:
    store = TokenStore(redis)
    token, _ = await store.create("console", "school_admin", "d1", "s1")
    for bad in ("", token[:-1], token + "x", token.upper(), token[len(TOKEN_PREFIX) :], "sbt_" + "é" * 10, "x" * 10**5):
        assert await store.lookup(bad) is None, bad[:20]


async def test_token_scope_and_name_are_checked(redis: Redis) -> None:
    store = TokenStore(redis)
    for args, field in [
        (("a b", "district_admin", "d1"), "name"),
        (("a", "teacher", "d1"), "role"),
        (("a", "district_admin", ""), "district"),
        (("a", "school_admin", "d1"), "school"),
        (("a", "district_admin", "d1", "s1"), "school"),
    ]:
        with pytest.raises(TokenError) as info:
            await store.create(*args)
        assert info.value.field == field
    await store.create("a", "district_admin", "d1")
    with pytest.raises(TokenError, match="exists"):
        await store.create("a", "district_admin", "d1")


async def test_a_revoked_token_stops_at_once(redis: Redis) -> None:
    store = TokenStore(redis)
    token, _ = await store.create("script", "school_admin", "d1", "s1")
    assert await store.revoke("script")
    assert await store.lookup(token) is None
    assert await store.list() == []
    assert not await store.revoke("script")
    assert await everything_stored(redis) == ""


async def test_rotation_keeps_the_old_token_for_the_grace_period_then_not(redis: Redis) -> None:
    store = TokenStore(redis)
    now = 1_800_000_000.0
    old, _ = await store.create("script", "school_admin", "d1", "s1", now=now)
    new, record = await store.rotate("script", now=now + 10)
    assert new != old and record.old_until == now + 10 + ROTATE_GRACE
    assert await store.lookup(new, now=now + 20) is not None
    assert await store.lookup(old, now=now + 20) is not None  # still inside the grace period
    assert await store.lookup(old, now=now + 10 + ROTATE_GRACE + 1) is None  # past it
    assert await store.lookup(new, now=now + 10 + ROTATE_GRACE + 1) is not None
    ttl = await redis.ttl(keys.api_token(hashlib.sha256(old.encode()).hexdigest()))
    assert 0 < ttl <= ROTATE_GRACE  # and Redis forgets it then
    # a second rotation ends the first old token at once; grace 0 ends the current one at once
    newer, _ = await store.rotate("script", now=now + 30)
    assert await store.lookup(old, now=now + 40) is None and await store.lookup(new, now=now + 40) is not None
    newest, record = await store.rotate("script", grace=0, now=now + 50)
    assert await store.lookup(newer, now=now + 60) is None and await store.lookup(newest, now=now + 60) is not None
    assert record.old_until == 0
    # revoking stops the current and the previous token together
    latest, _ = await store.rotate("script", now=now + 70)
    await store.revoke("script")
    assert await store.lookup(latest, now=now + 80) is None and await store.lookup(newest, now=now + 80) is None
    with pytest.raises(TokenError):
        await store.rotate("script")


async def test_last_used_is_recorded_without_a_write_per_request(redis: Redis) -> None:
    store = TokenStore(redis)
    token, _ = await store.create("script", "district_admin", "d1", now=1000.0)
    await store.lookup(token, now=2000.0)
    await store.lookup(token, now=2030.0)  # within a minute: not written again
    [record] = await store.list()
    assert record.last_used == 2000.0


def bot(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOT")}
    env["BOT__REDIS__URL"] = redis_url
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], env=env, capture_output=True, text=True, timeout=30, check=False
    )


async def test_the_token_commands_print_a_token_once_and_never_list_it(redis: Redis, redis_url: str) -> None:
    from bot.roster.model import School
    from bot.roster.store import RosterStore

    await RosterStore(redis).put_school(School("s1", "平安路小学", "d1", "r"))
    created = bot(
        redis_url, "admin", "token", "create", "--name", "console", "--role", "school_admin", "--school", "s1"
    )
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith(TOKEN_PREFIX) and "district d1" in created.stderr
    found = await TokenStore(redis).lookup(token)
    assert found is not None and found.district == "d1"  # taken from the roster

    listed = bot(redis_url, "admin", "token", "list")
    assert listed.returncode == 0 and "console" in listed.stdout and token not in listed.stdout + listed.stderr

    rotated = bot(redis_url, "admin", "token", "rotate", "console", "--grace-hours", "1")
    assert rotated.returncode == 0 and "works until" in rotated.stderr
    assert await TokenStore(redis).lookup(rotated.stdout.strip()) is not None
    assert await TokenStore(redis).lookup(token) is not None

    revoked = bot(redis_url, "admin", "token", "revoke", "console")
    assert revoked.returncode == 0 and await TokenStore(redis).lookup(rotated.stdout.strip()) is None
    assert bot(redis_url, "admin", "token", "revoke", "console").returncode == 1
    unknown = bot(redis_url, "admin", "token", "create", "--name", "x", "--role", "school_admin", "--school", "nope")
    assert unknown.returncode == 2 and unknown.stderr.startswith("school:") and "Traceback" not in unknown.stderr
