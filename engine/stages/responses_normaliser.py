"""A Responses-API upstream's events -> respline's own events (QUIRKS I49-I57).

The upstream already speaks the target format, so this stage takes the ResponseBuilder's place
after the SSE framing (docs/architecture.md); the reasoning dialect stage, the Sequencer and the
CompletionRebuilder follow it as they follow the builder. Each SseEvent is first read by
engine/stages/responses_decoder.py (the upstream's shapes: typed lifecycle events, the terminal
event, errors, events with no Struct of ours); this module is the item lifecycle alone. It is a ``ResponseStage`` like the
builder (``start``, ``feed``, ``close``, ``fail``, ``seed``, ``response``, ``finished``,
``failure``) and guarantees what the builder guarantees, whatever the upstream sent:

- The Response is respline's: its id (respline stores it and ``previous_response_id`` names it),
  the requested model, the echoed settings; ``created``/``in_progress`` are sent at once, the
  upstream's own are dropped. From the upstream's terminal event come status, usage,
  ``incomplete_details`` and ``error``; its ``output`` is not taken (its ids are the
  upstream's, and it may be empty or partial): the CompletionRebuilder fills ours from the items
  this stage closed.
- Item ids are stable per item, taken from its ``output_item.added`` even where the upstream
  rotates ``item_id`` on every event (GitHub Copilot); ids get their type's prefix where the
  upstream has none (xAI UUIDs), and a function_call's id is a ``fc_`` id distinct from its
  ``call_id``, which keeps the upstream's value. ``output_index`` and ``content_index`` /
  ``summary_index`` count from 0 with no gaps; ``sequence_number`` is the Sequencer's.
- Every opened thing is closed: a part or item the upstream left open (a ``response.incomplete``
  that arrives mid-message) is closed here; a ``*.done`` whose deltas never came (LM Studio sends
  ``function_call_arguments.done`` only; trimmed recordings) gets one delta with the missing
  text first; an item whose parts were never streamed gets them from its ``output_item.done``.
- ``error`` events (flat or nested) become respline's ``error`` + ``response.failed``; a body
  that ends with no terminal event fails the response, as a cut Chat stream does.
- Raw reasoning (``reasoning_text`` parts, or Open Responses' ``response.reasoning.*``) comes
  out as ``response.reasoning_text.*``, the builder's one dialect; the dialect stage renames it.
  Reasoning summaries stay summaries. ``encrypted_content`` from the item's ``.done``
  (authoritative, I53) is passed through, so the upstream gets its own reasoning back.
- Hosted-tool items (``web_search_call``, ...) and events respline has no Struct for
  (``response.web_search_call.*``, ``response.output_text.annotation.added``) are passed on as
  PassEvents with their indexes rewritten; ``obfuscation`` padding is dropped everywhere.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from respline.engine.deltas import UpstreamError
from respline.engine.ids import Clock, Ids
from respline.engine.stage import BatchStage, ResponseStage
from respline.engine.stages.builder import error_event, failed_code
from respline.engine.stages.responses_decoder import (
    TEXT_DELTAS,
    TEXT_DONES,
    UnknownEvent,
    UpEvent,
    UpstreamEnd,
    read,
)
from respline.engine.stages.sse import SseEvent
from respline.engine.wire import responses as R

log = logging.getLogger("respline.responses")

_PREFIX = {"message": "msg_", "reasoning": "rs_", "function_call": "fc_", "custom_tool_call": "ctc_"}

# the upstream's terminal event type -> ours (the one list: engine/wire/responses.py)
_TERMINAL = {R.event_type(cls): cls for cls in R.TERMINAL_EVENTS}

# A text part's kind -> its ``*.delta`` and ``*.done`` events, for _emit_delta and _text_done_of
# alike; each takes (item_id, output_index, content or summary index, text). output_text's are
# built where they are used (they carry logprobs too). _open_part gives every part one of
# _PART_KINDS.
_TEXT_EVENTS = {
    "summary_text": (R.ReasoningSummaryTextDelta, R.ReasoningSummaryTextDone),
    "reasoning_text": (R.ReasoningTextDelta, R.ReasoningTextDone),
    "refusal": (R.RefusalDelta, R.RefusalDone),
}
_PART_KINDS = frozenset(("output_text", *_TEXT_EVENTS))


class _Part:
    __slots__ = ("up", "kind", "family", "index", "text", "done", "upstream")

    def __init__(self, up: tuple[str, int], kind: str, family: str, index: int) -> None:
        self.up = up  # (upstream family, upstream index)
        self.kind = kind  # output_text | refusal | reasoning_text | summary_text (what we emit)
        self.family = family  # "content" | "summary" (what we emit)
        self.index = index  # our content_index / summary_index
        self.text: list[str] = []
        self.done = False  # the text *.done event was emitted
        self.upstream: dict[str, Any] | None = None  # the upstream's final part (annotations, logprobs)


class _Item:
    __slots__ = (
        "kind", "id", "index", "up_index", "added", "part", "content", "summary", "seen",
        "args", "args_done",
    )

    def __init__(self, kind: str, item_id: str, index: int, up_index: int | None, added: dict[str, Any]) -> None:
        self.kind = kind
        self.id = item_id
        self.index = index
        self.up_index = up_index
        self.added = added
        self.part: _Part | None = None
        self.content: list = []  # finished content parts (Structs)
        self.summary: list = []  # finished summary parts
        self.seen = {"content": 0, "summary": 0}  # upstream parts handled, per upstream family
        self.args: list[str] = []
        self.args_done = False


class ResponsesNormaliser(ResponseStage[SseEvent], BatchStage[SseEvent, R.Event]):
    def __init__(self, template: R.Response, ids: Ids, clock: Clock) -> None:
        self.response = template
        self._ids = ids
        self._clock = clock
        self._open: _Item | None = None
        self._closed_up: set[int] = set()  # upstream output_index values already closed
        self._next_index = 0  # our output_index of the next item
        self._ended = False
        self._failure: UpstreamError | None = None

    @property
    def finished(self) -> bool:
        return self._ended

    @property
    def failure(self) -> UpstreamError | None:
        return self._failure

    def seed(self, item: R.OutputItem) -> None:
        """An item respline produced before the upstream call (a compaction) comes first; the
        upstream's items are numbered after it."""
        self._next_index += 1

    # -- lifecycle ends ------------------------------------------------------------------

    def start(self) -> list:
        resp = self.response
        return [R.ResponseCreated(response=resp), R.ResponseInProgress(response=resp)]

    def feed(self, ev: SseEvent) -> list[R.Event]:
        return self.feed_all([ev])

    def feed_all(self, events: list[SseEvent]) -> list[R.Event]:
        out: list[R.Event] = []
        for ev in events:
            if self._ended:
                break
            e: Any = read(ev)
            if e is None:
                continue
            kind = type(e)
            if kind is not UpEvent:
                if kind is UpstreamEnd:
                    self._terminal(e, out)
                elif kind is UnknownEvent:
                    self._pass(e, out)
                elif kind is UpstreamError:
                    out += self._fail(e)
                continue
            etype = e.type  # a lifecycle event (the per-token case)
            if etype in TEXT_DELTAS:
                self._text_delta(e, etype, out)
            elif etype == "response.function_call_arguments.delta" or etype == "response.custom_tool_call_input.delta":
                self._args_delta(e, out)
            elif etype in TEXT_DONES:
                self._text_done(e, etype, out)
            elif etype == "response.output_item.added":
                self._item_added(e, out)
            elif etype == "response.output_item.done":
                self._item_done(e, out)
            elif etype == "response.content_part.added" or etype == "response.reasoning_summary_part.added":
                self._part_added(e, etype, out)
            elif etype == "response.content_part.done" or etype == "response.reasoning_summary_part.done":
                self._part_done(e, etype, out)
            elif etype == "response.function_call_arguments.done":
                self._args_done(e, e.arguments, out)
            elif etype == "response.custom_tool_call_input.done":
                self._args_done(e, e.input, out)
        return out

    def close(self) -> list[R.Event]:
        if self._ended:
            return []
        return self._fail(UpstreamError(message="upstream stream ended before response.completed"))

    def fail(self, err: UpstreamError) -> list[R.Event]:
        if self._ended:
            return []
        return self._fail(err)

    def _fail(self, err: UpstreamError) -> list[R.Event]:
        self._failure = err
        out: list = []
        self._close_open(out, "incomplete")
        out.append(error_event(err))
        resp = self._final(
            status="failed",
            error=R.ResponseError(code=failed_code(err.code, err.type), message=err.message),
            usage=R.Usage(),
        )
        out.append(R.ResponseFailed(response=resp))
        self._ended = True
        return out

    # -- items ---------------------------------------------------------------------------

    def _item_for(self, e: UpEvent | UnknownEvent) -> _Item | None:
        item = self._open
        if item is None:
            return None
        if e.output_index is not None and item.up_index is not None and e.output_index != item.up_index:
            return None  # an event for an item that is not the open one (closed, or never added)
        return item

    def _new_id(self, kind: str, upstream_id: Any, call_id: str | None = None) -> str:
        prefix = _PREFIX.get(kind)
        if prefix is None:  # hosted tools: the upstream's id as is
            return upstream_id if isinstance(upstream_id, str) and upstream_id else self._ids.new("item_")
        if not isinstance(upstream_id, str) or not upstream_id:
            return self._ids.new(prefix)
        new = upstream_id if upstream_id.startswith(prefix) else prefix + upstream_id
        if call_id is not None and new == call_id:
            return self._ids.new(prefix)
        return new

    def _item_added(self, e: UpEvent, out: list) -> None:
        raw = e.item or {}
        up = e.output_index
        if up is not None and (up in self._closed_up or (self._open is not None and self._open.up_index == up)):
            return  # a repeated added
        self._close_open(out, "completed")
        self._open_item(raw, up, out)

    def _open_item(self, raw: dict[str, Any], up_index: int | None, out: list) -> _Item:
        kind = raw.get("type") or "message"
        call_id = raw.get("call_id") if kind in ("function_call", "custom_tool_call") else None
        item = _Item(kind, self._new_id(kind, raw.get("id"), call_id), self._next_index, up_index, raw)
        self._next_index += 1
        self._open = item
        if kind == "message":
            added: Any = R.MessageItem(
                id=item.id, status="in_progress", role=raw.get("role") or "assistant", content=[], phase=raw.get("phase")
            )
        elif kind == "reasoning":
            added = R.ReasoningItem(
                id=item.id, summary=[], content=[], encrypted_content=raw.get("encrypted_content"), status="in_progress"
            )
        elif kind == "function_call" or kind == "custom_tool_call":
            added = R.CALLS[kind][2](
                item.id, "in_progress", call_id or self._ids.new("call_"), raw.get("name") or "", "", raw.get("namespace")
            )
        else:
            added = _clean({**raw, "id": item.id})
        item.added = raw if kind not in ("function_call", "custom_tool_call") else {**raw, "call_id": added.call_id}
        out.append(R.OutputItemAdded(output_index=item.index, item=added))
        return item

    def _item_done(self, e: UpEvent, out: list) -> None:
        raw = e.item or {}
        item = self._item_for(e)
        if item is None:
            if e.output_index is not None and e.output_index in self._closed_up:
                return  # a repeated done
            self._close_open(out, "completed")
            item = self._open_item(raw, e.output_index, out)  # never added: add it now
        self._close_item(item, raw, "completed", out)

    def _close_open(self, out: list, status: str) -> None:
        if self._open is not None:
            self._close_item(self._open, None, status, out)

    def _close_item(self, item: _Item, final: dict[str, Any] | None, status: str, out: list) -> None:
        """Close the item: finish its open part, emit what the upstream never streamed (from its
        final form when there is one), then ``output_item.done`` with the item as streamed."""
        self._close_part(item, None, out)
        src = final if final is not None else item.added
        if final is not None and final.get("status") in ("completed", "incomplete"):
            status = final["status"]
        kind = item.kind
        if kind == "message":
            self._missing_parts(item, src, "content", out)
            done: Any = R.MessageItem(
                id=item.id,
                status=status,
                role=src.get("role") or "assistant",
                content=item.content,
                phase=src.get("phase") or item.added.get("phase"),
            )
        elif kind == "reasoning":
            self._missing_parts(item, src, "summary", out)
            self._missing_parts(item, src, "content", out)
            enc = src.get("encrypted_content") or item.added.get("encrypted_content")
            done = R.ReasoningItem(
                id=item.id,
                summary=item.summary,
                content=item.content or None,
                encrypted_content=enc if isinstance(enc, str) else None,
                status=status,
            )
        elif kind == "function_call" or kind == "custom_tool_call":
            field = "arguments" if kind == "function_call" else "input"
            if not item.args_done:
                whole = src.get(field)
                self._finish_args(item, whole if isinstance(whole, str) else None, out)
            text = "".join(item.args)
            call_id = item.added.get("call_id") or ""
            name = src.get("name") or item.added.get("name") or ""
            namespace = src.get("namespace") or item.added.get("namespace")
            done = R.CALLS[kind][2](item.id, status, call_id, name, text, namespace)
        else:
            done = _clean({**src, "id": item.id})
            if done.get("status") not in ("completed", "incomplete", "failed"):
                done["status"] = status
        if item.up_index is not None:
            self._closed_up.add(item.up_index)
        self._open = None
        out.append(R.OutputItemDone(output_index=item.index, item=done))

    def _missing_parts(self, item: _Item, src: dict[str, Any], up_family: str, out: list) -> None:
        parts = src.get(up_family)
        if not isinstance(parts, list):
            return
        for n in range(item.seen[up_family], len(parts)):
            p = parts[n]
            if not isinstance(p, dict):
                continue
            kind = p.get("type") or ("summary_text" if up_family == "summary" else "output_text")
            field = "refusal" if kind == "refusal" else "text"
            part = self._open_part(item, (up_family, n), kind, out)
            if part is None:
                continue
            text = p.get(field)
            self._close_part(item, p, out, whole=text if isinstance(text, str) else "")

    # -- parts ---------------------------------------------------------------------------

    def _open_part(self, item: _Item, up: tuple[str, int], kind: str, out: list) -> _Part | None:
        if item.kind not in ("message", "reasoning"):
            return None
        self._close_part(item, None, out)
        if kind not in _PART_KINDS:
            # a part type this gateway does not know (a newer API's, a provider's own): its text
            # goes out as the item's own kind of text, so every event after it is one clients know
            kind = "summary_text" if up[0] == "summary" else "output_text" if item.kind == "message" else "reasoning_text"
        family = "summary" if kind == "summary_text" else "content"
        parts = item.summary if family == "summary" else item.content
        part = _Part(up, kind, family, len(parts))
        item.part = part
        item.seen[up[0]] = max(item.seen[up[0]], up[1] + 1)
        if family == "summary":
            out.append(
                R.ReasoningSummaryPartAdded(
                    item_id=item.id, output_index=item.index, summary_index=part.index, part=R.SummaryText(text="")
                )
            )
        else:
            out.append(
                R.ContentPartAdded(
                    item_id=item.id, output_index=item.index, content_index=part.index, part=_empty_part(kind)
                )
            )
        return part

    def _part_for(self, item: _Item, e: UpEvent, family: str, kind: str, out: list) -> _Part | None:
        """The part an event is about: the open one, or a new one the upstream never added."""
        index = e.summary_index if family == "summary" else e.content_index
        part = item.part
        if part is not None and part.up[0] == family and (index is None or part.up[1] == index):
            return part
        if index is None:
            index = item.seen[family]
        elif index < item.seen[family]:
            return None  # about a part already closed
        return self._open_part(item, (family, index), kind, out)

    def _part_added(self, e: UpEvent, etype: str, out: list) -> None:
        item = self._item_for(e)
        if item is None:
            return
        family = "summary" if "summary" in etype else "content"
        index = e.summary_index if family == "summary" else e.content_index
        if index is None:
            index = item.seen[family]
        part = item.part
        if part is not None and part.up == (family, index):
            return
        if index < item.seen[family]:
            return  # a part already handled
        kind = (e.part or {}).get("type") or ("summary_text" if family == "summary" else "output_text")
        self._open_part(item, (family, index), kind, out)

    def _text_delta(self, e: UpEvent, etype: str, out: list) -> None:
        item = self._item_for(e)
        if item is None:
            return
        family, kind = TEXT_DELTAS[etype]
        delta = e.delta
        if not isinstance(delta, str):
            return
        part = self._part_for(item, e, family, kind, out)
        if part is None:
            return
        part.text.append(delta)
        if delta:
            self._emit_delta(item, part, delta, e.logprobs, out)

    def _emit_delta(self, item: _Item, part: _Part, delta: str, logprobs: list | None, out: list) -> None:
        kind = part.kind
        if kind == "output_text":
            out.append(R.OutputTextDelta(item.id, item.index, part.index, delta, logprobs if logprobs is not None else []))
        else:
            out.append(_TEXT_EVENTS[kind][0](item.id, item.index, part.index, delta))

    def _text_done(self, e: UpEvent, etype: str, out: list) -> None:
        item = self._item_for(e)
        if item is None:
            return
        family, kind, field = TEXT_DONES[etype]
        part = self._part_for(item, e, family, kind, out)
        if part is None or part.done:
            return
        whole = getattr(e, field)
        self._text_done_of(item, part, whole if isinstance(whole, str) else None, out)

    def _text_done_of(self, item: _Item, part: _Part, whole: str | None, out: list) -> None:
        """The part's ``*.done``: deltas the upstream never sent come first (I57)."""
        have = "".join(part.text)
        if whole is not None and whole != have:
            if whole.startswith(have):
                rest = whole[len(have) :]
                part.text.append(rest)
                self._emit_delta(item, part, rest, None, out)
                have = whole
            else:
                log.debug("upstream *.done text differs from its deltas; keeping what was streamed")
        part.done = True
        kind = part.kind
        if kind == "output_text":
            logprobs = (part.upstream or {}).get("logprobs")
            out.append(R.OutputTextDone(item.id, item.index, part.index, have, logprobs if isinstance(logprobs, list) else []))
        else:
            out.append(_TEXT_EVENTS[kind][1](item.id, item.index, part.index, have))

    def _part_done(self, e: UpEvent, etype: str, out: list) -> None:
        item = self._item_for(e)
        if item is None:
            return
        family = "summary" if "summary" in etype else "content"
        index = e.summary_index if family == "summary" else e.content_index
        part = item.part
        if part is None or part.up[0] != family or (index is not None and part.up[1] != index):
            if index is not None and index < item.seen[family]:
                return  # already closed
            kind = (e.part or {}).get("type") or ("summary_text" if family == "summary" else "output_text")
            part = self._open_part(item, (family, index if index is not None else item.seen[family]), kind, out)
            if part is None:
                return
        self._close_part(item, e.part, out)

    def _close_part(self, item: _Item, upstream: dict[str, Any] | None, out: list, whole: str | None = None) -> None:
        part = item.part
        if part is None:
            return
        if upstream is not None:
            part.upstream = upstream
            if whole is None:
                text = upstream.get("refusal" if part.kind == "refusal" else "text")
                whole = text if isinstance(text, str) else None
        if not part.done:
            self._text_done_of(item, part, whole, out)
        text = "".join(part.text)
        kind = part.kind
        if kind == "output_text":
            up = part.upstream or {}
            annotations = up.get("annotations")
            logprobs = up.get("logprobs")
            final: Any = R.OutputText(
                text=text,
                annotations=annotations if isinstance(annotations, list) else [],
                logprobs=logprobs if isinstance(logprobs, list) else [],
            )
        elif kind == "refusal":
            final = R.Refusal(refusal=text)
        elif kind == "reasoning_text":
            final = R.ReasoningText(text=text)
        else:
            final = R.SummaryText(text=text)
        if part.family == "summary":
            out.append(
                R.ReasoningSummaryPartDone(item_id=item.id, output_index=item.index, summary_index=part.index, part=final)
            )
            item.summary.append(final)
        else:
            out.append(
                R.ContentPartDone(item_id=item.id, output_index=item.index, content_index=part.index, part=final)
            )
            item.content.append(final)
        item.part = None

    # -- call arguments ------------------------------------------------------------------

    def _args_delta(self, e: UpEvent, out: list) -> None:
        item = self._item_for(e)
        delta = e.delta
        if item is None or item.args_done or not isinstance(delta, str) or not delta:
            return
        call = R.CALLS.get(item.kind)
        if call is not None:
            item.args.append(delta)
            out.append(call[0](item.id, item.index, delta))

    def _args_done(self, e: UpEvent, whole: str | None, out: list) -> None:
        item = self._item_for(e)
        if item is None or item.args_done or item.kind not in ("function_call", "custom_tool_call"):
            return
        self._finish_args(item, whole, out)

    def _finish_args(self, item: _Item, whole: str | None, out: list) -> None:
        have = "".join(item.args)
        function = item.kind == "function_call"
        delta_event, done_event, _ = R.CALLS[item.kind]
        if whole is None:
            whole = have
        if function and not whole:
            whole = "{}"  # no-argument calls are a JSON object (QUIRKS E32)
        if whole != have:
            if whole.startswith(have):
                rest = whole[len(have) :]
                item.args.append(rest)
                out.append(delta_event(item.id, item.index, rest))
            else:
                log.debug("upstream arguments differ from their deltas; keeping what was streamed")
        out.append(done_event(item.id, item.index, "".join(item.args)))
        item.args_done = True

    # -- the end -------------------------------------------------------------------------

    def _terminal(self, e: UpstreamEnd, out: list) -> None:
        status = e.status
        self._close_open(out, "completed" if status == "completed" else "incomplete")
        changes: dict[str, Any] = {"status": status, "usage": e.usage}
        if status == "incomplete":
            changes["incomplete_details"] = R.IncompleteDetails(reason=e.incomplete_reason)
        if status == "failed":
            changes["error"] = R.ResponseError(code=failed_code(e.error_code), message=e.error_message)
        else:
            changes["completed_at"] = self._clock.now()  # respline's clock, like created_at
        resp = self._final(**changes)
        out.append(_TERMINAL[e.type](response=resp))
        self._ended = True

    def _final(self, **changes) -> R.Response:
        """The terminal Response: status, usage, error; its output is the CompletionRebuilder's."""
        resp = msgspec.structs.replace(self.response, **changes)
        self.response = resp
        return resp

    # -- everything else -----------------------------------------------------------------

    def _pass(self, e: UnknownEvent, out: list) -> None:
        """An event respline has no Struct for, about the open item: passed on, re-indexed."""
        item = self._item_for(e)
        if item is None:
            log.debug("dropping upstream event %r", e.type)
            return
        fields = e.fields
        fields["output_index"] = item.index
        if "item_id" in fields:
            fields["item_id"] = item.id
        if "content_index" in fields:
            part = item.part
            if part is None:
                return  # an annotation for a part that is not open: nowhere to put it
            fields["content_index"] = part.index
        out.append(R.PassEvent(type=e.type, fields=fields))


# --- helpers -------------------------------------------------------------------------------


def _empty_part(kind: str) -> Any:
    if kind == "output_text":
        return R.OutputText(text="", annotations=[], logprobs=[])
    if kind == "refusal":
        return R.Refusal(refusal="")
    return R.ReasoningText(text="")


def _clean(item: dict[str, Any]) -> dict[str, Any]:
    item.pop("obfuscation", None)
    return item
