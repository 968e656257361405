"""The stream pump: upstream body -> the turn's pipeline -> the client, always ending with a
terminal event; ``collect`` is the same pump for a whole (non-streamed) answer.

Once the first frame may have reached the client a failure can only be an ``error`` event and
``response.failed``: there is no fallback past this point (upstream.py has them).
"""

from __future__ import annotations

from time import perf_counter

import httpx
import trio

from respline.adapters.config import Timeouts
from respline.adapters.gateway.records import persists
from respline.adapters.gateway.turn import Emit, Turn
from respline.adapters.watch import CLIENT_GONE, SHUTDOWN, Watch
from respline.engine.deltas import UpstreamError
from respline.engine.errors import ApiError
from respline.engine.pipeline import ResponsePipeline
from respline.engine.wire import responses as R
from respline.engine.wire.responses import Response


class StreamPump:
    """The gateway's stream pump (a part of ``Gateway``). A ``store: true`` response is recorded
    through the gateway's own ``begin_record``, ``record_status`` and ``finish`` (records.py),
    called as methods of the gateway so that wrapping them there (bench/store_timing.py) times
    every call; how the upstream call ended is counted by ``_upstream_end`` (upstream.py)."""

    watch: Watch

    async def pump(self, turn: Turn, resp: httpx.Response, emit: Emit) -> None:
        """Upstream body -> pipeline -> ``emit(frames)``; always ends with a terminal event.

        Time limits are the watch's (adapters/watch.py): this loop only marks when it waits on
        the upstream and when it writes to the client (``turn.writing``, ``turn.since``), and
        looks at ``turn.stop`` after each read and each write; a cut cancels ``turn.scope``
        while it waits on the upstream, never mid-write. A ``store: true`` response is recorded
        when it starts, brought up to date as each output item completes, and stored final
        before the frames that carry its terminal event go out.
        """
        pipe: ResponsePipeline = turn.pipeline
        t: Timeouts = turn.provider.timeouts
        body = resp.stream
        watch = self.watch
        durable = turn.store
        # Each write to the client costs ~0.1 ms of fixed server overhead (bench/README.md), so
        # events that are ready together go out together: the opening events wait for the first
        # upstream read only when its bytes came with the head, and the last read's events go
        # out with the terminal ones.
        held = pipe.start()
        failure: UpstreamError | None = None
        gone: BaseException | None = None
        out: list = []
        idle = t.idle
        items = 0
        ex = turn.exchange
        first_token = ex is not None  # the first frames read from the upstream time TTFT
        turn.since = now = trio.current_time()
        turn.read_limit = t.first_byte
        turn.total_at = now + t.total
        turn.writing = False
        try:
            with trio.CancelScope() as scope:
                turn.scope = scope
                watch.add(turn)
                if durable and not turn.leased:
                    await self.begin_record(turn)
                if not getattr(body, "buffered", False):
                    turn.writing = True
                    await emit(held)
                    turn.writing = False
                    held = []
                    turn.since = trio.current_time()
                async for chunk in body:  # the transport's body itself: no chunker layer
                    if turn.stop is not None:
                        break  # cut as this read completed
                    turn.since = trio.current_time()
                    turn.read_limit = idle
                    frames = pipe.feed(chunk)
                    if held:
                        frames = held + frames
                        held = []
                    if frames:
                        if pipe.finished:  # an in-band upstream error ended it
                            out = frames
                            break
                        if getattr(body, "complete", False):
                            out = frames  # the loop ends next, without a read
                            continue
                        turn.writing = True
                        await emit(frames)
                        turn.writing = False
                        if first_token:
                            first_token = False
                            ex.first_token = perf_counter()
                        if turn.stop is not None:
                            break  # cut while writing
                        if durable and len(pipe.output) != items:
                            items = len(pipe.output)
                            await self.record_status(turn, "in_progress", progress=True)  # an item completed
                        turn.since = trio.current_time()
        except trio.Cancelled as exc:  # the client left (or, past the shutdown backstop, the server)
            gone = exc
        except httpx.HTTPError as exc:
            failure = UpstreamError(
                message=f"The upstream connection failed mid-stream: {exc.__class__.__name__}.",
                type="server_error",
                code="upstream_error",
            )
        finally:
            watch.discard(turn)
            turn.scope = None
            turn.writing = False
            with trio.CancelScope(shield=True):
                await resp.aclose()
        if gone is not None:
            # no client to tell, but what was produced is stored (a background run's followers
            # get its end too)
            self._upstream_end(turn, CLIENT_GONE)
            with trio.CancelScope(shield=True):
                end = pipe.fail(SHUTDOWN if watch.stopping is not None else CLIENT_GONE)
                await self.finish(turn)
                if turn.background:
                    await emit(end)
            raise gone
        if failure is None:
            failure = turn.stop
        self._upstream_end(turn, failure or pipe.failure)  # (or in-band)
        if first_token and failure is None:  # the whole answer came in one read, with its end
            ex.first_token = perf_counter()
        out = held + out  # (held: nothing was read)
        out += pipe.fail(failure) if failure is not None else pipe.close()
        if failure is not None and failure.code == "client_timeout":
            with trio.CancelScope(shield=True):  # its connection is closed: store, tell nobody
                await self.finish(turn)
            return
        if turn.background:
            # the event log is the client: all but the terminal event (and the error before it)
            # go in before the final status is stored, so a crash between the two leaves a log
            # that lacks only its end, which follow() adds from the stored status
            cut = len(out) - 1
            if cut > 0 and type(out[cut - 1]) is R.ErrorEvent:
                cut -= 1
            await emit(out[:cut])
            out = out[cut:]
        if persists(turn):  # (a shielded scope costs ~5 us: none for a turn nothing stores)
            with trio.CancelScope(shield=True):
                await self.finish(turn)
        await emit(out)

    async def fail_before_stream(self, turn: Turn, err: ApiError, emit: Emit) -> None:
        """A run that could not reach its upstream (background runs): created, then failed."""
        pipe = turn.pipeline
        await emit(pipe.start())
        out = pipe.fail(UpstreamError(message=err.message, type=err.type, code=err.code, param=err.param))
        with trio.CancelScope(shield=True):
            await self.finish(turn)
        await emit(out)

    async def collect(self, turn: Turn, resp: httpx.Response) -> Response:
        """Non-streaming: the same pipeline, returning the final Response object."""

        async def sink(_events: list) -> None:
            pass

        await self.pump(turn, resp, sink)
        return turn.pipeline.response
