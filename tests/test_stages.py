"""Focused unit tests of the Chat Completions stages, one state machine at a time."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from respline.engine.deltas import (
    Finish,
    ReasoningDelta,
    RefusalDelta,
    TextDelta,
    ToolCallArgs,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    UpstreamError,
    UsageDelta,
)
from respline.engine.ids import Ids
from respline.engine.replay import replay
from respline.engine.stages.builder import failed_code
from respline.engine.stages.chat_decoder import ChatDecoder, ThinkTags, usage_from_chat
from respline.engine.stages.sse import SseDecoder, SseEvent
from respline.engine.stages.tool_calls import ToolCallAccumulator
from respline.engine.wire.chat import ChatUsage
from validate import checked, parse_sse

# --- SseDecoder ---------------------------------------------------------------------------


def sse_feed(*pieces: bytes) -> list[SseEvent]:
    dec = SseDecoder()
    out: list[SseEvent] = []
    for p in pieces:
        out += dec.feed(p)
    return out + dec.close()


def test_sse_lf_and_crlf():
    assert sse_feed(b"data: a\n\ndata: b\r\n\r\n") == [SseEvent(None, b"a"), SseEvent(None, b"b")]


def test_sse_crlf_split_between_cr_and_lf():
    dec = SseDecoder()
    assert dec.feed(b"data: a\r") == []
    assert dec.feed(b"\n\r") == []
    assert dec.feed(b"\n") == [SseEvent(None, b"a")]
    assert dec.close() == []


def test_sse_multi_line_data_joined_with_lf():
    assert sse_feed(b"data: {\"a\":\ndata: 1}\n\n") == [SseEvent(None, b'{"a":\n1}')]


def test_sse_comments_and_unknown_fields_ignored():
    body = b": OPENROUTER PROCESSING\n\n:\n\nid: 7\nretry: 10\nfoo: bar\ndata: x\n: inside an event\n\n"
    assert sse_feed(body) == [SseEvent(None, b"x")]
    assert sse_feed(b": only comments\n\n: more\n") == []


def test_sse_no_trailing_blank_line():
    assert sse_feed(b"data: a\n\ndata: b\n") == [SseEvent(None, b"a"), SseEvent(None, b"b")]
    assert sse_feed(b"data: [DONE]") == [SseEvent(None, b"[DONE]")]


def test_sse_event_name_kept_and_reset():
    body = b"event: error\ndata: {}\n\ndata: x\n\n"
    assert sse_feed(body) == [SseEvent(b"error", b"{}"), SseEvent(None, b"x")]
    assert sse_feed(b"event: ping\n\ndata: y\n\n") == [SseEvent(None, b"y")]  # no data: dropped


def test_sse_value_space_rules():
    assert sse_feed(b"data:x\n\ndata:  y\n\n") == [SseEvent(None, b"x"), SseEvent(None, b" y")]


def test_sse_empty_data_dispatches_nothing():
    assert sse_feed(b"data:\n\ndata: \n\ndata\n\ndata: z\n\n") == [SseEvent(None, b"z")]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 60), max_size=12))
def test_sse_any_split(cuts):
    body = b": c\r\nevent: error\r\ndata: 1\r\ndata: 2\r\n\r\ndata: \xc3\xa9\n\ndata: tail"
    points = [0, *sorted({min(c, len(body)) for c in cuts}), len(body)]
    pieces = [body[a:b] for a, b in zip(points, points[1:])]
    assert sse_feed(*pieces) == [SseEvent(b"error", b"1\n2"), SseEvent(None, "é".encode()), SseEvent(None, b"tail")]


# --- ToolCallAccumulator ------------------------------------------------------------------


def frag(index=None, id=None, name=None, args=None) -> ToolCallDelta:
    return ToolCallDelta(index=index, id=id, name=name, arguments=args)


def accumulate(*items, close=True) -> list:
    acc = ToolCallAccumulator(Ids(1))
    out: list = []
    for it in items:
        out += acc.feed(it)
    if close:
        out += acc.close()
    return out


def calls(out: list) -> list[tuple[str, str, str]]:
    """(call_id, name, joined args) per ToolCallStart, in emission order."""
    result: list[list] = []
    for d in out:
        if isinstance(d, ToolCallStart):
            result.append([d.call_id, d.name, ""])
        elif isinstance(d, ToolCallArgs):
            result[-1][2] += d.text
    return [tuple(r) for r in result]


def test_tools_sequential_calls_stream_live():
    out = accumulate(
        frag(0, "call_a", "a", ""),
        frag(0, args='{"x":'),
        frag(0, args="1}"),
        frag(1, "call_b", "b", ""),
        frag(1, args="{}"),
        Finish("tool_calls"),
    )
    assert out == [
        ToolCallStart("call_a", "a"),
        ToolCallArgs('{"x":'),
        ToolCallArgs("1}"),
        ToolCallEnd(),
        ToolCallStart("call_b", "b"),
        ToolCallArgs("{}"),
        Finish("tool_calls"),  # the last call is closed by the builder on Finish
    ]


def test_tools_interleaved_by_index_is_serialised():
    out = accumulate(
        frag(0, "call_a", "a", '{"x":'),
        frag(1, "call_b", "b", '{"y":'),
        frag(0, args="1}"),
        frag(1, args="2}"),
        Finish("tool_calls"),
    )
    assert calls(out) == [("call_a", "a", '{"x":1}'), ("call_b", "b", '{"y":2}')]
    # call b was buffered and starts only after call a ended
    assert out.index(ToolCallEnd()) < out.index(ToolCallStart("call_b", "b"))


def test_tools_interleaved_headers_first_with_empty_arguments():
    # both headers before any argument: the first call must not be closed as argument-less
    out = accumulate(
        frag(0, "call_a", "a", ""),
        frag(1, "call_b", "b", ""),
        frag(0, args='{"x":1}'),
        frag(1, args='{"y":2}'),
        Finish("tool_calls"),
    )
    assert calls(out) == [("call_a", "a", '{"x":1}'), ("call_b", "b", '{"y":2}')]


def test_tools_index_zero_for_every_call_with_new_ids():
    out = accumulate(frag(0, "call_a", "a", '{"n":1}'), frag(0, "call_b", "b", '{"n":2}'), Finish("tool_calls"))
    assert calls(out) == [("call_a", "a", '{"n":1}'), ("call_b", "b", '{"n":2}')]


def test_tools_stray_fragment_after_finish_never_reopens():
    acc = ToolCallAccumulator(Ids(1))
    out = acc.feed(frag(0, "call_a", "a", "{}")) + acc.feed(Finish("tool_calls"))
    assert acc.feed(frag(0, args="")) == []
    assert acc.feed(frag(0, args='{"late":1}')) == []  # dropped, with a warning
    assert acc.feed(Finish("tool_calls")) == [Finish("tool_calls")]  # repeated finish (C17)
    assert acc.close() == []
    assert calls(out) == [("call_a", "a", "{}")]


def test_tools_continuations_without_id_or_name():
    # id "" / name "" arrive from the decoder as None (E29, E30); repeated ids are continuations
    out = accumulate(
        frag(0, "call_a", "a", ""),
        frag(0, None, None, '{"k":'),
        frag(0, "call_a", "a", "1}"),
        Finish("tool_calls"),
    )
    assert calls(out) == [("call_a", "a", '{"k":1}')]


def test_tools_missing_index_correlates_by_id_then_last():
    out = accumulate(
        frag(None, "gA", "a", '{"x":'),
        frag(None, None, None, "1}"),
        frag(None, "gB", "b", "{}"),
        Finish("tool_calls"),
    )
    assert calls(out) == [("gA", "a", '{"x":1}'), ("gB", "b", "{}")]


def test_tools_missing_id_gets_a_call_id_and_nameless_call_is_dropped():
    out = accumulate(frag(0, None, "a", "{}"), frag(1, "call_x", None, "{}"))
    ((call_id, name, args),) = calls(out)
    assert call_id.startswith("call_") and (name, args) == ("a", "{}")


def test_tools_content_closes_the_live_call():
    out = accumulate(frag(0, "call_a", "a", "{}"), TextDelta("after"), close=False)
    assert out == [ToolCallStart("call_a", "a"), ToolCallArgs("{}"), ToolCallEnd(), TextDelta("after")]


# --- ThinkTags ----------------------------------------------------------------------------


def think(pieces: list[str]) -> list[tuple[str, str]]:
    """Feed pieces; merge adjacent deltas of one kind into (kind, text) runs."""
    t = ThinkTags()
    out: list = []
    for p in pieces:
        t.feed(p, out)
    t.flush(out)
    runs: list[list[str]] = []
    for d in out:
        kind = "reasoning" if isinstance(d, ReasoningDelta) else "text"
        if runs and runs[-1][0] == kind:
            runs[-1][1] += d.text
        else:
            runs.append([kind, d.text])
    return [tuple(r) for r in runs]


SAMPLE = "\n<think>\nweigh a<b and c</thin</think>\n\nAnswer: a<b <think"


def test_think_tags_whole():
    assert think([SAMPLE]) == [("reasoning", "weigh a<b and c</thin"), ("text", "Answer: a<b <think")]


@pytest.mark.parametrize("cut", range(1, len(SAMPLE)))
def test_think_tags_split_anywhere(cut):
    assert think([SAMPLE[:cut], SAMPLE[cut:]]) == think([SAMPLE])


def test_think_tags_one_char_at_a_time():
    assert think(list(SAMPLE)) == think([SAMPLE])


def test_think_tags_unclosed_and_partial_tag_at_end():
    assert think(["<think>still thinking"]) == [("reasoning", "still thinking")]
    assert think(["text <thi"]) == [("text", "text <thi")]  # flushed at the end as text


def test_think_tags_in_the_decoder_flush_on_finish():
    dec = ChatDecoder(think_tags=True)
    chunk = b'{"choices":[{"index":0,"delta":{"content":"<think>a</think>b<"},"finish_reason":"stop"}]}'
    assert dec.feed(SseEvent(None, chunk)) == [ReasoningDelta("a"), TextDelta("b"), TextDelta("<"), Finish("stop")]


# --- usage mapping ------------------------------------------------------------------------


def usage(**kw) -> UsageDelta:
    return usage_from_chat(msgspec.convert(kw, ChatUsage))


def test_usage_openai():
    u = usage(
        prompt_tokens=120,
        completion_tokens=45,
        total_tokens=165,
        prompt_tokens_details={"cached_tokens": 64, "audio_tokens": 0},
        completion_tokens_details={"reasoning_tokens": 30, "audio_tokens": 0},
    )
    assert u == UsageDelta(120, 45, 165, cached_tokens=64, reasoning_tokens=30)


def test_usage_xai_completion_excludes_reasoning():
    u = usage(prompt_tokens=12, completion_tokens=2, total_tokens=354, completion_tokens_details={"reasoning_tokens": 340})
    assert (u.output_tokens, u.total_tokens, u.reasoning_tokens) == (342, 354, 340)


def test_usage_deepseek_cache_hit_fields():
    u = usage(prompt_tokens=20, completion_tokens=6, total_tokens=26, prompt_cache_hit_tokens=16, prompt_cache_miss_tokens=4)
    assert (u.input_tokens, u.cached_tokens) == (20, 16)


def test_usage_top_level_cached_and_null_details():
    u = usage(prompt_tokens=9, completion_tokens=1, total_tokens=10, cached_tokens=5, prompt_tokens_details=None, reasoning_tokens=0)
    assert u.cached_tokens == 5


def test_usage_without_total_and_with_cache_write():
    u = usage(prompt_tokens=7, completion_tokens=3, prompt_tokens_details={"cached_tokens": 2, "cache_write_tokens": 4})
    assert u == UsageDelta(7, 3, 10, cached_tokens=2, cache_write_tokens=4)


def test_usage_only_in_x_groq():
    dec = ChatDecoder()
    chunk = b'{"choices":[],"x_groq":{"id":"r","usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5,"queue_time":0.1}}}'
    assert dec.feed(SseEvent(None, chunk)) == [UsageDelta(3, 2, 5)]


def test_usage_top_level_wins_over_x_groq():
    dec = ChatDecoder()
    chunk = (
        b'{"choices":[],"x_groq":{"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}},'
        b'"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}'
    )
    assert dec.feed(SseEvent(None, chunk)) == [UsageDelta(3, 2, 5)]


# --- ChatDecoder: errors and stream ends --------------------------------------------------


@pytest.mark.parametrize(
    "event, data, expected",
    [
        (None, b'{"error":{"message":"boom","type":"server_error","code":"internal"}}', ("boom", "server_error", "internal")),
        (None, b'{"error":{"code":400,"message":"Token limit reached"}}', ("Token limit reached", "server_error", "400")),
        (None, b'{"object":"error","message":"bad","type":"BadRequestError","code":400}', ("bad", "BadRequestError", "400")),
        (b"error", b'{"error":{"message":"m","type":"invalid_request_error","code":"tool_use_failed"}}', ("m", "invalid_request_error", "tool_use_failed")),
        (b"error", b"not json", ("not json", "server_error", "server_error")),
    ],
)
def test_decoder_in_band_errors(event, data, expected):
    (err,) = ChatDecoder().feed(SseEvent(event, data))
    assert isinstance(err, UpstreamError)
    assert (err.message, err.type, err.code) == expected


def test_decoder_unreadable_chunk_is_an_error():
    (err,) = ChatDecoder().feed(SseEvent(None, b'{"choices":[{"index":0,'))
    assert isinstance(err, UpstreamError) and "unreadable" in err.message


def test_decoder_legacy_function_call_and_refusal():
    dec = ChatDecoder()
    chunk = b'{"choices":[{"index":0,"delta":{"refusal":"no","function_call":{"name":"f","arguments":"{}"}}}]}'
    assert dec.feed(SseEvent(None, chunk)) == [RefusalDelta("no"), ToolCallDelta(0, None, "f", "{}")]


@pytest.mark.parametrize(
    "body, ends_ok",
    [
        (b'{"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"stop"}]}', True),
        (b'{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}', True),
        (b"[DONE]", True),
        (b'{"choices":[{"index":0,"delta":{"content":"x"}}]}', False),
    ],
)
def test_decoder_eof_without_any_end_signal_is_an_error(body, ends_ok):
    dec = ChatDecoder()
    dec.feed(SseEvent(None, body))
    tail = dec.close()
    if ends_ok:
        assert tail == []
    else:
        (err,) = tail
        assert isinstance(err, UpstreamError) and "finish_reason" in err.message


# --- builder details ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "code, etype, expected",
    [
        ("server_error", None, "server_error"),
        ("rate_limit_exceeded", None, "rate_limit_exceeded"),
        ("context_length_exceeded", None, "context_length_exceeded"),  # Codex reads it
        ("429", None, "rate_limit_exceeded"),
        (None, "rate_limit_error", "rate_limit_exceeded"),
        ("tool_use_failed", "invalid_request_error", "server_error"),
        ("400", "server_error", "server_error"),
        (None, None, "server_error"),
    ],
)
def test_failed_code(code, etype, expected):
    assert failed_code(code, etype) == expected


def test_empty_upstream_body_fails():
    events = parse_sse(b"".join(replay([b""])))
    checked(events)
    assert [e["type"] for e in events] == ["response.created", "response.in_progress", "error", "response.failed"]
