"""Events -> wire frames: SSE (``event:`` + ``data:`` in one frame, framed as sse.py says) or
bare JSON for WebSocket.

An event's JSON is msgspec's own, except a PassEvent's, whose upstream fields are written flat
beside ``type`` and ``sequence_number`` (engine/wire/responses.py ``encode_event``, which the
stored event log uses too); the hot loops below inline the common case.
"""

from __future__ import annotations

import msgspec

from respline.engine.stage import BatchStage
from respline.engine.stages.sse import DONE_FRAME, END, prefix
from respline.engine.wire.responses import Event, PassEvent, encode_event, encode_pass

_encoder = msgspec.json.Encoder()
_prefixes: dict[type, bytes] = {}


def sse_prefix(cls: type) -> bytes:
    p = _prefixes.get(cls)
    if p is None:
        p = _prefixes[cls] = prefix(cls.__struct_config__.tag.encode())
    return p


class SseEncoder(BatchStage[Event, bytes]):
    """One complete SSE frame per event, so a client never sees half an event in one read."""

    __slots__ = ()

    def feed(self, event: Event) -> list[bytes]:
        cls = type(event)
        if cls is PassEvent:  # its type is its own, not its class's: no cached prefix
            return [prefix(event.type.encode()) + encode_pass(event) + END]  # type: ignore[attr-defined]
        p = _prefixes.get(cls)
        if p is None:
            p = sse_prefix(cls)
        return [p + _encoder.encode(event) + END]

    def feed_all(self, events: list[Event]) -> list[bytes]:
        prefixes = _prefixes
        encode = _encoder.encode
        end = END
        out = []
        for event in events:
            p = prefixes.get(type(event))
            if p is None:  # a class not seen yet, or a PassEvent
                out += self.feed(event)
            else:
                out.append(p + encode(event) + end)
        return out

    def close(self) -> list[bytes]:
        return [DONE_FRAME]


class JsonEncoder(BatchStage[Event, bytes]):
    """One JSON text per event (WebSocket frames); no [DONE] (SPEC 4.3)."""

    __slots__ = ()

    def feed(self, event: Event) -> list[bytes]:
        return [encode_event(event)]

    def feed_all(self, events: list[Event]) -> list[bytes]:
        encode = _encoder.encode
        return [encode(event) if type(event) is not PassEvent else encode_pass(event) for event in events]  # type: ignore[arg-type]

    def close(self) -> list[bytes]:
        return []
