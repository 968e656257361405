"""A non-streaming request asks a Chat upstream for its whole answer (no stream), and the JSON
completion becomes the same Response a streamed answer would (bench/README.md, scenario 6: one
body instead of a read, a wake-up and a pipeline pass per token)."""

from __future__ import annotations

import json

import httpx
import pytest

from conftest import TEST_KEY
from upstream import USAGE, Reply, text_stream
from validate import parse_sse, validate_response

HEADERS = {"authorization": f"Bearer {TEST_KEY}"}
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def completion(message: dict, finish: str = "stop", usage: dict | None = USAGE) -> Reply:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "m1",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
    }
    if usage is not None:
        body["usage"] = usage
    return Reply(body=json.dumps(body).encode())


def create(respline, body: dict) -> httpx.Response:
    return httpx.post(f"{respline.url}/responses", json=body, headers=HEADERS, timeout=30)


def test_non_streaming_request_asks_for_the_whole_answer(respline, upstream):
    upstream.queue(completion({"role": "assistant", "content": "Hello there."}))
    r = create(respline, {"model": "m1", "input": "hi", "store": False})
    assert r.status_code == 200, r.text
    resp = r.json()
    validate_response(resp)
    assert resp["status"] == "completed"
    assert resp["output"][0]["content"][0]["text"] == "Hello there."
    assert resp["usage"]["input_tokens"] == 10 and resp["usage"]["output_tokens"] == 5
    sent = upstream.last
    assert "stream" not in sent["body"] and "stream_options" not in sent["body"]
    assert sent["headers"]["accept"] == "application/json"


def test_whole_answer_with_reasoning_and_tool_calls(respline, upstream):
    upstream.queue(completion(
        {
            "role": "assistant",
            "content": None,
            "reasoning_content": "Two cities.",
            "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
                {"id": "call_b", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
            ],
        },
        finish="tool_calls",
    ))
    r = create(respline, {"model": "m1", "input": "weather?", "tools": [WEATHER_TOOL], "store": False})
    assert r.status_code == 200, r.text
    resp = r.json()
    validate_response(resp)
    kinds = [item["type"] for item in resp["output"]]
    assert kinds == ["reasoning", "function_call", "function_call"]
    calls = resp["output"][1:]
    assert [(c["call_id"], c["name"], json.loads(c["arguments"])) for c in calls] == [
        ("call_a", "get_weather", {"city": "Paris"}),
        ("call_b", "get_weather", {"city": "Oslo"}),
    ]


def test_whole_answer_cut_by_length_is_incomplete(respline, upstream):
    upstream.queue(completion({"role": "assistant", "content": "Once upon"}, finish="length"))
    r = create(respline, {"model": "m1", "input": "story", "max_output_tokens": 2, "store": False})
    resp = r.json()
    validate_response(resp)
    assert resp["status"] == "incomplete"
    assert resp["incomplete_details"] == {"reason": "max_output_tokens"}
    assert resp["output"][0]["content"][0]["text"] == "Once upon"


def test_whole_answer_that_is_not_a_completion_fails(respline, upstream):
    upstream.queue(Reply(body=b'{"error": {"message": "model overloaded", "type": "server_error"}}'))
    r = create(respline, {"model": "m1", "input": "hi", "store": False})
    assert r.status_code == 502
    err = r.json()["error"]
    assert "overloaded" in err["message"]


def test_stored_whole_answer_is_retrievable(respline, upstream):
    upstream.queue(completion({"role": "assistant", "content": "Kept."}))
    resp = create(respline, {"model": "m1", "input": "keep this"}).json()
    got = httpx.get(f"{respline.url}/responses/{resp['id']}", headers=HEADERS, timeout=10).json()
    assert got["output"][0]["content"][0]["text"] == "Kept."


@pytest.mark.parametrize("background", [False, True])
def test_readers_of_events_still_get_a_stream(respline, upstream, background):
    """A streaming request, and a background run (whose events are followed live), still ask
    the upstream for a stream."""
    upstream.queue(Reply(text_stream("a", "b")))
    body = {"model": "m1", "input": "hi", "stream": not background, "background": background}
    with httpx.stream("POST", f"{respline.url}/responses", json=body, headers=HEADERS, timeout=30) as r:
        data = r.read()
    if background:  # queued at once; wait for the run to end
        rid = json.loads(data)["id"]
        with httpx.stream("GET", f"{respline.url}/responses/{rid}?stream=true", headers=HEADERS, timeout=30) as r:
            events = parse_sse(r.read())
    else:
        events = parse_sse(data)
    assert events[-1]["type"] == "response.completed"
    assert upstream.last["body"]["stream"] is True


def test_a_stream_request_answered_whole_is_read(respline, upstream):
    """An upstream (or a cassette recorded from a non-streaming request) that answers a stream
    request with a whole completion: the client still gets its events."""
    upstream.queue(completion({"role": "assistant", "content": "All at once."}))
    with httpx.stream("POST", f"{respline.url}/responses", json={"model": "m1", "input": "hi", "stream": True, "store": False},
                      headers=HEADERS, timeout=30) as r:
        events = parse_sse(r.read())
    assert events[-1]["type"] == "response.completed"
    assert [e["delta"] for e in events if e["type"] == "response.output_text.delta"] == ["All at once."]
    assert upstream.last["body"]["stream"] is True
