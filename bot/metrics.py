"""Prometheus metrics, defined once. ``/metrics`` serves them (multi-process aware)."""

from __future__ import annotations

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
