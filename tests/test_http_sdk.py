"""The openai Python SDK against a real respline on loopback, with a scripted upstream."""

from __future__ import annotations

import json

import httpx
import pytest

from conftest import TEST_KEY
from upstream import USAGE, Reply, chunk, text_stream, tool_stream, DONE
from validate import checked, parse_sse, validate_response

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture
def client(respline):
    return respline.sdk()


def raw_stream(respline, body: dict) -> list[dict]:
    """POST with stream=true over plain httpx; parse, validate every event and the lifecycle."""
    r = httpx.post(
        respline.url + "/responses",
        json={**body, "stream": True},
        headers={"authorization": f"Bearer {TEST_KEY}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(r.content)
    checked(events)
    return events


def test_stream_text_events_validate(respline, upstream):
    upstream.queue(Reply(text_stream("Hel", "lo", " world")))
    events = raw_stream(respline, {"model": "m1", "input": "hi"})
    types = [e["type"] for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert deltas == ["Hel", "lo", " world"]
    final = events[-1]["response"]
    validate_response(final)
    assert final["output"][0]["content"][0]["text"] == "Hello world"
    assert final["usage"]["input_tokens"] == 10 and final["usage"]["output_tokens"] == 5
    # the upstream saw a streaming Chat request asking for usage
    sent = upstream.last["body"]
    assert upstream.last["path"] == "/v1/chat/completions"
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["messages"] == [{"role": "user", "content": "hi"}]
    assert sent["model"] == "m1"


def test_sdk_create_streaming(client, upstream):
    upstream.queue(Reply(text_stream("One", " two")))
    stream = client.responses.create(model="m1", input="count", stream=True)
    events = list(stream)
    assert events[0].type == "response.created"
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "One two"
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_sdk_create_non_streaming(client, upstream):
    upstream.queue(Reply(text_stream("Just", " JSON")))
    resp = client.responses.create(model="m1", input="hi", instructions="Be brief.", max_output_tokens=50, temperature=0.2)
    assert resp.status == "completed"
    assert resp.output_text == "Just JSON"
    assert resp.instructions == "Be brief."
    assert resp.usage.total_tokens == 15
    validate_response(resp.model_dump(mode="json"))
    sent = upstream.last["body"]
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["max_tokens"] == 50 and sent["temperature"] == 0.2


def test_sdk_responses_stream_helper(client, upstream):
    upstream.queue(Reply(text_stream("streamed", " helper")))
    texts = []
    with client.responses.stream(model="m1", input="hi") as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                texts.append(event.delta)
        final = stream.get_final_response()
    assert "".join(texts) == "streamed helper"
    assert final.output_text == "streamed helper"


def test_sdk_function_tool_round_trip(client, upstream):
    upstream.queue(
        Reply(tool_stream("get_weather", '{"city": "Paris"}', call_id="call_abc", reasoning="Need weather.")),
        Reply(text_stream("It is sunny in Paris.")),
    )
    first = client.responses.create(
        model="m1",
        input="Weather in Paris?",
        tools=[WEATHER_TOOL],
        include=["reasoning.encrypted_content"],
        store=False,
    )
    calls = [o for o in first.output if o.type == "function_call"]
    assert len(calls) == 1
    call = calls[0]
    assert call.call_id == "call_abc" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"}
    assert call.id.startswith("fc_")
    reasoning = [o for o in first.output if o.type == "reasoning"][0]
    assert reasoning.encrypted_content  # sealed so the reasoning can come back
    tools_sent = upstream.last["body"]["tools"]
    assert tools_sent[0]["function"]["name"] == "get_weather"

    # second turn: resend everything (as Codex does), reasoning item included
    second_input = [
        {"role": "user", "content": "Weather in Paris?"},
        reasoning.model_dump(exclude_none=True),
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": "call_abc", "output": '{"sky": "sunny"}'},
    ]
    second = client.responses.create(model="m1", input=second_input, tools=[WEATHER_TOOL], store=False)
    assert second.output_text == "It is sunny in Paris."
    messages = upstream.last["body"]["messages"]
    assert messages[0] == {"role": "user", "content": "Weather in Paris?"}
    assistant = messages[1]
    assert assistant["role"] == "assistant"
    assert assistant["tool_calls"][0]["id"] == "call_abc"
    assert assistant["tool_calls"][0]["function"]["name"] == "get_weather"
    # DeepSeek requires the reasoning back on tool-call turns: opened from encrypted_content
    assert assistant["reasoning_content"] == "Need weather."
    assert messages[2] == {"role": "tool", "tool_call_id": "call_abc", "content": '{"sky": "sunny"}'}


def test_tool_call_events_stream_live(respline, upstream):
    upstream.queue(Reply(tool_stream("get_weather", '{"city": "Oslo"}', call_id="call_live")))
    events = raw_stream(respline, {"model": "m1", "input": "weather?", "tools": [WEATHER_TOOL]})
    types = [e["type"] for e in events]
    assert types.count("response.function_call_arguments.delta") == 2
    done = [e for e in events if e["type"] == "response.output_item.done"][0]["item"]
    assert done["type"] == "function_call" and done["call_id"] == "call_live"
    assert done["arguments"] == '{"city": "Oslo"}'


def test_previous_response_id_chain(client, upstream):
    upstream.queue(Reply(text_stream("First answer.")), Reply(text_stream("Second answer.")))
    first = client.responses.create(model="m1", input="Q1", instructions="sys-1")
    second = client.responses.create(model="m1", input="Q2", previous_response_id=first.id)
    assert second.previous_response_id == first.id
    messages = upstream.last["body"]["messages"]
    # instructions of earlier turns are not carried over (SPEC 2.4)
    assert messages == [
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "First answer."},
        {"role": "user", "content": "Q2"},
    ]
    got = client.responses.retrieve(first.id)
    assert got.output_text == "First answer."


def test_reasoning_then_text(respline, upstream):
    pieces = [
        chunk({"role": "assistant", "content": None, "reasoning_content": "Think"}),
        chunk({"reasoning_content": "ing."}),
        chunk({"content": "Answer."}),
        chunk({}, "stop"),
        chunk(usage={**USAGE, "completion_tokens_details": {"reasoning_tokens": 3}}, choices=False),
        DONE,
    ]
    upstream.queue(Reply(pieces))
    events = raw_stream(respline, {"model": "m1", "input": "hi"})
    final = events[-1]["response"]
    assert [o["type"] for o in final["output"]] == ["reasoning", "message"]
    assert final["output"][0]["content"][0]["text"] == "Thinking."
    assert final["usage"]["output_tokens_details"]["reasoning_tokens"] == 3


def test_namespace_custom_and_hosted_tools(respline, upstream):
    tools = [
        {"type": "namespace", "name": "multi_agent_v1", "description": "agents",
         "tools": [{"type": "function", "name": "spawn_agent", "parameters": {"type": "object", "properties": {"task": {"type": "string"}}}}]},
        {"type": "custom", "name": "apply_patch", "description": "patch files",
         "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}},
        {"type": "web_search"},
    ]
    upstream.queue(Reply(tool_stream("multi_agent_v1__spawn_agent", '{"task": "review"}', call_id="call_ns")))
    events = raw_stream(respline, {"model": "m1", "input": "delegate", "tools": tools})
    item = [e for e in events if e["type"] == "response.output_item.done"][0]["item"]
    assert item["type"] == "function_call" and item["name"] == "spawn_agent" and item["namespace"] == "multi_agent_v1"
    sent = upstream.last["body"]["tools"]
    assert [t["function"]["name"] for t in sent] == ["multi_agent_v1__spawn_agent", "apply_patch"]  # web_search left out
    assert "start: /.+/" in sent[1]["function"]["parameters"]["properties"]["input"]["description"]

    patch = "*** Begin Patch\n*** End Patch\n"
    upstream.queue(Reply(tool_stream("apply_patch", json.dumps({"input": patch}), call_id="call_patch")))
    events = raw_stream(respline, {"model": "m1", "input": "patch it", "tools": tools})
    item = [e for e in events if e["type"] == "response.output_item.done"][0]["item"]
    assert item["type"] == "custom_tool_call" and item["input"] == patch and item["call_id"] == "call_patch"
    done = [e for e in events if e["type"] == "response.custom_tool_call_input.done"][0]
    assert done["input"] == patch
    assert not [e for e in events if e["type"].startswith("response.function_call_arguments")]


def test_structured_output_and_effort(respline, upstream):
    upstream.queue(Reply(text_stream('{"a": 1}')))
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"], "additionalProperties": False}
    raw_stream(
        respline,
        {"model": "m1", "input": "json please", "reasoning": {"effort": "high"},
         "text": {"format": {"type": "json_schema", "name": "thing", "schema": schema, "strict": True}}},
    )
    sent = upstream.last["body"]
    assert sent["response_format"] == {"type": "json_schema", "json_schema": {"name": "thing", "schema": schema, "strict": True}}
    assert sent["reasoning_effort"] == "high"
