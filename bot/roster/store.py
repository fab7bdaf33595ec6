"""The roster in Redis: schools, classes, students, guardian links, teachers, identities.

Layout (key names in ``bot/store/keys.py``): per school (hash tag ``{s:<school>}``) a meta hash, a
classes hash, and per class one hash of students and one of guardian links, small enough for
Redis' compact encoding; per user (``{u:<openid>}``) a ``who`` string naming their children and
classes, which the chat engine loads with the conversation state. A binding writes the student's
side first (so notices reach the family even if the second write is lost) and then the guardian's;
both writes are idempotent, so repeating a binding repairs a half-done one.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from bot.roster.model import (
    ACTIVE,
    ChildRef,
    GuardianLink,
    RosterError,
    School,
    Student,
    TeachRef,
    Who,
    clean,
    decode_links,
)
from bot.store import keys
from bot.store.autopipeline import shared
from bot.store.redis import Redis, get, hget, hgetall, hmget, run_script_many

# Class and invite codes avoid look-alike characters (0/O, 1/I/L) people misread from paper.
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CLASS_CODE_LENGTH = 6

# Add or replace one guardian in a student's link list. KEYS: class guardians. ARGV: sid, openid, rel
_ADD_LINK = """
local cur = redis.call('HGET', KEYS[1], ARGV[1]) or ''
local out = {}
for part in string.gmatch(cur, '[^,]+') do
  local o = string.match(part, '^(.*):[^:]*$') or part
  if o ~= ARGV[2] then table.insert(out, part) end
end
table.insert(out, ARGV[2] .. ':' .. ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], table.concat(out, ','))
return #out
"""

# Remove one guardian from a student's link list. KEYS: class guardians. ARGV: sid, openid
_DROP_LINK = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return 0 end
local out = {}
local found = 0
for part in string.gmatch(cur, '[^,]+') do
  local o = string.match(part, '^(.*):[^:]*$') or part
  if o == ARGV[2] then found = 1 else table.insert(out, part) end
end
if #out == 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], table.concat(out, ','))
end
return found
"""


# Move one student to another class of the same school, with guardian links and phone (all keys
# share the school's hash tag). KEYS: old students, old guardians, old phones, new students, new
# guardians, new phones. ARGV: sid, new "name|status". Returns the guardian links moved (or nil).
_MOVE_STUDENT = """
local links = redis.call('HGET', KEYS[2], ARGV[1])
local phone = redis.call('HGET', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[2])
if links then
  redis.call('HDEL', KEYS[2], ARGV[1])
  local there = redis.call('HGET', KEYS[5], ARGV[1])
  if there and there ~= '' then links = there .. ',' .. links end
  redis.call('HSET', KEYS[5], ARGV[1], links)
end
if phone then
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.call('HSET', KEYS[6], ARGV[1], phone)
end
return links
"""

# Point a guardian's child reference at the child's new class, in the ``who`` string (Who.encode:
# "g:school/class/student/relation;..."). KEYS: identity. ARGV: school, student, new class.
_MOVE_CHILD_REF = """
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local out, n = {}, 0
for part in string.gmatch(cur, '[^;]+') do
  local s, c, st, rel = string.match(part, '^g:([^/]*)/([^/]*)/([^/]*)/([^/]*)$')
  if s == ARGV[1] and st == ARGV[2] and c ~= ARGV[3] then
    part = 'g:' .. s .. '/' .. ARGV[3] .. '/' .. st .. '/' .. rel
    n = n + 1
  end
  table.insert(out, part)
end
if n > 0 then redis.call('SET', KEYS[1], table.concat(out, ';'), 'KEEPTTL') end
return n
"""


# Set a string only if it still holds what we read ("" = absent); an empty new value deletes it.
# KEYS: key. ARGV: expected, new
_CAS = """
if (redis.call('GET', KEYS[1]) or '') ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL') end
return 1
"""


@dataclass(frozen=True, slots=True)
class ClassInfo:
    school: str
    id: str
    code: str
    teacher: str  # the class teacher's openid, "" if none has bound yet


@dataclass(frozen=True, slots=True)
class StudentMove:
    """A student changing class within a school (a roster import found them in another class)."""

    student: str
    from_class: str
    to_class: str
    value: str  # the student's new record in the new class: Student.encode()


