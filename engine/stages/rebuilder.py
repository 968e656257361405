"""The terminal event carries the whole output, rebuilt from the ``output_item.done`` events.

Clients such as the openai SDK read ``response.completed.response.output``. The stage that
makes the Response (the ResponseBuilder, or the ResponsesNormaliser for an upstream that speaks
the Responses API and sends that list empty or partial) emits the terminal event with the
status, usage and error it knows and no output; this stage, the one place that does it, fills
the output from the items that streamed, in output_index order. A terminal event that already
lists as many items as streamed is left as it is.

It sits after every stage that may still change an item (the reasoning dialect), so what it
keeps is what the client was sent; the ResponsePipeline's result (``output``, ``response``) is
read here, and the stored response with it.
"""

from __future__ import annotations

from bisect import bisect_left

from respline.engine.stage import BatchStage
from respline.engine.wire.responses import TERMINAL_EVENTS, Event, OutputItem, OutputItemDone, Response

_TERMINAL = frozenset(TERMINAL_EVENTS)  # checked per event: a set lookup, not three compares


class CompletionRebuilder(BatchStage[Event, Event]):
    __slots__ = ("output", "response", "_indexes")

    def __init__(self) -> None:
        self.output: list[OutputItem] = []  # the items done so far, in output_index order
        self.response: Response | None = None  # the terminal event's Response, once it passed
        self._indexes: list[int] = []  # the output_index of each of ``output``

    def feed(self, event: Event) -> list[Event]:
        kind = type(event)
        if kind is OutputItemDone:
            self._done(event)  # type: ignore[arg-type]
        elif kind in _TERMINAL:
            self._end(event.response)  # type: ignore[attr-defined]
        return [event]

    def feed_all(self, events: list[Event]) -> list[Event]:
        for event in events:
            kind = type(event)
            if kind is OutputItemDone:
                self._done(event)  # type: ignore[arg-type]
            elif kind in _TERMINAL:
                self._end(event.response)  # type: ignore[attr-defined]
        return events

    def close(self) -> list[Event]:
        return []

    def _done(self, event: OutputItemDone) -> None:
        index, indexes = event.output_index, self._indexes
        if not indexes or index > indexes[-1]:  # items end in order: the only case a stage makes
            indexes.append(index)
            self.output.append(event.item)
            return
        at = bisect_left(indexes, index)
        if indexes[at] == index:
            self.output[at] = event.item  # done again: the later one stands
        else:
            indexes.insert(at, index)
            self.output.insert(at, event.item)

    def _end(self, resp: Response) -> None:
        if len(resp.output) < len(self.output):
            # a new list on this Response only: the one it came with may be the template's
            resp.output = list(self.output)
        self.response = resp
