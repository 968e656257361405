"""Responses create request -> Chat Completions request, and the Response template it echoes.

SPEC 2.1-2.3 and 6.2. The order of input items is preserved, with two deliberate moves:
``instructions`` and every system/developer message become one leading system message (many Chat
upstreams reject a system message after the first turn), and a reasoning item is carried upstream
as ``reasoning_content`` on the assistant message that follows it (DeepSeek requires it on
tool-call turns, SPEC 6.1).
"""

from __future__ import annotations

import logging
import re
from typing import Any, Callable

import msgspec

from respline.engine import compaction, tool_policy
from respline.engine.errors import ApiError, decode_json, from_validation, item_not_found
from respline.engine.ids import Clock, Ids
from respline.engine.seal import COMPACTION, REASONING, opened_payload, refused
from respline.engine.toolmap import CUSTOM_INPUT_PARAM, NAMESPACE_SEPARATOR, ToolMap, ToolTarget
from respline.engine.wire import request as Q
from respline.engine.wire.responses import Response

log = logging.getLogger("respline.translate")

_request_decoder = msgspec.json.Decoder(Q.CreateRequest)
_json = msgspec.json.Encoder()


class ChatDialect(msgspec.Struct, frozen=True):
    """What a Chat Completions provider calls things (per provider in the config)."""

    max_tokens_param: str = "max_tokens"  # or "max_completion_tokens" (OpenAI)
    reasoning_effort_param: str | None = "reasoning_effort"  # None: never send effort
    effort_map: dict[str, str] = {}  # e.g. {"xhigh": "high", "minimal": "low"}
    reasoning_field: str = "reasoning_content"  # what the assistant's reasoning goes back as
    send_reasoning_back: bool = True
    think_tags: bool = False  # `<think>...</think>` in content is reasoning (DeepSeek-R1 hosts)
    supports_parallel_tool_calls: bool = True
    request_fields: tuple[str, ...] = ()  # CHAT_FIELDS this provider takes (config chat_fields)


DEFAULT_DIALECT = ChatDialect()

# Responses fields with the same name and meaning in Chat Completions, sent to a Chat upstream
# only where its provider's config lists them (many Chat servers refuse keys they do not know)
CHAT_FIELDS = ("prompt_cache_key", "service_tier", "user", "safety_identifier")

# Hosted tools have no Chat equivalent; they are left out (with a debug log), never an error.
HOSTED_TOOLS = {
    "web_search",
    "web_search_preview",
    "web_search_2025_08_26",
    "web_search_preview_2025_03_11",
    "file_search",
    "code_interpreter",
    "image_generation",
    "computer_use_preview",
    "computer",
    "mcp",
    "local_shell",
    "shell",
    "tool_search",
    "apply_patch",
}


# --- decoding ------------------------------------------------------------------------------


def parse_create(body: bytes) -> Q.CreateRequest:
    """Decode and validate a create body; every failure is a 400 naming the field."""
    req = decode_create(body)
    validate(req)
    return req


def decode_create(body: bytes) -> Q.CreateRequest:
    """Decode a create body (or a WebSocket frame, whose ``type`` says what it is) without the
    semantic checks of ``validate``."""
    if not body.strip():
        raise ApiError(400, "The request body is empty; expected a JSON object.", code="invalid_json")
    req = decode_json(_request_decoder, body)
    req.raw_body = body  # what a passthrough upstream gets beyond the known fields
    return req


