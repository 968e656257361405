"""Anthropic Messages stream events -> neutral deltas (SPEC 7, QUIRKS G39-G47).

Anthropic streams content blocks one after another, each ``content_block_start`` ->
``content_block_delta``* -> ``content_block_stop`` with its own ``index``. Blocks never
interleave, so tool calls need no accumulation: a ``tool_use`` block is emitted as
ToolCallStart / ToolCallArgs / ToolCallEnd directly and the pipeline has no ToolCallAccumulator.

- ``thinking`` -> ReasoningDelta, then ReasoningSignature at the block's end, so the builder
  seals text and signature together and the next turn can send the block back as Anthropic
  requires; ``redacted_thinking`` -> RedactedReasoning (its opaque ``data``, no text). An empty
  ``thinking_delta`` is nothing; a signature with no text is a reasoning item of its own (G42).
- ``text`` -> TextDelta; ``citations_delta`` is ignored. A whitespace-only text block that does
  not sit between two texts (``"\\n\\n"`` before a thinking block, G43) is dropped.
- ``tool_use`` -> a call with the block's ``id`` as call_id; arguments come only from
  ``input_json_delta`` (the ``input: {}`` of the start event is a placeholder, G40); the builder
  writes ``{}`` for a call that got none (E32).
- Server-side tool blocks (``server_tool_use``, ``web_search_tool_result``, ``mcp_tool_use``,
  ...) and their deltas never become function calls (G45); one between two texts ends the
  message (ItemBreak), so the texts are not glued together.
- ``ping`` is nothing (G39); an ``error`` event is an UpstreamError (response.failed).
- Usage: ``message_start`` and every ``message_delta`` (cumulative, may restate input, G46);
  cache reads and writes are folded into input tokens.
- ``stop_reason``: end_turn / stop_sequence / tool_use / pause_turn complete; max_tokens is
  ``length`` (incomplete, max_output_tokens); refusal adds a refusal part (the explanation from
  ``stop_details`` when given) and completes, also with no content blocks at all (G47);
  model_context_window_exceeded fails with ``context_length_exceeded``, the code Codex acts on.
"""

from __future__ import annotations

import logging

import msgspec

from respline.engine.deltas import (
    Delta,
    Finish,
    ItemBreak,
    ReasoningDelta,
    ReasoningSignature,
    RedactedReasoning,
    RefusalDelta,
    TextDelta,
    ToolCallArgs,
    ToolCallEnd,
    ToolCallStart,
    UpstreamError,
    UsageDelta,
)
from respline.engine.ids import Ids
from respline.engine.stage import Stage
from respline.engine.stages.sse import DONE, SseEvent
from respline.engine.upstream_errors.anthropic import stream_error
from respline.engine.wire.anthropic import AnthropicEvent, AnthropicUsage

log = logging.getLogger("respline.anthropic")

_decoder = msgspec.json.Decoder(AnthropicEvent)
_json = msgspec.json.Encoder()

TEXT, THINKING, TOOL, OTHER = 0, 1, 2, 3

# stop_reason -> the builder's finish reason (``length`` is incomplete: max_output_tokens)
_STOP = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    # A server-side tool loop paused; the content so far is a whole turn, and the client may send
    # it back to continue. The Responses API has no "paused" status, so this completes.
    "pause_turn": "stop",
    "max_tokens": "length",
}

REFUSAL_TEXT = "The model declined to respond to this request."
CONTEXT_EXCEEDED = "The conversation exceeded the model's context window."


class _Block:
    __slots__ = ("kind", "signature", "args", "initial", "held", "shown")

    def __init__(self, kind: int) -> None:
        self.kind = kind
        self.signature: list[str] = []
        self.args = False  # a tool_use block got an argument fragment
        self.initial = None  # tool_use: the start event's input
        self.held: list[str] = []  # text: leading whitespace not yet known to be content
        self.shown = False  # text: some non-whitespace text was emitted


