"""In-memory store: an LRU bounded by count, for tests and single-process deployments."""

from __future__ import annotations

from collections import OrderedDict

from engine.store import StoredResponse


class MemoryStore:
    def __init__(self, max_items: int = 100_000) -> None:
        self._max = max_items
        self._responses: OrderedDict[tuple[str, str], StoredResponse] = OrderedDict()

    async def put_response(self, stored: StoredResponse) -> None:
        key = (stored.tenant, stored.id)
        self._responses[key] = stored
        self._responses.move_to_end(key)
        while len(self._responses) > self._max:
            self._responses.popitem(last=False)

    async def get_response(self, tenant: str, response_id: str) -> StoredResponse | None:
        stored = self._responses.get((tenant, response_id))
        if stored is not None:
            self._responses.move_to_end((tenant, response_id))
        return stored

    async def delete_response(self, tenant: str, response_id: str) -> bool:
        return self._responses.pop((tenant, response_id), None) is not None

    async def aclose(self) -> None:
        self._responses.clear()
