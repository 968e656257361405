"""The ``anthropic`` kind's head stages, in front of the common builder and tail (engine/pipeline.py)."""

from __future__ import annotations

from typing import Any

from respline.engine.ids import Clock, Ids
from respline.engine.pipeline import ResponsePipeline, builder_pipeline
from respline.engine.stages.anthropic_decoder import AnthropicDecoder
from respline.engine.stages.sse import SseDecoder
from respline.engine.wire.responses import Response


def anthropic_pipeline(template: Response, ids: Ids, clock: Clock, *, think_tags: bool = False, **options: Any) -> ResponsePipeline:
    """An Anthropic Messages upstream: its own decoder, no tool-call accumulator (Anthropic's
    blocks never interleave), then the same builder and tail as Chat. (``think_tags`` is a Chat
    option: Anthropic's thinking comes in its own blocks.)"""
    return builder_pipeline([SseDecoder(), AnthropicDecoder(ids)], template, ids, clock, **options)
