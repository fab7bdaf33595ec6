"""Roster benchmarks: ``roster-import`` (a city in under a minute) and ``memory`` (bytes per guardian).

``bot bench roster-import``: generates a city (1,300 schools, 500,000 students, ~15,600 classes),
imports it into a fresh embedded Redis (AOF on, as in production) through the same code as
``bot import roster``, then imports it again, which must change and write nothing.

``bot bench memory``: in a fresh embedded Redis, a synthetic roster sized for N guardians, then N
guardians bound with the store's own ``bind_guardian`` (10 % with two children, 30 % of students
with two guardians). Redis' ``used_memory`` is read after each section with our connections
closed (their buffers would count). Sections run in order in the same Redis; a later capability
adds its own (e.g. bytes per delivery record) with :func:`memory_section`::

    @memory_section("deliveries", order=30)
    async def deliveries(run: MemoryRun) -> Figures:
        before = await run.used_memory()
        ...  # plan a notice to run.data["guardians"] guardians
        per = (await run.used_memory() - before) / records
        return {"bytes_per_delivery": at_most(per, "B", 250)}
"""

from __future__ import annotations

import argparse
import asyncio
import random
import string
import tempfile
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from bot.bench.core import Figure, Figures, at_most, bench_redis, benchmark, exactly, peak_rss_bytes, timer

if TYPE_CHECKING:
    from bot.roster.importer import ImportResult
    from bot.store.redis import Redis

MB = 1024 * 1024


# -- roster-import ---------------------------------------------------------------------------------
def _import_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--schools", type=int, default=1300, help="schools in the generated city (default 1300)")
    p.add_argument("--students", type=int, default=500_000, help="students in the generated city (default 500000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated names and phones")
    p.add_argument("--limit", type=float, default=60.0, help="target seconds for the import (default 60)")


async def _dirty(r: Redis) -> int:
    """Redis' count of writes since start (with saving off it only grows): 0 more means nothing written."""
    return int((await r.info("persistence"))["rdb_changes_since_last_save"])


@dataclass
class _Timed:
    parse: float
    validate: float
    write: float
    result: ImportResult
    writes: int

    @property
    def total(self) -> float:
        return self.parse + self.validate + self.write


async def _import_once(r: Redis, path: Path) -> _Timed:
    from bot.roster.importer import TerminalProgress, apply, parse_roster, validate
    from bot.roster.store import RosterStore

    progress = TerminalProgress()
    schools = await RosterStore(r).schools()
    dirty = await _dirty(r)
    with timer() as t_parse:
        parsed = parse_roster(path, progress=progress)
    with timer() as t_validate:
        report = validate(parsed, schools, progress=progress)
    del parsed
    with timer() as t_write:
        result = await apply(r, report, progress=progress)
    progress.close()
    if report.rejected:
        raise RuntimeError(f"the generated roster had {len(report.rejected)} rejected rows: {report.rejected[:3]}")
    return _Timed(t_parse(), t_validate(), t_write(), result, await _dirty(r) - dirty)


@benchmark(
    "roster-import",
    help="import a generated city roster (1,300 schools, 500,000 students) and re-import it",
    options=_import_options,
)
async def roster_import(args: argparse.Namespace) -> Figures:
    from bot.demo_data.generate import generate_city
    from bot.roster.importer import apply_schools, parse_schools

    with tempfile.TemporaryDirectory(prefix="sb-bench-city-") as folder:
        with timer() as t_generate:
            schools_file, roster_file = generate_city(folder, args.schools, args.students, args.seed)
        async with bench_redis(appendonly=True) as r:
            with timer() as t_schools:
                await apply_schools(r, parse_schools(schools_file))
            first = await _import_once(r, roster_file)
            again = await _import_once(r, roster_file)
            used = int((await r.info("memory"))["used_memory"])
    rows = first.result.added + first.result.unchanged
    return {
        "rows": Figure(rows, "rows"),
        "schools": Figure(first.result.schools, "schools"),
        "classes": Figure(first.result.classes_created, "classes"),
        "generate_seconds": Figure(t_generate(), "s"),
        "schools_import_seconds": Figure(t_schools(), "s"),
        "parse_seconds": Figure(first.parse, "s"),
        "validate_seconds": Figure(first.validate, "s"),
        "write_seconds": Figure(first.write, "s"),
        "import_seconds": at_most(first.total, "s", args.limit),
        "rows_per_second": Figure(rows / first.total, "rows/s"),
        "reimport_seconds": Figure(again.total, "s"),
        "reimport_changes": exactly(again.result.changes, "changes", 0),
        "reimport_redis_writes": exactly(again.writes, "writes", 0),
        "redis_used_memory": Figure(used / MB, "MiB"),
        "peak_rss": Figure(peak_rss_bytes() / MB, "MiB"),
    }


# -- memory ----------------------------------------------------------------------------------------
@dataclass
class MemoryRun:
    """What the memory sections share: the Redis, the arguments, and data earlier sections left."""

    args: argparse.Namespace
    redis: Redis
    baseline: int = 0
    data: dict[str, Any] = field(default_factory=dict)

    async def used_memory(self) -> int:
        """``used_memory`` with our connections closed first (their buffers count in it)."""
        await self.redis.connection_pool.disconnect()
        return int((await self.redis.info("memory"))["used_memory"])


MemorySection = Callable[[MemoryRun], Coroutine[Any, Any, Figures]]
MEMORY_SECTIONS: list[tuple[int, str, MemorySection]] = []


def memory_section(name: str, *, order: int) -> Callable[[MemorySection], MemorySection]:
    """Add a section to ``bot bench memory``; sections run by ``order`` (roster 10, bindings 20)."""

    def register(function: MemorySection) -> MemorySection:
        if all(n != name for _, n, _ in MEMORY_SECTIONS):
            MEMORY_SECTIONS.append((order, name, function))
            MEMORY_SECTIONS.sort(key=lambda s: s[0])
        return function

    return register


