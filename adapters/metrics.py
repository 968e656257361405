"""Prometheus metrics: what an operator of an agent fleet asks of a gateway.

Every instrument is touched once per request, upstream call or store operation, never per token,
so the cost per paced token stays where it was (bench/README.md measures it side by side).

Label values come from the config (route patterns, provider names) or from small fixed sets
(modes, outcomes, token kinds), never from what a client sent: a model no route matches counts
under ``UNROUTED``, so a client cannot grow the series without bound.

With ``--workers N`` every worker writes its numbers to files in one shared directory
(prometheus_client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``, set by the supervisor
before the workers start), and whichever worker answers ``GET /metrics`` reports the sum.
"""

from __future__ import annotations

import inspect
import os
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST

UNROUTED = "unrouted"  # the model label of a request no route matched
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# seconds: a cached answer is a few ms, a reasoning model may think for minutes
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_DURATION = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
_RATE = (1.0, 5.0, 10.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 500.0, 1000.0)
_STORE = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class Metrics:
    """The instruments, registered in a registry of their own (several apps in one test process
    must not collide in prometheus_client's global one)."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "respline_requests", "Requests answered, by route, status and mode.", ["route", "status", "mode"], registry=r
        )
        self.upstream_requests = Counter(
            "respline_upstream_requests",
            "Upstream calls by provider, outcome (ok, http_error, connect_error, timeout, stream_error, cancelled) and status.",
            ["provider", "outcome", "status"],
            registry=r,
        )
        self.open_streams = Gauge(
            "respline_open_streams", "Responses being produced now, by mode.", ["mode"], registry=r, multiprocess_mode="livesum"
        )
        self.websocket_connections = Gauge(
            "respline_websocket_connections", "Open WebSocket connections.", registry=r, multiprocess_mode="livesum"
        )
        self.ttfb = Histogram(
            "respline_time_to_first_byte_seconds",
            "From the request's arrival to the first byte written to the client, by model route.",
            ["model"],
            buckets=_LATENCY,
            registry=r,
        )
        self.ttft = Histogram(
            "respline_time_to_first_token_seconds",
            "From the request's arrival to the first output token written to the client, by model route.",
            ["model"],
            buckets=_LATENCY,
            registry=r,
        )
        self.duration = Histogram(
            "respline_request_duration_seconds",
            "Whole requests (WebSocket: whole turns), by model route and mode.",
            ["model", "mode"],
            buckets=_DURATION,
            registry=r,
        )
        self.tokens_per_second = Histogram(
            "respline_output_tokens_per_second",
            "Output tokens per second after the first token, by model route.",
            ["model"],
            buckets=_RATE,
            registry=r,
        )
        self.tokens = Counter(
            "respline_tokens",
            "Tokens by model route, provider and kind (input, cached, output, reasoning).",
            ["model", "provider", "kind"],
            registry=r,
        )
        self.fallbacks = Counter(
            "respline_fallbacks", "Fallbacks taken, from one provider to the next.", ["from_provider", "to_provider"], registry=r
        )
        self.timeouts = Counter(
            "respline_timeouts",
            "Deadlines that passed, by kind (connect, first_byte, idle, total, client_write, client_body).",
            ["kind"],
            registry=r,
        )
        self.client_disconnects = Counter(
            "respline_client_disconnects", "Clients that left before their answer ended, by mode.", ["mode"], registry=r
        )
        self.store_seconds = Histogram(
            "respline_store_operation_seconds",
            "Store operations by backend and operation.",
            ["backend", "operation"],
            buckets=_STORE,
            registry=r,
        )
        self.background_runs = Gauge(
            "respline_background_runs",
            "Background runs of this server by state (queued, in_progress).",
            ["state"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.background_runs_ended = Counter(
            "respline_background_runs_ended",
            "Background runs that ended, by final state (completed, incomplete, failed, cancelled).",
            ["state"],
            registry=r,
        )

        for metric in (self.requests, self.upstream_requests, self.open_streams, self.ttfb, self.ttft, self.duration,
                       self.tokens_per_second, self.tokens, self.fallbacks, self.timeouts, self.client_disconnects,
                       self.store_seconds, self.background_runs, self.background_runs_ended):
            _remember_children(metric)

    def exposition(self) -> bytes:
        """The text format: this process's numbers, or every worker's summed."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)
        return generate_latest(merged)

    content_type = CONTENT_TYPE_LATEST

    def names(self) -> set[str]:
        """Every sample name this process exports (the dashboard test checks its queries)."""
        out: set[str] = set()
        for metric in self.registry.collect():
            for sample in metric.samples:
                out.add(sample.name)
        return out


def _remember_children(metric: Any) -> None:
    """``metric.labels(...)`` answered from a dict after the first call with the same values.

    prometheus_client checks the label count, turns each value into a string and takes a lock on
    every ``labels`` call; a request makes about ten of them. Label values are bounded (module
    docstring), so the dict is too, and it holds the very child ``labels`` returned (the
    registry keeps the same one), so what is counted does not change."""
    labels = metric.labels
    children: dict[tuple, Any] = {}

    def remembered(*values: Any, **named: Any) -> Any:
        if named:
            return labels(*values, **named)
        child = children.get(values)
        if child is None:
            child = children[values] = labels(*values)
        return child

    metric.labels = remembered


class TimedStore:
    """The store with each operation's latency observed; everything else passes through."""

    def __init__(self, store: Any, metrics: Metrics, backend: str) -> None:
        self._store = store
        self._hist = metrics.store_seconds
        self._backend = backend

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        # wait_events / wait_status wait for another host's writes (PostgreSQL): not operations
        if name.startswith(("_", "wait_")) or name == "aclose" or not inspect.iscoroutinefunction(attr):
            return attr
        child = self._hist.labels(self._backend, name)

        async def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await attr(*args, **kwargs)
            finally:
                child.observe(time.perf_counter() - start)

        setattr(self, name, timed)  # built once per operation; later lookups find it directly
        return timed


def mark_worker_dead(pid: int) -> None:
    """A worker ended: its live gauges leave the sum (multiprocess mode only)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
