"""Anthropic Messages upstreams: the decoder (SPEC 7, QUIRKS G), the request translation, the
error mapping, every Anthropic recording in ../shared/provider-streams, and the openai SDK end
to end against a scripted Anthropic-format upstream (a tool loop with thinking carried across).
"""

from __future__ import annotations

import json

import httpx
import msgspec
import pytest

from conftest import NO_RECORDINGS, TEST_KEY, Server, recording, recordings, replay_command
from respline.engine.deltas import (
    Finish,
    ItemBreak,
    ReasoningDelta,
    ReasoningSignature,
    RedactedReasoning,
    RefusalDelta,
    TextDelta,
    ToolCallArgs,
    ToolCallEnd,
    ToolCallStart,
    UpstreamError,
    UsageDelta,
)
from respline.engine.errors import ApiError
from respline.engine.ids import deterministic
from respline.engine.replay import replay
from respline.engine.seal import Sealer
import sealing
from respline.engine.stages.anthropic_decoder import AnthropicDecoder
from respline.engine.stages.sse import SseEvent
from respline.engine.translate import input_items, parse_create
from respline.engine.translate_anthropic import AnthropicDialect, to_anthropic_request
from respline.adapters.providers.anthropic import anthropic_error
from upstream import Reply
from upstream_formats import a_end, a_start, a_text, a_thinking, a_tool, anthropic_text, anthropic_tool, sse
from validate import checked, checked_replay, parse_sse
from test_codex import assert_ran, codex, run_codex  # noqa: F401 - the codex fixture

SEALER = sealing.SEALER


# --- the decoder, one event at a time ------------------------------------------------------------


def decode(*events: dict) -> list:
    dec = AnthropicDecoder()
    out: list = []
    for e in events:
        out += dec.feed(SseEvent(e["type"].encode(), json.dumps(e).encode()))
    return out + dec.close()


def block_start(i, block):
    return {"type": "content_block_start", "index": i, "content_block": block}


def block_delta(i, delta):
    return {"type": "content_block_delta", "index": i, "delta": delta}


def block_stop(i):
    return {"type": "content_block_stop", "index": i}


def message_delta(stop, **usage):
    return {"type": "message_delta", "delta": {"stop_reason": stop}, "usage": usage}


STOP = {"type": "message_stop"}
PING = {"type": "ping"}


def test_tool_use_placeholder_input_is_never_arguments():  # QUIRKS G40, E32
    out = decode(
        block_start(0, {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}),
        PING,
        block_delta(0, {"type": "input_json_delta", "partial_json": ""}),
        block_delta(0, {"type": "input_json_delta", "partial_json": '{"a":'}),
        block_delta(0, {"type": "input_json_delta", "partial_json": " 1}"}),
        block_stop(0),
        message_delta("tool_use", output_tokens=3),
        STOP,
    )
    calls = [d for d in out if type(d) in (ToolCallStart, ToolCallArgs, ToolCallEnd)]
    assert calls == [ToolCallStart("toolu_1", "f"), ToolCallArgs('{"a":'), ToolCallArgs(" 1}"), ToolCallEnd()]
    assert Finish("tool_calls") in out


def test_tool_use_input_given_whole_at_start():
    out = decode(block_start(0, {"type": "tool_use", "id": "t", "name": "f", "input": {"x": 1}}), block_stop(0),
                 message_delta("tool_use"), STOP)
    assert ToolCallArgs('{"x":1}') in out


def test_thinking_signature_and_redacted():  # QUIRKS G42
    out = decode(
        block_start(0, {"type": "thinking", "thinking": "", "signature": ""}),
        block_delta(0, {"type": "thinking_delta", "thinking": "Hmm"}),
        block_delta(0, {"type": "thinking_delta", "thinking": ""}),
        block_delta(0, {"type": "signature_delta", "signature": "SIG"}),
        block_stop(0),
        block_start(1, {"type": "redacted_thinking", "data": "OPAQUE"}),
        block_stop(1),
        block_start(2, {"type": "thinking", "thinking": "", "signature": ""}),
        block_delta(2, {"type": "signature_delta", "signature": "ONLY"}),
        block_stop(2),
        message_delta("end_turn"),
        STOP,
    )
    assert [d for d in out if type(d) not in (UsageDelta, Finish)] == [
        ReasoningDelta("Hmm"),
        ReasoningSignature("SIG"),
        RedactedReasoning("OPAQUE"),
        ReasoningSignature("ONLY"),
    ]


