"""Google Gemini's native API (``streamGenerateContent?alt=sse``), a provider kind written only
through the registry (adapters/providers/gemini/): the request translation, the error mapping,
and the openai SDK end to end against a scripted Gemini-format upstream: text, a tool loop whose
thought signature is sealed for the tenant and sent back on the call next turn, errors.
The stream quirks are fixtures/gemini/* (tests/test_fixtures.py replays each)."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from conftest import TEST_KEY, Server
from respline.adapters.providers.gemini import gemini_error
from respline.adapters.providers.gemini.config import DEFAULT_THINKING_BUDGETS
from respline.adapters.providers.gemini.translate import to_gemini_request
from respline.engine.translate import input_items, parse_create
from upstream import Reply
from validate import checked, parse_sse
from test_codex import assert_ran, codex, run_codex  # noqa: F401 - the codex fixture

SIG = "CiQBcsjafEXAMPLE+sig/with+slashes=="
TOOL = {"type": "function", "name": "get_weather", "description": "weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False}}


def sse(*chunks: dict) -> list[bytes]:
    return [b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in chunks]


def chunk(*parts: dict, finish: str | None = None, usage: tuple[int, int, int] | None = None) -> dict:
    c: dict = {"candidates": [{"content": {"role": "model", "parts": list(parts)}, "index": 0}], "modelVersion": "gemini-2.5-flash"}
    if finish:
        c["candidates"][0]["finishReason"] = finish
    if usage:
        p, o, t = usage
        c["usageMetadata"] = {"promptTokenCount": p, "candidatesTokenCount": o, "thoughtsTokenCount": t, "totalTokenCount": p + o + t}
    return c


# --- the request -----------------------------------------------------------------------------


def translate(body: dict) -> dict:
    req = parse_create(json.dumps(body).encode())
    out, _ = to_gemini_request(req, input_items(req), DEFAULT_THINKING_BUDGETS)
    return out


def test_request_translation():
    body = translate({
        "model": "g", "instructions": "Be brief.", "tools": [TOOL], "tool_choice": "required",
        "reasoning": {"effort": "low"}, "max_output_tokens": 500, "temperature": 0.2, "stop": "END",
        "input": [
            {"role": "developer", "content": "Use metric."},
            {"role": "user", "content": [{"type": "input_text", "text": "Weather?"},
                                         {"type": "input_image", "image_url": "data:image/png;base64,iVBO"}]},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city": "Oslo"}'},
            {"type": "function_call_output", "call_id": "c1", "output": "-3C"},
        ],
    })
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief.\n\nUse metric."}]}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Weather?"}, {"inlineData": {"mimeType": "image/png", "data": "iVBO"}}]},
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"result": "-3C"}}}]},
    ]
    assert body["tools"] == [{"functionDeclarations": [{"name": "get_weather", "description": "weather", "parametersJsonSchema": TOOL["parameters"]}]}]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    assert body["generationConfig"] == {"maxOutputTokens": 500, "temperature": 0.2, "stopSequences": ["END"],
                                        "thinkingConfig": {"includeThoughts": True, "thinkingBudget": 1024}}


def test_forced_function_and_reasoning_off():
    body = translate({"model": "g", "input": "hi", "tools": [TOOL], "reasoning": {"effort": "none"},
                      "tool_choice": {"type": "function", "name": "get_weather"}})
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}}
    assert body["generationConfig"] == {"thinkingConfig": {"includeThoughts": False, "thinkingBudget": 0}}


def test_error_mapping():
    err = gemini_error(429, b'{"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}}', httpx.Headers({"retry-after": "7"}))
    assert (err.status, err.message, err.type, err.code, err.headers) == (429, "Upstream error: Quota exceeded", "rate_limit_error", "rate_limit_exceeded", {"retry-after": "7"})
    err = gemini_error(400, b'[{"error": {"code": 400, "message": "API key not valid", "status": "INVALID_ARGUMENT"}}]', httpx.Headers())
    assert (err.status, err.message, err.type) == (400, "Upstream error: API key not valid", "invalid_request_error")
    err = gemini_error(503, b'{"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}', httpx.Headers())
    assert err.code == "overloaded"
    assert gemini_error(502, b"<html>bad gateway</html>", httpx.Headers()).message == "Upstream error: <html>bad gateway</html>"


# --- end to end --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gemini_server(upstream_server, tmp_path_factory):
    config = f"""
