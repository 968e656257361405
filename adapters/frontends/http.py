"""The HTTP front end: a quart-trio app, with ``POST /v1/responses`` served at the ASGI level.

Why the create route bypasses Quart's response machinery: a streamed answer needs a nursery that
spans the whole body (the request's task pumps the upstream and writes to the client; a watcher
task sees the client go away and cancels the upstream read at once). Quart streams from an async
generator, which may not hold a nursery open across a ``yield``; at the ASGI level the handler
owns the connection for its whole life. Every other route (health, models, stored responses) is
an ordinary Quart route.

Every route reads its whole request body, within ``[timeouts] client_body``, before it answers
(hypercorn reads a keep-alive connection's next request only after that), and every fault that
escapes a handler is one logged traceback and a 500 envelope, never an exception in hypercorn.
"""

from __future__ import annotations

import logging
import msgspec
import trio
from quart import Response as QuartResponse
from quart import request
from quart_trio import QuartTrio

from respline.adapters import counting
from respline.adapters.frontends import state_routes
from respline.adapters.exchange import Exchange
from respline.adapters.frontends.asgi import client_closer, deny_upgrade, header, send_error, send_json
from respline.adapters.frontends.auth import Auth
from respline.adapters.frontends.observed import observed
from respline.adapters.frontends.safety_net import internal_error, log_fault
from respline.adapters.frontends.websocket import serve_websocket
from respline.adapters.gateway import Gateway
from respline.adapters.gateway.event_log import stored_frames
from respline.adapters.watch import client_dropped
from respline.engine.errors import ApiError
from respline.engine.stages.sse import DONE_FRAME
from respline.engine.translate import parse_create

log = logging.getLogger("respline.http")

_json = msgspec.json.Encoder()

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]

CREATE_PATHS = ("/v1/responses", "/responses")


class _ClientGone(Exception):
    pass


class _Refused(Exception):
    """A request body that was not read to its end; ``err`` answers it (answer_and_close)."""

    def __init__(self, err: ApiError) -> None:
        super().__init__(err.message)
        self.err = err


async def read_body(scope: dict, receive, limit: int, timeout: float, *, keep: bool = True) -> bytes:
    """The whole request body (``keep=False``: read to its end and dropped).

    Every route reads its body before it answers: hypercorn serves the next request on a
    keep-alive connection only once the previous body was read. A body that is too large (413)
    or does not arrive within ``timeout`` seconds of the request's head (408) is refused."""
    length = header(scope, b"content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise _Refused(_too_large(limit))
    parts: list[bytes] = []
    size = 0
    with trio.move_on_after(timeout):
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise _ClientGone()
            body = msg.get("body", b"")
            if body:
                size += len(body)
                if size > limit:
                    raise _Refused(_too_large(limit))
                if keep:
                    parts.append(body)
            if not msg.get("more_body"):
                return parts[0] if len(parts) == 1 else b"".join(parts)
    raise _Refused(ApiError(408, f"The request body did not arrive within {timeout:g} seconds.", code="request_timeout"))


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"The request body exceeds the limit of {limit} bytes.", code="request_too_large")


async def answer_and_close(receive, send, err: ApiError) -> None:
    """Answer a request whose body was not read to its end, and close the connection: what is
    left of the body could not be told from the next request. hypercorn queues body chunks for
    the app (ten at most) and, as the response ends, ``http.disconnect``: a task drains that
    queue meanwhile, or hypercorn would wait forever on a queue nobody reads."""

    async def drain() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        await send_json(send, err.status, err.body(), {**err.headers, "connection": "close"})
        nursery.cancel_scope.cancel()


class _RequestState:
    __slots__ = ("scope", "started", "finished")

    def __init__(self) -> None:
        self.scope: trio.CancelScope
        self.started = False
        self.finished = False


async def _watch_disconnect(receive, state: _RequestState) -> None:
    """The request body has been read; the next message can only be the client leaving,
    which cancels the request's scope and with it the upstream read."""
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            if not state.finished:
                state.scope.cancel()
            return


