"""One turn, front end independent: parse, route, translate, call the upstream, stream back.

The HTTP and WebSocket front ends both go through here. ``prepare_request`` does everything that
can fail with an error envelope before a byte is sent (validation, routing, resolving stored
context); ``open_upstream`` adds the upstream's own refusals (status, connect errors, timeouts);
``pump`` streams the rest, where a failure can only be an ``error`` event and ``response.failed``.
State (stored responses, conversations, background runs) goes through the Store protocol.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import httpx
import msgspec
import trio

from respline.adapters.config import Config, ConfigError, Router, Timeouts, expand_env
from respline.adapters.providers.common import TurnContext
from respline.adapters.state import private_dir
from respline.engine.deltas import UpstreamError
from respline.engine import compaction
from respline.engine.errors import ApiError, decode_json
from respline.engine.ids import Clock, Ids
from respline.engine.items import normalise
from respline.engine.pipeline import ResponsePipeline
from respline.engine.seal import Sealer, open_items
from respline.engine.store import Store, StoredConversation, StoredEvent, StoredResponse, expand_chain
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
from respline.engine.wire.responses import TERMINAL_EVENTS, MessageItem, OutputText, Response, event_type, type_of

log = logging.getLogger("respline.gateway")

_ERROR_BODY_LIMIT = 64 * 1024
_json = msgspec.json.Encoder()
_compact_decoder = msgspec.json.Decoder(compaction.CompactRequest)

TERMINAL_STATUSES = frozenset({"completed", "incomplete", "failed", "cancelled"})
TERMINAL_TYPES = frozenset(event_type(c) for c in TERMINAL_EVENTS)

Emit = Callable[[list], Awaitable[None]]


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
        "record_dir",
        "template",
        "compact",
        "seeded",
        "answer",
    )

    def __init__(self) -> None:
        self.record_dir: Path | None = None
        self.conversation_id: str | None = None
        self.compact = False  # the input ends with compaction_trigger (engine/compact_turn.py)
        self.seeded: list = []  # output items made before the upstream call (context_management)
        self.answer = None  # Prepared.answer: the upstream was asked for its whole answer


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
        self.record_dir = Path(cfg.server.record_dir) if cfg.server.record_dir else None
        self.runs = None  # adapters.background.Runs, set by the server

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

        A route's fallbacks are tried in order while nothing has reached the client: after a
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
                log.warning(
                    "provider %s failed (%d %s); falling back to %s", failed, err.status, err.code, turn.provider.name
                )
                continue
            # streaming starts: what only a fallback or the recording needed can go (the parsed
            # request and the encoded upstream body: ~100 KB each for a Codex turn, held for as
            # long as the stream is open otherwise)
            turn.items = turn.upstream_body = turn.payload = turn.req = turn.http_request = None
            turn.ctx.opened = None  # the opened sealed tokens, only a fallback's translation needed
            if turn.answer is not None and b"json" in resp.headers.get("content-type", "").encode():
                resp.stream = _WholeAnswer(resp.stream, turn.answer)  # (an upstream may stream anyway)
            return resp

    async def _open_attempt(self, turn: Turn) -> httpx.Response:
        t: Timeouts = turn.provider.timeouts
        try:
            with trio.fail_after(t.connect + t.first_byte):
                resp = await turn.provider.send(turn.http_request)
        except trio.TooSlowError:
            raise ApiError(504, "The upstream did not answer in time.", code="upstream_timeout", type="server_error") from None
        except httpx.TimeoutException:
            raise ApiError(504, "Timed out connecting to the upstream.", code="upstream_timeout", type="server_error") from None
        except httpx.ConnectError as exc:
            raise ApiError(
                502, f"The upstream is unreachable: {exc.__class__.__name__}.", code="upstream_unreachable", type="server_error"
            ) from None
        except httpx.HTTPError as exc:
            # connected, but no answer: the upstream may have the request, so it is not sent again
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
            raise turn.provider.error(resp.status_code, body, resp.headers)
        if self.record_dir is not None:
            turn.record_dir = self._record_start(turn)
        return resp

    # -- streaming -----------------------------------------------------------------------

    async def pump(self, turn: Turn, resp: httpx.Response, emit: Emit) -> None:
        """Upstream body -> pipeline -> ``emit(frames)``; always ends with a terminal event.

        Timeouts are one cancel scope whose deadline is the nearer of the whole-request limit
        and the read limit (first byte, then idle between reads), moved forward after reads;
        moving a deadline costs less than a new scope per read on this per-chunk path.
        The stored response is written before the frames that carry the terminal event go out.
        """
        pipe: ResponsePipeline = turn.pipeline
        t: Timeouts = turn.provider.timeouts
        body = resp.stream
        # Each write to the client costs ~0.1 ms of fixed server overhead (bench/README.md), so
        # events that are ready together go out together: the opening events wait for the first
        # upstream read only when its bytes came with the head, and the last read's events go
        # out with the terminal ones.
        held = pipe.start()
        if not getattr(body, "buffered", False):
            await emit(held)
            held = []
        recorder = _Recorder(turn.record_dir) if turn.record_dir is not None else None
        failure: UpstreamError | None = None
        out: list = []
        idle = t.idle
        step = idle / 10
        moved_at = float("-inf")
        got_bytes = False
        total_at = trio.current_time() + t.total
        try:
            # One scope for both limits (a scope is a few hundred bytes of every open stream):
            # its deadline is the nearer of the whole-request limit and the read limit (first
            # byte, then idle between reads), which moves forward after reads.
            with trio.CancelScope(deadline=min(trio.current_time() + t.first_byte, total_at)) as scope:
                async for chunk in body:  # the transport's body itself: no chunker layer
                    # the idle deadline moves in steps of a tenth of it (so it fires between
                    # idle and 1.1 x idle after the last read): moving a deadline re-sorts
                    # trio's timer heap, and a paced stream reads once per token
                    now = trio.current_time()
                    if now > moved_at + step:
                        moved_at = now
                        scope.deadline = min(now + idle + step, total_at)
                    got_bytes = True
                    if recorder is not None:
                        recorder.write(chunk)
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
                        await emit(frames)
            if scope.cancelled_caught:
                if trio.current_time() >= total_at:
                    message = f"The request exceeded the total timeout of {t.total:g} seconds."
                else:
                    message = f"The upstream sent nothing for {idle if got_bytes else t.first_byte:g} seconds."
                failure = UpstreamError(message=message, type="server_error", code="upstream_timeout")
        except httpx.HTTPError as exc:
            failure = UpstreamError(
                message=f"The upstream connection failed mid-stream: {exc.__class__.__name__}.",
                type="server_error",
                code="upstream_error",
            )
        finally:
            if recorder is not None:
                recorder.close()
            with trio.CancelScope(shield=True):
                await resp.aclose()
        out = held + out  # (held: nothing was read)
        out += pipe.fail(failure) if failure is not None else pipe.close()
        await self.finish(turn)
        await emit(out)

    async def fail_before_stream(self, turn: Turn, err: ApiError, emit: Emit) -> None:
        """A run that could not reach its upstream (background runs): created, then failed."""
        pipe = turn.pipeline
        await emit(pipe.start())
        out = pipe.fail(UpstreamError(message=err.message, type=err.type, code=err.code, param=err.param))
        await self.finish(turn)
        await emit(out)

    async def collect(self, turn: Turn, resp: httpx.Response) -> Response:
        """Non-streaming: the same pipeline, returning the final Response object."""

        async def sink(_events: list) -> None:
            pass

        await self.pump(turn, resp, sink)
        return turn.pipeline.response

    async def finish(self, turn: Turn) -> None:
        """Persist what the client is about to be told exists: the response and conversation."""
        resp = turn.pipeline.response
        output = [msgspec.to_builtins(item) for item in turn.pipeline.builder.output]
        if turn.store:
            await self.store.put_response(
                StoredResponse(
                    tenant=turn.tenant,
                    id=resp.id,
                    response=response_builtins(resp),
                    input_items=turn.stored_input,
                    previous_response_id=turn.previous_response_id,
                    created_at=resp.created_at,
                    background=turn.background,
                )
            )
        if turn.conversation_id is not None and resp.status != "failed":
            await self.store.add_conversation_items(turn.tenant, turn.conversation_id, turn.stored_input + output)

    # -- background runs -------------------------------------------------------------------

    async def record_status(self, turn: Turn, status: str, **changes: Any) -> dict[str, Any]:
        """Write the response as it stands (queued, in progress, cancelled) to the store."""
        resp = msgspec.structs.replace(turn.pipeline.response, status=status, **changes)
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
                background=True,
            )
        )
        return body

    async def follow(self, tenant: str, response_id: str, after: int):
        """Batches of a background run's stored events after ``after``, live until it ends."""
        runs = self.runs
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
            status = stored.response.get("status") if stored is not None else None
            if status in ("completed", "incomplete", "failed") and (settle_by is None or trio.current_time() < settle_by):
                # the final status is stored just before the terminal event: give it 2 s to land
                settle_by = settle_by or trio.current_time() + 2.0
            elif stored is None or status in TERMINAL_STATUSES:
                # ended without a terminal event (cancelled): pick up any last rows, then stop
                last = await self.store.get_events(tenant, response_id, after)
                if last:
                    yield last
                return
            if wait_events is not None:  # the store tells when any host wrote (postgres)
                await wait_events(response_id, 0.5)
            elif runs is not None:
                await runs.wait_for_events(response_id, 0.25)
            else:
                await trio.sleep(0.25)

    # -- recording -----------------------------------------------------------------------

    def _record_start(self, turn: Turn) -> Path:
        assert self.record_dir is not None
        d = self.record_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{turn.pipeline.response.id}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "request.json").write_bytes(msgspec.json.format(turn.payload, indent=2))
        return d

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


class _Recorder:
    """Tees raw upstream bytes into ``upstream.sse`` (``respline serve --record DIR``)."""

    __slots__ = ("_f",)

    def __init__(self, directory: Path | None) -> None:
        self._f = open(directory / "upstream.sse", "wb") if directory is not None else None  # noqa: SIM115

    def write(self, chunk: bytes) -> None:
        if self._f is not None:
            self._f.write(chunk)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


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
