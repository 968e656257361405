"""Slow clients and clients that stop reading: the client's side has its own time limit.

The upstream limits (first_byte, idle, total) count only time spent waiting on the upstream; a
write to the client has ``[timeouts] client_write``. A client that is only slow, even pausing
longer than ``idle``, loses nothing; one that stops reading is dropped when a write has waited
longer than ``client_write``, its upstream request cancelled and its response stored failed.
"""

from __future__ import annotations

import json
import socket
import time

import httpx
import trio

from upstream import DONE, Reply, chunk
from validate import checked, parse_sse

BIG = "x" * 65536  # 400 of these are far more than loopback's socket buffers hold


def big_stream(n: int = 400) -> Reply:
    pieces = [chunk({"role": "assistant", "content": ""})] + [chunk({"content": BIG}) for _ in range(n)]
    return Reply(pieces + [chunk({}, "stop"), DONE])


async def test_a_slow_client_loses_nothing(start_server, upstream):
    """The client pauses for four times the upstream idle limit while its writes are blocked:
    every event arrives, in order, and the response completes (before, the idle deadline fired
    during the write, blamed the upstream and lost the frame being written)."""
    config = """
[timeouts]
idle = 0.5
client_write = 20
"""
    server = start_server(["--upstream", upstream.base_url, "--store", "memory"], config=config)
    reply = big_stream()
    upstream.queue(reply)
    pieces = []
    async with httpx.AsyncClient(timeout=60) as client:
        async with client.stream("POST", server.url + "/responses", json={"model": "m", "input": "x", "stream": True}) as r:
            stream = r.aiter_bytes()
            pieces.append(await stream.__anext__())
            await trio.sleep(2.0)  # the client reads nothing: respline's write blocks
            assert reply.finished is None, "the writes did not block (the test proves nothing)"
            async for piece in stream:
                pieces.append(piece)
    events = checked(parse_sse(b"".join(pieces)))
    assert events[-1]["type"] == "response.completed"
    assert sum(1 for e in events if e["type"] == "response.output_text.delta") == 400
    stored = httpx.get(f"{server.url}/responses/{events[0]['response']['id']}").json()
    assert stored["status"] == "completed"


def test_a_client_that_stops_reading_is_dropped(start_server, upstream):
    """A raw-socket client with a tiny receive buffer reads the first bytes, then nothing: after
    client_write seconds respline closes its connection (ending hypercorn's shielded write),
    closes the upstream connection, and stores the response failed with a reason naming the
    client. The client, reading again, gets what was in flight, then the end of the connection,
    and never a [DONE]."""
    config = """
[timeouts]
idle = 30
client_write = 1
"""
    server = start_server(["--upstream", upstream.base_url, "--store", "memory"], config=config)
    upstream.queue(big_stream())
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    payload = json.dumps({"model": "m", "input": "x", "stream": True}).encode()
    sock.sendall(
        b"POST /v1/responses HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        + b"content-length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload
    )
    head = b""
    while b"response.in_progress" not in head:
        head += sock.recv(4096)
    response_id = head.split(b'"id":"', 1)[1].split(b'"', 1)[0].decode()
    started = time.monotonic()
    # ... and the client reads nothing more
    deadline = started + 15
    while not upstream.hangups and time.monotonic() < deadline:
        time.sleep(0.1)
    assert upstream.hangups, "respline kept reading its upstream for a client that reads nothing"
    dropped_after = upstream.hangups[0] - started
    assert 1 <= dropped_after < 5, dropped_after
    stored = httpx.get(f"{server.url}/responses/{response_id}").json()
    assert stored["status"] == "failed"
    assert "client accepted nothing for 1 seconds" in stored["error"]["message"]
    assert stored["output"] and stored["output"][0]["status"] == "incomplete"
    # the connection was ended by the server: reading again drains it to its end
    sock.settimeout(10)
    rest = []
    try:
        while piece := sock.recv(1 << 20):
            rest.append(piece)
    except ConnectionResetError:
        pass
    sock.close()
    assert b"data: [DONE]" not in b"".join(rest)
    assert "connection dropped" in server.log()


async def test_websocket_client_that_stops_reading_is_dropped(start_server, upstream):
    """The same limit over WebSocket mode: a socket that stops reading mid-turn is closed."""
    from trio_websocket import open_websocket_url

    config = """
[timeouts]
client_write = 1
"""
    server = start_server(["--upstream", upstream.base_url, "--store", "memory"], config=config)
    upstream.queue(big_stream())
    async with open_websocket_url(f"ws://127.0.0.1:{server.port}/v1/responses") as ws:
        await ws.send_message(json.dumps({"type": "response.create", "model": "m", "input": "x"}))
        first = json.loads(await ws.get_message())
        assert first["type"] == "response.created"
        started = time.monotonic()
        with trio.fail_after(15):
            while not upstream.hangups:
                await trio.sleep(0.1)  # reads nothing meanwhile
        assert upstream.hangups[0] - started < 5
    stored = httpx.get(f"{server.url}/responses/{first['response']['id']}").json()
    assert stored["status"] == "failed" and "client accepted nothing" in stored["error"]["message"]
