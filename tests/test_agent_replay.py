"""An openai-SDK agent tested the way README's "Testing your agent in CI with respline" says:
through the pytest plug-in (``respline.adapters.testing``, loaded by its entry point) and a cassette
committed with the suite (tests/cassettes/test_agent_replay/).

A plain run replays the cassette with no upstream at all (``respline_replay`` is a
``respline serve --replay --replay-strict`` process). ``pytest tests/test_agent_replay.py
--respline-record`` records it again: the scripted upstream (tests/upstream.py) then stands in
for the live provider, through the ``respline_record_args`` fixture below.
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from upstream import Reply, text_stream, tool_stream
from validate import checked, parse_sse

TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]

WEATHER = {"Paris": "18C and sunny", "Oslo": "4C and raining"}


# what the model answers each test, when recording
SCRIPTS = {
    "test_weather_agent": [
        Reply(tool_stream("get_weather", '{"city": "Paris"}', call_id="call_paris", reasoning="I need the weather.")),
        Reply(text_stream("It is 18C ", "and sunny in Paris.")),
        Reply(text_stream("Noted, Ada.")),
        Reply(tool_stream("get_weather", '{"city": "Oslo"}', call_id="call_oslo")),
        Reply(text_stream("Ada, pack an umbrella for Oslo.")),
    ],
    "test_the_replayed_stream_is_valid": [
        Reply(tool_stream("get_weather", '{"city": "Paris"}', call_id="call_paris", reasoning="I need the weather.")),
    ],
}


@pytest.fixture
def respline_record_args(request):
    """Asked for only when recording: the live upstream, here the scripted one."""
    up = request.getfixturevalue("upstream")
    up.queue(*SCRIPTS[request.node.name])
    return ["--upstream", up.base_url]


def run_tools(client: openai.OpenAI, response, **create) -> object:
    """The agent's loop: run every tool call, hand the outputs back, until the model answers."""
    while calls := [o for o in response.output if o.type == "function_call"]:
        outputs = [
            {"type": "function_call_output", "call_id": c.call_id, "output": WEATHER[json.loads(c.arguments)["city"]]}
            for c in calls
        ]
        create = {k: v for k, v in create.items() if k != "previous_response_id"}
        if "conversation" not in create:
            create["previous_response_id"] = response.id
        response = client.responses.create(model="weather-agent", input=outputs, tools=TOOLS, **create)
    return response


def test_weather_agent(respline_replay):
    client = openai.OpenAI(base_url=respline_replay, api_key="sk-ci", max_retries=0)

    # a tool loop chained by previous_response_id (stored responses)
    first = client.responses.create(model="weather-agent", input="What is the weather in Paris?", tools=TOOLS)
    assert [o.type for o in first.output] == ["reasoning", "function_call"]
    answer = run_tools(client, first)
    assert answer.output_text == "It is 18C and sunny in Paris."
    assert answer.previous_response_id is not None

    # a conversation: the second turn's tool loop runs inside it, and it remembers the first
    conv = client.conversations.create(metadata={"user": "ada"})
    noted = client.responses.create(model="weather-agent", input="My name is Ada.", conversation=conv.id)
    assert noted.output_text == "Noted, Ada."
    asked = client.responses.create(model="weather-agent", input="Do I need an umbrella in Oslo?", tools=TOOLS, conversation=conv.id)
    answer = run_tools(client, asked, conversation=conv.id)
    assert answer.output_text == "Ada, pack an umbrella for Oslo."
    items = client.conversations.items.list(conv.id, order="asc").data
    assert [i.type for i in items] == ["message", "message", "message", "function_call", "function_call_output", "message"]

    # stored responses read back as in live use
    stored = client.responses.retrieve(first.id)
    assert stored.output[1].type == "function_call"
    # and a streamed read of a stored response's input items works as well
    listed = httpx.get(f"{respline_replay}/responses/{answer.id}/input_items").json()
    assert listed["data"][0]["type"] == "function_call_output"


def test_the_replayed_stream_is_valid(respline_replay):
    """The replay server's streams are ordinary respline streams (validated event by event)."""
    r = httpx.post(
        respline_replay + "/responses",
        json={"model": "weather-agent", "input": "What is the weather in Paris?", "tools": TOOLS, "stream": True},
    )
    events = checked(parse_sse(r.content))
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["output"][-1]["name"] == "get_weather"

