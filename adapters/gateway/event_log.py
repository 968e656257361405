"""A background run's event log: following it live, and closing one that lacks its end.

A run's events are stored as they are produced (adapters/background.py); its final status is
stored just before its terminal event is logged, so a log can lack only its end, which
``close_log`` makes from the stored status (for a follower, or for the reaper).
"""

from __future__ import annotations

from typing import Any, Iterable

import msgspec
import trio

from respline.adapters.watch import CANCELLED
from respline.engine.deltas import UpstreamError
from respline.engine.ids import Clock, Ids
from respline.engine.pipeline import responses_pipeline
from respline.engine.stages.sse import frame
from respline.engine.store import Store, StoredEvent, StoredResponse
from respline.engine.translate import response_builtins
from respline.engine.wire.responses import TERMINAL_TYPES, Response, encode_event, type_of

_json = msgspec.json.Encoder()

TERMINAL_STATUSES = frozenset({"completed", "incomplete", "failed", "cancelled"})


class EventLog:
    """The gateway's event logs (a part of ``Gateway``): the store, and this process's wakeups
    (``runs``: adapters/background.py) where the store has no signal of its own."""

    store: Store
    runs: Any
    ids: Ids
    clock: Clock
    dialect: str

    def close_log(
        self, stored: StoredResponse, events: list[StoredEvent], end: UpstreamError | None
    ) -> tuple[list[StoredEvent], dict[str, Any]]:
        """What a run's event log lacks to be a whole stream, and the Response it ends with.

        The log is replayed through a Responses-API normaliser (the stage that takes a Responses
        stream from an upstream), which closes whatever the log left open; then it is ended:
        ``end`` None ends it as stored (completed or incomplete), else ``error`` +
        ``response.failed``. The new events are numbered after the log."""
        base = {k: v for k, v in stored.response.items() if k not in _FINAL_KEYS}
        template = msgspec.convert(base, Response)
        pipe = responses_pipeline(template, self.ids, self.clock, encoding=None, reasoning_dialect=self.dialect)
        opening = pipe.start()
        pipe.feed(stored_frames(ev for ev in events if ev.type not in TERMINAL_TYPES and ev.type != "error"))
        if end is not None:
            tail = pipe.fail(end)
        else:
            kind = "response.incomplete" if stored.response.get("status") == "incomplete" else "response.completed"
            terminal = _json.encode({"type": kind, "response": stored.response})
            tail = pipe.feed(frame(terminal, kind.encode())) + pipe.close()
        new = tail if events else opening + tail
        seq = events[-1].seq if events else -1
        for ev in new:
            seq += 1
            ev.sequence_number = seq
        return [stored_event(ev) for ev in new], response_builtins(pipe.response)

    async def follow(self, tenant: str, response_id: str, after: int):
        """Batches of a background run's stored events after ``after``, live until it ends.

        A run whose stored status is final but whose log has no terminal event (it was cancelled
        by another process, or its process died between storing the end and logging it) gets
        its end from the stored status (``close_log``), logged for the next follower too."""
        wait_events = getattr(self.store, "wait_events", None)
        settle_by = None
        while True:
            events = await self.store.get_events(tenant, response_id, after)
            if events:
                end = next((n for n, ev in enumerate(events) if ev.type in TERMINAL_TYPES), None)
                if end is not None:
                    yield events[: end + 1]
                    return
                yield events
                after = events[-1].seq
                continue
            stored = await self.store.get_response(tenant, response_id)
            if stored is None:
                return
            if stored.response.get("status") in TERMINAL_STATUSES:
                # the log has its end already (logged since the read above, or this follower
                # started at or past it): what is left of it, at once
                log_all = await self.store.get_events(tenant, response_id, -1)
                end = next((n for n, ev in enumerate(log_all) if ev.type in TERMINAL_TYPES), None)
                if end is not None:
                    rest = [ev for ev in log_all[: end + 1] if ev.seq > after]
                    if rest:
                        yield rest
                    return
                # the final status is stored just before the terminal event is logged (by this
                # process or another host): give that 2 s to land before ending the log here
                if settle_by is None:
                    settle_by = trio.current_time() + 2.0
                if trio.current_time() < settle_by:
                    await self._wait_events(wait_events, response_id)
                    continue
                new, _ = self.close_log(stored, log_all, _end_of(stored.response))
                await self.store.append_events(tenant, response_id, new)
                yield [ev for ev in new if ev.seq > after]
                return
            await self._wait_events(wait_events, response_id)

    async def _wait_events(self, wait_events, response_id: str) -> None:
        """Until events of the response may have arrived: the store's own signal where it has
        one (PostgreSQL: any host's write), else this process's wakeups, else a short sleep."""
        if wait_events is not None:
            await wait_events(response_id, 0.5)
        elif self.runs is not None:
            await self.runs.wait_for_events(response_id, 0.25)
        else:
            await trio.sleep(0.25)


def stored_event(event: Any) -> StoredEvent:
    return StoredEvent(event.sequence_number, type_of(event), encode_event(event))


def stored_frames(events: Iterable[StoredEvent]) -> bytes:
    """Stored events as the SSE frames they were (a follower's stream, a log replayed)."""
    return b"".join(frame(ev.data, ev.type.encode()) for ev in events)


# the keys of a Response that only its end sets (close_log's template leaves them out)
_FINAL_KEYS = frozenset({"output", "status", "error", "incomplete_details", "completed_at", "usage"})


def _end_of(response: dict[str, Any]) -> UpstreamError | None:
    """How a response stored as final ends its stream: None (completed, incomplete: as stored),
    or the error of a failed or cancelled one."""
    status = response.get("status")
    if status == "cancelled":
        return CANCELLED
    if status == "failed":
        err = response.get("error") or {}
        return UpstreamError(message=err.get("message") or "The response failed.", code=err.get("code") or "server_error")