[providers.gem]
kind = "gemini"
base_url = "{upstream_server.base_url}beta"
api_key = "$GEMINI_TEST_KEY"
thinking_budgets = {{ low = 2048 }}

[[routes]]
model = "*"
provider = "gem"
"""
    server = Server(tmp_path_factory.mktemp("gemini"), ["--api-key", TEST_KEY], config=config, env={"GEMINI_TEST_KEY": "g-key"})
    yield server
    server.stop()


@pytest.fixture
def client(gemini_server):
    return gemini_server.sdk()


def test_text_stream(gemini_server, upstream):
    upstream.queue(Reply(sse(chunk({"text": "Hel"}, usage=(3, 1, 0)), chunk({"text": "lo"}, finish="STOP", usage=(3, 2, 5)))))
    with httpx.stream("POST", gemini_server.url + "/responses", headers={"authorization": f"Bearer {TEST_KEY}"},
                      json={"model": "gemini-2.5-flash", "input": "hi", "stream": True}, timeout=30) as r:
        events = checked(parse_sse(r.read()))
    done = events[-1]["response"]
    assert events[-1]["type"] == "response.completed" and done["output"][0]["content"][0]["text"] == "Hello"
    assert done["usage"]["output_tokens"] == 7 and done["usage"]["output_tokens_details"]["reasoning_tokens"] == 5
    sent = upstream.last
    assert sent["path"] == "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    headers = {k.lower(): v for k, v in sent["headers"].items()}
    assert headers["x-goog-api-key"] == "g-key" and "authorization" not in headers
    assert sent["body"] == {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


def test_tool_loop_sends_the_signature_back(client, upstream):
    upstream.queue(
        Reply(sse(chunk({"text": "Need the weather.", "thought": True}),
                  chunk({"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": SIG},
                        finish="STOP", usage=(20, 5, 9)))),
        Reply(sse(chunk({"text": "Sunny."}, finish="STOP"))),
    )
    first = client.responses.create(model="gemini-2.5-pro", input="Weather in Paris?", tools=[TOOL],
                                    reasoning={"effort": "low"}, store=False, include=["reasoning.encrypted_content"])
    reasoning, call = first.output
    assert reasoning.type == "reasoning" and reasoning.content[0].text == "Need the weather."
    assert reasoning.encrypted_content and SIG not in reasoning.encrypted_content  # sealed for the tenant
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Paris"})
    assert upstream.last["body"]["generationConfig"]["thinkingConfig"] == {"includeThoughts": True, "thinkingBudget": 2048}
    second = client.responses.create(
        model="gemini-2.5-pro", tools=[TOOL], store=False,
        input=[{"role": "user", "content": "Weather in Paris?"}, *[o.model_dump(exclude_none=True) for o in first.output],
               {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 24C"}],
    )
    assert second.output_text == "Sunny."
    assert upstream.last["body"]["contents"] == [
        {"role": "user", "parts": [{"text": "Weather in Paris?"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": SIG}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"result": "sunny, 24C"}}}]},
    ]


def test_previous_response_id_keeps_the_signature(client, upstream):
    upstream.queue(
        Reply(sse(chunk({"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}, "thoughtSignature": SIG}, finish="STOP"))),
        Reply(sse(chunk({"text": "Cold."}, finish="STOP"))),
    )
    first = client.responses.create(model="gemini-2.5-flash", input="Oslo?", tools=[TOOL])
    call = [o for o in first.output if o.type == "function_call"][0]
    second = client.responses.create(model="gemini-2.5-flash", previous_response_id=first.id, tools=[TOOL],
                                     input=[{"type": "function_call_output", "call_id": call.call_id, "output": "-3C"}])
    assert second.output_text == "Cold."
    model_turn = upstream.last["body"]["contents"][1]
    assert model_turn == {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}, "thoughtSignature": SIG}]}


def test_another_tenants_signature_is_refused(gemini_server, upstream):
    upstream.queue(Reply(sse(chunk({"functionCall": {"name": "get_weather", "args": {}}, "thoughtSignature": SIG}, finish="STOP"))))
    client = openai.OpenAI(base_url=gemini_server.url, api_key=TEST_KEY, max_retries=0)
    first = client.responses.create(model="g", input="x", tools=[TOOL], store=False, include=["reasoning.encrypted_content"])
    token = first.output[0].encrypted_content
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    r = httpx.post(gemini_server.url + "/responses", headers={"authorization": f"Bearer {TEST_KEY}"}, timeout=30,
                   json={"model": "g", "input": [{"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": tampered},
                                                 {"role": "user", "content": "again"}]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_encrypted_content"


def test_upstream_errors(client, gemini_server, upstream):
    upstream.queue(Reply(status=429, body=b'{"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}}'))
    with pytest.raises(openai.RateLimitError) as exc:
        client.responses.create(model="g", input="hi")
    assert "Quota exceeded" in str(exc.value)
    upstream.queue(Reply(sse(chunk({"text": "Part"}), {"error": {"code": 500, "message": "Internal error", "status": "INTERNAL"}})))
    with httpx.stream("POST", gemini_server.url + "/responses", headers={"authorization": f"Bearer {TEST_KEY}"},
                      json={"model": "g", "input": "hi", "stream": True}, timeout=30) as r:
        events = checked(parse_sse(r.read()))
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert events[-1]["response"]["error"]["message"] == "Internal error"


def test_safety_block_is_incomplete(client, upstream):
    upstream.queue(Reply(sse({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 4, "totalTokenCount": 4}})))
    r = client.responses.create(model="g", input="something blocked")
    assert r.status == "incomplete" and r.incomplete_details.reason == "content_filter" and r.output == []


def test_input_tokens_asks_gemini(gemini_server, upstream):
    upstream.queue(Reply(body=b'{"totalTokens": 42, "promptTokensDetails": []}'))
    r = httpx.post(gemini_server.url + "/responses/input_tokens", headers={"authorization": f"Bearer {TEST_KEY}"},
                   json={"model": "gemini-2.5-flash", "input": "count me", "instructions": "Be brief."}, timeout=30)
    assert r.status_code == 200 and r.json() == {"object": "response.input_tokens", "input_tokens": 42}
    sent = upstream.last
    assert sent["path"] == "/v1beta/models/gemini-2.5-flash:countTokens"
    assert sent["body"] == {"generateContentRequest": {"model": "models/gemini-2.5-flash", "contents": [{"role": "user", "parts": [{"text": "count me"}]}],
                                                       "systemInstruction": {"parts": [{"text": "Be brief."}]}}}


# --- Codex through Gemini ------------------------------------------------------------------------


def test_codex_tool_loop_and_apply_patch(codex, gemini_server, upstream, tmp_path):
    """The real Codex CLI: an exec_command call carrying a thought signature, then an
    apply_patch call (a custom tool, sent to Gemini as a function with one ``input`` string),
    then the answer; each turn sends the signed call back as Gemini made it."""
    patch = "*** Begin Patch\n*** Add File: hello.txt\n+hello from gemini\n*** End Patch\n"
    upstream.queue(
        Reply(sse(chunk({"text": "I will run it.", "thought": True}),
                  chunk({"functionCall": {"name": "exec_command", "args": {"cmd": "echo hi-from-gemini"}}, "thoughtSignature": SIG},
                        finish="STOP", usage=(900, 10, 30)))),
        Reply(sse(chunk({"functionCall": {"name": "apply_patch", "args": {"input": patch}}, "thoughtSignature": SIG + "2"}, finish="STOP"))),
        Reply(sse(chunk({"text": "Ran it and created hello.txt."}, finish="STOP"))),
    )
    events, work = run_codex(codex, gemini_server.url, tmp_path, "Run echo hi-from-gemini, then create hello.txt")
    assert_ran(events, "hi-from-gemini", "Ran it and created hello.txt.")
    assert (work / "hello.txt").read_text() == "hello from gemini\n"
    assert events[-1]["type"] == "turn.completed"

    assert len(upstream.requests) == 3
    assert all(":streamGenerateContent?alt=sse" in r["path"] for r in upstream.requests)
    first, second, third = (r["body"] for r in upstream.requests)
    assert first["systemInstruction"]["parts"][0]["text"]
    names = {d["name"] for d in first["tools"][0]["functionDeclarations"]}
    assert {"exec_command", "apply_patch"} <= names
    # the second turn: the call back with its signature, then its output by name
    model_turn = [c for c in second["contents"] if c["role"] == "model"][-1]
    assert model_turn["parts"] == [{"functionCall": {"name": "exec_command", "args": {"cmd": "echo hi-from-gemini"}}, "thoughtSignature": SIG}]
    answer = second["contents"][second["contents"].index(model_turn) + 1]["parts"][0]["functionResponse"]
    assert answer["name"] == "exec_command" and "hi-from-gemini" in json.dumps(answer["response"])
    # the third: both signed calls, each with its own signature, apply_patch's input whole
    calls = [p for c in third["contents"] if c["role"] == "model" for p in c["parts"] if "functionCall" in p]
    assert [(p["functionCall"]["name"], p["thoughtSignature"]) for p in calls] == [("exec_command", SIG), ("apply_patch", SIG + "2")]
    assert calls[1]["functionCall"]["args"] == {"input": patch}


# --- a change of provider mid-conversation ------------------------------------------------------


@pytest.fixture(scope="module")
def mixed_server(upstream_server, tmp_path_factory):
    """Gemini and Anthropic behind one respline: a conversation can move between them (a route
    change, a fallback), carrying reasoning items whose signatures only their issuer accepts."""
    config = f"""
