"""WebSocket mode with trio-websocket and the openai SDK's ``responses.connect()``."""

from __future__ import annotations

import json
import time

import openai
import pytest
import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from conftest import TEST_KEY
from upstream import Reply, chunk, text_stream, tool_stream
from validate import checked

HEADERS = [("authorization", f"Bearer {TEST_KEY}"), ("openai-beta", "responses_websockets=2026-02-06")]
TERMINAL = {"response.completed", "response.incomplete", "response.failed"}


def ws_url(server) -> str:
    return server.url.replace("http://", "ws://") + "/responses"


async def turn(ws, frame: dict) -> list[dict]:
    """Send one response.create and read until its terminal event or an error frame."""
    await ws.send_message(json.dumps({"type": "response.create", **frame}))
    events = []
    while True:
        with trio.fail_after(10):
            ev = json.loads(await ws.get_message())
        events.append(ev)
        if ev["type"] in TERMINAL or (ev["type"] == "error" and "status" in ev):
            return events


async def test_sequential_turns_and_store_false_continuation(respline, upstream):
    upstream.queue(Reply(text_stream("One.")), Reply(text_stream("Two.")))
    async with open_websocket_url(ws_url(respline), extra_headers=HEADERS) as ws:
        first = checked(await turn(ws, {"model": "m", "input": "first", "store": False, "stream": True}))
        rid = first[-1]["response"]["id"]
        second = checked(
            await turn(ws, {"model": "m", "input": [{"role": "user", "content": "second"}], "store": False, "previous_response_id": rid})
        )
    assert first[0]["sequence_number"] == 0 and second[0]["sequence_number"] == 0
    assert second[-1]["response"]["output"][0]["content"][0]["text"] == "Two."
    assert second[-1]["response"]["previous_response_id"] == rid
    # the store: false chain continued from the connection cache: the upstream saw all of it
    assert upstream.last["body"]["messages"] == [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "One."},
        {"role": "user", "content": "second"},
    ]


async def test_frames_queue_in_order(respline, upstream):
    upstream.queue(Reply(text_stream("A"), delay=0.05), Reply(text_stream("B")))
    async with open_websocket_url(ws_url(respline), extra_headers=HEADERS) as ws:
        await ws.send_message(json.dumps({"type": "response.create", "model": "m", "input": "a"}))
        await ws.send_message(json.dumps({"type": "response.processed", "response_id": "resp_x"}))
        await ws.send_message(json.dumps({"type": "response.create", "model": "m", "input": "b"}))
        events = []
        while sum(e["type"] == "response.completed" for e in events) < 2:
            with trio.fail_after(10):
                events.append(json.loads(await ws.get_message()))
    # one response in flight at a time: the second starts after the first completed
    done_at = [i for i, e in enumerate(events) if e["type"] == "response.completed"]
    created_at = [i for i, e in enumerate(events) if e["type"] == "response.created"]
    assert created_at[1] > done_at[0]
    texts = [e["response"]["output"][0]["content"][0]["text"] for e in events if e["type"] == "response.completed"]
    assert texts == ["A", "B"]
    # the unknown client event got no answer at all
    assert {e["type"] for e in events} <= {
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed",
    }


async def test_previous_response_not_found_on_new_socket(respline, upstream):
    upstream.queue(Reply(text_stream("cached only")))
    async with open_websocket_url(ws_url(respline), extra_headers=HEADERS) as ws:
        rid = (await turn(ws, {"model": "m", "input": "x", "store": False}))[-1]["response"]["id"]
    async with open_websocket_url(ws_url(respline), extra_headers=HEADERS) as ws:
        err = (await turn(ws, {"model": "m", "input": "y", "store": False, "previous_response_id": rid}))[-1]
        assert err["type"] == "error" and err["status"] == 400
        assert err["error"]["code"] == "previous_response_not_found"
        assert err["error"]["param"] == "previous_response_id"
        # the socket is still usable
        upstream.queue(Reply(text_stream("fresh")))
        assert (await turn(ws, {"model": "m", "input": "z"}))[-1]["type"] == "response.completed"


async def test_failed_continuation_evicts(respline, upstream):
    upstream.queue(Reply(text_stream("base")), Reply(status=500, body=b'{"error":{"message":"down"}}'))
    async with open_websocket_url(ws_url(respline), extra_headers=HEADERS) as ws:
        rid = (await turn(ws, {"model": "m", "input": "x", "store": False}))[-1]["response"]["id"]
        failed = (await turn(ws, {"model": "m", "input": "y", "store": False, "previous_response_id": rid}))[-1]
        assert failed["type"] == "error" and failed["status"] == 500
        again = (await turn(ws, {"model": "m", "input": "z", "store": False, "previous_response_id": rid}))[-1]
        assert again["type"] == "error" and again["error"]["code"] == "previous_response_not_found"


async def test_midstream_fault_then_socket_still_usable(respline, upstream):
    upstream.queue(
        Reply([chunk({"content": "par"}), b'data: {"error":{"message":"upstream broke"}}\n\n']),
        Reply(text_stream("recovered")),
    )
    async with open_websocket_url(ws_url(respline), extra_headers=HEADERS) as ws:
        events = checked(await turn(ws, {"model": "m", "input": "x"}))
        assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
        assert (await turn(ws, {"model": "m", "input": "y"}))[-1]["type"] == "response.completed"


