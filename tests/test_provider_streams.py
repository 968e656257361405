"""Every recorded Chat Completions stream in ../shared/provider-streams, replayed and validated.

The recordings are third-party test data that live beside the project, never inside it
(provider-streams/README.md): this module reads them in place and skips where they are absent.
Each stream must give events that both the openai SDK and Open Responses accept, in the SPEC 1.5
order; notable streams also get assertions about what they must turn into (QUIRKS.md numbers).
"""

from __future__ import annotations

import json

import pytest

from conftest import NO_RECORDINGS, PROVIDER_STREAMS, recording, recordings
from respline.engine.replay import replay
from validate import checked_replay

if not PROVIDER_STREAMS.is_dir():
    pytest.skip(NO_RECORDINGS + "; see provider-streams/README.md", allow_module_level=True)

# Not Chat Completions: Anthropic Messages and Responses-API upstreams have their own stages
# (tests/test_anthropic.py, tests/test_responses_passthrough.py replay those folders).
NOT_CHAT = {"anthropic", "openai-responses", "azure-openai-responses", "responses-compatible"}
FILES = recordings(*(d.name for d in PROVIDER_STREAMS.iterdir() if d.is_dir() and d.name not in NOT_CHAT))


def run(name: str, **options) -> list[dict]:
    """Replay, then check framing, every event, the lifecycle and the final response."""
    return checked_replay([recording(name)], **options)


def chunks(name: str) -> list[dict]:
    """The upstream's own JSON chunks (for expectations computed from the recording itself)."""
    out = []
    for line in recording(name).decode().splitlines():
        if line.startswith("data:") and line[5:].strip() != "[DONE]":
            out.append(json.loads(line[5:]))
    return out


def final(events: list[dict]) -> dict:
    return events[-1]["response"]


def types_of(events: list[dict]) -> list[str]:
    return [e["type"] for e in events]


def message_text(item: dict) -> str:
    return "".join(p.get("text", "") for p in item["content"] if p["type"] == "output_text")


def test_found_the_recordings():
    assert len(FILES) >= 20, FILES


@pytest.mark.parametrize("name", FILES)
def test_stream_is_valid(name):
    events = run(name)
    assert final(events)["status"] in ("completed", "incomplete", "failed")


@pytest.mark.parametrize("name", FILES)
def test_stream_split_into_small_pieces_gives_same_frames(name):
    data = recording(name)
    whole = replay([data])
    pieces = [data[i : i + 7] for i in range(0, len(data), 7)]
    assert replay(pieces) == whole


# --- notable streams ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["openai-chat/gpt-4o_finish-length.sse", "deepseek/deepseek-chat_text_finish-length.chunks.jsonl"]
)
def test_finish_length_is_incomplete_max_output_tokens(name):  # QUIRKS C20
    events = run(name)
    resp = final(events)
    assert events[-1]["type"] == "response.incomplete"
    assert resp["incomplete_details"] == {"reason": "max_output_tokens"}
    assert [i["status"] for i in resp["output"]] == ["incomplete"]


def test_groq_named_error_event_fails_the_response():  # QUIRKS A3, A5
    name = "groq/gpt-oss-120b_midstream-error-event_tool_use_failed.sse"
    assert b"[DONE]" not in recording(name)
    events = run(name)
    assert types_of(events)[-2:] == ["error", "response.failed"]
    err = events[-2]
    assert err["code"] == err["error"]["code"] == "tool_use_failed"
    assert "validation failed" in err["message"]
    resp = final(events)
    assert resp["status"] == "failed"
    assert resp["error"]["code"] == "server_error"  # not an SDK ResponseError code; kept on `error`
    assert resp["error"]["message"] == err["message"]
    # the reasoning streamed before the error is kept, closed as incomplete
    assert [(i["type"], i["status"]) for i in resp["output"]] == [("reasoning", "incomplete")]


def test_openrouter_error_chunk_after_finish_fails_the_response():  # QUIRKS A2, A4, C17
    events = run("openrouter/minimax-m2_processing-comments_midstream-error.sse")
    assert types_of(events)[-2:] == ["error", "response.failed"]
    assert events[-2]["code"] == "400"  # OpenRouter's numeric code, as a string
    assert events[-2]["message"] == "Token limit reached"
    assert final(events)["error"] == {"code": "server_error", "message": "Token limit reached"}


