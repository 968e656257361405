"""Optional OpenTelemetry traces: one span per request, the upstream call as its child.

Installed with ``pip install 'respline[otel]'``; without it nothing here is imported by the
server. Switched on when the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set: spans go out over OTLP/HTTP in batches.

The request span starts when the request arrives, as a child of the client's ``traceparent``
when it sent one, and its context goes upstream in ``traceparent``. The upstream span is made
when the request ends, from the times the request recorded (no span object lives per token).
Attributes follow the GenAI semantic conventions (``gen_ai.request.model``,
``gen_ai.usage.input_tokens``, ...).
"""

from __future__ import annotations

import os
import time
from typing import Any

_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def _ns(perf: float, anchor: tuple[float, int]) -> int:
    """A perf_counter reading as wall-clock nanoseconds (OTel wants epoch times)."""
    return anchor[1] + int((perf - anchor[0]) * 1e9)


class Tracer:
    def __init__(self, provider: Any) -> None:
        from opentelemetry import propagate, trace

        self._trace = trace
        self._propagate = propagate
        self._tracer = provider.get_tracer("respline")
        self._provider = provider

    def start(self, ex: Any, headers: dict[str, str]) -> None:
        """The request's span, under the client's trace context when it sent one."""
        parent = self._propagate.extract(headers) if "traceparent" in headers else None
        ex.span = self._tracer.start_span(
            f"{ex.method} {ex.route}",
            context=parent,
            kind=self._trace.SpanKind.SERVER,
            attributes={"http.request.method": ex.method, "url.path": ex.path, "respline.request_id": ex.request_id},
        )

    def inject(self, ex: Any, headers: Any) -> None:
        """``traceparent`` (and ``tracestate``) of the request span, for the upstream call."""
        if ex.span is None:
            return
        carrier: dict[str, str] = {}
        self._propagate.inject(carrier, context=self._trace.set_span_in_context(ex.span))
        for k, v in carrier.items():
            headers[k] = v

    def end(self, ex: Any) -> None:
        span = ex.span
        ex.span = None
        anchor = (time.perf_counter(), time.time_ns())
        attrs: dict[str, Any] = {"http.response.status_code": ex.status or 0, "respline.mode": ex.mode}
        if ex.model is not None:
            attrs["gen_ai.request.model"] = ex.model
            attrs["gen_ai.operation.name"] = "chat"
        if ex.response_id is not None:
            attrs["gen_ai.response.id"] = ex.response_id
        if ex.input_tokens is not None:
            attrs["gen_ai.usage.input_tokens"] = ex.input_tokens
            attrs["gen_ai.usage.output_tokens"] = ex.output_tokens or 0
        if ex.error is not None:
            attrs["error.type"] = ex.error
        span.set_attributes(attrs)
        if ex.provider is not None and ex.upstream_start is not None:
            child = self._tracer.start_span(
                f"chat {ex.upstream_model}",
                context=self._trace.set_span_in_context(span),
                kind=self._trace.SpanKind.CLIENT,
                start_time=_ns(ex.upstream_start, anchor),
                attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": ex.provider,
                    "gen_ai.request.model": ex.upstream_model or "",
                    "gen_ai.response.model": ex.upstream_model or "",
                    **({"gen_ai.usage.input_tokens": ex.input_tokens} if ex.input_tokens is not None else {}),
                    **({"gen_ai.usage.output_tokens": ex.output_tokens or 0} if ex.input_tokens is not None else {}),
                    **({"error.type": ex.error} if ex.error is not None else {}),
                },
            )
            child.end(end_time=_ns(ex.ended or time.perf_counter(), anchor))
        if ex.error is not None or (ex.status or 0) >= 500:
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, ex.error or ""))
        span.end(end_time=_ns(ex.ended or time.perf_counter(), anchor))

    def shutdown(self) -> None:
        shutdown = getattr(self._provider, "shutdown", None)
        if shutdown is not None:
            shutdown()


def from_environment() -> Tracer | None:
    """A tracer exporting over OTLP/HTTP when the standard endpoint variable is set and the
    ``otel`` extra is installed; otherwise None (and nothing of OpenTelemetry is imported)."""
    if not any(os.environ.get(v) for v in _ENDPOINT_VARS):
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        import logging

        logging.getLogger("respline").warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed: pip install 'respline[otel]'"
        )
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "respline")}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return Tracer(provider)
