"""What every upstream refusal shares, whatever its body's shape (engine/upstream_errors/)."""

from __future__ import annotations

from typing import Any, Mapping

import msgspec

from respline.engine.errors import ApiError

# Response headers worth passing to the client with an upstream error (SDK retry logic reads them).
PASS_HEADERS = ("retry-after", "retry-after-ms", "x-should-retry")


def decoded(body: bytes) -> Any:
    """The error body as JSON, or None when it is not JSON (an HTML page from a proxy)."""
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None


def refusal(
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    message: str,
    *,
    type: str | None = None,
    code: str | None = None,
    param: str | None = None,
    answer_status: int | None = None,
) -> ApiError:
    """An upstream 4xx/5xx, passed on with the upstream's own message (SPEC 3.1): what the
    family's parser read (``message``, ``type``, ``code``, ``param``; empty where it found
    none), completed the same way for every family. No message: the body's own text. No code:
    ``rate_limit_exceeded`` for a 429, ``upstream_error`` for a 5xx (the codes clients and the
    SDKs act on). ``answer_status``: the status the client gets, where it is not the upstream's."""
    if not message:
        text = body.decode("utf-8", "replace").strip()
        message = text[:500] if text else f"upstream answered HTTP {status}"
    if code is None and status == 429:
        code = "rate_limit_exceeded"
    if not code:
        code = "upstream_error" if status >= 500 else None
    passed = {k: headers[k] for k in PASS_HEADERS if k in headers}
    return ApiError(
        answer_status or status,
        f"Upstream error: {message}",
        type=type,
        code=code,
        param=param,
        headers=passed,
    )
