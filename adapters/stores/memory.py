"""In-memory store: an LRU with the same limits as SQLite (TTL and a maximum count).

For tests, single-process deployments and ``store: false`` WebSocket chains. Nothing survives a
restart. Items are indexed by (tenant, id) for ``item_reference`` and dropped with their owner.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, Callable

from engine.store import Retention, StoredConversation, StoredEvent, StoredResponse


class _Conv:
    __slots__ = ("conv", "items")

    def __init__(self, conv: StoredConversation) -> None:
        self.conv = conv
        self.items: list[dict[str, Any]] = []


class MemoryStore:
    def __init__(self, retention: Retention | None = None, now: Callable[[], float] = time.time) -> None:
        self.retention = retention or Retention()
        self._now = now
        self._responses: OrderedDict[tuple[str, str], StoredResponse] = OrderedDict()
        self._events: dict[tuple[str, str], list[StoredEvent]] = {}
        self._convs: OrderedDict[tuple[str, str], _Conv] = OrderedDict()

    # -- responses -----------------------------------------------------------------------

    async def put_response(self, stored: StoredResponse) -> None:
        key = (stored.tenant, stored.id)
        self._responses[key] = stored
        self._responses.move_to_end(key)
        limit = self.retention.max_responses
        while limit and len(self._responses) > limit:
            old, _ = self._responses.popitem(last=False)
            self._events.pop(old, None)

    async def get_response(self, tenant: str, response_id: str) -> StoredResponse | None:
        key = (tenant, response_id)
        stored = self._responses.get(key)
        if stored is None or self._expired(stored.created_at):
            return None
        self._responses.move_to_end(key)
        return stored

    async def delete_response(self, tenant: str, response_id: str) -> bool:
        self._events.pop((tenant, response_id), None)
        return self._responses.pop((tenant, response_id), None) is not None

    async def append_events(self, tenant: str, response_id: str, events: list[StoredEvent]) -> None:
        self._events.setdefault((tenant, response_id), []).extend(events)

    async def get_events(self, tenant: str, response_id: str, after: int) -> list[StoredEvent]:
        return [e for e in self._events.get((tenant, response_id), ()) if e.seq > after]

    async def get_item(self, tenant: str, item_id: str) -> dict[str, Any] | None:
        # a linear scan keeps the LRU the single source of truth; item references are rare
        for (t, _), stored in reversed(self._responses.items()):
            if t != tenant:
                continue
            for item in stored.input_items:
                if item.get("id") == item_id:
                    return item
            for item in stored.response.get("output") or ():
                if item.get("id") == item_id:
                    return item
        for (t, _), conv in self._convs.items():
            if t == tenant:
                for item in conv.items:
                    if item.get("id") == item_id:
                        return item
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
            entry.items.extend(items)

    async def conversation_items(self, tenant: str, conv_id: str) -> list[dict[str, Any]]:
        entry = self._convs.get((tenant, conv_id))
        return list(entry.items) if entry is not None else []

    async def delete_conversation_item(self, tenant: str, conv_id: str, item_id: str) -> bool:
        entry = self._convs.get((tenant, conv_id))
        if entry is None:
            return False
        before = len(entry.items)
        entry.items = [i for i in entry.items if i.get("id") != item_id]
        return len(entry.items) != before

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
        dead = [k for k, s in self._responses.items() if s.created_at < cutoff]
        for k in dead:
            del self._responses[k]
            self._events.pop(k, None)
        dead_convs = [k for k, c in self._convs.items() if c.conv.created_at < cutoff]
        for k in dead_convs:
            del self._convs[k]
        return len(dead) + len(dead_convs)

    async def aclose(self) -> None:
        pass
