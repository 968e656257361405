"""Input items as they are stored and listed: every item with an id and its full item shape.

Clients may send easy messages (a role and a string) and items without ids; what
``GET /v1/responses/{id}/input_items`` and the conversations API return are full items
(``type``, ``id``, ``status``, content as parts), in the shapes of the openai SDK.
"""

from __future__ import annotations

from typing import Any

from respline.engine.ids import Ids
from respline.engine.wire import request as Q

def _parts(role: str, content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(content, list):
        return content
    if role == "assistant":
        return [{"type": "output_text", "text": content, "annotations": []}]
    return [{"type": "input_text", "text": content}]


def normalise(item: Any, ids: Ids) -> dict[str, Any]:
    """A typed input item (engine.wire.request) -> its stored, listable form."""
    kind = type(item)
    if kind is Q.MessageIn:
        out: dict[str, Any] = {
            "type": "message",
            "id": item.id or ids.new("msg_"),
            "role": item.role,
            "status": item.status or "completed",
            "content": _parts(item.role, item.content),
        }
        if item.phase:
            out["phase"] = item.phase
        return out
    if kind is Q.FunctionCallIn:
        out = {
            "type": "function_call",
            "id": item.id or ids.new("fc_"),
            "call_id": item.call_id,
            "name": item.name,
            "arguments": item.arguments,
            "status": item.status or "completed",
        }
        if item.namespace:
            out["namespace"] = item.namespace
        return out
    if kind is Q.FunctionCallOutputIn:
        out = {
            "type": "function_call_output",
            "id": item.id or ids.new("fco_"),
            "call_id": item.call_id,
            "output": item.output,
            "status": item.status or "completed",
        }
        if item.success is not None:
            out["success"] = item.success
        if item.is_error is not None:
            out["is_error"] = item.is_error
        return out
    if kind is Q.ReasoningIn:
        out = {"type": "reasoning", "id": item.id or ids.new("rs_"), "summary": item.summary or []}
        if item.content:
            out["content"] = item.content
        if item.encrypted_content:
            out["encrypted_content"] = item.encrypted_content
        return out
    if kind is Q.CustomToolCallIn:
        out = {
            "type": "custom_tool_call",
            "id": item.id or ids.new("ctc_"),
            "call_id": item.call_id,
            "name": item.name,
            "input": item.input,
        }
        if item.namespace:
            out["namespace"] = item.namespace
        return out
    if kind is Q.CustomToolCallOutputIn:
        return {
            "type": "custom_tool_call_output",
            "id": item.id or ids.new("ctco_"),
            "call_id": item.call_id,
            "output": item.output,
        }
    if kind is Q.HostedItemIn:
        return item.raw if item.raw.get("id") else {**item.raw, "id": ids.new("hi_")}
    if kind is Q.CompactionIn:
        return {"type": "compaction", "id": item.id or ids.new("cmp_"), "encrypted_content": item.encrypted_content}
    if kind is Q.CompactionTriggerIn:
        return {"type": "compaction_trigger", "id": item.id or ids.new("cmpt_")}
    raise TypeError(f"cannot normalise {kind.__name__}")  # item references are resolved before this