[providers.gem]
kind = "gemini"
base_url = "{upstream_server.base_url}beta"
api_key = "g-key"

[providers.ant]
kind = "anthropic"
base_url = "{upstream_server.base_url}"
api_key = "a-key"

[[routes]]
model = "claude-*"
provider = "ant"

[[routes]]
model = "*"
provider = "gem"
"""
    server = Server(tmp_path_factory.mktemp("mixed"), ["--api-key", TEST_KEY], config=config)
    yield server
    server.stop()


def _call_then_switch(client, upstream, first_model: str, city: str, output: str, second_model: str):
    """A weather call (with reasoning) from ``first_model``, then its items and the call's
    ``output`` sent on to ``second_model``: the second response, and what its upstream got."""
    question = f"Weather in {city}?"
    first = client.responses.create(model=first_model, input=question, tools=[TOOL], store=False,
                                    reasoning={"effort": "low"}, include=["reasoning.encrypted_content"])
    call = first.output[-1]
    history = [{"role": "user", "content": question}, *[o.model_dump(exclude_none=True) for o in first.output],
               {"type": "function_call_output", "call_id": call.call_id, "output": output}]
    second = client.responses.create(model=second_model, tools=[TOOL], store=False, input=history)
    return second, upstream.last


def test_a_signature_goes_back_only_to_its_issuer(mixed_server, upstream):
    from upstream_formats import anthropic_text, anthropic_tool

    client = mixed_server.sdk()
    # Gemini's thought and signed call, then the same items sent to Claude
    upstream.queue(
        Reply(sse(chunk({"text": "Need the weather.", "thought": True}),
                  chunk({"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": SIG}, finish="STOP"))),
        Reply(anthropic_text("Sunny.")),
    )
    second, sent = _call_then_switch(client, upstream, "gemini-2.5-pro", "Paris", "sunny", "claude-sonnet")
    assert second.output_text == "Sunny."
    assert sent["path"] == "/v1/messages"
    assistant = [m for m in sent["body"]["messages"] if m["role"] == "assistant"]
    assert [b["type"] for m in assistant for b in m["content"]] == ["tool_use"]  # no thinking block
    assert SIG not in json.dumps(sent["body"])

    # Claude's signed thinking, then the same items sent to Gemini
    upstream.queue(
        Reply(anthropic_tool("get_weather", '{"city": "Oslo"}', thinking="Cold there?", signature="QW50aHJvcGljU2ln")),
        Reply(sse(chunk({"text": "Cold."}, finish="STOP"))),
    )
    second, sent = _call_then_switch(client, upstream, "claude-sonnet", "Oslo", "-3C", "gemini-2.5-pro")
    assert second.output_text == "Cold."
    assert sent["path"] == "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
    model_turn = [c for c in sent["body"]["contents"] if c["role"] == "model"]
    assert model_turn == [{"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}]}]
    assert "QW50aHJvcGljU2ln" not in json.dumps(sent["body"])
