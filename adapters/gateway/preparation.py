"""Before any byte is sent: validate, route, expand stored context, translate for the provider.

Everything here can still fail with an error envelope (an ApiError): nothing has reached the
upstream or the client yet. ``_prepare_attempt`` is also what a fallback calls to translate the
same items for the next provider of the route (upstream.py).
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from respline.adapters.providers.common import TurnContext
from respline.adapters.gateway.turn import Turn
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
from respline.engine.errors import ApiError
from respline.engine.ids import Clock, Ids
from respline.engine.seal import Sealer, open_items
from respline.engine.store import Store, expand_chain
from respline.engine.translate import (
    decode_item,
    echo_tools,
    input_items,
    parse_create,
    response_template,
    to_chat_messages,
    translate_tools,
)
from respline.engine.wire import request as Q


class Preparation:
    """The gateway's turn preparation (a part of ``Gateway``: adapters/gateway/__init__.py). It
    reads the gateway's routing, store, sealer, id source and clock; ``_auto_compact`` runs a
    whole summary turn through ``open_upstream`` and ``collect``."""

    router: Any  # config.Router
    providers: dict[str, Any]
    store: Store
    sealer: Sealer
    ids: Ids
    clock: Clock
    dialect: str

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
        turn.typed_input = (items, self.ids)  # turn.stored_input, when asked for
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
