"""Benchmarks: ``bot bench NAME [--json]``, ``bot bench --list``.

How to add one: see :mod:`bot.bench.core` (a decorated async function in any module of this
package). The roster benchmarks (``roster-import``, ``memory``) are in :mod:`bot.bench.roster`.
"""

from bot.bench.core import (
    REGISTRY,
    Bench,
    Figure,
    Figures,
    at_least,
    at_most,
    bench_redis,
    benchmark,
    exactly,
    note,
    peak_rss_bytes,
    timer,
)

__all__ = [
    "REGISTRY",
    "Bench",
    "Figure",
    "Figures",
    "at_least",
    "at_most",
    "bench_redis",
    "benchmark",
    "exactly",
    "note",
    "peak_rss_bytes",
    "timer",
]
