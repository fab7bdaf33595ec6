"""The benchmark registry and harness behind ``bot bench NAME [--json]``.

A benchmark is an async function that takes its parsed arguments and returns named figures::

    from bot.bench import Figure, Figures, at_most, bench_redis, benchmark

    def _options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--messages", type=int, default=10_000)

    @benchmark("webhook", help="callbacks per second through bot serve", options=_options)
    async def webhook(args: argparse.Namespace) -> Figures:
        async with bench_redis() as r:                   # a fresh embedded Redis in a temp dir
            ...
        return {"p99_ms": at_most(p99, "ms", 50), "messages": Figure(n, "messages")}

Put it in any module of the ``bot.bench`` package: modules are found and imported when ``bot bench``
runs (never by ``bot --help``), so a new benchmark needs no registration anywhere else. Import
heavy things inside the function. Progress and logs go to stderr; stdout carries the table, or with
``--json`` exactly one JSON object::

    {"bench": NAME, "machine": {...}, "figures": {FIGURE: {"value", "unit", "target", "met"}}}

The exit code is 0 when the run completed, whatever the figures; 1 when it failed.
"""

from __future__ import annotations

import argparse
import contextvars
import importlib
import json
import math
import os
import pkgutil
import platform
import resource
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.store.redis import Redis


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured number; ``target`` in words ("≤ 60 s") and whether it was ``met`` (None: no target)."""

    value: float
    unit: str
    target: str | None = None
    met: bool | None = None

    def to_json(self) -> dict[str, Any]:
        value = round(self.value, 4) if isinstance(self.value, float) and math.isfinite(self.value) else self.value
        return {"value": value, "unit": self.unit, "target": self.target, "met": self.met}


Figures = dict[str, Figure]
BenchFunction = Callable[[argparse.Namespace], Coroutine[Any, Any, Figures]]
Options = Callable[[argparse.ArgumentParser], None]


def at_most(value: float, unit: str, limit: float, *, shown: str | None = None) -> Figure:
    """A figure whose target is an upper bound: ``at_most(42.0, "s", 60)`` → target "≤ 60 s"."""
    return Figure(value, unit, f"≤ {shown or _num(limit)} {unit}".rstrip(), value <= limit)


def at_least(value: float, unit: str, limit: float, *, shown: str | None = None) -> Figure:
    return Figure(value, unit, f"≥ {shown or _num(limit)} {unit}".rstrip(), value >= limit)


def exactly(value: float, unit: str, want: float) -> Figure:
    return Figure(value, unit, f"= {_num(want)} {unit}".rstrip(), value == want)


def _num(x: float) -> str:
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:g}"


@dataclass(frozen=True, slots=True)
class Bench:
    name: str
    function: BenchFunction
    help: str
    options: Options | None


REGISTRY: dict[str, Bench] = {}


def benchmark(name: str, *, help: str = "", options: Options | None = None) -> Callable[[BenchFunction], BenchFunction]:
    """Register ``async def f(args) -> Figures`` as ``bot bench NAME``; ``options`` adds its arguments."""

    def register(function: BenchFunction) -> BenchFunction:
        if name in REGISTRY and REGISTRY[name].function is not function:
            raise ValueError(f"benchmark {name!r} is registered twice")
        doc = (function.__doc__ or "").strip().splitlines()
        REGISTRY[name] = Bench(name, function, help or (doc[0] if doc else ""), options)
        return function

    return register


def load_all() -> dict[str, Bench]:
    """Import every module of the bot.bench package (registering their benchmarks)."""
    import bot.bench as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in ("core", "cli"):
            importlib.import_module(f"{package.__name__}.{info.name}")
    return REGISTRY


# -- what a run knows about the machine ------------------------------------------------------------
_run_notes: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("bench_run_notes")


def note(key: str, value: str) -> None:
    """Add a fact to the run's ``machine`` block (e.g. the Redis version a benchmark started)."""
    notes = _run_notes.get(None)
    if notes is not None:
        notes[key] = value


