"""Every error path: envelopes before the first byte, error events after it, disconnects."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest
import trio

from conftest import TEST_KEY, free_port
from upstream import DONE, Reply, chunk, text_stream
from validate import check_lifecycle, checked, parse_sse

AUTH = {"authorization": f"Bearer {TEST_KEY}"}


def post(server, body, headers=AUTH, **kw):
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(
        server.url + "/responses",
        content=content,
        headers={"content-type": "application/json", **headers},
        timeout=30,
        **kw,
    )


def envelope(r: httpx.Response, status: int, param=..., code=...) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"}
    assert err["message"]
    if param is not ...:
        assert err["param"] == param, err
    if code is not ...:
        assert err["code"] == code, err
    return err


def test_malformed_json(respline):
    err = envelope(post(respline, b'{"model": "m1", "input": '), 400, code="invalid_json")
    assert err["type"] == "invalid_request_error"


def test_empty_body(respline):
    envelope(post(respline, b""), 400)


def test_validation_names_the_field(respline):
    envelope(post(respline, {"model": "m1", "input": "x", "temperature": "hot"}), 400, param="temperature")
    envelope(post(respline, {"model": "m1", "input": "x", "temperature": 7}), 400, param="temperature")
    envelope(post(respline, {"input": "x"}), 400, param="model")
    envelope(
        post(respline, {"model": "m1", "input": [{"type": "function_call", "call_id": 3, "name": "f", "arguments": "{}"}]}),
        400,
        param="input[0].call_id",
    )
    envelope(post(respline, {"model": "m1", "input": [{"type": "bogus"}]}), 400, param="input[0].type")
    envelope(post(respline, {"model": "m1", "input": "x", "tools": [{"type": "function"}]}), 400, param="tools[0].name")
    envelope(post(respline, {"model": "m1", "input": "x", "tool_choice": "sometimes"}), 400, param="tool_choice")
    envelope(post(respline, {"model": "m1", "input": [{"role": "wizard", "content": "x"}]}), 400, param="input[0].role")


def test_bad_or_missing_key(respline):
    envelope(post(respline, {"model": "m1", "input": "x"}, headers={}), 401, code="missing_api_key")
    envelope(post(respline, {"model": "m1", "input": "x"}, headers={"authorization": "Bearer nope"}), 401, code="invalid_api_key")
    # the SDK maps it to its AuthenticationError
    client = openai.OpenAI(base_url=respline.url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.responses.create(model="m1", input="x")


def test_unknown_route_and_body_limit(start_server, upstream):
    config = f"""
[limits]
body_bytes = 2000

[providers.up]
kind = "openai-chat"
base_url = "{upstream.base_url}"

[[routes]]
model = "known-*"
provider = "up"
upstream_model = "real-model"
"""
    server = start_server([], config=config)
    envelope(post(server, {"model": "other", "input": "x"}, headers={}), 404, param="model", code="model_not_found")
    envelope(post(server, {"model": "known-1", "input": "x" * 5000}, headers={}), 413)
    upstream.queue(Reply(text_stream("ok")))
    r = post(server, {"model": "known-1", "input": "x"}, headers={})
    assert r.status_code == 200 and r.json()["model"] == "known-1"
    assert upstream.last["body"]["model"] == "real-model"


@pytest.mark.parametrize("status", [400, 429, 500, 503])
def test_upstream_status_passed_on(respline, upstream, status):
    body = json.dumps({"error": {"message": f"upstream says {status}", "type": "x_error", "code": "x_code"}}).encode()
    upstream.queue(Reply(status=status, body=body, headers={"retry-after": "3"}))
    err = envelope(post(respline, {"model": "m1", "input": "x", "stream": True}), status)
    assert f"upstream says {status}" in err["message"]
    assert err["code"] == "x_code"


def test_upstream_429_reaches_sdk_as_rate_limit(respline, upstream):
    upstream.queue(Reply(status=429, body=b'{"error":{"message":"slow down"}}'))
    client = openai.OpenAI(base_url=respline.url, api_key=TEST_KEY, max_retries=0)
    with pytest.raises(openai.RateLimitError) as info:
        client.responses.create(model="m1", input="x")
    assert "slow down" in str(info.value)


def test_upstream_unreachable_502(start_server):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    server = start_server(["--upstream", dead])
    envelope(post(server, {"model": "m1", "input": "x", "stream": True}, headers={}), 502, code="upstream_unreachable")


def test_upstream_timeout_504(start_server, upstream):
    config = """
[timeouts]
connect = 1
first_byte = 1
idle = 1
"""
    server = start_server(["--upstream", upstream.base_url], config=config)
    upstream.queue(Reply(text_stream("late"), hang=3))
    err = envelope(post(server, {"model": "m1", "input": "x", "stream": True}, headers={}), 504)
    assert err["code"] == "upstream_timeout"


def test_idle_timeout_mid_stream_fails_response(start_server, upstream):
    config = """
[timeouts]
idle = 0.5
"""
    server = start_server(["--upstream", upstream.base_url], config=config)
    # the upstream answers, then goes silent for longer than the idle timeout between pieces
    upstream.queue(Reply([chunk({"role": "assistant", "content": "partial"}), chunk({"content": "never"})], delay=1.5))
    r = post(server, {"model": "m1", "input": "x", "stream": True}, headers={})
    assert r.status_code == 200
    events = checked(parse_sse(r.content))
    assert events[-2]["type"] == "error" and events[-2]["code"] == "upstream_timeout"
    assert "sent nothing for 0.5 seconds" in events[-2]["message"]
    assert events[-1]["type"] == "response.failed"


def test_total_timeout_mid_stream_fails_response(start_server, upstream):
    config = """
