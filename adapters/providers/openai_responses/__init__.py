"""The ``openai-responses`` provider kind: a Responses-API upstream, passed through.

Its config keys (config.py), its request translator (engine/translate_responses.py, called by
provider.py), its pipeline (the Responses normaliser in the builder's place, engine/pipeline.py)
and its error parser (engine/upstream_errors/openai.py, the Chat kind's: both are OpenAI
envelopes).
"""

from __future__ import annotations

from typing import Any

from respline.adapters.providers.openai_responses.config import ResponsesConfig
from respline.adapters.providers.openai_responses.provider import ResponsesProvider
from respline.engine.ids import Clock, Ids
from respline.engine.pipeline import ResponsePipeline, responses_pipeline
from respline.engine.registry import ProviderKind
from respline.engine.stages.reasoning_dialect import OPENAI
from respline.engine.upstream_errors.openai import error_from_upstream
from respline.engine.wire.responses import Response

__all__ = ["KIND", "ResponsesConfig", "ResponsesProvider"]


def pipeline(
    template: Response, ids: Ids, clock: Clock, *, encoding: str | None = "sse", reasoning_dialect: str = OPENAI, **_builder: Any
) -> ResponsePipeline:
    """The builder's options (tools, seal_reasoning, think_tags, max_tool_calls) have no use
    here: the upstream sends its items whole, and seals its own reasoning."""
    return responses_pipeline(template, ids, clock, encoding=encoding, reasoning_dialect=reasoning_dialect)


KIND = ProviderKind(
    "openai-responses",
    config=ResponsesConfig,
    provider=ResponsesProvider,
    pipeline=pipeline,
    error=error_from_upstream,
    fixtures="responses",
)
