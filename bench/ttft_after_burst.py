"""Time to first token at concurrency 1 after a burst and a pause: the TTFT outliers of
scenario 6 (bench/README.md, "The TTFT outliers at concurrency 1").

A burst of N paced streams leaves N idle upstream connections in respline's pool; after a pause
longer than ``[timeouts] pool_idle`` (30 s) they have all expired, and the next request meets
them. Each step of the plan runs a burst (``BURST`` streams, none when 0), waits ``PAUSE``
seconds, then runs ``--streams`` streams one after another and prints each one's TTFT, first
stream first. Respline as of ``--rev`` (default: this checkout).

    python bench/ttft_after_burst.py [--plan 128:35,128:5,128:35] [--streams 5] [--rev main]
"""

from __future__ import annotations

import argparse
import time

import run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--plan", default="128:35,128:5,128:35", help="BURST:PAUSE steps, comma-separated")
    p.add_argument("--streams", type=int, default=5, help="streams one after another after each pause")
    p.add_argument("--rev", default=None, help="respline as of this git revision")
    a = p.parse_args()
    b = run.Bench(argparse.Namespace(quick=False, respline=None, rev=a.rev, gc_thresholds=None, obs_off=False, paced_store=False))
    try:
        b.start_upstream()
        t = b.start_respline()
        body = t.stream_body(run.PACED_MODEL)
        run.fleet(b, t, {"driver": "closed", "workers": 4, "per_worker": 1, "stagger": 0.1, "body": body, **t.markers()})
        for step in a.plan.split(","):
            burst, pause = (float(x) for x in step.split(":"))
            if burst:
                run.fleet(b, t, {"driver": "closed", "workers": int(burst), "per_worker": 1, "stagger": 0.2,
                                 "source_ips": [f"127.0.0.{i}" for i in range(2, 10)], "body": body, **t.markers()})
            time.sleep(pause)
            r = run.fleet(b, t, {"driver": "closed", "workers": 1, "per_worker": a.streams, "body": body, **t.markers()})
            print(f"burst {burst:g}, pause {pause:g} s: TTFT ms " + " ".join(f"{x * 1000:.1f}" for x in r["ttft"]), flush=True)
    finally:
        b.close()


if __name__ == "__main__":
    main()
