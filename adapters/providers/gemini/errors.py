"""Gemini's errors: a refusal (``gemini_error``) and an error inside the stream (``stream_error``,
read by the decoder, stages.py), both with Gemini's status mapped; the rest of a refusal is
completed as every kind's is (engine/upstream_errors/common.py)."""

from __future__ import annotations

from typing import Any, Mapping

from respline.engine.deltas import UpstreamError
from respline.engine.errors import ApiError
from respline.engine.upstream_errors.common import decoded, refusal

# Gemini's error status -> (OpenAI error type, code)
ERROR_STATUS = {
    "INVALID_ARGUMENT": ("invalid_request_error", None),
    "FAILED_PRECONDITION": ("invalid_request_error", None),
    "OUT_OF_RANGE": ("invalid_request_error", None),
    "UNAUTHENTICATED": ("authentication_error", "invalid_api_key"),
    "PERMISSION_DENIED": ("permission_error", None),
    "NOT_FOUND": ("invalid_request_error", "not_found"),
    "RESOURCE_EXHAUSTED": ("rate_limit_error", "rate_limit_exceeded"),
    "INTERNAL": ("server_error", "server_error"),
    "UNKNOWN": ("server_error", "server_error"),
    "UNAVAILABLE": ("server_error", "overloaded"),
    "DEADLINE_EXCEEDED": ("server_error", "upstream_timeout"),
}


def stream_error(err: dict[str, Any]) -> UpstreamError:
    etype, code = ERROR_STATUS.get(str(err.get("status") or ""), ("server_error", "server_error"))
    return UpstreamError(str(err.get("message") or "Gemini reported an error"), type=etype, code=code or "upstream_error")


def gemini_error(status: int, body: bytes, headers: Mapping[str, str]) -> ApiError:
    """``{"error": {"code": 429, "message": "...", "status": "RESOURCE_EXHAUSTED"}}`` (sometimes
    inside a one-element array) -> an OpenAI envelope with Gemini's message and its status mapped."""
    message = ""
    gstatus = ""
    data = decoded(body)
    if isinstance(data, list) and data:
        data = data[0]
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        err = data["error"]
        message = str(err.get("message") or "")
        gstatus = str(err.get("status") or "")
    etype, code = ERROR_STATUS.get(gstatus, (None, None))
    return refusal(status, body, headers, message, type=etype, code=code)
