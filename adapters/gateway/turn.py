"""One turn in flight: what a validated request carries from preparation to its last event.

Every part of the gateway (adapters/gateway/) reads and writes this one object; it holds no
logic (``stored_input`` is only made when first read), so a change to how a turn is prepared,
sent, streamed or stored changes no other part.
"""

from __future__ import annotations

import math
from typing import Any, Awaitable, Callable

import trio

from respline.adapters.exchange import Exchange
from respline.engine.deltas import UpstreamError
from respline.engine.items import normalise

# where a turn's frames (or events) go: the front end's writer, a background run's event log
Emit = Callable[[list], Awaitable[None]]


class Turn:
    """Everything one request needs once it has been validated."""

    __slots__ = (
        "req",
        "previous_response_id",
        "background",
        "tenant",
        "_stored_input",  # (the stored_input property)
        "typed_input",
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
        self._stored_input: list[dict[str, Any]] | None = None
        self.typed_input: tuple = ((), None)  # (input items, Ids): what stored_input is made of

    @property
    def stored_input(self) -> list[dict[str, Any]]:
        """The input items as stored and listed (engine/items.py), made when first asked for:
        not before the upstream call, and never for a turn nothing stores (``store: false``
        over HTTP, as Codex sends it: ~60 items, each given an id, then dropped)."""
        if self._stored_input is None:
            items, ids = self.typed_input
            self._stored_input = [normalise(it, ids) for it in items]
            self.typed_input = ((), None)
        return self._stored_input

    @stored_input.setter
    def stored_input(self, value: list[dict[str, Any]]) -> None:
        self._stored_input = value
        self.typed_input = ((), None)