def test_server_tool_blocks_are_not_function_calls():  # QUIRKS G45
    out = decode(
        block_start(0, {"type": "text", "text": ""}),
        block_delta(0, {"type": "text_delta", "text": "Searching."}),
        block_stop(0),
        block_start(1, {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}),
        block_delta(1, {"type": "input_json_delta", "partial_json": '{"query": "x"}'}),
        block_stop(1),
        block_start(2, {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []}),
        block_stop(2),
        block_start(3, {"type": "text", "text": "", "citations": []}),
        block_delta(3, {"type": "citations_delta", "citation": {"type": "web_search_result_location"}}),
        block_delta(3, {"type": "text_delta", "text": "Found."}),
        block_stop(3),
        message_delta("end_turn"),
        STOP,
    )
    kinds = [type(d) for d in out if type(d) is not UsageDelta]
    assert ToolCallStart not in kinds and ToolCallArgs not in kinds
    assert [d for d in out if type(d) in (TextDelta, ItemBreak)] == [TextDelta("Searching."), ItemBreak(), TextDelta("Found.")]


def test_whitespace_only_text_block_dropped_unless_between_texts():  # QUIRKS G43
    def texts(*blocks):
        events = []
        for i, (kind, text) in enumerate(blocks):
            if kind == "text":
                events += [block_start(i, {"type": "text", "text": ""}), block_delta(i, {"type": "text_delta", "text": text}), block_stop(i)]
            else:
                events += [block_start(i, {"type": "thinking", "thinking": ""}), block_delta(i, {"type": "thinking_delta", "thinking": text}),
                           block_delta(i, {"type": "signature_delta", "signature": "s"}), block_stop(i)]
        return [d.text for d in decode(*events, message_delta("end_turn"), STOP) if type(d) is TextDelta]

    assert texts(("text", "\n\n"), ("thinking", "t"), ("text", "Answer")) == ["Answer"]
    assert texts(("text", "a"), ("text", " "), ("text", "b")) == ["a", " b"]
    assert texts(("text", "a"), ("text", "\n"), ("thinking", "t")) == ["a"]


@pytest.mark.parametrize(
    ("stop", "expected"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("tool_use", "tool_calls"), ("pause_turn", "stop"),
     ("max_tokens", "length"), ("something_new", "stop")],
)
def test_stop_reasons(stop, expected):  # QUIRKS G47
    out = decode(message_delta(stop), STOP)
    assert Finish(expected) in out


def test_refusal_and_context_window():  # QUIRKS G47
    out = decode({"type": "message_delta", "delta": {"stop_reason": "refusal", "stop_details": {"explanation": "No."}}}, STOP)
    assert out[-2:] == [RefusalDelta("No."), Finish("stop")]
    out = decode(message_delta("refusal"), STOP)
    assert type(out[-2]) is RefusalDelta and out[-2].text
    out = decode(message_delta("model_context_window_exceeded"), STOP)
    err = [d for d in out if type(d) is UpstreamError][0]
    assert err.code == "context_length_exceeded"


def test_usage_folds_cache_into_input():  # QUIRKS G46
    out = decode(
        {"type": "message_start", "message": {"usage": {"input_tokens": 5, "cache_read_input_tokens": 100,
                                                         "cache_creation_input_tokens": 20, "output_tokens": 1}}},
        message_delta("end_turn", input_tokens=7, output_tokens=30, output_tokens_details={"thinking_tokens": 12}),
        STOP,
    )
    usage = [d for d in out if type(d) is UsageDelta][-1]
    assert usage == UsageDelta(input_tokens=127, output_tokens=30, total_tokens=157, cached_tokens=100,
                               cache_write_tokens=20, reasoning_tokens=12)


