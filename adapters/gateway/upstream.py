"""Opening the upstream: send the request, wait for its status line, fall back while nothing has
reached the client, and count how each call ended.

A refusal (status, connect error, timeout) is an ApiError the front end answers with an error
envelope; once the status line is good the stream is the pump's (pump.py).
"""

from __future__ import annotations

import logging
from time import perf_counter
from typing import Any, Callable

import httpx
import trio

from respline.adapters.config import Timeouts
from respline.adapters.exchange import Telemetry
from respline.adapters.gateway.turn import Turn
from respline.adapters.watch import SHUTDOWN, Watch
from respline.engine.deltas import UpstreamError
from respline.engine.errors import ApiError

log = logging.getLogger("respline.gateway")

_ERROR_BODY_LIMIT = 64 * 1024


class Upstream:
    """The gateway's upstream calls (a part of ``Gateway``). It reads the gateway's watch and
    telemetry; a fallback translates the turn again with ``_prepare_attempt`` (preparation.py)."""

    watch: Watch
    telemetry: Telemetry

    async def open_upstream(self, turn: Turn) -> httpx.Response:
        """Send the upstream request and wait for its status line; refusals become ApiErrors.
        A turn cut meanwhile (shutdown, a cancelled run) ends with a 503 naming why."""
        watch = self.watch
        if turn.stop is None:
            with trio.CancelScope() as scope:
                turn.scope = scope
                watch.add(turn)
                try:
                    return await self._open_with_fallbacks(turn)
                finally:
                    watch.discard(turn)
                    turn.scope = None
        why = turn.stop or SHUTDOWN
        raise ApiError(503, why.message, code=why.code, type="server_error")

    async def _open_with_fallbacks(self, turn: Turn) -> httpx.Response:
        """A route's fallbacks are tried in order while nothing has reached the client: after a
        connect error, a timeout, a 429 or a 5xx from one provider, the next gets the request
        (translated for its kind). Once streaming began there is no retry (``pump``)."""
        while True:
            try:
                resp = await self._open_attempt(turn)
            except ApiError as err:
                if not (err.status == 429 or err.status >= 500) or turn.attempt + 1 >= len(turn.route.attempts):
                    raise
                failed = turn.provider.name
                turn.attempt += 1
                self._prepare_attempt(turn)
                if self.telemetry.metrics is not None:
                    self.telemetry.metrics.fallbacks.labels(failed, turn.provider.name).inc()
                log.warning(
                    "provider %s failed (%d %s); falling back to %s", failed, err.status, err.code, turn.provider.name
                )
                continue
            # streaming starts: what only a fallback needed can go (the parsed
            # request and the encoded upstream body: ~100 KB each for a Codex turn, held for as
            # long as the stream is open otherwise)
            turn.items = turn.upstream_body = turn.payload = turn.req = turn.http_request = None
            turn.ctx.opened = None  # the opened sealed tokens, only a fallback's translation needed
            if turn.answer is not None and b"json" in resp.headers.get("content-type", "").encode():
                resp.stream = _WholeAnswer(resp.stream, turn.answer)  # (an upstream may stream anyway)
            return resp

    async def _open_attempt(self, turn: Turn) -> httpx.Response:
        t: Timeouts = turn.provider.timeouts
        ex = turn.exchange
        if ex is not None and ex.upstream_start is None:
            ex.upstream_start = perf_counter()
        if ex is not None:
            turn.http_request.headers["x-request-id"] = ex.request_id  # the upstream's logs too
            if self.telemetry.tracer is not None:
                self.telemetry.tracer.inject(ex, turn.http_request.headers)
        try:
            with trio.fail_after(t.connect + t.first_byte):
                resp = await turn.provider.send(turn.http_request)
        except trio.TooSlowError:
            self._upstream_fault(turn, "timeout", "", "no answer within first_byte", timeout="first_byte")
            raise ApiError(504, "The upstream did not answer in time.", code="upstream_timeout", type="server_error") from None
        except httpx.TimeoutException:
            self._upstream_fault(turn, "timeout", "", "connect timed out", timeout="connect")
            raise ApiError(504, "Timed out connecting to the upstream.", code="upstream_timeout", type="server_error") from None
        except httpx.ConnectError as exc:
            self._upstream_fault(turn, "connect_error", "", f"cannot connect: {_why(exc)}")
            raise ApiError(
                502, f"The upstream is unreachable: {exc.__class__.__name__}.", code="upstream_unreachable", type="server_error"
            ) from None
        except httpx.HTTPError as exc:
            # connected, but no answer: the upstream may have the request, so it is not sent again
            self._upstream_fault(turn, "connect_error", "", f"connection failed before an answer: {_why(exc)}")
            raise ApiError(
                502, f"The upstream connection failed before an answer: {exc.__class__.__name__}.", code="upstream_error", type="server_error"
            ) from None
        if resp.status_code >= 400:
            body = b""
            try:
                with trio.move_on_after(t.idle):
                    async for piece in resp.aiter_raw():
                        body += piece
                        if len(body) > _ERROR_BODY_LIMIT:
                            break
            except httpx.HTTPError:
                pass
            finally:
                await resp.aclose()
            err = turn.provider.error(resp.status_code, body, resp.headers)
            self._upstream_fault(turn, "http_error", str(resp.status_code), f"answered {resp.status_code} {err.code}")
            raise err
        return resp

    def _upstream_fault(self, turn: Turn, outcome: str, status: str, cause: str, timeout: str | None = None) -> None:
        """An upstream refusal or fault before streaming: a warning line and its metrics."""
        name = turn.provider.name
        log.warning("upstream %s: %s", name, cause, extra={"fields": {"provider": name, "outcome": outcome}})
        m = self.telemetry.metrics
        if m is not None:
            m.upstream_requests.labels(name, outcome, status).inc()
            if timeout is not None:
                m.timeouts.labels(timeout).inc()

    def _upstream_end(self, turn: Turn, failure: UpstreamError | None) -> None:
        """An upstream call that streamed: how it ended, counted once; a fault is a warning."""
        if failure is not None and failure.code not in ("client_timeout", "client_disconnected", "server_shutting_down", "response_cancelled"):
            log.warning(
                "upstream %s: the stream failed: %s (%s)", turn.provider.name, failure.message, failure.code,
                extra={"fields": {"provider": turn.provider.name, "error": failure.code}},
            )
        m = self.telemetry.metrics
        if m is None:
            return
        if failure is None:
            outcome = "ok"
        elif failure.code == "upstream_timeout":
            outcome = "timeout"
        elif failure.code in ("client_timeout", "client_disconnected", "server_shutting_down", "response_cancelled"):
            outcome = "cancelled"
        else:
            outcome = "stream_error"
        m.upstream_requests.labels(turn.provider.name, outcome, "200").inc()

    def _timed_out(self, turn: Turn, kind: str) -> None:
        """The watch cut a turn for a deadline (first_byte, idle, total, client_write)."""
        m = self.telemetry.metrics
        if m is not None:
            m.timeouts.labels(kind).inc()


def _why(exc: BaseException) -> str:
    """An upstream failure in its own words, for the log (the client is told only its class): its
    text, else its cause's. httpx's transport raises a TLS failure with no text of its own, the
    certificate's fault is in the cause."""
    cause: BaseException | None = exc
    while cause is not None and not str(cause):
        cause = cause.__cause__ or cause.__context__
    return f"{exc.__class__.__name__}: {cause}" if cause is not None else exc.__class__.__name__


class _WholeAnswer(httpx.AsyncByteStream):
    """A non-streamed upstream answer, read to its end and handed to the pipeline as the stream
    it would have sent (``Prepared.answer``), in one piece: ``pump`` reads it like any body."""

    __slots__ = ("_body", "_convert", "complete")

    def __init__(self, body: Any, convert: Callable[[bytes], bytes]) -> None:
        self._body = body
        self._convert = convert
        self.complete = False

    async def __aiter__(self):
        parts = [piece async for piece in self._body]
        self.complete = True
        yield self._convert(b"".join(parts))

    async def aclose(self) -> None:
        await self._body.aclose()
