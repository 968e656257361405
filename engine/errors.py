"""OpenAI-style error envelopes: ``{"error": {"message", "type", "param", "code"}}`` (SPEC 3.1)."""

from __future__ import annotations

import re
from typing import Any

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


def item_not_found(item_id: str, param: str) -> ApiError:
    """An ``item_reference`` (or an item id) that names no stored item."""
    return ApiError(404, f"Item with id '{item_id}' not found.", param=param, code="item_not_found")


_AT = re.compile(r"^(.*?)(?: - at `\$(.*)`)?$", re.S)


def from_validation(exc: msgspec.ValidationError | msgspec.DecodeError, prefix: str = "") -> ApiError:
    """msgspec's "Expected `int`, got `str` - at `$.input[0].id`" -> 400 with param ``input[0].id``."""
    m = _AT.match(str(exc))
    message, path = (m.group(1), m.group(2)) if m else (str(exc), None)
    param = prefix + (path or "")
    # msgspec names an entry of a mapping "[...]" (which key, it does not say): name the mapping
    param = param.split("[...]", 1)[0].lstrip(".") or None
    if param:
        message = f"Invalid value for '{param}': {message}"
    code = "invalid_type" if message and "Expected" in message else "invalid_value"
    return ApiError(400, message, param=param, code=code)


# --- request bodies ------------------------------------------------------------------------

# How deeply a request body may nest. msgspec's decoder stops at Python's recursion limit, which
# depends on how deep the caller's stack already is: a body that decodes may still fail to
# encode or convert further down (RecursionError, a 500). Tool schemas nest a few levels;
# 64 leaves room for any real one and keeps every later step far from the limit.
MAX_DEPTH = 64

_ATOMS = frozenset({str, int, float, bool, type(None)})
_astuple = msgspec.structs.astuple


def deeper_than(value: Any, limit: int = MAX_DEPTH) -> bool:
    """True when a decoded JSON value (dicts, lists and Structs) nests deeper than ``limit``
    (a top-level object is 1). One level at a time, without recursion: ~60 us for a Codex
    turn of 130 KB, a tenth of decoding it; scanning the raw bytes instead cost ~0.9 ms."""
    level = [] if type(value) in _ATOMS else [value]
    for _ in range(limit):
        children: list[Any] = []
        for v in level:
            t = type(v)
            if t is dict:
                children += v.values()
            elif t is list:
                children += v
            else:  # a Struct
                children += _astuple(v)
        level = [c for c in children if type(c) not in _ATOMS]
        if not level:
            return False
    return bool(level)


def invalid_json(detail: str) -> ApiError:
    return ApiError(400, f"We could not parse the JSON body of your request: {detail}", code="invalid_json")


def decode_json(decoder: msgspec.json.Decoder, body: bytes, prefix: str = "", *, depth: bool = True) -> Any:
    """A JSON body (or WebSocket frame) into its typed form; any failure is a 400 envelope,
    never an exception the server did not expect (msgspec raises UnicodeDecodeError for bad
    UTF-8 inside a string and RecursionError for deep nesting, besides its own errors).
    ``depth=False`` skips the MAX_DEPTH check, for a peek whose result keeps nothing nested."""
    try:
        value = decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise from_validation(exc, prefix) from None
    except msgspec.DecodeError as exc:
        # msgspec 0.23 reports bad UTF-8 in a string as a DecodeError (0.22: UnicodeDecodeError)
        if not _is_utf8(body):
            raise bad_utf8(body) from None
        raise invalid_json(str(exc)) from None
    except UnicodeDecodeError:
        raise bad_utf8(body) from None
    except RecursionError:
        raise nested_too_deeply() from None
    if depth and deeper_than(value):
        raise nested_too_deeply()
    return value


def nested_too_deeply() -> ApiError:
    return invalid_json(f"the JSON nests deeper than {MAX_DEPTH} levels.")


def _is_utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def bad_utf8(body: bytes) -> ApiError:
    """400 for a body that is not UTF-8, naming the field whose string holds the bad bytes
    (found on this error path only: the body is decoded again with the bytes replaced)."""
    try:
        body.decode("utf-8")
        at = 0
    except UnicodeDecodeError as exc:
        at = exc.start
    param = None
    try:
        param = _path_to(msgspec.json.decode(body.decode("utf-8", "replace").encode()), "\ufffd")
    except (msgspec.DecodeError, RecursionError):
        pass
    message = f"The request body is not valid UTF-8 (byte {at})."
    if param:
        message = f"Invalid value for '{param}': {message}"
    return ApiError(400, message, param=param, code="invalid_encoding")


def _path_to(value: Any, needle: str) -> str | None:
    """The path (``input[0].content``) of the first string, or key, that holds ``needle``."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, v = stack.pop()
        if isinstance(v, str):
            if needle in v:
                return path or None
        elif isinstance(v, dict):
            entries = list(v.items())
            for k, _ in entries:
                if needle in k:
                    return f"{path}.{k}" if path else k
            stack.extend((f"{path}.{k}" if path else k, child) for k, child in reversed(entries))
        elif isinstance(v, list):
            for i in range(len(v) - 1, -1, -1):
                stack.append((f"{path}[{i}]", v[i]))
    return None
