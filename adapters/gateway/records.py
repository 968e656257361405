"""The stored record of a response being produced, and the lease it is produced under.

A response produced with ``store: true`` (a background run, or a foreground stream) is durable:
it is recorded ``in_progress`` under a lease of this process (``owner``) when it starts, its
stored output is brought up to date as each output item completes, and it is stored final before
its client hears the end. A process that dies leaves leases that run out (reaper.py).
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from respline.adapters.gateway.turn import Turn
from respline.adapters.watch import CANCELLED
from respline.engine.store import RunLease, Store, StoredResponse
from respline.engine.translate import response_builtins
from respline.engine.wire.responses import Response


class Records:
    """The gateway's response records and leases (a part of ``Gateway``): the store, this
    process's lease owner id and how long a lease lasts."""

    store: Store
    owner: str
    lease_seconds: float

    async def finish(self, turn: Turn) -> None:
        """Persist what the client is about to be told exists: the response and conversation.
        A cancelled run is stored ``cancelled`` (its events end in ``response.failed``)."""
        if not persists(turn):
            return
        resp = turn.pipeline.response
        if turn.store:
            body = response_builtins(resp)
            if turn.stop is CANCELLED:
                body["status"], body["error"] = "cancelled", None
            # final, and its lease ended, in one write: the one round trip the terminal event waits for
            await self.store.put_response(_stored(turn, resp, body), release=turn.leased)
            turn.leased = False
        await self.end_lease(turn)
        if turn.conversation_id is not None and resp.status != "failed":
            output = [msgspec.to_builtins(item) for item in turn.pipeline.output]
            await self.store.add_conversation_items(turn.tenant, turn.conversation_id, turn.stored_input + output)

    # -- leases: a crash never leaves a response in_progress ---------------------------------

    async def begin_record(self, turn: Turn, status: str = "in_progress") -> dict[str, Any]:
        """Record the response under a lease of this process, both in one write (a record
        without its lease would never end)."""
        lease = RunLease(turn.tenant, turn.pipeline.response.id, self.owner, time.time() + self.lease_seconds)
        body = await self.record_status(turn, status, lease=lease)
        turn.leased = True
        return body

    async def end_lease(self, turn: Turn) -> None:
        if turn.leased:
            turn.leased = False
            await self.store.end_lease(turn.tenant, turn.pipeline.response.id)

    async def renew_leases(self) -> None:
        await self.store.renew_leases(self.owner, time.time() + self.lease_seconds)

    async def record_status(
        self, turn: Turn, status: str, *, lease: RunLease | None = None, progress: bool = False
    ) -> dict[str, Any]:
        """Write the response as it stands (queued, in progress, with its output so far), with
        the lease it starts under (``begin_record``); ``progress``: a later write supersedes it."""
        resp = msgspec.structs.replace(turn.pipeline.response, status=status)
        body = response_builtins(resp)
        body["output"] = [msgspec.to_builtins(item) for item in turn.pipeline.output]
        await self.store.put_response(_stored(turn, resp, body), lease=lease, progress=progress)
        return body


def persists(turn: Turn) -> bool:
    """``finish`` has something to write for the turn."""
    return turn.store or turn.leased or turn.conversation_id is not None


def _stored(turn: Turn, resp: Response, body: dict[str, Any]) -> StoredResponse:
    """The turn's response ``resp`` as stored, ``body`` its stored form."""
    return StoredResponse(
        tenant=turn.tenant,
        id=resp.id,
        response=body,
        input_items=turn.stored_input,
        previous_response_id=turn.previous_response_id,
        created_at=resp.created_at,
        background=turn.background,
    )
