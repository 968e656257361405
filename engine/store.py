"""The Store protocol: what state the engine needs, not how it is kept (ARCHITECTURE.md).

A stored response is the Response object plus the input items of its request, as JSON-ready
builtins. ``previous_response_id`` is expanded from these: the previous response's own context
(recursively), its input, its output, then the new input (SPEC 2.4). Every call is scoped by
tenant; another tenant's id behaves exactly like a missing one.
"""

from __future__ import annotations

from typing import Any, Protocol

from msgspec import Struct


class StoredResponse(Struct):
    tenant: str
    id: str
    response: dict[str, Any]  # the final Response object
    input_items: list[dict[str, Any]]  # this request's own input, as sent
    previous_response_id: str | None = None
    created_at: int = 0


class Store(Protocol):
    async def put_response(self, stored: StoredResponse) -> None: ...

    async def get_response(self, tenant: str, response_id: str) -> StoredResponse | None: ...

    async def delete_response(self, tenant: str, response_id: str) -> bool: ...

    async def aclose(self) -> None: ...


async def expand_chain(store: Store, tenant: str, response_id: str, limit: int = 1000) -> list[dict[str, Any]] | None:
    """Items of the whole chain ending at ``response_id``, oldest first; None if any link is missing."""
    chain: list[StoredResponse] = []
    rid: str | None = response_id
    while rid is not None:
        if len(chain) >= limit:
            break
        stored = await store.get_response(tenant, rid)
        if stored is None:
            return None
        chain.append(stored)
        rid = stored.previous_response_id
    items: list[dict[str, Any]] = []
    for stored in reversed(chain):
        items.extend(stored.input_items)
        items.extend(stored.response.get("output") or [])
    return items
