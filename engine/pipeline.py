"""Composes stages; the one place that knows their order (docs/architecture.md).

A stage (``Stage[In, Out]``, engine/stage.py) has ``feed(item) -> list`` and ``close() -> list``,
and may have ``feed_all(items) -> list`` (``BatchStage``). Feeding the head pushes each output
through every later stage in turn; closing a stage pushes what it still held through the later
stages before they are closed themselves. Everything is synchronous: the adapters own the I/O.

A ResponsePipeline is a provider's head stages, the stage that makes the Response (the
ResponseBuilder or the ResponsesNormaliser: a ``ResponseStage``), then the common tail: the
reasoning dialect stage (only for a dialect other than OpenAI's), the Sequencer, the
CompletionRebuilder and the encoder. What it has made so far is its ``PipelineResult``.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence

import msgspec

from respline.engine.deltas import UpstreamError
from respline.engine.ids import Clock, Ids
from respline.engine.stage import BatchStage, ResponseStage, Stage  # noqa: F401 (BatchStage, Stage: importable from here too)
from respline.engine.stages.builder import ResponseBuilder
from respline.engine.stages.encoder import JsonEncoder, SseEncoder
from respline.engine.stages.reasoning_dialect import OPENAI, dialect_stage
from respline.engine.stages.rebuilder import CompletionRebuilder
from respline.engine.stages.responses_normaliser import ResponsesNormaliser
from respline.engine.stages.sequencer import Sequencer
from respline.engine.stages.sse import SseDecoder
from respline.engine.toolmap import ToolMap
from respline.engine.wire import responses as R
from respline.engine.wire.responses import OutputItem, Response

def _feeder(stage: Stage) -> Callable[[list], list]:
    """A stage's list-in, list-out entry: its own ``feed_all`` where it is a BatchStage (the hot
    stages are, to avoid a list per item), else ``feed`` item by item."""
    feed_all = getattr(stage, "feed_all", None)
    if feed_all is not None:
        return feed_all
    feed = stage.feed

    def all_items(items: list) -> list:
        if len(items) == 1:
            return feed(items[0])
        out: list = []
        for item in items:
            out += feed(item)
        return out

    return all_items


class Pipeline:
    __slots__ = ("stages", "_feeders")

    def __init__(self, stages: Sequence[Stage]) -> None:
        self.stages = list(stages)
        self._feeders = [_feeder(s) for s in self.stages]

    def feed_at(self, start: int, items: list) -> list:
        for feed in self._feeders[start:] if start else self._feeders:
            if not items:
                return items
            items = feed(items)
        return items

    def feed(self, item: Any) -> list:
        return self.feed_at(0, [item])

    def close(self) -> list:
        out: list = []
        for i, stage in enumerate(self.stages):
            out += self.feed_at(i + 1, stage.close())
        return out


class PipelineResult(Protocol):
    """What a response pipeline has made so far: what the gateway stores, logs and counts and
    the front ends remember, read here and never from inside a stage. A ResponsePipeline and a
    CompactionPipeline (engine/compact_turn.py) both give it."""

    __slots__ = ()

    @property
    def response(self) -> Response:
        """The Response as it stands: the template (``in_progress``) until the terminal event,
        then that event's Response, with the whole output."""
        ...

    @property
    def output(self) -> list[OutputItem]:
        """The output items done so far, in output_index order, as the client was sent them."""
        ...

    @property
    def finished(self) -> bool:
        """The terminal event has been made: the pipeline gives nothing more."""
        ...

    @property
    def failure(self) -> UpstreamError | None:
        """Why the response failed, with the upstream's own code (``response.failed`` carries
        one from the SDK's closed set); None if it did not."""
        ...


