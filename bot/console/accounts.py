"""Console accounts: a username, a role scoped by the roster, and a password hashed with scrypt.

Why scrypt (``hashlib.scrypt``) and not argon2: it is in the standard library (OpenSSL), so no
compiled dependency to install on a school's server, and it is memory-hard, which is what makes a
stolen hash expensive to brute-force. The cost is OWASP's equivalent setting N=2^15, r=8, p=3
(32 MiB and a few hundred milliseconds per hash); it is stored with each hash, so raising
:data:`DEFAULT_COST` upgrades every hash at its owner's next login. Hashing runs in a thread, at most
:data:`HASHES_AT_ONCE` at a time per process, so a burst of logins neither blocks the event loop nor
runs the server out of memory.

An unknown username costs the same hash as a known one (against a dummy), so timing does not tell
which usernames exist. Roles are those of :mod:`bot.roster.authz`; an account becomes a
:class:`~bot.roster.authz.Subject` and every page asks ``can(subject, action, obj)``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Literal, get_args

from bot import clock
from bot.roster.authz import Subject
from bot.roster.model import TeachRef, Who
from bot.store import keys
from bot.store.redis import Redis, hgetall

AccountRole = Literal["district_admin", "school_admin", "teacher"]
ROLES: tuple[AccountRole, ...] = get_args(AccountRole)
ROLE_LABELS: dict[str, str] = {"district_admin": "区县管理员", "school_admin": "学校管理员", "teacher": "老师"}

USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,31}$")
PASSWORD_MIN = 10
PASSWORD_MAX = 128  # longer inputs are refused before hashing (no hashing of megabytes)
CLASS_RE = re.compile(r"^\d{1,2}-[^/|,;:\s]{1,8}$")
HASHES_AT_ONCE = 2


@dataclass(frozen=True, slots=True)
class ScryptCost:
    n: int = 2**15
    r: int = 8
    p: int = 3

    @property
    def memory(self) -> int:
        return 128 * self.r * self.n

    @property
    def work(self) -> int:
        return self.n * self.r * self.p


DEFAULT_COST = ScryptCost()
_SALT_BYTES = 16
_KEY_BYTES = 32


class AccountError(ValueError):
    """An account request that cannot be done as given; ``field`` names the option to fix."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


# -- hashing -------------------------------------------------------------------------------------
def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _scrypt(password: str, salt: bytes, cost: ScryptCost) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=cost.n, r=cost.r, p=cost.p, maxmem=2 * cost.memory, dklen=_KEY_BYTES
    )


def hash_password(password: str, cost: ScryptCost = DEFAULT_COST) -> str:
    """``scrypt$ln=15,r=8,p=3$<salt>$<key>``: the parameters travel with the hash."""
    salt = secrets.token_bytes(_SALT_BYTES)
    ln = cost.n.bit_length() - 1
    return f"scrypt$ln={ln},r={cost.r},p={cost.p}${_b64(salt)}${_b64(_scrypt(password, salt, cost))}"


def parse_hash(stored: str) -> tuple[ScryptCost, bytes, bytes] | None:
    parts = stored.split("$")
    if len(parts) != 4 or parts[0] != "scrypt":
        return None
    try:
        params = dict(item.split("=", 1) for item in parts[1].split(","))
        ln, r, p = int(params["ln"]), int(params["r"]), int(params["p"])
        salt, key = _unb64(parts[2]), _unb64(parts[3])
    except (KeyError, ValueError, binascii.Error):
        return None
    if not (1 <= ln <= 20 and 1 <= r <= 32 and 1 <= p <= 16) or len(key) != _KEY_BYTES:
        return None
    return ScryptCost(2**ln, r, p), salt, key


def check_password(password: str, stored: str) -> bool:
    parsed = parse_hash(stored)
    if parsed is None:
        return False
    cost, salt, key = parsed
    return hmac.compare_digest(_scrypt(password, salt, cost), key)


def check_new_password(password: str, username: str) -> None:
    if len(password) < PASSWORD_MIN:
        raise AccountError("password", f"at least {PASSWORD_MIN} characters")
    if len(password) > PASSWORD_MAX:
        raise AccountError("password", f"at most {PASSWORD_MAX} characters")
    if username and username.lower() in password.lower():
        raise AccountError("password", "must not contain the username")
    if len(set(password)) < 4:
        raise AccountError("password", "too simple: use at least 4 different characters")


# -- the account ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Account:
    username: str
    role: AccountRole
    district: str
    school: str = ""
    classes: tuple[TeachRef, ...] = ()  # a teacher's classes: role "c" class teacher, "s" subject teacher
    created: float = 0.0
    updated: float = 0.0  # when the password was last set

    def subject(self) -> Subject:
        name = f"console:{self.username}"
        if self.role == "teacher":
            who = Who(teaches=self.classes)
            return Subject("teacher", who, name=name, districts={self.school: self.district})
        if self.role == "school_admin":
            return Subject("school_admin", school=self.school, district=self.district, name=name)
        return Subject("district_admin", district=self.district, name=name)

    @property
    def scope(self) -> str:
        if self.role == "district_admin":
            return f"district {self.district}"
        if self.role == "school_admin":
            return f"school {self.school} (district {self.district})"
        taught = ", ".join(f"{t.class_id}{'' if t.role == 'c' else ' (subject)'}" for t in self.classes)
        return f"school {self.school} (district {self.district}), classes {taught}"