def machine(notes: Mapping[str, str] | None = None) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": cores,
        "memory_gib": round(memory / 2**30, 1),
        "python": platform.python_version(),
        "redis": None,
        "platform": platform.platform(),
    }
    info.update(notes or {})
    return info


def peak_rss_bytes() -> int:
    """The most memory this process has held (resident), since it started."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


@contextmanager
def timer() -> Iterator[Callable[[], float]]:
    """``with timer() as elapsed: ...`` then ``elapsed()`` seconds (frozen when the block ends)."""
    start = time.perf_counter()
    end: list[float] = []
    yield lambda: (end[0] if end else time.perf_counter()) - start
    end.append(time.perf_counter())


@asynccontextmanager
async def bench_redis(
    *, appendonly: bool = False, binary: str = "", extra_args: list[str] | None = None
) -> AsyncIterator[Redis]:
    """A fresh embedded Redis on a unix socket in a temporary folder, removed afterwards.

    Never the machine's 127.0.0.1:6379 nor the configured data. ``binary``: a redis-server to use
    instead of the bundled one (e.g. to measure the production version). Its version and allocator
    go into ``machine``.
    """
    from bot.store.embedded import EmbeddedRedis
    from bot.store.redis import connect

    with tempfile.TemporaryDirectory(prefix="sb-bench-") as folder:
        server = EmbeddedRedis(folder, appendonly=appendonly, binary=binary, extra_args=extra_args)
        url = server.start()
        client = connect(url)
        try:
            info = await client.info("server")
            note("redis", str(info.get("redis_version", "")))
            note("redis_allocator", str((await client.info("memory")).get("mem_allocator", "")))
            yield client
        finally:
            await client.aclose()
            server.stop()


# -- running and showing ---------------------------------------------------------------------------
def parser_for(bench: Bench) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"bot bench {bench.name}", description=bench.help)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    if bench.options is not None:
        bench.options(p)
    return p


def run(name: str, argv: list[str]) -> int:
    benches = load_all()
    bench = benches.get(name)
    if bench is None:
        known = ", ".join(sorted(benches)) or "none"
        print(f"unknown benchmark {name!r} (known: {known}; bot bench --list)", file=sys.stderr)
        return 2
    args = parser_for(bench).parse_args(argv)
    notes: dict[str, str] = {}
    token = _run_notes.set(notes)
    try:
        # on the loop bot serve and bot worker run on by default (uvloop), as what is measured in
        # this process (a worker draining a notice, the console) runs in production
        from bot.serve import run_on_loop

        figures = run_on_loop("uvloop", bench.function(args))  # the run's context (and its notes) is copied in
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        print(f"bench {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        _run_notes.reset(token)
    result = {"bench": name, "machine": machine(notes), "figures": {k: f.to_json() for k, f in figures.items()}}
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print(render(result))
    return 0


def render(result: Mapping[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"bench {result['bench']}",
        f"  {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Python {m['python']}, "
        f"Redis {m['redis'] or '-'}{' (' + m['redis_allocator'] + ')' if m.get('redis_allocator') else ''}",
        "",
    ]
    rows = [("figure", "value", "unit", "target", "met")]
    for key, f in result["figures"].items():
        value = f["value"]
        shown = f"{value:,}" if isinstance(value, int) else f"{value:,.{0 if abs(value) >= 100 else 3}f}"
        met = "-" if f["met"] is None else ("yes" if f["met"] else "NO")
        rows.append((key, shown, f["unit"], f["target"] or "-", met))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        lines.append(
            f"  {r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]:<{widths[3]}}  {r[4]}".rstrip()
        )
    return "\n".join(lines)


def listing() -> str:
    benches = load_all()
    width = max((len(n) for n in benches), default=0)
    return "\n".join(f"  {n:<{width}}  {b.help}" for n, b in sorted(benches.items()))
