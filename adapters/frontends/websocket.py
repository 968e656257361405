"""WebSocket mode of ``/v1/responses`` (SPEC 4): one socket per agent session.

The client sends ``{"type": "response.create", ...create body...}`` text frames; each turn runs
the same pipeline as HTTP and every event goes back as one JSON text frame, with sequence
numbers per response. Turns run one at a time in arrival order. A connection-local cache keeps
the latest responses' whole context, so ``store: false`` chains continue on the same socket
(Codex sends only new items plus ``previous_response_id``); stored responses also continue from
the store. ``generate: false`` (Codex's prewarm) records instructions, tools and input under a new
response id without calling the upstream.

Errors before a turn starts are ``error`` frames with an HTTP-like ``status``; an upstream fault
mid-turn is an ``error`` event and ``response.failed``, and the socket stays usable. A failed
continuation evicts its ``previous_response_id`` from the cache (SPEC 4.4).
"""

from __future__ import annotations

import logging
import os
import math
from collections import OrderedDict
from typing import Any

import msgspec
import trio

from respline.adapters import logs
from respline.adapters.frontends.asgi import client_closer, deny_upgrade, id_headers
from respline.adapters.frontends.auth import Auth
from respline.adapters.frontends.safety_net import internal_error, log_fault
from respline.adapters.exchange import Exchange
from respline.adapters.gateway import Gateway
from respline.adapters.watch import client_dropped
from respline.engine.errors import ApiError, bad_utf8, decode_json
from respline.engine.items import normalise
from respline.engine.seal import open_items
from respline.engine.store import expand_chain
from respline.engine.translate import decode_create, input_items, response_template, validate
from respline.engine.wire import request as Q
from respline.engine.wire.responses import Event, ResponseCompleted, ResponseCreated, ResponseInProgress

log = logging.getLogger("respline.websocket")

_json = msgspec.json.Encoder()


class _FrameType(msgspec.Struct):
    type: str | None = None


_frame_type = msgspec.json.Decoder(_FrameType)


class _Steer(msgspec.Struct):
    previous_response_id: Any = None
    input: Any = None
    stream_id: Any = None


_steer = msgspec.json.Decoder(_Steer)

STEER_FRAMES = ("response.steer", "response.inject")


def steer_failed(raw: bytes, running: str | None, completed: Any) -> bytes:
    """The answer to ``response.steer`` / ``response.inject``: respline runs each turn as one
    upstream call, so there is no point between calls where input could join a running turn;
    the client is told so at once (``response.steer.failed``), never left waiting. The code says
    why: the turn is running (``steering_not_supported``: send the input with the next
    ``response.create``), it has ended (``response_already_completed``), or it is unknown.

    The answer hands the input back (``steer.input``, a string or a list of items in openai's
    ``ResponseSteerFailedEvent``): input of any other type, or a frame too deep to echo safely,
    is ``invalid_input`` and goes back as ``[]``."""
    try:
        steer = decode_json(_steer, raw)  # depth-limited, as every frame that is kept
    except ApiError:
        steer = _Steer()
    prev = steer.previous_response_id
    given = steer.input if isinstance(steer.input, (str, list)) else None
    if not isinstance(prev, str) or not prev or not given:
        code, message = "invalid_input", "A steer needs 'previous_response_id' and 'input' (a string or a non-empty list of items)."
    elif prev == running:
        code = "steering_not_supported"
        message = (
            "This gateway cannot add input to a response while it is being generated; send it with "
            "the next response.create once this response completes."
        )
    elif prev in completed:
        code, message = "response_already_completed", f"Response '{prev}' has already completed."
    else:
        code, message = "response_not_found", f"Response '{prev}' is not active on this connection."
    event: dict[str, Any] = {
        "type": "response.steer.failed",
        "sequence_number": 0,
        "steer": {"previous_response_id": prev if isinstance(prev, str) else "", "input": given if given is not None else []},
        "error": {"type": "invalid_request_error", "code": code, "message": message},
    }
    if isinstance(steer.stream_id, str):
        event["stream_id"] = steer.stream_id
    return _json.encode(event)

CACHE_SIZE = 32  # responses kept per connection; a chain only ever needs its latest


class _Entry(msgspec.Struct):
    """What a continuation from this response needs: its whole context, oldest first."""

    items: list[dict[str, Any]]
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    prewarm: bool = False


class _Closed(Exception):
    pass


def error_frame(err: ApiError) -> bytes:
    """SPEC 3.2 (c): ``{"type":"error","status":N,"error":{type,code,message,param}}``."""
    return _json.encode(
        {
            "type": "error",
            "status": err.status,
            "error": {"type": err.type, "code": err.code, "message": err.message, "param": err.param},
        }
    )