def _encode_classes(classes: tuple[TeachRef, ...]) -> str:
    return ",".join(f"{t.class_id}:{t.role}" for t in classes)


def _decode_classes(school: str, raw: str) -> tuple[TeachRef, ...]:
    out = []
    for part in raw.split(","):
        cid, _, role = part.partition(":")
        if cid:
            out.append(TeachRef(school, cid, role or "c"))
    return tuple(out)


def _account(username: str, raw: dict[str, str]) -> Account | None:
    role = raw.get("role", "")
    if role not in ROLES or not raw.get("password"):
        return None
    school = raw.get("school", "")
    return Account(
        username=username,
        role=role,
        district=raw.get("district", ""),
        school=school,
        classes=_decode_classes(school, raw.get("classes", "")),
        created=float(raw.get("created") or 0),
        updated=float(raw.get("updated") or 0),
    )


def normalise_username(username: str) -> str:
    return username.strip().lower()


def check_scope(role: str, district: str, school: str, classes: tuple[TeachRef, ...]) -> None:
    if role not in ROLES:
        raise AccountError("role", f"must be one of {', '.join(ROLES)}")
    if not district:
        raise AccountError("district", "is required")
    if role == "district_admin" and (school or classes):
        raise AccountError("school", "a district_admin covers the whole district: leave out --school and --class")
    if role in ("school_admin", "teacher") and not school:
        raise AccountError("school", f"a {role} needs --school")
    if role == "school_admin" and classes:
        raise AccountError("class", "a school_admin covers the whole school: leave out --class")
    if role == "teacher" and not classes:
        raise AccountError("class", "a teacher needs at least one --class (e.g. --class 3-2)")
    for t in classes:
        if not CLASS_RE.match(t.class_id):
            raise AccountError("class", f"{t.class_id!r} is not a class id like 3-2")


class AccountStore:
    def __init__(self, redis: Redis, *, cost: ScryptCost = DEFAULT_COST) -> None:
        self.r = redis
        self.cost = cost
        self._dummy: str | None = None
        self._hashing = asyncio.Semaphore(HASHES_AT_ONCE)  # per process (one store per app)

    async def _hash(self, password: str) -> str:
        async with self._hashing:
            return await asyncio.to_thread(hash_password, password, self.cost)

    async def _check(self, password: str, stored: str) -> bool:
        async with self._hashing:
            return await asyncio.to_thread(check_password, password, stored)

    async def get(self, username: str) -> Account | None:
        username = normalise_username(username)
        if not USERNAME_RE.match(username):
            return None
        return _account(username, await hgetall(self.r, keys.account(username)))

    async def create(
        self,
        username: str,
        password: str,
        role: str,
        *,
        district: str,
        school: str = "",
        classes: tuple[TeachRef, ...] = (),
        now: float | None = None,
    ) -> Account:
        """A new account; :class:`AccountError` if the username is taken or a value is invalid."""
        username = normalise_username(username)
        if not USERNAME_RE.match(username):
            raise AccountError("username", "2–32 lowercase letters, digits, '.', '_' or '-' (first a letter or digit)")
        check_scope(role, district, school, classes)
        check_new_password(password, username)
        hashed = await self._hash(password)
        now = clock.now() if now is None else now
        if not await self.r.hsetnx(keys.accounts(), username, f"{role}|{district}|{school}"):
            raise AccountError("username", f"{username!r} is taken (bot admin list)")
        fields = {"role": role, "district": district, "school": school, "classes": _encode_classes(classes),
                  "password": hashed, "created": repr(now), "updated": repr(now)}  # fmt: skip
        await self.r.hset(keys.account(username), mapping=fields)  # type: ignore[arg-type]
        account = _account(username, fields)
        assert account is not None
        return account

    async def set_password(self, username: str, password: str, *, now: float | None = None) -> Account:
        account = await self.get(username)
        if account is None:
            raise AccountError("username", f"no account {username!r} (bot admin list)")
        check_new_password(password, account.username)
        hashed = await self._hash(password)
        now = clock.now() if now is None else now
        await self.r.hset(keys.account(account.username), mapping={"password": hashed, "updated": repr(now)})
        return account

    async def list(self) -> list[Account]:
        names = sorted(await hgetall(self.r, keys.accounts()))
        out = []
        for name in names:
            account = _account(name, await hgetall(self.r, keys.account(name)))
            if account is not None:
                out.append(account)
        return out

    async def authenticate(self, username: str, password: str) -> Account | None:
        """The account if the password is right, else None; the same work either way.

        A hash made with a lower cost than this store's is replaced by one at the current cost.
        """
        username = normalise_username(username)
        raw: dict[str, str] = {}
        if USERNAME_RE.match(username) and 0 < len(password) <= PASSWORD_MAX:
            raw = await hgetall(self.r, keys.account(username))
        stored = raw.get("password", "")
        if not stored:
            await self._check(password[:PASSWORD_MAX], await self._dummy_hash())
            return None
        if not await self._check(password, stored):
            return None
        parsed = parse_hash(stored)
        if parsed is not None and (parsed[0].n, parsed[0].r, parsed[0].p) < (self.cost.n, self.cost.r, self.cost.p):
            rehashed = await self._hash(password)
            await self.r.hset(keys.account(username), "password", rehashed)
        return _account(username, raw)

    async def _dummy_hash(self) -> str:
        if self._dummy is None:
            self._dummy = await self._hash(secrets.token_urlsafe(16))
        return self._dummy
