"""Background runs: ``background: true`` responses that outlive their request.

Each run is a task in a server-level nursery (nothing runs detached). Its events are stored as
they happen, so ``GET /v1/responses/{id}`` polls it and ``?stream=true&starting_after=N`` follows
or resumes it, from this process or another one sharing the SQLite file. Its stored response
is kept current (status, the output items completed so far) under this process's lease, so a
run whose process dies is ended as failed by another (``Gateway.reap``).

A run is cancelled by ``POST /v1/responses/{id}/cancel`` (here, or by any process through the
stored status, which each run watches: woken by the store's signal where it has one): it is cut like a stream (adapters/watch.py), its event
log ends with ``error`` + ``response.failed`` and it is stored ``cancelled`` with its output. At
shutdown runs get the grace period, then are cut and stored failed with what they produced.
"""

from __future__ import annotations

import logging

import trio

from respline.adapters import logs
from respline.adapters.exchange import Exchange, new_request_id
from respline.adapters.gateway import Gateway
from respline.adapters.gateway.event_log import TERMINAL_STATUSES, stored_event
from respline.adapters.gateway.turn import Turn
from respline.adapters.watch import CANCELLED
from respline.engine.errors import ApiError

log = logging.getLogger("respline.background")

# seconds between looks at a run's stored status where the store signals its writes: the signal
# is what stops a run cancelled elsewhere; this only covers a notice lost with its connection
STATUS_BACKSTOP = 5.0


class _Run:
    __slots__ = ("turn", "done")

    def __init__(self, turn: Turn) -> None:
        self.turn = turn
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
        """Own the nursery the runs live in (until cancelled by the server)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    async def wait_all(self) -> None:
        """Until every run has ended (at shutdown each ends by itself or at the cut)."""
        while self._runs:
            await next(iter(self._runs.values())).done.wait()

    def live_ids(self) -> list[str]:
        return list(self._runs)

    # -- starting ------------------------------------------------------------------------

    async def start(self, turn: Turn, request_id: str | None = None) -> dict:
        """Lease and record the response as queued, and start it; returns the queued body.
        The run logs a request line of its own when it ends (``request_id``, mode background)."""
        if self._nursery is None or self.gateway.watch.stopping is not None:
            raise ApiError(503, "Background runs are not available on this server now.", code="background_unavailable")
        body = await self.gateway.begin_record(turn, "queued")
        ex = Exchange(request_id or new_request_id(None), "POST", "/v1/responses", mode="background")
        ex.tenant = turn.tenant
        ex.model = turn.req.model if turn.req is not None else None
        turn.exchange = ex
        self._state("queued", +1)
        run = _Run(turn)
        self._runs[body["id"]] = run
        self._nursery.start_soon(self._run, run)
        return body

    async def _run(self, run: _Run) -> None:
        gw = self.gateway
        turn = run.turn
        rid = turn.pipeline.response.id
        ex = turn.exchange
        token = logs.request_id.set(ex.request_id) if ex is not None else None
        self._state("queued", -1)
        self._state("in_progress", +1)
        try:
            with gw.telemetry.streaming("background"):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._watch_cancel, turn)
                    await gw.record_status(turn, "in_progress")

                    async def emit(events: list) -> None:
                        if events:
                            await gw.store.append_events(turn.tenant, rid, [stored_event(e) for e in events])
                            self._wake(rid)

                    try:
                        upstream = await gw.open_upstream(turn)
                    except ApiError as err:
                        if ex is not None:
                            ex.error = err.code
                        await gw.fail_before_stream(turn, err, emit)
                    else:
                        await gw.pump(turn, upstream, emit)
                    nursery.cancel_scope.cancel()
        except Exception:  # noqa: BLE001 - a run's fault must not take the server down
            log.exception("background run %s failed", rid)
            with trio.CancelScope(shield=True):
                await gw.record_status(turn, "failed")
                await gw.end_lease(turn)
        finally:
            self._state("in_progress", -1)
            self._runs.pop(rid, None)
            run.done.set()
            self._wake(rid)
            if ex is not None:
                ex.status = 200
                ex.absorb(turn)
                status = turn.pipeline.response.status
                if gw.telemetry.metrics is not None:
                    gw.telemetry.metrics.background_runs_ended.labels(status).inc()
                gw.telemetry.end(ex)
            if token is not None:
                logs.request_id.reset(token)

    def _state(self, state: str, change: int) -> None:
        m = self.gateway.telemetry.metrics
        if m is not None:
            m.background_runs.labels(state).inc(change)

    async def _watch_cancel(self, turn: Turn) -> None:
        """Another process may cancel this run by writing its status. Where the store signals
        writes of a response (PostgreSQL: a NOTIFY from whichever host wrote it) the status is
        read when one arrives, so a cancel sent to another host stops the run within a round
        trip or two, and otherwise every ``STATUS_BACKSTOP`` seconds; without a signal (SQLite
        shared by workers) every ``watch_interval``."""
        rid = turn.pipeline.response.id
        wait_status = getattr(self.gateway.store, "wait_status", None)
        while True:
            if wait_status is not None:
                await wait_status(rid, STATUS_BACKSTOP)
            else:
                await trio.sleep(self.watch_interval)
            stored = await self.gateway.store.get_response(turn.tenant, rid)
            if stored is None or stored.response.get("status") == "cancelled":
                self.gateway.watch.cut(turn, CANCELLED)
                return

    # -- cancelling and following --------------------------------------------------------

    async def cancel(self, tenant: str, response_id: str) -> None:
        run = self._runs.get(response_id)
        if run is not None and run.turn.tenant == tenant:
            self.gateway.watch.cut(run.turn, CANCELLED)
            await run.done.wait()
            return
        # not ours: mark it; the process running it sees the status and stops. Until it does, its
        # progress writes (one per completed output item) may put the status back: mark it again.
        # The store's signal (where it has one) wakes this as soon as the run logs its end.
        store = self.gateway.store
        wait_events = getattr(store, "wait_events", None)
        with trio.move_on_after(5 * self.watch_interval + 1):
            while True:
                stored = await store.get_response(tenant, response_id)
                status = stored.response.get("status") if stored is not None else None
                if status is None or (status in TERMINAL_STATUSES and status != "cancelled"):
                    return
                if status != "cancelled":
                    stored.response["status"] = "cancelled"
                    await store.put_response(stored)
                elif await self._ended(tenant, response_id):
                    return
                if wait_events is not None:
                    await wait_events(response_id, self.watch_interval / 2)
                else:
                    await trio.sleep(self.watch_interval / 2)

    async def _ended(self, tenant: str, response_id: str) -> bool:
        """The run's own process logged its end (it stored ``cancelled`` before that)."""
        events = await self.gateway.store.get_events(tenant, response_id, -1)
        return bool(events) and events[-1].type in ("response.failed", "response.completed", "response.incomplete")

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
