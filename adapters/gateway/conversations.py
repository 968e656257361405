"""Conversations: creating one, and adding items to it, each item checked as an input item is
(references resolved, sealed tokens opened for the tenant) before anything is stored."""

from __future__ import annotations

from typing import Any

from respline.engine.ids import Clock, Ids
from respline.engine.items import normalise
from respline.engine.seal import Sealer, open_items
from respline.engine.store import Store, StoredConversation
from respline.engine.translate import decode_item


class Conversations:
    """The gateway's conversations (a part of ``Gateway``); item references resolve through
    ``_resolve_references`` (preparation.py)."""

    store: Store
    sealer: Sealer
    ids: Ids
    clock: Clock

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
