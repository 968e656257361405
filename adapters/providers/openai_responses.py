"""A Responses-API upstream (OpenAI, Azure, xAI, OpenRouter, LM Studio, a Codex backend),
passed through: the request as the client sent it (engine/translate_responses.py), the stream
normalised (engine/stages/responses_normaliser.py). Error bodies are OpenAI envelopes already
and read as the Chat provider reads them.
"""

from __future__ import annotations

from typing import Any

import httpx
import msgspec

from adapters.config import ProviderConfig, Timeouts
from adapters.providers.common import Prepared, TurnContext, endpoint, provider_headers, provider_key, provider_timeouts
from adapters.providers.openai_chat import error_from_upstream
from engine.errors import ApiError
from engine.pipeline import responses_pipeline
from engine.translate_responses import to_responses_request
from engine.wire import request as Q

_json = msgspec.json.Encoder()


class ResponsesProvider:
    kind = "openai-responses"

    def __init__(
        self,
        name: str,
        cfg: ProviderConfig,
        client: httpx.AsyncClient,
        timeouts: Timeouts,
        api_key: str | None = None,
    ) -> None:
        self.name = name
        self.client = client
        self.timeouts = provider_timeouts(cfg, timeouts)
        self.url = endpoint(cfg, "/responses")
        self.drop_fields = tuple(cfg.drop_fields)
        key = provider_key(name, cfg, api_key)
        self.headers = provider_headers(name, cfg, {"authorization": f"Bearer {key}"} if key else {})

    def build(self, body: dict[str, Any]) -> tuple[httpx.Request, bytes]:
        payload = _json.encode(body)
        return self.client.build_request("POST", self.url, content=payload, headers=self.headers), payload

    def prepare(self, req: Q.CreateRequest, items: list[Any], upstream_model: str, ctx: TurnContext) -> Prepared:
        body = to_responses_request(req, items, upstream_model, self.drop_fields, ctx.unseal)
        request, payload = self.build(body)
        pipeline = responses_pipeline(
            ctx.template, ctx.ids, ctx.clock, encoding=ctx.encoding, reasoning_dialect=ctx.reasoning_dialect
        )
        return Prepared(request, payload, body, pipeline)

    def error(self, status: int, body: bytes, headers: httpx.Headers) -> ApiError:
        return error_from_upstream(status, body, headers)
