"""The NDJSON kind's head stages: line framing, then its chunk shape into respline's deltas."""

from __future__ import annotations

from typing import Any

import msgspec

from respline.engine.deltas import (
    Delta,
    Finish,
    ReasoningDelta,
    TextDelta,
    ToolCallArgs,
    ToolCallEnd,
    ToolCallStart,
    UpstreamError,
    UsageDelta,
)
from respline.engine.stage import Stage


class NdjsonDecoder(Stage[bytes, Any]):
    """bytes -> one decoded JSON object per non-blank line, whatever the split of the bytes;
    a line that is not JSON is an UpstreamError (the stream cannot be trusted after it)."""

    def __init__(self) -> None:
        self._buf = b""
        self._decode = msgspec.json.Decoder().decode

    def feed(self, data: bytes) -> list:
        self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        return [self._line(line) for line in lines if line.strip()]

    def close(self) -> list:
        rest, self._buf = self._buf, b""
        return [self._line(rest)] if rest.strip() else []

    def _line(self, line: bytes) -> Any:
        try:
            return self._decode(line)
        except msgspec.DecodeError:
            return UpstreamError(f"the upstream sent a line that is not JSON: {line[:80]!r}")


_FINISH = {"stop": "stop", "length": "length", "tool": "tool_calls"}


class ChunkDecoder(Stage[Any, Delta]):
    """One NDJSON object -> neutral deltas. A call arrives whole, so it is started, given its
    arguments and ended at once (no tool-call accumulator)."""

    def feed(self, chunk: Any) -> list[Delta]:
        if not isinstance(chunk, dict):
            return [chunk] if isinstance(chunk, UpstreamError) else []
        out: list = []
        if "thinking" in chunk:
            out.append(ReasoningDelta(str(chunk["thinking"])))
        if "text" in chunk:
            out.append(TextDelta(str(chunk["text"])))
        call = chunk.get("call")
        if isinstance(call, dict):
            out += [
                ToolCallStart(call_id=str(call.get("id") or ""), name=str(call.get("name") or "")),
                ToolCallArgs(str(call.get("arguments") or "{}")),
                ToolCallEnd(),
            ]
        if "done" in chunk:
            usage = chunk.get("usage") or {}
            i, o = int(usage.get("input", 0)), int(usage.get("output", 0))
            out += [UsageDelta(input_tokens=i, output_tokens=o, total_tokens=i + o), Finish(_FINISH.get(chunk["done"], "stop"))]
        err = chunk.get("error")
        if isinstance(err, dict):
            out.append(UpstreamError(str(err.get("message") or "upstream error"), code=err.get("code") or "server_error"))
        return out

    def close(self) -> list:
        return []
