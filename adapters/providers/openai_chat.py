"""A Chat Completions upstream: the request respline sends, and how its failures read to a client."""

from __future__ import annotations

from typing import Any

import httpx
import msgspec

from adapters.config import ProviderConfig, Timeouts, expand_env
from engine.errors import ApiError
from engine.translate import ChatDialect

_json = msgspec.json.Encoder()

# Response headers worth passing to the client with an upstream error (SDK retry logic reads them).
_PASS_HEADERS = ("retry-after", "retry-after-ms", "x-should-retry")


class ChatProvider:
    kind = "openai-chat"

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
        self.timeouts = cfg.timeouts or timeouts
        self.dialect: ChatDialect = cfg.dialect()
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        key = api_key if api_key is not None else expand_env(cfg.api_key, f"providers.{name}.api_key")
        headers = {"content-type": "application/json", "accept": "text/event-stream"}
        if key:
            headers["authorization"] = f"Bearer {key}"
        headers.update({k.lower(): v for k, v in cfg.headers.items()})
        self.headers = headers

    def build(self, body: dict[str, Any]) -> tuple[httpx.Request, bytes]:
        payload = _json.encode(body)
        return self.client.build_request("POST", self.url, content=payload, headers=self.headers), payload


def error_from_upstream(status: int, body: bytes, headers: httpx.Headers) -> ApiError:
    """An upstream 4xx/5xx, passed on with the upstream's own message (SPEC 3.1)."""
    message = ""
    etype = None
    code = None
    param = None
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError:
        data = None
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            message = str(err.get("message") or "")
            etype = err.get("type") if isinstance(err.get("type"), str) else None
            code = str(err["code"]) if err.get("code") is not None else None
            param = err.get("param") if isinstance(err.get("param"), str) else None
        elif isinstance(err, str):
            message = err
        elif isinstance(data.get("detail"), str):
            message = data["detail"]
    if not message:
        text = body.decode("utf-8", "replace").strip()
        message = text[:500] if text else f"upstream answered HTTP {status}"
    if code is None and status == 429:
        code = "rate_limit_exceeded"
    passed = {k: headers[k] for k in _PASS_HEADERS if k in headers}
    return ApiError(
        status,
        f"Upstream error: {message}",
        type=etype,
        code=code or ("upstream_error" if status >= 500 else None),
        param=param,
        headers=passed,
    )