def validate(req: Q.CreateRequest) -> None:
    if not req.model:
        raise ApiError(400, "Missing required parameter: 'model'.", param="model", code="missing_required_parameter")
    if req.temperature is not None and not 0 <= req.temperature <= 2:
        raise _range("temperature", req.temperature, "between 0 and 2")
    if req.top_p is not None and not 0 <= req.top_p <= 1:
        raise _range("top_p", req.top_p, "between 0 and 1")
    # The penalties were passed upstream unchecked, so an out-of-range value came back as an
    # upstream error instead of a 400 naming the field.
    for key in ("presence_penalty", "frequency_penalty"):
        value = getattr(req, key)
        if value is not None and not -2 <= value <= 2:
            raise _range(key, value, "between -2 and 2")
    if req.max_output_tokens is not None and not 1 <= req.max_output_tokens <= MAX_INT:
        raise _range("max_output_tokens", req.max_output_tokens, f"between 1 and {MAX_INT}")
    if req.max_tool_calls is not None and not 0 <= req.max_tool_calls <= MAX_INT:
        raise _range("max_tool_calls", req.max_tool_calls, f"between 0 and {MAX_INT}")
    if req.top_logprobs is not None and not 0 <= req.top_logprobs <= 20:
        raise _range("top_logprobs", req.top_logprobs, "between 0 and 20")
    if req.metadata is not None and len(req.metadata) > 16:
        raise ApiError(400, "metadata may hold at most 16 key-value pairs.", param="metadata", code="invalid_value")
    if req.truncation is not None and req.truncation not in ("auto", "disabled"):
        raise ApiError(400, "truncation must be 'auto' or 'disabled'.", param="truncation", code="invalid_value")
    if req.conversation is not None and req.previous_response_id is not None:
        raise ApiError(
            400,
            "Cannot use both 'conversation' and 'previous_response_id'.",
            param="previous_response_id",
            code="invalid_value",
        )
    if isinstance(req.tool_choice, str):
        if req.tool_choice not in ("auto", "none", "required"):
            raise ApiError(
                400,
                f"Invalid value for 'tool_choice': {req.tool_choice!r}; expected 'auto', 'none' or 'required'.",
                param="tool_choice",
                code="invalid_value",
            )
    elif req.tool_choice is not None:
        check_shape(req.tool_choice, Q.ToolChoiceShape, "tool_choice")
    if req.tools:
        _check_tools(req.tools, "tools")
    if req.text is not None and req.text.format is not None:
        check_shape(req.text.format, Q.TextFormatShape, "text.format")
    if isinstance(req.conversation, dict):
        check_shape(req.conversation, Q.ConversationRefShape, "conversation")


# The largest integer a request field may hold: beyond a signed 64-bit value, upstreams and the
# SQLite store cannot represent it (msgspec decodes JSON integers of any size).
MAX_INT = 2**63 - 1


def check_shape(value: Any, shape: type, where: str) -> None:
    """``value`` (a field kept as the client sent it) against the Struct of what respline reads
    of it; a mismatch is a 400 naming the field inside ``where``."""
    try:
        msgspec.convert(value, shape)
    except msgspec.ValidationError as exc:
        raise _field_error(exc, where) from None


def _field_error(exc: msgspec.ValidationError, where: str) -> ApiError:
    err = from_validation(exc, prefix=where)
    # msgspec reports a missing key at the object that lacks it ("Object missing required
    # field `call_id`", no path), so param would be just "input[2]"; name the field itself.
    missing = _MISSING.match(str(exc))
    if missing:
        err.param = f"{err.param}.{missing.group(1)}" if err.param else missing.group(1)
        err.code = "missing_required_parameter"
    return err


def _check_tools(tools: list[dict[str, Any]], where: str) -> None:
    """Function, custom and namespace tools have the shape respline translates; hosted tools
    (web_search, ...) only need a type, the rest is the upstream's to judge."""
    for i, tool in enumerate(tools):
        at = f"{where}[{i}]"
        kind = tool.get("type")
        if kind is None:
            raise ApiError(400, f"Missing required parameter: '{at}.type'.", param=f"{at}.type", code="missing_required_parameter")
        if not isinstance(kind, str):
            raise ApiError(400, f"Invalid '{at}.type': expected a string.", param=f"{at}.type", code="invalid_type")
        shape = Q.TOOL_SHAPES.get(kind)
        if shape is None:
            continue
        check_shape(tool, shape, at)
        if kind == "namespace" and tool.get("tools"):
            _check_tools(tool["tools"], f"{at}.tools")


def _range(param: str, value: Any, what: str) -> ApiError:
    return ApiError(
        400,
        f"Invalid '{param}': {value!r}. Expected a value {what}.",
        param=param,
        code="invalid_value",
    )


_ITEM_TYPES: dict[str, type] = {
    "message": Q.MessageIn,
    "function_call": Q.FunctionCallIn,
    "function_call_output": Q.FunctionCallOutputIn,
    "reasoning": Q.ReasoningIn,
    "custom_tool_call": Q.CustomToolCallIn,
    "custom_tool_call_output": Q.CustomToolCallOutputIn,
    "item_reference": Q.ItemReferenceIn,
    "compaction": Q.CompactionIn,
    "compaction_trigger": Q.CompactionTriggerIn,
}


