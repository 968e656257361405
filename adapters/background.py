"""Background runs: ``background: true`` responses that outlive their request.

Each run is a task in a server-level nursery (nothing runs detached). Its events are stored as
they happen, so ``GET /v1/responses/{id}`` polls it and ``?stream=true&starting_after=N`` follows
or resumes it, from this process or another one sharing the SQLite file. A run is cancelled by
``POST /v1/responses/{id}/cancel`` (here, or by any process through the stored status, which each
run watches) and by shutdown after a grace period; either way its final status is recorded.
"""

from __future__ import annotations

import logging

import trio

from respline.adapters.gateway import TERMINAL_STATUSES, Gateway, Turn, stored_event
from respline.engine.errors import ApiError

log = logging.getLogger("respline.background")


class _Run:
    __slots__ = ("turn", "scope", "done")

    def __init__(self, turn: Turn) -> None:
        self.turn = turn
        self.scope = trio.CancelScope()
        self.done = trio.Event()


class Runs:
    def __init__(self, gateway: Gateway, *, watch_interval: float = 0.5) -> None:
        self.gateway = gateway
        self.watch_interval = watch_interval
        self._nursery: trio.Nursery | None = None
        self._runs: dict[str, _Run] = {}
        self._wakeups: dict[str, trio.Event] = {}
        gateway.runs = self

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Own the nursery the runs live in; returns when every run has ended."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    async def shutdown(self, grace: float) -> None:
        """Let runs finish for ``grace`` seconds, then cancel the rest (each records its status)."""
        with trio.move_on_after(grace):
            for run in list(self._runs.values()):
                await run.done.wait()
        for run in list(self._runs.values()):
            run.scope.cancel()
        for run in list(self._runs.values()):
            await run.done.wait()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    # -- starting ------------------------------------------------------------------------

    async def start(self, turn: Turn) -> dict:
        """Record the response as queued and start it; returns the queued Response body."""
        if self._nursery is None:
            raise ApiError(503, "Background runs are not available on this server.", code="background_unavailable")
        body = await self.gateway.record_status(turn, "queued")
        run = _Run(turn)
        self._runs[body["id"]] = run
        self._nursery.start_soon(self._run, run)
        return body

    async def _run(self, run: _Run) -> None:
        gw = self.gateway
        turn = run.turn
        rid = turn.pipeline.response.id
        try:
            with run.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._watch_cancel, turn, run.scope)
                    await gw.record_status(turn, "in_progress")

                    async def emit(events: list) -> None:
                        if events:
                            await gw.store.append_events(turn.tenant, rid, [stored_event(e) for e in events])
                            self._wake(rid)

                    try:
                        upstream = await gw.open_upstream(turn)
                    except ApiError as err:
                        await gw.fail_before_stream(turn, err, emit)
                    else:
                        await gw.pump(turn, upstream, emit)
                    nursery.cancel_scope.cancel()
            if run.scope.cancelled_caught:
                with trio.CancelScope(shield=True):
                    await gw.record_status(turn, "cancelled", completed_at=None)
                    self._wake(rid)
        except Exception:  # noqa: BLE001 - a run's fault must not take the server down
            log.exception("background run %s failed", rid)
            with trio.CancelScope(shield=True):
                await gw.record_status(turn, "failed")
        finally:
            self._runs.pop(rid, None)
            run.done.set()
            self._wake(rid)

    async def _watch_cancel(self, turn: Turn, scope: trio.CancelScope) -> None:
        """Another process may cancel this run by writing its status; look now and then."""
        rid = turn.pipeline.response.id
        while True:
            await trio.sleep(self.watch_interval)
            stored = await self.gateway.store.get_response(turn.tenant, rid)
            if stored is None or stored.response.get("status") == "cancelled":
                scope.cancel()
                return

    # -- cancelling and following --------------------------------------------------------

    async def cancel(self, tenant: str, response_id: str) -> None:
        run = self._runs.get(response_id)
        if run is not None and run.turn.tenant == tenant:
            run.scope.cancel()
            await run.done.wait()
            return
        # not ours: mark it; the process running it sees the status and stops
        stored = await self.gateway.store.get_response(tenant, response_id)
        if stored is not None and stored.response.get("status") not in TERMINAL_STATUSES:
            stored.response["status"] = "cancelled"
            await self.gateway.store.put_response(stored)

    def _wake(self, response_id: str) -> None:
        ev = self._wakeups.pop(response_id, None)
        if ev is not None:
            ev.set()

    async def wait_for_events(self, response_id: str, timeout: float) -> None:
        ev = self._wakeups.get(response_id)
        if ev is None:
            ev = self._wakeups[response_id] = trio.Event()
        with trio.move_on_after(timeout):
            await ev.wait()
