"""Validation helpers for every test that sees Responses stream events.

    from validate import validate_event, validate_response, check_lifecycle, parse_sse

* ``validate_event(ev, dialect)``: one event dict against the openai SDK 3.54 models and the
  Open Responses types (PyPI ``openresponses_types``), SPEC 1.2.
* ``validate_response(obj)``: a final Response object against both (SPEC 1.3).
* ``check_lifecycle(events)``: the ordering rules of SPEC 1.5 over a whole stream.
* ``parse_sse(body)``: an SSE body -> event dicts, checking the framing rules of SPEC 0.2 / 1.1.
* ``checked(events)``, ``checked_replay(pieces, **options)``: all of the above over one stream.

Every failure is an AssertionError that says which event (by sequence_number and type) broke
which rule.
"""

from __future__ import annotations

import json
import typing
from typing import Any

import openai.types.responses as oai
import openresponses_types as ort
import pydantic

from respline.engine.replay import replay

# --- schema tables -------------------------------------------------------------------------

# The SDK's own union, as the brief and SPEC name it. Its discriminator is an openai-internal
# PropertyInfo that pydantic does not read, so this is a smart union; an event is valid when
# some member accepts it, and the literal ``type`` makes that member unique.
OPENAI_EVENT = pydantic.TypeAdapter(oai.ResponseStreamEvent)
OPENAI_RESPONSE = pydantic.TypeAdapter(oai.Response)
OR_RESPONSE = pydantic.TypeAdapter(ort.ResponseResource)


def _literal_type(model: type[pydantic.BaseModel]) -> str:
    ann = model.model_fields["type"].annotation
    args = typing.get_args(ann)
    if args:  # Literal["..."]
        return args[0]
    return next(iter(ann)).value  # openresponses_types uses one-member StrEnums


# The member model per type, only to turn a smart-union failure into a readable message.
_OPENAI_BY_TYPE: dict[str, type[pydantic.BaseModel]] = {
    _literal_type(m): m for m in typing.get_args(typing.get_args(oai.ResponseStreamEvent)[0])
}
_OR_BY_TYPE: dict[str, type[pydantic.BaseModel]] = {
    _literal_type(getattr(ort, name)): getattr(ort, name)
    for name in dir(ort)
    if name.endswith("StreamingEvent")
}

# Event types that exist in one specification only (SPEC 0.1, 1.2).
OPENAI_ONLY = frozenset(
    {
        "response.reasoning_text.delta",  # OR names raw reasoning response.reasoning.*
        "response.reasoning_text.done",
        "response.custom_tool_call_input.delta",  # OR has no custom (freeform) tools
        "response.custom_tool_call_input.done",
        "response.compaction.compacting",  # OR has no compaction events
    }
)
OR_ONLY = frozenset({"response.reasoning.delta", "response.reasoning.done"})
# Hosted-tool items a Responses-API upstream streams (passed through by respline): OpenAI-only,
# with ids of their own prefixes and events of their own (``response.web_search_call.*``).
# OpenAI itself sends ``output_item.added`` for them without keys the SDK model requires
# (``web_search_call`` without ``action``); the SDK constructs streamed models without
# validating, so only the envelope of such an event is checked against the SDK.
HOSTED_ITEMS = frozenset(
    {
        "web_search_call", "file_search_call", "computer_call", "code_interpreter_call",
        "image_generation_call", "local_shell_call", "shell_call", "apply_patch_call", "mcp_call",
        "mcp_list_tools", "mcp_approval_request", "tool_search_call",
    }
)
# Items respline itself makes that OR has no schema for: validated against the SDK (their
# SDK models match what respline sends), skipped for OR.
RESPLINE_OPENAI_ITEMS = frozenset({"custom_tool_call", "compaction", "tool_search_call"})
# Item types that exist only at OpenAI; OR's ItemField union has no custom_tool_call.
OPENAI_ONLY_ITEMS = RESPLINE_OPENAI_ITEMS | HOSTED_ITEMS

DIALECTS = ("openai", "openresponses", "summary")
# Raw-reasoning event families a stream of each dialect must NOT contain (builder.py dialects).
_FORBIDDEN = {
    "openai": frozenset({"response.reasoning.delta", "response.reasoning.done"}),
    "openresponses": frozenset({"response.reasoning_text.delta", "response.reasoning_text.done"}),
    "summary": frozenset(
        {
            "response.reasoning.delta",
            "response.reasoning.done",
            "response.reasoning_text.delta",
            "response.reasoning_text.done",
        }
    ),
}