def input_items(req: Q.CreateRequest) -> list[Any]:
    """The request's input as typed items (a string is one user message)."""
    raw = req.input
    if raw is None:
        return []
    if isinstance(raw, str):
        return [Q.MessageIn(role="user", content=raw)]
    return [decode_item(item, f"input[{i}]") for i, item in enumerate(raw)]


_MISSING = re.compile(r"^Object missing required field `([^`]+)`")

# items whose ``tools`` the context makes available from their point on
_TOOL_ITEMS = frozenset({"tool_search_output", "additional_tools"})
_TOOL_LIST = list[dict[str, Any]]

# the fields of each input item that hold content parts, checked against ContentPartShape
_PART_LISTS: dict[type, tuple[str, ...]] = {
    Q.MessageIn: ("content",),
    Q.FunctionCallOutputIn: ("output",),
    Q.CustomToolCallOutputIn: ("output",),
    Q.ReasoningIn: ("summary", "content"),
}
_PARTS = list[Q.ContentPartShape]


def decode_item(item: Any, where: str) -> Any:
    if not isinstance(item, dict):
        raise ApiError(400, f"Invalid '{where}': expected an object.", param=where, code="invalid_type")
    kind = item.get("type")
    if kind is None:
        kind = "message" if "role" in item else "item_reference" if "id" in item else None
    if kind is not None and not isinstance(kind, str):
        raise ApiError(400, f"Invalid '{where}.type': expected a string.", param=f"{where}.type", code="invalid_type")
    if kind in Q.HOSTED_ITEM_TYPES:
        item_id = item.get("id")
        if item_id is not None and not isinstance(item_id, str):  # stored items are keyed by it
            raise ApiError(400, f"Invalid '{where}.id': expected a string.", param=f"{where}.id", code="invalid_type")
        if kind in _TOOL_ITEMS and item.get("tools") is not None:
            # their tools are offered to Chat and Anthropic upstreams from here on, read like the
            # request's own (engine/tool_policy.py): the same shapes, checked here, named here
            check_shape(item["tools"], _TOOL_LIST, f"{where}.tools")
            _check_tools(item["tools"], f"{where}.tools")
        return Q.HostedItemIn(raw=item, id=item_id)
    cls = _ITEM_TYPES.get(kind) if kind is not None else None
    if cls is None:
        raise ApiError(
            400,
            f"Invalid value for '{where}.type': {kind!r} is not a supported input item type.",
            param=f"{where}.type",
            code="invalid_value",
        )
    try:
        typed = msgspec.convert(item, cls)
    except msgspec.ValidationError as exc:
        raise _field_error(exc, where) from None
    for field in _PART_LISTS.get(cls, ()):
        parts = getattr(typed, field)
        if isinstance(parts, list):
            check_shape(parts, _PARTS, f"{where}.{field}")
    if cls is Q.MessageIn and typed.role not in ("user", "assistant", "system", "developer"):
        raise ApiError(
            400,
            f"Invalid value for '{where}.role': {typed.role!r}.",
            param=f"{where}.role",
            code="invalid_value",
        )
    return typed


def item_to_dict(item: Any) -> dict[str, Any]:
    """A typed input item back to its JSON form (for storage and re-expansion)."""
    return msgspec.to_builtins(item)


# --- tools ---------------------------------------------------------------------------------


def _function_tool(name: str, tool: dict[str, Any]) -> dict[str, Any]:
    params = tool.get("parameters")
    if not isinstance(params, dict):
        params = {"type": "object", "properties": {}}
    fn: dict[str, Any] = {"name": name, "parameters": params}
    if tool.get("description"):
        fn["description"] = tool["description"]
    if tool.get("strict") is not None:
        fn["strict"] = tool["strict"]
    return {"type": "function", "function": fn}


def _custom_tool(name: str, tool: dict[str, Any]) -> dict[str, Any]:
    """A freeform tool as a function with one string parameter (SPEC 2.3)."""
    hint = "The raw input for this tool."
    fmt = tool.get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "grammar":
        hint = (
            f"The raw input for this tool. It must match this {fmt.get('syntax', '')} grammar:\n"
            f"{fmt.get('definition', '')}"
        )
    fn: dict[str, Any] = {
        "name": name,
        "parameters": {
            "type": "object",
            "properties": {CUSTOM_INPUT_PARAM: {"type": "string", "description": hint}},
            "required": [CUSTOM_INPUT_PARAM],
        },
    }
    if tool.get("description"):
        fn["description"] = tool["description"]
    return {"type": "function", "function": fn}


