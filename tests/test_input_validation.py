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


# --- what the fuzzer found once it covered the newer routes, items, frames and headers ----------


@pytest.mark.parametrize(
    "item, param",
    [
        # a tool whose type is a list reached a set lookup (TypeError: unhashable, a 500)
        ({"type": "additional_tools", "tools": [{"type": ["function"], "name": "f"}]}, "input[1].tools[0].type"),
        ({"type": "additional_tools", "tools": {"type": "function", "name": "f"}}, "input[1].tools"),
        ({"type": "additional_tools", "tools": ["f"]}, "input[1].tools[0]"),
        ({"type": "additional_tools", "tools": [{"type": "function", "name": ["f"]}]}, "input[1].tools[0].name"),
        ({"type": "tool_search_output", "call_id": "c", "execution": "client",
          "tools": [{"type": "namespace", "name": "ns", "tools": 5}]}, "input[1].tools[0].tools"),
        ({"type": "tool_search_output", "call_id": "c", "execution": "client",
          "tools": [{"type": "namespace", "name": "ns", "tools": [{"type": {}, "name": "g"}]}]}, "input[1].tools[0].tools[0].type"),
    ],
)
@pytest.mark.parametrize("path", ["/responses", "/responses/input_tokens", "/responses/compact"])
def test_tools_made_available_by_items_are_checked(respline, upstream, item, param, path):
    body = {"model": "m1", "input": [{"role": "user", "content": "x"}, item]}
    envelope(post(respline, path, body), 400, param=param)
    assert upstream.requests == []  # refused before any upstream call
    no_traceback(respline)


def test_a_tool_of_another_type_with_an_odd_name_is_offered_once(respline, upstream):
    """A tool of a type respline does not read keeps its name unchecked (a list here, which
    reached a set: a 500): the tools offered from the items are still listed, and that one is
    left out for a Chat upstream."""
    upstream.queue(Reply(text_stream("ok")))
    extra = {"type": "additional_tools", "tools": [{"type": "future_tool", "name": ["x"]}, {"type": "function", "name": "g"}]}
    r = post(respline, "/responses", {"model": "m1", "input": [{"role": "user", "content": "x"}, extra]})
    assert r.status_code == 200, r.text
    assert [t["function"]["name"] for t in upstream.last["body"]["tools"]] == ["g"]
    no_traceback(respline)


async def test_steer_input_of_another_type_is_invalid_input(respline, upstream):
    """A steer whose input is not a string or a list (or nests too deep to hand back) is
    ``invalid_input``, and its answer still has the shape openai's ResponseSteerFailedEvent reads
    (it echoed ``"input": 5`` and objects 100 levels deep)."""
    from openai.types.responses import ResponseSteerFailedEvent

    url = respline.url.replace("http://", "ws://") + "/responses"
    deep = '{"a":' * 100 + "1" + "}" * 100  # decodes; deeper than a frame may be kept (64)
    frames = [  # (frame, the previous_response_id the answer names: none from a frame not read)
        ('{"type": "response.steer", "previous_response_id": "resp_x", "input": 5}', "resp_x"),
        ('{"type": "response.inject", "previous_response_id": "resp_x", "input": {"role": "user"}}', "resp_x"),
        ('{"type": "response.steer", "previous_response_id": "resp_x", "input": []}', "resp_x"),
        ('{"type": "response.steer", "previous_response_id": "resp_x", "input": ' + deep + "}", ""),
        ('{"type": "response.steer", "previous_response_id": "resp_x", "input": [' + deep + "]}", ""),
    ]
    async with open_websocket_url(url, extra_headers=[("authorization", f"Bearer {TEST_KEY}")]) as ws:
        for frame, prev in frames:
            await ws.send_message(frame)
            with trio.fail_after(10):
                answer = json.loads(await ws.get_message())
            ResponseSteerFailedEvent.model_validate(answer)
            assert answer["error"]["code"] == "invalid_input", (frame[:80], answer)
            assert answer["steer"] == {"previous_response_id": prev, "input": []}
        # a good one still hands its input back
        await ws.send_message('{"type": "response.steer", "previous_response_id": "resp_x", "input": "more"}')
        with trio.fail_after(10):
            answer = json.loads(await ws.get_message())
        assert (answer["error"]["code"], answer["steer"]["input"]) == ("response_not_found", "more")
    no_traceback(respline)


