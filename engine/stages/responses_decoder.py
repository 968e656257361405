"""A Responses-API upstream's SSE events, read (QUIRKS I49-I57): SseEvent -> what they say.

``read`` is what the ResponsesNormaliser (in the builder's place) calls on each SseEvent before
it does anything else. This module knows the upstream's shapes and nothing of respline's item
lifecycle; it changes when an upstream's wire format does. (It is not a stage of its own: a
stage between the SSE framing and the normaliser costs a call and a list per socket read, some
5% of the CPU of a stream that arrives one event per read.)

- Lifecycle events (items, parts, text and argument deltas and their ``.done``) come out as an
  ``UpEvent``: every field any of them carries, loosely typed, with ``type`` taken from the
  ``event:`` line where the JSON has none. Items and parts stay the upstream's dicts.
- The terminal event (``response.completed`` / ``incomplete`` / ``failed``) comes out as an
  ``UpstreamEnd``: its status, usage, incomplete reason (the SDK's reasons only: xAI says
  ``REASON_MAX_LEN``) and error, read from whatever the upstream put there.
- ``error`` events, flat or nested (SPEC 3.2), and an event that is not JSON come out as an
  ``UpstreamError``, as every other kind's decoder reports one.
- Events respline has no Struct for (hosted tools' progress, ``output_text.annotation.added``)
  come out as an ``UnknownEvent`` with the upstream's JSON object, less ``type``,
  ``sequence_number`` and ``obfuscation``, for the normaliser to pass on.
- ``response.created`` / ``in_progress`` / ``queued`` and ``[DONE]`` are dropped: respline sends
  its own opening events.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from msgspec import Struct

from respline.engine.deltas import UpstreamError
from respline.engine.stages.sse import DONE, SseEvent
from respline.engine.wire import responses as R

log = logging.getLogger("respline.responses")


class UpEvent(Struct):
    """One upstream lifecycle event, loosely: every field any event type we act on carries."""

    type: str = ""
    output_index: int | None = None
    item_id: str | None = None
    content_index: int | None = None
    summary_index: int | None = None
    delta: Any = None
    text: str | None = None
    arguments: str | None = None
    input: str | None = None
    refusal: str | None = None
    item: dict[str, Any] | None = None
    part: dict[str, Any] | None = None
    response: dict[str, Any] | None = None
    code: Any = None
    message: str | None = None
    param: Any = None
    error: Any = None
    logprobs: list[Any] | None = None


class UpstreamEnd(Struct):
    """The upstream's terminal event, read. ``type`` is one of ``TERMINAL_TYPES``."""

    type: str
    status: str  # completed | incomplete | failed
    usage: R.Usage
    incomplete_reason: str  # max_output_tokens | content_filter
    error_code: str | None  # failed: the upstream's own code, if any
    error_message: str  # failed: the upstream's message, or a stand-in


class UnknownEvent(Struct):
    """An upstream event with no Struct of respline's, about the item at ``output_index``."""

    type: str
    output_index: int
    fields: dict[str, Any]


UpstreamItem = UpEvent | UpstreamEnd | UnknownEvent | UpstreamError

# upstream delta/done event -> (upstream part family, part kind)
TEXT_DELTAS = {
    "response.output_text.delta": ("content", "output_text"),
    "response.refusal.delta": ("content", "refusal"),
    "response.reasoning_text.delta": ("content", "reasoning_text"),
    "response.reasoning.delta": ("content", "reasoning_text"),
    "response.reasoning_summary_text.delta": ("summary", "summary_text"),
}
TEXT_DONES = {
    "response.output_text.done": ("content", "output_text", "text"),
    "response.refusal.done": ("content", "refusal", "refusal"),
    "response.reasoning_text.done": ("content", "reasoning_text", "text"),
    "response.reasoning.done": ("content", "reasoning_text", "text"),
    "response.reasoning_summary_text.done": ("summary", "summary_text", "text"),
}
_LIFECYCLE = frozenset(
    {
        *TEXT_DELTAS,
        *TEXT_DONES,
        "response.output_item.added",
        "response.output_item.done",
        "response.content_part.added",
        "response.content_part.done",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_part.done",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.custom_tool_call_input.delta",
        "response.custom_tool_call_input.done",
    }
)
_OPENING = frozenset({"response.created", "response.in_progress", "response.queued"})
_NOT_PASSED = ("type", "sequence_number", "obfuscation")

