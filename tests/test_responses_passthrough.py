"""Responses-API upstreams passed through: the normaliser (QUIRKS I), the forwarded request,
every Responses-API recording in ../shared/provider-streams, and the openai SDK and the Codex
CLI end to end against a scripted Responses-format upstream.
"""

from __future__ import annotations

import json

import httpx
import pytest

from conftest import NO_RECORDINGS, TEST_KEY, Server, recording, recordings, replay_command
from respline.engine.errors import ApiError
from respline.engine.replay import replay
import sealing
from respline.engine.translate import input_items, parse_create
from respline.engine.translate_responses import to_responses_request
from upstream import Reply
from upstream_formats import ResponsesStream, responses_text, responses_tool, sse
from validate import checked, checked_replay, parse_sse
from test_codex import assert_ran, codex, run_codex  # noqa: F401 - the codex fixture

FOLDERS = ("openai-responses", "azure-openai-responses", "responses-compatible")
SEALER = sealing.SEALER


def run(body: bytes | list[bytes], **options) -> list[dict]:
    pieces = body if isinstance(body, list) else [body]
    return checked_replay(pieces, kind="openai-responses", **options)


def ev(etype: str, **fields) -> bytes:
    return sse(etype, {"type": etype, **fields})


def types_of(events: list[dict]) -> list[str]:
    return [e["type"] for e in events]


# --- the normaliser -------------------------------------------------------------------------------


def test_response_is_respline_s_and_sequence_renumbered():  # QUIRKS I50, I51
    s = ResponsesStream().start().message("Hello there")
    for e in s.events:
        e["sequence_number"] = e["sequence_number"] * 3 + 7  # gaps, not from 0
    events = run(s.completed().pieces())
    first = events[0]["response"]
    assert first["id"].startswith("resp_") and first["id"] != "resp_upstream1"
    assert first["model"] == "replay"  # the requested model, not the upstream's
    assert types_of(events).count("response.created") == 1
    assert events[-1]["response"]["usage"]["total_tokens"] == 15
    assert "obfuscation" not in json.dumps(events)


def test_function_call_ids_become_fc_and_call_id_is_kept():  # QUIRKS I55, E33
    s = ResponsesStream().start().call("f", '{"a": 1}', call_id="call_same", item_id="call_same")
    s.call("g", "{}", call_id="fc_99", item_id="fc_99")  # id equal to call_id, already fc_
    s.call("h", "{}", call_id="c3", item_id="4f1b-uuid")
    items = run(s.completed().pieces())[-1]["response"]["output"]
    assert [i["call_id"] for i in items] == ["call_same", "fc_99", "c3"]
    assert items[0]["id"] == "fc_call_same"
    assert items[1]["id"].startswith("fc_") and items[1]["id"] != "fc_99"
    assert items[2]["id"] == "fc_4f1b-uuid"


def test_rotating_item_ids_stay_stable():  # QUIRKS I57 (GitHub Copilot)
    s = ResponsesStream().start().message("abcdef", pieces=3)
    for n, e in enumerate(s.events):
        if "item_id" in e:
            e["item_id"] = f"rot_{n}"
    events = run(s.completed().pieces())
    ids = {e["item_id"] for e in events if "item_id" in e}
    assert ids == {events[-1]["response"]["output"][0]["id"]}


