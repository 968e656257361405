"""``POST /v1/responses/input_tokens``: how many input tokens a create request would use.

The request is prepared exactly as ``POST /v1/responses`` would be (route, stored context,
references, tool policy), then counted by the route's provider kind:

- ``anthropic``: Anthropic's own ``POST {base_url}/messages/count_tokens`` with the translated
  Messages body (exact);
- ``openai-responses``: the upstream's own ``POST {base_url}/responses/input_tokens`` with the
  passthrough body (exact, as far as the upstream has the endpoint);
- a provider with a ``count_request`` method (``gemini``: ``POST
  {base_url}/models/{model}:countTokens``): the upstream's own count of the translated body;
- ``openai-chat`` (and the demo model): counted here with tiktoken's ``cl100k_base`` over the
  translated Chat body (engine/tokens.py): exact for OpenAI's GPT-4-era models, an estimate for
  every other model family.

The answer is ``{"object": "response.input_tokens", "input_tokens": N}`` (openai SDK
``InputTokenCountResponse``); upstream refusals are passed on as the create route passes them.
"""

from __future__ import annotations

from typing import Any

import httpx
import msgspec
import trio

from respline.adapters.gateway import Gateway
from respline.engine import tokens
from respline.engine.errors import ApiError
from respline.engine.translate import parse_create

# what each upstream's count endpoint takes of the translated body
_ANTHROPIC_KEYS = ("model", "system", "messages", "tools", "tool_choice", "thinking")
_RESPONSES_KEYS = (
    "model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "reasoning", "text",
    "truncation", "personality",
)
_COUNT_PATHS = {"anthropic": "/count_tokens", "openai-responses": "/input_tokens"}


async def input_tokens(gateway: Gateway, body: bytes, tenant: str) -> dict[str, Any]:
    turn = await gateway.prepare_request(parse_create(body), tenant, encoding=None)
    provider = turn.provider
    # a provider kind with its own count endpoint says how to ask it (e.g. Gemini's countTokens)
    count_request = getattr(provider, "count_request", None)
    if count_request is not None:
        url, sent, field = count_request(turn.upstream_body, turn.route.upstream_model)
        return _answer(await _upstream_count(provider, url, sent, field))
    kind = provider.kind
    if kind not in _COUNT_PATHS:
        return _answer(tokens.count_chat(turn.upstream_body))
    keys = _ANTHROPIC_KEYS if kind == "anthropic" else _RESPONSES_KEYS
    sent = {k: v for k, v in turn.upstream_body.items() if k in keys}
    url = str(provider.url).rstrip("/") + _COUNT_PATHS[kind]
    count = await _upstream_count(provider, url, sent)
    return _answer(count)


def _answer(count: int) -> dict[str, Any]:
    return {"object": "response.input_tokens", "input_tokens": count}


async def _upstream_count(provider: Any, url: str, body: dict[str, Any], field: str = "input_tokens") -> int:
    request = httpx.Request(
        "POST", url, headers={**provider.headers, "accept": "application/json"}, content=msgspec.json.encode(body)
    )
    t = provider.timeouts
    try:
        with trio.fail_after(t.connect + t.first_byte):
            resp = await provider.send(request)
            try:
                data = await resp.aread()
            finally:
                await resp.aclose()
    except trio.TooSlowError:
        raise ApiError(504, "The upstream did not answer in time.", code="upstream_timeout", type="server_error") from None
    except httpx.HTTPError as exc:
        raise ApiError(
            502, f"The upstream is unreachable: {exc.__class__.__name__}.", code="upstream_unreachable", type="server_error"
        ) from None
    if resp.status_code >= 400:
        raise provider.error(resp.status_code, data, resp.headers)
    try:
        value = msgspec.json.decode(data)
    except msgspec.DecodeError:
        value = None
    count = value.get(field) if isinstance(value, dict) else None
    if not isinstance(count, int):
        raise ApiError(502, "The upstream's token count could not be read.", code="upstream_error", type="server_error")
    return count
