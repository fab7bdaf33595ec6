"""API tokens: a bearer secret for scripts and the console's backend, acting as a school or district admin.

The token is shown once, when it is created or rotated; Redis keeps only its SHA-256. A request's
token is hashed and looked up by that hash, so no stored secret is ever compared with what a caller
sent (nothing to time), and a copy of the database gives nobody a working token. Tokens are 32
random bytes, so a fast hash is the right one: there is nothing to brute-force as with a password.

Rotation issues a new token and keeps the previous one working for a grace period (default 24 h),
long enough to redeploy whatever uses it; then the old one stops (its key expires, and lookups also
check the recorded end of the grace). Only the immediately previous token is kept: rotating twice
ends the first one at once. Revoking stops the current and the previous token at once.

Commands: ``bot admin token create|list|revoke|rotate`` (registered through ``bot.cli.EXTRA_COMMANDS``).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import re
import secrets
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, cast, get_args

from bot import clock
from bot.roster.authz import Subject
from bot.store import keys
from bot.store.redis import Redis, get, hgetall

if TYPE_CHECKING:
    from bot.config import Config

TOKEN_PREFIX = "sbt_"  # recognisable in a leaked paste, and by secret scanners
TOKEN_BYTES = 32
TOKEN_MAX = 100  # anything longer is not one of ours: refused before hashing
ROTATE_GRACE = 24 * 3600  # seconds the previous token keeps working after a rotation
LAST_USED_EVERY = 60  # seconds: last_used is written at most once a minute per token, not per request
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

TokenRole = Literal["school_admin", "district_admin"]
ROLES: tuple[TokenRole, ...] = get_args(TokenRole)

# Update last_used only while the token still exists (a revoke between lookup and touch must not
# leave a half record behind). KEYS: record. ARGV: now.
_TOUCH = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'last_used', ARGV[1]) end
return 0
"""


class TokenError(ValueError):
    """A token request that cannot be done as given; ``field`` names the option to fix."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


@dataclass(frozen=True, slots=True)
class ApiToken:
    """What a token stands for (never the token itself)."""

    name: str
    role: TokenRole
    district: str
    school: str = ""
    created: float = 0.0
    last_used: float = 0.0
    old_until: float = 0.0  # the previous token works until then (0: no previous token)

    def subject(self) -> Subject:
        return Subject(self.role, school=self.school, district=self.district, name=f"token:{self.name}")

    @property
    def scope(self) -> str:
        return f"school {self.school} (district {self.district})" if self.school else f"district {self.district}"


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _looks_like_token(token: str) -> bool:
    return token.startswith(TOKEN_PREFIX) and len(token) <= TOKEN_MAX and token.isascii()


def _record(name: str, raw: dict[str, str]) -> ApiToken:
    return ApiToken(
        name=name,
        role=cast(TokenRole, raw.get("role", "school_admin")),
        district=raw.get("district", ""),
        school=raw.get("school", ""),
        created=float(raw.get("created") or 0),
        last_used=float(raw.get("last_used") or 0),
        old_until=float(raw.get("old_until") or 0) if raw.get("old_hash") else 0.0,
    )


def check_scope(role: str, district: str, school: str) -> None:
    if role not in ROLES:
        raise TokenError("role", f"must be one of {', '.join(ROLES)}")
    if not district:
        raise TokenError("district", "is required")
    if role == "school_admin" and not school:
        raise TokenError("school", "a school_admin token needs --school")
    if role == "district_admin" and school:
        raise TokenError("school", "a district_admin token covers the whole district: leave out --school")


# Token changes are Lua scripts on keys of the {tok} hash tag: atomic on one Redis and on a Cluster
# (redis-py's cluster client cannot WATCH). The hash keys of older tokens are derived in the script
# from the prefix passed in ARGV; they share the hash tag, so they live in the same slot.
# KEYS: record, hash key, names. ARGV: name, role, district, school, now, digest
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'role', ARGV[2], 'district', ARGV[3], 'school', ARGV[4],
           'created', ARGV[5], 'hash', ARGV[6])
redis.call('SET', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[5])
return 1
"""

# KEYS: record, names. ARGV: name, hash-key prefix
_REVOKE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local h = redis.call('HMGET', KEYS[1], 'hash', 'old_hash')
for _, digest in ipairs(h) do
  if digest and digest ~= '' then redis.call('DEL', ARGV[2] .. digest) end
end
redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""