class ResponsePipeline(PipelineResult):
    """Upstream bytes -> Responses frames (or event Structs when ``encoder`` is None).

    ``start()`` gives created/in_progress; ``feed(bytes)`` the frames those bytes complete;
    ``fail(err)`` ends the response with error + response.failed (an I/O fault);
    ``close()`` ends it normally (the upstream body ended).

    The result is read off the end of the pipeline: ``output`` and the final ``response`` are
    the CompletionRebuilder's (the items as the client got them, after every stage that may
    change one), ``finished`` and ``failure`` the ResponseStage's.
    """

    __slots__ = ("pipeline", "_builder", "_builder_at", "_rebuilder", "_started", "_closed", "queued", "_seeded")

    def __init__(
        self, head: Sequence[Stage], builder: ResponseStage, encoder: Stage | None, *, reasoning_dialect: str = OPENAI
    ) -> None:
        self._rebuilder = CompletionRebuilder()
        tail: list[Stage] = [Sequencer(), self._rebuilder]
        dialect = dialect_stage(reasoning_dialect)
        if dialect is not None:
            tail.insert(0, dialect)
        if encoder is not None:
            tail.append(encoder)
        self.pipeline = Pipeline([*head, builder, *tail])
        self._builder = builder  # the ResponseBuilder, or the normaliser in its place
        self._builder_at = len(head)
        self._started = False
        self._closed = False
        self.queued = False  # a background run: created (queued), queued, then in_progress
        self._seeded: list[OutputItem] = []

    def seed(self, item: OutputItem) -> None:
        """An output item respline made before the upstream call (a compaction): it opens the
        output, streamed whole right after the start events."""
        self._builder.seed(item)
        self._seeded.append(item)

    # -- the result ------------------------------------------------------------------------

    @property
    def response(self) -> Response:
        done = self._rebuilder.response
        return self._builder.response if done is None else done

    @property
    def output(self) -> list[OutputItem]:
        # before start() nothing has streamed but the seeded items are the output already (a
        # queued background run is stored then)
        return self._rebuilder.output if self._started else self._seeded

    @property
    def finished(self) -> bool:
        return self._builder.finished

    @property
    def failure(self) -> UpstreamError | None:
        return self._builder.failure

    # -- driving it ------------------------------------------------------------------------

    def start(self) -> list:
        self._started = True
        events = self._builder.start()
        if self.queued:
            created = events[0].response
            queued = msgspec.structs.replace(created, status="queued")
            events = [R.ResponseCreated(response=queued), R.ResponseQueued(response=queued), *events[1:]]
        for index, item in enumerate(self._seeded):
            events += [R.OutputItemAdded(output_index=index, item=item), R.OutputItemDone(output_index=index, item=item)]
        return self.pipeline.feed_at(self._builder_at + 1, events)

    def feed(self, data: bytes) -> list:
        return self.pipeline.feed(data)

    def fail(self, err: UpstreamError) -> list:
        out = self.pipeline.feed_at(self._builder_at + 1, self._builder.fail(err))
        return out + self.close()

    def close(self) -> list:
        if self._closed:
            return []
        self._closed = True
        return self.pipeline.close()


ENCODERS: dict[str, Callable[[], Stage]] = {"sse": SseEncoder, "json": JsonEncoder}


def builder_pipeline(
    head: list[Stage],
    template: Response,
    ids: Ids,
    clock: Clock,
    *,
    encoding: str | None = "sse",
    reasoning_dialect: str = OPENAI,
    tools: ToolMap | None = None,
    seal_reasoning: Callable[..., str] | None = None,
    max_tool_calls: int | None = None,
) -> ResponsePipeline:
    """A provider's decoding ``head`` (bytes -> Delta), then the ResponseBuilder and the common tail."""
    builder = ResponseBuilder(template, ids, clock, tools=tools, seal_reasoning=seal_reasoning, max_tool_calls=max_tool_calls)
    encoder = ENCODERS[encoding]() if encoding else None
    return ResponsePipeline(head, builder, encoder, reasoning_dialect=reasoning_dialect)


def responses_pipeline(
    template: Response,
    ids: Ids,
    clock: Clock,
    *,
    encoding: str | None = "sse",
    reasoning_dialect: str = OPENAI,
) -> ResponsePipeline:
    """A Responses-API upstream: SSE framing, then the normaliser in the builder's place and the
    same tail."""
    normaliser = ResponsesNormaliser(template, ids, clock)
    encoder = ENCODERS[encoding]() if encoding else None
    return ResponsePipeline([SseDecoder()], normaliser, encoder, reasoning_dialect=reasoning_dialect)
