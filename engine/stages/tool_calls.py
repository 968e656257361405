"""Tool-call fragments -> whole calls, one open at a time (QUIRKS E25-E34, C19).

Correlation: by ``index`` when the provider sends one; a fragment with a new non-empty ``id`` on
an index that already holds a different call starts a new call (providers that number every call
0); without an index, by ``id``; with neither, the most recent call (Mistral, E28). An empty or
missing id or name on a later fragment is a continuation, never a new call or a rename (E29, E30).

Liveness: the first call streams its arguments as they arrive. When a second call starts, the
first is closed only if its arguments already form complete JSON, which is what sequential
providers (OpenAI, DeepSeek, vLLM, Ollama) produce; otherwise the upstream is interleaving calls,
and later calls are buffered and emitted whole after the live one ends (SPEC 1.5). A finished
call is never reopened: a stray empty fragment after finish_reason is dropped (C19).

Everything that is not a tool-call fragment passes through, after closing the live call if it is
content (the Responses stream has one item open at a time).
"""

from __future__ import annotations

import logging

import msgspec

from respline.engine.deltas import (
    Delta,
    Finish,
    ReasoningDelta,
    RefusalDelta,
    TextDelta,
    ToolCallArgs,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
)
from respline.engine.ids import Ids
from respline.engine.stage import BatchStage

log = logging.getLogger("respline.tools")

PENDING, LIVE, CLOSED = 0, 1, 2


class _Call:
    __slots__ = ("index", "call_id", "name", "args", "state")

    def __init__(self, index: int | None, call_id: str | None, name: str | None) -> None:
        self.index = index
        self.call_id = call_id
        self.name = name
        self.args: list[str] = []
        self.state = PENDING


def _complete_json(parts: list[str]) -> bool:
    if not parts:
        # No arguments yet: the call may still be streaming them (an interleaving upstream
        # that sends every call's header first), so it is not known to be whole.
        return False
    try:
        msgspec.json.decode("".join(parts))
    except msgspec.DecodeError:
        return False
    return True


class ToolCallAccumulator(BatchStage[Delta, Delta]):
    __slots__ = ("_ids", "_calls", "_by_index", "_by_id", "_live", "_last")

    def __init__(self, ids: Ids) -> None:
        self._ids = ids
        self._calls: list[_Call] = []
        self._by_index: dict[int, _Call] = {}
        self._by_id: dict[str, _Call] = {}
        self._live: _Call | None = None
        self._last: _Call | None = None

    def feed(self, d: Delta) -> list[Delta]:
        kind = type(d)
        if kind is ToolCallDelta:
            out: list = []
            self._fragment(d, out)
            return out
        if kind is Finish:
            # The last call is still open when Finish reaches the builder, which closes it with
            # the finish status: a call cut by ``length`` ends ``incomplete`` (SPEC 6.2).
            out = []
            self._finish_all(out, leave_open=True)
            out.append(d)
            live = self._live
            if live is not None:  # closed by the builder; never reopened (C19)
                live.state = CLOSED
                self._live = None
            return out
        if self._live is not None and kind in (TextDelta, ReasoningDelta, RefusalDelta):
            out = []
            self._end_live(out)
            out.append(d)
            return out
        return [d]

    def feed_all(self, deltas: list[Delta]) -> list[Delta]:
        """Content deltas pass straight through while no call is open (the common case)."""
        if self._live is None and not self._calls:
            for d in deltas:
                kind = type(d)
                if kind is ToolCallDelta or kind is Finish:
                    break
            else:
                return deltas
        out: list = []
        for d in deltas:
            out += self.feed(d)
        return out

    def close(self) -> list[Delta]:
        out: list[Delta] = []
        self._finish_all(out)
        return out

    # -- correlation ---------------------------------------------------------------------

    def _find(self, d: ToolCallDelta) -> _Call | None:
        if d.index is not None:
            call = self._by_index.get(d.index)
            if call is not None and d.id and call.call_id and d.id != call.call_id:
                return None  # same index, a different call: providers that number every call 0
            return call
        if d.id:
            return self._by_id.get(d.id)
        return self._last

    def _fragment(self, d: ToolCallDelta, out: list) -> None:
        call = self._find(d)
        if call is None:
            call = _Call(d.index, d.id, d.name)
            self._calls.append(call)
            if d.index is not None:
                self._by_index[d.index] = call
            if d.id:
                self._by_id[d.id] = call
        else:
            if d.id and not call.call_id:
                call.call_id = d.id
                self._by_id[d.id] = call
            if d.name and not call.name:
                call.name = d.name
        self._last = call
        args = d.arguments
        if call.state == CLOSED:
            if args:
                log.warning("dropping arguments for a finished tool call %s", call.call_id)
            return
        if args:
            call.args.append(args)
        if call.state == LIVE:
            if args:
                out.append(ToolCallArgs(args))
            return
        # PENDING: may it go live now?
        if call.name is None:
            return
        live = self._live
        if live is not None:
            if not _complete_json(live.args):
                return  # interleaved: stays buffered until the live call ends
            self._end_live(out)
        self._promote(out)

    def _promote(self, out: list) -> None:
        """Make the oldest buffered call live; a buffered call that is already whole ends at once."""
        while self._live is None:
            nxt = self._first_pending()
            if nxt is None or nxt.name is None:
                return
            self._go_live(nxt, out)
            if nxt is self._last or not _complete_json(nxt.args):
                return
            self._end_live(out)

    def _first_pending(self) -> _Call | None:
        for c in self._calls:
            if c.state == PENDING:
                return c
        return None

    def _go_live(self, call: _Call, out: list) -> None:
        call.state = LIVE
        self._live = call
        if not call.call_id:
            call.call_id = self._ids.new("call_")
        out.append(ToolCallStart(call_id=call.call_id, name=call.name or ""))
        if call.args:
            out.append(ToolCallArgs("".join(call.args)))

    def _end_live(self, out: list) -> None:
        live = self._live
        if live is not None:
            live.state = CLOSED
            self._live = None
            out.append(ToolCallEnd())

    def _finish_all(self, out: list, leave_open: bool = False) -> None:
        """Emit every buffered call in order; the last one stays live when ``leave_open``."""
        for call in self._calls:
            if call.state == PENDING:
                if call.name is None:
                    log.warning("dropping a tool call that never got a name")
                    call.state = CLOSED
                    continue
                self._end_live(out)
                self._go_live(call, out)
        if not leave_open:
            self._end_live(out)
