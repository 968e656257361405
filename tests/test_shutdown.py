"""Graceful shutdown (SIGTERM): streams, WebSocket turns and background runs get the grace period,
then each is ended with ``error`` + ``response.failed`` and stored as it stands; WebSockets close
with 1001 once their turn ended; the process exits within the grace period plus a second or two.
"""

from __future__ import annotations

import json
import signal
import time

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from conftest import Server, route_all_to
from upstream import DONE, USAGE, Reply, chunk
from validate import checked, parse_sse

GRACE = 1.0  # conftest.Server passes --shutdown-grace 1


def slow_text(n: int, delay: float) -> Reply:
    pieces = [chunk({"role": "assistant", "content": ""})] + [chunk({"content": f"w{i} "}) for i in range(n)]
    return Reply(pieces + [chunk({}, "stop"), chunk(usage=USAGE, choices=False), DONE], delay=delay)


def config(upstream, db) -> str:
    return f"""
[store]
backend = "sqlite"
path = "{db}"
{route_all_to(upstream.base_url)}"""


async def test_sigterm_ends_every_open_stream(upstream, tmp_path):
    """30 streams open against a slow upstream at SIGTERM: each client gets error +
    response.failed + [DONE] (validated), each response is stored failed with the text it had
    streamed, and the process exits within the grace period plus two seconds."""
    n = 30
    server = Server(tmp_path, [], config=config(upstream, tmp_path / "s.db"))
    upstream.queue(*[slow_text(400, 0.05) for _ in range(n)])
    bodies: list[bytes] = [b""] * n
    streaming = trio.Semaphore(0)
    try:
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=n)) as client:

            async def one(i: int) -> None:
                async with client.stream(
                    "POST", server.url + "/responses", json={"model": "m", "input": f"s{i}", "stream": True}
                ) as r:
                    assert r.status_code == 200
                    told = False
                    async for piece in r.aiter_bytes():
                        bodies[i] += piece
                        if not told and bodies[i].count(b"output_text.delta") >= 2:
                            told = True
                            streaming.release()

            async with trio.open_nursery() as nursery:
                for i in range(n):
                    nursery.start_soon(one, i)
                with trio.fail_after(20):
                    for _ in range(n):
                        await streaming.acquire()
                server.proc.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
            with trio.fail_after(GRACE + 5):
                while server.proc.poll() is None:
                    await trio.sleep(0.02)
            exited = time.monotonic() - signalled
    finally:
        server.stop()
    assert server.proc.returncode == 0
    assert exited < GRACE + 2, f"exit took {exited:.2f}s"
    streamed = {}
    for body in bodies:
        events = checked(parse_sse(body))
        assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
        assert events[-2]["code"] == "server_shutting_down"
        text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
        assert text.startswith("w0 w1 ")
        streamed[events[0]["response"]["id"]] = text
    # each is stored failed with what its client saw
    again = Server(tmp_path, [], config=config(upstream, tmp_path / "s.db"))
    try:
        for rid, text in streamed.items():
            stored = httpx.get(f"{again.url}/responses/{rid}").json()
            assert stored["status"] == "failed" and "shutting down" in stored["error"]["message"]
            assert stored["output"][0]["content"][0]["text"] == text
    finally:
        again.stop()


async def test_websocket_turn_gets_its_end_before_1001(start_server, upstream):
    """A WebSocket mid-turn at SIGTERM: the turn runs on for the grace period, ends with error +
    response.failed, and only then the socket closes with 1001."""
    server = start_server(["--upstream", upstream.base_url])
    upstream.queue(slow_text(400, 0.05))
    events = []
    async with open_websocket_url(f"ws://127.0.0.1:{server.port}/v1/responses") as ws:
        await ws.send_message(json.dumps({"type": "response.create", "model": "m", "input": "x", "store": False}))
        while sum(1 for e in events if e["type"] == "response.output_text.delta") < 2:
            events.append(json.loads(await ws.get_message()))
        server.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        with pytest.raises(ConnectionClosed) as info:
            with trio.fail_after(GRACE + 5):
                while True:
                    events.append(json.loads(await ws.get_message()))
        closed = time.monotonic() - signalled
    assert info.value.reason.code == 1001
    assert GRACE - 0.2 <= closed < GRACE + 2  # the turn had its grace period, no more
    checked(events)
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert server.proc.wait(5) == 0


async def test_idle_websocket_closes_at_once(start_server, upstream):
    """A WebSocket between turns closes with 1001 as soon as shutdown begins."""
    server = start_server(["--upstream", upstream.base_url, "--shutdown-grace", "5"])
    async with open_websocket_url(f"ws://127.0.0.1:{server.port}/v1/responses") as ws:
        await trio.sleep(0.2)
        server.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        with pytest.raises(ConnectionClosed) as info:
            with trio.fail_after(5):
                await ws.get_message()
        assert info.value.reason.code == 1001
        assert time.monotonic() - signalled < 0.5
    assert server.proc.wait(5) == 0


def test_nothing_in_flight_exits_at_once(start_server, upstream):
    server = start_server(["--upstream", upstream.base_url, "--shutdown-grace", "30"])
    server.proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    assert server.proc.wait(10) == 0
    assert time.monotonic() - started < 2
