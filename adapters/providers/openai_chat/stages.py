"""The ``openai-chat`` kind's head stages: SSE framing, chunk decoding, tool-call accumulation,
in front of the common builder and tail (engine/pipeline.py)."""

from __future__ import annotations

from typing import Any

from respline.engine.ids import Clock, Ids
from respline.engine.pipeline import ResponsePipeline, Stage, builder_pipeline
from respline.engine.stages.chat_decoder import ChatDecoder
from respline.engine.stages.sse import SseDecoder
from respline.engine.stages.tool_calls import ToolCallAccumulator
from respline.engine.wire.responses import Response


def chat_pipeline(
    template: Response,
    ids: Ids,
    clock: Clock,
    *,
    think_tags: bool = False,
    **options: Any,
) -> ResponsePipeline:
    """A Chat Completions upstream: SSE framing, chunk decoding, tool-call accumulation."""
    head: list[Stage] = [SseDecoder(), ChatDecoder(think_tags=think_tags), ToolCallAccumulator(ids)]
    return builder_pipeline(head, template, ids, clock, **options)