def test_refusal_becomes_a_refusal_part():  # QUIRKS H48
    name = "openai-chat/gpt-4o_refusal.sse"
    events = run(name)
    resp = final(events)
    assert events[-1]["type"] == "response.completed"
    (msg,) = resp["output"]
    assert msg["type"] == "message"
    expected = "".join(c["choices"][0]["delta"].get("refusal") or "" for c in chunks(name) if c["choices"])
    assert msg["content"] == [{"type": "refusal", "refusal": expected}]
    assert "response.output_text.delta" not in types_of(events)
    assert "response.refusal.delta" in types_of(events)


def test_parallel_tool_calls_become_two_function_calls():  # QUIRKS E25, E26
    name = "openai-chat/gpt-4o_parallel-tool-calls_2.sse"
    events = run(name)
    upstream_ids = [
        tc["id"]
        for c in chunks(name)
        for ch in c["choices"]
        for tc in (ch["delta"].get("tool_calls") or [])
        if tc.get("id")
    ]
    items = final(events)["output"]
    assert [i["type"] for i in items] == ["function_call", "function_call"]
    assert [i["call_id"] for i in items] == upstream_ids == ["call_JMW1whyEaYG438VE1OIflxA2", "call_DNYTawLBoN8fj3KN6qU9N1Ou"]
    assert [i["name"] for i in items] == ["GetWeatherArgs", "get_stock_price"]
    assert all(i["id"].startswith("fc_") and i["id"] != i["call_id"] for i in items)
    assert json.loads(items[0]["arguments"]) == {"city": "Edinburgh", "country": "GB", "units": "c"}
    assert json.loads(items[1]["arguments"]) == {"ticker": "AAPL", "exchange": "NASDAQ"}


def test_n3_keeps_only_choice_zero():  # QUIRKS B14
    name = "openai-chat/gpt-4o_n3-multiple-choices.sse"
    events = run(name)
    per_choice: dict[int, str] = {}
    for c in chunks(name):
        for ch in c["choices"]:
            per_choice[ch["index"]] = per_choice.get(ch["index"], "") + (ch["delta"].get("content") or "")
    assert sorted(per_choice) == [0, 1, 2]
    (msg,) = final(events)["output"]
    assert message_text(msg) == per_choice[0]
    json.loads(message_text(msg))  # one whole JSON answer, not three interleaved copies
    finishes = [ch for c in chunks(name) for ch in c["choices"] if ch.get("finish_reason")]
    assert len(finishes) == 3  # one per choice; only choice 0's counts


def test_xai_output_tokens_include_reasoning():  # QUIRKS D23
    usage = final(run("xai/grok-3-mini_reasoning_content_text.chunks.jsonl"))["usage"]
    # xAI: prompt 12 + completion 2 + reasoning 340 = total 354; completion excludes reasoning
    assert usage["input_tokens"] == 12
    assert usage["output_tokens"] == 342
    assert usage["output_tokens_details"]["reasoning_tokens"] == 340
    assert usage["total_tokens"] == 354
    assert usage["input_tokens_details"]["cached_tokens"] == 11


def test_deepseek_cached_and_reasoning_tokens():  # QUIRKS D24, F37
    events = run("deepseek/deepseek-reasoner_reasoning-then-tool-call.chunks.jsonl")
    resp = final(events)
    assert [i["type"] for i in resp["output"]] == ["reasoning", "function_call"]
    assert resp["output"][1]["call_id"].startswith("call_00_")  # QUIRKS E33: kept as is
    usage = resp["usage"]
    assert usage["input_tokens"] == 339
    assert usage["input_tokens_details"]["cached_tokens"] == 320
    assert usage["output_tokens"] == 83
    assert usage["output_tokens_details"]["reasoning_tokens"] == 39
    assert usage["total_tokens"] == 422


def test_deepseek_reasoning_then_content():  # QUIRKS F35, F37
    resp = final(run("deepseek/deepseek-reasoner_reasoning_content.chunks.jsonl"))
    assert [i["type"] for i in resp["output"]] == ["reasoning", "message"]
    assert resp["output"][0]["content"][0]["text"].startswith("We need to count")


