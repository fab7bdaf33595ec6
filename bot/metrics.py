"""Prometheus metrics, defined once. ``/metrics`` serves them (multi-process aware)."""

from __future__ import annotations

import asyncio
import bisect
from typing import Any

from prometheus_client import Counter, Histogram

REQUEST_LATENCY = Histogram(
    "safebell_http_request_seconds",
    "Time to answer an HTTP request, by route and outcome.",
    ["route", "outcome"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 4.0, 5.0),
)
CALLBACK_OUTCOMES = Counter(
    "safebell_callback_total", "WeChat callbacks by outcome (reply, success, refused reasons).", ["outcome"]
)
DEDUPE_HITS = Counter("safebell_dedupe_hits_total", "WeChat retries answered from the dedupe record.")
LATE_REPLIES = Counter(
    "safebell_late_replies_total", "Handlers that overran the reply budget; answered later by customer-service message."
)
API_ERRORS = Counter("safebell_wechat_api_errors_total", "WeChat API errors by errcode.", ["code"])
API_CALLS = Counter("safebell_wechat_api_calls_total", "WeChat API calls by endpoint.", ["endpoint"])
TOKEN_REFRESHES = Counter("safebell_wechat_token_refreshes_total", "access_token fetches from WeChat.", ["forced"])
HANDLER_ERRORS = Counter("safebell_handler_errors_total", "Chat handlers that raised; the user got a kind apology.")


class Batched:
    """The per-callback metric updates (its outcome and its latency) added up in plain Python and
    handed to prometheus at most once a second.

    Every prometheus update takes a lock, and with ``bot serve --workers N`` (multi-process mode)
    writes to a memory-mapped file: three per callback were ~5 % of its CPU. Here a callback costs a
    dictionary update; :meth:`flush` (a timer a second after the first update since the last flush,
    ``/metrics`` before it answers, and the application's cleanup) adds the sums. A histogram's sums
    are added to its buckets directly (``_buckets``, ``_sum``: what ``Histogram.observe`` updates; no
    public call adds many observations at once), checked by ``tests/test_metrics_batched.py``.
    """

    def __init__(self, delay: float = 1.0) -> None:
        self.delay = delay
        self._counts: dict[Any, int] = {}  # a counter's child -> increments
        self._observed: dict[Any, list[float]] = {}  # a histogram's child -> [sum, count per bucket...]
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the timer's

    def inc(self, child: Any) -> None:
        self._counts[child] = self._counts.get(child, 0) + 1
        if self._timer is None or self._loop is not asyncio._get_running_loop():
            self._schedule()

    def observe(self, child: Any, value: float) -> None:
        tally = self._observed.get(child)
        if tally is None:
            tally = self._observed[child] = [0.0] * (len(child._upper_bounds) + 1)
        tally[0] += value
        tally[1 + bisect.bisect_left(child._upper_bounds, value)] += 1.0  # the first bound >= value
        if self._timer is None or self._loop is not asyncio._get_running_loop():
            self._schedule()

    def _schedule(self) -> None:
        """A flush on this loop within ``delay``; at once when there is no loop (a command-line tool),
        or when the timer was on another loop (one that ended with it pending, say)."""
        loop = asyncio._get_running_loop()
        if self._timer is not None or loop is None:
            self.flush()
        if loop is not None:
            self._loop = loop
            self._timer = loop.call_later(self.delay, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()  # (on a closed loop: nothing to cancel, nothing raised)
            self._timer = self._loop = None
        counts, self._counts = self._counts, {}
        observed, self._observed = self._observed, {}
        for child, n in counts.items():
            child.inc(n)
        for child, tally in observed.items():
            child._sum.inc(tally[0])
            for bucket, hits in zip(child._buckets, tally[1:], strict=True):
                if hits:
                    bucket.inc(hits)


BATCHED = Batched()
