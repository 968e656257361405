"""Which of a request's tools an upstream gets, and what the Response says it got.

Tool types (openai SDK 3.54 ``Tool``) fall in three groups:

- client tools, which the client runs: ``function``, ``custom``, ``namespace``, and
  ``tool_search`` with ``"execution": "client"`` (the client searches its own deferred tools);
  every upstream kind gets these (Chat and Anthropic as flat functions, engine/translate.py).
- hosted tools, which the provider runs (``web_search``, ``file_search``, ``code_interpreter``,
  ``image_generation``, ``mcp``, ``computer``, ``shell``, ``local_shell``, ``apply_patch``,
  server-side ``tool_search``, ...): a Responses-API upstream gets them as sent; a Chat or
  Anthropic upstream cannot run them, and the route's ``hosted_tools`` policy says what
  happens: ``"drop"`` (the default) leaves them out of the upstream request *and* out of the
  echoed Response, so the client can see they were not offered; ``"reject"`` answers 400 naming
  the tool. A hosted ``tool_choice`` follows the same policy (dropped, it becomes ``"auto"``).
- anything else is a 400 before any upstream is called.

Tools a client makes available mid-conversation are offered to Chat and Anthropic upstreams
from that point on: those a ``tool_search_output`` item returned (the answer to the model's
``tool_search`` call) and those of an ``additional_tools`` item. A Responses-API upstream reads
those items itself.
"""

from __future__ import annotations

from typing import Any

import msgspec

from respline.engine.errors import ApiError
from respline.engine.wire import request as Q

DROP = "drop"
REJECT = "reject"
POLICIES = (DROP, REJECT)

CLIENT_TOOL_TYPES = frozenset({"function", "custom", "namespace"})
HOSTED_TOOL_TYPES = frozenset(
    {
        "web_search", "web_search_2025_08_26", "web_search_preview", "web_search_preview_2025_03_11",
        "file_search", "code_interpreter", "image_generation", "mcp", "computer",
        "computer_use_preview", "local_shell", "shell", "apply_patch", "programmatic_tool_calling",
    }
)
TOOL_SEARCH = "tool_search"
KNOWN_TOOL_TYPES = CLIENT_TOOL_TYPES | HOSTED_TOOL_TYPES | {TOOL_SEARCH}

# provider kinds that run hosted tools themselves
RUNS_HOSTED = frozenset({"openai-responses"})


def is_client_search(tool: dict[str, Any]) -> bool:
    return tool.get("type") == TOOL_SEARCH and tool.get("execution") == "client"


def is_hosted(tool: dict[str, Any]) -> bool:
    kind = tool.get("type")
    return kind in HOSTED_TOOL_TYPES or (kind == TOOL_SEARCH and not is_client_search(tool))


def check_tools(tools: list[Any] | None, max_tool_calls: int | None = None) -> None:
    """Every tool has a type respline knows (whatever the upstream): else a 400 naming it."""
    if max_tool_calls is not None and max_tool_calls < 0:
        raise ApiError(
            400, f"Invalid 'max_tool_calls': {max_tool_calls}. Expected a value at least 0.", param="max_tool_calls", code="invalid_value"
        )
    for i, tool in enumerate(tools or ()):
        if not isinstance(tool, dict):
            raise ApiError(400, f"Invalid 'tools[{i}]': expected an object.", param=f"tools[{i}]", code="invalid_type")
        kind = tool.get("type")
        if kind is None:
            raise ApiError(400, f"Missing required parameter: 'tools[{i}].type'.", param=f"tools[{i}].type", code="missing_required_parameter")
        if kind not in KNOWN_TOOL_TYPES:
            raise ApiError(
                400,
                f"Invalid value for 'tools[{i}].type': {kind!r} is not a supported tool type.",
                param=f"tools[{i}].type",
                code="invalid_value",
            )


def _unsupported(what: str, param: str, kind: str) -> ApiError:
    return ApiError(
        400,
        f"The hosted tool '{what}' cannot run on this model's upstream ({kind}); remove it from the "
        f"request or route the model to a provider that runs it.",
        param=param,
        code="unsupported_tool",
    )


def _hosted_choice(choice: Any) -> str | None:
    """The hosted tool a ``tool_choice`` object forces, or None."""
    if not isinstance(choice, dict):
        return None
    kind = choice.get("type")
    if kind in HOSTED_TOOL_TYPES or kind == TOOL_SEARCH:
        return kind
    return None


