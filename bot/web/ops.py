"""Operations endpoints: ``/healthz`` (the process is up), ``/readyz`` (Redis answers), ``/metrics``."""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractResource
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Histogram, generate_latest

from bot.metrics import REQUEST_LATENCY
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
    registry: CollectorRegistry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    body = generate_latest(registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


# The histogram child for each (resource, status class), found once: labels() takes a lock and
# builds its key on every call, which for a callback is a noticeable share of the whole.
_LATENCY: dict[tuple[AbstractResource | None, int], Histogram] = {}


def _latency(resource: AbstractResource | None, status: int) -> Histogram:
    key = (resource, status // 100)
    child = _LATENCY.get(key)
    if child is None:
        route = resource.canonical if resource is not None else "unmatched"
        outcome = f"{status // 100}xx" if status else "error"
        child = _LATENCY[key] = REQUEST_LATENCY.labels(route, outcome)
    return child


def observe(route: str, status: int, seconds: float) -> None:
    """One request's time under ``route`` (a route's canonical path), as the middleware records it."""
    key = (route, status // 100)
    child = _BY_ROUTE.get(key)
    if child is None:
        child = _BY_ROUTE[key] = REQUEST_LATENCY.labels(route, f"{status // 100}xx" if status else "error")
    child.observe(seconds)


_BY_ROUTE: dict[tuple[str, int], Histogram] = {}


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
        _latency(request.match_info.route.resource, status).observe(time.perf_counter() - started)


def register(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