def upstream_tool_name(name: str, namespace: str | None) -> str:
    return f"{namespace}{NAMESPACE_SEPARATOR}{name}" if namespace else name


def translate_tools(tools: list[dict[str, Any]] | None) -> tuple[list[dict[str, Any]], ToolMap]:
    out: list[dict[str, Any]] = []
    tmap: ToolMap = {}

    def add(tool: dict[str, Any], where: str, namespace: str | None) -> None:
        kind = tool.get("type")
        if kind in ("function", "custom"):
            name = tool.get("name")
            if not isinstance(name, str) or not name:
                raise ApiError(400, f"Missing required parameter: '{where}.name'.", param=f"{where}.name", code="missing_required_parameter")
            up = upstream_tool_name(name, namespace)
            if kind == "function":
                out.append(_function_tool(up, tool))
            else:
                out.append(_custom_tool(up, tool))
            tmap[up] = ToolTarget(kind, name, namespace)
        elif kind == "tool_search" and tool.get("execution") == "client":
            # the client searches its deferred tools: offered as a function the model may call;
            # the call comes back as a tool_search_call item (engine/tool_policy.py)
            out.append(_function_tool("tool_search", tool))
            tmap["tool_search"] = ToolTarget("tool_search", "tool_search")
        elif kind == "namespace":
            ns = tool.get("name")
            if not isinstance(ns, str) or not ns:
                raise ApiError(400, f"Missing required parameter: '{where}.name'.", param=f"{where}.name", code="missing_required_parameter")
            for j, inner in enumerate(tool.get("tools") or []):
                if isinstance(inner, dict):
                    add(inner, f"{where}.tools[{j}]", ns)
        elif isinstance(kind, str):
            log.debug("leaving out hosted tool %r: no Chat Completions equivalent", kind)
        else:
            raise ApiError(400, f"Missing required parameter: '{where}.type'.", param=f"{where}.type", code="missing_required_parameter")

    for i, tool in enumerate(tools or []):
        if not isinstance(tool, dict):
            raise ApiError(400, f"Invalid '{'tools'}[{i}]': expected an object.", param=f"tools[{i}]", code="invalid_type")
        add(tool, f"tools[{i}]", None)
    return out, tmap


def _choice_name(choice: dict[str, Any]) -> str | None:
    name = choice.get("name")
    if isinstance(name, str):
        return upstream_tool_name(name, choice.get("namespace"))
    fn = choice.get("function")
    if isinstance(fn, dict) and isinstance(fn.get("name"), str):
        return fn["name"]
    return None


def translate_tool_choice(
    choice: str | dict[str, Any] | None, tools: list[dict[str, Any]]
) -> tuple[Any, list[dict[str, Any]]]:
    """tool_choice in every form; ``allowed_tools`` is enforced by narrowing the tool list."""
    if choice is None or isinstance(choice, str):
        return choice, tools
    kind = choice.get("type")
    if kind in ("function", "custom"):
        name = _choice_name(choice)
        if not name:
            raise ApiError(400, "Missing required parameter: 'tool_choice.name'.", param="tool_choice.name", code="missing_required_parameter")
        if not any(t["function"]["name"] == name for t in tools):
            raise ApiError(400, f"Tool choice '{name}' is not one of the tools in the request.", param="tool_choice", code="invalid_value")
        return {"type": "function", "function": {"name": name}}, tools
    if kind == "allowed_tools":
        allowed = {_choice_name(t) for t in choice.get("tools") or [] if isinstance(t, dict)}
        narrowed = [t for t in tools if t["function"]["name"] in allowed]
        mode = choice.get("mode", "auto")
        if mode not in ("auto", "required"):
            raise ApiError(400, "tool_choice.mode must be 'auto' or 'required'.", param="tool_choice.mode", code="invalid_value")
        return mode, narrowed
    # a hosted tool choice ({"type": "web_search"}): the tool is not offered, let the model choose
    return "auto", tools


# --- input items -> chat messages ----------------------------------------------------------


def _text_of_parts(parts: list[dict[str, Any]], sep: str = "") -> str:
    texts = []
    for p in parts:
        t = p.get("type")
        if t in ("input_text", "output_text", "text", "summary_text", "reasoning_text"):
            texts.append(p.get("text") or "")
        elif t == "refusal":
            texts.append(p.get("refusal") or "")
    return sep.join(texts)


