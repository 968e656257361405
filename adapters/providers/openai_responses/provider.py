"""A Responses-API upstream (OpenAI, Azure, xAI, OpenRouter, LM Studio, a Codex backend),
passed through: the request as the client sent it (engine/translate_responses.py), the stream
normalised (engine/stages/responses_normaliser.py). Error bodies are OpenAI envelopes already
and read as the Chat provider reads them.
"""

from __future__ import annotations

from typing import Any

import httpx

from respline.adapters.config import Timeouts
from respline.adapters.providers.common import HttpProvider, Prepared, TurnContext
from respline.adapters.providers.openai_responses.config import ResponsesConfig
from respline.engine.errors import ApiError
from respline.engine.pipeline import responses_pipeline
from respline.engine.translate_responses import to_responses_request
from respline.engine.upstream_errors.openai import error_from_upstream
from respline.engine.wire import request as Q



class ResponsesProvider(HttpProvider):
    kind = "openai-responses"

    default_path = "/responses"

    def __init__(self, name: str, cfg: ResponsesConfig, client: httpx.AsyncClient, timeouts: Timeouts, api_key: str | None = None, transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(name, cfg, client, timeouts, api_key, transport)
        self.drop_fields = tuple(cfg.drop_fields)

    def prepare(self, req: Q.CreateRequest, items: list[Any], upstream_model: str, ctx: TurnContext) -> Prepared:
        body = to_responses_request(req, items, upstream_model, self.drop_fields, ctx.unseal)
        request, payload = self.build(body)
        pipeline = responses_pipeline(
            ctx.template, ctx.ids, ctx.clock, encoding=ctx.encoding, reasoning_dialect=ctx.reasoning_dialect
        )
        return Prepared(request, payload, body, pipeline)

    def error(self, status: int, body: bytes, headers: httpx.Headers) -> ApiError:
        return error_from_upstream(status, body, headers)
