"""``respline serve`` with the store's share of each stored response timed (bench scenario 5).

    python bench/store_timing.py serve ARGS...     # as `respline serve ARGS...`

The server is respline itself, unchanged but for three methods of its Gateway wrapped with a
clock: ``finish`` (the writes a ``store: true`` response awaits between its last upstream read
and its terminal event: the final response, the lease's end, conversation items), ``begin_record``
(before its first event: the lease and the in_progress record) and ``record_status`` (mid-stream,
each time an output item completes). At exit the durations, in seconds and in the order they
ended, are written as JSON to the file named by ``$BENCH_STORE_TIMES``:
``{"finish": [[end, seconds], ...], "begin": [...], "progress": [...]}``, ``end`` in unix seconds
(the bench picks each phase's by time).
"""

from __future__ import annotations

import contextvars
import json
import os
import sys
import time

from respline.adapters import cli
from respline.adapters import gateway

TIMES: dict[str, list[tuple[float, float]]] = {"finish": [], "begin": [], "progress": []}
_inside = contextvars.ContextVar("inside", default=False)  # begin_record's own record_status


def timed(name: str, method: str) -> None:
    original = getattr(gateway.Gateway, method, None)
    if original is None:  # an older respline (bench --rev) without it: not measured
        return
    out = TIMES[name]

    async def wrapper(self, *args, **kwargs):
        if _inside.get():  # counted by the call around it
            return await original(self, *args, **kwargs)
        token = _inside.set(True)
        t0 = time.perf_counter()
        try:
            return await original(self, *args, **kwargs)
        finally:
            out.append((time.time(), time.perf_counter() - t0))
            _inside.reset(token)

    setattr(gateway.Gateway, method, wrapper)


def main() -> int:
    timed("finish", "finish")
    timed("begin", "begin_record")
    timed("progress", "record_status")
    try:
        return cli.main(sys.argv[1:])
    finally:
        path = os.environ.get("BENCH_STORE_TIMES")
        if path:
            with open(path, "w") as f:
                json.dump({k: [(round(end, 4), round(d, 7)) for end, d in vs] for k, vs in TIMES.items()}, f)


if __name__ == "__main__":
    sys.exit(main())
