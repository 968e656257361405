"""Neutral deltas -> the Responses item lifecycle (SPEC 1.5).

One item is open at a time; a delta of another kind closes it first, so output_index only grows.
Within a message, text and refusal are separate content parts. Items are closed (every ``*.done``
and ``output_item.done``) when the upstream says finish, when a different item starts, or when
the stream ends; the terminal event is emitted only at the end of the stream, because providers
send usage and even repeated finish chunks after finish_reason (QUIRKS C17, C19).

Status rules: an item closed after ``finish_reason: length`` is ``incomplete`` and the response is
``response.incomplete`` (max_output_tokens); ``content_filter`` likewise (content_filter); an
upstream error closes the open item as incomplete, then ``error`` and ``response.failed``.

What it does not do: the terminal event's ``output`` is left to the CompletionRebuilder, which
fills it from the ``output_item.done`` events (so the builder keeps no list of its items), and
raw reasoning comes out in OpenAI's dialect only; the reasoning_dialect stage renames it for the
others. Sealing stays here: a reasoning item is sealed as it closes, with the Anthropic signature
or redacted block that only this stage sees (docs/architecture.md).
"""

from __future__ import annotations

from typing import Callable

import msgspec

from respline.engine.deltas import (
    Delta,
    Finish,
    ItemBreak,
    ReasoningDelta,
    ReasoningSignature,
    RedactedReasoning,
    RefusalDelta,
    TextDelta,
    ToolCallArgs,
    ToolCallEnd,
    ToolCallStart,
    UpstreamError,
    UsageDelta,
)
from respline.engine.ids import Clock, Ids
from respline.engine.stage import BatchStage, ResponseStage
from respline.engine.toolmap import CUSTOM_INPUT_PARAM, ToolMap, ToolTarget
from respline.engine.wire import responses as R

_INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}

_CALLS = ("function_call", "custom_tool_call", "tool_search_call")  # items that take ToolCallArgs

# ``response.failed`` carries ``error.code`` from a closed set: the openai SDK 3.54
# ``ResponseError.code`` literals, plus the codes Codex acts on (SPEC 3.3). Upstream codes outside
# it (Groq ``tool_use_failed``, OpenRouter's numeric ``400``) become ``server_error`` there; the
# ``error`` event before it keeps the upstream code, which is free-form in both schemas.
FAILED_CODES = frozenset(
    {
        "server_error", "rate_limit_exceeded", "invalid_prompt", "data_residency_mismatch",
        "bio_policy", "misalignment_policy_violation", "vector_store_timeout", "invalid_image",
        "invalid_image_format", "invalid_base64_image", "invalid_image_url", "image_too_large",
        "image_too_small", "image_parse_error", "image_content_policy_violation",
        "invalid_image_mode", "image_file_too_large", "unsupported_image_media_type",
        "empty_image_file", "failed_to_download_image", "image_file_not_found",
        # Codex (codex-rs/codex-api/src/sse/responses.rs)
        "context_length_exceeded", "insufficient_quota", "usage_not_included",
    }
)


def failed_code(code: str | None, etype: str | None = None) -> str:
    if code in FAILED_CODES:
        return code  # type: ignore[return-value]
    if code == "429" or etype in ("rate_limit_error", "too_many_requests", "rate_limit_exceeded"):
        return "rate_limit_exceeded"
    return "server_error"


def error_event(err: UpstreamError) -> R.ErrorEvent:
    """The ``error`` event of SPEC 3.2: the flat and the nested shape merged, with the upstream's
    own code (``response.failed`` after it carries one from the SDK's closed set)."""
    code = err.code or "server_error"
    return R.ErrorEvent(
        code=code,
        message=err.message,
        param=err.param,
        error=R.ErrorPayload(type=err.type, code=code, message=err.message, param=err.param),
    )


class _Open:
    """The item being streamed."""

    __slots__ = ("kind", "id", "index", "parts", "part_kind", "text", "target", "call_id", "name", "opaque")

    def __init__(self, kind: str, item_id: str, index: int) -> None:
        self.kind = kind
        self.id = item_id
        self.index = index
        self.parts: list = []  # finished content parts
        self.part_kind: str | None = None  # kind of the open part
        self.text: list[str] = []  # the open part's (or call's) text so far
        self.target: ToolTarget | None = None
        self.call_id = ""
        self.name = ""
        self.opaque: dict[str, str] | None = None  # reasoning: Anthropic signature / redacted data


