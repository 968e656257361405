"""The PostgreSQL store's write a stored response waits for before its terminal event, one at a time.

    python bench/store_write.py [--dsn DSN] [--n 400] [--gap 0.01] [--concurrency 1] [--floor]

Against a fresh schema (dropped after): each response is written as a stream writes it, first
``in_progress`` under a lease (``begin_record``), then, ``--gap`` seconds later, final with its lease
released (``finish``): the second write is timed, on the trio thread, as ``Gateway.finish`` awaits
it. ``--concurrency``: that many such writers at once. Prints p50/p90/p99 in ms. Which respline it
times is the one Python imports: to compare with another checkout, run it with that checkout's
interpreter (or ``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Awaitable, Callable
from urllib.parse import quote

import psycopg
import trio

from respline.adapters.stores import pgtrio
from respline.adapters.stores.postgres import PostgresStore
from respline.engine.store import RunLease, StoredResponse

PROMPT = "Write a long story about a gateway."


def response(rid: str, status: str) -> dict:
    """A Response object of the size scenario 5's streams store (20 tokens of text)."""
    return {
        "id": rid, "object": "response", "created_at": int(time.time()), "status": status, "background": False,
        "error": None, "incomplete_details": None, "instructions": None, "max_output_tokens": None, "model": "bench-n20-r10",
        "output": [] if status == "in_progress" else [{
            "id": "msg_" + rid[5:], "type": "message", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": " ".join(["token"] * 20), "annotations": [], "logprobs": []}],
        }],
        "parallel_tool_calls": True, "previous_response_id": None, "reasoning": {"effort": None, "summary": None},
        "store": True, "temperature": 1.0, "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [],
        "top_p": 1.0, "truncation": "disabled", "usage": None, "user": None, "metadata": {},
    }


def stored(rid: str, status: str) -> StoredResponse:
    items = [{"id": "msg_in" + rid[5:], "type": "message", "role": "user", "content": [{"type": "input_text", "text": PROMPT}]}]
    return StoredResponse("bench", rid, response(rid, status), items, created_at=int(time.time()))


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] * 1000


async def paced(n: int, gap: float, concurrency: int, write: Callable[[int], Awaitable[float]]) -> list[float]:
    """``write(i)`` ``n`` times in all, from ``concurrency`` writers started spread over ``gap``
    (as paced streams are); each write waits ``gap`` before the part it times, and returns
    that part's seconds."""
    times: list[float] = []

    async def writer(k: int) -> None:
        await trio.sleep(gap * k / concurrency)
        for i in range(n // concurrency):
            times.append(await write(i))

    async with trio.open_nursery() as nursery:
        for k in range(concurrency):
            nursery.start_soon(writer, k)
    return times


async def measure(store: PostgresStore, n: int, gap: float, concurrency: int) -> list[float]:
    """A stream's two writes: in progress under a lease, then, ``gap`` later, final (timed)."""

    async def write(_i: int) -> float:
        rid = "resp_" + os.urandom(8).hex()
        await store.put_response(stored(rid, "in_progress"), lease=RunLease("bench", rid, "me", time.time() + 30))
        await trio.sleep(gap)
        t0 = time.perf_counter()
        await store.put_response(stored(rid, "completed"), release=True)
        return time.perf_counter() - t0

    return await paced(n, gap, concurrency, write)


_FLOOR = pgtrio.Statement("bench_floor_insert", "INSERT INTO floor_rows (n) VALUES (%(n)s)", n=pgtrio.INT8)


async def measure_floor(conns: pgtrio.Connections, n: int, gap: float, concurrency: int) -> list[float]:
    """``measure``'s pace and timing around the smallest durable write: one row, one commit."""

    async def write(i: int) -> float:
        await trio.sleep(gap)
        t0 = time.perf_counter()
        conn = await conns.take()
        try:
            await conn.run(_FLOOR, (i,))
        finally:
            conns.give(conn)
        return time.perf_counter() - t0

    return await paced(n, gap, concurrency, write)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dsn", default=os.environ.get("RESPLINE_TEST_PG_DSN") or "postgresql://postgres@127.0.0.1:5432/test")
    p.add_argument("--n", type=int, default=400)
    p.add_argument("--gap", type=float, default=0.01)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--floor", action="store_true", help="also time a one-row durable INSERT at the same pace")
    args = p.parse_args()
    schema = "bench_" + os.urandom(5).hex()
    with psycopg.connect(args.dsn, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        admin.execute(f"CREATE TABLE {schema}.floor_rows (n bigint NOT NULL)")
    floor: list[float] = []
    try:
        sep = "&" if "?" in args.dsn else "?"
        dsn = f"{args.dsn}{sep}options={quote('-csearch_path=' + schema, safe='')}"
        store = PostgresStore(dsn)

        async def run() -> list[float]:
            await measure(store, 40, args.gap, args.concurrency)  # warm-up
            times = await measure(store, args.n, args.gap, args.concurrency)
            await store.aclose()
            if args.floor:
                conns = pgtrio.Connections(dsn, {}, [_FLOOR], args.concurrency)
                conns.keep(conns.connect())
                await measure_floor(conns, 40, args.gap, args.concurrency)
                floor.extend(await measure_floor(conns, args.n, args.gap, args.concurrency))
                conns.close()
            return times

        times = trio.run(run)
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")
    print(f"p50 {pct(times, 50):.3f} p90 {pct(times, 90):.3f} p99 {pct(times, 99):.3f} ms ({len(times)} writes)")
    if floor:
        print(f"floor (one-row INSERT, committed): p50 {pct(floor, 50):.3f} p90 {pct(floor, 90):.3f} p99 {pct(floor, 99):.3f} ms")


if __name__ == "__main__":
    main()