def test_websocket_upgrade_answers_carry_the_request_id(respline):
    """The 101 and a refused upgrade carry x-request-id like every HTTP answer: the client's
    when it is a sane token, else one the server made (they carried none)."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    url = respline.url.replace("http://", "ws://")
    auth = {"authorization": f"Bearer {TEST_KEY}"}
    with connect(url + "/responses", additional_headers={**auth, "x-request-id": "ws-rid-1"}) as ws:
        assert ws.response.headers.get_all("x-request-id") == ["ws-rid-1"]
    with connect(url + "/responses", additional_headers={**auth, "x-request-id": "not sane;%0d%0a"}) as ws:
        [rid] = ws.response.headers.get_all("x-request-id")
        assert rid.startswith("req_") and len(rid) == 28
    for path, headers, status in [("/responses", {"x-request-id": "ws-rid-2"}, 401), ("/models", {**auth, "x-request-id": "ws-rid-3"}, 404)]:
        with pytest.raises(InvalidStatus) as refused:
            connect(url + path, additional_headers=headers)
        assert refused.value.response.status_code == status
        assert refused.value.response.headers.get_all("x-request-id") == [headers["x-request-id"]]


def test_text_log_records_stay_one_line(start_server, upstream):
    """``--log-format text``: a model name or a path holding CR/LF (a %0A in a path is decoded)
    or U+2028 is quoted and escaped, so it cannot start a forged record."""
    import re
    import time

    server = start_server(["--upstream", upstream.base_url, "--api-key", TEST_KEY, "--log-format", "text"])
    forged = "2026-01-01T00:00:00.000Z INFO respline.access: request status=200 forged=1"
    upstream.queue(Reply(text_stream("ok")))
    r = post(server, "/responses", {"model": f"m1\r\n{forged}\u2028x\"y\\", "input": "hi"})
    assert r.status_code == 200, r.text
    assert httpx.get(server.url + "/models%0A" + forged.replace(" ", "%20"), headers=AUTH, timeout=10).status_code == 404
    deadline = time.monotonic() + 5
    while not ("method=POST" in server.log() and "status=404" in server.log()) and time.monotonic() < deadline:
        time.sleep(0.05)
    records = server.log().splitlines()
    stamp = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z [A-Z]+ [\w.]+: ")
    assert all(stamp.match(line) for line in records), records
    assert not any(line.startswith("2026-01-01T00:00:00.000Z") for line in records)  # no forged record
    [create] = [line for line in records if "method=POST" in line]
    assert 'model="m1\\r\\n2026-01-01T00:00:00.000Z INFO respline.access: request status=200 forged=1\\u2028x\\"y\\\\"' in create
    [missing] = [line for line in records if "status=404" in line]
    assert 'path="/v1/models\\n2026-01-01T00:00:00.000Z INFO' in missing


def test_resuming_a_finished_run_past_its_end_does_not_wait(respline, upstream):
    """``starting_after`` at or past a finished run's last event: the stream ends at once with
    ``[DONE]``; it waited out the 2 s settling window meant for a terminal event still landing
    (the fuzzer's slowest requests)."""
    import time

    upstream.queue(Reply(text_stream("ok")))
    rid = post(respline, "/responses", {"model": "m1", "input": "x", "background": True}).json()["id"]
    get = lambda path: httpx.get(respline.url + path, headers=AUTH, timeout=10)  # noqa: E731
    events = checked(parse_sse(get(f"/responses/{rid}?stream=true").content))  # followed to its end
    last = events[-1]["sequence_number"]
    for after in (last, last + 50):
        started = time.monotonic()
        r = get(f"/responses/{rid}?stream=true&starting_after={after}")
        assert r.status_code == 200 and r.text == "data: [DONE]\n\n", r.text
        assert time.monotonic() - started < 1.5  # not the 2 s settle
    no_traceback(respline)


def test_metrics_address_refuses_upgrades_and_carries_request_ids(start_server):
    """``[metrics] address``: a WebSocket upgrade there is a 404 envelope (it was left
    unanswered: hypercorn's bare 500), and its answers carry x-request-id as the main port's do."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    from conftest import free_port

    port = free_port()
    server = start_server([], config=f'[metrics]\naddress = "127.0.0.1:{port}"\n')
    for path in ("/metrics", "/v1/responses"):
        with pytest.raises(InvalidStatus) as refused:
            connect(f"ws://127.0.0.1:{port}{path}", additional_headers={"x-request-id": "m-ws-1"})
        response = refused.value.response
        assert response.status_code == 404 and json.loads(bytes(response.body))["error"]["code"] == "not_found"
        assert response.headers.get_all("x-request-id") == ["m-ws-1"]
    r = httpx.get(f"http://127.0.0.1:{port}/metrics", headers={"x-request-id": "m-1"}, timeout=10)
    assert r.status_code == 200 and r.headers.get_list("x-request-id") == ["m-1"]
    r = httpx.get(f"http://127.0.0.1:{port}/nothing", headers={"x-request-id": "bad id"}, timeout=10)
    envelope(r, 404, code="not_found")
    [rid] = r.headers.get_list("x-request-id")
    assert rid.startswith("req_")
    no_traceback(server)