def _chat_parts(parts: list[dict[str, Any]], where: str) -> str | list[dict[str, Any]]:
    """User content parts; all-text content collapses to a string (not every upstream takes arrays)."""
    if all(p.get("type") in ("input_text", "text", "output_text") for p in parts):
        return "\n".join(p.get("text") or "" for p in parts) if len(parts) != 1 else (parts[0].get("text") or "")
    out: list[dict[str, Any]] = []
    for j, p in enumerate(parts):
        t = p.get("type")
        if t in ("input_text", "text", "output_text"):
            out.append({"type": "text", "text": p.get("text") or ""})
        elif t == "input_image":
            url = p.get("image_url")
            if not url:
                raise image_url_needed(f"{where}[{j}].image_url")
            image: dict[str, Any] = {"url": url}
            if p.get("detail"):
                image["detail"] = p["detail"]
            out.append({"type": "image_url", "image_url": image})
        elif t == "input_file":
            f: dict[str, Any] = {}
            for key in ("filename", "file_data", "file_id"):
                if p.get(key):
                    f[key] = p[key]
            if p.get("file_url") and not f.get("file_data"):
                f["file_data"] = p["file_url"]
            out.append({"type": "file", "file": f})
        else:
            raise unsupported_part(f"{where}[{j}].type", t)
    return out


def unsupported_part(param: str, kind: Any) -> ApiError:
    return ApiError(400, f"Invalid value for '{param}': {kind!r} is not a supported content part.", param=param, code="invalid_value")


def image_url_needed(param: str) -> ApiError:
    return ApiError(
        400,
        "Only image_url (an https or data: URL) is supported for input_image; file_id needs a file store.",
        param=param,
        code="invalid_value",
    )


def _output_text(output: str | list[dict[str, Any]]) -> str:
    # Separate text parts are separate blocks: glued together "a" + "b" became "ab". Joined with
    # "\n" like user text parts (and like vLLM joins an array of text parts).
    return output if isinstance(output, str) else _text_of_parts(output, "\n")


class _Assistant:
    """The assistant message being assembled from consecutive assistant-side items."""

    __slots__ = ("text", "tool_calls", "reasoning")

    def __init__(self) -> None:
        self.text: list[str] = []
        self.tool_calls: list[dict[str, Any]] = []
        self.reasoning: list[str] = []


def reasoning_text(item: Q.ReasoningIn, unseal: Callable[[str], dict | None] | None, where: str = "input") -> str:
    """The text to send back upstream: sealed content first, then plain content, then summary.
    A respline-sealed token that does not open is a 400 (engine/seal.py), never skipped."""
    opened = opened_payload(unseal, item.encrypted_content, f"{where}.encrypted_content", REASONING)
    if opened is not None and isinstance(opened.get("text"), str):
        return opened["text"]
    if item.content:
        text = _text_of_parts(item.content)
        if text:
            return text
    if item.summary:
        # summary parts are separate paragraphs ("**Title**\n\nbody" each); do not glue them
        return _text_of_parts(item.summary, "\n\n")
    return ""


def _tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    """A Chat Completions tool call on the assistant message, ``arguments`` as a JSON string."""
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def compaction_summary(item: Q.CompactionIn, unseal: Callable[[str], dict | None] | None, where: str = "input") -> str:
    """The summary a respline-sealed compaction item holds, for an upstream that cannot take the
    item itself (Chat, Anthropic): any other compaction item is refused, never dropped."""
    param = f"{where}.encrypted_content"
    opened = opened_payload(unseal, item.encrypted_content, param, COMPACTION)
    summary = opened.get("summary") if opened else None
    if not isinstance(summary, str):  # not respline's: no other compaction item opens here
        raise refused(param, COMPACTION, item.encrypted_content)
    return summary


