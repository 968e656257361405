"""Each input an attacker found crashing the server (issue 12), now a 400 naming the parameter.

Every case goes through the shared server with real clients; the fuzzer (test_fuzz.py) covers
the same ground at random, these pin the exact param each one names.
"""

from __future__ import annotations

import json

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from conftest import TEST_KEY
from upstream import Reply, text_stream
from validate import checked, parse_sse

AUTH = {"authorization": f"Bearer {TEST_KEY}", "content-type": "application/json"}


def post(server, path: str, body: bytes | dict, **kw) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(server.url + path, content=content, headers=AUTH, timeout=10, **kw)


def envelope(r: httpx.Response, status: int, param=..., code=...) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param is not ...:
        assert err["param"] == param, err
    if code is not ...:
        assert err["code"] == code, err
    return err


def no_traceback(server) -> None:
    log = server.log()
    assert "Traceback" not in log, log[log.index("Traceback") :][:3000]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    "extra, param",
    [
        # an item type that is a list or an object
        ({"input": [{"type": ["message"], "role": "user", "content": "x"}]}, "input[0].type"),
        ({"input": [{"type": {"a": 1}, "content": "x"}]}, "input[0].type"),
        # a hosted item whose id is not a string (it keys the stored items)
        ({"input": [{"type": "web_search_call", "id": ["ws_1"]}]}, "input[0].id"),
        # a namespace tool's tools, and allowed_tools.tools, that are not lists
        ({"tools": [{"type": "namespace", "name": "ns", "tools": {"type": "function"}}]}, "tools[0].tools"),
        ({"tools": [{"type": "namespace", "name": "ns", "tools": [{"type": "function", "name": 5}]}]}, "tools[0].tools[0].name"),
        ({"tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": "f"}}, "tool_choice.tools"),
        ({"tool_choice": {"type": "function", "name": ["f"]}}, "tool_choice.name"),
        ({"tools": [{"type": ["function"], "name": "f"}]}, "tools[0].type"),
        ({"tools": [{"type": "function", "name": "f", "parameters": "{}"}]}, "tools[0].parameters"),
        ({"tools": [{"type": "custom", "name": "c", "format": {"type": "grammar", "definition": 1}}]}, "tools[0].format.definition"),
        # non-string text in content parts, wherever parts are
        ({"input": [{"role": "user", "content": [{"type": "input_text", "text": ["a"]}]}]}, "input[0].content[0].text"),
        ({"input": [{"role": "user", "content": [{"type": "input_text", "text": {"t": 1}}]}]}, "input[0].content[0].text"),
        ({"input": [{"role": "user", "content": [{"text": "no type"}]}]}, "input[0].content[0].type"),
        ({"input": [{"type": "function_call_output", "call_id": "c", "output": [{"type": "input_text", "text": 3}]}]}, "input[0].output[0].text"),
        ({"input": [{"type": "reasoning", "summary": [{"type": "summary_text", "text": None}, {"type": 1}]}]}, "input[0].summary[1].type"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": {"url": "x"}}]}]}, "input[0].content[0].image_url"),
        ({"text": {"format": {"type": "json_schema", "name": ["n"], "schema": {}}}}, "text.format.name"),
        ({"conversation": {"id": 7}}, "conversation.id"),
        # numbers beyond 64 bits, and beyond any float
        ({"max_output_tokens": 10**20}, "max_output_tokens"),
        ({"max_tool_calls": -(10**20)}, "max_tool_calls"),
    ],
)
def test_create_names_the_param(respline, extra, param, stream):
    body = {"model": "m1", "input": "x", "stream": stream, **extra}
    envelope(post(respline, "/responses", body), 400, param=param)
    no_traceback(respline)


def test_number_out_of_range_and_invalid_utf8(respline):
    envelope(post(respline, "/responses", b'{"model": "m1", "input": "x", "temperature": 1e400}'), 400, param="temperature")
    # invalid UTF-8 inside a JSON string: msgspec raises UnicodeDecodeError, which reached
    # hypercorn (an empty 500, the connection closed)
    for stream in (b"false", b"true"):
        body = b'{"model": "m1", "stream": ' + stream + b', "input": [{"role": "user", "content": "caf\xe9"}]}'
        err = envelope(post(respline, "/responses", body), 400, param="input[0].content", code="invalid_encoding")
        assert "UTF-8" in err["message"]
    envelope(post(respline, "/responses/compact", b'{"model": "m\xff"}'), 400, param="model", code="invalid_encoding")
    envelope(post(respline, "/conversations", b'{"metadata": {"k\xc3": "v"}}'), 400, param="metadata.k\ufffd")
    no_traceback(respline)


