"""The ``gemini`` kind's decoder: one ``streamGenerateContent?alt=sse`` chunk -> neutral deltas.

Each SSE ``data:`` is a whole GenerateContentResponse (there is no ``[DONE]``; the body ends)::

    {"candidates": [{"content": {"role": "model", "parts": [...]}, "finishReason": "STOP"}],
     "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 4, "thoughtsTokenCount": 30, ...}}

- a part ``{"text", "thought": true}`` is reasoning (a thought summary); ``{"text"}`` is output text;
  ``{"functionCall": {"name", "args", "id"?}}`` is a whole call (arguments never come in pieces),
  its call id Gemini's ``id`` where it gave one, else ``call_<id>_<n>``.
- ``thoughtSignature`` may ride on any part (a call's, a text's, an empty text's): it is
  emitted as a ReasoningSignature *before* that part's content, so the reasoning item it closes
  (with the thought text streamed so far, or alone) comes before the call it belongs to, and
  goes back on that part next turn (translate.py). The builder seals it for the tenant.
  Gemini's signatures are marked ``gemini:`` inside the seal so only a Gemini turn sends them.
- ``usageMetadata`` is cumulative, each chunk's replaces the last: input = promptTokenCount,
  output = candidates + thoughts, reasoning = thoughtsTokenCount, cached = cachedContentTokenCount.
- ``finishReason``: MAX_TOKENS -> length (incomplete); SAFETY, RECITATION, BLOCKLIST,
  PROHIBITED_CONTENT, SPII, IMAGE_SAFETY, LANGUAGE -> content_filter (incomplete);
  MALFORMED_FUNCTION_CALL, UNEXPECTED_TOOL_CALL -> an upstream error; the rest complete.
- ``promptFeedback.blockReason`` with no candidates: the prompt itself was blocked ->
  content_filter. ``{"error": {...}}`` in the stream -> an UpstreamError with Gemini's status mapped.
"""

from __future__ import annotations

from typing import Any

import msgspec

from respline.engine.deltas import (
    Delta,
    Finish,
    ReasoningDelta,
    ReasoningSignature,
    TextDelta,
    ToolCallArgs,
    ToolCallEnd,
    ToolCallStart,
    UpstreamError,
    UsageDelta,
)
from respline.adapters.providers.gemini.errors import stream_error
from respline.engine.ids import Ids
from respline.engine.stage import Stage
from respline.engine.stages.sse import SseEvent

ISSUER = "gemini"
SIGNATURE_PREFIX = ISSUER + ":"  # engine/deltas.py signature_issuer: whose signature it is

_FILTERED = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "LANGUAGE"})
_BAD_CALL = frozenset({"MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL"})

class GeminiDecoder(Stage[SseEvent, Delta]):
    """SseEvent -> deltas. Only the first candidate is read (respline asks for one)."""

    def __init__(self, ids: Ids | None = None) -> None:
        # one id drawn now, not per call: how many chunks one read holds must not change which
        # id the builder's items get (replays are identical for any split of the bytes)
        self._call_prefix = ids.new("call_") if ids is not None else "call"
        self._decode = msgspec.json.Decoder().decode
        self._calls = 0
        self._ended = False

    def feed(self, event: SseEvent) -> list[Delta]:
        if self._ended:
            return []
        try:
            chunk = self._decode(event.data)
        except msgspec.DecodeError:
            self._ended = True
            return [UpstreamError(f"Gemini sent a chunk that is not JSON: {bytes(event.data[:80])!r}")]
        if isinstance(chunk, list):  # an error is sometimes wrapped in an array
            chunk = chunk[0] if chunk and isinstance(chunk[0], dict) else {}
        if not isinstance(chunk, dict):
            return []
        err = chunk.get("error")
        if isinstance(err, dict):
            self._ended = True
            return [stream_error(err)]
        out: list = []
        candidates = chunk.get("candidates")
        cand = candidates[0] if isinstance(candidates, list) and candidates and isinstance(candidates[0], dict) else None
        if cand is not None:
            content = cand.get("content")
            parts = content.get("parts") if isinstance(content, dict) else None
            for part in parts if isinstance(parts, list) else ():
                if isinstance(part, dict):
                    self._part(part, out)
        usage = chunk.get("usageMetadata")
        if isinstance(usage, dict):
            out.append(_usage(usage))
        if cand is not None and cand.get("finishReason"):
            out.append(self._finish(str(cand["finishReason"])))
        else:
            feedback = chunk.get("promptFeedback")
            if cand is None and isinstance(feedback, dict) and feedback.get("blockReason"):
                out.append(Finish("content_filter"))  # the prompt itself was blocked
        if out and type(out[-1]) is UpstreamError:
            self._ended = True
        return out

    def _part(self, part: dict[str, Any], out: list) -> None:
        text = part.get("text")
        signature = part.get("thoughtSignature")
        thought = part.get("thought") is True
        if thought and isinstance(text, str) and text:
            out.append(ReasoningDelta(text))
        if isinstance(signature, str) and signature:
            out.append(ReasoningSignature(SIGNATURE_PREFIX + signature))
        if not thought and isinstance(text, str) and text:
            out.append(TextDelta(text))
        call = part.get("functionCall")
        if isinstance(call, dict):
            self._calls += 1
            call_id = call.get("id")
            if not isinstance(call_id, str) or not call_id:
                call_id = f"{self._call_prefix}_{self._calls}"
            args = call.get("args")
            out += [
                ToolCallStart(call_id=call_id, name=str(call.get("name") or "")),
                ToolCallArgs(msgspec.json.encode(args if isinstance(args, dict) else {}).decode()),
                ToolCallEnd(),
            ]

    def _finish(self, reason: str) -> Any:
        if reason == "MAX_TOKENS":
            return Finish("length")
        if reason in _FILTERED:
            return Finish("content_filter")
        if reason in _BAD_CALL:
            return UpstreamError(f"Gemini ended the turn with {reason}: the model produced a function call it could not complete.")
        return Finish("stop")

    def close(self) -> list[Delta]:
        return []


def _usage(u: dict[str, Any]) -> UsageDelta:
    def n(key: str) -> int:
        v = u.get(key)
        return v if isinstance(v, int) else 0

    thoughts = n("thoughtsTokenCount")
    prompt = n("promptTokenCount") + n("toolUsePromptTokenCount")
    output = n("candidatesTokenCount") + thoughts
    return UsageDelta(
        input_tokens=prompt,
        output_tokens=output,
        total_tokens=n("totalTokenCount") or prompt + output,
        cached_tokens=n("cachedContentTokenCount"),
        reasoning_tokens=thoughts,
    )
