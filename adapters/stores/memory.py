"""In-memory store: an LRU with the same limits as SQLite (TTL and a maximum count).

For tests, single-process deployments and ``store: false`` WebSocket chains. Nothing survives a
restart. Items are indexed by (tenant, id) for ``item_reference`` and dropped with their owner.

Responses and conversation items are kept as their JSON bytes, decoded when read, as the SQLite
backend keeps them: as Python dicts a stored response is a dozen objects or more (hundreds for a
long one) that the garbage collector walks on every full collection, and 100,000 small stored
responses (the default limit) made a full collection take ~0.5 s here, a pause of every open
stream. As bytes they are not tracked at all. Reads get a fresh copy each time, as from SQLite.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, Callable

import msgspec

from respline.engine.store import Retention, RunLease, StoredConversation, StoredEvent, StoredResponse

_enc = msgspec.json.Encoder()
_dec_response = msgspec.json.Decoder(StoredResponse)
_decode = msgspec.json.decode


# A stored response: (created_at, its JSON, the ids of its items). A plain tuple of atoms, which
# the collector stops tracking after its first pass over it (a class instance it would walk on
# every full collection).
_CREATED, _BODY, _ITEM_IDS = 0, 1, 2
_Entry = tuple[int, bytes, tuple[str, ...]]


class _Conv:
    __slots__ = ("conv", "items")

    def __init__(self, conv: StoredConversation) -> None:
        self.conv = conv
        self.items: list[tuple[str, bytes]] = []  # (item id, its JSON)


class MemoryStore:
    def __init__(self, retention: Retention | None = None, now: Callable[[], float] = time.time) -> None:
        self.retention = retention or Retention()
        self._now = now
        self._responses: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        # (tenant, item id) -> the id of the stored response holding that input or output item
        self._items: dict[tuple[str, str], str] = {}
        self._events: dict[tuple[str, str], list[StoredEvent]] = {}
        self._convs: OrderedDict[tuple[str, str], _Conv] = OrderedDict()
        self._leases: dict[tuple[str, str], RunLease] = {}

    # -- responses -----------------------------------------------------------------------

    async def put_response(
        self, stored: StoredResponse, *, lease: RunLease | None = None, release: bool = False, progress: bool = False
    ) -> None:
        key = (stored.tenant, stored.id)
        if lease is not None:
            self._leases[key] = lease
        elif release:
            self._leases.pop(key, None)
        self._drop_items(key)
        ids = []
        for item in [*stored.input_items, *(stored.response.get("output") or ())]:
            item_id = item.get("id") if isinstance(item, dict) else None
            if item_id:
                self._items[(stored.tenant, item_id)] = stored.id
                ids.append(item_id)
        self._responses[key] = (stored.created_at, _enc.encode(stored), tuple(ids))
        self._responses.move_to_end(key)
        limit = self.retention.max_responses
        while limit and len(self._responses) > limit:
            self._remove(next(iter(self._responses)))

    async def get_response(self, tenant: str, response_id: str) -> StoredResponse | None:
        key = (tenant, response_id)
        entry = self._responses.get(key)
        if entry is None or self._expired(entry[_CREATED]):
            return None
        self._responses.move_to_end(key)
        return _dec_response.decode(entry[_BODY])

    async def delete_response(self, tenant: str, response_id: str) -> bool:
        key = (tenant, response_id)
        if key not in self._responses:
            self._events.pop(key, None)
            return False
        self._remove(key)
        return True

    def _remove(self, key: tuple[str, str]) -> None:
        self._drop_items(key)
        del self._responses[key]
        self._events.pop(key, None)

    def _drop_items(self, key: tuple[str, str]) -> None:
        entry = self._responses.get(key)
        if entry is not None:
            for item_id in entry[_ITEM_IDS]:
                k = (key[0], item_id)
                if self._items.get(k) == key[1]:  # not re-used by a later response
                    del self._items[k]

    async def append_events(self, tenant: str, response_id: str, events: list[StoredEvent]) -> None:
        self._events.setdefault((tenant, response_id), []).extend(events)

    async def get_events(self, tenant: str, response_id: str, after: int) -> list[StoredEvent]:
        return [e for e in self._events.get((tenant, response_id), ()) if e.seq > after]

    async def get_item(self, tenant: str, item_id: str) -> dict[str, Any] | None:
        owner = self._items.get((tenant, item_id))
        if owner is not None:  # item references are rare: decode the owner, keep one copy
            stored = _dec_response.decode(self._responses[(tenant, owner)][_BODY])
            for item in (*stored.input_items, *(stored.response.get("output") or ())):
                if isinstance(item, dict) and item.get("id") == item_id:
                    return item
        for (t, _), conv in self._convs.items():
            if t == tenant:
                for iid, item in conv.items:
                    if iid == item_id:
                        return _decode(item)
        return None

    # -- conversations -------------------------------------------------------------------

    async def put_conversation(self, conv: StoredConversation) -> None:
        key = (conv.tenant, conv.id)
        existing = self._convs.get(key)
        if existing is not None:
            existing.conv = conv
        else:
            self._convs[key] = _Conv(conv)
        self._convs.move_to_end(key)
        limit = self.retention.max_conversations
        while limit and len(self._convs) > limit:
            self._convs.popitem(last=False)

    async def get_conversation(self, tenant: str, conv_id: str) -> StoredConversation | None:
        entry = self._convs.get((tenant, conv_id))
        if entry is None or self._expired(entry.conv.created_at):
            return None
        self._convs.move_to_end((tenant, conv_id))
        return entry.conv

    async def delete_conversation(self, tenant: str, conv_id: str) -> bool:
        return self._convs.pop((tenant, conv_id), None) is not None

    async def add_conversation_items(self, tenant: str, conv_id: str, items: list[dict[str, Any]]) -> None:
        entry = self._convs.get((tenant, conv_id))
        if entry is not None:
            entry.items.extend((item.get("id"), _enc.encode(item)) for item in items)

    async def conversation_items(self, tenant: str, conv_id: str) -> list[dict[str, Any]]:
        entry = self._convs.get((tenant, conv_id))
        return [_decode(item) for _, item in entry.items] if entry is not None else []

    async def delete_conversation_item(self, tenant: str, conv_id: str, item_id: str) -> bool:
        entry = self._convs.get((tenant, conv_id))
        if entry is None:
            return False
        before = len(entry.items)
        entry.items = [i for i in entry.items if i[0] != item_id]
        return len(entry.items) != before

    # -- leases (one process shares this store with nobody: they only lapse if renewal stops) --

    async def lease_run(self, tenant: str, response_id: str, owner: str, expires_at: float) -> None:
        self._leases[(tenant, response_id)] = RunLease(tenant, response_id, owner, expires_at)

    async def renew_leases(self, owner: str, expires_at: float) -> None:
        for key, lease in self._leases.items():
            if lease.owner == owner:
                self._leases[key] = RunLease(lease.tenant, lease.response_id, owner, expires_at)

    async def end_lease(self, tenant: str, response_id: str) -> None:
        self._leases.pop((tenant, response_id), None)

    async def take_lapsed(self, now: float, owner: str, expires_at: float, limit: int = 100) -> list[RunLease]:
        taken = []
        for key, lease in self._leases.items():
            if len(taken) >= limit:
                break
            if lease.expires_at < now:
                taken.append(RunLease(lease.tenant, lease.response_id, owner, expires_at))
        for lease in taken:
            self._leases[(lease.tenant, lease.response_id)] = lease
        return taken

    # -- retention -----------------------------------------------------------------------

    def _expired(self, created_at: int) -> bool:
        """Expired entries read as missing even before the sweeper removes them."""
        ttl = self.retention.ttl
        return bool(ttl) and created_at < self._now() - ttl

    async def sweep(self, now: int) -> int:
        ttl = self.retention.ttl
        if not ttl:
            return 0
        cutoff = now - ttl
        dead = [k for k, s in self._responses.items() if s[_CREATED] < cutoff]
        for k in dead:
            self._remove(k)
        dead_convs = [k for k, c in self._convs.items() if c.conv.created_at < cutoff]
        for k in dead_convs:
            del self._convs[k]
        return len(dead) + len(dead_convs)

    async def aclose(self) -> None:
        pass