def test_missing_argument_deltas_are_synthesised():  # QUIRKS I57 (LM Studio)
    s = ResponsesStream().start().call("weather", '{"location":"SF"}', call_id="call_1")
    s.events = [e for e in s.events if e["type"] != "response.function_call_arguments.delta"]
    events = run(s.completed().pieces())
    deltas = [e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"]
    assert deltas == ['{"location":"SF"}']


def test_terminal_output_rebuilt_when_empty_or_partial():
    for output in ([], "first-only"):
        s = ResponsesStream().start().message("one", item_id="msg_a").message("two", item_id="msg_b")
        s.completed()
        s.events[-1]["response"]["output"] = [] if output == [] else s.output[:1]
        final = run(s.pieces())[-1]["response"]
        assert [i["content"][0]["text"] for i in final["output"]] == ["one", "two"]


def test_items_without_part_events_get_them():  # trimmed recordings, QUIRKS I54
    s = ResponsesStream().start().message("whole text")
    s.events = [e for e in s.events if e["type"] in ("response.created", "response.in_progress",
                                                    "response.output_item.added", "response.output_item.done")]
    events = run(s.completed().pieces())
    assert "response.content_part.added" in types_of(events)
    assert [e["delta"] for e in events if e["type"] == "response.output_text.delta"] == ["whole text"]


@pytest.mark.parametrize("shape", ["flat", "nested"])
def test_error_event_fails_the_response(shape):  # QUIRKS I56, SPEC 3.2
    err = {"code": "rate_limit_exceeded", "message": "Slow down", "param": None}
    fields = err if shape == "flat" else {"error": {"type": "too_many_requests", **err}}
    s = ResponsesStream().start()
    pieces = s.pieces() + [ev("error", **fields), ev("response.failed", response={"status": "failed", "output": []})]
    events = run(pieces)
    assert types_of(events)[-2:] == ["error", "response.failed"]
    assert events[-2]["code"] == "rate_limit_exceeded" and events[-2]["message"] == "Slow down"
    assert events[-1]["response"]["error"] == {"code": "rate_limit_exceeded", "message": "Slow down"}


def test_incomplete_closes_the_open_message():  # QUIRKS I56 (xAI)
    s = ResponsesStream().start().message("cut here")
    s.events = [e for e in s.events if e["type"] not in ("response.output_text.done", "response.content_part.done",
                                                        "response.output_item.done")]
    s.add("response.incomplete", response={"status": "incomplete", "incomplete_details": {"reason": "REASON_MAX_LEN"}, "output": []})
    events = run(s.pieces())
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.incomplete"
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["output"][0]["status"] == "incomplete" and final["output"][0]["content"][0]["text"] == "cut here"


def test_stream_without_terminal_fails():
    events = run(ResponsesStream().start().message("x").pieces())
    assert types_of(events)[-2:] == ["error", "response.failed"]


def test_reasoning_encrypted_from_done_and_dialects():  # QUIRKS I53, SPEC 0.1
    s = ResponsesStream().start().reasoning("ENC-final", summary="Thinking it over.").message("ok")
    final = run(s.completed().pieces())[-1]["response"]
    assert final["output"][0]["encrypted_content"] == "ENC-final"
    assert final["output"][0]["summary"] == [{"type": "summary_text", "text": "Thinking it over."}]
    # raw reasoning text (LM Studio, OpenRouter) follows the configured dialect
    raw = ResponsesStream().start()
    raw.add("response.output_item.added", output_index=0, item={"id": "rs_r", "type": "reasoning", "summary": []})
    raw.add("response.content_part.added", item_id="rs_r", output_index=0, content_index=0, part={"type": "reasoning_text", "text": ""})
    raw.add("response.reasoning_text.delta", item_id="rs_r", output_index=0, content_index=0, delta="raw thought")
    raw.add("response.reasoning_text.done", item_id="rs_r", output_index=0, content_index=0, text="raw thought")
    raw.add("response.content_part.done", item_id="rs_r", output_index=0, content_index=0, part={"type": "reasoning_text", "text": "raw thought"})
    raw.add("response.output_item.done", output_index=0, item={"id": "rs_r", "type": "reasoning", "summary": [],
                                                               "content": [{"type": "reasoning_text", "text": "raw thought"}]})
    raw.completed()
    assert "response.reasoning_text.delta" in types_of(run(raw.pieces()))
    assert "response.reasoning.delta" in types_of(run(raw.pieces(), reasoning_dialect="openresponses"))
    summary = run(raw.pieces(), reasoning_dialect="summary")
    assert summary[-1]["response"]["output"][0]["summary"] == [{"type": "summary_text", "text": "raw thought"}]


def test_no_event_lines_and_done_marker():  # QUIRKS I49 (OpenRouter)
    pieces = [b": OPENROUTER PROCESSING\n\n"] + ResponsesStream().start().message("hi").completed().pieces(event_lines=False)
    assert run(pieces)[-1]["response"]["output"][0]["content"][0]["text"] == "hi"


def test_any_split_gives_same_frames():
    data = b"".join(ResponsesStream().start().reasoning("E", summary="s").message("héllo ✓").call("f", '{"x": 1}', "c").completed().pieces())
    whole = replay([data], kind="openai-responses")
    for size in (1, 2, 7, 64):
        assert replay([data[i : i + size] for i in range(0, len(data), size)], kind="openai-responses") == whole


# --- every recorded Responses-API stream -----------------------------------------------------------

RECORDINGS = recordings(*FOLDERS)


@pytest.mark.skipif(not RECORDINGS, reason=NO_RECORDINGS)
def test_found_the_recordings():
    assert len(RECORDINGS) >= 19


@pytest.mark.skipif(not RECORDINGS, reason=NO_RECORDINGS)
@pytest.mark.parametrize("name", RECORDINGS)
def test_recording_replays_and_validates(name):
    data = recording(name)
    events = run(data)
    assert events[-1]["response"]["status"] in ("completed", "incomplete", "failed")
    pieces = [data[i : i + 11] for i in range(0, len(data), 11)]
    assert replay(pieces, kind="openai-responses") == replay([data], kind="openai-responses")


def _final(name: str) -> dict:
    return run(recording(name))[-1]["response"]


@pytest.mark.skipif(not RECORDINGS, reason=NO_RECORDINGS)
def test_recorded_outcomes():
    assert _final("openai-responses/gpt-5-nano_error-event_response-failed.chunks.jsonl")["error"]["code"] == "insufficient_quota"
    inc = _final("responses-compatible/xai_grok-3-mini-high_reasoning_incomplete.chunks.jsonl")
    assert inc["status"] == "incomplete" and [i["status"] for i in inc["output"]] == ["completed", "incomplete"]
    assert all(i["id"].startswith(("rs_", "msg_")) for i in inc["output"])  # xAI's bare UUIDs prefixed
    # trimmed by its recorder: no terminal event at all, so it is a cut stream
    assert _final("openai-responses/o3_reasoning-no-summary_TRIMMED-deltas-removed.chunks.jsonl")["status"] == "failed"


@pytest.mark.skipif(not RECORDINGS, reason=NO_RECORDINGS)
def test_recorded_lmstudio_call_without_deltas():  # QUIRKS I57
    resp = _final("responses-compatible/lmstudio_glm-4.7-flash_reasoning_text_message_function-call-no-arg-deltas.chunks.jsonl")
    assert [i["type"] for i in resp["output"]] == ["reasoning", "message", "function_call"]
    call = resp["output"][2]
    assert json.loads(call["arguments"]) == {"location": "San Francisco"} and call["id"].startswith("fc_")


@pytest.mark.skipif(not RECORDINGS, reason=NO_RECORDINGS)
def test_recorded_encrypted_reasoning_from_done():  # QUIRKS I53
    name = "openai-responses/gpt-5_reasoning-encrypted_function-call.sse"
    done = [json.loads(line[5:]) for line in recording(name).decode().splitlines()
            if line.startswith("data:") and '"response.output_item.done"' in line][0]
    resp = _final(name)
    assert resp["output"][0]["encrypted_content"] == done["item"]["encrypted_content"]
    assert resp["output"][0]["id"] == done["item"]["id"]


@pytest.mark.skipif(not RECORDINGS, reason=NO_RECORDINGS)
def test_recorded_web_search_passes_through():
    events = run(recording("openai-responses/gpt-5_web-search_reasoning-encrypted.sse"))
    resp = events[-1]["response"]
    assert [i["type"] for i in resp["output"]] == ["reasoning", "web_search_call", "reasoning", "message"]
    assert "response.web_search_call.searching" in types_of(events)
    assert resp["output"][1]["action"]["query"] == "weather: San Francisco, CA"


# --- the forwarded request --------------------------------------------------------------------------


def forward(body: dict, drop=(), upstream_model: str = "up-model") -> dict:
    req = parse_create(json.dumps({"model": "m", **body}).encode())
    return to_responses_request(req, input_items(req), upstream_model, drop, sealing.unseal)


def test_request_is_forwarded_with_state_taken_out():
    body = forward({
        "input": [{"role": "user", "content": "hi", "id": "msg_mine"},
                  {"type": "function_call", "id": "fc_mine", "call_id": "c1", "name": "f", "arguments": "{}"},
                  {"type": "function_call_output", "call_id": "c1", "output": "ok", "success": False},
                  {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search"}}],
        "instructions": "Be brief.",
        "tools": [{"type": "web_search"}, {"type": "function", "name": "f", "parameters": {}}],
        "reasoning": {"effort": "high", "summary": "auto"},
        "include": ["reasoning.encrypted_content"],
        "previous_response_id": "resp_1",
        "background": False,
        "stream_options": {"include_obfuscation": False},
        "store": False,
        "max_output_tokens": 99,
    }, drop=("reasoning.summary", "include"))
    assert body["model"] == "up-model" and body["stream"] is True
    assert body["input"] == [
        {"role": "user", "content": "hi", "type": "message"},
        {"call_id": "c1", "name": "f", "arguments": "{}", "type": "function_call"},
        {"call_id": "c1", "output": "ok", "type": "function_call_output"},
        {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search"}},
    ]
    assert body["tools"][0] == {"type": "web_search"}  # hosted tools go through
    assert body["reasoning"] == {"effort": "high"} and "include" not in body
    for gone in ("previous_response_id", "background", "stream_options"):
        assert gone not in body
    assert body["store"] is False and body["max_output_tokens"] == 99 and body["instructions"] == "Be brief."


def test_reasoning_and_compaction_items():
    summary = SEALER.seal_summary(sealing.TENANT, "we did X")
    body = forward({"input": [
        {"type": "compaction", "encrypted_content": summary},
        {"type": "reasoning", "id": "rs_up", "summary": [], "encrypted_content": "gAAAA-upstream"},
        {"type": "reasoning", "id": "rs_ours", "summary": [], "encrypted_content": sealing.seal_reasoning("other provider")},
        {"type": "compaction", "id": "cmp_up", "encrypted_content": "upstream-compaction"},
    ]})
    assert body["input"] == [
        {"type": "message", "role": "user", "content": "Summary of the conversation so far:\nwe did X"},
        {"type": "reasoning", "summary": [], "id": "rs_up", "encrypted_content": "gAAAA-upstream"},
        {"encrypted_content": "upstream-compaction", "type": "compaction", "id": "cmp_up"},
    ]
    # respline's format that does not open (another tenant's here): refused, never forwarded
    for item in (
        {"type": "compaction", "encrypted_content": SEALER.seal_summary("tenant:other", "their X")},
        {"type": "reasoning", "summary": [], "encrypted_content": SEALER.seal_reasoning("tenant:other", "their thought")},
    ):
        with pytest.raises(ApiError) as info:
            forward({"input": [{"role": "user", "content": "x"}, item]})
        assert (info.value.status, info.value.code, info.value.param) == (400, "invalid_encrypted_content", "input[1].encrypted_content")


# --- end to end -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def passthrough_server(upstream_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("passthrough")
    config = f"""
[providers.up]
kind = "openai-responses"
base_url = "{upstream_server.base_url}"
api_key = "$RESPONSES_TEST_KEY"
drop_fields = ["prompt_cache_key"]

[[routes]]
model = "*"
provider = "up"
"""
    server = Server(tmp, ["--api-key", TEST_KEY], config=config, env={"RESPONSES_TEST_KEY": "sk-up-test"})
    yield server
    server.stop()


@pytest.fixture
def client(passthrough_server):
    return passthrough_server.sdk()


def test_sdk_stream_through_passthrough(client, upstream):
    upstream.queue(Reply(responses_text("Hello from upstream")))
    events = list(client.responses.create(model="gpt-x", input="hi", stream=True, prompt_cache_key="k"))
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "Hello from upstream"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    sent = upstream.last
    assert sent["path"] == "/v1/responses"
    assert {k.lower(): v for k, v in sent["headers"].items()}["authorization"] == "Bearer sk-up-test"
    assert sent["body"]["model"] == "gpt-x" and sent["body"]["stream"] is True
    assert "prompt_cache_key" not in sent["body"]  # drop_fields


def test_sdk_tool_loop_with_previous_response_id(client, upstream):
    upstream.queue(
        Reply(responses_tool("get_weather", '{"city": "Rome"}', call_id="call_up_7", reasoning="ENC-1")),
        Reply(responses_text("Warm in Rome.")),
    )
    tool = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
    first = client.responses.create(model="gpt-x", input="Weather in Rome?", tools=[tool])
    call = [o for o in first.output if o.type == "function_call"][0]
    assert call.call_id == "call_up_7" and call.id.startswith("fc_")
    second = client.responses.create(model="gpt-x", previous_response_id=first.id, tools=[tool],
                                     input=[{"type": "function_call_output", "call_id": "call_up_7", "output": "25C"}])
    assert second.output_text == "Warm in Rome."
    body = upstream.requests[-1]["body"]
    assert "previous_response_id" not in body
    assert [i.get("type") for i in body["input"]] == ["message", "reasoning", "function_call", "function_call_output"]
    assert body["input"][1]["encrypted_content"] == "ENC-1" and body["input"][1]["id"] == "rs_up1"
    assert body["input"][2]["call_id"] == "call_up_7"


def test_upstream_errors(passthrough_server, upstream):
    upstream.queue(Reply(status=429, body=b'{"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}',
                         headers={"retry-after": "2"}))
    r = httpx.post(passthrough_server.url + "/responses", json={"model": "gpt-x", "input": "hi"},
                   headers={"authorization": f"Bearer {TEST_KEY}"}, timeout=30)
    assert r.status_code == 429 and r.headers["retry-after"] == "2"
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    upstream.queue(Reply(ResponsesStream().start().pieces() + [ev("error", code="server_error", message="boom", param=None)]))
    r = httpx.post(passthrough_server.url + "/responses", json={"model": "gpt-x", "input": "hi", "stream": True},
                   headers={"authorization": f"Bearer {TEST_KEY}"}, timeout=30)
    events = parse_sse(r.content)
    checked(events)
    assert types_of(events)[-2:] == ["error", "response.failed"]


def test_codex_tool_loop_through_passthrough(codex, passthrough_server, upstream, tmp_path):
    upstream.queue(
        Reply(responses_tool("exec_command", '{"cmd": "echo hi-from-responses"}', call_id="call_codex_r", reasoning="ENC-CODEX")),
        Reply(responses_text("The command printed hi-from-responses.")),
    )
    events, _ = run_codex(codex, passthrough_server.url, tmp_path, "Run echo hi-from-responses and report the output")
    assert_ran(events, "hi-from-responses", "The command printed hi-from-responses.")
    first, second = (r["body"] for r in upstream.requests)
    assert first["include"] == ["reasoning.encrypted_content"] and first["store"] is False
    kinds = [i.get("type") for i in second["input"]]
    assert "reasoning" in kinds and "function_call" in kinds and "function_call_output" in kinds
    reasoning = [i for i in second["input"] if i.get("type") == "reasoning"][0]
    assert reasoning["encrypted_content"] == "ENC-CODEX"  # the upstream's own, verbatim
    call = [i for i in second["input"] if i.get("type") == "function_call"][0]
    assert call["call_id"] == "call_codex_r"
    output = [i for i in second["input"] if i.get("type") == "function_call_output"][0]
    assert "hi-from-responses" in json.dumps(output["output"])


def test_replay_command_knows_openai_responses(tmp_path):
    events = replay_command(tmp_path, "openai-responses", b"".join(responses_text("Replayed")))
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "Replayed"


def test_a_part_of_an_unknown_type_streams_as_the_item_s_own_text():
    """An upstream part type this gateway does not know (a newer API's, a provider's own) is
    not passed on as-is: a message's becomes output_text and a reasoning item's reasoning_text,
    so every event that follows is one the client's models know, and the text is not lost."""
    s = ResponsesStream().start()
    loc = {"item_id": "msg_u", "output_index": 0, "content_index": 0}
    rloc = {"item_id": "rs_u", "output_index": 1, "content_index": 0}
    s.events += [
        {"type": "response.output_item.added", "output_index": 0,
         "item": {"id": "msg_u", "type": "message", "role": "assistant", "status": "in_progress", "content": []}},
        {"type": "response.content_part.added", **loc, "part": {"type": "output_future", "text": ""}},
        {"type": "response.output_text.delta", **loc, "delta": "Hel"},
        {"type": "response.output_text.delta", **loc, "delta": "lo"},
        {"type": "response.output_text.done", **loc, "text": "Hello"},
        {"type": "response.content_part.done", **loc, "part": {"type": "output_future", "text": "Hello"}},
        {"type": "response.output_item.done", "output_index": 0,
         "item": {"id": "msg_u", "type": "message", "role": "assistant", "status": "completed",
                  "content": [{"type": "output_future", "text": "Hello"}]}},
        {"type": "response.output_item.added", "output_index": 1,
         "item": {"id": "rs_u", "type": "reasoning", "summary": [], "content": []}},
        {"type": "response.content_part.added", **rloc, "part": {"type": "thinking_future", "text": ""}},
        {"type": "response.reasoning_text.delta", **rloc, "delta": "hmm"},
        {"type": "response.reasoning_text.done", **rloc, "text": "hmm"},
        {"type": "response.content_part.done", **rloc, "part": {"type": "thinking_future", "text": "hmm"}},
        {"type": "response.output_item.done", "output_index": 1,
         "item": {"id": "rs_u", "type": "reasoning", "summary": [], "content": [{"type": "thinking_future", "text": "hmm"}]}},
    ]
    for n, e in enumerate(s.events):
        e["sequence_number"] = n
    events = run(s.completed().pieces())
    body = json.dumps(events)
    assert "output_future" not in body and "thinking_future" not in body
    assert "response.refusal.delta" not in types_of(events)
    assert [e["delta"] for e in events if e["type"] == "response.output_text.delta"] == ["Hel", "lo"]
    assert [e["delta"] for e in events if e["type"] == "response.reasoning_text.delta"] == ["hmm"]
    parts = [e["part"] for e in events if e["type"] == "response.content_part.done"]
    assert parts[0]["type"] == "output_text" and parts[0]["text"] == "Hello"
    assert parts[1] == {"type": "reasoning_text", "text": "hmm"}
    final = events[-1]["response"]["output"]
    assert final[0]["content"][0]["type"] == "output_text" and final[0]["content"][0]["text"] == "Hello"
    assert final[1]["content"] == [{"type": "reasoning_text", "text": "hmm"}]
