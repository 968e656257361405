"""One turn, front end independent: parse, route, translate, call the upstream, stream back.

The HTTP and WebSocket front ends both go through here. ``prepare_request`` does everything that
can fail with an error envelope before a byte is sent (validation, routing, resolving stored
context); ``open_upstream`` adds the upstream's own refusals (status, connect errors, timeouts);
``pump`` streams the rest, where a failure can only be an ``error`` event and ``response.failed``.
State (stored responses, conversations, background runs) goes through the Store protocol.

A response being produced with ``store: true`` (a background run, or a foreground stream) is
durable: it is recorded ``in_progress`` under a lease of this process (``owner``) when it
starts, its stored output is brought up to date as each output item completes, and it is stored
final before its client hears the end. A process that dies leaves leases that run out; ``reap``
(any process, periodically) ends those responses as failed with what they had produced.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import socket
import time
from time import perf_counter
from pathlib import Path
from typing import Any, Awaitable, Callable

import httpx
import msgspec
import trio

from respline.adapters.exchange import Exchange, Telemetry
from respline.adapters.config import Config, ConfigError, Router, Timeouts, expand_env
from respline.adapters.providers.common import TurnContext
from respline.adapters.state import private_dir
from respline.adapters.watch import CANCELLED, CLIENT_GONE, SHUTDOWN, Watch, tick_for
from respline.engine.deltas import UpstreamError
from respline.engine import compaction
from respline.engine.errors import ApiError, decode_json
from respline.engine.ids import Clock, Ids
from respline.engine.items import normalise
from respline.engine.pipeline import ResponsePipeline, responses_pipeline
from respline.engine.seal import Sealer, open_items
from respline.engine.store import RunLease, Store, StoredConversation, StoredEvent, StoredResponse, expand_chain
from respline.engine import tokens, tool_policy
from respline.engine.compact_turn import CompactionPipeline, summary_turn
from respline.engine.context import (
    after_compaction,
    check_call_outputs,
    compact_threshold,
    from_latest_compaction,
    take_trigger,
    truncate_oldest,
)
from respline.engine.translate import (
    decode_item,
    echo_tools,
    input_items,
    parse_create,
    response_builtins,
    response_template,
    to_chat_messages,
    translate_tools,
)
from respline.engine.wire import request as Q
from respline.engine.wire import responses as R
from respline.engine.wire.responses import TERMINAL_EVENTS, MessageItem, OutputText, Response, event_type, type_of

log = logging.getLogger("respline.gateway")

_ERROR_BODY_LIMIT = 64 * 1024
_json = msgspec.json.Encoder()
_compact_decoder = msgspec.json.Decoder(compaction.CompactRequest)

TERMINAL_STATUSES = frozenset({"completed", "incomplete", "failed", "cancelled"})
TERMINAL_TYPES = frozenset(event_type(c) for c in TERMINAL_EVENTS)

Emit = Callable[[list], Awaitable[None]]

# reaping (Gateway.reap): lapsed leases taken per statement, orphans ended at once
REAP_BATCH = 25
REAP_PARALLEL = 8

# how a response whose producing process died (its lease ran out) ends
ORPHANED = UpstreamError(
    message="The server process producing this response stopped (it was killed or crashed) before the response finished.",
    type="server_error",
    code="server_error",
)


class Turn:
    """Everything one request needs once it has been validated."""

    __slots__ = (
        "req",
        "previous_response_id",
        "background",
        "tenant",
        "stored_input",
        "provider",
        "route",
        "items",
        "attempt",
        "ctx",
        "upstream_body",
        "http_request",
        "payload",
        "pipeline",
        "store",
        "conversation_id",
        "template",
        "compact",
        "seeded",
        # in flight (adapters/watch.py): why it was cut, the scope a cut cancels, whether it is
        # writing to its client and since when, its upstream read limits, how to drop its client
        "stop",
        "scope",
        "writing",
        "since",
        "read_limit",
        "total_at",
        "close_client",
        "leased",  # this process holds the lease of its stored response
        "exchange",  # the request's record (adapters/exchange.py): log line, metrics, trace
        "answer",
    )

    def __init__(self) -> None:
        self.conversation_id: str | None = None
        self.compact = False  # the input ends with compaction_trigger (engine/compact_turn.py)
        self.seeded: list = []  # output items made before the upstream call (context_management)
        self.stop: UpstreamError | None = None
        self.scope: trio.CancelScope | None = None
        self.writing = False
        self.since = 0.0
        self.read_limit = math.inf
        self.total_at = math.inf
        self.close_client: Callable[[], None] | None = None
        self.leased = False
        self.exchange: Exchange | None = None
        self.answer = None  # Prepared.answer: reads an upstream's whole JSON answer as a stream


class Gateway:
    def __init__(
        self,
        cfg: Config,
        providers: dict[str, Any],  # name -> ChatProvider | AnthropicProvider | ResponsesProvider
        router: Router,
        store: Store,
        sealer: Sealer,
        ids: Ids | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.cfg = cfg
        self.providers = providers
        self.router = router
        self.store = store
        self.sealer = sealer
        self.ids = ids or Ids()
        self.clock = clock or Clock()
        self.dialect = cfg.server.reasoning_dialect
        self.runs = None  # adapters.background.Runs, set by the server
        limits = [cfg.timeouts.client_write]
        for t in [cfg.timeouts] + [p.timeouts for p in providers.values() if getattr(p, "timeouts", None) is not None]:
            limits += [t.first_byte, t.idle, t.total]
        self.watch = Watch(cfg.timeouts.client_write, tick_for(limits))
        # this process's lease owner id: unique per start, readable in the database
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"
        self.lease_seconds = cfg.store.lease_seconds
        self.telemetry = Telemetry(None)  # logs only; the server adds metrics and traces
        self.watch.on_timeout = self._timed_out

    def model_list(self) -> list[tuple[str, str]]:
        """Routable model names with their provider (config.Router.listed says how globs list)."""
        return self.router.listed(self.cfg.routes)

    # -- before any byte -----------------------------------------------------------------

    async def prepare(self, body: bytes, tenant: str, *, encoding: str | None = "sse") -> Turn:
        return await self.prepare_request(parse_create(body), tenant, encoding=encoding)

    async def prepare_request(
        self,
        req: Q.CreateRequest,
        tenant: str,
        *,
        encoding: str | None = "sse",
        context: list[dict[str, Any]] | None = None,
    ) -> Turn:
        """Validate, route and translate. ``context`` (the WebSocket connection cache) replaces
        the store lookup of ``previous_response_id`` when the caller already has the chain."""
        route = self.router.resolve(req.model or "")
        if route is None:
            raise ApiError(
                404,
                f"The model '{req.model}' does not exist or is not routed by this gateway.",
                param="model",
                code="model_not_found",
            )
        tool_policy.check_tools(req.tools, req.max_tool_calls)
        items = await self._resolve_references(input_items(req), tenant)
        conversation_id = None
        if context is None:
            context = []
            if req.previous_response_id:
                chain = await expand_chain(self.store, tenant, req.previous_response_id)
                if chain is None:
                    raise ApiError(
                        404,
                        f"Previous response with id '{req.previous_response_id}' not found.",
                        param="previous_response_id",
                        code="previous_response_not_found",
                    )
                context = chain
            elif req.conversation is not None:
                conversation_id = _conversation_id(req.conversation)
                if await self.store.get_conversation(tenant, conversation_id) is None:
                    raise ApiError(
                        404,
                        f"Conversation with id '{conversation_id}' not found.",
                        param="conversation",
                        code="conversation_not_found",
                    )
                context = await self.store.conversation_items(tenant, conversation_id)
        prior = from_latest_compaction([decode_item(_as_input(it), "context") for it in context])
        prior, new, triggered = take_trigger(prior, items)
        threshold = compact_threshold(req.context_management)
        if not new and not prior:
            raise ApiError(400, "Missing required parameter: 'input'.", param="input", code="missing_required_parameter")
        # every sealed token opens here, for this tenant, before any provider translates: one
        # that does not is a 400 naming its item, and nothing reaches the upstream
        opened: dict[str, dict[str, Any]] = {}
        open_items(self.sealer, tenant, items, opened)
        open_items(self.sealer, tenant, prior, opened, "conversation" if conversation_id is not None else "previous_response_id")
        check_call_outputs(prior + new)
        turn = Turn()
        turn.req = req
        turn.previous_response_id = req.previous_response_id
        turn.background = bool(req.background)
        turn.tenant = tenant
        turn.stored_input = [normalise(it, self.ids) for it in items]
        turn.route = route
        turn.items = prior + new
        turn.compact = triggered
        turn.attempt = 0
        turn.template = response_template(req, self.ids, self.clock)
        turn.ctx = TurnContext(
            turn.template,
            self.ids,
            self.clock,
            encoding,
            self.dialect,
            self.sealer,
            "reasoning.encrypted_content" in (req.include or []),
            tenant,
            opened,
        )
        turn.ctx.whole = encoding is None and not turn.background
        if threshold is not None and not triggered:
            await self._auto_compact(turn, new, threshold)
        self._prepare_attempt(turn)
        turn.store = req.store is not False
        turn.conversation_id = conversation_id
        return turn

    async def _auto_compact(self, turn: Turn, new: list[Any], threshold: int) -> None:
        """``context_management``: a context over ``compact_threshold`` tokens (estimated,
        engine/tokens.py) is summarised first, by the same call a ``compaction_trigger`` makes;
        the response then opens with that compaction item and the model answers from the summary."""
        req = turn.req
        messages = to_chat_messages(req.instructions, turn.items, unseal=turn.ctx.unseal)
        if tokens.count_chat({"messages": messages, "tools": translate_tools(req.tools)[0]}) <= threshold:
            return
        sub = Turn()
        sub.req, sub.items, sub.route, sub.attempt, sub.compact = req, turn.items, turn.route, 0, True
        sub.tenant, sub.background, sub.stored_input, sub.previous_response_id = turn.tenant, False, [], None
        sub.template, sub.store = turn.template, False
        ctx = turn.ctx
        sub.ctx = TurnContext(
            turn.template, ctx.ids, ctx.clock, None, ctx.reasoning_dialect, ctx.sealer, ctx.include_encrypted, ctx.tenant, ctx.opened
        )
        self._prepare_attempt(sub)
        summary = await self.collect(sub, await self.open_upstream(sub))
        if summary.status != "completed" or not summary.output:
            err = summary.error
            raise ApiError(
                502,
                f"The context could not be compacted: {err.message if err is not None else 'no summary'}",
                code="compaction_failed",
                type="server_error",
            )
        item = summary.output[0]
        # the new item is opened like every other for this request (engine/seal.py)
        open_items(self.sealer, turn.tenant, [Q.CompactionIn(encrypted_content=item.encrypted_content)], ctx.opened)
        turn.seeded = [item]
        turn.items = after_compaction(turn.items, new, Q.CompactionIn(encrypted_content=item.encrypted_content, id=item.id))

    async def _resolve_references(self, items: list[Any], tenant: str) -> list[Any]:
        """``item_reference`` input items become the stored items they name."""
        out = []
        for i, item in enumerate(items):
            if type(item) is Q.ItemReferenceIn:
                stored = await self.store.get_item(tenant, item.id)
                if stored is None:
                    raise ApiError(404, f"Item with id '{item.id}' not found.", param=f"input[{i}].id", code="item_not_found")
                item = decode_item(_as_input(stored), f"input[{i}]")
            out.append(item)
        return out

    def _prepare_attempt(self, turn: Turn) -> None:
        """The request and pipeline for the route's provider number ``turn.attempt``: each
        provider kind translates the same items its own way. Every attempt shares the one
        Response template, so the response id does not change when a fallback answers."""
        name, upstream_model = turn.route.attempts[turn.attempt]
        provider = self.providers[name]
        req, items, ctx = turn.req, turn.items, turn.ctx
        ctx.template = turn.template
        adjusted = tool_policy.for_upstream(req, provider.kind, turn.route.hosted_tools)
        if adjusted is not None:  # hosted tools dropped: the Response does not claim them
            req = adjusted
            choice = req.tool_choice if req.tool_choice is not None else "auto"
            ctx.template = msgspec.structs.replace(turn.template, tools=echo_tools(req.tools), tool_choice=choice)
        if provider.kind not in tool_policy.RUNS_HOSTED:
            req = tool_policy.with_discovered(req, items)
            items = self._truncate(turn, req, items)
        if turn.compact:
            ask, ask_items = summary_turn(req, items)
            inner = TurnContext(
                ctx.template, ctx.ids, ctx.clock, None, ctx.reasoning_dialect, ctx.sealer, ctx.include_encrypted,
                ctx.tenant, ctx.opened,
            )
            prepared = provider.prepare(ask, ask_items, upstream_model, inner)
            seal = functools.partial(self.sealer.seal_summary, ctx.tenant)
            prepared.pipeline = CompactionPipeline(prepared.pipeline, ctx.encoding, self.ids, self.clock, seal)
        else:
            prepared = provider.prepare(req, items, upstream_model, ctx)
            for item in turn.seeded:
                prepared.pipeline.seed(item)
        prepared.pipeline.queued = turn.background
        turn.provider = provider
        turn.upstream_body = prepared.body
        turn.http_request = prepared.request
        turn.payload = prepared.payload
        turn.pipeline = prepared.pipeline
        turn.answer = prepared.answer

    def _truncate(self, turn: Turn, req: Q.CreateRequest, items: list[Any]) -> list[Any]:
        """``truncation: "auto"`` where the route's context window is known: the oldest turns
        go until the estimate (engine/tokens.py) leaves room for ``max_output_tokens``."""
        window = turn.route.context_window
        if req.truncation != "auto" or not window:
            return items
        budget = window - (req.max_output_tokens or 0)

        def count(kept: list[Any]) -> int:
            messages = to_chat_messages(req.instructions, kept, unseal=turn.ctx.unseal)
            return tokens.count_chat({"messages": messages, "tools": translate_tools(req.tools)[0]})

        return truncate_oldest(items, budget, count)

    async def open_upstream(self, turn: Turn) -> httpx.Response:
        """Send the upstream request and wait for its status line; refusals become ApiErrors.
        A turn cut meanwhile (shutdown, a cancelled run) ends with a 503 naming why."""
        watch = self.watch
        if turn.stop is None:
            with trio.CancelScope() as scope:
                turn.scope = scope
                watch.add(turn)
                try:
                    return await self._open_with_fallbacks(turn)
                finally:
                    watch.discard(turn)
                    turn.scope = None
        why = turn.stop or SHUTDOWN
        raise ApiError(503, why.message, code=why.code, type="server_error")

    async def _open_with_fallbacks(self, turn: Turn) -> httpx.Response:
        """A route's fallbacks are tried in order while nothing has reached the client: after a
        connect error, a timeout, a 429 or a 5xx from one provider, the next gets the request
        (translated for its kind). Once streaming began there is no retry (``pump``)."""
        while True:
            try:
                resp = await self._open_attempt(turn)
            except ApiError as err:
                if not (err.status == 429 or err.status >= 500) or turn.attempt + 1 >= len(turn.route.attempts):
                    raise
                failed = turn.provider.name
                turn.attempt += 1
                self._prepare_attempt(turn)
                if self.telemetry.metrics is not None:
                    self.telemetry.metrics.fallbacks.labels(failed, turn.provider.name).inc()
                log.warning(
                    "provider %s failed (%d %s); falling back to %s", failed, err.status, err.code, turn.provider.name
                )
                continue
            # streaming starts: what only a fallback needed can go (the parsed
            # request and the encoded upstream body: ~100 KB each for a Codex turn, held for as
            # long as the stream is open otherwise)
            turn.items = turn.upstream_body = turn.payload = turn.req = turn.http_request = None
            turn.ctx.opened = None  # the opened sealed tokens, only a fallback's translation needed
            if turn.answer is not None and b"json" in resp.headers.get("content-type", "").encode():
                resp.stream = _WholeAnswer(resp.stream, turn.answer)  # (an upstream may stream anyway)
            return resp

    async def _open_attempt(self, turn: Turn) -> httpx.Response:
        t: Timeouts = turn.provider.timeouts
        ex = turn.exchange
        if ex is not None and ex.upstream_start is None:
            ex.upstream_start = perf_counter()
        if ex is not None:
            turn.http_request.headers["x-request-id"] = ex.request_id  # the upstream's logs too
            if self.telemetry.tracer is not None:
                self.telemetry.tracer.inject(ex, turn.http_request.headers)
        try:
            with trio.fail_after(t.connect + t.first_byte):
                resp = await turn.provider.send(turn.http_request)
        except trio.TooSlowError:
            self._upstream_fault(turn, "timeout", "", "no answer within first_byte", timeout="first_byte")
            raise ApiError(504, "The upstream did not answer in time.", code="upstream_timeout", type="server_error") from None
        except httpx.TimeoutException:
            self._upstream_fault(turn, "timeout", "", "connect timed out", timeout="connect")
            raise ApiError(504, "Timed out connecting to the upstream.", code="upstream_timeout", type="server_error") from None
        except httpx.ConnectError as exc:
            self._upstream_fault(turn, "connect_error", "", f"cannot connect: {exc.__class__.__name__}")
            raise ApiError(
                502, f"The upstream is unreachable: {exc.__class__.__name__}.", code="upstream_unreachable", type="server_error"
            ) from None
        except httpx.HTTPError as exc:
            # connected, but no answer: the upstream may have the request, so it is not sent again
            self._upstream_fault(turn, "connect_error", "", f"connection failed before an answer: {exc.__class__.__name__}")
            raise ApiError(
                502, f"The upstream connection failed before an answer: {exc.__class__.__name__}.", code="upstream_error", type="server_error"
            ) from None
        if resp.status_code >= 400:
            body = b""
            try:
                with trio.move_on_after(t.idle):
                    async for piece in resp.aiter_raw():
                        body += piece
                        if len(body) > _ERROR_BODY_LIMIT:
                            break
            except httpx.HTTPError:
                pass
            finally:
                await resp.aclose()
            err = turn.provider.error(resp.status_code, body, resp.headers)
            self._upstream_fault(turn, "http_error", str(resp.status_code), f"answered {resp.status_code} {err.code}")
            raise err
        return resp

    def _upstream_fault(self, turn: Turn, outcome: str, status: str, cause: str, timeout: str | None = None) -> None:
        """An upstream refusal or fault before streaming: a warning line and its metrics."""
        name = turn.provider.name
        log.warning("upstream %s: %s", name, cause, extra={"fields": {"provider": name, "outcome": outcome}})
        m = self.telemetry.metrics
        if m is not None:
            m.upstream_requests.labels(name, outcome, status).inc()
            if timeout is not None:
                m.timeouts.labels(timeout).inc()

    def _upstream_end(self, turn: Turn, failure: UpstreamError | None) -> None:
        """An upstream call that streamed: how it ended, counted once; a fault is a warning."""
        if failure is not None and failure.code not in ("client_timeout", "client_disconnected", "server_shutting_down", "response_cancelled"):
            log.warning(
                "upstream %s: the stream failed: %s (%s)", turn.provider.name, failure.message, failure.code,
                extra={"fields": {"provider": turn.provider.name, "error": failure.code}},
            )
        m = self.telemetry.metrics
        if m is None:
            return
        if failure is None:
            outcome = "ok"
        elif failure.code == "upstream_timeout":
            outcome = "timeout"
        elif failure.code in ("client_timeout", "client_disconnected", "server_shutting_down", "response_cancelled"):
            outcome = "cancelled"
        else:
            outcome = "stream_error"
        m.upstream_requests.labels(turn.provider.name, outcome, "200").inc()

    def _timed_out(self, turn: Turn, kind: str) -> None:
        """The watch cut a turn for a deadline (first_byte, idle, total, client_write)."""
        m = self.telemetry.metrics
        if m is not None:
            m.timeouts.labels(kind).inc()

    # -- streaming -----------------------------------------------------------------------

    async def pump(self, turn: Turn, resp: httpx.Response, emit: Emit) -> None:
        """Upstream body -> pipeline -> ``emit(frames)``; always ends with a terminal event.

        Time limits are the watch's (adapters/watch.py): this loop only marks when it waits on
        the upstream and when it writes to the client (``turn.writing``, ``turn.since``), and
        looks at ``turn.stop`` after each read and each write; a cut cancels ``turn.scope``
        while it waits on the upstream, never mid-write. A ``store: true`` response is recorded
        when it starts, brought up to date as each output item completes, and stored final
        before the frames that carry its terminal event go out.
        """
        pipe: ResponsePipeline = turn.pipeline
        t: Timeouts = turn.provider.timeouts
        body = resp.stream
        watch = self.watch
        durable = turn.store
        # Each write to the client costs ~0.1 ms of fixed server overhead (bench/README.md), so
        # events that are ready together go out together: the opening events wait for the first
        # upstream read only when its bytes came with the head, and the last read's events go
        # out with the terminal ones.
        held = pipe.start()
        failure: UpstreamError | None = None
        gone: BaseException | None = None
        out: list = []
        idle = t.idle
        items = 0
        ex = turn.exchange
        first_token = ex is not None  # the first frames read from the upstream time TTFT
        turn.since = now = trio.current_time()
        turn.read_limit = t.first_byte
        turn.total_at = now + t.total
        turn.writing = False
        try:
            with trio.CancelScope() as scope:
                turn.scope = scope
                watch.add(turn)
                if durable and not turn.leased:
                    await self.begin_record(turn)
                if not getattr(body, "buffered", False):
                    turn.writing = True
                    await emit(held)
                    turn.writing = False
                    held = []
                    turn.since = trio.current_time()
                async for chunk in body:  # the transport's body itself: no chunker layer
                    if turn.stop is not None:
                        break  # cut as this read completed
                    turn.since = trio.current_time()
                    turn.read_limit = idle
                    frames = pipe.feed(chunk)
                    if held:
                        frames = held + frames
                        held = []
                    if frames:
                        if pipe.builder.finished:  # an in-band upstream error ended it
                            out = frames
                            break
                        if getattr(body, "complete", False):
                            out = frames  # the loop ends next, without a read
                            continue
                        turn.writing = True
                        await emit(frames)
                        turn.writing = False
                        if first_token:
                            first_token = False
                            ex.first_token = perf_counter()
                        if turn.stop is not None:
                            break  # cut while writing
                        if durable and len(pipe.builder.output) != items:
                            items = len(pipe.builder.output)
                            await self.record_status(turn, "in_progress", progress=True)  # an item completed
                        turn.since = trio.current_time()
        except trio.Cancelled as exc:  # the client left (or, past the shutdown backstop, the server)
            gone = exc
        except httpx.HTTPError as exc:
            failure = UpstreamError(
                message=f"The upstream connection failed mid-stream: {exc.__class__.__name__}.",
                type="server_error",
                code="upstream_error",
            )
        finally:
            watch.discard(turn)
            turn.scope = None
            turn.writing = False
            with trio.CancelScope(shield=True):
                await resp.aclose()
        if gone is not None:
            # no client to tell, but what was produced is stored (a background run's followers
            # get its end too)
            self._upstream_end(turn, CLIENT_GONE)
            with trio.CancelScope(shield=True):
                end = pipe.fail(SHUTDOWN if watch.stopping is not None else CLIENT_GONE)
                await self.finish(turn)
                if turn.background:
                    await emit(end)
            raise gone
        if failure is None:
            failure = turn.stop
        self._upstream_end(turn, failure or getattr(pipe.builder, "failure", None))  # (or in-band)
        if first_token and failure is None:  # the whole answer came in one read, with its end
            ex.first_token = perf_counter()
        out = held + out  # (held: nothing was read)
        out += pipe.fail(failure) if failure is not None else pipe.close()
        if failure is not None and failure.code == "client_timeout":
            with trio.CancelScope(shield=True):  # its connection is closed: store, tell nobody
                await self.finish(turn)
            return
        if turn.background:
            # the event log is the client: all but the terminal event (and the error before it)
            # go in before the final status is stored, so a crash between the two leaves a log
            # that lacks only its end, which follow() adds from the stored status
            cut = len(out) - 1
            if cut > 0 and type(out[cut - 1]) is R.ErrorEvent:
                cut -= 1
            await emit(out[:cut])
            out = out[cut:]
        with trio.CancelScope(shield=True):
            await self.finish(turn)
        await emit(out)

    async def fail_before_stream(self, turn: Turn, err: ApiError, emit: Emit) -> None:
        """A run that could not reach its upstream (background runs): created, then failed."""
        pipe = turn.pipeline
        await emit(pipe.start())
        out = pipe.fail(UpstreamError(message=err.message, type=err.type, code=err.code, param=err.param))
        with trio.CancelScope(shield=True):
            await self.finish(turn)
        await emit(out)

    async def collect(self, turn: Turn, resp: httpx.Response) -> Response:
        """Non-streaming: the same pipeline, returning the final Response object."""

        async def sink(_events: list) -> None:
            pass

        await self.pump(turn, resp, sink)
        return turn.pipeline.response

    async def finish(self, turn: Turn) -> None:
        """Persist what the client is about to be told exists: the response and conversation.
        A cancelled run is stored ``cancelled`` (its events end in ``response.failed``)."""
        resp = turn.pipeline.response
        if turn.store:
            body = response_builtins(resp)
            if turn.stop is CANCELLED:
                body["status"], body["error"] = "cancelled", None
            # final, and its lease ended, in one write: the one round trip the terminal event waits for
            await self.store.put_response(
                StoredResponse(
                    tenant=turn.tenant,
                    id=resp.id,
                    response=body,
                    input_items=turn.stored_input,
                    previous_response_id=turn.previous_response_id,
                    created_at=resp.created_at,
                    background=turn.background,
                ),
                release=turn.leased,
            )
            turn.leased = False
        await self.end_lease(turn)
        if turn.conversation_id is not None and resp.status != "failed":
            output = [msgspec.to_builtins(item) for item in turn.pipeline.builder.output]
            await self.store.add_conversation_items(turn.tenant, turn.conversation_id, turn.stored_input + output)

    # -- leases: a crash never leaves a response in_progress ---------------------------------

    async def begin_record(self, turn: Turn, status: str = "in_progress") -> dict[str, Any]:
        """Record the response under a lease of this process, both in one write (a record
        without its lease would never end)."""
        lease = RunLease(turn.tenant, turn.pipeline.response.id, self.owner, time.time() + self.lease_seconds)
        body = await self.record_status(turn, status, lease=lease)
        turn.leased = True
        return body

    async def end_lease(self, turn: Turn) -> None:
        if turn.leased:
            turn.leased = False
            await self.store.end_lease(turn.tenant, turn.pipeline.response.id)

    async def renew_leases(self) -> None:
        await self.store.renew_leases(self.owner, time.time() + self.lease_seconds)

    async def reap(self) -> int:
        """End the responses whose producing process died: take their lapsed leases (atomically,
        so one process ends each), store each as failed with the output it had, give a
        background run's event log its end (``error`` + ``response.failed``), drop the lease.
        A process that fails midway leaves the lease to lapse again and be retried.

        A dead host may leave hundreds: they are taken ``REAP_BATCH`` at a time (so the other
        hosts' reapers take their share meanwhile) and ended ``REAP_PARALLEL`` at once (each is
        a few store round trips: one after the other, 100 took over a second)."""
        ended = 0
        limiter = trio.CapacityLimiter(REAP_PARALLEL)
        while True:
            now = time.time()
            taken = await self.store.take_lapsed(now, self.owner, now + self.lease_seconds, REAP_BATCH)
            # a lease of this very process can lapse only if its renewals stalled: its live turns
            # go on, under the lease just taken back
            live = {turn.pipeline.response.id for turn in self.watch.active}
            if self.runs is not None:
                live.update(self.runs.live_ids())
            orphans = [lease for lease in taken if lease.response_id not in live]
            async with trio.open_nursery() as nursery:
                for lease in orphans:
                    nursery.start_soon(self._end_one, lease.tenant, lease.response_id, limiter)
            ended += len(orphans)
            if len(taken) < REAP_BATCH:
                return ended

    async def _end_one(self, tenant: str, response_id: str, limiter: trio.CapacityLimiter) -> None:
        async with limiter:
            try:
                await self._end_orphan(tenant, response_id)
            except Exception:  # noqa: BLE001 - one bad row must not stop the others
                log.exception("could not end orphaned response %s", response_id)

    async def _end_orphan(self, tenant: str, response_id: str) -> None:
        stored = await self.store.get_response(tenant, response_id)
        if stored is not None and stored.response.get("status") not in TERMINAL_STATUSES:
            log.warning("response %s: the server process producing it stopped; ending it as failed", response_id)
            if stored.background:
                events = await self.store.get_events(tenant, response_id, -1)
                ended = [ev for ev in events if ev.type in TERMINAL_TYPES]
                if ended:  # the log has its end: the stored status had not caught up
                    stored.response = msgspec.json.decode(ended[0].data)["response"]
                    await self.store.put_response(stored)
                else:
                    new, final = self.close_log(stored, events, ORPHANED)
                    stored.response = final
                    await self.store.put_response(stored)
                    await self.store.append_events(tenant, response_id, new)
            else:
                stored.response.update(
                    status="failed", error={"code": ORPHANED.code, "message": ORPHANED.message}, completed_at=None
                )
                await self.store.put_response(stored)
        await self.store.end_lease(tenant, response_id)

    def close_log(
        self, stored: StoredResponse, events: list[StoredEvent], end: UpstreamError | None
    ) -> tuple[list[StoredEvent], dict[str, Any]]:
        """What a run's event log lacks to be a whole stream, and the Response it ends with.

        The log is replayed through a Responses-API normaliser (the stage that takes a Responses
        stream from an upstream), which closes whatever the log left open; then it is ended:
        ``end`` None ends it as stored (completed or incomplete), else ``error`` +
        ``response.failed``. The new events are numbered after the log."""
        base = {k: v for k, v in stored.response.items() if k not in _FINAL_KEYS}
        template = msgspec.convert(base, Response)
        pipe = responses_pipeline(template, self.ids, self.clock, encoding=None, reasoning_dialect=self.dialect)
        opening = pipe.start()
        replay = b"".join(
            b"event: " + ev.type.encode() + b"\ndata: " + ev.data + b"\n\n"
            for ev in events
            if ev.type not in TERMINAL_TYPES and ev.type != "error"
        )
        pipe.feed(replay)
        if end is not None:
            tail = pipe.fail(end)
        else:
            kind = "response.incomplete" if stored.response.get("status") == "incomplete" else "response.completed"
            terminal = _json.encode({"type": kind, "response": stored.response})
            tail = pipe.feed(b"event: " + kind.encode() + b"\ndata: " + terminal + b"\n\n") + pipe.close()
        new = tail if events else opening + tail
        seq = events[-1].seq if events else -1
        for ev in new:
            seq += 1
            ev.sequence_number = seq
        return [stored_event(ev) for ev in new], response_builtins(pipe.response)

    # -- background runs -------------------------------------------------------------------

    async def record_status(
        self, turn: Turn, status: str, *, lease: RunLease | None = None, progress: bool = False
    ) -> dict[str, Any]:
        """Write the response as it stands (queued, in progress, with its output so far), with
        the lease it starts under (``begin_record``); ``progress``: a later write supersedes it."""
        resp = msgspec.structs.replace(turn.pipeline.response, status=status)
        body = response_builtins(resp)
        body["output"] = [msgspec.to_builtins(item) for item in turn.pipeline.builder.output]
        await self.store.put_response(
            StoredResponse(
                tenant=turn.tenant,
                id=resp.id,
                response=body,
                input_items=turn.stored_input,
                previous_response_id=turn.previous_response_id,
                created_at=resp.created_at,
                background=turn.background,
            ),
            lease=lease,
            progress=progress,
        )
        return body

    async def follow(self, tenant: str, response_id: str, after: int):
        """Batches of a background run's stored events after ``after``, live until it ends.

        A run whose stored status is final but whose log has no terminal event (it was cancelled
        by another process, or its process died between storing the end and logging it) gets
        its end from the stored status (``close_log``), logged for the next follower too."""
        wait_events = getattr(self.store, "wait_events", None)
        settle_by = None
        while True:
            events = await self.store.get_events(tenant, response_id, after)
            if events:
                end = next((n for n, ev in enumerate(events) if ev.type in TERMINAL_TYPES), None)
                if end is not None:
                    yield events[: end + 1]
                    return
                yield events
                after = events[-1].seq
                continue
            stored = await self.store.get_response(tenant, response_id)
            if stored is None:
                return
            if stored.response.get("status") in TERMINAL_STATUSES:
                # the log has its end already (logged since the read above, or this follower
                # started at or past it): what is left of it, at once
                log_all = await self.store.get_events(tenant, response_id, -1)
                end = next((n for n, ev in enumerate(log_all) if ev.type in TERMINAL_TYPES), None)
                if end is not None:
                    rest = [ev for ev in log_all[: end + 1] if ev.seq > after]
                    if rest:
                        yield rest
                    return
                # the final status is stored just before the terminal event is logged (by this
                # process or another host): give that 2 s to land before ending the log here
                if settle_by is None:
                    settle_by = trio.current_time() + 2.0
                if trio.current_time() < settle_by:
                    await self._wait_events(wait_events, response_id)
                    continue
                new, _ = self.close_log(stored, log_all, _end_of(stored.response))
                await self.store.append_events(tenant, response_id, new)
                yield [ev for ev in new if ev.seq > after]
                return
            await self._wait_events(wait_events, response_id)

    async def _wait_events(self, wait_events, response_id: str) -> None:
        """Until events of the response may have arrived: the store's own signal where it has
        one (PostgreSQL: any host's write), else this process's wakeups, else a short sleep."""
        if wait_events is not None:
            await wait_events(response_id, 0.5)
        elif self.runs is not None:
            await self.runs.wait_for_events(response_id, 0.25)
        else:
            await trio.sleep(0.25)

    # -- compaction ----------------------------------------------------------------------

    async def compact(self, body: bytes, tenant: str) -> dict[str, Any]:
        """``POST /v1/responses/compact``: the routed upstream summarises the context; the
        summary comes back sealed in a ``compaction`` item."""
        req = decode_json(_compact_decoder, body if body.strip() else b"{}")
        if not req.model:
            raise ApiError(400, "Missing required parameter: 'model'.", param="model", code="missing_required_parameter")
        if req.input is None and req.previous_response_id is None:
            raise ApiError(400, "Nothing to compact: give 'input' or 'previous_response_id'.", param="input", code="missing_required_parameter")
        summary_req = compaction.summary_request(req)
        summary_req.previous_response_id = req.previous_response_id
        turn = await self.prepare_request(summary_req, tenant, encoding=None)
        turn.store = False
        upstream = await self.open_upstream(turn)
        resp = await self.collect(turn, upstream)
        if resp.status == "failed" and resp.error is not None:
            raise ApiError(502, resp.error.message, code=resp.error.code, type="server_error")
        text = "".join(
            part.text
            for item in resp.output
            if isinstance(item, MessageItem)
            for part in item.content
            if isinstance(part, OutputText)
        )
        return {
            "id": resp.id,
            "object": "response.compaction",
            "created_at": resp.created_at,
            "output": [
                {
                    "type": "compaction",
                    "id": self.ids.new("cmp_"),
                    "encrypted_content": self.sealer.seal_summary(tenant, text),
                }
            ],
            "usage": msgspec.to_builtins(resp.usage) if resp.usage is not None else None,
        }

    # -- conversations -------------------------------------------------------------------

    async def create_conversation(self, tenant: str, items: list[Any], metadata: dict[str, str] | None) -> StoredConversation:
        typed = await self._resolve_references([decode_item(it, f"items[{i}]") for i, it in enumerate(items)], tenant)
        open_items(self.sealer, tenant, typed, {}, "items[{i}].encrypted_content")  # refused now, not next turn
        conv = StoredConversation(tenant=tenant, id=self.ids.new("conv_"), created_at=self.clock.now(), metadata=metadata or {})
        await self.store.put_conversation(conv)
        if typed:
            await self.store.add_conversation_items(tenant, conv.id, [normalise(it, self.ids) for it in typed])
        return conv

    async def add_items(self, tenant: str, conv_id: str, items: list[Any]) -> list[dict[str, Any]]:
        typed = await self._resolve_references([decode_item(it, f"items[{i}]") for i, it in enumerate(items)], tenant)
        open_items(self.sealer, tenant, typed, {}, "items[{i}].encrypted_content")
        stored = [normalise(it, self.ids) for it in typed]
        await self.store.add_conversation_items(tenant, conv_id, stored)
        return stored


def stored_event(event: Any) -> StoredEvent:
    return StoredEvent(event.sequence_number, type_of(event), _json.encode(event))


# the keys of a Response that only its end sets (close_log's template leaves them out)
_FINAL_KEYS = frozenset({"output", "status", "error", "incomplete_details", "completed_at", "usage"})


def _end_of(response: dict[str, Any]) -> UpstreamError | None:
    """How a response stored as final ends its stream: None (completed, incomplete: as stored),
    or the error of a failed or cancelled one."""
    status = response.get("status")
    if status == "cancelled":
        return CANCELLED
    if status == "failed":
        err = response.get("error") or {}
        return UpstreamError(message=err.get("message") or "The response failed.", code=err.get("code") or "server_error")
    return None
class _WholeAnswer(httpx.AsyncByteStream):
    """A non-streamed upstream answer, read to its end and handed to the pipeline as the stream
    it would have sent (``Prepared.answer``), in one piece: ``pump`` reads it like any body."""

    __slots__ = ("_body", "_convert", "complete")

    def __init__(self, body: Any, convert: Callable[[bytes], bytes]) -> None:
        self._body = body
        self._convert = convert
        self.complete = False

    async def __aiter__(self):
        parts = [piece async for piece in self._body]
        self.complete = True
        yield self._convert(b"".join(parts))

    async def aclose(self) -> None:
        await self._body.aclose()


def _conversation_id(conv: str | dict[str, Any]) -> str:
    cid = conv if isinstance(conv, str) else conv.get("id")
    if not isinstance(cid, str) or not cid:
        raise ApiError(400, "Invalid 'conversation': expected an id or {\"id\": ...}.", param="conversation", code="invalid_value")
    return cid


def _as_input(item: dict[str, Any]) -> dict[str, Any]:
    """A stored item, made acceptable as an input item (drop output-only keys)."""
    if item.get("type") == "message" and item.get("role") == "assistant":
        return {"type": "message", "role": "assistant", "content": item.get("content") or [], "id": item.get("id")}
    if item.get("type") == "reasoning":
        return {k: v for k, v in item.items() if k in ("type", "id", "summary", "content", "encrypted_content")}
    return item


def load_secret(cfg: Config) -> bytes:
    """The server secret: from config (or its $ENV), else generated once and kept in secret_file
    (owner-only, in an owner-only directory when respline makes it: adapters/state.py)."""
    value = expand_env(cfg.server.secret, "server.secret")
    if value:
        return value.encode()
    path = Path(cfg.server.secret_file)
    try:
        try:
            data = path.read_bytes().strip()
            if data:
                return data
        except FileNotFoundError:
            pass
        private_dir(path.parent)
        secret = os.urandom(32).hex().encode()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another worker process wrote it first
            return path.read_bytes().strip()
        with os.fdopen(fd, "wb") as f:
            f.write(secret)
    except OSError as exc:  # unreadable, or nowhere to write it: a start-up error, one line
        raise ConfigError(f"server.secret_file {path}: {exc.strerror or exc}") from None
    return secret
