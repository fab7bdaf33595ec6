"""Benchmarks: ``bot bench NAME [--json]``, ``bot bench --list``.

How to add one: see :mod:`bot.bench.core` (a decorated async function in any module of this
package). The roster benchmarks (``roster-import``, ``memory``) are in :mod:`bot.bench.roster`; the
callback's (``webhook`` against its baselines in :mod:`bot.bench.baselines`, ``ack-burst``) in
:mod:`bot.bench.webhook` and :mod:`bot.bench.ackburst`, with their load from :mod:`bot.bench.load`
and the processes they start from :mod:`bot.bench.procs`.
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
