"""The stage contract (engine/pipeline.py): a stage's list-in, list-out ``feed_all`` (the hot
path, where a stage has one) gives exactly the frames its item-by-item ``feed`` gives; and the
two tail stages every kind shares, the Sequencer and the CompletionRebuilder, on their own.

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
