"""bot.metrics.Batched: what it hands to prometheus once a second is what observing each value and
incrementing each time would have given, bucket by bucket."""

from __future__ import annotations

import asyncio
import random

from prometheus_client import CollectorRegistry, Counter, Histogram

from bot.metrics import Batched

BUCKETS = (0.001, 0.005, 0.01, 0.1, 1.0)


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for metric in registry.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


def registry_total(registry: CollectorRegistry) -> float:
    return sum(v for (name, _), v in _samples(registry).items() if name.endswith(("_total", "_count")))


def test_a_flush_gives_what_each_update_would_have() -> None:
    direct, batched = CollectorRegistry(), CollectorRegistry()
    made = {}
    for name, registry in (("direct", direct), ("batched", batched)):
        made[name] = (
            Histogram("t_seconds", "t", ["route"], buckets=BUCKETS, registry=registry),
            Counter("t_total", "t", ["outcome"], registry=registry),
        )
    rng = random.Random(5)
    values = [rng.choice((0.0, 0.001, 0.005, 2.0, 100.0)) if i % 9 == 0 else rng.expovariate(200) for i in range(5000)]
    batch = Batched(delay=3600)  # in a loop, nothing goes before the explicit flush below

    async def feed() -> None:
        for i, v in enumerate(values):  # bound values included: an observation equal to a bound is in it
            route, outcome = ("/wechat", "reply") if i % 3 else ("/api", "success")
            made["direct"][0].labels(route).observe(v)
            made["direct"][1].labels(outcome).inc()
            batch.observe(made["batched"][0].labels(route), v)
            batch.inc(made["batched"][1].labels(outcome))
        assert registry_total(batched) == 0  # held
        batch.flush()

    asyncio.run(feed())
    got, want = _samples(batched), _samples(direct)
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert abs(got[key] - value) < 1e-6 * max(1.0, abs(value)), key


def test_without_a_loop_each_update_goes_at_once_and_with_one_within_the_delay() -> None:
    registry = CollectorRegistry()
    counter = Counter("u_total", "u", registry=registry)
    batch = Batched(delay=0.05)
    batch.inc(counter)
    assert registry.get_sample_value("u_total") == 1.0  # a command-line tool: no timer to wait for

    async def scenario() -> tuple[float | None, float | None]:
        for _ in range(10):
            batch.inc(counter)
        before = registry.get_sample_value("u_total")
        await asyncio.sleep(0.2)
        return before, registry.get_sample_value("u_total")

    before, after = asyncio.run(scenario())
    assert before == 1.0 and after == 11.0


def test_a_timer_left_on_an_ended_loop_does_not_hold_later_updates() -> None:
    """A loop that ended with the flush still pending (a second asyncio.run in one process): the
    next update, on the next loop, hands over what was held and batches afresh there."""
    registry = CollectorRegistry()
    counter = Counter("v_total", "v", registry=registry)
    batch = Batched(delay=0.05)

    async def first() -> None:
        for _ in range(3):
            batch.inc(counter)  # its timer never fires: the loop ends first

    async def second() -> tuple[float | None, float | None]:
        batch.inc(counter)  # hands over what the ended loop held (and this one)
        handed = registry.get_sample_value("v_total")
        batch.inc(counter)  # batched on this loop
        held = registry.get_sample_value("v_total")
        await asyncio.sleep(0.2)
        assert registry.get_sample_value("v_total") == 5.0
        return handed, held

    asyncio.run(first())
    assert registry.get_sample_value("v_total") == 0.0
    assert asyncio.run(second()) == (4.0, 4.0)
