"""A turn whose input ends with ``compaction_trigger``: the context is compacted, not answered.

Codex with its built-in OpenAI provider compacts its context this way (a final
``{"type": "compaction_trigger"}`` item on an ordinary ``/v1/responses`` request) and expects a
Response whose output is exactly one ``compaction`` item. respline does what its
``/v1/responses/compact`` does: the routed upstream writes a summary of the context, and the
summary comes back sealed in the item's ``encrypted_content`` (engine/compaction.py), which a
later request expands again.

``CompactionPipeline`` takes the turn's ResponsePipeline's place, so the HTTP, WebSocket and
background paths run it unchanged: the summary call's own pipeline (events unencoded) reads the
upstream, none of its events go to the client, and when it ends the client gets
``response.created`` / ``in_progress`` (sent at once), then ``output_item.added`` (compaction),
``response.compaction.compacting``, ``output_item.done`` and ``response.completed`` with the
summary call's usage, or ``error`` + ``response.failed`` when the upstream failed or wrote
nothing.
"""

from __future__ import annotations

from typing import Any, Callable

import msgspec

from respline.engine import compaction
from respline.engine.deltas import UpstreamError
from respline.engine.ids import Clock, Ids
from respline.engine.pipeline import ENCODERS, Pipeline, PipelineResult, ResponsePipeline
from respline.engine.stages.builder import error_event, failed_code
from respline.engine.stages.sequencer import Sequencer
from respline.engine.wire import request as Q
from respline.engine.wire import responses as R


def summary_turn(req: Q.CreateRequest, items: list[Any]) -> tuple[Q.CreateRequest, list[Any]]:
    """The request and items that ask the upstream for the summary: the context, then the
    compaction instruction; no tools are offered (the summary is plain text)."""
    ask = Q.CreateRequest(model=req.model, instructions=req.instructions, store=False)
    return ask, [*items, Q.MessageIn(role="user", content=compaction.INSTRUCTIONS)]


def summary_text(output: list[Any]) -> str:
    return "".join(
        part.text
        for item in output
        if type(item) is R.MessageItem
        for part in item.content
        if type(part) is R.OutputText
    )


class CompactionPipeline(PipelineResult):
    """The ResponsePipeline interface (``start``, ``feed``, ``fail``, ``close``, ``queued``, and
    the result: ``response``, ``output``, ``finished``, ``failure``) over the summary call's own
    pipeline."""

    __slots__ = ("inner", "response", "output", "finished", "queued", "_tail", "_ids", "_clock", "_seal")

    def __init__(
        self,
        inner: ResponsePipeline,
        encoding: str | None,
        ids: Ids,
        clock: Clock,
        seal: Callable[[str], str],  # the summary -> its sealed token (Sealer.seal_summary)
    ) -> None:
        self.inner = inner  # built with encoding=None: its events are read, never sent
        self.response: R.Response = inner.response
        self.output: list[R.OutputItem] = []
        self.finished = False
        self.queued = False  # a background run starts with created (queued), queued
        stages: list = [Sequencer()]
        if encoding:
            stages.append(ENCODERS[encoding]())
        self._tail = Pipeline(stages)
        self._ids = ids
        self._clock = clock
        self._seal = seal

    @property
    def failure(self) -> UpstreamError | None:
        """The summary call's own failure, with the upstream's code (None when it answered,
        even with no summary: that failure is respline's)."""
        return self.inner.failure

    def start(self) -> list:
        resp = self.response
        events: list = [R.ResponseCreated(response=resp), R.ResponseInProgress(response=resp)]
        if self.queued:
            queued = msgspec.structs.replace(resp, status="queued")
            events[:1] = [R.ResponseCreated(response=queued), R.ResponseQueued(response=queued)]
        return self._tail.feed_at(0, events)

    def feed(self, data: bytes) -> list:
        if self.finished:
            return []
        self.inner.feed(data)
        return self._end() if self.inner.finished else []

    def fail(self, err: UpstreamError) -> list:
        if self.finished:
            return []
        self.inner.fail(err)
        return self._end()

    def close(self) -> list:
        if self.finished:
            return []
        self.inner.close()
        return self._end()

    def _end(self) -> list:
        self.finished = True
        done = self.inner.response
        text = summary_text(done.output)
        if done.status == "failed" or not text.strip():
            err = done.error
            failure = UpstreamError(
                message=err.message if err is not None else "The upstream wrote no summary of the context.",
                code=err.code if err is not None else "server_error",
            )
            self.response = msgspec.structs.replace(
                self.response,
                status="failed",
                error=R.ResponseError(code=failed_code(failure.code), message=failure.message),
                usage=done.usage,
            )
            events: list = [error_event(failure), R.ResponseFailed(response=self.response)]
        else:
            item_id = self._ids.new("cmp_")
            item = R.CompactionItem(id=item_id, encrypted_content=self._seal(text))
            self.output = [item]
            self.response = msgspec.structs.replace(
                self.response, status="completed", completed_at=self._clock.now(), output=[item], usage=done.usage
            )
            events = [
                R.OutputItemAdded(output_index=0, item=R.CompactionItem(id=item_id, encrypted_content="")),
                R.CompactionCompacting(item_id=item_id, output_index=0),
                R.OutputItemDone(output_index=0, item=item),
                R.ResponseCompleted(response=self.response),
            ]
        return self._tail.feed_at(0, events) + self._tail.close()
