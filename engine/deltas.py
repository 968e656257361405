"""Neutral deltas: what a provider decoder says, independent of the provider's wire format.

A provider decoder turns upstream frames into these; everything after it (tool-call accumulation,
the Responses item lifecycle) only ever sees these types. A new provider writes a decoder and
keeps the rest (docs/architecture.md).

``Delta`` is the tagged union of them all: each is a ``Delta`` subclass whose tag is its class
name, under ``kind`` (``{"kind": "TextDelta", "text": ...}`` in JSON: UpstreamError has a
field ``type`` of its own), so a union of them decodes without
guessing), and a stage annotated ``Stage[SseEvent, Delta]`` or ``Stage[Delta, Event]`` says
exactly what it gives or takes. Stages dispatch on ``type(d) is ...``, never on isinstance
chains; the base adds no field and no per-object cost.
"""

from __future__ import annotations

from msgspec import Struct


class Delta(Struct, tag_field="kind", tag=True):
    """What a provider decoder emits: one of the subclasses below, never a bare Delta."""


class TextDelta(Delta):
    text: str


class ReasoningDelta(Delta):
    text: str


class ReasoningSignature(Delta):
    """The open thinking block ends here, signed (Anthropic ``signature_delta``).

    The signature is what lets the thinking go back upstream next turn: the builder seals it
    into the reasoning item's ``encrypted_content`` with the text. A signature with no thinking
    text before it is a reasoning item of its own, with no content part (QUIRKS G42).

    Anthropic's signatures are base64 and travel as they are; any other provider's carry their
    issuer as a prefix (``gemini:...``, see ``signature_issuer``), so a signature is only ever
    sent back to the kind of upstream that issued it, whatever the route does in between.
    """

    signature: str


def signature_issuer(signature: str) -> str | None:
    """The provider that issued a reasoning signature when it was not Anthropic (the prefix
    before ``:``; base64 has no colon), None for an Anthropic signature."""
    issuer, colon, _ = signature.partition(":")
    return issuer if colon else None


class RedactedReasoning(Delta):
    """A whole ``redacted_thinking`` block: opaque data, no text; one reasoning item of its own."""

    data: str


class RefusalDelta(Delta):
    text: str


class ToolCallDelta(Delta):
    """One upstream tool-call fragment. ``index``/``id`` may be missing (QUIRKS E28, E29)."""

    index: int | None
    id: str | None
    name: str | None
    arguments: str | None


class ToolCallStart(Delta):
    """A whole call begins (after accumulation): one call is open at a time."""

    call_id: str
    name: str


class ToolCallArgs(Delta):
    text: str


class ToolCallEnd(Delta):
    pass


class ItemBreak(Delta):
    """The upstream ended a unit of output (a server-side tool ran between two text blocks): an
    open message closes, so the text after it is a message of its own, not glued on."""

    pass


class Finish(Delta):
    reason: str


class UsageDelta(Delta):
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


class UpstreamError(Delta):
    message: str
    type: str = "server_error"
    code: str | None = "server_error"
    param: str | None = None

