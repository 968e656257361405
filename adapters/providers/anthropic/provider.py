"""An Anthropic Messages upstream: the request respline sends, and how its failures read.

``POST {base_url}/messages`` with ``x-api-key`` and ``anthropic-version``; the body comes from
engine/translate_anthropic.py and the stream goes through engine/stages/anthropic_decoder.py.
Reasoning items are always sealed (``encrypted_content``, for the turn's tenant), include or not:
a thinking block has to go back to Anthropic with its signature on a tool-use turn, and a client
continuing with ``previous_response_id`` gets the stored items, so the signature must be in them.
"""

from __future__ import annotations

from typing import Any

import httpx

from respline.adapters.config import Timeouts
from respline.adapters.providers.anthropic.config import AnthropicConfig
from respline.adapters.providers.anthropic.stages import anthropic_pipeline
from respline.adapters.providers.common import HttpProvider, Prepared, TurnContext, builder_options
from respline.engine.errors import ApiError
from respline.engine.translate_anthropic import AnthropicDialect, to_anthropic_request
from respline.engine.upstream_errors.anthropic import anthropic_error
from respline.engine.wire import request as Q


class AnthropicProvider(HttpProvider):
    kind = "anthropic"

    default_path = "/messages"

    def __init__(self, name: str, cfg: AnthropicConfig, client: httpx.AsyncClient, timeouts: Timeouts, api_key: str | None = None, transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(name, cfg, client, timeouts, api_key, transport)
        self.dialect: AnthropicDialect = cfg.anthropic_dialect()

    def auth_headers(self, cfg: AnthropicConfig, key: str | None) -> dict[str, str]:
        auth = {"anthropic-version": cfg.anthropic_version}
        if key:
            auth["x-api-key"] = key
        return auth

    def prepare(self, req: Q.CreateRequest, items: list[Any], upstream_model: str, ctx: TurnContext) -> Prepared:
        body, tools = to_anthropic_request(req, items, upstream_model, self.dialect, ctx.unseal)
        request, payload = self.build(body)
        pipeline = anthropic_pipeline(ctx.template, ctx.ids, ctx.clock, **builder_options(ctx, tools, req.max_tool_calls))
        return Prepared(request, payload, body, pipeline)

    def error(self, status: int, body: bytes, headers: httpx.Headers) -> ApiError:
        return anthropic_error(status, body, headers)
