"""Chat Completions chunks -> neutral deltas (SPEC 6, QUIRKS B-D, F, H).

Per chunk, in this order: reasoning, content, refusal, tool calls, then finish_reason, so a chunk
that carries its last content and its finish together (C16) is processed delta-first. Null and
empty strings mean "nothing", never "reset" (B12, B13). Only choice 0 is read: respline never asks
an upstream for n>1, so other choices can only come from a replayed recording (B14).
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from respline.engine.deltas import (
    Delta,
    Finish,
    ReasoningDelta,
    RefusalDelta,
    TextDelta,
    ToolCallDelta,
    UpstreamError,
    UsageDelta,
)
from respline.engine.stage import BatchStage
from respline.engine.stages.sse import DONE, SseEvent
from respline.engine.upstream_errors.openai import upstream_error_from
from respline.engine.wire.chat import ChatChunk, ChatUsage

log = logging.getLogger("respline.chat")

_chunk_decoder = msgspec.json.Decoder(ChatChunk)


def usage_from_chat(u: ChatUsage) -> UsageDelta:
    """Map Chat usage to Responses usage, across provider variants (QUIRKS D21-D24).

    ``output_tokens`` is the larger of completion_tokens and total - prompt: xAI leaves reasoning
    out of completion_tokens (D23) but counts it in the total; everyone else includes it.
    """
    prompt = u.prompt_tokens or 0
    completion = u.completion_tokens or 0
    total = u.total_tokens or 0
    output = max(completion, total - prompt) if total else completion
    cached = 0
    write = 0
    if u.prompt_tokens_details is not None:
        cached = u.prompt_tokens_details.cached_tokens or 0
        write = u.prompt_tokens_details.cache_write_tokens or 0
    if not cached:
        cached = u.prompt_cache_hit_tokens or u.cached_tokens or 0
    reasoning = 0
    if u.completion_tokens_details is not None:
        reasoning = u.completion_tokens_details.reasoning_tokens or 0
    return UsageDelta(
        input_tokens=prompt,
        output_tokens=output,
        total_tokens=max(total, prompt + output),
        cached_tokens=cached,
        cache_write_tokens=write,
        reasoning_tokens=reasoning,
    )


class ThinkTags:
    """Split ``<think>...</think>`` inline in content into reasoning (QUIRKS F36).

    Tags may be cut across chunks, so a tail that could be the start of a tag is held back
    until the next piece shows whether it is one. The newlines the R1 chat format puts after
    each tag (``<think>\n...</think>\n\nanswer``) and before the first one are layout, not
    content: they are dropped, so the message does not start with blank lines and a lone
    ``\n`` before ``<think>`` does not become a message item of its own.
    """

    __slots__ = ("_inside", "_held", "_trim")
    OPEN = "<think>"
    CLOSE = "</think>"

    def __init__(self) -> None:
        self._inside = False
        self._held = ""
        self._trim = True  # drop leading newlines until some text is emitted

    def feed(self, text: str, out: list) -> None:
        text = self._held + text
        self._held = ""
        while text:
            tag = self.CLOSE if self._inside else self.OPEN
            pos = text.find(tag)
            if pos >= 0:
                self._emit(text[:pos], out)
                self._inside = not self._inside
                self._trim = True
                text = text[pos + len(tag) :]
                continue
            keep = _partial_suffix(text, tag)
            self._emit(text[: len(text) - keep], out)
            self._held = text[len(text) - keep :]
            return

    def flush(self, out: list) -> None:
        if self._held:
            self._emit(self._held, out)
            self._held = ""

    def _emit(self, text: str, out: list) -> None:
        if self._trim:
            text = text.lstrip("\r\n")
            if not text:
                return
            self._trim = False
        if text:
            out.append(ReasoningDelta(text) if self._inside else TextDelta(text))


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of text that is a proper prefix of tag."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


def _content_parts(parts: list[Any], out: list) -> None:
    """Mistral/Magistral content arrays: text parts and thinking parts (QUIRKS F36)."""
    for part in parts:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if text:
                out.append(TextDelta(text))
        elif kind == "thinking":
            inner = part.get("thinking")
            if isinstance(inner, str):
                if inner:
                    out.append(ReasoningDelta(inner))
            elif isinstance(inner, list):
                for sub in inner:
                    if isinstance(sub, dict) and sub.get("text"):
                        out.append(ReasoningDelta(sub["text"]))


class ChatDecoder(BatchStage[SseEvent, Delta]):
    """SseEvent -> neutral deltas for a Chat Completions upstream."""

    __slots__ = ("_think", "done", "_ended")

    def __init__(self, think_tags: bool = False) -> None:
        self._think = ThinkTags() if think_tags else None
        self.done = False  # saw data: [DONE]
        # saw something that says the upstream meant to stop: a finish_reason, a usage chunk
        # (sent last, QUIRKS D21) or an error; [DONE] is tracked by ``done``
        self._ended = False

    def feed_all(self, events: list[SseEvent]) -> list[Delta]:
        out: list[Delta] = []
        chunk = self._chunk
        for ev in events:
            chunk(ev, out)
        return out

    def feed(self, ev: SseEvent) -> list[Delta]:
        out: list[Delta] = []
        self._chunk(ev, out)
        return out

    def _chunk(self, ev: SseEvent, out: list) -> None:
        data = ev.data
        if data == DONE:
            self.done = True
            return
        if ev.event == b"error":  # Groq's named error event (QUIRKS A3)
            try:
                payload = msgspec.json.decode(data)
            except msgspec.DecodeError:
                payload = {"message": data.decode("utf-8", "replace")}
            out.append(upstream_error_from(payload))
            self._ended = True
            return
        try:
            chunk = _chunk_decoder.decode(data)
        except msgspec.DecodeError as exc:
            # A chunk we cannot read is not something to guess around: fail the response loudly.
            log.warning("undecodable upstream chunk: %s", exc)
            out.append(UpstreamError(message=f"upstream sent an unreadable chunk: {exc}"))
            self._ended = True
            return
        if chunk.error is not None:  # in-band error (QUIRKS A4)
            out.append(upstream_error_from({"error": chunk.error}))
            self._ended = True
            return
        if chunk.object == "error":  # vLLM
            self._ended = True
            out.append(
                UpstreamError(
                    message=chunk.message or "upstream error",
                    type=chunk.type or "server_error",
                    code=str(chunk.code) if chunk.code is not None else "server_error",
                )
            )
            return
        if chunk.choices:
            for choice in chunk.choices:
                if choice.index != 0:
                    continue
                delta = choice.delta or choice.message
                if delta is not None:
                    self._delta(delta, out)
                if choice.finish_reason:
                    if self._think is not None:
                        self._think.flush(out)
                    out.append(Finish(choice.finish_reason))
                    self._ended = True
        usage = chunk.usage
        if usage is None and chunk.x_groq is not None:
            usage = chunk.x_groq.usage  # older Groq: usage only inside x_groq (QUIRKS D22)
        if usage is not None:
            out.append(usage_from_chat(usage))
            self._ended = True

    def _delta(self, d, out: list) -> None:
        reasoning = d.reasoning_content or d.reasoning
        if reasoning:
            out.append(ReasoningDelta(reasoning))
        elif d.reasoning_details:
            for det in d.reasoning_details:
                if isinstance(det, dict) and det.get("type") == "reasoning.text" and det.get("text"):
                    out.append(ReasoningDelta(det["text"]))
        content = d.content
        if content:
            if type(content) is str:
                if self._think is not None:
                    self._think.feed(content, out)
                else:
                    out.append(TextDelta(content))
            else:
                _content_parts(content, out)
        if d.refusal:
            out.append(RefusalDelta(d.refusal))
        if d.tool_calls:
            for tc in d.tool_calls:
                fn = tc.function
                out.append(
                    ToolCallDelta(
                        index=tc.index,
                        id=tc.id or None,
                        name=(fn.name or None) if fn is not None else None,
                        arguments=fn.arguments if fn is not None else None,
                    )
                )
        elif d.function_call is not None:
            fn = d.function_call
            out.append(ToolCallDelta(index=0, id=None, name=fn.name or None, arguments=fn.arguments))

    def close(self) -> list:
        out: list = []
        if self._think is not None:
            self._think.flush(out)
        if not (self.done or self._ended):
            # The body ended with no finish_reason, no usage and no [DONE]: nothing says the
            # upstream meant to stop, so this is a cut stream, not an answer (SPEC 6.2). A stream
            # that lacks only finish_reason but ends with [DONE] or usage completes (QUIRKS C18).
            out.append(UpstreamError(message="upstream stream ended before finish_reason"))
        return out
