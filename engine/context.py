"""Checks and edits of a turn's whole context (stored chain + new input), as typed items.

Each runs once per request, before anything is translated for an upstream:

- ``check_call_outputs``: a ``function_call_output`` (or ``custom_tool_call_output``) must answer
  a call earlier in the context. OpenAI refuses an orphan output with a 400, and so do strict
  Chat providers (a ``tool`` message without its ``tool_calls``), so respline refuses it the
  same way before any upstream sees it. A ``compaction`` item stands in for the calls it
  summarised: outputs after one may answer calls that are no longer in the context.
- ``take_trigger``: ``compaction_trigger`` is valid only as the last input item; one that an
  earlier turn left in a stored chain has done its work and is dropped.
- ``truncate_oldest``: ``truncation: "auto"``, when the route's context window is known: the
  oldest turns go first, whole (a turn runs from one user message to the next, so a call and
  its output leave together); system and developer messages and the latest turn stay.
"""

from __future__ import annotations

from typing import Any, Callable

from respline.engine.errors import ApiError
from respline.engine.wire import request as Q

_OUTPUT_NAMES = {Q.FunctionCallOutputIn: "function call output", Q.CustomToolCallOutputIn: "custom tool call output"}


def check_call_outputs(items: list[Any]) -> None:
    """400 for a call output whose ``call_id`` answers no call before it (OpenAI's message)."""
    calls: set[str] = set()
    compacted = False
    for item in items:
        kind = type(item)
        if kind is Q.FunctionCallIn or kind is Q.CustomToolCallIn:
            calls.add(item.call_id)
        elif kind is Q.HostedItemIn:
            call_id = item.raw.get("call_id")  # local_shell_call, tool_search_call, ...
            if isinstance(call_id, str):
                calls.add(call_id)
        elif kind is Q.CompactionIn:
            compacted = True
        elif kind in _OUTPUT_NAMES and not compacted and item.call_id not in calls:
            raise ApiError(
                400,
                f"No tool call found for {_OUTPUT_NAMES[kind]} with call_id {item.call_id}.",
                param="input",
                type="invalid_request_error",
            )


def take_trigger(context: list[Any], new: list[Any]) -> tuple[list[Any], list[Any], bool]:
    """(context, new input) without compaction triggers, and whether the new input ends with
    one. A trigger anywhere else in the new input is a 400."""
    triggered = False
    for i, item in enumerate(new):
        if type(item) is Q.CompactionTriggerIn:
            if i != len(new) - 1:
                raise ApiError(
                    400,
                    "A compaction_trigger item must be the final input item.",
                    param=f"input[{i}]",
                    code="invalid_value",
                )
            triggered = True
    if triggered:
        new = new[:-1]
    if any(type(it) is Q.CompactionTriggerIn for it in context):
        context = [it for it in context if type(it) is not Q.CompactionTriggerIn]
    return context, new, triggered


def _is_system(item: Any) -> bool:
    return type(item) is Q.MessageIn and item.role in ("system", "developer")


def _starts_turn(item: Any) -> bool:
    return type(item) is Q.MessageIn and item.role == "user"


def truncate_oldest(items: list[Any], budget: int, count: Callable[[list[Any]], int]) -> list[Any]:
    """Drop the oldest whole turns until ``count(items) <= budget`` or only the latest turn is
    left. ``count`` is an estimate (engine/tokens.py), so this errs by its error margin."""
    if count(items) <= budget:
        return items
    system = [it for it in items if _is_system(it)]
    rest = [it for it in items if not _is_system(it)]
    # turn boundaries: each user message starts one (the first turn may start without one)
    starts = [i for i, it in enumerate(rest) if _starts_turn(it) and i > 0]
    for start in starts:
        kept = system + rest[start:]
        if count(kept) <= budget:
            return kept
    return system + rest[starts[-1]:] if starts else items


def from_latest_compaction(context: list[Any]) -> list[Any]:
    """A stored chain continues from its latest compaction item: what came before it is in the
    summary, so only system and developer messages stay from there (as OpenAI continues a
    chain that was compacted). The client's own input is never cut this way."""
    last = None
    for i, item in enumerate(context):
        if type(item) is Q.CompactionIn:
            last = i
    if last is None or last == 0:
        return context
    return [it for it in context[:last] if _is_system(it)] + context[last:]


def compact_threshold(value: Any) -> int | None:
    """``context_management: [{"type": "compaction", "compact_threshold": N}]`` -> N."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise ApiError(400, "context_management must be a list.", param="context_management", code="invalid_type")
    for i, entry in enumerate(value):
        if not isinstance(entry, dict) or entry.get("type") != "compaction":
            raise ApiError(
                400,
                "Only {'type': 'compaction'} entries are supported in context_management.",
                param=f"context_management[{i}]",
                code="invalid_value",
            )
        threshold = entry.get("compact_threshold")
        if threshold is not None:
            if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 1:
                raise ApiError(
                    400,
                    "compact_threshold must be a positive integer.",
                    param=f"context_management[{i}].compact_threshold",
                    code="invalid_value",
                )
            return threshold
    return None


def after_compaction(items: list[Any], new: list[Any], compacted: Any) -> list[Any]:
    """The context once ``compacted`` (a CompactionIn) summarises ``items``: system and
    developer messages, the summary, then the user messages that end this request's input (what
    the model is to answer now; a turn that ends with tool outputs continues from the summary)."""
    system = [it for it in items if _is_system(it)]
    start = len(new)
    while start > 0 and _starts_turn(new[start - 1]):
        start -= 1
    return [*system, compacted, *new[start:]]