def test_error_event_and_cut_stream():
    out = decode(block_start(0, {"type": "text", "text": ""}),
                 {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    assert out[-1] == UpstreamError(message="Overloaded", type="overloaded_error", code="overloaded_error")
    out = decode(block_start(0, {"type": "text", "text": ""}), block_delta(0, {"type": "text_delta", "text": "a"}))
    assert type(out[-1]) is UpstreamError and "message_stop" in out[-1].message


# --- whole streams through the pipeline ------------------------------------------------------------


def run(body: bytes, **options) -> list[dict]:
    return checked_replay([body], kind="anthropic", **options)


def test_thinking_sealed_with_signature():
    body = b"".join([a_start(), *a_thinking(0, "Let me think.", "SIG-123"), *a_text(1, "Hi"), *a_end()])
    ids, clock = deterministic()
    events = run(body, ids=ids, clock=clock, seal_reasoning=sealing.seal_reasoning)
    reasoning, message = events[-1]["response"]["output"]
    assert reasoning["content"] == [{"type": "reasoning_text", "text": "Let me think."}]
    assert sealing.open_reasoning(reasoning["encrypted_content"]) == {"text": "Let me think.", "signature": "SIG-123"}
    assert message["content"][0]["text"] == "Hi"


def test_signature_only_and_redacted_have_no_empty_parts():  # QUIRKS G42
    body = b"".join([
        a_start(),
        sse("content_block_start", block_start(0, {"type": "thinking", "thinking": "", "signature": ""})),
        sse("content_block_delta", block_delta(0, {"type": "signature_delta", "signature": "S"})),
        sse("content_block_stop", block_stop(0)),
        sse("content_block_start", block_start(1, {"type": "redacted_thinking", "data": "D"})),
        sse("content_block_stop", block_stop(1)),
        *a_text(2, "ok"),
        *a_end(),
    ])
    for dialect in ("openai", "summary"):
        events = run(body, reasoning_dialect=dialect, seal_reasoning=sealing.seal_reasoning)
        types = [e["type"] for e in events]
        assert "response.content_part.added" in types  # the message's
        assert not any(t.startswith("response.reasoning") for t in types)
        first, second, _ = events[-1]["response"]["output"]
        assert first["summary"] == [] and not first.get("content")
        assert sealing.open_reasoning(first["encrypted_content"]) == {"text": "", "signature": "S"}
        assert sealing.open_reasoning(second["encrypted_content"]) == {"text": "", "redacted": "D"}


def test_no_content_blocks_refusal_completes():  # QUIRKS G47
    body = b"".join([a_start(), sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": "refusal"}}), sse("message_stop", STOP)])
    events = run(body)
    assert events[-1]["type"] == "response.completed"
    (msg,) = events[-1]["response"]["output"]
    assert msg["content"][0]["type"] == "refusal"


def test_max_tokens_is_incomplete():
    body = b"".join([a_start(), *a_text(0, "cut"), *a_end("max_tokens")])
    events = run(body)
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_context_window_exceeded_fails_with_codex_code():
    body = b"".join([a_start(), *a_text(0, "partial"), *a_end("model_context_window_exceeded")])
    events = run(body)
    assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
    assert events[-1]["response"]["error"]["code"] == "context_length_exceeded"
    assert events[-1]["response"]["output"][0]["status"] == "incomplete"


def test_midstream_error_event_fails():
    body = b"".join([a_start(), *a_text(0, "x"), sse("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})])
    events = run(body)
    assert events[-2]["code"] == "overloaded_error" and events[-2]["message"] == "Overloaded"
    assert events[-1]["response"]["error"] == {"code": "server_error", "message": "Overloaded"}


# --- every recorded Anthropic stream ---------------------------------------------------------------

RECORDINGS = recordings("anthropic")


@pytest.mark.skipif(not RECORDINGS, reason=NO_RECORDINGS)
def test_found_the_recordings():
    assert len(RECORDINGS) >= 10


@pytest.mark.skipif(not RECORDINGS, reason=NO_RECORDINGS)
@pytest.mark.parametrize("name", RECORDINGS)
def test_recording_replays_and_validates(name):
    data = recording(name)
    events = run(data, seal_reasoning=sealing.seal_reasoning)
    assert events[-1]["response"]["status"] == "completed"  # none of these fails or is cut
    pieces = [data[i : i + 5] for i in range(0, len(data), 5)]
    assert replay(pieces, kind="anthropic") == replay([data], kind="anthropic")


def _final(name: str, **options) -> dict:
    return run(recording("anthropic/" + name), **options)[-1]["response"]


@pytest.mark.skipif(not RECORDINGS, reason=NO_RECORDINGS)
def test_recorded_thinking_then_tool_use():  # QUIRKS G40, G42, E32
    resp = _final("claude-haiku-4-5_thinking-then-tool_use.sse", seal_reasoning=sealing.seal_reasoning)
    reasoning, call = resp["output"]
    opened = sealing.open_reasoning(reasoning["encrypted_content"])
    assert opened["signature"].startswith("EoQDCm0IDhgCKkCDzGs2")
    assert opened["text"] == reasoning["content"][0]["text"]
    assert (call["call_id"], call["name"], call["arguments"]) == ("toolu_01825dXWLSoJwCst1qTsiWdb", "fixed_version", "{}")
    assert resp["usage"]["output_tokens_details"]["reasoning_tokens"] == 53


@pytest.mark.skipif(not RECORDINGS, reason=NO_RECORDINGS)
def test_recorded_parallel_tool_use():  # QUIRKS G44, A6
    calls = _final("claude-sonnet-4-5_parallel-tool_use_3_whitespace-padded.chunks.jsonl")["output"]
    assert [json.loads(c["arguments"]) for c in calls] == [{"query": "alpha"}, {"query": "beta"}, {"query": "gamma"}]
    assert len({c["id"] for c in calls}) == 3 and all(c["call_id"].startswith("toolu_") for c in calls)


@pytest.mark.skipif(not RECORDINGS, reason=NO_RECORDINGS)
def test_recorded_redacted_thinking():  # QUIRKS G42
    resp = _final("claude-sonnet-4-5_redacted_thinking.sse", seal_reasoning=sealing.seal_reasoning)
    first, second, message = resp["output"]
    assert sealing.open_reasoning(first["encrypted_content"])["redacted"].startswith("EqkECkYIBxgC")
    assert sealing.open_reasoning(second["encrypted_content"])["redacted"].startswith("EtgBCkYIBxgC")
    assert message["content"][0]["text"].startswith("I notice that you've sent")


@pytest.mark.skipif(not RECORDINGS, reason=NO_RECORDINGS)
def test_recorded_web_search_and_pause_turn():  # QUIRKS G45, G47
    resp = _final("claude-sonnet-4_web-search_citations.chunks.jsonl")
    assert [i["type"] for i in resp["output"]] == ["message"]
    assert resp["output"][0]["content"][0]["text"].startswith("Based on my search results")
    resp = _final("claude-sonnet-4-5_pause_turn_web-search.sse")
    assert [i["type"] for i in resp["output"]] == ["reasoning", "message", "message", "message"]
    assert resp["status"] == "completed"
    assert resp["usage"]["input_tokens"] == 404500


@pytest.mark.skipif(not RECORDINGS, reason=NO_RECORDINGS)
def test_recorded_refusal_without_content_blocks():  # QUIRKS G47
    (msg,) = _final("claude-fable-5_refusal_no-content-blocks_EDITED-ID.chunks.jsonl")["output"]
    assert msg["content"] == [{"type": "refusal", "refusal": "This request triggered restrictions on violative cyber "
                               "content and was blocked under Anthropic's Usage Policy."}]


# --- request translation ----------------------------------------------------------------------------


def translate(body: dict, dialect: AnthropicDialect | None = None, unseal=sealing.unseal) -> dict:
    req = parse_create(json.dumps({"model": "m", **body}).encode())
    out, _ = to_anthropic_request(req, input_items(req), "claude-up", dialect or AnthropicDialect(), unseal)
    return out


TOOL = {"type": "function", "name": "get_weather", "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}


def test_request_basics():
    body = translate({
        "instructions": "Be brief.",
        "input": [
            {"role": "developer", "content": "Dev rules."},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "output_text", "text": "hello"}]},
            {"role": "user", "content": [{"type": "input_text", "text": "again"}]},
        ],
        "temperature": 0.3,
        "stop": "END",
        "safety_identifier": "user-7",
    })
    assert body["model"] == "claude-up"
    assert body["system"] == "Be brief.\n\nDev rules."
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "hello"}]},
        {"role": "user", "content": [{"type": "text", "text": "again"}]},
    ]
    assert body["max_tokens"] == 8192 and body["temperature"] == 0.3 and body["stream"] is True
    assert body["stop_sequences"] == ["END"] and body["metadata"] == {"user_id": "user-7"}
    assert "thinking" not in body


def test_tool_loop_translation():
    body = translate({
        "tools": [TOOL, {"type": "custom", "name": "apply_patch", "description": "Patch"}],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "input": [
            {"role": "user", "content": "weather?"},
            {"type": "function_call", "call_id": "toolu_a", "name": "get_weather", "arguments": '{"city": "Paris"}'},
            {"type": "function_call", "call_id": "toolu_b", "name": "get_weather", "arguments": ""},
            {"type": "function_call_output", "call_id": "toolu_a", "output": "sunny"},
            {"type": "function_call_output", "call_id": "toolu_b", "output": '{"error": "x", "is_error": true}'},
            {"type": "custom_tool_call", "call_id": "toolu_c", "name": "apply_patch", "input": "*** Begin Patch"},
            {"type": "custom_tool_call_output", "call_id": "toolu_c", "output": [{"type": "input_text", "text": "done"}]},
        ],
    })
    assert body["tools"][0] == {"name": "get_weather", "input_schema": TOOL["parameters"], "description": "Weather"}
    assert body["tools"][1]["input_schema"]["required"] == ["input"]
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    user, assistant, results, assistant2, results2 = body["messages"]
    assert assistant["content"] == [
        {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_b", "name": "get_weather", "input": {}},
    ]
    assert results["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_a", "content": "sunny"},
        {"type": "tool_result", "tool_use_id": "toolu_b", "content": '{"error": "x", "is_error": true}', "is_error": True},
    ]
    assert assistant2["content"][0]["input"] == {"input": "*** Begin Patch"}
    assert results2["content"] == [{"type": "tool_result", "tool_use_id": "toolu_c", "content": [{"type": "text", "text": "done"}]}]


def test_tool_choice_forms():
    assert translate({"tools": [TOOL], "input": "x"}).get("tool_choice") is None
    assert translate({"tools": [TOOL], "tool_choice": "auto", "input": "x"})["tool_choice"] == {"type": "auto"}
    assert translate({"tools": [TOOL], "tool_choice": "none", "input": "x"})["tool_choice"] == {"type": "none"}
    named = translate({"tools": [TOOL], "tool_choice": {"type": "function", "name": "get_weather"}, "input": "x"})
    assert named["tool_choice"] == {"type": "tool", "name": "get_weather"}


def test_tool_result_first_and_is_error_from_success_flag():
    body = translate({"input": [
        {"type": "function_call", "call_id": "t1", "name": "f", "arguments": "{}"},
        {"role": "user", "content": "and also"},
        {"type": "function_call_output", "call_id": "t1", "output": "boom", "success": False},
    ]})
    assert body["messages"][1]["content"] == [
        {"type": "tool_result", "tool_use_id": "t1", "content": "boom", "is_error": True},
        {"type": "text", "text": "and also"},
    ]
    # a conversation with tool blocks but no tools offered declares them (Anthropic requires it)
    assert body["tools"] == [{"name": "f", "input_schema": {"type": "object"}}]
    assert body["tool_choice"] == {"type": "none"}


def test_thinking_budget_and_max_tokens():
    body = translate({"input": "x", "reasoning": {"effort": "medium"}})
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 8192}
    assert body["max_tokens"] == 8192 + 8192
    body = translate({"input": "x", "reasoning": {"effort": "high"}, "max_output_tokens": 5000, "temperature": 0.5})
    assert body["max_tokens"] == 5000 and body["thinking"]["budget_tokens"] == 4999
    assert "temperature" not in body  # not allowed with thinking
    assert "thinking" not in translate({"input": "x", "reasoning": {"effort": "high"}, "max_output_tokens": 1000})
    assert "thinking" not in translate({"input": "x", "reasoning": {"effort": "none"}})
    custom = AnthropicDialect(default_max_tokens=1000, thinking_budgets={"low": 2000, "medium": 0})
    body = translate({"input": "x", "reasoning": {"effort": "low"}}, custom)
    assert body == {**body, "max_tokens": 3000, "thinking": {"type": "enabled", "budget_tokens": 2000}}
    assert "thinking" not in translate({"input": "x", "reasoning": {"effort": "medium"}}, custom)
    forced = translate({"input": "x", "reasoning": {"effort": "low"}, "tools": [TOOL], "tool_choice": "required"})
    assert "thinking" not in forced