def to_chat_messages(
    instructions: str | None,
    items: list[Any],
    dialect: ChatDialect = DEFAULT_DIALECT,
    unseal: Callable[[str], dict | None] | None = None,
) -> list[dict[str, Any]]:
    system: list[str] = [instructions] if instructions else []
    messages: list[dict[str, Any]] = []
    pending: _Assistant | None = None

    def flush() -> None:
        nonlocal pending
        if pending is None:
            return
        a, pending = pending, None
        if not a.text and not a.tool_calls:
            return  # reasoning with nothing after it has nowhere to go
        # a.text holds one entry per assistant message merged into this turn; joining them with
        # "" turned "Let me check." + "Done." into "Let me check.Done."
        msg: dict[str, Any] = {"role": "assistant", "content": "\n\n".join(a.text) if a.text else None}
        if a.tool_calls:
            msg["tool_calls"] = a.tool_calls
        if a.reasoning and dialect.send_reasoning_back:
            msg[dialect.reasoning_field] = "".join(a.reasoning)
        messages.append(msg)

    def assistant() -> _Assistant:
        nonlocal pending
        if pending is None:
            pending = _Assistant()
        return pending

    for i, item in enumerate(items):
        where = f"input[{i}]"
        kind = type(item)
        if kind is Q.MessageIn:
            role = item.role
            if role in ("system", "developer"):
                # separate input_text parts (Codex sends several per developer message) are
                # separate blocks: "\n" like user text parts, not glued together
                text = item.content if isinstance(item.content, str) else _text_of_parts(item.content, "\n")
                if text:
                    system.append(text)
            elif role == "assistant":
                a = assistant()
                if a.tool_calls:  # text after tool calls starts a new assistant turn
                    flush()
                    a = assistant()
                a.text.append(item.content if isinstance(item.content, str) else _text_of_parts(item.content))
            else:
                flush()
                content = item.content if isinstance(item.content, str) else _chat_parts(item.content, f"{where}.content")
                messages.append({"role": "user", "content": content})
        elif kind is Q.FunctionCallIn:
            name = upstream_tool_name(item.name, item.namespace)
            assistant().tool_calls.append(_tool_call(item.call_id, name, item.arguments or "{}"))
        elif kind is Q.CustomToolCallIn:
            name = upstream_tool_name(item.name, item.namespace)
            assistant().tool_calls.append(_tool_call(item.call_id, name, _json.encode({CUSTOM_INPUT_PARAM: item.input}).decode()))
        elif kind is Q.FunctionCallOutputIn or kind is Q.CustomToolCallOutputIn:
            flush()
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": _output_text(item.output)})
        elif kind is Q.ReasoningIn:
            a = assistant()
            if a.text or a.tool_calls:  # reasoning opens a new assistant turn
                flush()
                a = assistant()
            text = reasoning_text(item, unseal, where)
            if text:
                a.reasoning.append(text)
        elif kind is Q.HostedItemIn:
            # a client tool search: the call and its output, like a function call's
            call = tool_policy.search_call(item.raw)
            if call is not None:
                assistant().tool_calls.append(_tool_call(call[0], "tool_search", _json.encode(call[1]).decode()))
            found = tool_policy.search_output(item.raw, NAMESPACE_SEPARATOR)
            if found is not None:
                flush()
                messages.append({"role": "tool", "tool_call_id": found[0], "content": found[1]})
        elif kind is Q.ItemReferenceIn:
            raise item_not_found(item.id, f"{where}.id")
        elif kind is Q.CompactionIn:
            summary = compaction_summary(item, unseal, where)
            flush()
            messages.append(compaction.expand(summary))
    flush()
    if system:
        messages.insert(0, {"role": "system", "content": "\n\n".join(system)})
    return messages


# --- the whole request ---------------------------------------------------------------------


