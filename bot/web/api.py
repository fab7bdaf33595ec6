"""JSON API plumbing: bearer-token authentication, JSON bodies with a size limit, one error format.

Every path under ``/api/`` goes through :func:`api_middleware`: the caller must send
``Authorization: Bearer <token>`` (401 otherwise), the handler finds the caller as
``request[SUBJECT]`` and asks ``authz.can`` before it shows or changes anything (403 if not). Every
failure is a JSON body ``{"error": {"code": ..., "field": ..., "message": ...}}``; an unexpected
exception is logged (never the token) and answered 500 with no traceback. Capabilities add their
routes under ``/api/`` after :func:`install` (see ``bot/notices/api.py``).

The API is authenticated by a header, never by a cookie, so it needs no CSRF token.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from bot.roster.authz import Subject
from bot.store.redis import Redis
from bot.web.security import BodyTooLarge, read_body
from bot.web.tokens import TokenStore

log = logging.getLogger(__name__)

API_PREFIX = "/api/"
BODY_LIMIT = 64 * 1024  # a notice's full text is at most 5,000 characters: 64 KiB leaves room for JSON escapes

SUBJECT: web.RequestKey[Subject] = web.RequestKey("api_subject", Subject)
TOKENS: web.AppKey[TokenStore] = web.AppKey("api_tokens", TokenStore)

_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    413: "too_large", 415: "unsupported_media_type", 422: "invalid", 503: "unavailable",
}  # fmt: skip


class ApiError(Exception):
    """An answer other than success; raised by handlers, turned into the JSON error by the middleware."""

    def __init__(self, status: int, message: str, *, field: str = "", code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.code = code or _CODES.get(status, "error")

    def response(self) -> web.Response:
        body: dict[str, str] = {"code": self.code, "message": self.message}
        if self.field:
            body["field"] = self.field
        headers = {}
        if self.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="safebell"' + (
                ', error="invalid_token"' if self.code == "invalid_token" else ""
            )
        return json_response({"error": body}, status=self.status, headers=headers)


def invalid(field: str, message: str) -> ApiError:
    """422 naming the field to fix."""
    return ApiError(422, message, field=field)


def json_response(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return web.Response(text=text, status=status, content_type="application/json", headers=headers)


def subject(request: web.Request) -> Subject:
    return request[SUBJECT]


async def read_json(request: web.Request, *, limit: int = BODY_LIMIT) -> dict[str, Any]:
    """The request's JSON object; 413 past ``limit`` bytes (read no further), 415/400 for anything else."""
    if request.content_type != "application/json":
        raise ApiError(415, "send the body as JSON (Content-Type: application/json)")
    try:
        raw = await read_body(request, limit)
    except BodyTooLarge:
        raise ApiError(413, f"the body is larger than {limit} bytes") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: absurdly nested
        raise ApiError(400, "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object")
    return data


async def authenticate(request: web.Request) -> Subject:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise ApiError(401, "send Authorization: Bearer <token> (bot admin token create)")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "use the Bearer scheme: Authorization: Bearer <token>", code="invalid_token")
    found = await request.app[TOKENS].lookup(token.strip())
    if found is None:
        raise ApiError(401, "unknown, revoked or expired token", code="invalid_token")
    return found.subject()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith(API_PREFIX):
        return await handler(request)
    try:
        request[SUBJECT] = await authenticate(request)  # before routing: no route is told to a stranger
        not_routed = request.match_info.http_exception
        if not_routed is not None:
            message = "no such API path" if not_routed.status == 404 else f"{request.method} is not allowed here"
            raise ApiError(not_routed.status, message)
        response = await handler(request)
        response.headers.setdefault("Cache-Control", "no-store")  # answers name children: keep them out of caches
        return response
    except ApiError as exc:
        return exc.response()
    except web.HTTPException as exc:  # raised by aiohttp itself (e.g. a body over client_max_size)
        if exc.status < 400:
            raise
        return ApiError(exc.status, exc.reason).response()
    except RedisError:
        log.exception("api %s %s: redis unavailable", request.method, request.path)
        return ApiError(503, "the service is briefly unavailable; try again").response()
    except Exception:
        log.exception("api %s %s failed", request.method, request.path)
        return ApiError(500, "internal error (logged)", code="internal").response()


def install(app: web.Application, redis: Redis) -> None:
    """Authentication and the error format for ``/api/``; idempotent, so each capability may call it."""
    if TOKENS in app:
        return
    app[TOKENS] = TokenStore(redis)
    app.middlewares.append(api_middleware)
