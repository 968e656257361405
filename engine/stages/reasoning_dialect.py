"""Raw reasoning in the configured dialect (SPEC 0.1): a stage right after the builder.

The ResponseBuilder and the ResponsesNormaliser emit raw reasoning one way only, OpenAI's:
``reasoning_text`` content parts with ``response.reasoning_text.delta`` / ``.done``. Where a
deployment asks for another dialect, this stage rewrites those events, and only those; with the
default dialect it is not in the pipeline at all (``dialect_stage`` gives None), so the default
hot path pays nothing for the switch.

- ``openresponses`` (Open Responses' names): ``response.reasoning.delta`` / ``.done``, the same
  fields; parts and items unchanged.
- ``summary`` (clients that only show summaries): each ``reasoning_text`` part becomes a summary
  part (``reasoning_summary_part.*``, ``reasoning_summary_text.*``) and a reasoning item carries
  ``summary`` only (``content`` null). Summary parts the upstream sent as such (a Responses
  upstream) and reasoning parts turned into summaries share one ``summary_index`` count per item,
  in the order they opened.
"""

from __future__ import annotations

from typing import Callable

from respline.engine.stage import BatchStage
from respline.engine.wire import responses as R

# Reasoning dialects: OpenAI event names, Open Responses names, or summary events.
OPENAI = "openai"
OPENRESPONSES = "openresponses"
SUMMARY = "summary"
REASONING_DIALECTS = (OPENAI, OPENRESPONSES, SUMMARY)


class OpenResponsesReasoning(BatchStage[R.Event, R.Event]):
    """``reasoning_text`` events under Open Responses' names; one event out per event in."""

    __slots__ = ()

    def feed(self, event: R.Event) -> list[R.Event]:
        return [_renamed(event)]

    def feed_all(self, events: list[R.Event]) -> list[R.Event]:
        return [_renamed(event) for event in events]

    def close(self) -> list[R.Event]:
        return []


def _renamed(e: R.Event) -> R.Event:
    kind = type(e)
    if kind is R.ReasoningTextDelta:
        return R.ReasoningDelta(item_id=e.item_id, output_index=e.output_index, content_index=e.content_index, delta=e.delta)
    if kind is R.ReasoningTextDone:
        return R.ReasoningDone(item_id=e.item_id, output_index=e.output_index, content_index=e.content_index, text=e.text)
    return e


class SummaryReasoning(BatchStage[R.Event, R.Event]):
    """Raw reasoning as summary parts; one event out per event in. One item streams at a time
    and one part within it, so the state is the open reasoning item's: how many summary parts
    it opened, the open one's index, and the finished parts its ``output_item.done`` lists."""

    __slots__ = ("_count", "_index", "_parts", "_handlers")

    def __init__(self) -> None:
        self._count = 0
        self._index = 0
        self._parts: list[R.SummaryText] = []
        self._handlers: dict[type, Callable[[R.Event], R.Event]] = {
            R.OutputItemAdded: self._item_added,
            R.OutputItemDone: self._item_done,
            R.ContentPartAdded: self._part_added,
            R.ContentPartDone: self._part_done,
            R.ReasoningTextDelta: self._delta,
            R.ReasoningTextDone: self._text_done,
            R.ReasoningSummaryPartAdded: self._summary_added,
            R.ReasoningSummaryPartDone: self._summary_done,
            R.ReasoningSummaryTextDelta: self._renumber,
            R.ReasoningSummaryTextDone: self._renumber,
        }

    def feed(self, event: R.Event) -> list[R.Event]:
        handle = self._handlers.get(type(event))
        return [event if handle is None else handle(event)]

    def feed_all(self, events: list[R.Event]) -> list[R.Event]:
        handlers = self._handlers
        out: list[R.Event] = []
        for event in events:
            handle = handlers.get(type(event))
            out.append(event if handle is None else handle(event))
        return out

    def close(self) -> list[R.Event]:
        return []

    # -- items -------------------------------------------------------------------------------

    def _item_added(self, e) -> R.Event:
        item = e.item
        if type(item) is R.ReasoningItem:
            item.content = None
            self._count = 0
            self._parts = []
        return e

    def _item_done(self, e) -> R.Event:
        item = e.item
        if type(item) is R.ReasoningItem:
            item.summary = self._parts
            item.content = None
            self._parts = []
        return e

    # -- parts -------------------------------------------------------------------------------

    def _open(self) -> int:
        self._index = self._count
        self._count += 1
        return self._index

    def _part_added(self, e) -> R.Event:
        if type(e.part) is not R.ReasoningText:
            return e
        return R.ReasoningSummaryPartAdded(
            item_id=e.item_id, output_index=e.output_index, summary_index=self._open(), part=R.SummaryText(text=e.part.text)
        )

    def _part_done(self, e) -> R.Event:
        if type(e.part) is not R.ReasoningText:
            return e
        part = R.SummaryText(text=e.part.text)
        self._parts.append(part)
        return R.ReasoningSummaryPartDone(item_id=e.item_id, output_index=e.output_index, summary_index=self._index, part=part)

    def _delta(self, e) -> R.Event:
        return R.ReasoningSummaryTextDelta(item_id=e.item_id, output_index=e.output_index, summary_index=self._index, delta=e.delta)

    def _text_done(self, e) -> R.Event:
        return R.ReasoningSummaryTextDone(item_id=e.item_id, output_index=e.output_index, summary_index=self._index, text=e.text)

    # a summary part the upstream sent as one keeps its place in the item's one count

    def _summary_added(self, e) -> R.Event:
        e.summary_index = self._open()
        return e

    def _summary_done(self, e) -> R.Event:
        e.summary_index = self._index
        self._parts.append(e.part)
        return e

    def _renumber(self, e) -> R.Event:
        e.summary_index = self._index
        return e


def dialect_stage(dialect: str) -> OpenResponsesReasoning | SummaryReasoning | None:
    """The stage that puts raw reasoning in ``dialect``; None for OpenAI's, the builder's own."""
    if dialect == OPENRESPONSES:
        return OpenResponsesReasoning()
    if dialect == SUMMARY:
        return SummaryReasoning()
    return None