def test_thinking_blocks_go_back_with_their_signature():
    signed = sealing.seal_reasoning("I should call f.", signature="SIG==")
    redacted = sealing.seal_reasoning("", redacted="DATA")
    chat_only = sealing.seal_reasoning("from a chat provider")
    items = [
        {"role": "user", "content": "go"},
        {"type": "reasoning", "summary": [], "encrypted_content": chat_only},
        {"type": "reasoning", "summary": [], "encrypted_content": redacted},
        {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "I should call f."}],
         "encrypted_content": signed},
        {"type": "function_call", "call_id": "t1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "t1", "output": "ok"},
    ]
    body = translate({"input": items, "tools": [TOOL | {"name": "f"}], "reasoning": {"effort": "low"}})
    assert body["messages"][1]["content"] == [
        {"type": "redacted_thinking", "data": "DATA"},
        {"type": "thinking", "thinking": "I should call f.", "signature": "SIG=="},
        {"type": "tool_use", "id": "t1", "name": "f", "input": {}},
    ]
    assert body["thinking"]["budget_tokens"] == 2048
    # a thinking token sealed elsewhere is refused, never left out in silence
    items[3]["encrypted_content"] = Sealer("other").seal_reasoning(sealing.TENANT, "x", signature="S")
    with pytest.raises(ApiError) as info:
        translate({"input": items, "tools": [TOOL | {"name": "f"}], "reasoning": {"effort": "low"}})
    assert (info.value.status, info.value.param, info.value.code) == (400, "input[3].encrypted_content", "invalid_encrypted_content")
    # the same turn without its sealed thinking (the client dropped it): thinking is left off
    items[3]["encrypted_content"] = items[2]["encrypted_content"] = None
    body = translate({"input": items, "tools": [TOOL | {"name": "f"}], "reasoning": {"effort": "low"}})
    assert body["messages"][1]["content"][0]["type"] == "tool_use"
    assert "thinking" not in body


