"""One turn in flight: what a validated request carries from preparation to its last event.

Every part of the gateway (adapters/gateway/) reads and writes this one object; it holds no
logic, so a change to how a turn is prepared, sent, streamed or stored changes no other part.
"""

from __future__ import annotations

import math
from typing import Awaitable, Callable

import trio

from respline.adapters.exchange import Exchange
from respline.engine.deltas import UpstreamError

# where a turn's frames (or events) go: the front end's writer, a background run's event log
Emit = Callable[[list], Awaitable[None]]


class Turn:
    """Everything one request needs once it has been validated."""

    __slots__ = (
        "req",
        "previous_response_id",
        "background",
        "tenant",
        "stored_input",
        "provider",
        "route",
        "items",
        "attempt",
        "ctx",
        "upstream_body",
        "http_request",
        "payload",
        "pipeline",
        "store",
        "conversation_id",
        "template",
        "compact",
        "seeded",
        # in flight (adapters/watch.py): why it was cut, the scope a cut cancels, whether it is
        # writing to its client and since when, its upstream read limits, how to drop its client
        "stop",
        "scope",
        "writing",
        "since",
        "read_limit",
        "total_at",
        "close_client",
        "leased",  # this process holds the lease of its stored response
        "exchange",  # the request's record (adapters/exchange.py): log line, metrics, trace
        "answer",
    )

    def __init__(self) -> None:
        self.conversation_id: str | None = None
        self.compact = False  # the input ends with compaction_trigger (engine/compact_turn.py)
        self.seeded: list = []  # output items made before the upstream call (context_management)
        self.stop: UpstreamError | None = None
        self.scope: trio.CancelScope | None = None
        self.writing = False
        self.since = 0.0
        self.read_limit = math.inf
        self.total_at = math.inf
        self.close_client: Callable[[], None] | None = None
        self.leased = False
        self.exchange: Exchange | None = None
        self.answer = None  # Prepared.answer: reads an upstream's whole JSON answer as a stream
