"""``/v1/responses/compact``: summarise a context into one sealed ``compaction`` item.

The routed upstream writes the summary; respline seals it with the server secret for the tenant
that asked, as kind ``compaction`` (engine/seal.py), so the item is opaque to the client and only
this deployment, for that tenant, can expand it again. A later request that carries the item
gets the summary in its place (engine/translate.py), so a long chain can restart from a small
window (SPEC 4.4); an item that does not open is a 400, for every upstream kind.
"""

from __future__ import annotations

from typing import Any

import msgspec

from respline.engine.wire import request as Q

SUMMARY_PREFIX = "Summary of the conversation so far:\n"

INSTRUCTIONS = (
    "You compact conversations. Write a summary of the conversation above that lets another "
    "assistant continue it with nothing else: the user's goals and constraints, decisions made, "
    "facts and results learned (tool calls and their outputs included), files and identifiers "
    "mentioned, and what remains to be done. Be complete but concise; write plain text."
)


class CompactRequest(msgspec.Struct):
    model: str | None = None
    input: str | list[Any] | None = None
    previous_response_id: str | None = None
    instructions: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    service_tier: str | None = None


def summary_request(req: CompactRequest) -> Q.CreateRequest:
    """The create request that asks the upstream for the summary; the context to summarise
    comes before the closing instruction message."""
    items = req.input if isinstance(req.input, list) else ([{"role": "user", "content": req.input}] if req.input else [])
    if req.instructions:
        items = [{"role": "developer", "content": req.instructions}, *items]
    items = [*items, {"role": "user", "content": INSTRUCTIONS}]
    return Q.CreateRequest(model=req.model, input=items, store=False, prompt_cache_key=req.prompt_cache_key)


def expand(summary: str) -> dict[str, Any]:
    """The chat message a compaction item becomes upstream."""
    return {"role": "user", "content": SUMMARY_PREFIX + summary}
