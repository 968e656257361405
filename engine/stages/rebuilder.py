"""The terminal event carries the whole output, rebuilt from the ``output_item.done`` events.

Clients such as the openai SDK read ``response.completed.response.output``; upstreams that speak
the Responses API sometimes send it empty or partial. This stage is the one place that makes it
whole, whatever produced the items before it.
"""

from __future__ import annotations

from respline.engine.wire.responses import TERMINAL_EVENTS, Event, OutputItem, OutputItemDone


_TERMINAL = frozenset(TERMINAL_EVENTS)


class CompletionRebuilder:
    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: dict[int, OutputItem] = {}

    def feed(self, event: Event) -> list[Event]:
        if type(event) is OutputItemDone:
            self._items[event.output_index] = event.item
        elif isinstance(event, TERMINAL_EVENTS):
            resp = event.response
            if len(resp.output) < len(self._items):
                resp.output = [self._items[i] for i in sorted(self._items)]
        return [event]

    def feed_all(self, events: list[Event]) -> list[Event]:
        for event in events:
            kind = type(event)
            if kind is OutputItemDone or kind in _TERMINAL:
                self.feed(event)
        return events

    def close(self) -> list[Event]:
        return []