def test_deep_nesting_is_refused(respline):
    deep = b'{"model": "m1", "input": "x", "prompt": {"p": ' + b"[" * 5000 + b"]" * 5000 + b"}}"
    envelope(post(respline, "/responses", deep), 400, code="invalid_json")
    # deep enough to decode, too deep to use safely further on
    schema = {"type": "object"}
    for _ in range(70):
        schema = {"type": "object", "properties": {"a": schema}}
    body = {"model": "m1", "input": "x", "tools": [{"type": "function", "name": "f", "parameters": schema}]}
    err = envelope(post(respline, "/responses", body), 400, code="invalid_json")
    assert "deeper than" in err["message"]
    envelope(post(respline, "/conversations", b'{"items": ' + b"[" * 3000 + b"]" * 3000 + b"}"), 400)
    no_traceback(respline)


def test_conversation_bodies(respline):
    envelope(post(respline, "/conversations", {"items": [{"type": [], "content": "x"}]}), 400, param="items[0].type")
    envelope(post(respline, "/conversations", {"metadata": {"k": 5}}), 400, param="metadata")
    envelope(post(respline, "/conversations", b"[]"), 400)
    conv = post(respline, "/conversations", {}).json()["id"]
    envelope(post(respline, f"/conversations/{conv}/items", {"items": [{"role": "user", "content": [{"type": "input_text", "text": 1}]}]}), 400, param="items[0].content[0].text")
    envelope(post(respline, f"/conversations/{conv}", {"metadata": []}), 400, param="metadata")
    no_traceback(respline)


def test_query_integers_out_of_range(respline, upstream):
    upstream.queue(Reply(text_stream("ok")))
    rid = post(respline, "/responses", {"model": "m1", "input": "x", "background": True}).json()["id"]
    get = lambda path: httpx.get(respline.url + path, headers=AUTH, timeout=10)  # noqa: E731
    # the SQLite store raised OverflowError on this, after the 200 head had gone out
    for value in ("99999999999999999999", "-99999999999999999999", "-2", "1" * 5000, "x", "1.5"):
        envelope(get(f"/responses/{rid}?stream=true&starting_after={value}"), 400, param="starting_after")
    events = checked(parse_sse(get(f"/responses/{rid}?stream=true&starting_after=-1").content))
    assert events[-1]["type"] == "response.completed"
    for value in ("0", "101", "99999999999999999999", "-1", "ten"):
        envelope(get(f"/responses/{rid}/input_items?limit={value}"), 400, param="limit")
    envelope(get(f"/responses/{rid}/input_items?order=sideways"), 400, param="order")
    assert get(f"/responses/{rid}/input_items?limit=100&order=asc").status_code == 200
    no_traceback(respline)


async def test_websocket_bad_frames_keep_the_socket(respline, upstream):
    """Each bad frame is an error frame naming the param; the socket answers the next good one."""
    url = respline.url.replace("http://", "ws://") + "/responses"
    bad = [
        ('{"type": "response.create", "model": "m1", "input": [{"type": ["message"]}]}', "input[0].type"),
        ('{"type": "response.create", "model": "m1", "input": "x", "tools": [{"type": "namespace", "name": "n", "tools": 1}]}', "tools[0].tools"),
        ('{"type": "response.create", "model": "m1", "input": [{"role": "user", "content": [{"type": "input_text", "text": 1}]}]}', "input[0].content[0].text"),
        (b'{"type": "response.create", "model": "m1", "input": "caf\xe9"}', "input"),
        ('{"type": 5}', "type"),
        ("{}", "type"),
        ("[" * 3000 + "]" * 3000, None),
        ("not json", None),
    ]
    async with open_websocket_url(url, extra_headers=[("authorization", f"Bearer {TEST_KEY}")]) as ws:
        for frame, param in bad:
            await ws.send_message(frame)
            with trio.fail_after(10):
                err = json.loads(await ws.get_message())
            assert err["type"] == "error" and err["status"] == 400, (frame, err)
            assert err["error"]["param"] == param, (frame, err)
            upstream.queue(Reply(text_stream("still here")))
            await ws.send_message(json.dumps({"type": "response.create", "model": "m1", "input": "ok", "store": False}))
            events = []
            while not events or events[-1]["type"] != "response.completed":
                with trio.fail_after(10):
                    events.append(json.loads(await ws.get_message()))
            checked(events)
    no_traceback(respline)