class CreateHandler:
    """``POST /v1/responses``: streamed (SSE) or whole (JSON)."""

    def __init__(self, gateway: Gateway, auth: Auth) -> None:
        self.gateway = gateway
        self.auth = auth
        self.body_limit = gateway.cfg.limits.body_bytes
        self.body_timeout = gateway.cfg.timeouts.client_body

    async def __call__(self, scope: dict, receive, send) -> None:
        state = _RequestState()

        async def send_tracked(message: dict) -> None:
            if message["type"] == "http.response.start":
                state.started = True
            elif not message.get("more_body"):
                state.finished = True  # a client that leaves now has its whole answer
            await send(message)

        # from hypercorn's own send: the wrappers around it hide its connection
        closer = client_closer(scope.get("respline.send") or send)
        ex = scope.get("respline.exchange")
        try:
            await self._handle(scope, receive, send_tracked, state, closer, ex)
        except Exception as exc:  # noqa: BLE001 - the safety net: one logged traceback, never hypercorn's
            log_fault(log, f"POST {scope['path']}", exc)
            if not state.started:
                await send_error(send, internal_error())
            # else the response stays cut (no end of body): the client sees it failed

    async def _handle(self, scope: dict, receive, send, state: _RequestState, closer, ex: Exchange | None) -> None:
        try:
            try:
                tenant = self.auth.scope_tenant(scope)
            except ApiError as err:
                # dropped unread, the body would leave the connection unable to serve the next request
                await read_body(scope, receive, self.body_limit, self.body_timeout, keep=False)
                await send_error(send, err)
                return
            # parsed here so the raw body (Codex sends 100 KB and more) is not kept for the
            # whole life of the stream
            if ex is not None:
                ex.tenant = tenant
            req = parse_create(await read_body(scope, receive, self.body_limit, self.body_timeout))
            if ex is not None:
                ex.model = req.model
                ex.mode = "sse" if req.stream else "json"
        except _ClientGone:
            return
        except _Refused as refused:
            await answer_and_close(receive, send, refused.err)
            return
        except ApiError as err:
            await send_error(send, err)
            return
        # handed over in a box so that no frame holds the parsed request (Codex's input items,
        # its tools) for the life of the stream: _serve lets it go once the upstream answers
        request = [req]
        del req
        # One nursery per request holds the disconnect watcher; its scope also ends the
        # upstream read (every scope and nursery is a few hundred bytes of every open stream).
        async with trio.open_nursery() as nursery:
            state.scope = nursery.cancel_scope
            nursery.start_soon(_watch_disconnect, receive, state)
            await self._serve(request, tenant, send, closer, ex)
            state.finished = True
            nursery.cancel_scope.cancel()
        if state.scope.cancelled_caught and not state.finished:
            if ex is not None:
                ex.client_gone = True
            log.info("client went away; upstream request cancelled")

    async def _serve(self, request: list, tenant: str, send, closer, ex: Exchange | None) -> None:
        gw = self.gateway
        req = request.pop()
        turn = None
        try:
            try:
                stream = bool(req.stream)
                if req.background:
                    await self._background(req, tenant, stream, send, ex)
                    return
                turn = await gw.prepare_request(req, tenant, encoding="sse" if stream else None)
                turn.close_client = closer
                turn.exchange = ex
                del req
                upstream = await gw.open_upstream(turn)
                if not turn.store and turn.conversation_id is None:
                    turn.stored_input = []  # nothing will store it (Codex sends store: false)
            except ApiError as err:
                await send_error(send, err)
                return
            except Exception:  # noqa: BLE001 - never a traceback to the client
                log.exception("unexpected error before streaming")
                await send_error(send, internal_error())
                return
            with gw.telemetry.streaming("sse" if stream else "json"):
                if not stream:
                    response = await gw.collect(turn, upstream)
                    if response.status == "failed" and response.error is not None:
                        shutting_down = turn.stop is not None and turn.stop.code == "server_shutting_down"
                        err = ApiError(503 if shutting_down else 502, response.error.message, code=response.error.code, type="server_error")
                        await send_error(send, err)
                    else:
                        await send_json(send, 200, _json.encode(response))
                    return
                await self._stream(turn, upstream, send)
        finally:
            if ex is not None and turn is not None:
                ex.absorb(turn)

    async def _background(self, req, tenant: str, stream: bool, send, ex: Exchange | None) -> None:
        """Start a background run; answer at once (queued) or follow its events as SSE.
        Either way the run continues if this client goes away."""
        if req.store is False:
            raise ApiError(400, "Background responses must be stored; remove 'store: false'.", param="background", code="invalid_value")
        gw = self.gateway
        turn = await gw.prepare_request(req, tenant, encoding=None)
        if ex is not None:
            ex.absorb(turn)
            ex.mode = "background"
        body = await gw.runs.start(turn, ex.request_id + ".run" if ex is not None else None)
        if not stream:
            await send_json(send, 200, _json.encode(body))
            return
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        async for frames in sse_follow(gw, tenant, body["id"], -1):
            await send({"type": "http.response.body", "body": frames, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _stream(self, turn, upstream, send) -> None:
        """The request's task pumps the upstream through the pipeline and writes each read's
        frames to the client in one message, itself: a slow client blocks that write, so the
        upstream is not read meanwhile and the kernel's buffers carry the backpressure, with
        no channel or second task (each is memory of every open stream and a task switch per
        token). Frames ready together (one upstream read) go out together; a client that
        falls behind gets what piled up in the next read. A pump that raised leaves the
        response cut (no end of body), and the error propagates."""
        # one message dict per stream, refilled per write: hypercorn copies the body out
        message = {"type": "http.response.body", "body": b"", "more_body": True}

        async def emit(frames: list) -> None:
            if frames:
                message["body"] = frames[0] if len(frames) == 1 else b"".join(frames)
                await send(message)

        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        await self.gateway.pump(turn, upstream, emit)
        if not client_dropped(turn):  # (a client dropped for not reading has no connection left)
            await send({"type": "http.response.body", "body": b"", "more_body": False})


async def sse_follow(gateway: Gateway, tenant: str, response_id: str, after: int):
    """SSE frames of a background run's stored events after ``after``; [DONE] at the end."""
    async for events in gateway.follow(tenant, response_id, after):
        yield stored_frames(events)
    yield DONE_FRAME


def build_app(
    gateway: Gateway,
    auth: Auth,
    closing: trio.Event | None = None,
    *,
    metrics_here: bool = False,
    metrics_key: str | None = None,
):
    """The ASGI application: the create handler, WebSocket mode on the same path, and a
    QuartTrio app for everything else. ``closing`` is set when the server shuts down."""
    closing = closing if closing is not None else trio.Event()
    app = QuartTrio(__name__)
    app.config["MAX_CONTENT_LENGTH"] = gateway.cfg.limits.body_bytes
    # Quart's hidden deadlines (60 s each by default) cut a background run's follower at one
    # minute with no terminal event. Bodies are read with [timeouts] client_body before Quart
    # sees the request (quart_http), and a response lasts as long as what it streams.
    app.config["BODY_TIMEOUT"] = None
    app.config["RESPONSE_TIMEOUT"] = None
    # no redirects (an HTML 308 for "/v1/models/" or for an id holding "%2F"): a trailing slash
    # is the same route, and a path with an empty segment matches none (404)
    app.url_map.strict_slashes = False
    app.url_map.merge_slashes = False
    create = CreateHandler(gateway, auth)
    body_limit = gateway.cfg.limits.body_bytes
    body_timeout = gateway.cfg.timeouts.client_body

    def tenant() -> str:
        return auth.tenant(request.headers.get("authorization"), request.headers.get("x-api-key"))

    def envelope(err: ApiError) -> QuartResponse:
        resp = QuartResponse(err.body(), status=err.status, content_type="application/json")
        for k, v in err.headers.items():
            resp.headers[k] = v
        return resp

    @app.errorhandler(ApiError)
    async def _api_error(err: ApiError):
        return envelope(err)

    @app.errorhandler(404)
    async def _not_found(_e):
        return envelope(ApiError(404, f"Unknown route: {request.method} {request.path}", code="not_found"))

    @app.errorhandler(405)
    async def _not_allowed(_e):
        return envelope(ApiError(405, f"Method {request.method} is not allowed on {request.path}", code="method_not_allowed"))

    @app.errorhandler(413)
    async def _too_large(_e):
        return envelope(ApiError(413, "The request body is too large.", code="request_too_large"))

    @app.errorhandler(Exception)
    async def _internal(exc: Exception):
        if hasattr(exc, "code") and isinstance(getattr(exc, "code"), int) and 400 <= exc.code < 500:  # werkzeug HTTPException
            return envelope(ApiError(exc.code, str(exc), code="invalid_request"))
        log.exception("unhandled error")
        return envelope(internal_error())

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models():
        tenant()
        data = [
            {"id": m, "object": "model", "created": 0, "owned_by": owner}
            for m, owner in gateway.model_list()
        ]
        return {"object": "list", "data": data}

    state_routes.register(app, gateway, tenant, sse_follow)

    @app.post("/v1/responses/input_tokens")
    async def input_tokens():
        return await counting.input_tokens(gateway, await request.get_data(), tenant())
    async def quart_http(scope: dict, receive, send) -> None:
        """Every other HTTP route: its body read first (and refused when too large or late),
        then Quart, with a safety net for what escapes it (a failing streamed body)."""
        try:
            body = await read_body(scope, receive, body_limit, body_timeout)
        except _ClientGone:
            return
        except _Refused as refused:
            await answer_and_close(receive, send, refused.err)
            return
        pending = [{"type": "http.request", "body": body, "more_body": False}]
        started = False

        async def replay() -> dict:
            return pending.pop() if pending else await receive()

        async def send_shielded(message: dict) -> None:
            nonlocal started
            started = True
            # hypercorn ends the response and readies the connection for its next request
            # inside this call, and queues http.disconnect on the way, which makes quart-trio
            # cancel the handler: cancelled halfway, the connection was left neither reading
            # nor closed (CLOSE-WAIT). hypercorn already shields its socket writes.
            with trio.CancelScope(shield=True):
                await send(message)

        try:
            await app(scope, replay, send_shielded)
        except Exception as exc:  # noqa: BLE001 - the safety net: one logged traceback, never hypercorn's
            log_fault(log, f"{scope['method']} {scope['path']}", exc)
            if not started:
                await send_error(send, internal_error())

    async def asgi(scope: dict, receive, send) -> None:
        kind = scope["type"]
        if kind == "http":
            if scope["method"] == "POST" and scope["path"].rstrip("/") in CREATE_PATHS:
                await create(scope, receive, send)
            else:
                await quart_http(scope, receive, send)
            return
        if kind == "websocket":
            if scope["path"].rstrip("/") in CREATE_PATHS:
                await serve_websocket(scope, receive, send, gateway, auth, closing)
            elif (await receive())["type"] == "websocket.connect":
                # Quart's error handlers need an HTTP request: they raised on an upgrade
                err = ApiError(404, f"No WebSocket at {scope['path']}; WebSocket mode is GET /v1/responses.", code="not_found")
                await deny_upgrade(scope, send, err)
            return
        await app(scope, receive, send)

    outer = observed(asgi, gateway.telemetry, metrics_here=metrics_here, metrics_key=metrics_key)
    outer.quart_app = app  # type: ignore[attr-defined]
    return outer


__all__ = ["build_app", "CreateHandler"]
