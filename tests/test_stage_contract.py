"""The stage contract (engine/pipeline.py): a stage's list-in, list-out ``feed_all`` (the hot
path, where a stage has one) gives exactly the frames its item-by-item ``feed`` gives; and the
tail stages every kind shares on their own: the Sequencer, the CompletionRebuilder, the reasoning
dialect stages and the encoders (a PassEvent's flat JSON).

The property runs over every fixture of every registered kind (fixtures/*/), each through its
kind's pipeline from the registry, for random splits of the upstream bytes: the frames of a
pipeline whose stages are all fed one item at a time equal the golden expected.sse.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regen_fixtures import fixture_dirs, fixture_name, fixture_options
from respline.engine import registry
from respline.engine.ids import deterministic
from respline.engine.pipeline import Pipeline
from respline.engine.stages.encoder import JsonEncoder, SseEncoder
from respline.engine.stages.reasoning_dialect import SUMMARY, SummaryReasoning, dialect_stage
from respline.engine.stages.rebuilder import CompletionRebuilder
from respline.engine.stages.sequencer import Sequencer
from respline.engine.wire import responses as R

FIXTURES = {fixture_name(p): p for p in fixture_dirs()}


def one_by_one(feed):
    def all_items(items: list) -> list:
        out: list = []
        for item in items:
            out += feed(item)
        return out

    return all_items


def render(pieces: list[bytes], options: dict, *, item_by_item: bool) -> bytes:
    """engine.replay.replay's loop, with the stages' own feed_all or with feed only."""
    ids, clock = deterministic()
    template = R.Response(id=ids.new("resp_"), created_at=clock.now(), model=options.get("model", "replay"))
    kind = registry.get(options.get("kind", "openai-chat"))
    pipe = kind.pipeline(template, ids, clock, encoding="sse", reasoning_dialect=options.get("reasoning_dialect", "openai"),
                         tools=None, seal_reasoning=None, think_tags=options.get("think_tags", False))
    if item_by_item:
        pipe.pipeline._feeders = [one_by_one(s.feed) for s in pipe.pipeline.stages]
    out = pipe.start()
    for piece in pieces:
        out += pipe.feed(piece)
    out += pipe.close()
    return b"".join(out)


def test_every_kind_with_fixtures_is_covered():
    folders = {p.parent.name for p in FIXTURES.values()}
    assert {"chat", "anthropic", "responses", "gemini"} <= folders


@pytest.mark.parametrize("name", list(FIXTURES))
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_feed_and_feed_all_give_identical_frames(name, data):
    path = FIXTURES[name]
    upstream, expected = (path / "upstream.sse").read_bytes(), (path / "expected.sse").read_bytes()
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(upstream)), max_size=30), label="cuts")))
    points = [0, *cuts, len(upstream)]
    pieces = [upstream[a:b] for a, b in zip(points, points[1:])]
    options = fixture_options(path)
    assert render(pieces, options, item_by_item=True) == expected
    assert render(pieces, options, item_by_item=False) == expected


# --- the Sequencer ----------------------------------------------------------------------------


def text_delta(i: int) -> R.OutputTextDelta:
    return R.OutputTextDelta("msg_1", 0, 0, str(i), [])


def test_sequencer_numbers_every_event_without_gaps():
    seq = Sequencer()
    events = [text_delta(i) for i in range(7)]
    out = seq.feed(events[0]) + seq.feed_all(events[1:4]) + seq.feed(events[4]) + seq.feed_all([]) + seq.feed_all(events[5:])
    assert out == events and [e.sequence_number for e in out] == list(range(7))
    assert seq.close() == []
    later = Sequencer(start=3)  # a stream resumed after events already sent
    assert [e.sequence_number for e in later.feed_all([text_delta(0), text_delta(1)])] == [3, 4]


# --- the CompletionRebuilder ------------------------------------------------------------------


def message(i: int, text: str) -> R.MessageItem:
    return R.MessageItem(id=f"msg_{i}", status="completed", role="assistant", content=[R.OutputText(text=text, annotations=[], logprobs=[])])


def completed(output: list) -> R.ResponseCompleted:
    return R.ResponseCompleted(response=R.Response(id="resp_1", created_at=1, model="m", output=output))


@pytest.mark.parametrize("batched", [False, True])
def test_rebuilder_completes_a_sparse_terminal_event(batched):
    a, b = message(0, "first"), message(1, "second")
    # items done out of order; the terminal event names none of them
    events = [R.OutputItemDone(output_index=1, item=b), text_delta(9), R.OutputItemDone(output_index=0, item=a), completed([])]
    reb = CompletionRebuilder()
    out = reb.feed_all(list(events)) if batched else [e for ev in events for e in reb.feed(ev)]
    assert out == events  # nothing added, dropped or reordered
    assert out[-1].response.output == [a, b]  # in output_index order
    assert reb.output == [a, b] and reb.response is out[-1].response  # the pipeline's result
    assert reb.close() == []


@pytest.mark.parametrize("terminal", [R.ResponseCompleted, R.ResponseIncomplete, R.ResponseFailed])
def test_rebuilder_leaves_a_whole_terminal_event_alone(terminal):
    a, b = message(0, "first"), message(1, "second")
    own = [message(0, "the upstream's own"), b]
    reb = CompletionRebuilder()
    end = terminal(response=R.Response(id="resp_1", created_at=1, model="m", output=own))
    reb.feed_all([R.OutputItemDone(output_index=0, item=a), R.OutputItemDone(output_index=1, item=b), end])
    assert end.response.output is own  # as long as the items streamed: kept as the upstream sent it
    partial = terminal(response=R.Response(id="resp_2", created_at=1, model="m", output=[b]))
    reb.feed(partial)
    assert partial.response.output == [a, b]


def test_pipeline_closes_each_stage_through_the_later_ones():
    class Holder:
        """Holds every item until close: what it lets go must cross the later stages."""

        def __init__(self):
            self.held = []

        def feed(self, item):
            self.held.append(item)
            return []

        def close(self):
            return [x * 10 for x in self.held]

    class Double:
        def feed(self, item):
            return [item, item]

        def close(self):
            return ["end"]

    pipe = Pipeline([Holder(), Double()])
    assert pipe.feed(1) == [] and pipe.feed(2) == []
    assert pipe.close() == [10, 10, 20, 20, "end"]


def test_rebuilder_keeps_the_later_of_two_dones_for_one_index():
    a, b, again = message(0, "first"), message(1, "second"), message(1, "second, corrected")
    reb = CompletionRebuilder()
    reb.feed_all([R.OutputItemDone(output_index=0, item=a), R.OutputItemDone(output_index=1, item=b)])
    reb.feed(R.OutputItemDone(output_index=1, item=again))
    assert reb.output == [a, again]


# --- the reasoning dialect stages -------------------------------------------------------------


def reasoning_item(content: list | None = None, summary: list | None = None) -> R.ReasoningItem:
    return R.ReasoningItem(id="rs_1", summary=summary or [], content=content if content is not None else [], status="completed")


@pytest.mark.parametrize("batched", [False, True])
def test_summary_dialect_numbers_upstream_summaries_and_raw_reasoning_in_one_count(batched):
    """A Responses upstream's reasoning item with a summary part, then raw reasoning, then
    another summary part: in the summary dialect they are summary parts 0, 1, 2, in the order
    they opened, and the item lists all three as its summary (and no content)."""
    raw = R.ReasoningText(text="raw")
    events = [
        R.OutputItemAdded(output_index=0, item=reasoning_item()),
        R.ReasoningSummaryPartAdded(item_id="rs_1", output_index=0, summary_index=0, part=R.SummaryText(text="")),
        R.ReasoningSummaryPartDone(item_id="rs_1", output_index=0, summary_index=0, part=R.SummaryText(text="A")),
        R.ContentPartAdded(item_id="rs_1", output_index=0, content_index=0, part=R.ReasoningText(text="")),
        R.ReasoningTextDelta(item_id="rs_1", output_index=0, content_index=0, delta="raw"),
        R.ReasoningTextDone(item_id="rs_1", output_index=0, content_index=0, text="raw"),
        R.ContentPartDone(item_id="rs_1", output_index=0, content_index=0, part=raw),
        R.ReasoningSummaryPartAdded(item_id="rs_1", output_index=0, summary_index=1, part=R.SummaryText(text="")),
        R.ReasoningSummaryTextDelta(item_id="rs_1", output_index=0, summary_index=1, delta="B"),
        R.ReasoningSummaryPartDone(item_id="rs_1", output_index=0, summary_index=1, part=R.SummaryText(text="B")),
        R.OutputItemDone(output_index=0, item=reasoning_item(content=[raw])),
    ]
    stage = dialect_stage(SUMMARY)
    assert type(stage) is SummaryReasoning
    out = stage.feed_all(events) if batched else [e for ev in events for e in stage.feed(ev)]
    assert len(out) == len(events)  # one event out per event in
    assert [type(e).__name__ for e in out[3:7]] == [
        "ReasoningSummaryPartAdded", "ReasoningSummaryTextDelta", "ReasoningSummaryTextDone", "ReasoningSummaryPartDone",
    ]
    assert [e.summary_index for e in out[1:-1]] == [0, 0, 1, 1, 1, 1, 2, 2, 2]
    assert out[0].item.content is None
    done = out[-1].item
    assert done.content is None and [p.text for p in done.summary] == ["A", "raw", "B"]


def test_the_openai_dialect_adds_no_stage():
    assert dialect_stage("openai") is None


# --- the encoders -----------------------------------------------------------------------------


def test_a_pass_event_is_one_flat_object_in_every_encoding():
    ev = R.PassEvent(type="response.web_search_call.searching", fields={"output_index": 2, "item_id": "ws_1"})
    ev.sequence_number = 7
    flat = b'{"type":"response.web_search_call.searching","sequence_number":7,"output_index":2,"item_id":"ws_1"}'
    assert R.encode_event(ev) == flat and R.type_of(ev) == ev.type
    assert JsonEncoder().feed(ev) == JsonEncoder().feed_all([ev]) == [flat]
    frame = b"event: response.web_search_call.searching\ndata: " + flat + b"\n\n"
    assert SseEncoder().feed(ev) == SseEncoder().feed_all([text_delta(0), ev])[1:] == [frame]
    bare = R.PassEvent(type="response.x", fields={})
    assert R.encode_event(bare) == b'{"type":"response.x","sequence_number":0}'