[timeouts]
idle = 2
total = 1
"""
    server = start_server(["--upstream", upstream.base_url], config=config)
    # every piece comes well within the idle limit, but the whole answer takes longer than total
    pieces = [chunk({"role": "assistant", "content": "a"})] + [chunk({"content": "b"}) for _ in range(8)] + [DONE]
    upstream.queue(Reply(pieces, delay=0.3))
    r = post(server, {"model": "m1", "input": "x", "stream": True}, headers={})
    events = checked(parse_sse(r.content))
    assert events[-2]["type"] == "error" and events[-2]["code"] == "upstream_timeout"
    assert "total timeout of 1 seconds" in events[-2]["message"]
    assert events[-1]["type"] == "response.failed"
    deltas = [ev for ev in events if ev["type"] == "response.output_text.delta"]
    assert 1 <= len(deltas) < 8


def test_midstream_inband_error(respline, upstream):
    pieces = [
        chunk({"role": "assistant", "content": "Hello"}),
        b'data: {"error": {"message": "Token limit reached", "code": 400}}\n\n',
        DONE,
    ]
    upstream.queue(Reply(pieces))
    r = post(respline, {"model": "m1", "input": "x", "stream": True})
    events = checked(parse_sse(r.content))
    err = [e for e in events if e["type"] == "error"][0]
    assert err["message"] == "Token limit reached" and err["error"]["code"] == "400"
    failed = events[-1]
    assert failed["type"] == "response.failed"
    # response.failed carries a code from the SDK's closed set; the error event keeps the upstream one
    assert failed["response"]["error"]["code"] == "server_error"
    # the message streamed so far is closed, not lost
    assert failed["response"]["output"][0]["content"][0]["text"] == "Hello"


def test_midstream_error_raises_in_sdk(respline, upstream):
    upstream.queue(Reply([chunk({"content": "a"}), b'event: error\ndata: {"error":{"message":"boom","type":"server_error"}}\n\n']))
    client = openai.OpenAI(base_url=respline.url, api_key=TEST_KEY, max_retries=0)
    with pytest.raises(openai.APIError) as info:
        for _ in client.responses.create(model="m1", input="x", stream=True):
            pass
    assert "boom" in str(info.value)


def test_non_streaming_upstream_failure_is_an_envelope(respline, upstream):
    upstream.queue(Reply([chunk({"content": "a"}), b'data: {"error":{"message":"exploded"}}\n\n']))
    err = envelope(post(respline, {"model": "m1", "input": "x"}), 502)
    assert "exploded" in err["message"]


def test_finish_length_is_incomplete(respline, upstream):
    upstream.queue(Reply(text_stream("cut", finish="length")))
    r = post(respline, {"model": "m1", "input": "x", "stream": True, "max_output_tokens": 1})
    events = parse_sse(r.content)
    check_lifecycle(events)
    last = events[-1]
    assert last["type"] == "response.incomplete"
    assert last["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert last["response"]["output"][0]["status"] == "incomplete"


async def test_client_disconnect_closes_upstream(respline, upstream):
    """The client hangs up mid-stream; respline must close its upstream connection within 1 s."""
    slow = [chunk({"role": "assistant", "content": ""})] + [chunk({"content": f"w{i} "}) for i in range(300)]
    upstream.queue(Reply(slow, delay=0.05))
    async with httpx.AsyncClient(timeout=10) as client:
        async with client.stream(
            "POST", respline.url + "/responses", json={"model": "m1", "input": "x", "stream": True}, headers=AUTH
        ) as r:
            assert r.status_code == 200
            seen = 0
            async for piece in r.aiter_bytes():
                seen += piece.count(b"output_text.delta")
                if seen >= 3:
                    break
        hung_up_at = time.monotonic()
    deadline = hung_up_at + 1.0
    while time.monotonic() < deadline and not upstream.hangups:
        await trio.sleep(0.02)
    assert upstream.hangups, "respline kept reading the upstream after the client left"
    assert upstream.hangups[0] - hung_up_at < 1.0


def test_unknown_route_404_envelope(respline):
    r = httpx.get(respline.base + "/v1/nothing-here", headers=AUTH)
    envelope(r, 404)
    r = httpx.put(respline.url + "/models", headers=AUTH)
    envelope(r, 405)


async def test_slow_client_backpressures_the_upstream(respline, upstream):
    """A client that stops reading stalls its own upstream read: respline does not buffer the
    whole answer. 400 x 64 KB of text is far more than the socket buffers hold, so the
    upstream's writes block until the client reads again."""
    word = "x" * 65536
    pieces = [chunk({"role": "assistant", "content": ""})] + [chunk({"content": word}) for _ in range(400)]
    pieces += [chunk({}, "stop"), DONE]
    reply = Reply(pieces)
    upstream.queue(reply)
    async with httpx.AsyncClient(timeout=60) as client:
        async with client.stream(
            "POST", respline.url + "/responses", json={"model": "m1", "input": "x", "stream": True}, headers=AUTH
        ) as r:
            stream = r.aiter_bytes()
            await stream.__anext__()  # the response started
            await trio.sleep(2.0)  # ... and the client reads nothing for a while
            assert reply.finished is None, "respline read the whole upstream answer into memory"
            total = 0
            async for piece in stream:
                total += piece.count(b"response.output_text.delta")
    assert reply.finished is not None
    assert total >= 399
