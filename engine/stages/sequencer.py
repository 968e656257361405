"""sequence_number 0, 1, 2, ... across one response, with no gaps (SPEC 0.2)."""

from __future__ import annotations

from respline.engine.stage import BatchStage
from respline.engine.wire.responses import Event


class Sequencer(BatchStage[Event, Event]):
    __slots__ = ("_next",)

    def __init__(self, start: int = 0) -> None:
        self._next = start

    def feed(self, event: Event) -> list[Event]:
        event.sequence_number = self._next
        self._next += 1
        return [event]

    def feed_all(self, events: list[Event]) -> list[Event]:
        n = self._next
        for event in events:
            event.sequence_number = n
            n += 1
        self._next = n
        return events

    def close(self) -> list[Event]:
        return []
