"""One turn, front end independent: parse, route, translate, call the upstream, stream back.

The HTTP and WebSocket front ends both go through ``Gateway``. ``prepare_request`` does
everything that can fail with an error envelope before a byte is sent (validation, routing,
resolving stored context); ``open_upstream`` adds the upstream's own refusals (status, connect
errors, timeouts); ``pump`` streams the rest, where a failure can only be an ``error`` event and
``response.failed``. State (stored responses, conversations, background runs) goes through the
Store protocol.

``Gateway`` is the one object the front ends, the server and the tests hold; it is made of one
part per concern, each in its own module, sharing the gateway's state (config, providers,
store, sealer, ids, clock, watch, telemetry):

    turn.py           Turn: one request's state from preparation to its last event
    preparation.py    before any byte: validate, route, expand stored context, translate
                      (``prepare_request``; ``_prepare_attempt`` per provider of the route)
    upstream.py       send, wait for the status line, fall back, count how a call ended
    pump.py           the stream pump (``pump``, ``collect``, ``fail_before_stream``)
    records.py        the stored record of a response in progress and its lease
                      (``begin_record``, ``record_status``, ``finish``)
    reaper.py         ending the responses whose process died (``reap``)
    event_log.py      a background run's event log: ``follow``, ``close_log``
    compact.py        ``POST /v1/responses/compact``
    conversations.py  creating conversations and adding items
    secret.py         the server secret (``load_secret``)

A part calls another through ``self`` (the gateway), never directly: ``pump`` calls
``self.finish``, so what wraps ``Gateway.finish`` (bench/store_timing.py) sees every call.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from respline.adapters.config import Config, Router
from respline.adapters.exchange import Telemetry
from respline.adapters.gateway.compact import Compact
from respline.adapters.gateway.conversations import Conversations
from respline.adapters.gateway.event_log import EventLog
from respline.adapters.gateway.preparation import Preparation
from respline.adapters.gateway.pump import StreamPump
from respline.adapters.gateway.reaper import Reaper
from respline.adapters.gateway.records import Records
from respline.adapters.gateway.upstream import Upstream
from respline.adapters.watch import Watch, tick_for
from respline.engine.ids import Clock, Ids
from respline.engine.seal import Sealer
from respline.engine.store import Store


class Gateway(Preparation, Upstream, StreamPump, Records, Reaper, EventLog, Compact, Conversations):
    """The gateway: its state is set here, its behaviour is its parts' (the modules above)."""

    def __init__(
        self,
        cfg: Config,
        providers: dict[str, Any],  # name -> ChatProvider | AnthropicProvider | ResponsesProvider
        router: Router,
        store: Store,
        sealer: Sealer,
        ids: Ids | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.cfg = cfg
        self.providers = providers
        self.router = router
        self.store = store
        self.sealer = sealer
        self.ids = ids or Ids()
        self.clock = clock or Clock()
        self.dialect = cfg.server.reasoning_dialect
        self.runs = None  # adapters.background.Runs, set by the server
        limits = [cfg.timeouts.client_write]
        for t in [cfg.timeouts] + [p.timeouts for p in providers.values() if getattr(p, "timeouts", None) is not None]:
            limits += [t.first_byte, t.idle, t.total]
        self.watch = Watch(cfg.timeouts.client_write, tick_for(limits))
        # this process's lease owner id: unique per start, readable in the database
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"
        self.lease_seconds = cfg.store.lease_seconds
        self.telemetry = Telemetry(None)  # logs only; the server adds metrics and traces
        self.watch.on_timeout = self._timed_out

    def model_list(self) -> list[tuple[str, str]]:
        """Routable model names with their provider (config.Router.listed says how globs list)."""
        return self.router.listed(self.cfg.routes)


__all__ = ["Gateway"]
