"""The last line of defence: a fault inside respline itself is one logged traceback and a 500
envelope (an error frame with status 500 on a WebSocket, which stays open), never an exception
left to hypercorn (an empty 500, or a 1011 close).

The fault is real: the SQLite store's tables are dropped under the running server, so its
writes fail where no code expects them to.
"""

from __future__ import annotations

import json
import sqlite3

import httpx
import trio
from trio_websocket import open_websocket_url

from conftest import TEST_KEY
from upstream import Reply, text_stream

AUTH = {"authorization": f"Bearer {TEST_KEY}"}
TERMINAL = {"response.completed", "response.incomplete", "response.failed"}


def tracebacks(server) -> int:
    log = server.log()
    assert "Error in ASGI Framework" not in log, log  # hypercorn's own catch-all
    return log.count("Traceback (most recent call last)")


def break_store(path, *tables: str) -> None:
    with sqlite3.connect(path) as db:
        for table in tables:
            db.execute(f"DROP TABLE {table}")


async def test_internal_faults_are_500_envelopes_and_error_frames(start_server, upstream, tmp_path):
    db = tmp_path / "state.db"
    server = start_server(["--upstream", upstream.base_url, "--api-key", TEST_KEY, "--store", f"sqlite:{db}"])
    async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=10) as client:
        upstream.queue(Reply(text_stream("fine")))
        assert (await client.post("/responses", json={"model": "m1", "input": "x"})).status_code == 200
        break_store(db, "responses", "conversations")

        # the create route (served at the ASGI level): the store write fails in its last step
        upstream.queue(Reply(text_stream("lost")))
        r = await client.post("/responses", json={"model": "m1", "input": "x"})
        assert r.status_code == 500, r.text
        assert r.json()["error"] == {"message": "Internal error in the gateway.", "type": "server_error", "param": None, "code": "server_error"}
        assert tracebacks(server) == 1
        # a Quart route
        r = await client.post("/conversations", json={})
        assert r.status_code == 500 and r.json()["error"]["code"] == "server_error"
        assert tracebacks(server) == 2
        # the connection still serves
        assert (await client.get("/models")).status_code == 200

        # streamed: the head went out, so the answer is cut short (no end of body)
        upstream.queue(Reply(text_stream("cut")))
        async with client.stream("POST", "/responses", json={"model": "m1", "input": "x", "stream": True}) as r:
            assert r.status_code == 200
            body = b""
            try:
                async for piece in r.aiter_bytes():
                    body += piece
            except httpx.RemoteProtocolError:
                pass
        assert b"data: [DONE]" not in body
        assert tracebacks(server) == 3

    # WebSocket: an error frame with status 500, and the socket answers the next frame
    url = server.url.replace("http://", "ws://") + "/responses"
    async with open_websocket_url(url, extra_headers=[("authorization", f"Bearer {TEST_KEY}")]) as ws:
        for store, expect in ((True, "error"), (False, "response.completed")):
            upstream.queue(Reply(text_stream("w")))
            await ws.send_message(json.dumps({"type": "response.create", "model": "m1", "input": "x", "store": store}))
            while True:
                with trio.fail_after(10):
                    ev = json.loads(await ws.get_message())
                if ev["type"] in TERMINAL or ev["type"] == "error":
                    break
            assert ev["type"] == expect, ev
            if expect == "error":
                assert ev["status"] == 500 and ev["error"]["code"] == "server_error"
    assert tracebacks(server) == 4
