"""Neutral deltas: what a provider decoder says, independent of the provider's wire format.

A provider decoder turns upstream frames into these; everything after it (tool-call accumulation,
the Responses item lifecycle) only ever sees these types. A new provider writes a decoder and
keeps the rest (ARCHITECTURE.md).
"""

from __future__ import annotations

from msgspec import Struct


class TextDelta(Struct):
    text: str


class ReasoningDelta(Struct):
    text: str


class ReasoningSignature(Struct):
    """The open thinking block ends here, signed (Anthropic ``signature_delta``).

    The signature is what lets the thinking go back upstream next turn: the builder seals it
    into the reasoning item's ``encrypted_content`` with the text. A signature with no thinking
    text before it is a reasoning item of its own, with no content part (QUIRKS G42).
    """

    signature: str


class RedactedReasoning(Struct):
    """A whole ``redacted_thinking`` block: opaque data, no text; one reasoning item of its own."""

    data: str


class RefusalDelta(Struct):
    text: str


class ToolCallDelta(Struct):
    """One upstream tool-call fragment. ``index``/``id`` may be missing (QUIRKS E28, E29)."""

    index: int | None
    id: str | None
    name: str | None
    arguments: str | None


class ToolCallStart(Struct):
    """A whole call begins (after accumulation): one call is open at a time."""

    call_id: str
    name: str


class ToolCallArgs(Struct):
    text: str


class ToolCallEnd(Struct):
    pass


class ItemBreak(Struct):
    """The upstream ended a unit of output (a server-side tool ran between two text blocks): an
    open message closes, so the text after it is a message of its own, not glued on."""

    pass


class Finish(Struct):
    reason: str


class UsageDelta(Struct):
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


class UpstreamError(Struct):
    message: str
    type: str = "server_error"
    code: str | None = "server_error"
    param: str | None = None


Delta = (
    TextDelta
    | ReasoningDelta
    | ReasoningSignature
    | RedactedReasoning
    | RefusalDelta
    | ToolCallDelta
    | ToolCallStart
    | ToolCallArgs
    | ToolCallEnd
    | ItemBreak
    | Finish
    | UsageDelta
    | UpstreamError
)