@dataclass(frozen=True, slots=True)
class SchoolSettings:
    proof: str  # "sid4": last 4 characters of the student id; "phone4": last 4 digits of the guardian phone
    approval: bool  # bindings wait for the class teacher's approval


def new_code(length: int = CLASS_CODE_LENGTH) -> str:
    """A random code with at least one digit and one letter, so it never reads as a word
    ("THANKS") and the chat can tell it from ordinary text."""
    while True:
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(length))
        if any(c.isdigit() for c in code) and any(c.isalpha() for c in code):
            return code


class RosterStore:
    def __init__(self, redis: Redis) -> None:
        self.r = redis
        self._add_link = redis.register_script(_ADD_LINK)
        self._drop_link = redis.register_script(_DROP_LINK)
        self._cas = redis.register_script(_CAS)
        self._move_student = redis.register_script(_MOVE_STUDENT)
        self._move_child_ref = redis.register_script(_MOVE_CHILD_REF)

    # -- schools ------------------------------------------------------------------------------
    async def put_school(self, school: School, *, proof: str = "sid4", approval: bool = False) -> None:
        if proof not in ("sid4", "phone4"):
            raise RosterError(f"proof must be sid4 or phone4, not {proof!r}")
        await self.r.hset(keys.schools(), school.id, f"{school.district}|{school.region}|{school.name}")
        await self.r.hset(
            keys.school_meta(school.id),
            mapping={
                "name": school.name,
                "district": school.district,
                "region": school.region,
                "proof": proof,
                "approval": "1" if approval else "0",
            },
        )

    async def school(self, school_id: str) -> School | None:
        raw = await hget(self.r, keys.schools(), school_id)
        return _school(school_id, raw) if raw else None

    async def schools(self) -> dict[str, School]:
        raw = await hgetall(self.r, keys.schools())
        return {sid: _school(sid, v) for sid, v in raw.items()}

    async def schools_of(self, school_ids: Iterable[str]) -> dict[str, School]:
        """Just these schools (a city has 1,300: reading them all for one parent's 确认 is waste)."""
        ids = sorted(set(school_ids))
        if not ids:
            return {}
        raws = await shared(self.r).execute("HMGET", keys.schools(), *ids)  # hot: on the shared connection
        return {sid: _school(sid, raw) for sid, raw in zip(ids, raws, strict=True) if raw}

    async def settings(self, school_id: str) -> SchoolSettings:
        proof, approval = await hmget(self.r, keys.school_meta(school_id), ["proof", "approval"])
        return SchoolSettings(proof or "sid4", approval == "1")

    # -- classes ------------------------------------------------------------------------------
    async def ensure_class(self, school_id: str, class_id: str) -> ClassInfo:
        """The class's record, creating it (and its unique short code) the first time."""
        existing = await hget(self.r, keys.school_classes(school_id), class_id)
        if existing:
            return _class(school_id, class_id, existing)
        for _ in range(20):
            code = new_code()
            if await self.r.hsetnx(keys.class_codes(), code, f"{school_id}/{class_id}"):
                break
        else:  # 31^6 ≈ 887 million codes: twenty collisions in a row means something is wrong
            raise RosterError("could not find a free class code")
        if not await self.r.hsetnx(keys.school_classes(school_id), class_id, f"{code}|"):
            await self.r.hdel(keys.class_codes(), code)  # another process created it first
            again = await hget(self.r, keys.school_classes(school_id), class_id)
            return _class(school_id, class_id, again or f"{code}|")
        return ClassInfo(school_id, class_id, code, "")

    async def classes(self, school_id: str) -> dict[str, ClassInfo]:
        raw = await hgetall(self.r, keys.school_classes(school_id))
        return {cid: _class(school_id, cid, v) for cid, v in raw.items()}

    async def class_info(self, school_id: str, class_id: str) -> ClassInfo | None:
        raw = await hget(self.r, keys.school_classes(school_id), class_id)
        return _class(school_id, class_id, raw) if raw else None

    async def class_by_code(self, code: str) -> ClassInfo | None:
        ref = await hget(self.r, keys.class_codes(), clean(code).upper())
        if not ref:
            return None
        school_id, _, class_id = ref.partition("/")
        return await self.class_info(school_id, class_id)

    async def set_class_teacher(self, school_id: str, class_id: str, openid: str) -> None:
        info = await self.class_info(school_id, class_id)
        if info is None:
            raise RosterError(f"no class {class_id} in school {school_id}")
        await self.r.hset(keys.school_classes(school_id), class_id, f"{info.code}|{openid}")

    # -- students -----------------------------------------------------------------------------
    async def students(self, school_id: str, class_id: str) -> dict[str, Student]:
        raw = await hgetall(self.r, keys.class_students(school_id, class_id))
        return {sid: Student.decode(school_id, class_id, sid, v) for sid, v in raw.items()}

    async def guardians(self, school_id: str, class_id: str) -> dict[str, list[GuardianLink]]:
        raw = await hgetall(self.r, keys.class_guardians(school_id, class_id))
        return {sid: decode_links(v) for sid, v in raw.items()}

    async def student(self, school_id: str, class_id: str, student_id: str) -> Student | None:
        raw = await hget(self.r, keys.class_students(school_id, class_id), student_id)
        return Student.decode(school_id, class_id, student_id, raw) if raw else None

    async def find_student(self, school_id: str, class_id: str, name: str, proof: str) -> Student | None:
        """The active student of that class with that name whose proof matches, else None.

        Whether the name exists is never told apart from a wrong proof: both are "no match".
        """
        settings = await self.settings(school_id)
        want_name, want_proof = clean(name), clean(proof).upper()
        if not want_name or len(want_proof) < 4:
            return None
        students = await self.students(school_id, class_id)
        matches = [s for s in students.values() if s.status == ACTIVE and clean(s.name) == want_name]
        if not matches:
            return None
        phones: dict[str, str] = {}
        if settings.proof == "phone4":
            phones = await hgetall(self.r, keys.class_phones(school_id, class_id))
        for s in matches:
            secret = phones.get(s.id, "") if settings.proof == "phone4" else s.id
            if secret and secrets.compare_digest(secret[-4:].upper(), want_proof[-4:]):
                return s
        return None

    # -- identities ---------------------------------------------------------------------------
    async def who(self, openid: str) -> Who:
        return Who.decode(await get(self.r, keys.identity(openid)))

    async def _update_who(self, openid: str, change: Any) -> Who:
        """Read-modify-write of one user's ``who`` string: compare-and-set in Lua, retried when someone
        changed it between our read and our write (no WATCH, which redis-py's cluster client lacks)."""
        key = keys.identity(openid)
        while True:
            raw = await get(self.r, key)
            new: Who = change(Who.decode(raw))
            if int(await self._cas(keys=[key], args=[raw or "", new.encode()])):
                return new

    # -- guardians ----------------------------------------------------------------------------
    async def bind_guardian(self, openid: str, student: Student, relation: str) -> Who:
        await self._add_link(
            keys=[keys.class_guardians(student.school, student.class_id)], args=[student.id, openid, relation]
        )
        ref = ChildRef(student.school, student.class_id, student.id, relation)
        return await self._update_who(openid, lambda w: w.with_child(ref))

    async def unbind_guardian(self, openid: str, child: ChildRef) -> Who:
        await self._drop_link(keys=[keys.class_guardians(child.school, child.class_id)], args=[child.student, openid])
        await self.r.delete(keys.lesson_progress(openid, child.school, child.student))
        who = await self._update_who(openid, lambda w: w.without_child(child.school, child.student))
        if not who.children and not who.teaches:
            await self.forget_user(openid)
        return who

    async def forget_user(self, openid: str) -> None:
        """Delete what we keep about a person who is linked to nothing any more.

        The count of wrong binding proofs stays until its hour is over (a number, nothing more):
        deleting it would let a parent who is paused unbind, bind their own child again and guess on.
        """
        await self.r.delete(keys.identity(openid), keys.chat_state(openid), keys.cs_window(openid))

    async def erase_guardian(self, openid: str) -> int:
        """Remove a guardian from every child and delete their data (``bot privacy erase``, 解绑 all)."""
        who = await self.who(openid)
        for child in who.children:
            await self.r.delete(keys.lesson_progress(openid, child.school, child.student))
            await self._drop_link(
                keys=[keys.class_guardians(child.school, child.class_id)], args=[child.student, openid]
            )
        await self._update_who(openid, lambda w: Who((), w.teaches))
        if not who.teaches:
            await self.forget_user(openid)
        return len(who.children)

    # -- binding attempts ---------------------------------------------------------------------
    async def bind_failures(self, openid: str) -> int:
        return int(await get(self.r, keys.bind_failures(openid)) or 0)

    async def record_bind_failure(self, openid: str, window: int) -> int:
        key = keys.bind_failures(openid)
        # The window starts at the first failure: create with a TTL, then count (INCR keeps the TTL).
        # (EXPIRE … NX would do, but needs Redis 7; the embedded server is 6.2.)
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.set(key, 0, ex=window, nx=True)
            pipe.incr(key)
            _, count = await pipe.execute()
        return int(count)

    # -- approvals ----------------------------------------------------------------------------
    async def add_pending(self, openid: str, student: Student, relation: str) -> None:
        field = f"{student.class_id}/{student.id}/{openid}"
        await self.r.hset(keys.pending_bindings(student.school), field, f"{relation}|{int(time.time())}")

    async def pending(self, school_id: str, class_ids: Iterable[str]) -> list[tuple[str, str, str, str]]:
        """(class, student, openid, relation) waiting in those classes, oldest first."""
        wanted = set(class_ids)
        raw = await hgetall(self.r, keys.pending_bindings(school_id))
        rows: list[tuple[int, tuple[str, str, str, str]]] = []
        for field, value in raw.items():
            cid, sid, openid = field.split("/", 2)
            rel, _, ts = value.partition("|")
            if cid in wanted:
                rows.append((int(ts or 0), (cid, sid, openid, rel)))
        return [r for _, r in sorted(rows)]

    async def resolve_pending(self, school_id: str, class_id: str, sid: str, openid: str) -> bool:
        return bool(await self.r.hdel(keys.pending_bindings(school_id), f"{class_id}/{sid}/{openid}"))

    # -- teachers -----------------------------------------------------------------------------
    async def create_teacher_invite(self, school_id: str, class_ids: list[str], role: str, ttl: int) -> str:
        if role not in ("c", "s"):
            raise RosterError("role must be c (class teacher) or s (subject teacher)")
        known = await self.classes(school_id)
        missing = [c for c in class_ids if c not in known]
        if missing:
            raise RosterError(f"school {school_id} has no class {', '.join(missing)}")
        code = "T" + new_code(7)
        key = keys.teacher_invite(code)
        await self.r.hset(key, mapping={"school": school_id, "classes": ",".join(class_ids), "role": role})
        await self.r.expire(key, ttl)
        return code

    async def redeem_teacher_invite(self, code: str, openid: str) -> list[TeachRef] | None:
        key = keys.teacher_invite(clean(code).upper())
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.hgetall(key)
            pipe.delete(key)
            data, _ = await pipe.execute()
        if not data:
            return None
        refs = [TeachRef(data["school"], cid, data["role"]) for cid in data["classes"].split(",") if cid]

        def add(w: Who) -> Who:
            for ref in refs:
                w = w.with_class(ref)
            return w

        who = await self._update_who(openid, add)
        mine = [t for t in who.teaches if t.school == data["school"]]
        await self.r.hset(
            keys.school_teachers(data["school"]), openid, ",".join(f"{t.class_id}:{t.role}" for t in mine)
        )
        for ref in refs:
            if ref.role == "c":
                await self.set_class_teacher(ref.school, ref.class_id, openid)
        return refs

    # -- bulk changes (roster import, bot/roster/importer.py) -----------------------------------
    async def create_classes(self, school_id: str, class_ids: Iterable[str], *, batch: int = 2000) -> dict[str, str]:
        """``ensure_class`` for many classes in a few pipelined round trips: class id → code.

        Only classes not yet in the school are created; codes stay unique through HSETNX on the
        global code index, and a class another process created meanwhile keeps its own code.
        """
        wanted = list(dict.fromkeys(class_ids))
        existing = await hmget(self.r, keys.school_classes(school_id), wanted) if wanted else []
        todo = [cid for cid, raw in zip(wanted, existing, strict=True) if not raw]
        codes: dict[str, str] = {}
        for _ in range(20):
            if not todo:
                break
            tried = [(cid, new_code()) for cid in todo]
            taken: list[Any] = []
            for i in range(0, len(tried), batch):
                async with self.r.pipeline(transaction=False) as pipe:
                    for cid, code in tried[i : i + batch]:
                        pipe.hsetnx(keys.class_codes(), code, f"{school_id}/{cid}")
                    taken += await pipe.execute()
            todo = [cid for (cid, _), ok in zip(tried, taken, strict=True) if not ok]
            codes.update((cid, code) for (cid, code), ok in zip(tried, taken, strict=True) if ok)
        if todo:
            raise RosterError("could not find a free class code")
        items = list(codes.items())
        created: dict[str, str] = {}
        for i in range(0, len(items), batch):
            async with self.r.pipeline(transaction=False) as pipe:
                for cid, code in items[i : i + batch]:
                    pipe.hsetnx(keys.school_classes(school_id), cid, f"{code}|")
                results = await pipe.execute()
            lost = [(cid, code) for (cid, code), ok in zip(items[i : i + batch], results, strict=True) if not ok]
            created.update((cid, code) for (cid, code), ok in zip(items[i : i + batch], results, strict=True) if ok)
            if lost:  # another process created these classes first: give our codes back
                await self.r.hdel(keys.class_codes(), *(code for _, code in lost))
        return created

    async def move_students(self, school_id: str, moves: Sequence[StudentMove], *, batch: int = 1000) -> int:
        """Move students to other classes of their school, with their guardian links, phone and pending
        bindings, and point every linked guardian's ``who`` record at the new class.

        Each student moves atomically (one script on the school's keys); the guardians follow in a
        second pipelined pass (their keys live elsewhere). Both steps are idempotent, so an
        interrupted import is repaired by running it again. Returns the guardian records updated.
        """
        followers: list[tuple[str, StudentMove]] = []
        for i in range(0, len(moves), batch):
            chunk = moves[i : i + batch]
            calls: list[tuple[list[str], list[Any]]] = [
                (
                    [
                        keys.class_students(school_id, m.from_class),
                        keys.class_guardians(school_id, m.from_class),
                        keys.class_phones(school_id, m.from_class),
                        keys.class_students(school_id, m.to_class),
                        keys.class_guardians(school_id, m.to_class),
                        keys.class_phones(school_id, m.to_class),
                    ],
                    [m.student, m.value],
                )
                for m in chunk
            ]
            links = await run_script_many(self.r, self._move_student, calls)
            for m, raw in zip(chunk, links, strict=True):
                followers += [(link.openid, m) for link in decode_links(cast(str | None, raw))]
        updated = 0
        for i in range(0, len(followers), batch):
            refs: list[tuple[list[str], list[Any]]] = [
                ([keys.identity(openid)], [school_id, m.student, m.to_class]) for openid, m in followers[i : i + batch]
            ]
            updated += sum(1 for n in await run_script_many(self.r, self._move_child_ref, refs) if n)
        await self._move_pending(school_id, moves)
        return updated

    async def _move_pending(self, school_id: str, moves: Sequence[StudentMove]) -> None:
        """Bindings waiting for approval name the class: rename those of moved students."""
        if not moves:
            return
        pending = await hgetall(self.r, keys.pending_bindings(school_id))
        if not pending:
            return
        moved = {(m.from_class, m.student): m.to_class for m in moves}
        renames: dict[str, tuple[str, str]] = {}
        for field, value in pending.items():
            cid, sid, openid = field.split("/", 2)
            if (cid, sid) in moved:
                renames[field] = (f"{moved[cid, sid]}/{sid}/{openid}", value)
        if renames:
            async with self.r.pipeline(transaction=True) as pipe:
                pipe.hdel(keys.pending_bindings(school_id), *renames)
                pipe.hset(keys.pending_bindings(school_id), mapping=dict(renames.values()))
                await pipe.execute()


def _school(school_id: str, raw: str) -> School:
    district, region, name = raw.split("|", 2)
    return School(school_id, name, district, region)


def _class(school_id: str, class_id: str, raw: str) -> ClassInfo:
    code, _, teacher = raw.partition("|")
    return ClassInfo(school_id, class_id, code, teacher)
