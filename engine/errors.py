"""OpenAI-style error envelopes: ``{"error": {"message", "type", "param", "code"}}`` (SPEC 3.1)."""

from __future__ import annotations

import re

import msgspec
from msgspec import Struct


class ErrorBody(Struct):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorEnvelope(Struct):
    error: ErrorBody


_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    408: "timeout_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}

_encoder = msgspec.json.Encoder()


class ApiError(Exception):
    """An error answered before any byte of a response body: a status and an envelope."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        self.headers = headers or {}

    def envelope(self) -> ErrorEnvelope:
        return ErrorEnvelope(ErrorBody(self.message, self.type, self.param, self.code))

    def body(self) -> bytes:
        return _encoder.encode(self.envelope())


_AT = re.compile(r"^(.*?)(?: - at `\$(.*)`)?$", re.S)


def from_validation(exc: msgspec.ValidationError | msgspec.DecodeError, prefix: str = "") -> ApiError:
    """msgspec's "Expected `int`, got `str` - at `$.input[0].id`" -> 400 with param ``input[0].id``."""
    m = _AT.match(str(exc))
    message, path = (m.group(1), m.group(2)) if m else (str(exc), None)
    param = prefix + (path or "")
    param = param.lstrip(".") or None
    if param:
        message = f"Invalid value for '{param}': {message}"
    code = "invalid_type" if message and "Expected" in message else "invalid_value"
    return ApiError(400, message, param=param, code=code)
