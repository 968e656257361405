"""What a front end does with a fault that escaped a handler: one logged traceback, and a 500
envelope that says nothing of the fault (tests/test_safety_net.py)."""

from __future__ import annotations

import logging

from respline.engine.errors import ApiError


def internal_error() -> ApiError:
    return ApiError(500, "Internal error in the gateway.", code="server_error")


def log_fault(logger: logging.Logger, what: str, exc: BaseException) -> None:
    """One traceback for a fault the safety net caught: the exception itself, not the
    single-member group each trio nursery on its way out wrapped it in."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    logger.error("unexpected error in %s", what, exc_info=exc)