def test_images_and_pdfs():
    body = translate({"input": [{"role": "user", "content": [
        {"type": "input_text", "text": "look"},
        {"type": "input_image", "image_url": "data:image/png;base64,iVBOR"},
        {"type": "input_image", "image_url": "https://example.com/cat.jpg"},
        {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0"},
        {"type": "input_file", "file_url": "https://example.com/b.pdf"},
        {"type": "input_file", "filename": "n.txt", "file_data": "data:text/plain;base64,aGVsbG8="},
    ]}]})
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "look"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0"}, "title": "a.pdf"},
        {"type": "document", "source": {"type": "url", "url": "https://example.com/b.pdf"}},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "hello"}, "title": "n.txt"},
    ]
    # by file_id: Anthropic's Files API takes it (issue 16); neither url nor id is still a 400
    body = translate({"input": [{"role": "user", "content": [
        {"type": "input_image", "file_id": "file_1"}, {"type": "input_file", "file_id": "file_2"}]}]})
    assert body["messages"][0]["content"] == [
        {"type": "image", "source": {"type": "file", "file_id": "file_1"}},
        {"type": "document", "source": {"type": "file", "file_id": "file_2"}},
    ]
    with pytest.raises(ApiError) as exc:
        translate({"input": [{"role": "user", "content": [{"type": "input_image", "detail": "low"}]}]})
    assert exc.value.param == "input[0].content[0].image_url"