async def test_errors_before_a_turn_are_error_frames(respline, upstream):
    async with open_websocket_url(ws_url(respline), extra_headers=HEADERS) as ws:
        err = (await turn(ws, {"input": "no model"}))[-1]
        assert err["status"] == 400 and err["error"]["param"] == "model"
        await ws.send_message("{not json")
        with trio.fail_after(5):
            bad = json.loads(await ws.get_message())
        assert bad["type"] == "error" and bad["status"] == 400
        err = (await turn(ws, {"model": "m", "input": "x", "temperature": "hot"}))[-1]
        assert err["error"]["param"] == "temperature"
        upstream.queue(Reply(text_stream("fine")))
        assert (await turn(ws, {"model": "m", "input": "ok"}))[-1]["type"] == "response.completed"


async def test_prewarm_makes_no_upstream_call(respline, upstream):
    tools = [{"type": "function", "name": "f", "parameters": {"type": "object", "properties": {}}}]
    async with open_websocket_url(ws_url(respline), extra_headers=HEADERS) as ws:
        warm = await turn(
            ws,
            {"model": "m", "generate": False, "instructions": "Be terse.", "tools": tools, "store": False,
             "input": [{"role": "user", "content": "context"}]},
        )
        assert [e["type"] for e in warm] == ["response.created", "response.in_progress", "response.completed"]
        assert upstream.requests == []
        upstream.queue(Reply(text_stream("done")))
        rid = warm[-1]["response"]["id"]
        await turn(ws, {"model": "m", "store": False, "previous_response_id": rid, "input": [{"role": "user", "content": "go"}]})
    body = upstream.last["body"]
    assert body["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "context"},
        {"role": "user", "content": "go"},
    ]
    assert body["tools"][0]["function"]["name"] == "f"


async def test_lifetime_limit(start_server, upstream):
    server = start_server(["--upstream", upstream.base_url], config="[server]\nwebsocket_max_age = 1.0\n")
    async with open_websocket_url(ws_url(server)) as ws:
        with trio.fail_after(5):
            ev = json.loads(await ws.get_message())
        assert ev["type"] == "error" and ev["error"]["code"] == "websocket_connection_limit_reached"
        with pytest.raises(ConnectionClosed):
            with trio.fail_after(5):
                await ws.get_message()


async def test_client_close_cancels_upstream(respline, upstream):
    slow = [chunk({"role": "assistant", "content": ""})] + [chunk({"content": f"w{i}"}) for i in range(300)]
    upstream.queue(Reply(slow, delay=0.05))
    async with open_websocket_url(ws_url(respline), extra_headers=HEADERS) as ws:
        await ws.send_message(json.dumps({"type": "response.create", "model": "m", "input": "x"}))
        deltas = 0
        while deltas < 3:
            ev = json.loads(await ws.get_message())
            deltas += ev["type"] == "response.output_text.delta"
    closed_at = time.monotonic()
    while not upstream.hangups and time.monotonic() < closed_at + 1.0:
        await trio.sleep(0.02)
    assert upstream.hangups and upstream.hangups[0] - closed_at < 1.0


async def test_bad_key_refuses_upgrade(respline):
    with pytest.raises(HandshakeError):
        async with open_websocket_url(ws_url(respline), extra_headers=[("authorization", "Bearer wrong")]):
            pass


def test_openai_sdk_responses_connect(respline, upstream):
    upstream.queue(Reply(tool_stream("get_time", "{}", call_id="call_ws")), Reply(text_stream("It is noon.")))
    client = openai.OpenAI(base_url=respline.url, api_key=TEST_KEY, max_retries=0)
    with client.responses.connect() as conn:
        conn.response.create(
            model="m",
            input="What time is it?",
            store=False,
            tools=[{"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}}],
        )
        first = None
        for event in conn:
            if event.type == "response.completed":
                first = event.response
                break
        call = first.output[0]
        assert call.type == "function_call" and call.call_id == "call_ws"
        conn.response.create(
            model="m",
            store=False,
            previous_response_id=first.id,
            input=[{"type": "function_call_output", "call_id": "call_ws", "output": "12:00"}],
        )
        for event in conn:
            if event.type == "response.completed":
                assert event.response.output_text == "It is noon."
                break
        # a continuation from an id this socket never saw
        conn.response.create(model="m", store=False, previous_response_id="resp_unknown", input="x")
        for event in conn:
            assert event.type == "error"
            assert event.error.code == "previous_response_not_found"
            break
    messages = upstream.last["body"]["messages"]
    assert messages[-1] == {"role": "tool", "tool_call_id": "call_ws", "content": "12:00"}
    assert messages[-2]["tool_calls"][0]["id"] == "call_ws"





async def test_server_shutdown_closes_sockets_cleanly(start_server, upstream):
    server = start_server(["--upstream", upstream.base_url])
    async with open_websocket_url(ws_url(server)) as ws:
        upstream.queue(Reply(text_stream("before shutdown")))
        assert (await turn(ws, {"model": "m", "input": "x"}))[-1]["type"] == "response.completed"
        server.proc.terminate()
        with pytest.raises(ConnectionClosed) as info:
            with trio.fail_after(10):
                await ws.get_message()
        assert info.value.reason.code == 1001
    assert server.proc.wait(10) == 0


async def test_lifetime_lets_the_running_turn_finish(start_server, upstream):
    server = start_server(["--upstream", upstream.base_url], config="[server]\nwebsocket_max_age = 1.0\n")
    slow = [chunk({"role": "assistant", "content": ""})] + [chunk({"content": f"w{i} "}) for i in range(20)]
    upstream.queue(Reply(slow + [chunk({}, "stop"), b"data: [DONE]\n\n"], delay=0.1))  # ~2 s, past the limit
    async with open_websocket_url(ws_url(server)) as ws:
        events = await turn(ws, {"model": "m", "input": "x"})
        assert events[-1]["type"] == "response.completed"  # the turn was not cut at 1 s
        with trio.fail_after(5):
            ev = json.loads(await ws.get_message())
        assert ev["type"] == "error" and ev["error"]["code"] == "websocket_connection_limit_reached"