# KEYS: record, new hash key. ARGV: name, digest, now, grace seconds, old_until, hash-key prefix
_ROTATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
local cur = redis.call('HGET', KEYS[1], 'hash') or ''
local earlier = redis.call('HGET', KEYS[1], 'old_hash') or ''
redis.call('SET', KEYS[2], ARGV[1])
if earlier ~= '' and earlier ~= cur then redis.call('DEL', ARGV[6] .. earlier) end
if cur ~= '' and tonumber(ARGV[4]) > 0 then
  redis.call('SET', ARGV[6] .. cur, ARGV[1], 'EX', ARGV[4])
  redis.call('HSET', KEYS[1], 'old_hash', cur, 'old_until', ARGV[5])
else
  if cur ~= '' then redis.call('DEL', ARGV[6] .. cur) end
  redis.call('HDEL', KEYS[1], 'old_hash', 'old_until')
end
redis.call('HSET', KEYS[1], 'hash', ARGV[2], 'rotated', ARGV[3])
return redis.call('HGETALL', KEYS[1])
"""


class TokenStore:
    def __init__(self, redis: Redis) -> None:
        self.r = redis
        self._touch = redis.register_script(_TOUCH)
        self._create = redis.register_script(_CREATE)
        self._revoke = redis.register_script(_REVOKE)
        self._rotate = redis.register_script(_ROTATE)

    async def create(
        self, name: str, role: str, district: str, school: str = "", *, now: float | None = None
    ) -> tuple[str, ApiToken]:
        """A new token (returned once, never stored) and its record. The name must be free."""
        if not NAME_RE.match(name):
            raise TokenError("name", "1–64 letters, digits, '-', '_' or '.'")
        check_scope(role, district, school)
        now = clock.now() if now is None else now
        token = new_token()
        digest = hash_token(token)
        created = await self._create(
            keys=[keys.api_token_record(name), keys.api_token(digest), keys.api_token_names()],
            args=[name, role, district, school, repr(now), digest],
        )
        if not int(created):
            raise TokenError("name", f"a token named {name!r} exists: rotate or revoke it")
        return token, ApiToken(name, cast(TokenRole, role), district, school, now)

    async def lookup(self, token: str, *, now: float | None = None) -> ApiToken | None:
        """The token's record if the token is current, or the previous one inside its grace; else None."""
        if not _looks_like_token(token):
            return None
        digest = hash_token(token)
        name = await get(self.r, keys.api_token(digest))
        if not name:
            return None
        raw = await hgetall(self.r, keys.api_token_record(name))
        if not raw:
            return None  # revoked
        now = clock.now() if now is None else now
        current = hmac.compare_digest(raw.get("hash", ""), digest)
        previous = hmac.compare_digest(raw.get("old_hash", ""), digest) and float(raw.get("old_until") or 0) > now
        if not (current or previous):
            return None
        record = _record(name, raw)
        if now - record.last_used >= LAST_USED_EVERY:
            await self._touch(keys=[keys.api_token_record(name)], args=[repr(now)])
        return record

    async def list(self) -> list[ApiToken]:
        names = sorted(cast(dict[str, str], await self.r.hgetall(keys.api_token_names())))
        if not names:
            return []
        async with self.r.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(keys.api_token_record(name))
            raws: list[dict[str, str]] = await pipe.execute()
        return [_record(name, raw) for name, raw in zip(names, raws, strict=True) if raw]

    async def revoke(self, name: str) -> bool:
        """Stop the token (and a previous one still in its grace) at once. False if there is none."""
        done = await self._revoke(
            keys=[keys.api_token_record(name), keys.api_token_names()], args=[name, keys.api_token("")]
        )
        return bool(int(done))

    async def rotate(self, name: str, *, grace: float = ROTATE_GRACE, now: float | None = None) -> tuple[str, ApiToken]:
        """A new token for ``name``; the current one keeps working for ``grace`` seconds (0: stops now)."""
        now = clock.now() if now is None else now
        token = new_token()
        digest = hash_token(token)
        flat = await self._rotate(
            keys=[keys.api_token_record(name), keys.api_token(digest)],
            args=[name, digest, repr(now), int(grace), repr(now + grace), keys.api_token("")],
        )
        if not flat:
            raise TokenError("name", f"no token named {name!r} (see bot admin token list)")
        raw = dict(zip(flat[::2], flat[1::2], strict=True))
        return token, _record(name, raw)