def _memory_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--guardians", type=int, default=100_000, help="guardians to bind (default 100000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--concurrency", type=int, default=64, help="bindings in flight at once")
    p.add_argument("--limit", type=float, default=400.0, help="target bytes per guardian (default 400)")
    p.add_argument("--redis-server", default="", metavar="PATH", help="measure with this redis-server binary")


@benchmark("memory", help="Redis bytes per guardian (roster + binding), target ≤ 400 B", options=_memory_options)
async def memory(args: argparse.Namespace) -> Figures:
    figures: Figures = {}
    async with bench_redis(appendonly=False, binary=args.redis_server) as r:
        run = MemoryRun(args, r)
        run.baseline = await run.used_memory()
        for _, _, section in MEMORY_SECTIONS:
            figures.update(await section(run))
    figures["peak_rss"] = Figure(peak_rss_bytes() / MB, "MiB")
    return figures


# Shares of a realistic city: 10 % of guardians bind two children, 30 % of students have two guardians.
TWO_CHILDREN = 0.10
TWO_GUARDIANS = 0.30
CLASS_SIZE_FOR_MEMORY = 33
_OPENID_ALPHABET = string.ascii_letters + string.digits + "-_"


def openid(rng: random.Random) -> str:
    """A realistic openid: 28 characters starting with ``o`` (the size matters here)."""
    return "o" + "".join(rng.choices(_OPENID_ALPHABET, k=27))


@memory_section("roster", order=10)
async def roster_section(run: MemoryRun) -> Figures:
    from bot.demo_data.generate import generate_city
    from bot.roster.importer import apply, apply_schools, parse_roster, parse_schools, validate
    from bot.roster.store import RosterStore

    guardians = run.args.guardians
    students = max(1, round(guardians * (1 + TWO_CHILDREN) / (1 + TWO_GUARDIANS)))
    schools = max(1, students // 385)
    r = run.redis
    with tempfile.TemporaryDirectory(prefix="sb-bench-mem-") as folder:
        schools_file, roster_file = generate_city(folder, schools, students, run.args.seed)
        await apply_schools(r, parse_schools(schools_file))
        report = validate(parse_roster(roster_file), await RosterStore(r).schools())
        await apply(r, report)
    used = await run.used_memory()
    run.data.update(students=students, roster_bytes=used - run.baseline, after_roster=used)
    return {
        "students": Figure(students, "students"),
        "roster_bytes_per_student": Figure((used - run.baseline) / students, "B"),
    }


@memory_section("bindings", order=20)
async def bindings_section(run: MemoryRun) -> Figures:
    from bot.roster.model import Student
    from bot.roster.store import RosterStore
    from bot.store import keys

    r = run.redis
    store = RosterStore(r)
    rng = random.Random(run.args.seed)
    everyone: list[Student] = []
    for school in sorted(await store.schools()):
        for cid in sorted(await store.classes(school)):
            everyone += (await store.students(school, cid)).values()
    rng.shuffle(everyone)
    # Slots: each student one guardian, 30 % two; guardians take one slot each, 10 % a second one.
    slots: list[tuple[Student, str]] = []
    for i, s in enumerate(everyone):
        first = "m" if rng.random() < 0.55 else "f"
        slots.append((s, first))
        if i < len(everyone) * TWO_GUARDIANS:
            slots.append((s, "g" if rng.random() < 0.2 else ("f" if first == "m" else "m")))
    n = min(run.args.guardians, len(slots))
    people = [openid(rng) for _ in range(n)]
    links = [(people[i], slots[i]) for i in range(n)]
    links += [(people[k], slots[n + k]) for k in range(min(len(slots) - n, round(n * TWO_CHILDREN)))]
    rng.shuffle(links)
    gate = asyncio.Semaphore(run.args.concurrency)

    async def bind(who: str, student: Student, relation: str) -> None:
        async with gate:
            await store.bind_guardian(who, student, relation)

    with timer() as t_bind:
        for i in range(0, len(links), 10_000):  # bounded batches of tasks
            await asyncio.gather(*(bind(w, s, rel) for w, (s, rel) in links[i : i + 10_000]))
    used = await run.used_memory()
    roster = int(run.data["roster_bytes"])
    binding = used - int(run.data["after_roster"])
    run.data.update(guardians=people, links=len(links))

    # Where the bytes are: MEMORY USAGE and the encoding of sample keys.
    sample = rng.sample(people, min(200, len(people)))
    who_bytes = [int(cast(int, await r.memory_usage(keys.identity(o), samples=0))) for o in sample]
    classes = [(s.school, s.class_id) for s in rng.sample(everyone, min(200, len(everyone)))]
    compact = 0
    for school, cid in classes:
        for key in (keys.class_students(school, cid), keys.class_guardians(school, cid)):
            encoding = await r.object("encoding", key)
            compact += encoding in ("ziplist", "listpack")
    await r.connection_pool.disconnect()
    return {
        "guardians": Figure(n, "guardians"),
        "links": Figure(len(links), "links"),
        "bind_seconds": Figure(t_bind(), "s"),
        "bindings_per_second": Figure(len(links) / max(t_bind(), 1e-9), "bindings/s"),
        "roster_bytes_per_guardian": Figure(roster / n, "B"),
        "binding_bytes_per_guardian": Figure(binding / n, "B"),
        "bytes_per_guardian": at_most((used - run.baseline) / n, "B", run.args.limit),
        "who_key_bytes": Figure(sum(who_bytes) / len(who_bytes), "B"),
        "compact_class_hashes": exactly(round(100 * compact / (2 * len(classes))), "%", 100),
    }
