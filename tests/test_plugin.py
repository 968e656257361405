"""The provider registry (engine/registry.py) and a provider shipped as its own package.

tests/plugins/ndjson_provider is a pip package (`make install` installs it beside respline)
that registers the kind ``ndjson`` through the ``respline.providers`` entry-point group, exactly
as the built-in kinds do; respline names it nowhere. Its upstream streams NDJSON, not SSE, so it
has its own framing stage and chunk shape. These tests drive it through a real server.
"""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import openai
import pytest

from conftest import TEST_KEY, config_error, load_config
from respline.engine import registry
from respline.engine.ids import deterministic
from respline.engine.replay import replay
from upstream import Reply
from validate import checked, parse_sse

TOOL = {"type": "function", "name": "get_weather", "description": "weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def lines(*objs: dict) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objs)


# --- the registry ------------------------------------------------------------------------------


def test_builtin_and_plugin_kinds_come_from_entry_points():
    kinds = registry.kinds()
    assert {"openai-chat", "anthropic", "openai-responses", "demo", "ndjson"} <= set(kinds)
    assert kinds["ndjson"].provider.__module__ == "respline_ndjson.provider"  # the plug-in's own
    assert "demo" not in registry.names(upstream=True) and "ndjson" in registry.names(upstream=True)
    with pytest.raises(registry.RegistryError, match="no provider kind 'nope'"):
        registry.get("nope")


def test_cli_choices_list_the_plugin():
    out = subprocess.run([sys.executable, "-m", "respline.adapters.cli", "replay", "--help"], capture_output=True, text=True)
    assert "ndjson" in out.stdout and "demo" not in out.stdout.split("--kind")[1].split("\n")[0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # a key of another kind is named, for the provider that does not take it
        ('[providers.a]\nkind = "anthropic"\nbase_url = "x"\ndrop_fields = []\n',
         "Object contains unknown field `drop_fields` - at `$.providers.a`"),
        ('[providers.n]\nkind = "ndjson"\nbase_url = "x"\nthink_tags = true\n',
         "Object contains unknown field `think_tags` - at `$.providers.n`"),
        ('[providers.n]\nkind = "ndjson"\nbase_url = "x"\ntemperature_scale = "hot"\n',
         "Expected `float`, got `str` - at `$.providers.n.temperature_scale`"),
        ('[providers.n]\nkind = "ndjson"\n', "providers.n.base_url is required"),
        # the replay kind (adapters/providers/replay_cassette) is a registered kind like any
        ('[providers.r]\nkind = "replay"\n', "providers.r.cassette is required with kind 'replay'"),
        ('[providers.r]\nkind = "replay"\ncassette = "c"\nreplay_pace = "slow"\n',
         "providers.r.replay_pace must be 'fast' or 'recorded'"),
        ('[providers.a]\nbase_url = "x"\ncassette = "c"\n', "Object contains unknown field `cassette` - at `$.providers.a`"),
        ('[providers.n]\nkind = "nope"\nbase_url = "x"\n', "providers.n.kind: 'nope' is not one of anthropic, demo, "),
    ],
)
def test_config_is_a_tagged_union_on_kind(tmp_path, text, message):
    assert message in config_error(tmp_path, text)


def test_kind_defaults_to_openai_chat(tmp_path):
    cfg = load_config(
        tmp_path, '[providers.a]\nbase_url = "x"\nthink_tags = true\n[providers.n]\nkind = "ndjson"\nbase_url = "y"\ntemperature_scale = 0.5\n'
    )
    assert cfg.providers["a"].kind == "openai-chat" and cfg.providers["a"].think_tags is True
    assert cfg.providers["n"].kind == "ndjson" and cfg.providers["n"].temperature_scale == 0.5


# --- the plug-in's stages, replayed --------------------------------------------------------------

STREAM = lines(
    {"thinking": "They greet me."},
    {"text": "Hel"},
    {"text": "lo"},
    {"done": "stop", "usage": {"input": 7, "output": 3}},
)


def test_replay_through_the_plugin_any_split():
    whole = replay([STREAM], kind="ndjson")
    events = checked(parse_sse(b"".join(whole)))
    done = events[-1]["response"]
    assert events[-1]["type"] == "response.completed"
    assert [o["type"] for o in done["output"]] == ["reasoning", "message"]
    assert done["output"][1]["content"][0]["text"] == "Hello"
    assert done["usage"]["input_tokens"] == 7 and done["usage"]["output_tokens"] == 3
    for size in (1, 5, 17):
        pieces = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
        assert replay(pieces, kind="ndjson", ids=deterministic()[0], clock=deterministic()[1]) == whole


