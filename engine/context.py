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
