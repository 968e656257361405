"""The NDJSON kind's config, request, pipeline and error parser."""

from __future__ import annotations

from typing import Any

import httpx
import msgspec

from respline.adapters.config import ProviderConfig
from respline.adapters.providers.common import HttpProvider, Prepared, TurnContext
from respline.engine.errors import ApiError
from respline.engine.ids import Clock, Ids
from respline.engine.pipeline import ResponsePipeline, builder_pipeline
from respline.engine.translate import ChatDialect, to_chat_request
from respline.engine.wire import request as Q
from respline.engine.wire.responses import Response
from respline_ndjson.stages import ChunkDecoder, NdjsonDecoder


class NdjsonConfig(ProviderConfig, tag="ndjson"):
    temperature_scale: float = 1.0  # a key of this kind only: the request's temperature times this


def ndjson_pipeline(template: Response, ids: Ids, clock: Clock, *, think_tags: bool = False, **options: Any) -> ResponsePipeline:
    return builder_pipeline([NdjsonDecoder(), ChunkDecoder()], template, ids, clock, **options)


class NdjsonProvider(HttpProvider):
    kind = "ndjson"
    default_path = "/generate"

    def __init__(self, name: str, cfg: NdjsonConfig, *args: Any, **kwargs: Any) -> None:
        super().__init__(name, cfg, *args, **kwargs)
        self.headers["accept"] = "application/x-ndjson"
        self.scale = cfg.temperature_scale

    def prepare(self, req: Q.CreateRequest, items: list[Any], upstream_model: str, ctx: TurnContext) -> Prepared:
        body, tools = to_chat_request(req, items, upstream_model, ChatDialect(), ctx.unseal)
        if "temperature" in body:
            body["temperature"] *= self.scale
        request, payload = self.build(body)
        pipeline = ndjson_pipeline(
            ctx.template, ctx.ids, ctx.clock, encoding=ctx.encoding, reasoning_dialect=ctx.reasoning_dialect,
            tools=tools, max_tool_calls=req.max_tool_calls,
        )
        return Prepared(request, payload, body, pipeline)

    def error(self, status: int, body: bytes, headers: httpx.Headers) -> ApiError:
        return ndjson_error(status, body, headers)


def ndjson_error(status: int, body: bytes, headers: httpx.Headers) -> ApiError:
    try:
        message = str(msgspec.json.decode(body)["error"]["message"])
    except (msgspec.DecodeError, KeyError, TypeError):
        message = body.decode("utf-8", "replace")[:500] or f"upstream answered HTTP {status}"
    code = "rate_limit_exceeded" if status == 429 else ("upstream_error" if status >= 500 else None)
    return ApiError(status, f"Upstream error: {message}", code=code)
