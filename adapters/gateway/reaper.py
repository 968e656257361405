"""Ending the responses whose producing process died: their leases ran out (records.py).

Any process reaps, periodically; taking a lapsed lease is atomic, so one process ends each.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec
import trio

from respline.adapters.gateway.event_log import TERMINAL_STATUSES, TERMINAL_TYPES
from respline.adapters.watch import Watch
from respline.engine.deltas import UpstreamError
from respline.engine.store import Store

log = logging.getLogger("respline.gateway")

# lapsed leases taken per statement, orphans ended at once
REAP_BATCH = 25
REAP_PARALLEL = 8

# how a response whose producing process died (its lease ran out) ends
ORPHANED = UpstreamError(
    message="The server process producing this response stopped (it was killed or crashed) before the response finished.",
    type="server_error",
    code="server_error",
)


class Reaper:
    """The gateway's reaper (a part of ``Gateway``). It reads the store, this process's lease
    owner id, the turns in flight (the watch's) and the background runs (``runs``); a run's
    event log gets its end from ``close_log`` (event_log.py)."""

    store: Store
    owner: str
    lease_seconds: float
    watch: Watch
    runs: Any

    async def reap(self) -> int:
        """End the responses whose producing process died: take their lapsed leases (atomically,
        so one process ends each), store each as failed with the output it had, give a
        background run's event log its end (``error`` + ``response.failed``), drop the lease.
        A process that fails midway leaves the lease to lapse again and be retried.

        A dead host may leave hundreds: they are taken ``REAP_BATCH`` at a time (so the other
        hosts' reapers take their share meanwhile) and ended ``REAP_PARALLEL`` at once (each is
        a few store round trips: one after the other, 100 took over a second)."""
        ended = 0
        limiter = trio.CapacityLimiter(REAP_PARALLEL)
        while True:
            now = time.time()
            taken = await self.store.take_lapsed(now, self.owner, now + self.lease_seconds, REAP_BATCH)
            # a lease of this very process can lapse only if its renewals stalled: its live turns
            # go on, under the lease just taken back
            live = {turn.pipeline.response.id for turn in self.watch.active}
            if self.runs is not None:
                live.update(self.runs.live_ids())
            orphans = [lease for lease in taken if lease.response_id not in live]
            async with trio.open_nursery() as nursery:
                for lease in orphans:
                    nursery.start_soon(self._end_one, lease.tenant, lease.response_id, limiter)
            ended += len(orphans)
            if len(taken) < REAP_BATCH:
                return ended

    async def _end_one(self, tenant: str, response_id: str, limiter: trio.CapacityLimiter) -> None:
        async with limiter:
            try:
                await self._end_orphan(tenant, response_id)
            except Exception:  # noqa: BLE001 - one bad row must not stop the others
                log.exception("could not end orphaned response %s", response_id)

    async def _end_orphan(self, tenant: str, response_id: str) -> None:
        stored = await self.store.get_response(tenant, response_id)
        if stored is not None and stored.response.get("status") not in TERMINAL_STATUSES:
            log.warning("response %s: the server process producing it stopped; ending it as failed", response_id)
            if stored.background:
                events = await self.store.get_events(tenant, response_id, -1)
                ended = [ev for ev in events if ev.type in TERMINAL_TYPES]
                if ended:  # the log has its end: the stored status had not caught up
                    stored.response = msgspec.json.decode(ended[0].data)["response"]
                    await self.store.put_response(stored)
                else:
                    new, final = self.close_log(stored, events, ORPHANED)
                    stored.response = final
                    await self.store.put_response(stored)
                    await self.store.append_events(tenant, response_id, new)
            else:
                stored.response.update(
                    status="failed", error={"code": ORPHANED.code, "message": ORPHANED.message}, completed_at=None
                )
                await self.store.put_response(stored)
        await self.store.end_lease(tenant, response_id)
