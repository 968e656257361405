"""Responses create request -> the same request for a Responses-API upstream (passthrough).

The upstream speaks the API the client spoke, so the body goes through nearly as sent: the
model becomes the route's upstream model, and what respline answered itself is taken out.
respline owns the state: ``previous_response_id`` and ``conversation`` were expanded from its
own store, so ``input`` is the whole context and neither id is forwarded (the upstream never saw
respline's ids). ``background`` is respline's to run; the upstream call always streams.

Input items go through as the client or the store had them, except:
- ``id`` is dropped from messages, calls and call outputs (respline may have given them ids the
  upstream never issued); reasoning and hosted-tool items keep theirs (the upstream resolves
  its own reasoning by id or ``encrypted_content``).
- a reasoning item sealed by respline (it came from another provider on an earlier turn) means
  nothing to this upstream and is left out, once it has opened for this tenant; a compaction
  item respline sealed becomes the user message with its summary. A sealed token that does not
  open is a 400 (engine/seal.py): never dropped, never forwarded. Reasoning and compaction items
  the upstream itself issued (its own ``encrypted_content``, not respline's format) go through as
  they are: respline cannot open them and does not wrap them.
- ``drop_fields`` (per provider, dotted paths such as ``reasoning.summary``) are removed last,
  for servers that reject what they do not know.

Fields respline's request Struct does not know are not lost: the client's raw body is read
again for them (``client_fields``), so a field OpenAI added yesterday reaches the upstream.
``context_management`` is respline's to run (it compacts itself, as for ``compaction_trigger``)
and is not forwarded.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import msgspec

from respline.engine import compaction
from respline.engine.errors import item_not_found
from respline.engine.seal import COMPACTION, REASONING, opened_payload, refused
from respline.engine.wire import request as Q

# never forwarded: answered by respline, or set here
_NOT_FORWARDED = frozenset(
    {
        "model", "input", "previous_response_id", "conversation", "background", "stream", "stream_options",
        "generate", "type", "context_management",
    }
)


def _strip_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_none(v) for k, v in value.items() if v is not None}
    return value


def input_item(item: Any, unseal: Callable[[str], dict | None] | None, where: str = "input") -> dict[str, Any] | None:
    """One typed input item as the upstream gets it; None leaves it out."""
    kind = type(item)
    if kind is Q.HostedItemIn:
        return item.raw
    if kind is Q.ReasoningIn:
        enc = item.encrypted_content
        if opened_payload(unseal, enc, f"{where}.encrypted_content", REASONING) is not None:
            return None
        out: dict[str, Any] = {"type": "reasoning", "summary": item.summary or []}
        if item.id:
            out["id"] = item.id
        if item.content:
            out["content"] = item.content
        if enc:
            out["encrypted_content"] = enc
        return out
    if kind is Q.CompactionIn:
        param = f"{where}.encrypted_content"
        opened = opened_payload(unseal, item.encrypted_content, param, COMPACTION)
        if opened is None:
            return _strip_none(msgspec.to_builtins(item))  # the upstream's own compaction item
        summary = opened.get("summary")
        if not isinstance(summary, str):
            raise refused(param, COMPACTION, item.encrypted_content)
        return {"type": "message", **compaction.expand(summary)}
    if kind is Q.ItemReferenceIn:
        raise item_not_found(item.id, "input")
    out = _strip_none(msgspec.to_builtins(item))
    out.pop("id", None)
    if kind is Q.FunctionCallOutputIn:
        out.pop("success", None)
        out.pop("is_error", None)
    return out


def _drop(body: dict[str, Any], path: str) -> None:
    keys = path.split(".")
    target: Any = body
    for key in keys[:-1]:
        target = target.get(key) if isinstance(target, dict) else None
        if target is None:
            return
    if isinstance(target, dict):
        target.pop(keys[-1], None)


_raw_fields = msgspec.json.Decoder(dict[str, msgspec.Raw])
_KNOWN = frozenset(Q.CreateRequest.__struct_fields__)
# known objects whose keys the Struct does not all know (reasoning.context, reasoning.mode, ...)
_OPEN_OBJECTS = ("reasoning", "text")


def client_fields(req: Q.CreateRequest) -> dict[str, Any]:
    """What the client sent that the CreateRequest Struct does not hold: unknown top-level keys
    (``prompt_cache_options``, ``moderation``, ``image``, ``background_options``, newer fields)
    as their raw JSON, and ``reasoning`` / ``text`` as sent, unknown keys included."""
    raw = getattr(req, "raw_body", None)
    if not raw:
        return {}
    try:
        fields = _raw_fields.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return {}
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if key in _NOT_FORWARDED:
            continue
        if key not in _KNOWN:
            out[key] = value
        elif key in _OPEN_OBJECTS:
            sent = msgspec.json.decode(value)
            if isinstance(sent, dict):
                out[key] = _strip_none(sent)
    return out


def to_responses_request(
    req: Q.CreateRequest,
    items: list[Any],
    upstream_model: str,
    drop_fields: Iterable[str] = (),
    unseal: Callable[[str], dict | None] | None = None,
    *,
    stream: bool = True,
) -> dict[str, Any]:
    body: dict[str, Any] = {"model": upstream_model}
    for key, value in msgspec.to_builtins(req).items():
        if value is not None and key not in _NOT_FORWARDED:
            body[key] = _strip_none(value)
    body.update(client_fields(req))
    body["input"] = [x for x in (input_item(it, unseal, f"input[{i}]") for i, it in enumerate(items)) if x is not None]
    if stream:
        body["stream"] = True
    for path in drop_fields:
        _drop(body, path)
    return body