class AnthropicDecoder(Stage[SseEvent, Delta]):
    """SseEvent -> neutral deltas for an Anthropic Messages upstream."""

    __slots__ = ("_ids", "_blocks", "_usage", "_stopped", "_text_open", "_pending_ws", "_tool_index")

    def __init__(self, ids: Ids | None = None) -> None:
        self._ids = ids
        self._blocks: dict[int, _Block] = {}
        self._usage = AnthropicUsage()
        self._stopped = False  # saw a stop_reason, message_stop or an error
        self._text_open = False  # the last visible output was text (a message is open)
        self._pending_ws = ""  # a whitespace-only text block, kept until the next text shows
        self._tool_index = 0

    def feed(self, ev: SseEvent) -> list[Delta]:
        data = ev.data
        if data == DONE:
            return []
        try:
            e = _decoder.decode(data)
        except msgspec.DecodeError as exc:
            log.warning("undecodable upstream event: %s", exc)
            self._stopped = True
            return [UpstreamError(message=f"upstream sent an unreadable event: {exc}")]
        kind = e.type
        out: list = []
        if kind == "content_block_delta":
            self._delta(e, out)
        elif kind == "content_block_start":
            self._start(e, out)
        elif kind == "content_block_stop":
            self._stop(e, out)
        elif kind == "message_delta":
            self._message_delta(e, out)
        elif kind == "message_start":
            if e.message is not None and e.message.usage is not None:
                self._merge_usage(e.message.usage)
                out.append(self._usage_delta())
        elif kind == "message_stop":
            self._stopped = True
        elif kind == "error" or ev.event == b"error":
            out.append(stream_error(e.error))
            self._stopped = True
        # ping and event types this version does not know: nothing to do
        return out

    def close(self) -> list[Delta]:
        if self._stopped:
            return []
        # the body ended with no stop_reason and no message_stop: a cut stream, not an answer
        return [UpstreamError(message="upstream stream ended before message_stop")]

    # -- blocks --------------------------------------------------------------------------

    def _start(self, e: AnthropicEvent, out: list) -> None:
        cb = e.content_block
        index = e.index if e.index is not None else len(self._blocks)
        btype = cb.type if cb is not None else ""
        if btype == "text":
            block = _Block(TEXT)
            self._blocks[index] = block
            if cb.text:
                self._text(block, cb.text, out)
            return
        # any other block ends a run of text: a whitespace-only block before it is dropped
        self._pending_ws = ""
        if btype == "thinking":
            self._text_open = False
            block = _Block(THINKING)
            self._blocks[index] = block
            if cb.thinking:
                out.append(ReasoningDelta(cb.thinking))
            if cb.signature:
                block.signature.append(cb.signature)
        elif btype == "redacted_thinking":
            self._text_open = False
            self._blocks[index] = _Block(OTHER)
            out.append(RedactedReasoning(cb.data or ""))
        elif btype == "tool_use":
            self._text_open = False
            block = _Block(TOOL)
            block.initial = cb.input
            self._blocks[index] = block
            call_id = cb.id or (self._ids.new("toolu_") if self._ids else f"toolu_{index}")
            out.append(ToolCallStart(call_id=call_id, name=cb.name or ""))
        else:  # server-side tool blocks and anything newer: not the client's to run
            self._blocks[index] = _Block(OTHER)
            if self._text_open:
                self._text_open = False
                out.append(ItemBreak())

    def _delta(self, e: AnthropicEvent, out: list) -> None:
        block = self._blocks.get(e.index) if e.index is not None else None
        d = e.delta
        if block is None or d is None:
            return
        kind = block.kind
        if kind == TEXT:
            if d.text:
                self._text(block, d.text, out)
        elif kind == THINKING:
            if d.thinking:
                out.append(ReasoningDelta(d.thinking))
            elif d.signature:
                block.signature.append(d.signature)
        elif kind == TOOL:
            if d.partial_json:
                block.args = True
                out.append(ToolCallArgs(d.partial_json))

    def _stop(self, e: AnthropicEvent, out: list) -> None:
        block = self._blocks.get(e.index) if e.index is not None else None
        if block is None:
            return
        kind = block.kind
        if kind == TEXT:
            if not block.shown and block.held:
                # whitespace only: content only between two texts of one message
                self._pending_ws += "".join(block.held)
        elif kind == THINKING:
            if block.signature:
                out.append(ReasoningSignature("".join(block.signature)))
        elif kind == TOOL:
            initial = block.initial
            if not block.args and isinstance(initial, dict) and initial:
                out.append(ToolCallArgs(_json.encode(initial).decode()))  # a whole input, no deltas
            out.append(ToolCallEnd())

    def _text(self, block: _Block, text: str, out: list) -> None:
        if not block.shown:
            if text.isspace():
                block.held.append(text)
                return
            block.shown = True
            lead = "".join(block.held)
            block.held = []
            if self._pending_ws and self._text_open:
                lead = self._pending_ws + lead
            self._pending_ws = ""
            if lead:
                text = lead + text
        self._text_open = True
        out.append(TextDelta(text))

    # -- the message ---------------------------------------------------------------------

    def _message_delta(self, e: AnthropicEvent, out: list) -> None:
        if e.usage is not None:
            self._merge_usage(e.usage)
            out.append(self._usage_delta())
        d = e.delta
        reason = d.stop_reason if d is not None else None
        if not reason:
            return
        self._stopped = True
        if reason == "refusal":
            details = d.stop_details or {}
            explanation = details.get("explanation") if isinstance(details, dict) else None
            out.append(RefusalDelta(explanation if isinstance(explanation, str) and explanation else REFUSAL_TEXT))
            out.append(Finish("stop"))
        elif reason == "model_context_window_exceeded":
            out.append(
                UpstreamError(
                    message=CONTEXT_EXCEEDED, type="invalid_request_error", code="context_length_exceeded"
                )
            )
        else:
            finish = _STOP.get(reason)
            if finish is None:
                log.info("unknown Anthropic stop_reason %r: treated as end_turn", reason)
                finish = "stop"
            out.append(Finish(finish))

    def _merge_usage(self, u: AnthropicUsage) -> None:
        mine = self._usage
        for field in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
            value = getattr(u, field)
            if value is not None:
                setattr(mine, field, value)
        if u.output_tokens_details is not None:
            mine.output_tokens_details = u.output_tokens_details

    def _usage_delta(self) -> UsageDelta:
        u = self._usage
        read = u.cache_read_input_tokens or 0
        write = u.cache_creation_input_tokens or 0
        inp = (u.input_tokens or 0) + read + write
        output = u.output_tokens or 0
        thinking = 0
        details = u.output_tokens_details
        if isinstance(details, dict):
            value = details.get("thinking_tokens") or details.get("reasoning_tokens")
            if isinstance(value, int):
                thinking = value
        return UsageDelta(
            input_tokens=inp,
            output_tokens=output,
            total_tokens=inp + output,
            cached_tokens=read,
            cache_write_tokens=write,
            reasoning_tokens=thinking,
        )