def for_upstream(req: Q.CreateRequest, kind: str, policy: str) -> Q.CreateRequest | None:
    """The request with hosted tools handled for an upstream of ``kind`` (Chat, Anthropic), or
    None when nothing changes. Raises the policy's 400 for ``"reject"``."""
    if kind in RUNS_HOSTED:
        return None
    choice_before = req.tool_choice
    tools = req.tools or []
    hosted = [(i, t) for i, t in enumerate(tools) if is_hosted(t)]
    forced = _hosted_choice(req.tool_choice)
    if forced == TOOL_SEARCH and any(is_client_search(t) for t in tools):
        # forcing the client's own search: the function it is offered as
        req = msgspec.structs.replace(req, tool_choice={"type": "function", "name": TOOL_SEARCH})
        forced = None
    allowed = req.tool_choice.get("tools") if isinstance(req.tool_choice, dict) and req.tool_choice.get("type") == "allowed_tools" else None
    allowed_hosted = [t for t in allowed or () if isinstance(t, dict) and is_hosted(t)]
    if not hosted and forced is None and not allowed_hosted:
        return req if req.tool_choice is not choice_before else None
    if policy == REJECT:
        if hosted:
            i, tool = hosted[0]
            raise _unsupported(str(tool.get("type")), f"tools[{i}]", kind)
        if forced is not None:
            raise _unsupported(forced, "tool_choice", kind)
        raise _unsupported(str(allowed_hosted[0].get("type")), "tool_choice.tools", kind)
    choice = req.tool_choice
    if forced is not None:
        choice = "auto"  # the forced tool is not offered: the model chooses among the rest
    elif allowed_hosted:
        choice = {**choice, "tools": [t for t in allowed or () if not (isinstance(t, dict) and is_hosted(t))]}
    kept = [t for t in tools if not is_hosted(t)]
    return msgspec.structs.replace(req, tools=kept or None, tool_choice=choice)


def discovered_tools(items: list[Any]) -> list[dict[str, Any]]:
    """Tools the context made available after the request's own: ``tool_search_output`` and
    ``additional_tools`` items, in order."""
    found: list[dict[str, Any]] = []
    for item in items:
        if type(item) is Q.HostedItemIn and item.raw.get("type") in ("tool_search_output", "additional_tools"):
            tools = item.raw.get("tools")
            if isinstance(tools, list):
                found.extend(t for t in tools if isinstance(t, dict) and not is_hosted(t))
    return found


def with_discovered(req: Q.CreateRequest, items: list[Any]) -> Q.CreateRequest:
    """The request offering the discovered tools too (a name offered twice is offered once)."""
    found = discovered_tools(items)
    if not found:
        return req
    tools = list(req.tools or [])
    names = {_tool_key(t) for t in tools}
    for t in found:
        key = _tool_key(t)
        if key not in names:
            names.add(key)
            tools.append(t)
    return msgspec.structs.replace(req, tools=tools)


def _tool_key(tool: dict[str, Any]) -> tuple[Any, Any]:
    # the name of a tool of a type respline does not read is not checked: it may be a list
    name = tool.get("name")
    return tool.get("type"), name if isinstance(name, str) else None


# --- the search call and its output as Chat / Anthropic history ----------------------------


def search_call(raw: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(call_id, arguments) of a client ``tool_search_call`` item; None for a server-side one,
    which no Chat or Anthropic upstream made."""
    call_id = raw.get("call_id")
    if raw.get("type") != "tool_search_call" or raw.get("execution") == "server" or not isinstance(call_id, str):
        return None
    args = raw.get("arguments")
    return call_id, args if isinstance(args, dict) else {}


def search_output(raw: dict[str, Any], separator: str) -> tuple[str, str] | None:
    """(call_id, text) of a client ``tool_search_output`` item: the text names the tools it
    loaded, under the names the upstream calls them by; their definitions join the tool list."""
    call_id = raw.get("call_id")
    if raw.get("type") != "tool_search_output" or raw.get("execution") == "server" or not isinstance(call_id, str):
        return None
    names: list[str] = []
    for tool in raw.get("tools") or ():
        if not isinstance(tool, dict):
            continue
        if tool.get("type") == "namespace":
            names += [f"{tool.get('name')}{separator}{t.get('name')}" for t in tool.get("tools") or () if isinstance(t, dict)]
        elif isinstance(tool.get("name"), str):
            names.append(tool["name"])
    if not names:
        return call_id, "No matching tools were found."
    return call_id, "These tools are now available to call: " + ", ".join(names) + "."
