"""Operations endpoints: ``/healthz`` (the process is up), ``/readyz`` (Redis answers), ``/metrics``."""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Histogram, generate_latest

from bot.metrics import BATCHED, REQUEST_LATENCY
from bot.store.redis import Redis

REDIS_KEY: web.AppKey[Redis] = web.AppKey("redis", Redis)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "pid": os.getpid()})


async def readyz(request: web.Request) -> web.Response:
    redis = request.app[REDIS_KEY]
    try:
        await redis.ping()
    except Exception as exc:
        return web.json_response({"status": "unavailable", "redis": type(exc).__name__}, status=503)
    return web.json_response({"status": "ok", "redis": "ok"})


async def metrics(request: web.Request) -> web.Response:
    BATCHED.flush()  # this process's last second (the others' come within a second)
    registry: CollectorRegistry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    body = generate_latest(registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


# The histogram child for each (route, status class), found once: labels() takes a lock and builds
# its key on every call, which for a callback is a noticeable share of the whole.
_LATENCY: dict[tuple[str, int], Histogram] = {}


def observe(route: str, status: int, seconds: float) -> None:
    """One request's time under ``route`` (a route's canonical path; 0 status: no answer)."""
    key = (route, status // 100)
    child = _LATENCY.get(key)
    if child is None:
        child = _LATENCY[key] = REQUEST_LATENCY.labels(route, f"{status // 100}xx" if status else "error")
    BATCHED.observe(child, seconds)


@web.middleware
async def timing_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    started = time.perf_counter()
    status = 0  # no answer: an exception other than an HTTP one
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        resource = request.match_info.route.resource
        observe(resource.canonical if resource is not None else "unmatched", status, time.perf_counter() - started)


def register(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
