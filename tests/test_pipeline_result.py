"""A response pipeline's declared result (engine/pipeline.py ``PipelineResult``: ``response``,
``output``, ``finished``, ``failure``) over a stream's life, for the builder and for the Responses
normaliser in its place; and the CompletionRebuilder's one job: the stage that makes the Response
leaves the terminal event's output empty, and the rebuilder fills it from the items streamed.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from respline.engine import registry
from respline.engine.compact_turn import CompactionPipeline
from respline.engine.deltas import UpstreamError
from respline.engine.ids import deterministic
from respline.engine.pipeline import ResponsePipeline
from respline.engine.stages.rebuilder import CompletionRebuilder
from respline.engine.wire import responses as R
from upstream_formats import sse


def pipeline(kind: str) -> ResponsePipeline:
    ids, clock = deterministic()
    template = R.Response(id=ids.new("resp_"), created_at=clock.now(), model="m")
    return registry.get(kind).pipeline(
        template, ids, clock, encoding=None, reasoning_dialect="openai", tools=None, seal_reasoning=None, think_tags=False
    )


def chat(*chunks: dict[str, Any], done: bool = True) -> bytes:
    body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
    return body + (b"data: [DONE]\n\n" if done else b"")


def chat_text(text: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"content": text}}]}


CHAT_FINISH = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}


def up_message(index: int, text: str) -> bytes:
    """One whole message item of a Responses upstream: added, a delta, done."""
    item_id = f"msg_up{index}"
    done = {"id": item_id, "type": "message", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}
    return b"".join([
        sse("response.output_item.added", {"type": "response.output_item.added", "output_index": index,
                                           "item": {**done, "status": "in_progress", "content": []}}),
        sse("response.output_text.delta", {"type": "response.output_text.delta", "output_index": index,
                                           "item_id": item_id, "content_index": 0, "delta": text}),
        sse("response.output_item.done", {"type": "response.output_item.done", "output_index": index, "item": done}),
    ])


def up_completed(output: list | None = None) -> bytes:
    resp = {"id": "resp_up", "object": "response", "status": "completed", "output": output or [],
            "usage": {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7}}
    return sse("response.completed", {"type": "response.completed", "response": resp})


# one stream per kind: a first item, then a second item and the end
STREAMS = {
    "openai-chat": (
        chat(chat_text("One."), done=False),
        chat({"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}]},
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
    ),
    "openai-responses": (up_message(0, "One."), up_message(1, "Two.") + up_completed()),
}


def dones(events: list) -> list:
    return [e.item for e in events if type(e) is R.OutputItemDone]


def terminal(events: list) -> Any:
    ends = [e for e in events if type(e) in R.TERMINAL_EVENTS]
    assert len(ends) == 1
    return ends[0]


def without_rebuilder(pipe: ResponsePipeline) -> None:
    """The pipeline with its CompletionRebuilder swapped for a stage that only passes events on."""

    class PassOn:
        def feed(self, event):
            return [event]

        def close(self):
            return []

    stages = pipe.pipeline.stages
    at = next(i for i, s in enumerate(stages) if type(s) is CompletionRebuilder)
    stages[at] = PassOn()
    pipe.pipeline._feeders[at] = lambda items: items


# --- the rebuilder does its job, and only it ------------------------------------------------


@pytest.mark.parametrize("kind", list(STREAMS))
def test_the_rebuilder_fills_the_terminal_output_from_the_items_streamed(kind):
    """A Responses upstream whose response.completed lists no output, and a Chat upstream
    through the builder: the client's terminal event lists every item streamed, because the
    rebuilder put them there; without it the event goes out with the empty output the stage
    that made it left."""
    pipe = pipeline(kind)
    events = pipe.start()
    for piece in STREAMS[kind]:
        events += pipe.feed(piece)
    events += pipe.close()
    items = dones(events)
    assert len(items) == 2
    end = terminal(events)
    assert end.response.output == items
    assert pipe.response is end.response and pipe.output == items

    bare = pipeline(kind)
    without_rebuilder(bare)
    events = bare.start()
    for piece in STREAMS[kind]:
        events += bare.feed(piece)
    events += bare.close()
    assert len(dones(events)) == 2
    assert terminal(events).response.output == []  # the builder and the normaliser leave it to the rebuilder


def test_the_upstreams_own_terminal_output_is_never_taken():
    """A Responses upstream's terminal output names its own ids (and may be partial): the
    client gets respline's items, as streamed."""
    own = [{"id": "msg_theirs", "type": "message", "status": "completed", "role": "assistant", "content": []}]
    pipe = pipeline("openai-responses")
    events = pipe.start() + pipe.feed(up_message(0, "Mine.") + up_completed(own)) + pipe.close()
    (item,) = dones(events)
    assert terminal(events).response.output == [item] and item.id != "msg_theirs"


