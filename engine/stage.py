"""The stage contract (docs/architecture.md): what every pipeline stage is.

A stage is a synchronous, sans-I/O state machine from items of one type to items of another.
Its own module, below the stages and engine/pipeline.py, so that each stage class can declare
what it takes and gives (``class SseDecoder(BatchStage[bytes, SseEvent])``) without an import
cycle. The base classes add no state (``__slots__ = ()``) and no per-call cost: they are
protocols a stage may also just match.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from respline.engine.deltas import UpstreamError
from respline.engine.wire.responses import Event, OutputItem, Response

In = TypeVar("In", contravariant=True)
Out = TypeVar("Out", covariant=True)


class Stage(Protocol[In, Out]):
    """``feed`` one item, get what it can emit now; ``close`` when its input ended (cleanly or
    not), get what it still held. Between a provider's head stages the item types are the kind's
    own (bytes -> SseEvent -> Delta); from the builder on they are engine/deltas.py's ``Delta``
    in and engine/wire/responses.py's ``Event`` out."""

    __slots__ = ()

    def feed(self, item: In) -> list[Out]: ...

    def close(self) -> list[Out]: ...


class BatchStage(Stage[In, Out], Protocol):
    """A stage with the hot path's list-in, list-out ``feed_all``: it must give exactly the
    items ``feed`` gives item by item (tests/test_stage_contract.py checks it over every
    fixture, for any split of the upstream bytes); it saves a list per item. A class that
    declares it must define ``feed_all`` itself."""

    __slots__ = ()

    def feed_all(self, items: list[In]) -> list[Out]: ...


class ResponseStage(Stage[In, Event], Protocol):
    """The stage that makes the Response, in the builder's place: the ResponseBuilder (from
    deltas) or the ResponsesNormaliser (from a Responses upstream's own events).

    It emits the item lifecycle and one terminal event, whose Response carries status, usage
    and error but not the output: the CompletionRebuilder after it fills that from the items
    streamed. Besides ``feed`` and ``close`` (the upstream body ended) the ResponsePipeline
    drives it with:"""

    __slots__ = ()

    response: Response
    """The template until the end, then the terminal event's Response."""

    def start(self) -> list[Event]:
        """``response.created`` and ``response.in_progress``, before any upstream byte."""
        ...

    def seed(self, item: OutputItem) -> None:
        """An item respline made before the upstream call (a compaction) takes output_index 0:
        the upstream's items are numbered after it. (The pipeline streams the item itself.)"""
        ...

    def fail(self, err: UpstreamError) -> list[Event]:
        """An I/O fault: the open item closed incomplete, ``error``, ``response.failed``."""
        ...

    @property
    def finished(self) -> bool:
        """The terminal event has been emitted: nothing more comes out."""
        ...

    @property
    def failure(self) -> UpstreamError | None:
        """Why the response failed, with the upstream's own code (``response.failed`` carries
        one from the SDK's closed set): the request log's ``error``."""
        ...
