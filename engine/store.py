"""The Store protocol: what state the engine needs, not how it is kept (ARCHITECTURE.md).

Stored objects are JSON-ready builtins (what the API returns), owned by a tenant. Every call is
scoped by tenant, so another tenant's id behaves exactly like a missing one. Backends:
adapters/stores/memory.py (an LRU) and adapters/stores/sqlite.py (the embedded default).

- A stored response is the final Response object, the request's own input items (each with an
  id), and its ``previous_response_id``; ``expand_chain`` rebuilds the context a continuation
  sends upstream: each earlier response's input then output, oldest first (SPEC 2.4).
- Events of a background run are kept as ``(sequence_number, type, json)`` rows so a client can
  follow or resume it (``GET /v1/responses/{id}?stream=true&starting_after=N``).
- Items are indexed by id per tenant, so ``item_reference`` input items resolve.
- A conversation is metadata plus an ordered list of items.
- A response still being produced (a background run, or a foreground ``store: true`` stream) is
  held under a lease by the server process producing it (its ``owner`` id, unique per process
  start). The owner renews its leases well before they run out; a lease that ran out means its
  owner died (kill -9, a lost host), and any process then takes it over with ``take_lapsed``
  (atomically: two processes never both take one), ends the response as failed with a clear
  error, and calls ``end_lease``. This is how a crash never leaves a run ``in_progress``. The
  owner records a response and its lease in one write (``put_response(lease=...)``) and stores
  it final and ends the lease in one (``release=True``): one round trip each where the backend
  is across a network.
"""

from __future__ import annotations

from typing import Any, Protocol

from msgspec import Struct

from respline.engine.errors import ApiError


class StoredResponse(Struct):
    tenant: str
    id: str
    response: dict[str, Any]  # the Response object as last known (final once terminal)
    input_items: list[dict[str, Any]]  # this request's own input, normalised, each with an id
    previous_response_id: str | None = None
    created_at: int = 0
    background: bool = False


class StoredEvent(Struct, array_like=True, gc=False):  # atoms only: never in a cycle, not tracked
    seq: int
    type: str
    data: bytes  # the event's JSON


class StoredConversation(Struct):
    tenant: str
    id: str
    created_at: int
    metadata: dict[str, str] = {}


class RunLease(Struct, frozen=True):
    """A response some server process is producing (see the module docstring)."""

    tenant: str
    response_id: str
    owner: str
    expires_at: float  # unix seconds


class Store(Protocol):
    async def put_response(
        self, stored: StoredResponse, *, lease: RunLease | None = None, release: bool = False, progress: bool = False
    ) -> None:
        """Store ``stored``, replacing what was stored under its id. In the same transaction:
        ``lease`` is recorded (a response being produced starts: its record and its lease
        exist together or not at all) or, with ``release``, the response's lease ends (it
        reached its end). ``progress``: a record a later write supersedes (the output so far
        of one being produced); a backend may commit it without waiting for its disk."""
        ...

    async def get_response(self, tenant: str, response_id: str) -> StoredResponse | None: ...

    async def delete_response(self, tenant: str, response_id: str) -> bool: ...

    async def append_events(self, tenant: str, response_id: str, events: list[StoredEvent]) -> None: ...

    async def get_events(self, tenant: str, response_id: str, after: int) -> list[StoredEvent]: ...

    async def get_item(self, tenant: str, item_id: str) -> dict[str, Any] | None: ...

    async def put_conversation(self, conv: StoredConversation) -> None: ...

    async def get_conversation(self, tenant: str, conv_id: str) -> StoredConversation | None: ...

    async def delete_conversation(self, tenant: str, conv_id: str) -> bool: ...

    async def add_conversation_items(self, tenant: str, conv_id: str, items: list[dict[str, Any]]) -> None: ...

    async def conversation_items(self, tenant: str, conv_id: str) -> list[dict[str, Any]]: ...

    async def delete_conversation_item(self, tenant: str, conv_id: str, item_id: str) -> bool: ...

    async def sweep(self, now: int) -> int: ...

    # -- leases of responses being produced (see the module docstring) --------------------

    async def lease_run(self, tenant: str, response_id: str, owner: str, expires_at: float) -> None:
        """Record (or replace) the lease of a response ``owner`` is producing."""
        ...

    async def renew_leases(self, owner: str, expires_at: float) -> None:
        """Move every lease ``owner`` holds forward to ``expires_at``."""
        ...

    async def end_lease(self, tenant: str, response_id: str) -> None:
        """The response reached its end (or was deleted); forget its lease."""
        ...

    async def take_lapsed(self, now: float, owner: str, expires_at: float, limit: int = 100) -> list[RunLease]:
        """Leases that ran out before ``now``, atomically handed to ``owner`` (until
        ``expires_at``) so that exactly one process ends each; returns them as taken."""
        ...

    async def aclose(self) -> None: ...


class Retention(Struct, frozen=True):
    """How long and how many: ``ttl`` seconds from creation (0 = forever), ``max_responses`` and
    ``max_conversations`` per backend (oldest evicted first; 0 = unbounded)."""

    ttl: int = 30 * 24 * 3600
    max_responses: int = 100_000
    max_conversations: int = 100_000

    def cutoff(self, now: float) -> int:
        """The oldest ``created_at`` a read still finds at ``now``: older rows have expired
        (the sweeper removes them later). With no ttl, below any ``created_at``."""
        ttl = self.ttl
        return int(now - ttl) if ttl else -(2**62)


async def expand_chain(store: Store, tenant: str, response_id: str, limit: int = 10_000) -> list[dict[str, Any]] | None:
    """Items of the whole chain ending at ``response_id``, oldest first; None if a link is missing."""
    chain: list[StoredResponse] = []
    rid: str | None = response_id
    while rid is not None and len(chain) < limit:
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


def paginate(
    items: list[dict[str, Any]],
    *,
    limit: int = 20,
    order: str = "desc",
    after: str | None = None,
    before: str | None = None,
) -> dict[str, Any]:
    """The OpenAI list shape over items in stored (ascending) order.

    ``after``/``before`` are item ids in the requested order; an unknown cursor is a 400 rather
    than an empty page, so a client with a stale cursor learns about it.
    """
    if not 1 <= limit <= 100:
        raise ApiError(400, f"Invalid 'limit': {limit}. Expected a value between 1 and 100.", param="limit", code="invalid_value")
    if order not in ("asc", "desc"):
        raise ApiError(400, f"Invalid 'order': {order!r}. Expected 'asc' or 'desc'.", param="order", code="invalid_value")
    seq = items if order == "asc" else items[::-1]
    start, end = 0, len(seq)
    ids = [it.get("id") for it in seq]
    if after is not None:
        if after not in ids:
            raise ApiError(400, f"Invalid 'after': no item with id '{after}'.", param="after", code="invalid_value")
        start = ids.index(after) + 1
    if before is not None:
        if before not in ids:
            raise ApiError(400, f"Invalid 'before': no item with id '{before}'.", param="before", code="invalid_value")
        end = ids.index(before)
    window = seq[start:end]
    page = window[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0].get("id") if page else None,
        "last_id": page[-1].get("id") if page else None,
        "has_more": len(window) > limit,
    }
