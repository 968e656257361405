"""OpenAI error envelopes, ``{"error": {"message", "type", "param", "code"}}``, and the shapes
OpenAI-compatible upstreams give them (OpenRouter's numeric codes, Groq, vLLM, a bare string).

``error_from_upstream`` reads a refusal (a Chat Completions or a Responses upstream);
``upstream_error_from`` an error inside a Chat Completions stream (engine/stages/chat_decoder.py).
A Responses upstream's stream errors are Responses events, read with its other events
(engine/stages/responses_decoder.py ``_error_of``).
"""

from __future__ import annotations

from typing import Any, Mapping

from respline.engine.deltas import UpstreamError
from respline.engine.errors import ApiError
from respline.engine.upstream_errors.common import decoded, refusal


def error_from_upstream(status: int, body: bytes, headers: Mapping[str, str]) -> ApiError:
    """An upstream 4xx/5xx, passed on with the upstream's own message (SPEC 3.1)."""
    message = ""
    etype = None
    code = None
    param = None
    data = decoded(body)
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
    return refusal(status, body, headers, message, type=etype, code=code, param=param)


def upstream_error_from(payload: Any, fallback: str = "upstream error") -> UpstreamError:
    """An in-band error object (OpenAI, OpenRouter numeric codes, Groq, vLLM) -> UpstreamError."""
    if isinstance(payload, dict):
        inner = payload.get("error", payload)
        if isinstance(inner, str):
            return UpstreamError(message=inner, type="server_error", code="server_error")
        if isinstance(inner, dict):
            message = str(inner.get("message") or fallback)
            etype = inner.get("type")
            code = inner.get("code")
            param = inner.get("param")
            return UpstreamError(
                message=message,
                type=str(etype) if etype else "server_error",
                code=str(code) if code is not None else (str(etype) if etype else "server_error"),
                param=param if isinstance(param, str) else None,
            )
    return UpstreamError(message=fallback)
