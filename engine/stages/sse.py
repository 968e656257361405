"""SSE framing, both ways: the one place that knows the event-stream format.

Reading (``SseDecoder``, QUIRKS A1-A6): bytes in any split -> whole events. Follows the WHATWG
event-stream rules that matter for LLM upstreams: lines end in LF or CRLF, ``:`` starts a
comment (OpenRouter's keep-alives), ``data:`` lines of one event are joined with LF, a blank line
dispatches, an event without data is dropped. A stream that ends without the final blank line
still dispatches what it had, since several providers just close (A5).

Writing (``frame``, ``prefix``, ``END``, ``DONE_FRAME``): each event as ``event: <type>`` and one
``data:`` line, ended by a blank line (SPEC 0.2), as the encoder (encoder.py) writes respline's
own events, stored events are replayed, and a whole upstream answer is turned into the stream
its pipeline reads. ``data`` must be one line (compact JSON is).
"""

from __future__ import annotations

from msgspec import Struct

from respline.engine.stage import Stage


class SseEvent(Struct):
    event: bytes | None
    data: bytes


DONE = b"[DONE]"

END = b"\n\n"  # the blank line that ends a frame
DONE_FRAME = b"data: " + DONE + END  # the end of a stream (SPEC 0.2; respline sends it after the terminal event)


def prefix(event: bytes) -> bytes:
    """What comes before an event's data: ``event: <type>`` and the ``data:`` field name; the
    encoder keeps one per event type, so a frame is ``prefix + data + END``."""
    return b"event: " + event + b"\ndata: "


def frame(data: bytes, event: bytes | None = None) -> bytes:
    """One whole frame: ``event:`` when given, the one-line ``data``, the blank line."""
    return (b"data: " if event is None else prefix(event)) + data + END


class SseDecoder(Stage[bytes, SseEvent]):
    __slots__ = ("_buf", "_data", "_event")

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[bytes] = []
        self._event: bytes | None = None

    def feed(self, chunk: bytes) -> list[SseEvent]:
        buf = self._buf + chunk if self._buf else chunk
        out: list[SseEvent] = []
        if self._data or self._event is not None or b"\r" in buf:
            # general path: line by line (CRLF framing, or an event cut mid-way by the line path)
            lines = buf.split(b"\n")
            self._buf = lines.pop()  # the unterminated tail, possibly empty
            for line in lines:
                self._line(line, out)
            return out
        # fast path for LF framing: whole events end in a blank line, and almost every one is a
        # single "data: {...}" line; anything else in a block goes through the line rules
        blocks = buf.split(b"\n\n")
        self._buf = blocks.pop()  # the event still being received
        for block in blocks:
            if block.startswith(b"data: ") and b"\n" not in block:
                data = block[6:]
                if data:
                    out.append(SseEvent(None, data))
            elif block:
                for line in block.split(b"\n"):
                    self._line(line, out)
                self._dispatch(out)
        return out

    def close(self) -> list[SseEvent]:
        out: list[SseEvent] = []
        if self._buf:  # the fast path may leave several unterminated lines here
            for line in self._buf.split(b"\n"):
                self._line(line, out)
            self._buf = b""
        self._dispatch(out)
        return out

    def _line(self, line: bytes, out: list[SseEvent]) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            self._dispatch(out)
            return
        if line[0] == 58:  # b":" comment / keep-alive
            return
        field, sep, value = line.partition(b":")
        if sep and value.startswith(b" "):
            value = value[1:]
        if field == b"data":
            self._data.append(value)
        elif field == b"event":
            self._event = value
        # id:, retry: and unknown fields carry nothing a converter needs.

    def _dispatch(self, out: list[SseEvent]) -> None:
        if self._data:
            data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
            if data:  # an empty data buffer dispatches nothing (WHATWG; ``data:`` heartbeats)
                out.append(SseEvent(self._event, data))
            self._data = []
        self._event = None