def test_groq_think_tags_become_reasoning_then_message():  # QUIRKS F36
    name = "groq/deepseek-r1-distill_think-tags-in-content.sse"
    resp = final(run(name, think_tags=True))
    reasoning, message = resp["output"]
    assert reasoning["type"] == "reasoning" and message["type"] == "message"
    thought = reasoning["content"][0]["text"]
    answer = message_text(message)
    assert "<think>" not in thought and "</think>" not in thought
    assert "<think>" not in answer and "</think>" not in answer
    assert thought.startswith("Okay, so I want to make Uruguayan alfajores")
    assert answer.startswith("To make Uruguayan alfajores")
    # usage arrives only inside x_groq in this recording (QUIRKS D22)
    assert resp["usage"]["input_tokens"] == 21
    assert resp["usage"]["output_tokens"] == 988
    # without think_tags the tags are just text
    plain = final(run(name))
    assert [i["type"] for i in plain["output"]] == ["message"]
    assert message_text(plain["output"][0]).startswith("<think>")


def test_groq_duplicated_usage_counted_once():  # QUIRKS D22
    usage = final(run("groq/llama-3.3-70b_text_x_groq-usage.chunks.jsonl"))["usage"]
    assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]) == (45, 662, 707)


def test_whole_call_in_one_chunk():  # QUIRKS E27, E32, E33
    events = run("groq/llama-3.3-70b_tool-call_args-in-one-chunk.chunks.jsonl")
    (call,) = final(events)["output"]
    assert (call["call_id"], call["name"], call["arguments"]) == ("tk85n1k4m", "weather", "{}")
    assert "response.function_call_arguments.delta" in types_of(events)


def test_mistral_call_without_index_and_finish_on_same_chunk():  # QUIRKS C16, E28
    (call,) = final(run("mistral/mistral-small_tool-call_no-index_finish-same-chunk.chunks.jsonl"))["output"]
    assert call["call_id"] == "gSIMJiOkT"
    assert json.loads(call["arguments"]) == {"location": "San Francisco"}
    assert call["status"] == "completed"


def test_vllm_stray_fragment_with_finish_and_usage_every_chunk():  # QUIRKS C19, D21, E31
    resp = final(run("vllm/llama-3.1-8b-fp8_tool-call_stop_reason_usage-every-chunk.sse"))
    (call,) = resp["output"]
    assert call["call_id"].startswith("chatcmpl-tool-")
    assert json.loads(call["arguments"]) == {"query": "latest news on ai"}
    assert (resp["usage"]["input_tokens"], resp["usage"]["output_tokens"]) == (226, 20)


def test_text_then_tool_call():  # QUIRKS E32, E34
    items = final(run("openai-chat/gpt-4o_text-then-tool-call.chunks.jsonl"))["output"]
    assert [i["type"] for i in items] == ["message", "function_call"]
    assert message_text(items[0]) == "PRE_TOOL"
    assert items[1]["arguments"] == "{}"


def test_azure_empty_first_chunk():  # QUIRKS B9
    for name in (
        "azure-openai-chat/gpt-4_text_prompt-filter-first.chunks.jsonl",
        "azure-openai-chat/gpt-5-nano_model-router_prompt-filter-first.chunks.jsonl",
    ):
        resp = final(run(name, model="my-deployment"))
        assert resp["model"] == "my-deployment"  # never taken from the upstream chunks
        assert [i["type"] for i in resp["output"]] == ["message"]


def test_openrouter_reasoning_details_not_doubled():  # QUIRKS F35, F38
    name = "openrouter/anthropic-claude-sonnet-4.5_reasoning_details.sse"
    resp = final(run(name))
    reasoning, message = resp["output"]
    expected = "".join(c["choices"][0]["delta"].get("reasoning") or "" for c in chunks(name) if c["choices"])
    assert reasoning["content"] == [{"type": "reasoning_text", "text": expected}]
    assert message_text(message) == "2 + 2 = 4"


def test_mistral_content_arrays():  # QUIRKS A7, F36
    for name in (
        "mistral/magistral-medium_content-array-thinking.chunks.jsonl",
        "mistral/mistral-small_thinking_p-padding_mixed-content-types.chunks.jsonl",
    ):
        items = final(run(name))["output"]
        assert [i["type"] for i in items] == ["reasoning", "message"]
        assert message_text(items[1])


@pytest.mark.parametrize("dialect", ["openresponses", "summary"])
def test_reasoning_dialects(dialect):  # SPEC 0.1
    events = run("alibaba-qwen/qwen3-max_reasoning_content.chunks.jsonl", reasoning_dialect=dialect)
    kinds = set(types_of(events))
    if dialect == "summary":
        assert "response.reasoning_summary_text.delta" in kinds
        assert final(events)["output"][0]["summary"][0]["text"]
    else:
        assert "response.reasoning.delta" in kinds and "response.reasoning_text.delta" not in kinds
