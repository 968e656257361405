"""The routes that state enables: stored responses, their input items, background runs,
and the conversations API, in the shapes of the openai SDK.

Every lookup is scoped by the caller's tenant; another tenant's id answers exactly like a
missing one (404), so ids leak nothing across tenants.
"""

from __future__ import annotations

from typing import Any, Callable

import msgspec
from quart import Response as QuartResponse
from quart import request

from respline.adapters.gateway import Gateway
from respline.adapters.gateway.event_log import TERMINAL_STATUSES
from respline.engine.errors import ApiError, decode_json
from respline.engine.store import StoredConversation, paginate
from respline.engine.translate import MAX_INT

_json = msgspec.json.Encoder()


def _json_response(obj: Any, status: int = 200) -> QuartResponse:
    return QuartResponse(_json.encode(obj), status=status, content_type="application/json")


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within [low, high]; anything else is a 400 naming it (a
    number beyond 64 bits reached the SQLite store and failed there, after a 200 head)."""
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"Invalid '{name}': expected an integer, got {raw[:40]!r}.", param=name, code="invalid_type") from None
    if not low <= value <= high:
        raise ApiError(400, f"Invalid '{name}': {value}. Expected a value between {low} and {high}.", param=name, code="invalid_value")
    return value


def _bool_arg(name: str) -> bool:
    raw = (request.args.get(name) or "").lower()
    if raw in ("", "false", "0"):
        return False
    if raw in ("true", "1"):
        return True
    raise ApiError(400, f"Invalid '{name}': expected true or false.", param=name, code="invalid_value")


def _page(items: list[dict[str, Any]]) -> dict[str, Any]:
    return paginate(
        items,
        limit=_int_arg("limit", 20, 1, 100),
        order=request.args.get("order", "desc"),
        after=request.args.get("after"),
        before=request.args.get("before"),
    )


class _CreateConversation(msgspec.Struct):
    items: list[Any] | None = None
    metadata: dict[str, str] | None = None


class _UpdateConversation(msgspec.Struct):
    metadata: dict[str, str]


class _AddItems(msgspec.Struct):
    items: list[Any]


_DECODERS: dict[type, msgspec.json.Decoder] = {}


async def _body(cls: type) -> Any:
    raw = await request.get_data()
    if not raw.strip():
        raw = b"{}"
    decoder = _DECODERS.get(cls)
    if decoder is None:
        decoder = _DECODERS[cls] = msgspec.json.Decoder(cls)
    return decode_json(decoder, raw)


def _conversation_body(conv: StoredConversation) -> dict[str, Any]:
    return {"id": conv.id, "object": "conversation", "created_at": conv.created_at, "metadata": conv.metadata}


def register(app, gateway: Gateway, tenant: Callable[[], str], sse_follow) -> None:
    store = gateway.store

    def missing_response(response_id: str) -> ApiError:
        return ApiError(404, f"No response found with id '{response_id}'.", param="response_id", code="not_found")

    def missing_conversation(conv_id: str) -> ApiError:
        return ApiError(404, f"Conversation with id '{conv_id}' not found.", param="conversation_id", code="not_found")

    async def stored_response(response_id: str):
        stored = await store.get_response(tenant(), response_id)
        if stored is None:
            raise missing_response(response_id)
        return stored

    # -- responses -------------------------------------------------------------------------

    @app.post("/v1/responses/compact")
    async def compact():
        return _json_response(await gateway.compact(await request.get_data(), tenant()))

    @app.get("/v1/responses/<response_id>")
    async def retrieve(response_id: str):
        t = tenant()
        stored = await stored_response(response_id)
        if not _bool_arg("stream"):
            return _json_response(stored.response)
        if not stored.background:
            raise ApiError(
                400,
                "Only responses created with background=true can be streamed again.",
                param="stream",
                code="invalid_value",
            )
        after = _int_arg("starting_after", -1, -1, MAX_INT)
        return QuartResponse(
            sse_follow(gateway, t, response_id, after),
            content_type="text/event-stream; charset=utf-8",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    @app.delete("/v1/responses/<response_id>")
    async def delete(response_id: str):
        if not await store.delete_response(tenant(), response_id):
            raise missing_response(response_id)
        return {"id": response_id, "object": "response.deleted", "deleted": True}

    @app.post("/v1/responses/<response_id>/cancel")
    async def cancel(response_id: str):
        t = tenant()
        stored = await stored_response(response_id)
        if not stored.background:
            raise ApiError(400, "Only responses created with background=true can be cancelled.", param="response_id", code="invalid_value")
        if stored.response.get("status") not in TERMINAL_STATUSES:
            await gateway.runs.cancel(t, response_id)
            stored = await stored_response(response_id)
        return _json_response(stored.response)

    @app.get("/v1/responses/<response_id>/input_items")
    async def input_items(response_id: str):
        stored = await stored_response(response_id)
        return _json_response(_page(stored.input_items))

    # -- conversations ---------------------------------------------------------------------

    async def conversation(conv_id: str) -> StoredConversation:
        conv = await store.get_conversation(tenant(), conv_id)
        if conv is None:
            raise missing_conversation(conv_id)
        return conv

    @app.post("/v1/conversations")
    async def create_conversation():
        t = tenant()
        body = await _body(_CreateConversation)
        if body.metadata is not None and len(body.metadata) > 16:
            raise ApiError(400, "metadata may hold at most 16 key-value pairs.", param="metadata", code="invalid_value")
        if body.items is not None and len(body.items) > 20:
            raise ApiError(400, "At most 20 items can be added when creating a conversation.", param="items", code="invalid_value")
        conv = await gateway.create_conversation(t, body.items or [], body.metadata)
        return _json_response(_conversation_body(conv))

    @app.get("/v1/conversations/<conv_id>")
    async def get_conversation(conv_id: str):
        return _json_response(_conversation_body(await conversation(conv_id)))

    @app.post("/v1/conversations/<conv_id>")
    async def update_conversation(conv_id: str):
        conv = await conversation(conv_id)
        body = await _body(_UpdateConversation)
        if len(body.metadata) > 16:
            raise ApiError(400, "metadata may hold at most 16 key-value pairs.", param="metadata", code="invalid_value")
        conv = msgspec.structs.replace(conv, metadata=body.metadata)
        await store.put_conversation(conv)
        return _json_response(_conversation_body(conv))

    @app.delete("/v1/conversations/<conv_id>")
    async def delete_conversation(conv_id: str):
        if not await store.delete_conversation(tenant(), conv_id):
            raise missing_conversation(conv_id)
        return {"id": conv_id, "object": "conversation.deleted", "deleted": True}

    @app.get("/v1/conversations/<conv_id>/items")
    async def list_items(conv_id: str):
        await conversation(conv_id)
        return _json_response(_page(await store.conversation_items(tenant(), conv_id)))

    @app.post("/v1/conversations/<conv_id>/items")
    async def add_items(conv_id: str):
        await conversation(conv_id)
        body = await _body(_AddItems)
        if len(body.items) > 20:
            raise ApiError(400, "At most 20 items can be added at a time.", param="items", code="invalid_value")
        added = await gateway.add_items(tenant(), conv_id, body.items)
        return _json_response(
            {
                "object": "list",
                "data": added,
                "first_id": added[0]["id"] if added else None,
                "last_id": added[-1]["id"] if added else None,
                "has_more": False,
            }
        )

    @app.get("/v1/conversations/<conv_id>/items/<item_id>")
    async def get_item(conv_id: str, item_id: str):
        await conversation(conv_id)
        for item in await store.conversation_items(tenant(), conv_id):
            if item.get("id") == item_id:
                return _json_response(item)
        raise ApiError(404, f"Item with id '{item_id}' not found.", param="item_id", code="not_found")

    @app.delete("/v1/conversations/<conv_id>/items/<item_id>")
    async def delete_item(conv_id: str, item_id: str):
        conv = await conversation(conv_id)
        if not await store.delete_conversation_item(tenant(), conv_id, item_id):
            raise ApiError(404, f"Item with id '{item_id}' not found.", param="item_id", code="not_found")
        return _json_response(_conversation_body(conv))
