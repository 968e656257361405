"""Replay a recorded upstream stream through the pipeline, with no I/O.

Used by ``respline replay``, the golden tests over fixtures/, and the demo model. With a seeded
id source and a fixed clock the output is byte-for-byte stable.
"""

from __future__ import annotations

from typing import Iterable

from respline.engine import registry
from respline.engine.ids import Clock, Ids, deterministic
from respline.engine.stages.reasoning_dialect import OPENAI
from respline.engine.stages.sse import frame
from respline.engine.toolmap import ToolMap
from respline.engine.wire.responses import Response


def reframe_jsonl(data: bytes) -> bytes:
    """``*.chunks.jsonl`` recordings hold one JSON chunk per line with the SSE framing stripped."""
    return b"".join(frame(line.strip()) for line in data.splitlines() if line.strip())


def load_recording(name: str, data: bytes) -> bytes:
    return reframe_jsonl(data) if name.endswith(".jsonl") else data


def replay(
    pieces: Iterable[bytes],
    *,
    template: Response | None = None,
    ids: Ids | None = None,
    clock: Clock | None = None,
    model: str = "replay",
    reasoning_dialect: str = OPENAI,
    tools: ToolMap | None = None,
    think_tags: bool = False,
    encoding: str | None = "sse",
    kind: str = "openai-chat",
    seal_reasoning=None,
) -> list:
    """Feed the pieces (any split of the upstream bytes) through the pipeline of the provider
    ``kind`` and return every frame or event."""
    if ids is None or clock is None:
        ids, clock = deterministic()
    if template is None:
        template = Response(id=ids.new("resp_"), created_at=clock.now(), model=model)
    # the kind's own head stages, found in the registry (engine/registry.py)
    pipe = registry.get(kind).pipeline(
        template,
        ids,
        clock,
        encoding=encoding,
        reasoning_dialect=reasoning_dialect,
        tools=tools,
        seal_reasoning=seal_reasoning,
        think_tags=think_tags,
    )
    out = pipe.start()
    for piece in pieces:
        out += pipe.feed(piece)
    out += pipe.close()
    return out