TERMINAL = ("response.completed", "response.incomplete", "response.failed")

# response.failed error codes Codex acts on (SPEC 3.3) that the SDK's ResponseError.code literal
# set lacks. OpenAI sends them; the SDK only constructs (never validates) streamed models, so they
# reach clients fine. They are checked against the SDK as if they were server_error.
CODEX_FAILED_CODES = frozenset({"context_length_exceeded", "insufficient_quota", "usage_not_included"})


def _sdk_view(obj: dict) -> dict:
    """``obj`` (an event or a Response) with a Codex-only failed code replaced, for the SDK check."""
    resp = obj.get("response", obj)
    err = resp.get("error") if isinstance(resp, dict) else None
    if not (isinstance(err, dict) and err.get("code") in CODEX_FAILED_CODES):
        return obj
    resp = {**resp, "error": {**err, "code": "server_error"}}
    return {**obj, "response": resp} if "response" in obj else resp
_HOSTED_EVENT_PREFIXES = tuple(f"response.{t}." for t in HOSTED_ITEMS)


def _without_hosted(obj: dict) -> dict:
    """For the SDK check: hosted-tool items (``item``, ``response.output``) as a known-good
    stand-in, since OpenAI's own hosted items do not match the SDK models (see HOSTED_ITEMS)."""
    stand_in = {"type": "function_call", "id": "fc_x", "call_id": "c", "name": "n", "arguments": "", "status": "completed"}
    item = obj.get("item")
    if isinstance(item, dict) and item.get("type") in HOSTED_ITEMS:
        obj = {**obj, "item": stand_in}
    resp = obj.get("response", obj)
    output = resp.get("output") if isinstance(resp, dict) else None
    if isinstance(output, list) and any(isinstance(i, dict) and i.get("type") in HOSTED_ITEMS for i in output):
        resp = {**resp, "output": [stand_in if isinstance(i, dict) and i.get("type") in HOSTED_ITEMS else i for i in output]}
        obj = {**obj, "response": resp} if "response" in obj else resp
    return obj


# items without a status (a compaction item is whole when it is added)
STATUSLESS = frozenset({"compaction"})


def kind_statusless(item: dict) -> bool:
    return item.get("type") in STATUSLESS


ID_PREFIX = {
    "compaction": "cmp_",
    "tool_search_call": "ts_",
    "message": "msg_",
    "function_call": "fc_",
    "reasoning": "rs_",
    "custom_tool_call": "ctc_",
}


def _where(ev: dict) -> str:
    return f"event #{ev.get('sequence_number')} {ev.get('type')!r}"


def _first_error(exc: pydantic.ValidationError, limit: int = 5) -> str:
    lines = []
    for err in exc.errors()[:limit]:
        loc = ".".join(str(p) for p in err["loc"])
        lines.append(f"  {loc}: {err['msg']} (got {err.get('input')!r:.120})")
    return "\n".join(lines)


# --- per-event validation ------------------------------------------------------------------


