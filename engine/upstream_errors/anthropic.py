"""Anthropic's errors, ``{"type": "error", "error": {"type": "overloaded_error", "message": ...}}``:
a refusal (``anthropic_error``) and an ``error`` event inside the stream (``stream_error``,
read by engine/stages/anthropic_decoder.py)."""

from __future__ import annotations

from typing import Mapping

from respline.engine.deltas import UpstreamError
from respline.engine.errors import ApiError
from respline.engine.upstream_errors.common import decoded, refusal

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


def anthropic_error(status: int, body: bytes, headers: Mapping[str, str]) -> ApiError:
    """``{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}`` ->
    an OpenAI envelope with the upstream's message. Anthropic's 529 (overloaded) is passed on as
    503, a status every client knows to retry."""
    message = ""
    atype = None
    data = decoded(body)
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            message = str(err.get("message") or "")
            atype = err.get("type") if isinstance(err.get("type"), str) else None
        elif isinstance(err, str):
            message = err
    etype, code = _ERROR_TYPES.get(atype or "", (None, None))
    return refusal(status, body, headers, message, type=etype, code=code, answer_status=503 if status == 529 else None)


def stream_error(err) -> UpstreamError:
    """``{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}``."""
    if isinstance(err, dict):
        etype = err.get("type")
        message = err.get("message")
        etype = etype if isinstance(etype, str) and etype else "api_error"
        return UpstreamError(
            message=message if isinstance(message, str) and message else etype,
            type=etype,
            code=etype,
        )
    if isinstance(err, str) and err:
        return UpstreamError(message=err, type="api_error", code="api_error")
    return UpstreamError(message="upstream error", type="api_error", code="api_error")