_decoder = msgspec.json.Decoder(UpEvent)


def read(ev: SseEvent) -> UpstreamItem | None:
    """One upstream SSE event as what it says, or None for one that says nothing to us."""
    data = ev.data
    if data == DONE:
        return None
    try:
        e = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        log.warning("undecodable upstream event: %s", exc)
        return UpstreamError(message=f"upstream sent an unreadable event: {exc}")
    etype = e.type
    if not etype and ev.event:
        etype = e.type = ev.event.decode("utf-8", "replace")
    if etype in _LIFECYCLE:
        return e
    if etype in R.TERMINAL_TYPES:
        return _end(etype, e.response or {})
    if etype == "error":
        return _error_of(e)
    if etype in _OPENING:
        return None
    if e.output_index is None or not etype.startswith("response."):
        log.debug("dropping upstream event %r", etype)
        return None
    try:
        raw = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return None
    if not isinstance(raw, dict):
        return None
    fields = {k: v for k, v in raw.items() if k not in _NOT_PASSED}
    return UnknownEvent(type=etype, output_index=e.output_index, fields=fields)


def _end(etype: str, up: dict[str, Any]) -> UpstreamEnd:
    details = up.get("incomplete_details")
    reason = details.get("reason") if isinstance(details, dict) else None
    err = up.get("error")
    err = err if isinstance(err, dict) else {}
    code = err.get("code")
    message = err.get("message")
    return UpstreamEnd(
        type=etype,
        status=etype[len("response.") :],
        usage=_usage(up.get("usage")),
        incomplete_reason=_incomplete_reason(reason),
        error_code=str(code) if code is not None else None,
        error_message=message if isinstance(message, str) and message else "The upstream response failed.",
    )


def _error_of(e: UpEvent) -> UpstreamError:
    """``error`` events, flat ``{code, message, param}`` or nested ``{error: {...}}`` (SPEC 3.2)."""
    inner = e.error if isinstance(e.error, dict) else {}
    message = inner.get("message") or e.message or "upstream error"
    code = inner.get("code") if inner.get("code") is not None else e.code
    etype = inner.get("type") or "server_error"
    param = inner.get("param") if inner.get("param") is not None else e.param
    return UpstreamError(
        message=str(message),
        type=str(etype),
        code=str(code) if code is not None else str(etype),
        param=param if isinstance(param, str) else None,
    )


def _incomplete_reason(reason: Any) -> str:
    """The SDK's reasons only: xAI says ``REASON_MAX_LEN`` where OpenAI says max_output_tokens."""
    if reason in ("max_output_tokens", "content_filter"):
        return reason
    if isinstance(reason, str) and "filter" in reason.lower():
        return "content_filter"
    return "max_output_tokens"


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def _usage(u: Any) -> R.Usage:
    if not isinstance(u, dict):
        return R.Usage()
    inp = _int(u.get("input_tokens"))
    out = _int(u.get("output_tokens"))
    idet = u.get("input_tokens_details") if isinstance(u.get("input_tokens_details"), dict) else {}
    odet = u.get("output_tokens_details") if isinstance(u.get("output_tokens_details"), dict) else {}
    total = _int(u.get("total_tokens")) or inp + out
    return R.Usage(
        input_tokens=inp,
        input_tokens_details=R.InputTokensDetails(
            cached_tokens=_int(idet.get("cached_tokens")), cache_write_tokens=_int(idet.get("cache_write_tokens"))
        ),
        output_tokens=out,
        output_tokens_details=R.OutputTokensDetails(reasoning_tokens=_int(odet.get("reasoning_tokens"))),
        total_tokens=total,
    )