# -- bot admin token … ----------------------------------------------------------------------------


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    """Registered through ``bot.cli.EXTRA_COMMANDS``."""
    p = sub.add_parser("admin", parents=[common], help="administration: API tokens")
    what = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    t = what.add_parser("token", parents=[common], help="API tokens for the JSON API (/api/...)")
    do = t.add_subparsers(dest="action", required=True, metavar="ACTION")

    c = do.add_parser(
        "create",
        parents=[common],
        help="create a token and print it once",
        description="Prints the token once on stdout (store it now: only its hash is kept).",
    )
    c.add_argument("--name", required=True, help="a name for people: who or what uses the token")
    c.add_argument("--role", required=True, choices=ROLES)
    c.add_argument("--district", default="", help="district id (a school_admin's is taken from the roster)")
    c.add_argument("--school", default="", help="school id (school_admin)")
    c.set_defaults(func=_cmd_create)

    ls = do.add_parser("list", parents=[common], help="tokens, their scope and last use (never the tokens)")
    ls.set_defaults(func=_cmd_list)

    r = do.add_parser("revoke", parents=[common], help="stop a token at once")
    r.add_argument("name", metavar="NAME")
    r.set_defaults(func=_cmd_revoke)

    o = do.add_parser("rotate", parents=[common], help="a new token; the old one works for a grace period")
    o.add_argument("name", metavar="NAME")
    o.add_argument("--grace-hours", type=float, default=ROTATE_GRACE / 3600,
                   help=f"hours the old token works on (default {ROTATE_GRACE // 3600}; 0: stops now)")  # fmt: skip
    o.set_defaults(func=_cmd_rotate)


def _when(ts: float) -> str:
    return clock.local(ts).strftime("%Y-%m-%d %H:%M") if ts else "never"


def _cmd_create(cfg: Config, args: argparse.Namespace) -> int:
    from bot.cliutil import run_with_redis as _run
    from bot.roster.store import RosterStore

    async def work(r: Redis) -> int:
        district, school = args.district, args.school
        if args.role == "school_admin" and school:
            known = await RosterStore(r).school(school)
            if known is None:
                print(f"school: unknown school {school!r} (see bot import schools FILE)", file=sys.stderr)
                return 2
            if district and district != known.district:
                print(f"district: school {school} is in district {known.district}, not {district}", file=sys.stderr)
                return 2
            district = known.district
        try:
            token, record = await TokenStore(r).create(args.name, args.role, district, school)
        except TokenError as exc:
            print(f"{exc.field}: {exc.message}", file=sys.stderr)
            return 2
        print(f"token {record.name!r}: {record.role} of {record.scope}. Shown once: store it now.", file=sys.stderr)
        print(token)
        return 0

    return _run(cfg, work)


def _cmd_list(cfg: Config, args: argparse.Namespace) -> int:
    from bot.cliutil import run_with_redis as _run

    async def work(r: Redis) -> int:
        tokens = await TokenStore(r).list()
        if not tokens:
            print("no API tokens (bot admin token create --name N --role ROLE …)")
            return 0
        rows = [("name", "role", "scope", "created", "last used", "previous token")]
        now = clock.now()
        for t in tokens:
            old = f"works until {_when(t.old_until)}" if t.old_until > now else ""
            rows.append((t.name, t.role, t.scope, _when(t.created), _when(t.last_used), old))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        return 0

    return _run(cfg, work)


def _cmd_revoke(cfg: Config, args: argparse.Namespace) -> int:
    from bot.cliutil import run_with_redis as _run

    async def work(r: Redis) -> int:
        if not await TokenStore(r).revoke(args.name):
            print(f"name: no token named {args.name!r} (see bot admin token list)", file=sys.stderr)
            return 1
        print(f"token {args.name!r} revoked: it stops working now")
        return 0

    return _run(cfg, work)


def _cmd_rotate(cfg: Config, args: argparse.Namespace) -> int:
    from bot.cliutil import run_with_redis as _run

    if not 0 <= args.grace_hours <= 24 * 30:
        print("grace-hours: between 0 and 720", file=sys.stderr)
        return 2

    async def work(r: Redis) -> int:
        try:
            token, record = await TokenStore(r).rotate(args.name, grace=args.grace_hours * 3600)
        except TokenError as exc:
            print(f"{exc.field}: {exc.message}", file=sys.stderr)
            return 1
        old = f"the old one works until {clock.fmt(record.old_until)}" if record.old_until else "the old one stopped"
        print(f"token {record.name!r} rotated; {old}. Shown once: store it now.", file=sys.stderr)
        print(token)
        return 0

    return _run(cfg, work)