def test_a_line_that_is_not_json_fails_the_response():
    events = checked(parse_sse(b"".join(replay([lines({"text": "a"}) + b"{not json\n"], kind="ndjson"))))
    assert events[-1]["type"] == "response.failed"
    assert any(e["type"] == "error" and "not JSON" in e["message"] for e in events)


# --- end to end: a real server, the openai SDK, a scripted NDJSON upstream -----------------------


@pytest.fixture(scope="module")
def ndjson_server(upstream_server, tmp_path_factory):
    from conftest import Server

    config = f"""
[providers.nd]
kind = "ndjson"
base_url = "{upstream_server.base_url}"
api_key = "sk-nd"
temperature_scale = 0.5

[[routes]]
model = "*"
provider = "nd"
"""
    server = Server(tmp_path_factory.mktemp("ndjson"), ["--api-key", TEST_KEY], config=config)
    yield server
    server.stop()


@pytest.fixture
def client(ndjson_server):
    return ndjson_server.sdk()


def test_text_stream_end_to_end(ndjson_server, upstream):
    # the lines split across writes, one mid-object
    upstream.queue(Reply([STREAM[:20], STREAM[20:45], STREAM[45:]], headers={"content-type": "application/x-ndjson"}))
    with httpx.stream("POST", ndjson_server.url + "/responses", headers={"authorization": f"Bearer {TEST_KEY}"},
                      json={"model": "nd-1", "input": "hi", "stream": True, "temperature": 1.0}, timeout=30) as r:
        events = checked(parse_sse(r.read()))
    done = events[-1]["response"]
    assert events[-1]["type"] == "response.completed" and done["model"] == "nd-1"
    assert done["output"][-1]["content"][0]["text"] == "Hello"
    sent = upstream.last
    assert sent["path"] == "/v1/generate"
    headers = {k.lower(): v for k, v in sent["headers"].items()}
    assert headers["accept"] == "application/x-ndjson" and headers["authorization"] == "Bearer sk-nd"
    assert sent["body"]["messages"] == [{"role": "user", "content": "hi"}] and sent["body"]["temperature"] == 0.5


def test_tool_loop_end_to_end(client, upstream):
    upstream.queue(
        Reply([lines({"call": {"id": "c1", "name": "get_weather", "arguments": '{"city": "Paris"}'}}, {"done": "tool"})]),
        Reply([lines({"text": "Sunny."}, {"done": "stop"})]),
    )
    first = client.responses.create(model="nd-1", input="Weather in Paris?", tools=[TOOL])
    call = first.output[0]
    assert (call.type, call.call_id, call.name, json.loads(call.arguments)) == ("function_call", "c1", "get_weather", {"city": "Paris"})
    second = client.responses.create(model="nd-1", previous_response_id=first.id, tools=[TOOL],
                                     input=[{"type": "function_call_output", "call_id": "c1", "output": "sunny"}])
    assert second.output_text == "Sunny."
    messages = upstream.last["body"]["messages"]
    assert messages[1]["tool_calls"][0]["id"] == "c1" and messages[2] == {"role": "tool", "tool_call_id": "c1", "content": "sunny"}


def test_upstream_refusal_and_stream_error_end_to_end(client, ndjson_server, upstream):
    upstream.queue(Reply(status=429, body=b'{"error": {"message": "slow down"}}'))
    with pytest.raises(openai.RateLimitError) as exc:
        client.responses.create(model="nd-1", input="hi")
    assert "slow down" in str(exc.value)
    upstream.queue(Reply([lines({"text": "par"}, {"error": {"message": "overloaded", "code": "overloaded"}})]))
    with httpx.stream("POST", ndjson_server.url + "/responses", headers={"authorization": f"Bearer {TEST_KEY}"},
                      json={"model": "nd-1", "input": "hi", "stream": True}, timeout=30) as r:
        events = checked(parse_sse(r.read()))
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert events[-1]["response"]["error"]["message"].endswith("overloaded")


def test_a_plugin_that_fails_to_load_is_left_out(tmp_path):
    """A registered kind whose module cannot be imported: respline still starts and serves its
    other kinds; a config naming it is refused with the reason."""
    dist = tmp_path / "respline_broken-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: respline-broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text('[respline.providers]\nbroken = no_such_module:KIND\n')
    (tmp_path / "c.toml").write_text('[providers.b]\nkind = "broken"\nbase_url = "x"\n')
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from respline.engine import registry\n"
        "from respline.adapters.config import ConfigError, load\n"
        "assert 'broken' not in registry.kinds() and 'openai-chat' in registry.kinds()\n"
        "try:\n    load(sys.argv[1] + '/c.toml')\nexcept ConfigError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "providers.b.kind: the provider kind 'broken' is installed but failed to load: no_such_module:KIND" in out.stdout
    assert "provider kind 'broken' not loaded" in out.stderr
