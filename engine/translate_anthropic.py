"""Responses create request -> Anthropic Messages request (SPEC 2, SPEC 7).

Built on engine/translate.py: the same decoded input items, the same tool flattening (custom and
namespace tools, ``allowed_tools`` narrowing) and the same sealed reasoning, written out in
Anthropic's shapes:

- ``instructions`` and every system/developer message -> ``system``.
- user messages -> ``user`` turns (text, images and PDFs as content blocks); assistant messages,
  function calls (``tool_use``) and reasoning (``thinking``) -> ``assistant`` turns, in the order
  the items came, so each block goes back where the model produced it; ``function_call_output``
  -> a ``tool_result`` block at the head of the next user turn (``is_error`` where the item says
  so). Consecutive items of one role share one turn, as Anthropic requires of tool results.
- A reasoning item goes back as the ``thinking`` block it came from only when its sealed
  ``encrypted_content`` holds Anthropic's ``signature`` (or ``redacted_thinking`` data):
  Anthropic rejects thinking it did not sign, so reasoning from elsewhere is left out. A sealed
  token that does not open for this tenant is a 400, never left out (engine/seal.py).
- ``max_tokens`` is always set: ``max_output_tokens``, else the provider default (plus the
  thinking budget). ``reasoning.effort`` -> ``thinking.budget_tokens`` by a configurable map.
  Thinking is left off where Anthropic would refuse it: a forced tool choice, a budget that does
  not fit under ``max_tokens``, or a tool-use turn being continued whose thinking block was not
  sent back (a client that dropped ``encrypted_content``); temperature and top_p are not sent
  with thinking (Anthropic allows neither).
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any, Callable

import msgspec

from respline.engine import compaction, tool_policy
from respline.engine.deltas import signature_issuer
from respline.engine.errors import ApiError, item_not_found
from respline.engine.seal import REASONING, opened_payload
from respline.engine.toolmap import CUSTOM_INPUT_PARAM, NAMESPACE_SEPARATOR, ToolMap
from respline.engine.translate import (
    _text_of_parts,
    compaction_summary,
    image_url_needed,
    translate_tool_choice,
    translate_tools,
    unsupported_part,
    upstream_tool_name,
)
from respline.engine.wire import request as Q

log = logging.getLogger("respline.translate.anthropic")

_json = msgspec.json.Encoder()

ANTHROPIC_VERSION = "2023-06-01"
MIN_THINKING_BUDGET = 1024  # Anthropic's floor for budget_tokens

# reasoning.effort -> thinking budget (tokens); 0 leaves thinking off. Configurable per provider.
DEFAULT_THINKING_BUDGETS: dict[str, int] = {
    "none": 0,
    "minimal": 1024,
    "low": 2048,
    "medium": 8192,
    "high": 16384,
    "xhigh": 24576,
    "max": 32000,
}


class AnthropicDialect(msgspec.Struct, frozen=True):
    default_max_tokens: int = 8192  # max_tokens when the request has no max_output_tokens
    thinking_budgets: dict[str, int] = msgspec.field(default_factory=lambda: dict(DEFAULT_THINKING_BUDGETS))


DEFAULT_ANTHROPIC = AnthropicDialect()


# --- content -------------------------------------------------------------------------------


def _data_url(url: str) -> tuple[str, str] | None:
    """``data:<media type>;base64,<data>`` -> (media type, data)."""
    if not url.startswith("data:"):
        return None
    head, sep, data = url[5:].partition(",")
    if not sep or not head.endswith(";base64"):
        return None
    return head[: -len(";base64")] or "application/octet-stream", data


def _image_block(p: dict[str, Any], where: str) -> dict[str, Any]:
    file_id = p.get("file_id")
    if isinstance(file_id, str) and file_id and not p.get("image_url"):
        # a file uploaded to Anthropic's Files API (the provider sends its beta header)
        return {"type": "image", "source": {"type": "file", "file_id": file_id}}
    url = p.get("image_url")
    if not isinstance(url, str) or not url:
        raise image_url_needed(f"{where}.image_url")
    parsed = _data_url(url)
    if parsed is not None:
        media, data = parsed
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _file_block(p: dict[str, Any], where: str) -> dict[str, Any]:
    """PDFs as ``document`` blocks (base64 or URL); plain text files as text documents."""
    filename = p.get("filename")
    block: dict[str, Any] = {"type": "document"}
    data = p.get("file_data")
    url = p.get("file_url")
    if isinstance(data, str) and data:
        parsed = _data_url(data)
        media, raw = parsed if parsed is not None else ("application/pdf", data)
        if media.startswith("text/"):
            try:
                text = base64.b64decode(raw).decode("utf-8")
            except (binascii.Error, ValueError):
                raise ApiError(400, "input_file.file_data is not valid base64 text.", param=f"{where}.file_data", code="invalid_value") from None
            block["source"] = {"type": "text", "media_type": "text/plain", "data": text}
        elif media == "application/pdf":
            block["source"] = {"type": "base64", "media_type": media, "data": raw}
        else:
            raise ApiError(
                400,
                f"Files of type {media!r} are not supported by this model; send a PDF or text.",
                param=f"{where}.file_data",
                code="invalid_value",
            )
    elif isinstance(url, str) and url:
        block["source"] = {"type": "url", "url": url}
    elif isinstance(p.get("file_id"), str) and p["file_id"]:
        block["source"] = {"type": "file", "file_id": p["file_id"]}  # Anthropic's Files API
    else:
        raise ApiError(
            400,
            "input_file needs file_data or file_url here; file_id needs a file store.",
            param=f"{where}.file_id",
            code="invalid_value",
        )
    if isinstance(filename, str) and filename:
        block["title"] = filename
    return block


def _blocks(parts: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for j, p in enumerate(parts):
        t = p.get("type")
        if t in ("input_text", "text", "output_text"):
            text = p.get("text") or ""
            if text:  # Anthropic rejects empty text blocks
                out.append({"type": "text", "text": text})
        elif t == "refusal":
            if p.get("refusal"):
                out.append({"type": "text", "text": p["refusal"]})
        elif t == "input_image":
            out.append(_image_block(p, f"{where}[{j}]"))
        elif t == "input_file":
            out.append(_file_block(p, f"{where}[{j}]"))
        else:
            raise unsupported_part(f"{where}[{j}].type", t)
    return out


def _tool_input(arguments: str) -> dict[str, Any]:
    """Anthropic wants the call's input as an object; arguments that are not one (a call cut by
    max tokens) go back as ``{}`` rather than failing the whole conversation."""
    if not arguments:
        return {}
    try:
        value = msgspec.json.decode(arguments)
    except msgspec.DecodeError:
        log.debug("tool call arguments are not JSON; sent upstream as {}")
        return {}
    return value if isinstance(value, dict) else {}


def _tool_use(call_id: str, name: str, input: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": name, "input": input}


def _is_error(item: Q.FunctionCallOutputIn | Q.CustomToolCallOutputIn) -> bool:
    if getattr(item, "success", None) is False or getattr(item, "is_error", None) is True:
        return True
    out = item.output
    if isinstance(out, str) and out[:1] == "{":
        try:
            value = msgspec.json.decode(out)
        except msgspec.DecodeError:
            return False
        if isinstance(value, dict):
            return value.get("is_error") is True or value.get("isError") is True or value.get("success") is False
    return False


def thinking_block(
    item: Q.ReasoningIn, unseal: Callable[[str], dict | None] | None, where: str = "input", issuer: str | None = None
) -> dict[str, Any] | None:
    """The ``thinking`` / ``redacted_thinking`` block a reasoning item was, or None (reasoning
    that was not the upstream's: ``issuer`` is the provider whose signatures it takes, None for
    Anthropic). A respline-sealed token that does not open is a 400."""
    opened = opened_payload(unseal, item.encrypted_content, f"{where}.encrypted_content", REASONING)
    if not opened:
        return None
    redacted = opened.get("redacted")
    if isinstance(redacted, str) and redacted:
        return {"type": "redacted_thinking", "data": redacted} if issuer is None else None
    signature = opened.get("signature")
    text = opened.get("text")
    # another provider's signature (Gemini's sent to Anthropic after a fallback or a change of
    # model, or the reverse) would be refused upstream: that reasoning is not its to see
    if isinstance(signature, str) and signature and isinstance(text, str) and signature_issuer(signature) == issuer:
        return {"type": "thinking", "thinking": text, "signature": signature}
    return None


# --- messages ------------------------------------------------------------------------------


class _Turns:
    """Messages under construction: a block of the same role as the last message joins it."""

    __slots__ = ("messages",)

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def add(self, role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        last = self.messages[-1] if self.messages else None
        if last is None or last["role"] != role:
            self.messages.append({"role": role, "content": list(blocks)})
        else:
            last["content"].extend(blocks)

    def tool_result(self, block: dict[str, Any]) -> None:
        """Tool results lead their user turn: after earlier results, before any other block."""
        last = self.messages[-1] if self.messages else None
        if last is None or last["role"] != "user":
            self.messages.append({"role": "user", "content": [block]})
            return
        content = last["content"]
        at = 0
        while at < len(content) and content[at].get("type") == "tool_result":
            at += 1
        content.insert(at, block)


def to_anthropic_messages(
    instructions: str | None,
    items: list[Any],
    unseal: Callable[[str], dict | None] | None = None,
    issuer: str | None = None,
) -> tuple[list[str], list[dict[str, Any]]]:
    """(system texts, messages); ``issuer``: whose reasoning signatures go back (``thinking_block``)."""
    system: list[str] = [instructions] if instructions else []
    turns = _Turns()
    for i, item in enumerate(items):
        where = f"input[{i}]"
        kind = type(item)
        if kind is Q.MessageIn:
            role = item.role
            content = item.content
            if role in ("system", "developer"):
                text = content if isinstance(content, str) else _text_of_parts(content, "\n")
                if text:
                    system.append(text)
            elif isinstance(content, str):
                if content:
                    turns.add("assistant" if role == "assistant" else "user", [{"type": "text", "text": content}])
            else:
                turns.add("assistant" if role == "assistant" else "user", _blocks(content, f"{where}.content"))
        elif kind is Q.FunctionCallIn:
            name = upstream_tool_name(item.name, item.namespace)
            turns.add("assistant", [_tool_use(item.call_id, name, _tool_input(item.arguments))])
        elif kind is Q.CustomToolCallIn:
            name = upstream_tool_name(item.name, item.namespace)
            turns.add("assistant", [_tool_use(item.call_id, name, {CUSTOM_INPUT_PARAM: item.input})])
        elif kind is Q.FunctionCallOutputIn or kind is Q.CustomToolCallOutputIn:
            block: dict[str, Any] = {"type": "tool_result", "tool_use_id": item.call_id}
            output = item.output
            if isinstance(output, str):
                if output:
                    block["content"] = output
            else:
                parts = _blocks(output, f"{where}.output")
                if parts:
                    block["content"] = parts
            if _is_error(item):
                block["is_error"] = True
            turns.tool_result(block)
        elif kind is Q.ReasoningIn:
            thinking = thinking_block(item, unseal, where, issuer)
            if thinking is not None:
                turns.add("assistant", [thinking])
        elif kind is Q.ItemReferenceIn:
            raise item_not_found(item.id, f"{where}.id")
        elif kind is Q.CompactionIn:
            msg = compaction.expand(compaction_summary(item, unseal, where))
            turns.add("user", [{"type": "text", "text": msg["content"]}])
        elif kind is Q.HostedItemIn:
            # a client tool search: tool_use and tool_result, like a function call's; other
            # hosted-tool items have no Anthropic form and are left out
            call = tool_policy.search_call(item.raw)
            if call is not None:
                turns.add("assistant", [_tool_use(call[0], "tool_search", call[1])])
            found = tool_policy.search_output(item.raw, NAMESPACE_SEPARATOR)
            if found is not None:
                turns.tool_result({"type": "tool_result", "tool_use_id": found[0], "content": found[1]})
    messages = turns.messages
    if messages and messages[-1]["role"] == "assistant":
        # a final assistant turn is a prefill, which may not end in whitespace
        last = messages[-1]["content"][-1]
        if last.get("type") == "text":
            last["text"] = last["text"].rstrip()
            if not last["text"]:
                messages[-1]["content"].pop()
                if not messages[-1]["content"]:
                    messages.pop()
    return system, messages


# --- tools ---------------------------------------------------------------------------------


def _anthropic_tools(chat_tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for t in chat_tools:
        fn = t["function"]
        tool: dict[str, Any] = {"name": fn["name"], "input_schema": fn.get("parameters") or {"type": "object", "properties": {}}}
        if fn.get("description"):
            tool["description"] = fn["description"]
        out.append(tool)
    return out


def _anthropic_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, dict):
        return {"type": "tool", "name": choice["function"]["name"]}
    return None


def _used_tool_names(messages: list[dict[str, Any]]) -> list[str]:
    names: dict[str, None] = {}
    for m in messages:
        if m["role"] == "assistant":
            for b in m["content"]:
                if b.get("type") == "tool_use":
                    names[b["name"]] = None
    return list(names)


def _unsigned_tool_turn(messages: list[dict[str, Any]]) -> bool:
    """The last assistant turn used a tool but does not start with a thinking block: with thinking
    on, Anthropic refuses to continue it, so thinking stays off for this request."""
    for m in reversed(messages):
        if m["role"] == "assistant":
            content = m["content"]
            uses_tool = any(b.get("type") == "tool_use" for b in content)
            return uses_tool and content[0].get("type") not in ("thinking", "redacted_thinking")
    return False


# --- the whole request ---------------------------------------------------------------------


def to_anthropic_request(
    req: Q.CreateRequest,
    items: list[Any],
    upstream_model: str,
    dialect: AnthropicDialect = DEFAULT_ANTHROPIC,
    unseal: Callable[[str], dict | None] | None = None,
    *,
    stream: bool = True,
) -> tuple[dict[str, Any], ToolMap]:
    """The Messages body for an Anthropic upstream, and the map to turn its tool calls back."""
    system, messages = to_anthropic_messages(req.instructions, items, unseal)
    if not messages:
        raise ApiError(
            400,
            "The input has no user or assistant content to send to the model.",
            param="input",
            code="invalid_value",
        )
    body: dict[str, Any] = {"model": upstream_model}
    if system:
        body["system"] = "\n\n".join(system)
    body["messages"] = messages

    chat_tools, tmap = translate_tools(req.tools)
    choice, chat_tools = translate_tool_choice(req.tool_choice, chat_tools)
    tools = _anthropic_tools(chat_tools)
    tool_choice = _anthropic_choice(choice) if tools else None
    if not tools:
        # Anthropic refuses tool_use / tool_result blocks in a request that defines no tools
        # (a compaction summary request, a client that stopped offering them): declare the names
        # used, and let the model call none of them.
        used = _used_tool_names(messages)
        if used:
            tools = [{"name": n, "input_schema": {"type": "object"}} for n in used]
            tool_choice = {"type": "none"}
    if tools:
        body["tools"] = tools
        if req.parallel_tool_calls is False and (tool_choice is None or tool_choice["type"] != "none"):
            tool_choice = dict(tool_choice or {"type": "auto"})
            tool_choice["disable_parallel_tool_use"] = True
        if tool_choice is not None:
            body["tool_choice"] = tool_choice

    effort = req.reasoning.effort if req.reasoning is not None else None
    budget = dialect.thinking_budgets.get(effort, 0) if effort else 0
    if req.max_output_tokens is not None:
        max_tokens = req.max_output_tokens
        if budget:
            budget = min(budget, max_tokens - 1)  # max_output_tokens counts the thinking too
    else:
        max_tokens = dialect.default_max_tokens + (budget if budget >= MIN_THINKING_BUDGET else 0)
    if budget and budget < MIN_THINKING_BUDGET:
        budget = 0
    if budget and tool_choice is not None and tool_choice["type"] in ("any", "tool"):
        log.debug("thinking left off: Anthropic does not allow it with a forced tool choice")
        budget = 0
    if budget and _unsigned_tool_turn(messages):
        log.debug("thinking left off: the tool-use turn being continued has no signed thinking block")
        budget = 0
    body["max_tokens"] = max_tokens
    if budget:
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    else:
        # temperature and top_p together are refused by current models: temperature wins
        if req.temperature is not None:
            body["temperature"] = min(req.temperature, 1.0)  # Anthropic's range is 0..1
        elif req.top_p is not None:
            body["top_p"] = req.top_p
    if req.stop is not None:
        body["stop_sequences"] = [req.stop] if isinstance(req.stop, str) else list(req.stop)
    user = req.safety_identifier or req.user
    if user:
        body["metadata"] = {"user_id": user}
    if stream:
        body["stream"] = True
    return body, tmap
