"""The outermost ASGI layer: a request id, the request's record, and ``GET /metrics``.

Every HTTP request gets an ``Exchange`` (adapters/exchange.py) before any route sees it: its id is
the client's ``x-request-id`` when that is a sane token, else a generated one, and it goes back
in the response headers and upstream. The status and the first body byte are read off the
messages going out; the create handler adds what only it knows (model, provider, tokens) to the
same record, found through ``scope["respline.exchange"]``. When the request is over, the record
becomes one log line and its metrics.

WebSocket connections are counted here; each turn is a request of its own (the session makes
one Exchange per turn, with the connection's id and the turn's number).
"""

from __future__ import annotations

import hmac
from time import perf_counter
from typing import Any

import msgspec

from respline.adapters import logs
from respline.adapters.exchange import Exchange, Telemetry, new_request_id
from respline.adapters.frontends.asgi import JSON, deny_upgrade, header, send_body
from respline.engine.errors import ApiError

_REQUEST_ID = b"x-request-id"


class MetricsEndpoint:
    """``GET /metrics``: the Prometheus text format, behind a key when one is configured."""

    def __init__(self, telemetry: Telemetry, key: str | None) -> None:
        self.metrics = telemetry.metrics
        self._key = key.encode() if key else None

    async def __call__(self, scope: dict, receive, send) -> int:
        await _drain(receive)
        if self._key is not None:
            auth = header(scope, b"authorization") or ""
            given = auth[7:].strip().encode() if auth[:7].lower() == "bearer " else b""
            if not hmac.compare_digest(given, self._key):
                err = ApiError(401, "The metrics endpoint needs its key: 'Authorization: Bearer KEY'.", code="invalid_api_key", type="invalid_request_error")
                await send_body(send, err.status, err.body(), JSON)
                return err.status
        if scope["method"] not in ("GET", "HEAD"):
            err = ApiError(405, f"Method {scope['method']} is not allowed on /metrics", code="method_not_allowed")
            await send_body(send, err.status, err.body(), JSON)
            return err.status
        body = self.metrics.exposition()
        await send_body(send, 200, body, self.metrics.content_type.encode())
        return 200


class _Envelope(msgspec.Struct):
    error: dict[str, Any] | None = None


_envelope = msgspec.json.Decoder(_Envelope)


def _error_code(body: bytes) -> str | None:
    """The code of an error envelope being sent (the request line's ``error``)."""
    try:
        err = _envelope.decode(body).error
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
        return None
    code = err.get("code") if err else None
    return code if isinstance(code, str) else (err.get("type") if err else None)


async def _drain(receive) -> None:
    while True:
        msg = await receive()
        if msg["type"] != "http.request" or not msg.get("more_body"):
            return


def observed(app, telemetry: Telemetry, *, metrics_here: bool, metrics_key: str | None):
    """``app`` wrapped: request ids, request lines, metrics; ``/metrics`` answered here when
    ``metrics_here`` (else 404 on this port: it is served on its own address)."""
    endpoint = MetricsEndpoint(telemetry, metrics_key) if metrics_here and telemetry.metrics is not None else None
    metrics = telemetry.metrics
    tracer = telemetry.tracer

    async def asgi(scope: dict, receive, send) -> None:
        kind = scope["type"]
        if kind == "websocket":
            if metrics is not None:
                metrics.websocket_connections.inc()
            scope["respline.request_id"] = new_request_id(header(scope, _REQUEST_ID))
            try:
                await app(scope, receive, send)
            finally:
                if metrics is not None:
                    metrics.websocket_connections.dec()
            return
        if kind != "http":
            await app(scope, receive, send)
            return
        ex = Exchange(new_request_id(header(scope, _REQUEST_ID)), scope["method"], scope["path"])
        token = logs.request_id.set(ex.request_id)
        if tracer is not None:
            tracer.start(ex, {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers") or ()})
        scope["respline.exchange"] = ex
        scope["respline.send"] = send  # hypercorn's own: what finds the client's connection
        rid_header = (_REQUEST_ID, ex.request_id.encode())

        async def send_observed(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                ex.status = message["status"]
                message["headers"] = [*message.get("headers", ()), rid_header]
            elif ex.first_byte is None and message.get("body"):
                ex.first_byte = perf_counter()
                if ex.status is not None and ex.status >= 400 and ex.error is None:
                    ex.error = _error_code(message["body"])
            await send(message)

        try:
            if endpoint is not None and scope["path"] == "/metrics":
                ex.status = await endpoint(scope, receive, send_observed)
            else:
                await app(scope, receive, send_observed)
        finally:
            telemetry.end(ex)
            logs.request_id.reset(token)

    return asgi


def metrics_only(telemetry: Telemetry, key: str | None):
    """The app of the separate metrics address: ``/metrics`` and nothing else."""
    endpoint = MetricsEndpoint(telemetry, key)

    async def asgi(scope: dict, receive, send) -> None:
        if scope["type"] == "lifespan":  # nothing to start or stop; hypercorn waits for the answers
            while True:
                msg = await receive()
                await send({"type": msg["type"] + ".complete"})
                if msg["type"] == "lifespan.shutdown":
                    return
        # the same request ids as the main port (no request line: scrapes are not requests)
        rid = new_request_id(header(scope, _REQUEST_ID))
        rid_header = (_REQUEST_ID, rid.encode())
        if scope["type"] == "websocket":
            # an upgrade here is refused with an envelope (unanswered, it was hypercorn's bare 500)
            scope["respline.request_id"] = rid
            if (await receive())["type"] == "websocket.connect":
                err = ApiError(404, f"No WebSocket at {scope['path']}; this address serves GET /metrics only.", code="not_found")
                await deny_upgrade(scope, send, err)
            return
        if scope["type"] != "http":
            return

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), rid_header]
            await send(message)

        if scope["path"] != "/metrics":
            await _drain(receive)
            err = ApiError(404, f"Unknown route: {scope['method']} {scope['path']}", code="not_found")
            await send_body(send, 404, err.body(), JSON, (rid_header,))
            return
        await endpoint(scope, receive, send_with_id)

    return asgi