def _strip_openai_only_items(obj: Any) -> Any:
    """A copy without custom_tool_call items, for the OR check of what else the object holds."""
    if isinstance(obj, dict):
        return {k: _strip_openai_only_items(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [
            _strip_openai_only_items(v)
            for v in obj
            if not (isinstance(v, dict) and v.get("type") in OPENAI_ONLY_ITEMS)
        ]
    return obj


def validate_event(ev: dict, dialect: str = "openai") -> None:
    """Assert one event is valid for the openai SDK and for Open Responses (where it exists)."""
    assert dialect in DIALECTS, f"unknown dialect {dialect!r}"
    assert isinstance(ev, dict), f"event is not an object: {ev!r:.200}"
    etype = ev.get("type")
    assert isinstance(etype, str), f"event without a string type: {ev!r:.200}"
    assert isinstance(ev.get("sequence_number"), int), f"{_where(ev)}: no integer sequence_number"
    assert etype not in _FORBIDDEN[dialect], (
        f"{_where(ev)}: event type not allowed in the {dialect!r} reasoning dialect"
    )

    # openai SDK: every event but the Open Responses raw-reasoning names.
    if etype not in OR_ONLY:
        model = _OPENAI_BY_TYPE.get(etype)
        assert model is not None, f"{_where(ev)}: not an openai SDK ResponseStreamEvent type"
        sdk_ev = _sdk_view(ev) if etype == "response.failed" else ev
        sdk_ev = _without_hosted(sdk_ev)
        try:
            OPENAI_EVENT.validate_python(sdk_ev)
        except pydantic.ValidationError:
            try:
                model.model_validate(sdk_ev)
            except pydantic.ValidationError as exc:
                raise AssertionError(
                    f"{_where(ev)} fails openai {model.__name__}:\n{_first_error(exc)}"
                ) from None
            raise AssertionError(f"{_where(ev)} fails the openai ResponseStreamEvent union") from None

    # Open Responses: skipped explicitly for OpenAI-only events (reasoning_text.*, custom tool
    # input) and output items of type custom_tool_call, which OR has no schema for.
    if etype in OPENAI_ONLY or etype.startswith(_HOSTED_EVENT_PREFIXES):
        return
    item = ev.get("item")
    if isinstance(item, dict) and item.get("type") in OPENAI_ONLY_ITEMS:
        return
    model = _OR_BY_TYPE.get(etype)
    assert model is not None, f"{_where(ev)}: not an Open Responses streaming event type"
    data = _strip_openai_only_items(ev) if "response" in ev else ev
    if "response" in data:
        # OR's tools list has function tools only; custom, namespace and hosted tools (echoed as
        # the client sent them) are OpenAI features, checked by the SDK model above.
        data["response"]["tools"] = [t for t in data["response"].get("tools") or [] if t.get("type") == "function"]
        fmt = (data["response"].get("text") or {}).get("format") or {}
        if fmt.get("type") == "json_schema":
            # SPEC 0.1: OR's zod schema requires ``schema: null`` in the echo, the SDK an object;
            # respline echoes the schema (what OpenAI does), so OR sees it as null here.
            data["response"]["text"] = {**data["response"]["text"], "format": {**fmt, "schema": None}}
    try:
        model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise AssertionError(f"{_where(ev)} fails openresponses {model.__name__}:\n{_first_error(exc)}") from None


def validate_response(obj: dict) -> None:
    """Assert a Response object (non-streaming body, or a terminal event's) is valid for both."""
    try:
        OPENAI_RESPONSE.validate_python(_without_hosted(_sdk_view(obj)))
    except pydantic.ValidationError as exc:
        raise AssertionError(f"response {obj.get('id')!r} fails openai Response:\n{_first_error(exc)}") from None
    try:
        # custom_tool_call items are OpenAI-only; OR validates the rest of the object.
        OR_RESPONSE.validate_python(_strip_openai_only_items(obj))
    except pydantic.ValidationError as exc:
        raise AssertionError(
            f"response {obj.get('id')!r} fails openresponses ResponseResource:\n{_first_error(exc)}"
        ) from None


# --- the whole stream ----------------------------------------------------------------------


class _Item:
    __slots__ = ("index", "id", "type", "added", "parts", "open_part", "runs", "done_args")

    def __init__(self, index: int, item: dict) -> None:
        self.index = index
        self.id = item.get("id")
        self.type = item.get("type")
        self.added = item
        self.parts: list[dict] = []  # content_part.done parts, in order
        self.open_part: tuple[int, str] | None = None  # (content_index, part type)
        # open delta runs: key -> list of deltas; key is (family, sub-index)
        self.runs: dict[tuple[str, int], list[str]] = {}
        self.done_args: str | None = None


# delta type -> (family, sub-index field); done type -> (family, sub-index field, text field)
_DELTAS = {
    "response.output_text.delta": ("output_text", "content_index"),
    "response.refusal.delta": ("refusal", "content_index"),
    "response.reasoning_text.delta": ("reasoning_text", "content_index"),
    "response.reasoning.delta": ("reasoning_text", "content_index"),
    "response.reasoning_summary_text.delta": ("summary_text", "summary_index"),
    "response.function_call_arguments.delta": ("arguments", None),
    "response.custom_tool_call_input.delta": ("input", None),
}
_DONES = {
    "response.output_text.done": ("output_text", "content_index", "text"),
    "response.refusal.done": ("refusal", "content_index", "refusal"),
    "response.reasoning_text.done": ("reasoning_text", "content_index", "text"),
    "response.reasoning.done": ("reasoning_text", "content_index", "text"),
    "response.reasoning_summary_text.done": ("summary_text", "summary_index", "text"),
    "response.function_call_arguments.done": ("arguments", None, "arguments"),
    "response.custom_tool_call_input.done": ("input", None, "input"),
}
_PART_TEXT = {"output_text": "text", "refusal": "refusal", "reasoning_text": "text", "summary_text": "text"}


def checked(events: list[dict], dialect: str = "openai") -> list[dict]:
    """Every event validated, then the stream's lifecycle; the events back for more asserts."""
    for ev in events:
        validate_event(ev, dialect)
    check_lifecycle(events)
    return events


def checked_replay(pieces: list[bytes], **options: Any) -> list[dict]:
    """An upstream's bytes through ``respline replay``'s pipeline (engine/replay.py, ``options``
    as it takes them), every event checked, the lifecycle and the final response."""
    events = checked(parse_sse(b"".join(replay(pieces, **options))), options.get("reasoning_dialect", "openai"))
    validate_response(events[-1]["response"])
    return events


def check_lifecycle(events: list[dict]) -> None:
    """Assert the SPEC 1.5 ordering rules over one whole response stream."""
    assert len(events) >= 3, f"a stream needs created, in_progress and a terminal event; got {len(events)}"
    types = [e.get("type") for e in events]
    assert types[0] == "response.created", f"first event is {types[0]!r}, not response.created"
    # a background run: created (queued), queued, then in_progress
    start = 2 if types[1] == "response.queued" else 1
    assert types[start] == "response.in_progress", f"event {start} is {types[start]!r}, not response.in_progress"
    seqs = [e.get("sequence_number") for e in events]
    assert seqs == list(range(len(events))), f"sequence_number is not 0..n-1 without gaps: {seqs}"

    terminals = [i for i, t in enumerate(types) if t in TERMINAL]
    assert len(terminals) == 1, f"expected exactly one terminal event, got {[types[i] for i in terminals]}"
    assert terminals[0] == len(events) - 1, f"terminal {types[terminals[0]]!r} is not the last event"

    resp_id = events[0]["response"].get("id")
    assert isinstance(resp_id, str) and resp_id.startswith("resp_"), f"response id {resp_id!r} lacks resp_"
    for ev in events[: start + 1]:
        r = ev["response"]
        assert r.get("status") in ("in_progress", "queued"), f"{_where(ev)}: status {r.get('status')!r}"
        assert r.get("output") == [], f"{_where(ev)}: output is not empty"

    open_item: _Item | None = None
    next_index = 0
    done_items: list[dict] = []
    for pos, ev in enumerate(events):
        etype = ev["type"]
        where = _where(ev)
        if "response" in ev:
            assert ev["response"].get("id") == resp_id, f"{where}: response id changed to {ev['response'].get('id')!r}"
        if etype == "error":
            assert pos + 1 < len(events) and types[pos + 1] == "response.failed", (
                f"{where}: an error event must be followed immediately by response.failed"
            )
            continue
        if etype in ("response.created", "response.in_progress", "response.queued"):
            assert pos <= start, f"{where}: repeated start event"
            continue
        if etype in TERMINAL:
            assert open_item is None, f"{where}: item {open_item.index} still open at the terminal event"
            _check_terminal(ev, done_items)
            continue

        if etype == "response.output_item.added":
            item = ev["item"]
            assert open_item is None, f"{where}: item {ev['output_index']} added while item {open_item.index} is open"
            assert ev["output_index"] == next_index, f"{where}: output_index {ev['output_index']}, expected {next_index}"
            prefix = ID_PREFIX.get(item.get("type"))
            hosted = item.get("type") in HOSTED_ITEMS
            assert prefix is not None or hosted, f"{where}: unexpected item type {item.get('type')!r}"
            assert hosted or str(item.get("id", "")).startswith(prefix), f"{where}: item id {item.get('id')!r} lacks {prefix}"
            assert item.get("id"), f"{where}: item without an id"
            assert item.get("type") in STATUSLESS or item.get("status") == "in_progress", (
                f"{where}: added item status {item.get('status')!r}"
            )
            if item["type"] == "function_call":
                assert item.get("arguments") == "", f"{where}: added function_call has arguments"
                assert item.get("call_id"), f"{where}: function_call without call_id"
                assert item["call_id"] != item["id"], f"{where}: call_id equals item id"
            if item["type"] == "message":
                assert item.get("content") == [], f"{where}: added message has content"
            open_item = _Item(next_index, item)
            next_index += 1
            continue

        assert open_item is not None, f"{where}: no output item is open"
        assert ev.get("output_index") == open_item.index, (
            f"{where}: output_index {ev.get('output_index')} but the open item is {open_item.index}"
        )
        if etype == "response.output_item.done":
            _check_item_done(ev, open_item)
            done_items.append(ev["item"])
            open_item = None
            continue
        assert ev.get("item_id") == open_item.id, f"{where}: item_id {ev.get('item_id')!r} != {open_item.id!r}"

        if etype in ("response.content_part.added", "response.reasoning_summary_part.added"):
            sub = "summary_index" if "summary" in etype else "content_index"
            assert open_item.open_part is None, f"{where}: a part is already open"
            expected = sum(1 for p in open_item.parts if (p["type"] == "summary_text") == (sub == "summary_index"))
            assert ev[sub] == expected, f"{where}: {sub} {ev[sub]}, expected {expected}"
            part = ev["part"]
            assert part.get(_PART_TEXT.get(part.get("type"), "text")) == "", f"{where}: added part is not empty"
            open_item.open_part = (ev[sub], part["type"])
        elif etype in ("response.content_part.done", "response.reasoning_summary_part.done"):
            sub = "summary_index" if "summary" in etype else "content_index"
            assert open_item.open_part is not None, f"{where}: no part is open"
            idx, ptype = open_item.open_part
            assert (ev[sub], ev["part"]["type"]) == (idx, ptype), (
                f"{where}: closes part ({ev[sub]}, {ev['part']['type']}) but ({idx}, {ptype}) is open"
            )
            run = open_item.runs.get((ptype, idx))
            assert run is None, f"{where}: part closed before its {ptype} delta run was done"
            open_item.parts.append(ev["part"])
            open_item.open_part = None
        elif etype in _DELTAS:
            family, sub = _DELTAS[etype]
            key = (family, ev[sub] if sub else 0)
            if sub is not None:
                assert open_item.open_part == (key[1], family), (
                    f"{where}: delta for part {key} but the open part is {open_item.open_part}"
                )
            assert isinstance(ev.get("delta"), str), f"{where}: delta is not a string"
            open_item.runs.setdefault(key, []).append(ev["delta"])
        elif etype.startswith(f"response.{open_item.type}.") and open_item.type in HOSTED_ITEMS | STATUSLESS:
            pass  # a hosted tool's progress events (response.web_search_call.searching, ...)
        elif etype == "response.output_text.annotation.added":
            assert open_item.open_part == (ev["content_index"], "output_text"), (
                f"{where}: annotation for part {ev['content_index']} but the open part is {open_item.open_part}"
            )
        elif etype in _DONES:
            family, sub, field = _DONES[etype]
            key = (family, ev[sub] if sub else 0)
            if sub is not None:
                assert open_item.open_part == (key[1], family), (
                    f"{where}: done for part {key} but the open part is {open_item.open_part}"
                )
            joined = "".join(open_item.runs.pop(key, []))
            assert ev[field] == joined, (
                f"{where}: {field} {ev[field]!r:.200} != concatenated deltas {joined!r:.200}"
            )
            if family in ("arguments", "input"):
                assert open_item.done_args is None, f"{where}: second {etype}"
                open_item.done_args = ev[field]
            open_item.runs[("done", key)] = [ev[field]]  # remembered for the part.done check
        else:
            raise AssertionError(f"{where}: unexpected event type inside an item")

        # the done text must reappear in content_part.done
        if etype in ("response.content_part.done", "response.reasoning_summary_part.done"):
            part = ev["part"]
            text = part.get(_PART_TEXT.get(part["type"], "text"))
            done = open_item.runs.pop(("done", (part["type"], ev[sub])), None)
            assert done is not None, f"{where}: part closed without its *.done event"
            assert text == done[0], f"{where}: part text {text!r:.200} != done text {done[0]!r:.200}"


def _check_item_done(ev: dict, item: _Item) -> None:
    where = _where(ev)
    final = ev["item"]
    assert final.get("id") == item.id, f"{where}: done item id {final.get('id')!r} != added {item.id!r}"
    assert final.get("type") == item.type, f"{where}: done item type {final.get('type')!r} != {item.type!r}"
    assert item.open_part is None, f"{where}: part {item.open_part} still open"
    pending = [k for k in item.runs if k[0] != "done"]
    assert not pending, f"{where}: delta runs without a *.done: {pending}"
    assert kind_statusless(final) or final.get("status") in ("completed", "incomplete"), (
        f"{where}: done item status {final.get('status')!r}"
    )
    kind = item.type
    if kind == "message":
        assert final.get("content") == item.parts, f"{where}: message content != the content_part.done parts"
    elif kind == "reasoning":
        summary = [p for p in item.parts if p["type"] == "summary_text"]
        content = [p for p in item.parts if p["type"] != "summary_text"]
        assert final.get("summary") == summary, f"{where}: reasoning summary != the summary_part.done parts"
        assert (final.get("content") or []) == content, f"{where}: reasoning content != the content_part.done parts"
    elif kind == "function_call":
        assert item.done_args is not None, f"{where}: function_call without function_call_arguments.done"
        assert final.get("arguments") == item.done_args, f"{where}: arguments differ from the .done event"
        for key in ("call_id", "name"):
            assert final.get(key) == item.added.get(key), f"{where}: {key} changed between added and done"
    elif kind == "custom_tool_call":
        assert item.done_args is not None, f"{where}: custom_tool_call without custom_tool_call_input.done"
        assert final.get("input") == item.done_args, f"{where}: input differs from the .done event"


def _check_terminal(ev: dict, done_items: list[dict]) -> None:
    where = _where(ev)
    r = ev["response"]
    assert r.get("output") == done_items, f"{where}: response.output != the output_item.done items"
    status = {"response.completed": "completed", "response.incomplete": "incomplete", "response.failed": "failed"}
    assert r.get("status") == status[ev["type"]], f"{where}: status {r.get('status')!r}"
    if ev["type"] == "response.completed":
        bad = [i.get("id") for i in done_items if not kind_statusless(i) and i.get("status") != "completed"]
        assert not bad, f"{where}: completed response with unfinished items {bad}"
        assert r.get("error") is None and r.get("incomplete_details") is None, f"{where}: error/incomplete set"
    elif ev["type"] == "response.incomplete":
        assert (r.get("incomplete_details") or {}).get("reason"), f"{where}: no incomplete_details.reason"
        # OR: an item ending incomplete MUST be the last item.
        inc = [n for n, i in enumerate(done_items) if i.get("status") == "incomplete"]
        assert all(n == len(done_items) - 1 for n in inc), f"{where}: an incomplete item is not the last"
    else:
        err = r.get("error") or {}
        assert err.get("code") and err.get("message"), f"{where}: failed response without error code/message"
    if ev["type"] != "response.failed":
        assert r.get("completed_at") is not None or ev["type"] == "response.incomplete", f"{where}: no completed_at"


# --- SSE ----------------------------------------------------------------------------------


def parse_sse(data: bytes, *, require_done: bool = True) -> list[dict]:
    """Parse a Responses SSE body into event dicts (SPEC 0.2, 1.1).

    Each frame must be ``event: <type>`` + one ``data:`` line whose JSON ``type`` equals the
    event name, with no ``id:``; ``data: [DONE]`` must come last, right after the terminal event.
    """
    text = data.decode("utf-8").replace("\r\n", "\n")
    assert text.endswith("\n\n") or not text, "SSE body does not end with a blank line"
    events: list[dict] = []
    saw_done = False
    for n, frame in enumerate(f for f in text.split("\n\n") if f):
        assert not saw_done, f"frame {n} after data: [DONE]: {frame!r:.200}"
        name = None
        datas: list[str] = []
        for line in frame.split("\n"):
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            assert field != "id", f"frame {n}: servers should not send id: (OR spec)"
            if field == "event":
                name = value
            elif field == "data":
                datas.append(value)
            else:
                raise AssertionError(f"frame {n}: unexpected SSE line {line!r:.200}")
        assert len(datas) == 1, f"frame {n}: expected one data: line, got {len(datas)}"
        if datas[0] == "[DONE]":
            assert name is None, f"frame {n}: [DONE] with an event: line"
            assert events and events[-1].get("type") in TERMINAL, "data: [DONE] before the terminal event"
            saw_done = True
            continue
        ev = json.loads(datas[0])
        assert name is not None, f"frame {n}: no event: line for {ev.get('type')!r}"
        assert name == ev.get("type"), f"frame {n}: event: {name!r} != JSON type {ev.get('type')!r}"
        events.append(ev)
    if require_done:
        assert saw_done, "SSE body does not end with data: [DONE]"
    return events