class WebSocketSession:
    def __init__(self, gateway: Gateway, tenant: str, send, receive, max_age: float, closing: trio.Event) -> None:
        self.gateway = gateway
        self.tenant = tenant
        self._send = send
        self._receive = receive
        self.deadline = trio.current_time() + max_age if max_age > 0 else math.inf
        self.closing = closing
        self.cache: OrderedDict[str, _Entry] = OrderedDict()
        self.running: str | None = None  # the id of the response being streamed (steering)
        self.request_id = "ws_" + os.urandom(8).hex()  # the upgrade's x-request-id, if it sent one
        self.turns = 0
        self.close_client = client_closer(send)  # drops a client that stops reading (watch.py)
        self._waiting: trio.CancelScope | None = None  # the wait for the next frame, between turns

    async def send_text(self, data: bytes) -> None:
        await self._send({"type": "websocket.send", "text": data.decode()})

    async def close(self, code: int = 1000) -> None:
        try:
            await self._send({"type": "websocket.close", "code": code})
        except Exception:  # noqa: BLE001 - the peer may already be gone
            pass

    # -- the connection ------------------------------------------------------------------

    async def run(self) -> None:
        frames_in, frames_out = trio.open_memory_channel[bytes](64)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read, frames_in, nursery.cancel_scope)
            nursery.start_soon(self._watch_shutdown)
            async with frames_out:
                while True:
                    # shutdown ends the connection between turns: a turn running when it begins
                    # goes on for the grace period (then is cut with its terminal event); the
                    # socket closes with 1001 once it ended, and no new turn starts
                    if self.closing.is_set():
                        await self.close(1001)  # going away: the server is shutting down
                        break
                    # the lifetime ends the connection between turns too: a turn already running
                    # finishes (its client is owed a terminal event), the next one is refused
                    with trio.move_on_at(self.deadline) as waiting:
                        self._waiting = waiting
                        try:
                            frame = await frames_out.receive()
                        except trio.EndOfChannel:
                            break
                        finally:
                            self._waiting = None
                    if self.closing.is_set():
                        continue
                    if trio.current_time() < self.deadline:
                        await self._frame(frame)
                        continue
                    await self.send_text(
                        error_frame(
                            ApiError(
                                400,
                                "This WebSocket connection reached its maximum age; open a new connection.",
                                code="websocket_connection_limit_reached",
                            )
                        )
                    )
                    await self.close(1000)
                    break
            nursery.cancel_scope.cancel()

    async def _read(self, frames_in: trio.MemorySendChannel, scope: trio.CancelScope) -> None:
        """Client frames into the queue; a client that closes or vanishes cancels everything,
        the in-flight upstream request included."""
        async with frames_in:
            while True:
                msg = await self._receive()
                kind = msg["type"]
                if kind == "websocket.disconnect":
                    scope.cancel()
                    return
                if kind != "websocket.receive":
                    continue
                text = msg.get("text")
                raw = text.encode() if text is not None else msg.get("bytes") or b""
                try:
                    if text is None:
                        raw.decode()  # a binary frame must hold UTF-8 JSON too, skipped fields included
                    # a peek at the type; a response.create frame is decoded whole in _turn
                    ftype = decode_json(_frame_type, raw, depth=False).type
                except UnicodeDecodeError:
                    err = bad_utf8(raw)
                    err.message = f"Frames must be UTF-8 JSON. {err.message}"
                    await self.send_text(error_frame(err))
                    continue
                except ApiError as err:
                    if err.code == "invalid_json":
                        err.message = f"Frames must be JSON objects with a 'type'. {err.message}"
                    await self.send_text(error_frame(err))
                    continue
                if ftype == "response.create":
                    await frames_in.send(raw)
                elif ftype in STEER_FRAMES:
                    # answered here, while a turn may be streaming: hypercorn serialises sends
                    await self.send_text(steer_failed(raw, self.running, self.cache))
                elif ftype is None:
                    await self.send_text(
                        error_frame(
                            ApiError(400, "Missing required parameter: 'type'.", param="type", code="missing_required_parameter")
                        )
                    )
                # response.processed and other client events need no answer (SPEC 4.2)

    async def _watch_shutdown(self) -> None:
        """At shutdown, a connection waiting for its next turn stops waiting (and closes)."""
        await self.closing.wait()
        if self._waiting is not None:
            self._waiting.cancel()

    # -- one turn ------------------------------------------------------------------------

    async def _frame(self, raw: bytes) -> None:
        """One ``response.create`` frame. Whatever goes wrong, the socket stays usable: a bad
        frame is an error frame, and so is an unexpected fault (logged), never a close. Each
        turn is a request of its own in the log and the metrics: the connection's request id
        and the turn's number."""
        self.turns += 1
        ex = Exchange(f"{self.request_id}.{self.turns}", "GET", "/v1/responses", mode="websocket")
        ex.tenant = self.tenant
        ex.status = 200
        token = logs.request_id.set(ex.request_id)
        try:
            await self._turn(raw, ex)
        except Exception as exc:  # noqa: BLE001 - the safety net: one logged traceback and an error frame
            log_fault(log, "a WebSocket turn", exc)
            ex.status, ex.error = 500, "server_error"
            await self.send_text(error_frame(internal_error()))
        finally:
            self.gateway.telemetry.end(ex)
            logs.request_id.reset(token)

    async def _turn(self, raw: bytes, ex: Exchange) -> None:
        prev: str | None = None
        turn = None
        try:
            req = decode_create(raw)
            ex.model = req.model
            req.stream = True  # implicit over WebSocket; "stream"/"background" in a frame are ignored
            req.background = None
            prev = req.previous_response_id
            context = await self._context(req)
            validate(req)
            if req.generate is False:
                await self._prewarm(req, context)
                return
            turn = await self.gateway.prepare_request(req, self.tenant, encoding="json", context=context)
            turn.close_client = self.close_client
            turn.exchange = ex
            upstream = await self.gateway.open_upstream(turn)
        except ApiError as err:
            if turn is not None:
                ex.absorb(turn)
            ex.status, ex.error = err.status, err.code
            if prev is not None:
                self.cache.pop(prev, None)
            await self.send_text(error_frame(err))
            return
        self.running = turn.pipeline.response.id
        try:
            with self.gateway.telemetry.streaming("websocket"):
                await self.gateway.pump(turn, upstream, self._emit)
        finally:
            self.running = None
            ex.absorb(turn)
        if client_dropped(turn):
            return  # its connection is closed; the reader sees the disconnect
        resp = turn.pipeline.response
        if resp.status == "failed":
            if prev is not None:
                self.cache.pop(prev, None)
            return
        output = [msgspec.to_builtins(i) for i in turn.pipeline.output]
        self._remember(resp.id, _Entry(items=(context or []) + turn.stored_input + output))

    async def _emit(self, frames: list) -> None:
        for frame in frames:
            await self.send_text(frame)

    async def _context(self, req: Q.CreateRequest) -> list[dict[str, Any]] | None:
        """The chain a continuation continues: connection cache first, then the store."""
        prev = req.previous_response_id
        if prev is None:
            return None
        entry = self.cache.get(prev)
        if entry is not None:
            self.cache.move_to_end(prev)
            if entry.prewarm:
                # a prewarm recorded instructions and tools for the turns that follow it
                if req.instructions is None:
                    req.instructions = entry.instructions
                if req.tools is None:
                    req.tools = entry.tools
            return list(entry.items)
        chain = await expand_chain(self.gateway.store, self.tenant, prev)
        if chain is None:
            raise ApiError(
                400,
                f"Previous response with id '{prev}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        return chain

    async def _prewarm(self, req: Q.CreateRequest, context: list[dict[str, Any]] | None) -> None:
        """``generate: false``: no upstream call; a completed empty response to continue from."""
        gw = self.gateway
        typed = input_items(req)
        open_items(gw.sealer, self.tenant, typed, {})  # a token that will not open is refused now
        items = [normalise(it, gw.ids) for it in typed]
        resp = response_template(req, gw.ids, gw.clock)
        events: list[Event] = [ResponseCreated(response=resp), ResponseInProgress(response=resp)]
        done = msgspec.structs.replace(resp, status="completed", completed_at=gw.clock.now())
        events.append(ResponseCompleted(response=done))
        for n, ev in enumerate(events):
            ev.sequence_number = n
            await self.send_text(_json.encode(ev))
        self._remember(
            resp.id,
            _Entry(items=(context or []) + items, instructions=req.instructions, tools=req.tools, prewarm=True),
        )

    def _remember(self, response_id: str, entry: _Entry) -> None:
        self.cache[response_id] = entry
        while len(self.cache) > CACHE_SIZE:
            self.cache.popitem(last=False)


async def serve_websocket(scope: dict, receive, send, gateway: Gateway, auth: Auth, closing: trio.Event) -> None:
    """The ASGI websocket handler: authenticate the upgrade, then run the session."""
    msg = await receive()
    if msg["type"] != "websocket.connect":
        return
    try:
        tenant = auth.scope_tenant(scope)
    except ApiError as err:
        await deny_upgrade(scope, send, err)
        return
    await send({"type": "websocket.accept", "headers": id_headers(scope)})
    session = WebSocketSession(gateway, tenant, send, receive, gateway.cfg.server.websocket_max_age, closing)
    session.request_id = scope.get("respline.request_id") or session.request_id
    try:
        await session.run()
    except Exception:  # noqa: BLE001 - one session's fault must not take the server down
        log.exception("websocket session failed")
        await session.close(1011)


__all__ = ["serve_websocket", "WebSocketSession", "error_frame"]
