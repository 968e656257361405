"""Composes stages; the one place that knows their order (ARCHITECTURE.md).

A stage (``Stage[In, Out]`` below) has ``feed(item) -> list`` and ``close() -> list``, and may
have ``feed_all(items) -> list`` (``BatchStage``). Feeding the head pushes each output
through every later stage in turn; closing a stage pushes what it still held through the later
stages before they are closed themselves. Everything is synchronous: the adapters own the I/O.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence, TypeVar

import msgspec

from respline.engine.deltas import UpstreamError
from respline.engine.ids import Clock, Ids
from respline.engine.stages.builder import OPENAI, ResponseBuilder
from respline.engine.stages.encoder import JsonEncoder, SseEncoder
from respline.engine.stages.rebuilder import CompletionRebuilder
from respline.engine.stages.responses_normaliser import ResponsesNormaliser
from respline.engine.stages.sequencer import Sequencer
from respline.engine.stages.sse import SseDecoder
from respline.engine.toolmap import ToolMap
from respline.engine.wire import responses as R
from respline.engine.wire.responses import Response


In = TypeVar("In", contravariant=True)
Out = TypeVar("Out", covariant=True)


class Stage(Protocol[In, Out]):
    """A sans-I/O state machine: ``feed`` one item, get what it can emit now; ``close`` when
    its input ended (cleanly or not), get what it still held. Between a provider's head stages
    the item types are the kind's own (bytes -> SseEvent -> deltas); from the builder on they
    are engine/deltas.py's ``Delta`` in and engine/wire/responses.py's ``Event`` out."""

    def feed(self, item: In) -> list[Out]: ...

    def close(self) -> list[Out]: ...


class BatchStage(Stage[In, Out], Protocol):
    """A stage with the hot path's list-in, list-out ``feed_all``: it must give exactly the
    items ``feed`` gives item by item (tests/test_stage_contract.py checks it over every
    fixture, for any split of the upstream bytes); it saves a list per item."""

    def feed_all(self, items: list[In]) -> list[Out]: ...


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


class ResponsePipeline:
    """Upstream bytes -> Responses frames (or event Structs when ``encoder`` is None).

    ``start()`` gives created/in_progress; ``feed(bytes)`` the frames those bytes complete;
    ``fail(err)`` ends the response with error + response.failed (an I/O fault);
    ``close()`` ends it normally (the upstream body ended).
    """

    __slots__ = ("pipeline", "builder", "_builder_at", "_closed", "queued", "_seeded")

    def __init__(
        self, head: Sequence[Stage], builder: ResponseBuilder | ResponsesNormaliser, encoder: Stage | None
    ) -> None:
        tail: list[Stage] = [Sequencer(), CompletionRebuilder()]
        if encoder is not None:
            tail.append(encoder)
        self.pipeline = Pipeline([*head, builder, *tail])
        self.builder = builder
        self._builder_at = len(head)
        self._closed = False
        self.queued = False  # a background run: created (queued), queued, then in_progress
        self._seeded: list = []

    def seed(self, item: Any) -> None:
        """An output item respline made before the upstream call (a compaction): it opens the
        output, streamed whole right after the start events."""
        self.builder.seed(item)
        self._seeded.append(item)

    @property
    def response(self) -> Response:
        return self.builder.response

    def start(self) -> list:
        events = self.builder.start()
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
        out = self.pipeline.feed_at(self._builder_at + 1, self.builder.fail(err))
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
    """A provider's decoding ``head``, then the ResponseBuilder and the common tail."""
    builder = ResponseBuilder(
        template,
        ids,
        clock,
        reasoning_dialect=reasoning_dialect,
        tools=tools,
        seal_reasoning=seal_reasoning,
        max_tool_calls=max_tool_calls,
    )
    encoder = ENCODERS[encoding]() if encoding else None
    return ResponsePipeline(head, builder, encoder)


def responses_pipeline(
    template: Response,
    ids: Ids,
    clock: Clock,
    *,
    encoding: str | None = "sse",
    reasoning_dialect: str = OPENAI,
) -> ResponsePipeline:
    """A Responses-API upstream: the normaliser takes the builder's place; the Sequencer and the
    CompletionRebuilder stay."""
    normaliser = ResponsesNormaliser(template, ids, clock, reasoning_dialect=reasoning_dialect)
    encoder = ENCODERS[encoding]() if encoding else None
    return ResponsePipeline([SseDecoder()], normaliser, encoder)
