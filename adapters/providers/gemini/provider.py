"""A Google Gemini upstream (the Gemini API's own protocol, not its OpenAI-compatible one).

``POST {base_url}/models/{model}:streamGenerateContent?alt=sse`` with ``x-goog-api-key``; the
body comes from translate.py, the stream goes through stages.py. Reasoning items are always
sealed for the turn's tenant, include or not: a function call's ``thoughtSignature`` must go
back to Gemini on the next turn, and a client continuing with ``previous_response_id`` gets the
stored items, so the signature must be in them (as Anthropic's are).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from respline.adapters.config import Timeouts
from respline.adapters.providers.common import HttpProvider, Prepared, TurnContext, builder_options, _json
from respline.adapters.providers.gemini.config import GeminiConfig
from respline.adapters.providers.gemini.errors import gemini_error
from respline.adapters.providers.gemini.stages import GeminiDecoder
from respline.adapters.providers.gemini.translate import to_gemini_request
from respline.engine.errors import ApiError
from respline.engine.ids import Clock, Ids
from respline.engine.pipeline import ResponsePipeline, builder_pipeline
from respline.engine.stages.sse import SseDecoder
from respline.engine.wire import request as Q
from respline.engine.wire.responses import Response


def gemini_pipeline(template: Response, ids: Ids, clock: Clock, *, think_tags: bool = False, **options: Any) -> ResponsePipeline:
    """SSE framing and the Gemini decoder (calls arrive whole: no accumulator), then the common
    builder and tail."""
    return builder_pipeline([SseDecoder(), GeminiDecoder(ids)], template, ids, clock, **options)


class GeminiProvider(HttpProvider):
    kind = "gemini"

    # {model} is the upstream model name; `path` in the config may move it
    default_path = "/models/{model}:streamGenerateContent?alt=sse"

    def __init__(self, name: str, cfg: GeminiConfig, client: httpx.AsyncClient, timeouts: Timeouts, api_key: str | None = None, transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(name, cfg, client, timeouts, api_key, transport)
        self.budgets = cfg.budgets()
        self._url_template = str(self.url)

    def auth_headers(self, cfg: GeminiConfig, key: str | None) -> dict[str, str]:
        return {"x-goog-api-key": key} if key else {}

    def prepare(self, req: Q.CreateRequest, items: list[Any], upstream_model: str, ctx: TurnContext) -> Prepared:
        body, tools = to_gemini_request(req, items, self.budgets, ctx.unseal)
        payload = _json.encode(body)
        request = httpx.Request("POST", self._url(upstream_model, "streamGenerateContent"), headers=self.headers, content=payload, extensions={"timeout": self._timeout})
        pipeline = gemini_pipeline(ctx.template, ctx.ids, ctx.clock, **builder_options(ctx, tools, req.max_tool_calls))
        return Prepared(request, payload, body, pipeline)

    def _url(self, model: str, method: str) -> str:
        url = self._url_template.replace("%7Bmodel%7D", "{model}").replace("{model}", quote(model, safe=""))
        return url if method == "streamGenerateContent" else url.split(":streamGenerateContent", 1)[0] + ":" + method

    def count_request(self, body: dict[str, Any], model: str) -> tuple[str, dict[str, Any], str]:
        """``POST /v1/responses/input_tokens`` (adapters/counting.py): Gemini's own
        ``countTokens`` over the request as it would be sent; it answers ``totalTokens``."""
        return self._url(model, "countTokens"), {"generateContentRequest": {"model": f"models/{model}", **body}}, "totalTokens"

    def error(self, status: int, body: bytes, headers: httpx.Headers) -> ApiError:
        return gemini_error(status, body, headers)