class ResponseBuilder(ResponseStage[Delta], BatchStage[Delta, R.Event]):
    def __init__(
        self,
        template: R.Response,
        ids: Ids,
        clock: Clock,
        *,
        tools: ToolMap | None = None,
        seal_reasoning: Callable[..., str] | None = None,
        max_tool_calls: int | None = None,
    ) -> None:
        self.response = template
        self._ids = ids
        self._clock = clock
        self._tools = tools or {}
        self._seal = seal_reasoning
        self._next_index = 0
        self._open: _Open | None = None
        self._finish: str | None = None
        self._usage: UsageDelta | None = None
        self._error: UpstreamError | None = None
        self._ended = False
        # max_tool_calls: calls past it are not emitted (the model asked for more than the
        # client allows); None is no limit
        self._calls_left = max_tool_calls

    @property
    def finished(self) -> bool:
        """The terminal event has been emitted."""
        return self._ended

    def seed(self, item: R.OutputItem) -> None:
        """An item respline produced before the upstream call (a compaction): it is the
        response's first output item, and the upstream's items follow it."""
        self._next_index += 1

    # -- lifecycle ends ------------------------------------------------------------------

    def start(self) -> list[R.Event]:
        """``response.created`` and ``response.in_progress``, before any upstream delta."""
        resp = self.response
        return [R.ResponseCreated(response=resp), R.ResponseInProgress(response=resp)]

    def feed(self, d: Delta) -> list[R.Event]:
        if self._ended or self._error is not None:
            return []
        out: list[R.Event] = []
        kind = type(d)
        if kind is TextDelta:
            self._content("output_text", d.text, out)
        elif kind is ReasoningDelta:
            self._reasoning(d.text, out)
        elif kind is ReasoningSignature:
            self._end_reasoning({"signature": d.signature}, out)
        elif kind is RedactedReasoning:
            self._close_item(out)
            self._end_reasoning({"redacted": d.data}, out)
        elif kind is ToolCallArgs:
            self._args(d.text, out)
        elif kind is RefusalDelta:
            self._content("refusal", d.text, out)
        elif kind is ToolCallStart:
            self._close_item(out)
            self._open_call(d, out)
        elif kind is ToolCallEnd:
            if self._open is not None and self._open.kind in _CALLS:
                self._close_item(out)
        elif kind is ItemBreak:
            if self._open is not None and self._open.kind == "message":
                self._close_item(out)
        elif kind is Finish:
            self._finish = d.reason
            self._close_item(out)
        elif kind is UsageDelta:
            self._usage = d
        elif kind is UpstreamError:
            self._fail(d, out)
        return out

    def feed_all(self, deltas: list[Delta]) -> list[R.Event]:
        """The per-token hot path: a text or reasoning delta into the part already open is one
        event built here; everything else goes through ``feed``."""
        out: list[R.Event] = []
        for d in deltas:
            kind = type(d)
            item = self._open
            if item is not None and not self._ended and self._error is None:
                if kind is TextDelta and item.part_kind == "output_text":
                    item.text.append(d.text)
                    out.append(R.OutputTextDelta(item.id, item.index, len(item.parts), d.text, []))
                    continue
                if kind is ReasoningDelta and item.kind == "reasoning" and item.part_kind:
                    item.text.append(d.text)
                    out.append(R.ReasoningTextDelta(item.id, item.index, 0, d.text))
                    continue
            out += self.feed(d)
        return out

    def close(self) -> list[R.Event]:
        if self._ended:
            return []
        out: list[R.Event] = []
        self._close_item(out)
        self._terminal(out)
        return out

    @property
    def failure(self) -> UpstreamError | None:
        """Why the response failed, with the upstream's own code (``response.failed`` carries
        one from the SDK's closed set): the request line's ``error``."""
        return self._error

    def fail(self, err: UpstreamError) -> list[R.Event]:
        """An I/O-level fault (timeout, dropped connection): error + response.failed."""
        if self._ended:
            return []
        out: list[R.Event] = []
        self._fail(err, out)
        return out

    # -- items ---------------------------------------------------------------------------

    def _new_item(self, kind: str, prefix: str) -> _Open:
        item = _Open(kind, self._ids.new(prefix), self._next_index)
        self._next_index += 1
        self._open = item
        return item

    def _content(self, part_kind: str, text: str, out: list) -> None:
        item = self._open
        if item is None or item.kind != "message":
            self._close_item(out)
            item = self._new_item("message", "msg_")
            out.append(
                R.OutputItemAdded(
                    output_index=item.index,
                    item=R.MessageItem(id=item.id, status="in_progress", role="assistant", content=[]),
                )
            )
        if item.part_kind != part_kind:
            self._close_part(item, out)
            item.part_kind = part_kind
            part = (
                R.OutputText(text="", annotations=[], logprobs=[])
                if part_kind == "output_text"
                else R.Refusal(refusal="")
            )
            out.append(
                R.ContentPartAdded(
                    item_id=item.id, output_index=item.index, content_index=len(item.parts), part=part
                )
            )
        item.text.append(text)
        if part_kind == "output_text":
            out.append(
                R.OutputTextDelta(
                    item_id=item.id,
                    output_index=item.index,
                    content_index=len(item.parts),
                    delta=text,
                    logprobs=[],
                )
            )
        else:
            out.append(
                R.RefusalDelta(
                    item_id=item.id, output_index=item.index, content_index=len(item.parts), delta=text
                )
            )

    def _open_reasoning(self, out: list) -> _Open:
        self._close_item(out)
        item = self._new_item("reasoning", "rs_")
        out.append(
            R.OutputItemAdded(
                output_index=item.index,
                item=R.ReasoningItem(id=item.id, summary=[], content=[], status="in_progress"),
            )
        )
        return item

    def _end_reasoning(self, opaque: dict[str, str], out: list) -> None:
        """A thinking block ends with its signature, or a redacted block arrives whole: the
        open reasoning item (or a new, text-less one) takes the payload and closes, so the next
        block is an item of its own and each goes back upstream as the block it was."""
        item = self._open
        if item is None or item.kind != "reasoning":
            item = self._open_reasoning(out)
        item.opaque = opaque
        self._close_item(out)

    def _reasoning(self, text: str, out: list) -> None:
        item = self._open
        if item is None or item.kind != "reasoning":
            item = self._open_reasoning(out)
            item.part_kind = "reasoning"
            out.append(
                R.ContentPartAdded(
                    item_id=item.id, output_index=item.index, content_index=0, part=R.ReasoningText(text="")
                )
            )
        item.text.append(text)
        out.append(R.ReasoningTextDelta(item_id=item.id, output_index=item.index, content_index=0, delta=text))

    def _open_call(self, d: ToolCallStart, out: list) -> None:
        if self._calls_left is not None:
            if self._calls_left <= 0:
                return  # over max_tool_calls: its arguments find no open call and are dropped
            self._calls_left -= 1
        target = self._tools.get(d.name) or ToolTarget("function", d.name)
        if target.kind == "tool_search":
            item = self._new_item("tool_search_call", "ts_")
            item.call_id = d.call_id
            item.name = target.name
            added_search = R.ToolSearchCallItem(id=item.id, status="in_progress", call_id=d.call_id, arguments={})
            out.append(R.OutputItemAdded(output_index=item.index, item=added_search))
            return
        custom = target.kind == "custom"
        item = self._new_item("custom_tool_call" if custom else "function_call", "ctc_" if custom else "fc_")
        item.target = target
        item.call_id = d.call_id
        item.name = target.name
        added = R.CALLS[item.kind][2](item.id, "in_progress", d.call_id, target.name, "", target.namespace)
        out.append(R.OutputItemAdded(output_index=item.index, item=added))

    def _args(self, text: str, out: list) -> None:
        item = self._open
        if item is None or item.kind not in _CALLS:
            return  # the accumulator guarantees a call is open; nothing sensible to do otherwise
        item.text.append(text)
        if item.kind == "function_call":
            out.append(R.FunctionCallArgumentsDelta(item_id=item.id, output_index=item.index, delta=text))
        # custom tool input is JSON-wrapped upstream; it is unwrapped and sent whole at the end

    # -- closing -------------------------------------------------------------------------

    def _status(self) -> str:
        return "incomplete" if self._finish in _INCOMPLETE_REASONS or self._error else "completed"

    def _close_part(self, item: _Open, out: list) -> None:
        kind = item.part_kind
        if kind is None:
            return
        text = "".join(item.text)
        idx = len(item.parts)
        if kind == "output_text":
            out.append(
                R.OutputTextDone(
                    item_id=item.id, output_index=item.index, content_index=idx, text=text, logprobs=[]
                )
            )
            part: R.ContentPart = R.OutputText(text=text, annotations=[], logprobs=[])
        else:
            out.append(
                R.RefusalDone(item_id=item.id, output_index=item.index, content_index=idx, refusal=text)
            )
            part = R.Refusal(refusal=text)
        out.append(
            R.ContentPartDone(item_id=item.id, output_index=item.index, content_index=idx, part=part)
        )
        item.parts.append(part)
        item.part_kind = None
        item.text = []

    def _close_item(self, out: list) -> None:
        item = self._open
        if item is None:
            return
        self._open = None
        status = self._status()
        kind = item.kind
        if kind == "message":
            self._close_part(item, out)
            done: R.OutputItem = R.MessageItem(
                id=item.id, status=status, role="assistant", content=item.parts
            )
        elif kind == "reasoning":
            done = self._close_reasoning(item, status, out)
        elif kind == "tool_search_call":
            done = R.ToolSearchCallItem(
                id=item.id, status=status, call_id=item.call_id, arguments=_search_arguments("".join(item.text))
            )
        else:
            done = self._close_call(item, status, out)
        out.append(R.OutputItemDone(output_index=item.index, item=done))

    def _close_call(self, item: _Open, status: str, out: list) -> R.OutputItem:
        """A function or custom tool call's ``*.done``, after what the client was not sent yet,
        and its item."""
        delta_event, done_event, item_type = R.CALLS[item.kind]
        unsent = ""
        if item.kind == "function_call":
            text = "".join(item.text)  # streamed as it came
            if not text:  # no-argument tools (QUIRKS E32): always a JSON object
                text = unsent = "{}"
        else:  # JSON-wrapped upstream: unwrapped and sent whole now
            text = unsent = _unwrap_custom_input("".join(item.text))
        if unsent:
            out.append(delta_event(item.id, item.index, unsent))
        out.append(done_event(item.id, item.index, text))
        target = item.target
        return item_type(item.id, status, item.call_id, item.name, text, target.namespace if target else None)

    def _close_reasoning(self, item: _Open, status: str, out: list) -> R.ReasoningItem:
        text = "".join(item.text)
        content: list[R.ReasoningText] = []
        if item.part_kind is not None:  # (signature-only and redacted items open no part, QUIRKS G42)
            out.append(R.ReasoningTextDone(item_id=item.id, output_index=item.index, content_index=0, text=text))
            rpart = R.ReasoningText(text=text)
            out.append(R.ContentPartDone(item_id=item.id, output_index=item.index, content_index=0, part=rpart))
            content.append(rpart)
        seal = self._seal
        if seal is None:
            sealed = None
        elif item.opaque is not None:
            sealed = seal(text, **item.opaque)
        else:
            sealed = seal(text)
        return R.ReasoningItem(id=item.id, summary=[], content=content, encrypted_content=sealed, status=status)

    # -- the end -------------------------------------------------------------------------

    def _usage_struct(self) -> R.Usage:
        u = self._usage
        if u is None:
            return R.Usage()
        return R.Usage(
            input_tokens=u.input_tokens,
            input_tokens_details=R.InputTokensDetails(
                cached_tokens=u.cached_tokens, cache_write_tokens=u.cache_write_tokens
            ),
            output_tokens=u.output_tokens,
            output_tokens_details=R.OutputTokensDetails(reasoning_tokens=u.reasoning_tokens),
            total_tokens=u.total_tokens,
        )

    def _final(self, **changes) -> R.Response:
        """The terminal Response: status, usage, error; its output is the CompletionRebuilder's."""
        resp = msgspec.structs.replace(self.response, usage=self._usage_struct(), **changes)
        self.response = resp
        return resp

    def _terminal(self, out: list) -> None:
        self._ended = True
        reason = _INCOMPLETE_REASONS.get(self._finish or "")
        now = self._clock.now()
        if reason is not None:
            resp = self._final(
                status="incomplete",
                incomplete_details=R.IncompleteDetails(reason=reason),
                completed_at=now,
            )
            out.append(R.ResponseIncomplete(response=resp))
        else:
            resp = self._final(status="completed", completed_at=now)
            out.append(R.ResponseCompleted(response=resp))

    def _fail(self, err: UpstreamError, out: list) -> None:
        self._error = err
        self._close_item(out)
        out.append(error_event(err))
        resp = self._final(
            status="failed", error=R.ResponseError(code=failed_code(err.code, err.type), message=err.message)
        )
        out.append(R.ResponseFailed(response=resp))
        self._ended = True


def _search_arguments(args: str) -> dict:
    """A tool search's arguments as the object the client reads (``{"query": ...}``)."""
    try:
        value = msgspec.json.decode(args) if args else {}
    except msgspec.DecodeError:
        return {"query": args}
    return value if isinstance(value, dict) else {"query": str(value)}


def _unwrap_custom_input(args: str) -> str:
    """A custom tool travels upstream as ``{"input": "..."}``; the client wants the bare string."""
    if not args:
        return ""
    try:
        value = msgspec.json.decode(args)
    except msgspec.DecodeError:
        return args
    if isinstance(value, dict) and isinstance(value.get(CUSTOM_INPUT_PARAM), str):
        return value[CUSTOM_INPUT_PARAM]
    if isinstance(value, str):
        return value
    return args
