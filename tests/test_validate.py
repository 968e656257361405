"""The validator must fail on what it claims to check: broken copies of a known-good stream."""

from __future__ import annotations

import copy
import json

import pytest

from respline.engine.replay import replay
from validate import check_lifecycle, parse_sse, validate_event, validate_response

# text, then a tool call: message + function_call items
UPSTREAM = b"".join(
    b"data: " + json.dumps(c).encode() + b"\n\n"
    for c in [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}}]},
        {"choices": [{"index": 0, "delta": {"content": " you"}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": '{"a":'}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    ]
) + b"data: [DONE]\n\n"
BODY = b"".join(replay([UPSTREAM]))
GOOD = parse_sse(BODY)


def events() -> list[dict]:
    return copy.deepcopy(GOOD)


def renumber(evs: list[dict]) -> list[dict]:
    for n, e in enumerate(evs):
        e["sequence_number"] = n
    return evs


def find(evs: list[dict], etype: str) -> int:
    return next(i for i, e in enumerate(evs) if e["type"] == etype)


def test_good_stream_passes():
    for ev in GOOD:
        validate_event(ev)
    check_lifecycle(GOOD)
    validate_response(GOOD[-1]["response"])


def _drop_delta(evs):
    del evs[find(evs, "response.output_text.delta")]
    return renumber(evs)


def _gap(evs):
    evs[3]["sequence_number"] = 99
    return evs


def _swap_start(evs):
    evs[0], evs[1] = evs[1], evs[0]
    return renumber(evs)


def _skip_index(evs):
    for e in evs[find(evs, "response.output_item.done") + 1 : -1]:
        if "output_index" in e:
            e["output_index"] = 2
    return evs


def _no_item_done(evs):
    i = len(evs) - 2
    assert evs[i]["type"] == "response.output_item.done"
    del evs[i]
    evs[-1]["response"]["output"].pop()
    return renumber(evs)


def _terminal_output(evs):
    evs[-1]["response"]["output"] = evs[-1]["response"]["output"][:1]
    return evs


def _two_terminals(evs):
    evs.insert(len(evs) - 1, copy.deepcopy(evs[-1]))
    return renumber(evs)


def _error_not_followed_by_failed(evs):
    err = {"type": "error", "sequence_number": 0, "code": "x", "message": "m", "param": None,
           "error": {"type": "server_error", "code": "x", "message": "m", "param": None}}
    evs.insert(len(evs) - 1, err)
    return renumber(evs)


def _bad_prefix(evs):
    for e in evs:
        if e.get("item", {}).get("type") == "function_call":
            e["item"]["id"] = "call_xyz"
        if e.get("item_id", "").startswith("fc_"):
            e["item_id"] = "call_xyz"
    for item in evs[-1]["response"]["output"]:
        if item["type"] == "function_call":
            item["id"] = "call_xyz"
    return evs


def _overlap(evs):
    i = find(evs, "response.output_item.added")
    j = [k for k, e in enumerate(evs) if e["type"] == "response.output_item.added"][1]
    evs.insert(i + 1, evs.pop(j))
    return renumber(evs)


def _args_mismatch(evs):
    evs[find(evs, "response.function_call_arguments.done")]["arguments"] = '{"a":2}'
    return evs


def _part_unclosed(evs):
    del evs[find(evs, "response.content_part.done")]
    return renumber(evs)


def _response_id_changes(evs):
    evs[-1]["response"]["id"] = "resp_other"
    return evs


@pytest.mark.parametrize(
    "breaker",
    [
        _drop_delta, _gap, _swap_start, _skip_index, _no_item_done, _terminal_output, _two_terminals,
        _error_not_followed_by_failed, _bad_prefix, _overlap, _args_mismatch, _part_unclosed,
        _response_id_changes,
    ],
)
def test_lifecycle_rejects(breaker):
    with pytest.raises(AssertionError):
        check_lifecycle(breaker(events()))


def test_event_schema_rejects_missing_required_field():
    ev = copy.deepcopy(GOOD[find(GOOD, "response.output_text.delta")])
    del ev["logprobs"]  # required by the openai SDK model
    with pytest.raises(AssertionError, match="ResponseTextDeltaEvent"):
        validate_event(ev)
    ev = copy.deepcopy(GOOD[find(GOOD, "response.output_text.delta")])
    del ev["item_id"]
    with pytest.raises(AssertionError):
        validate_event(ev)


def test_event_schema_rejects_partial_response_object():
    ev = copy.deepcopy(GOOD[0])
    del ev["response"]["truncation"]  # optional for the SDK, required by Open Responses
    with pytest.raises(AssertionError, match="openresponses"):
        validate_event(ev)


def test_dialects():
    rt = {"type": "response.reasoning_text.delta", "sequence_number": 3, "item_id": "rs_1",
          "output_index": 0, "content_index": 0, "delta": "x"}
    validate_event(rt)  # OpenAI-only: the OR check is skipped
    with pytest.raises(AssertionError, match="dialect"):
        validate_event(rt, "openresponses")
    orr = dict(rt, type="response.reasoning.delta")
    validate_event(orr, "openresponses")  # OR-only: the SDK check is skipped
    with pytest.raises(AssertionError, match="dialect"):
        validate_event(orr)
    with pytest.raises(AssertionError):
        validate_event(dict(rt, type="response.made_up"))


def test_custom_tool_call_item_is_openai_only():
    ev = {"type": "response.output_item.added", "sequence_number": 2, "output_index": 0,
          "item": {"type": "custom_tool_call", "id": "ctc_1", "call_id": "call_1", "name": "apply_patch",
                   "input": "", "status": "in_progress"}}
    validate_event(ev)


def test_failed_codes():
    failed = copy.deepcopy(GOOD[-1])
    failed["type"] = "response.failed"
    failed["response"].update(status="failed", error={"code": "context_length_exceeded", "message": "m"})
    validate_event(failed)  # a Codex code, accepted on purpose
    validate_response(failed["response"])
    failed["response"]["error"]["code"] = "tool_use_failed"
    with pytest.raises(AssertionError, match="error.code"):
        validate_event(failed)


def test_parse_sse_rules():
    assert parse_sse(BODY) == GOOD
    assert parse_sse(BODY.replace(b"\n", b"\r\n")) == GOOD
    frames = BODY.split(b"\n\n")
    with pytest.raises(AssertionError, match="event:"):
        parse_sse(BODY.replace(b"event: response.in_progress", b"event: response.created", 1))
    with pytest.raises(AssertionError, match="DONE"):
        parse_sse(BODY[: -len(b"data: [DONE]\n\n")])
    assert parse_sse(BODY[: -len(b"data: [DONE]\n\n")], require_done=False) == GOOD
    with pytest.raises(AssertionError, match="before the terminal"):
        parse_sse(b"\n\n".join([frames[0], b"data: [DONE]", *frames[1:]]))
    with pytest.raises(AssertionError, match="after data"):
        parse_sse(BODY + frames[0] + b"\n\n")
    with pytest.raises(AssertionError, match="one data"):
        parse_sse(frames[0] + b"\ndata: {}\n\n", require_done=False)
    with pytest.raises(AssertionError, match="no event"):
        parse_sse(frames[0].split(b"\n", 1)[1] + b"\n\n", require_done=False)
