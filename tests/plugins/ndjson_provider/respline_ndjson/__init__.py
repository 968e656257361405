"""The ``ndjson`` provider kind: an upstream that streams one JSON object per line.

A test plug-in, written only through respline's provider registry (engine/registry.py): nothing
in respline names it. Its upstream (``POST {base_url}/generate``) takes a Chat Completions body
and answers ``application/x-ndjson``, one object per line::

    {"text": "Hel"}
    {"thinking": "the user greets me"}
    {"call": {"id": "c1", "name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}}
    {"done": "stop", "usage": {"input": 10, "output": 5}}      # stop | length | tool
    {"error": {"message": "overloaded", "code": "overloaded"}}

and refuses a request with ``{"error": {"message": ...}}`` and a 4xx/5xx status.
"""

from __future__ import annotations

from respline_ndjson.provider import NdjsonConfig, NdjsonProvider, ndjson_error, ndjson_pipeline
from respline.engine.registry import ProviderKind

KIND = ProviderKind(
    "ndjson",
    config=NdjsonConfig,
    provider=NdjsonProvider,
    pipeline=ndjson_pipeline,
    error=ndjson_error,
)
