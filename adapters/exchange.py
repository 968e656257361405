"""One request's record (an HTTP request, a WebSocket turn or a background run) and what
happens to it when it ends: one log line, the metrics, the trace span.

The front end opens an ``Exchange`` when a request arrives; the create path fills in what only
it knows (model, provider, tokens, response id) from the turn; ``Telemetry.end`` writes the
request line and updates the metrics once, when the request is over. Nothing here runs per token.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from contextlib import nullcontext
from typing import Any, ContextManager

from respline.adapters import logs
from respline.adapters.metrics import UNROUTED, Metrics

access = logging.getLogger("respline.access")

# request ids a client may choose: printable, short; anything else gets a generated one
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")

# Route names for the metrics (bounded: never the client's path). Paths without /v1 work too.
_ROUTES = [
    (re.compile(r"^/responses/compact$"), "compact"),
    (re.compile(r"^/responses/input_tokens$"), "input_tokens"),
    (re.compile(r"^/responses/[^/]+/cancel$"), "cancel"),
    (re.compile(r"^/responses/[^/]+/input_items$"), "input_items"),
    (re.compile(r"^/responses/[^/]+$"), "response"),
    (re.compile(r"^/responses$"), "responses"),
    (re.compile(r"^/conversations$"), "conversations"),
    (re.compile(r"^/conversations/[^/]+/items/[^/]+$"), "conversation_item"),
    (re.compile(r"^/conversations/[^/]+/items$"), "conversation_items"),
    (re.compile(r"^/conversations/[^/]+$"), "conversation"),
    (re.compile(r"^/models$"), "models"),
]
_FIXED = {"/health": "health", "/metrics": "metrics", "/v1/responses": "responses", "/responses": "responses"}


# errors that say what the client did, not that something failed: a request line at info
_CLIENT_SIDE = frozenset({"client_disconnected", "client_timeout", "response_cancelled", "max_output_tokens", "content_filter"})


def route_name(path: str) -> str:
    fixed = _FIXED.get(path)
    if fixed is not None:
        return fixed
    p = path[3:] if path.startswith("/v1/") else path
    p = p.rstrip("/") or "/"
    for pattern, name in _ROUTES:
        if pattern.match(p):
            return name
    return "unknown"


def new_request_id(given: str | None) -> str:
    if given and _CLIENT_ID.fullmatch(given):
        return given
    return "req_" + os.urandom(12).hex()


def tenant_digest(tenant: str | None) -> str | None:
    """A short digest of the tenant id (itself a digest of a key, or a configured name)."""
    if tenant is None or tenant == "default":
        return tenant
    return hashlib.sha256(tenant.encode()).hexdigest()[:12]


class Exchange:
    """What the request line says. Times are ``time.perf_counter()`` seconds."""

    __slots__ = (
        "request_id", "method", "path", "route", "status", "tenant", "model", "route_model", "provider",
        "upstream_model", "mode", "fallbacks", "started", "first_byte", "first_token", "ended",
        "input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens", "response_id", "error",
        "client_gone", "span", "upstream_start",
    )

    def __init__(self, request_id: str, method: str, path: str, mode: str = "json") -> None:
        self.request_id = request_id
        self.method = method
        self.path = path
        self.route = route_name(path)
        self.mode = mode
        self.started = time.perf_counter()
        self.status: int | None = None
        self.tenant: str | None = None
        self.model: str | None = None
        self.route_model: str | None = None
        self.provider: str | None = None
        self.upstream_model: str | None = None
        self.fallbacks: list[str] = []
        self.first_byte: float | None = None
        self.first_token: float | None = None
        self.ended: float | None = None
        self.input_tokens: int | None = None
        self.cached_tokens: int | None = None
        self.output_tokens: int | None = None
        self.reasoning_tokens: int | None = None
        self.response_id: str | None = None
        self.error: str | None = None
        self.client_gone = False
        self.span: Any = None
        self.upstream_start: float | None = None  # the upstream call began (trace's child span)

    def absorb(self, turn: Any) -> None:
        """What the turn learnt: route, provider, fallbacks, response id, usage, error code."""
        route = getattr(turn, "route", None)
        if route is not None:
            self.route_model = route.pattern
            name, upstream_model = route.attempts[turn.attempt]
            self.provider = name
            self.upstream_model = upstream_model
            self.fallbacks = [p for p, _ in route.attempts[: turn.attempt]]
        pipe = getattr(turn, "pipeline", None)
        resp = getattr(pipe, "response", None) if pipe is not None else None
        if resp is None:
            return
        self.response_id = resp.id
        failure = pipe.failure
        if failure is not None and self.error is None:
            self.error = failure.code or "server_error"
        elif resp.error is not None and self.error is None:
            self.error = resp.error.code
        elif resp.status == "incomplete" and self.error is None and resp.incomplete_details is not None:
            self.error = resp.incomplete_details.reason
        usage = resp.usage
        if usage is not None:
            self.input_tokens = usage.input_tokens
            self.output_tokens = usage.output_tokens
            details = usage.input_tokens_details
            self.cached_tokens = details.cached_tokens if details is not None else 0
            out_details = usage.output_tokens_details
            self.reasoning_tokens = out_details.reasoning_tokens if out_details is not None else 0

    def fields(self) -> dict[str, Any]:
        end = self.ended if self.ended is not None else time.perf_counter()

        def ms(t: float | None) -> float | None:
            return None if t is None else round((t - self.started) * 1000, 3)

        return {
            "request_id": self.request_id,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "tenant": tenant_digest(self.tenant),
            "model": self.model,
            "provider": self.provider,
            "upstream_model": self.upstream_model,
            "mode": self.mode,
            "fallbacks": self.fallbacks,
            "ttfb_ms": ms(self.first_byte),
            "ttft_ms": ms(self.first_token),
            "duration_ms": ms(end),
            "input_tokens": self.input_tokens,
            "cached_tokens": self.cached_tokens,
            "output_tokens": self.output_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "response_id": self.response_id,
            "error": self.error,
            "client_gone": self.client_gone or None,
        }


_NOTHING = nullcontext()  # (reusable: it holds no state)


class Telemetry:
    """Logs, metrics and (optionally) traces, ended together per exchange."""

    def __init__(self, metrics: Metrics | None, tracer: Any = None, access_log: bool = True) -> None:
        self.metrics = metrics
        self.tracer = tracer
        self.access_log = access_log

    def streaming(self, mode: str) -> ContextManager[Any]:
        """A response being produced: counted in ``respline_open_streams`` while it lasts."""
        if self.metrics is None:
            return _NOTHING
        return self.metrics.open_streams.labels(mode).track_inprogress()

    def end(self, ex: Exchange) -> None:
        if ex.ended is None:
            ex.ended = time.perf_counter()
        status = ex.status or 0
        level = logging.INFO
        if status >= 500 or (ex.error is not None and ex.error not in _CLIENT_SIDE and ex.provider is not None and status < 400):
            level = logging.WARNING
        if self.access_log and access.isEnabledFor(level):
            access.log(level, "request", extra={"fields": ex.fields(), "request_id": ex.request_id})
        m = self.metrics
        if m is not None:
            self._measure(m, ex, status)
        if ex.span is not None and self.tracer is not None:
            self.tracer.end(ex)

    def _measure(self, m: Metrics, ex: Exchange, status: int) -> None:
        m.requests.labels(ex.route, str(status), ex.mode).inc()
        if ex.client_gone:
            m.client_disconnects.labels(ex.mode).inc()
        if ex.provider is None and ex.model is None:
            return  # not a model request
        model = ex.route_model or UNROUTED
        if ex.first_byte is not None:
            m.ttfb.labels(model).observe(ex.first_byte - ex.started)
        if ex.first_token is not None:
            m.ttft.labels(model).observe(ex.first_token - ex.started)
            if ex.output_tokens and ex.ended is not None and ex.ended > ex.first_token:
                m.tokens_per_second.labels(model).observe(ex.output_tokens / (ex.ended - ex.first_token))
        assert ex.ended is not None
        m.duration.labels(model, ex.mode).observe(ex.ended - ex.started)
        if ex.provider is not None and ex.input_tokens is not None:
            cached = ex.cached_tokens or 0
            m.tokens.labels(model, ex.provider, "input").inc(ex.input_tokens)
            m.tokens.labels(model, ex.provider, "cached").inc(cached)
            m.tokens.labels(model, ex.provider, "output").inc(ex.output_tokens or 0)
            m.tokens.labels(model, ex.provider, "reasoning").inc(ex.reasoning_tokens or 0)


def bind(ex: Exchange):
    """Make ``ex`` the current request for log lines; returns the token to reset."""
    return logs.request_id.set(ex.request_id)
