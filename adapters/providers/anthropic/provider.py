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
import msgspec

from respline.adapters.config import Timeouts
from respline.adapters.providers.anthropic.config import AnthropicConfig
from respline.adapters.providers.anthropic.stages import anthropic_pipeline
from respline.adapters.providers.common import HttpProvider, Prepared, TurnContext, builder_options
from respline.adapters.providers.openai_chat import PASS_HEADERS
from respline.engine.errors import ApiError
from respline.engine.translate_anthropic import AnthropicDialect, to_anthropic_request
from respline.engine.wire import request as Q


# Anthropic error type -> (OpenAI error type, code); the code is what Codex and the SDKs act on.
_ERROR_TYPES = {
    "invalid_request_error": ("invalid_request_error", None),
    "authentication_error": ("authentication_error", "invalid_api_key"),
    "permission_error": ("permission_error", None),
    "not_found_error": ("invalid_request_error", "not_found"),
    "request_too_large": ("invalid_request_error", "request_too_large"),
    "rate_limit_error": ("rate_limit_error", "rate_limit_exceeded"),
    "api_error": ("server_error", "server_error"),
    "overloaded_error": ("server_error", "overloaded"),
    "timeout_error": ("server_error", "upstream_timeout"),
}


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


def anthropic_error(status: int, body: bytes, headers: httpx.Headers) -> ApiError:
    """``{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}`` ->
    an OpenAI envelope with the upstream's message. Anthropic's 529 (overloaded) is passed on as
    503, a status every client knows to retry."""
    message = ""
    atype = None
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError:
        data = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            message = str(err.get("message") or "")
            atype = err.get("type") if isinstance(err.get("type"), str) else None
        elif isinstance(err, str):
            message = err
    if not message:
        text = body.decode("utf-8", "replace").strip()
        message = text[:500] if text else f"upstream answered HTTP {status}"
    etype, code = _ERROR_TYPES.get(atype or "", (None, None))
    if code is None and status == 429:
        code = "rate_limit_exceeded"
    if code is None and status >= 500:
        code = "upstream_error"
    passed = {k: headers[k] for k in PASS_HEADERS if k in headers}
    return ApiError(
        503 if status == 529 else status,
        f"Upstream error: {message}",
        type=etype,
        code=code,
        headers=passed,
    )
