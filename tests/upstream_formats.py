"""Stream bodies for the scripted upstream (tests/upstream.py) in the two other upstream formats:
Anthropic Messages (``event:`` + ``data:`` per event, SPEC 7) and the Responses API (QUIRKS I).

The scripted upstream answers any POST path with the queued Reply, so a test queues these for a
respline whose provider kind is ``anthropic`` (it POSTs ``/v1/messages``) or
``openai-responses`` (``/v1/responses``) and reads back what respline sent in
``upstream.requests``.
"""

from __future__ import annotations

import json
from typing import Any


def sse(etype: str, data: dict[str, Any]) -> bytes:
    return f"event: {etype}\ndata: {json.dumps(data)}\n\n".encode()


# --- Anthropic Messages ----------------------------------------------------------------------

A_USAGE = {"input_tokens": 20, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 1}


def a_start(model: str = "claude-test", usage: dict | None = None) -> bytes:
    msg = {
        "id": "msg_01Test", "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": usage or A_USAGE,
    }
    return sse("message_start", {"type": "message_start", "message": msg})


def a_end(stop: str = "end_turn", output_tokens: int = 12, **usage: int) -> list[bytes]:
    return [
        sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                              "usage": {"output_tokens": output_tokens, **usage}}),
        sse("message_stop", {"type": "message_stop"}),
    ]


def a_text(index: int, *pieces: str) -> list[bytes]:
    out = [sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}})]
    for p in pieces:
        out.append(sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": p}}))
    out.append(sse("content_block_stop", {"type": "content_block_stop", "index": index}))
    return out


def a_thinking(index: int, text: str, signature: str) -> list[bytes]:
    out = [sse("content_block_start", {"type": "content_block_start", "index": index,
                                       "content_block": {"type": "thinking", "thinking": "", "signature": ""}})]
    half = len(text) // 2
    for p in (text[:half], text[half:]):
        out.append(sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {"type": "thinking_delta", "thinking": p}}))
    out.append(sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {"type": "signature_delta", "signature": signature}}))
    out.append(sse("content_block_stop", {"type": "content_block_stop", "index": index}))
    return out


