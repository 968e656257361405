"""The time limits of every response being produced, and the cut at shutdown.

One task watches every turn (``gateway.Turn``) in flight, instead of a cancel scope with a
moving deadline in each stream: such a deadline also runs while the stream waits on its client's
write, so a client that paused longer than the upstream's idle limit was told the upstream had
sent nothing, and lost the frame being written (hypercorn shields its socket write, so the
cancellation landed at the next send instead). The pump marks each turn as waiting on the
upstream or as writing to its client, with the time that began (``turn.writing``,
``turn.since``): attribute stores and a clock read per write, no scope moved, no allocation.

- Waiting on the upstream: ``first_byte`` until the first byte, then ``idle`` since the last read
  or the end of the last write, and ``total`` from the start: past one, the turn is cut with
  ``upstream_timeout``. Time spent writing to the client never counts.
- Writing to the client: ``client_write`` per write. Past it, the client's connection is closed,
  which is the only way to end hypercorn's shielded socket write (``turn.close_client``), and the
  turn is cut with ``client_timeout``: its upstream request is cancelled and the response stored
  as failed. A client that is only slow, even slower than ``idle``, loses nothing.
- Shutdown: ``cut_all`` ends every turn (and any that starts later) with the shutdown error;
  ``close_stuck`` then drops the clients whose last write still does not go through.

A cut records why in ``turn.stop`` and cancels ``turn.scope`` unless the turn is writing: a cut
never interrupts a write (that loses the frame being written); the pump looks at ``turn.stop``
after each write and each read and ends the response itself with ``error`` + ``response.failed``.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable

import trio

from respline.engine.deltas import UpstreamError

log = logging.getLogger("respline.watch")


def client_timeout(seconds: float) -> UpstreamError:
    return UpstreamError(
        message=f"The client accepted nothing for {seconds:g} seconds; respline dropped the connection "
        "and cancelled the upstream request.",
        type="server_error",
        code="client_timeout",
    )


CLIENT_GONE = UpstreamError(
    message="The client disconnected before the response finished; the upstream request was cancelled.",
    type="server_error",
    code="client_disconnected",
)
SHUTDOWN = UpstreamError(
    message="The server is shutting down: the response was ended before it finished.",
    type="server_error",
    code="server_shutting_down",
)
CANCELLED = UpstreamError(message="The response was cancelled.", type="server_error", code="response_cancelled")


def client_dropped(turn: Any) -> bool:
    """The turn's client was dropped for not reading: it has no connection to write to."""
    return turn.stop is not None and turn.stop.code == "client_timeout"


def tick_for(limits: Iterable[float]) -> float:
    """How often the watch looks: a tenth of the shortest limit (so a limit fires between 1 and
    1.1 times itself), at least every second, at most 100 times a second."""
    return min(1.0, max(0.01, min(limits, default=10.0) / 10))


class Watch:
    def __init__(self, client_write: float, tick: float) -> None:
        self.active: set[Any] = set()  # the Turns in flight
        self.client_write = client_write
        self.tick = tick
        self.stopping: UpstreamError | None = None  # set by cut_all: later turns are cut at once
        self.on_timeout: Callable[[Any, str], None] | None = None  # (turn, kind): the metrics

    def add(self, turn: Any) -> None:
        self.active.add(turn)
        if self.stopping is not None:
            self.cut(turn, self.stopping)

    def discard(self, turn: Any) -> None:
        self.active.discard(turn)

    def cut(self, turn: Any, why: UpstreamError) -> None:
        """End ``turn`` for ``why``: at once if it waits on its upstream, after its write if not."""
        if turn.stop is None:
            turn.stop = why
        if not turn.writing and turn.scope is not None:
            turn.scope.cancel()

    def drop_client(self, turn: Any, why: UpstreamError) -> None:
        """The client stopped reading: close its connection (which ends the blocked write), cut."""
        turn.stop = why
        close, turn.close_client = turn.close_client, None
        if close is not None:
            close()
        if turn.scope is not None:
            turn.scope.cancel()

    def cut_all(self, why: UpstreamError) -> None:
        self.stopping = why
        for turn in list(self.active):
            self.cut(turn, why)

    def close_stuck(self) -> None:
        """After the cut: clients whose write still blocks will not take their last events."""
        for turn in list(self.active):
            if turn.writing and turn.close_client is not None:
                log.warning("response %s: the client takes no more writes at shutdown; dropped", turn.pipeline.response.id)
                self.drop_client(turn, turn.stop or SHUTDOWN)

    async def run(self) -> None:
        while True:
            await trio.sleep(self.tick)
            self.check(trio.current_time())

    def check(self, now: float) -> None:
        limit = self.client_write
        for turn in list(self.active):
            if turn.writing:
                if now - turn.since > limit and turn.close_client is not None:
                    log.warning(
                        "response %s: the client accepted nothing for %gs; connection dropped",
                        turn.pipeline.response.id,
                        limit,
                        extra=_about(turn),
                    )
                    self._timed_out(turn, "client_write")
                    self.drop_client(turn, client_timeout(limit))
            elif turn.stop is None:
                t = turn.provider.timeouts
                if now >= turn.total_at:
                    self._timed_out(turn, "total")
                    self.cut(turn, upstream_timeout(f"The request exceeded the total timeout of {t.total:g} seconds."))
                elif now - turn.since > turn.read_limit:
                    # before the first byte the read limit is first_byte, then idle (pump)
                    self._timed_out(turn, "idle" if turn.read_limit == t.idle else "first_byte")
                    log.warning("response %s: the upstream sent nothing for %gs", turn.pipeline.response.id, turn.read_limit, extra=_about(turn))
                    self.cut(turn, upstream_timeout(f"The upstream sent nothing for {turn.read_limit:g} seconds."))

    def _timed_out(self, turn: Any, kind: str) -> None:
        if self.on_timeout is not None:
            self.on_timeout(turn, kind)


def _about(turn: Any) -> dict[str, Any]:
    """The watch runs in a task of its own: its lines name the request they are about."""
    ex = getattr(turn, "exchange", None)
    return {"request_id": ex.request_id} if ex is not None else {}


def upstream_timeout(message: str) -> UpstreamError:
    return UpstreamError(message=message, type="server_error", code="upstream_timeout")

