"""Events -> wire frames: SSE (``event:`` + ``data:`` in one frame, framed as sse.py says) or
bare JSON for WebSocket."""

from __future__ import annotations

import msgspec

from respline.engine.stages.sse import DONE_FRAME, END, prefix
from respline.engine.wire.responses import Event, PassEvent

_encoder = msgspec.json.Encoder()
_prefixes: dict[type, bytes] = {}


def sse_prefix(cls: type) -> bytes:
    p = _prefixes.get(cls)
    if p is None:
        p = _prefixes[cls] = prefix(cls.__struct_config__.tag.encode())
    return p


def _pass_prefix(event: PassEvent) -> bytes:
    return prefix(event["type"].encode())


def encode_json(event: Event) -> bytes:
    return _encoder.encode(event)


class SseEncoder:
    """One complete SSE frame per event, so a client never sees half an event in one read."""

    __slots__ = ()

    def feed(self, event: Event) -> list[bytes]:
        cls = type(event)
        p = _prefixes.get(cls)
        if p is None:
            p = _pass_prefix(event) if cls is PassEvent else sse_prefix(cls)
        return [p + _encoder.encode(event) + END]

    def feed_all(self, events: list[Event]) -> list[bytes]:
        prefixes = _prefixes
        encode = _encoder.encode
        end = END
        out = []
        for event in events:
            p = prefixes.get(type(event))
            if p is None:
                out += self.feed(event)
            else:
                out.append(p + encode(event) + end)
        return out

    def close(self) -> list[bytes]:
        return [DONE_FRAME]


class JsonEncoder:
    """One JSON text per event (WebSocket frames); no [DONE] (SPEC 4.3)."""

    __slots__ = ()

    def feed(self, event: Event) -> list[bytes]:
        return [_encoder.encode(event)]

    def feed_all(self, events: list[Event]) -> list[bytes]:
        encode = _encoder.encode
        return [encode(event) for event in events]

    def close(self) -> list[bytes]:
        return []