def a_tool(index: int, name: str, args: str, tool_id: str) -> list[bytes]:
    out = [sse("content_block_start", {"type": "content_block_start", "index": index,
                                       "content_block": {"type": "tool_use", "id": tool_id, "name": name, "input": {}}})]
    half = len(args) // 2
    for p in ("", args[:half], args[half:]):
        out.append(sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": p}}))
    out.append(sse("content_block_stop", {"type": "content_block_stop", "index": index}))
    return out


def anthropic_text(*pieces: str, stop: str = "end_turn") -> list[bytes]:
    return [a_start(), sse("ping", {"type": "ping"}), *a_text(0, *pieces), *a_end(stop)]


def anthropic_tool(name: str, args: str, tool_id: str = "toolu_01Test", thinking: str | None = None,
                   signature: str | None = None, text: str | None = None) -> list[bytes]:
    out = [a_start()]
    index = 0
    if thinking is not None:
        out += a_thinking(index, thinking, signature or "sig")
        index += 1
    if text is not None:
        out += a_text(index, text)
        index += 1
    out += a_tool(index, name, args, tool_id)
    return out + a_end("tool_use")


# --- Responses API -----------------------------------------------------------------------------

R_USAGE = {"input_tokens": 11, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 4,
           "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 15}


def _resp(status: str, output: list, usage: dict | None = None) -> dict[str, Any]:
    return {"id": "resp_upstream1", "object": "response", "created_at": 1, "status": status, "model": "up-model",
            "output": output, "usage": usage}


class ResponsesStream:
    """Builds a Responses-API event stream with sequence numbers, as OpenAI sends it."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.output: list[dict[str, Any]] = []

    def add(self, etype: str, **fields: Any) -> "ResponsesStream":
        self.events.append({"type": etype, "sequence_number": len(self.events), **fields})
        return self

    def start(self) -> "ResponsesStream":
        self.add("response.created", response=_resp("in_progress", []))
        return self.add("response.in_progress", response=_resp("in_progress", []))

    def message(self, text: str, item_id: str = "msg_up1", pieces: int = 2) -> "ResponsesStream":
        n = len(self.output)
        self.add("response.output_item.added", output_index=n,
                 item={"id": item_id, "type": "message", "status": "in_progress", "role": "assistant", "content": []})
        self.add("response.content_part.added", item_id=item_id, output_index=n, content_index=0,
                 part={"type": "output_text", "text": "", "annotations": []})
        step = max(1, len(text) // pieces)
        for i in range(0, len(text), step):
            self.add("response.output_text.delta", item_id=item_id, output_index=n, content_index=0,
                     delta=text[i : i + step], logprobs=[], obfuscation="xyz")
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        self.add("response.output_text.done", item_id=item_id, output_index=n, content_index=0, text=text, logprobs=[])
        self.add("response.content_part.done", item_id=item_id, output_index=n, content_index=0, part=part)
        item = {"id": item_id, "type": "message", "status": "completed", "role": "assistant", "content": [part]}
        self.add("response.output_item.done", output_index=n, item=item)
        self.output.append(item)
        return self

    def reasoning(self, encrypted: str, summary: str | None = None, item_id: str = "rs_up1") -> "ResponsesStream":
        n = len(self.output)
        self.add("response.output_item.added", output_index=n,
                 item={"id": item_id, "type": "reasoning", "summary": [], "encrypted_content": "early-" + encrypted})
        parts = []
        if summary:
            self.add("response.reasoning_summary_part.added", item_id=item_id, output_index=n, summary_index=0,
                     part={"type": "summary_text", "text": ""})
            self.add("response.reasoning_summary_text.delta", item_id=item_id, output_index=n, summary_index=0, delta=summary)
            self.add("response.reasoning_summary_text.done", item_id=item_id, output_index=n, summary_index=0, text=summary)
            parts = [{"type": "summary_text", "text": summary}]
            self.add("response.reasoning_summary_part.done", item_id=item_id, output_index=n, summary_index=0, part=parts[0])
        item = {"id": item_id, "type": "reasoning", "summary": parts, "encrypted_content": encrypted}
        self.add("response.output_item.done", output_index=n, item=item)
        self.output.append(item)
        return self

    def call(self, name: str, args: str, call_id: str, item_id: str = "fc_up1") -> "ResponsesStream":
        n = len(self.output)
        self.add("response.output_item.added", output_index=n,
                 item={"id": item_id, "type": "function_call", "status": "in_progress", "arguments": "", "call_id": call_id, "name": name})
        half = len(args) // 2
        for p in (args[:half], args[half:]):
            self.add("response.function_call_arguments.delta", item_id=item_id, output_index=n, delta=p)
        self.add("response.function_call_arguments.done", item_id=item_id, output_index=n, arguments=args)
        item = {"id": item_id, "type": "function_call", "status": "completed", "arguments": args, "call_id": call_id, "name": name}
        self.add("response.output_item.done", output_index=n, item=item)
        self.output.append(item)
        return self

    def completed(self, usage: dict | None = None) -> "ResponsesStream":
        return self.add("response.completed", response=_resp("completed", self.output, usage or R_USAGE))

    def pieces(self, event_lines: bool = True) -> list[bytes]:
        if event_lines:
            return [sse(e["type"], e) for e in self.events]
        return [f"data: {json.dumps(e)}\n\n".encode() for e in self.events] + [b"data: [DONE]\n\n"]


def responses_text(text: str) -> list[bytes]:
    return ResponsesStream().start().message(text).completed().pieces()


def responses_tool(name: str, args: str, call_id: str, reasoning: str | None = None) -> list[bytes]:
    s = ResponsesStream().start()
    if reasoning is not None:
        s.reasoning(reasoning)
    return s.call(name, args, call_id).completed().pieces()