# --- the result over a stream's life --------------------------------------------------------


@pytest.mark.parametrize("kind", list(STREAMS))
def test_the_result_follows_the_stream(kind):
    pipe = pipeline(kind)
    assert (pipe.output, pipe.finished, pipe.failure, pipe.response.status) == ([], False, None, "in_progress")
    first, rest = STREAMS[kind]
    events = pipe.start() + pipe.feed(first)
    if kind == "openai-chat":
        assert pipe.output == []  # the message is still open: a tool call will close it
        events += pipe.feed(rest)
        assert not pipe.finished  # Chat's end is the body's end
        events += pipe.close()
    else:
        assert pipe.output == dones(events) and len(pipe.output) == 1  # an item done is in the output at once
        assert pipe.response.status == "in_progress" and not pipe.finished
        events += pipe.feed(rest)
        assert pipe.finished  # the upstream's terminal event ended it, before the body did
        events += pipe.close()
    assert pipe.finished and pipe.failure is None
    assert pipe.response.status == "completed" and pipe.response.usage is not None
    assert pipe.output == dones(events) == pipe.response.output and len(pipe.output) == 2


@pytest.mark.parametrize(
    ("kind", "body", "upstream_code", "response_code"),
    [
        # Groq's code is outside the SDK's closed set: the failure keeps it, response.failed cannot
        ("openai-chat", chat(chat_text("Half"), {"error": {"message": "bad call", "type": "invalid_request_error", "code": "tool_use_failed"}}),
         "tool_use_failed", "server_error"),
        ("openai-responses", up_message(0, "Half") + sse("error", {"type": "error", "code": "context_length_exceeded", "message": "too long"}),
         "context_length_exceeded", "context_length_exceeded"),
    ],
)
def test_an_in_band_error_is_the_failure(kind, body, upstream_code, response_code):
    pipe = pipeline(kind)
    events = pipe.start() + pipe.feed(body)
    assert pipe.finished  # before the body ends: the gateway stops reading here
    assert pipe.failure is not None and pipe.failure.code == upstream_code
    events += pipe.close()
    assert pipe.response.status == "failed" and pipe.response.error.code == response_code
    assert pipe.output == dones(events) == pipe.response.output and len(pipe.output) == 1  # the text before the error
    assert type(events[-1]) is R.ResponseFailed


@pytest.mark.parametrize("kind", list(STREAMS))
def test_an_io_fault_is_the_failure(kind):
    pipe = pipeline(kind)
    pipe.start()
    pipe.feed(STREAMS[kind][0])
    cut = UpstreamError(message="The upstream sent nothing for 30s.", code="upstream_timeout")
    events = pipe.fail(cut)
    assert pipe.failure is cut and pipe.finished
    assert pipe.response.status == "failed" and terminal(events).response is pipe.response
    assert pipe.output == pipe.response.output


@pytest.mark.parametrize("kind", list(STREAMS))
def test_a_seeded_item_is_the_output_before_the_start_and_the_first_item_after(kind):
    """A compaction item made before the upstream call: a queued background run is stored with
    it before the pipeline starts; the upstream's items are numbered after it."""
    seed = R.CompactionItem(id="cmp_1", encrypted_content="sealed")
    pipe = pipeline(kind)
    pipe.seed(seed)
    assert pipe.output == [seed]
    events = pipe.start()
    for piece in STREAMS[kind]:
        events += pipe.feed(piece)
    events += pipe.close()
    assert [e.output_index for e in events if type(e) is R.OutputItemDone] == [0, 1, 2]
    assert pipe.output[0] is seed and pipe.output == pipe.response.output == dones(events)


def test_a_compaction_turn_gives_the_same_result():
    """CompactionPipeline takes a ResponsePipeline's place: the gateway reads the same result."""
    ids, clock = deterministic()

    def compaction(body: bytes) -> tuple[CompactionPipeline, list]:
        pipe = CompactionPipeline(pipeline("openai-chat"), None, ids, clock, lambda text: "sealed:" + text)
        events = pipe.start() + pipe.feed(body)
        return pipe, events + pipe.close()

    pipe, events = compaction(chat(chat_text("the summary"), CHAT_FINISH))
    (item,) = pipe.output
    assert type(item) is R.CompactionItem and item.encrypted_content == "sealed:the summary"
    assert pipe.finished and pipe.failure is None and pipe.response.output == [item] == dones(events)

    pipe, events = compaction(chat({"error": {"message": "no", "code": "tool_use_failed"}}))
    assert pipe.finished and pipe.failure.code == "tool_use_failed" and pipe.response.status == "failed"
    assert pipe.output == [] and type(events[-1]) is R.ResponseFailed