def to_chat_request(
    req: Q.CreateRequest,
    items: list[Any],
    upstream_model: str,
    dialect: ChatDialect = DEFAULT_DIALECT,
    unseal: Callable[[str], dict | None] | None = None,
    *,
    stream: bool = True,
) -> tuple[dict[str, Any], ToolMap]:
    """The Chat Completions body for an upstream, and the map to turn its tool calls back."""
    body: dict[str, Any] = {
        "model": upstream_model,
        "messages": to_chat_messages(req.instructions, items, dialect, unseal),
    }
    tools, tmap = translate_tools(req.tools)
    choice, tools = translate_tool_choice(req.tool_choice, tools)
    if tools:
        body["tools"] = tools
        if choice is not None:
            body["tool_choice"] = choice
        if req.parallel_tool_calls is not None and dialect.supports_parallel_tool_calls:
            body["parallel_tool_calls"] = req.parallel_tool_calls
    elif choice == "none":
        pass
    if req.max_output_tokens is not None:
        body[dialect.max_tokens_param] = req.max_output_tokens
    # fields of the same name and meaning in both APIs; the dialect's own only where configured
    for key in ("temperature", "top_p", "presence_penalty", "frequency_penalty", "stop", *dialect.request_fields):
        value = getattr(req, key)
        if value is not None:
            body[key] = value
    fmt = req.text.format if req.text is not None else None
    if fmt:
        ftype = fmt.get("type")
        if ftype == "json_schema":
            schema: dict[str, Any] = {"name": fmt.get("name") or "response", "schema": fmt.get("schema") or {}}
            if fmt.get("strict") is not None:
                schema["strict"] = fmt["strict"]
            if fmt.get("description"):
                schema["description"] = fmt["description"]
            body["response_format"] = {"type": "json_schema", "json_schema": schema}
        elif ftype == "json_object":
            body["response_format"] = {"type": "json_object"}
        elif ftype not in ("text", None):
            raise ApiError(400, f"Unsupported text.format type {ftype!r}.", param="text.format.type", code="invalid_value")
    effort = req.reasoning.effort if req.reasoning is not None else None
    if effort and dialect.reasoning_effort_param and effort != "none":
        body[dialect.reasoning_effort_param] = dialect.effort_map.get(effort, effort)
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body, tmap


def _echo_tool(tool: dict[str, Any]) -> dict[str, Any]:
    kind = tool.get("type")
    if kind == "function":
        return {
            "type": "function",
            "name": tool.get("name"),
            "description": tool.get("description"),
            "parameters": tool.get("parameters"),
            "strict": tool.get("strict"),
        }
    return tool


def echo_tools(tools: list[dict[str, Any]] | None) -> Any:
    """The tools a Response echoes, pre-encoded: a Codex turn's 20 tools are ~25 KB of JSON but
    ~75 KB as dicts, held by every open stream and encoded again in each lifecycle event."""
    return msgspec.Raw(_json.encode([_echo_tool(t) for t in tools])) if tools else []


def response_builtins(resp: Response) -> dict[str, Any]:
    """A Response as plain JSON values (to store it): its pre-encoded parts decoded."""
    return msgspec.to_builtins(resp, enc_hook=_raw_to_builtins)


def _raw_to_builtins(obj: Any) -> Any:
    if type(obj) is msgspec.Raw:
        return msgspec.json.decode(obj)
    raise NotImplementedError(f"cannot store a {type(obj).__name__}")


def response_template(req: Q.CreateRequest, ids: Ids, clock: Clock, *, response_id: str | None = None) -> Response:
    """The Response object every event embeds: the request's settings echoed back (SPEC 1.3)."""
    reasoning = None
    if req.reasoning is not None:
        reasoning = {"effort": req.reasoning.effort, "summary": req.reasoning.summary}
    fmt = dict(req.text.format) if req.text and req.text.format else {"type": "text"}
    if fmt.get("type") == "json_schema":
        fmt.setdefault("description", None)  # Open Responses requires the key (SPEC 1.3)
    text: dict[str, Any] = {"format": fmt}
    if req.text is not None and req.text.verbosity:
        text["verbosity"] = req.text.verbosity
    conversation = None
    if req.conversation is not None:
        cid = req.conversation if isinstance(req.conversation, str) else req.conversation.get("id")
        conversation = {"id": cid}
    return Response(
        id=response_id or ids.new("resp_"),
        created_at=clock.now(),
        model=req.model or "",
        previous_response_id=req.previous_response_id,
        instructions=req.instructions,
        tools=echo_tools(req.tools),
        tool_choice=req.tool_choice if req.tool_choice is not None else "auto",
        truncation=req.truncation or "disabled",
        parallel_tool_calls=True if req.parallel_tool_calls is None else req.parallel_tool_calls,
        text=text,
        top_p=1.0 if req.top_p is None else req.top_p,
        presence_penalty=req.presence_penalty or 0.0,
        frequency_penalty=req.frequency_penalty or 0.0,
        top_logprobs=req.top_logprobs or 0,
        temperature=1.0 if req.temperature is None else req.temperature,
        reasoning=reasoning,
        max_output_tokens=req.max_output_tokens,
        max_tool_calls=req.max_tool_calls,
        store=True if req.store is None else req.store,
        background=bool(req.background),
        service_tier=req.service_tier or "default",
        metadata=req.metadata or {},
        safety_identifier=req.safety_identifier,
        prompt_cache_key=req.prompt_cache_key,
        user=req.user,
        conversation=conversation,
    )