def test_error_bodies_become_openai_envelopes():
    body = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    err = anthropic_error(529, body, httpx.Headers({"retry-after": "3"}))
    assert err.status == 503 and err.code == "overloaded" and err.headers == {"retry-after": "3"}
    assert msgspec.json.decode(err.body()) == {"error": {"message": "Upstream error: Overloaded", "type": "server_error", "param": None, "code": "overloaded"}}
    err = anthropic_error(400, b'{"type":"error","error":{"type":"invalid_request_error","message":"messages: bad"}}', httpx.Headers())
    assert (err.status, err.type, err.message) == (400, "invalid_request_error", "Upstream error: messages: bad")
    err = anthropic_error(429, b'{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}', httpx.Headers())
    assert (err.status, err.type, err.code) == (429, "rate_limit_error", "rate_limit_exceeded")
    assert anthropic_error(502, b"<html>bad gateway</html>", httpx.Headers()).message == "Upstream error: <html>bad gateway</html>"


# --- end to end: the openai SDK against respline in front of a scripted Anthropic upstream ---------


@pytest.fixture(scope="module")
def anthropic_server(upstream_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("anthropic")
    server = Server(
        tmp,
        ["--upstream", upstream_server.base_url, "--upstream-kind", "anthropic",
         "--upstream-key-env", "ANTHROPIC_TEST_KEY", "--api-key", TEST_KEY],
        env={"ANTHROPIC_TEST_KEY": "sk-ant-test"},
    )
    yield server
    server.stop()


@pytest.fixture
def client(anthropic_server):
    return anthropic_server.sdk()


def test_sdk_text_stream(client, upstream):
    upstream.queue(Reply(anthropic_text("Hel", "lo")))
    events = list(client.responses.create(model="claude-x", input="hi", stream=True, max_output_tokens=100))
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "Hello"
    sent = upstream.last
    assert sent["path"] == "/v1/messages"
    headers = {k.lower(): v for k, v in sent["headers"].items()}
    assert headers["x-api-key"] == "sk-ant-test" and headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in headers
    assert sent["body"] == {"model": "claude-x", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                            "max_tokens": 100, "stream": True}


def test_sdk_tool_loop_carries_thinking_with_signature(client, upstream, anthropic_server):
    signature = "EqQBCkgIARABGAIiQL+sig/with+slashes=="
    upstream.queue(
        Reply(anthropic_tool("get_weather", '{"city": "Paris"}', tool_id="toolu_01Abc", thinking="I need the weather.", signature=signature)),
        Reply(anthropic_text("Sunny in Paris.")),
    )
    first = client.responses.create(model="claude-x", input="Weather in Paris?", tools=[TOOL],
                                    reasoning={"effort": "low"}, store=False, include=["reasoning.encrypted_content"])
    reasoning = [o for o in first.output if o.type == "reasoning"][0]
    call = [o for o in first.output if o.type == "function_call"][0]
    assert (call.call_id, call.name, json.loads(call.arguments)) == ("toolu_01Abc", "get_weather", {"city": "Paris"})
    assert reasoning.encrypted_content and signature not in reasoning.encrypted_content  # sealed, not readable
    second = client.responses.create(
        model="claude-x",
        input=[{"role": "user", "content": "Weather in Paris?"},
               *[o.model_dump(exclude_none=True) for o in first.output],
               {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 24C"}],
        tools=[TOOL], reasoning={"effort": "low"}, store=False,
    )
    assert second.output_text == "Sunny in Paris."
    body = upstream.requests[-1]["body"]
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assistant = body["messages"][1]
    assert assistant["role"] == "assistant"
    assert assistant["content"] == [
        {"type": "thinking", "thinking": "I need the weather.", "signature": signature},
        {"type": "tool_use", "id": "toolu_01Abc", "name": "get_weather", "input": {"city": "Paris"}},
    ]
    assert body["messages"][2] == {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01Abc", "content": "sunny, 24C"}]}


def test_previous_response_id_keeps_the_signature(client, upstream):
    # no include: reasoning from Anthropic is sealed anyway, so a stored chain can go back signed
    upstream.queue(
        Reply(anthropic_tool("get_weather", '{"city": "Oslo"}', tool_id="toolu_02", thinking="Oslo weather.", signature="SIG-OSLO")),
        Reply(anthropic_text("Cold.")),
    )
    first = client.responses.create(model="claude-x", input="Oslo?", tools=[TOOL], reasoning={"effort": "low"})
    second = client.responses.create(
        model="claude-x", previous_response_id=first.id, tools=[TOOL], reasoning={"effort": "low"},
        input=[{"type": "function_call_output", "call_id": "toolu_02", "output": "-3C"}],
    )
    assert second.output_text == "Cold."
    content = upstream.requests[-1]["body"]["messages"][1]["content"]
    assert content[0] == {"type": "thinking", "thinking": "Oslo weather.", "signature": "SIG-OSLO"}


def test_upstream_error_status_and_midstream_error(anthropic_server, upstream):
    upstream.queue(Reply(status=400, body=b'{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: too big"}}'))
    r = httpx.post(anthropic_server.url + "/responses", json={"model": "claude-x", "input": "hi", "stream": True},
                   headers={"authorization": f"Bearer {TEST_KEY}"}, timeout=30)
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "Upstream error: max_tokens: too big"
    upstream.queue(Reply([a_start(), *a_text(0, "part"), sse("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})]))
    r = httpx.post(anthropic_server.url + "/responses", json={"model": "claude-x", "input": "hi", "stream": True},
                   headers={"authorization": f"Bearer {TEST_KEY}"}, timeout=30)
    events = parse_sse(r.content)
    checked(events)
    assert [e["type"] for e in events][-2:] == ["error", "response.failed"]


def test_replay_command_knows_anthropic(tmp_path):
    events = replay_command(tmp_path, "anthropic", b"".join(anthropic_text("Hi")))
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "Hi"



# --- the Codex CLI against a scripted Anthropic upstream ---------------------------------------------


def test_codex_tool_loop_with_thinking_signature(codex, anthropic_server, upstream, tmp_path):
    signature = "ErUBCkYIBRgCIkD/codex+signature=="
    upstream.queue(
        Reply(anthropic_tool("exec_command", '{"cmd": "echo hi-from-claude"}', tool_id="toolu_01Codex",
                             thinking="I will run the command.", signature=signature)),
        Reply(anthropic_text("The command printed hi-from-claude.")),
    )
    events, _ = run_codex(codex, anthropic_server.url, tmp_path, "Run echo hi-from-claude and report the output")
    assert_ran(events, "hi-from-claude", "The command printed hi-from-claude.")
    assert events[-1]["type"] == "turn.completed"

    assert len(upstream.requests) == 2
    first, second = (r["body"] for r in upstream.requests)
    assert all(r["path"] == "/v1/messages" for r in upstream.requests)
    assert first["system"] and first["thinking"]["type"] == "enabled"  # Codex sends reasoning.effort
    names = {t["name"] for t in first["tools"]}
    assert {"exec_command", "apply_patch"} <= names
    # the second turn sends the thinking block back, signature intact, before its tool_use
    assistant = [m for m in second["messages"] if m["role"] == "assistant"][-1]
    assert assistant["content"][0] == {"type": "thinking", "thinking": "I will run the command.", "signature": signature}
    assert assistant["content"][1]["type"] == "tool_use" and assistant["content"][1]["id"] == "toolu_01Codex"
    assert assistant["content"][1]["input"] == {"cmd": "echo hi-from-claude"}
    result = second["messages"][second["messages"].index(assistant) + 1]["content"][0]
    assert result["type"] == "tool_result" and result["tool_use_id"] == "toolu_01Codex"
    assert "hi-from-claude" in json.dumps(result["content"])
    assert second["thinking"]["type"] == "enabled"
