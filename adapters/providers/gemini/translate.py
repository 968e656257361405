"""Responses create request -> a Gemini ``generateContent`` body.

Built on the Anthropic translation (engine/translate_anthropic.py), which already orders the
input items into alternating user / assistant turns of typed blocks (text, images, PDFs,
tool_use, tool_result, signed thinking) and opens sealed reasoning; each block is then written as
a Gemini part:

- text -> ``{"text"}``; an image or PDF -> ``inlineData`` (base64) or ``fileData`` (a URL);
- tool_use -> ``{"functionCall": {"name", "args"}}``; tool_result -> ``{"functionResponse":
  {"name", "response": {"result" | "error": ...}}}`` in the next user turn, the name found from
  the call it answers (Gemini pairs them by name and order);
- a reasoning item respline sealed from a Gemini stream holds Gemini's ``thoughtSignature``: it
  goes back on the part that followed it in the same model turn (else the part before), which is
  where Gemini put it; thinking from any other provider is left out (Gemini cannot check it).
- instructions and system/developer messages -> ``systemInstruction``; tools ->
  ``functionDeclarations`` with ``parametersJsonSchema`` (full JSON Schema); tool_choice ->
  ``toolConfig.functionCallingConfig``; max_output_tokens, temperature, top_p, stop ->
  ``generationConfig``; reasoning.effort -> ``thinkingConfig`` (budget, thoughts included).
"""

from __future__ import annotations

from typing import Any, Callable

from respline.adapters.providers.gemini.stages import ISSUER, SIGNATURE_PREFIX
from respline.engine.errors import ApiError
from respline.engine.toolmap import ToolMap
from respline.engine.translate import translate_tool_choice, translate_tools
from respline.engine.translate_anthropic import to_anthropic_messages
from respline.engine.wire import request as Q

_ROLES = {"user": "user", "assistant": "model"}


def _media(source: dict[str, Any]) -> dict[str, Any] | None:
    kind = source.get("type")
    if kind == "base64":
        return {"inlineData": {"mimeType": source.get("media_type"), "data": source.get("data")}}
    if kind == "url":
        return {"fileData": {"fileUri": source.get("url")}}
    if kind == "text":
        return {"text": source.get("data") or ""}
    return None  # an Anthropic Files API id: nothing Gemini can read


def _result(block: dict[str, Any]) -> Any:
    content = block.get("content")
    if isinstance(content, list):
        content = "\n".join(b.get("text", "") for b in content if b.get("type") == "text")
    return content if content is not None else ""


def to_gemini_contents(
    instructions: str | None, items: list[Any], unseal: Callable[[str], dict | None] | None = None
) -> tuple[list[str], list[dict[str, Any]]]:
    """(system texts, contents)."""
    system, messages = to_anthropic_messages(instructions, items, unseal, ISSUER)
    names: dict[str, str] = {}  # call id -> function name, for the responses
    contents: list[dict[str, Any]] = []
    for m in messages:
        parts: list[dict[str, Any]] = []
        pending: str | None = None  # a signature waiting for the part that followed it
        for b in m["content"]:
            t = b.get("type")
            part: dict[str, Any] | None = None
            if t == "text":
                part = {"text": b["text"]}
            elif t in ("image", "document"):
                part = _media(b.get("source") or {})
            elif t == "tool_use":
                names[b["id"]] = b["name"]
                part = {"functionCall": {"name": b["name"], "args": b.get("input") or {}}}
            elif t == "tool_result":
                key = "error" if b.get("is_error") else "result"
                name = names.get(b["tool_use_id"], b["tool_use_id"])
                part = {"functionResponse": {"name": name, "response": {key: _result(b)}}}
            elif t == "thinking":
                sig = b.get("signature") or ""
                if sig.startswith(SIGNATURE_PREFIX):
                    pending = sig[len(SIGNATURE_PREFIX) :]
            if part is not None:
                if pending is not None:
                    part["thoughtSignature"] = pending
                    pending = None
                parts.append(part)
        if pending is not None and parts and "thoughtSignature" not in parts[-1]:
            parts[-1]["thoughtSignature"] = pending  # the signature came after the turn's last part
        if parts:
            contents.append({"role": _ROLES[m["role"]], "parts": parts})
    return system, contents


def _declarations(chat_tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for t in chat_tools:
        fn = t["function"]
        decl: dict[str, Any] = {"name": fn["name"]}
        if fn.get("description"):
            decl["description"] = fn["description"]
        decl["parametersJsonSchema"] = fn.get("parameters") or {"type": "object", "properties": {}}
        out.append(decl)
    return out


def _calling_config(choice: Any) -> dict[str, Any] | None:
    if choice == "auto":
        return {"mode": "AUTO"}
    if choice == "required":
        return {"mode": "ANY"}
    if choice == "none":
        return {"mode": "NONE"}
    if isinstance(choice, dict):
        return {"mode": "ANY", "allowedFunctionNames": [choice["function"]["name"]]}
    return None


def to_gemini_request(
    req: Q.CreateRequest,
    items: list[Any],
    budgets: dict[str, int],
    unseal: Callable[[str], dict | None] | None = None,
) -> tuple[dict[str, Any], ToolMap]:
    """The body (the model goes in the URL) and the map to turn tool calls back."""
    system, contents = to_gemini_contents(req.instructions, items, unseal)
    if not contents:
        raise ApiError(400, "The input has no user or assistant content to send to the model.", param="input", code="invalid_value")
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    chat_tools, tmap = translate_tools(req.tools)
    choice, chat_tools = translate_tool_choice(req.tool_choice, chat_tools)
    if chat_tools:
        body["tools"] = [{"functionDeclarations": _declarations(chat_tools)}]
        calling = _calling_config(choice)
        if calling is not None:
            body["toolConfig"] = {"functionCallingConfig": calling}
    gen: dict[str, Any] = {}
    if req.max_output_tokens is not None:
        gen["maxOutputTokens"] = req.max_output_tokens
    if req.temperature is not None:
        gen["temperature"] = req.temperature
    if req.top_p is not None:
        gen["topP"] = req.top_p
    if req.stop is not None:
        gen["stopSequences"] = [req.stop] if isinstance(req.stop, str) else list(req.stop)
    effort = req.reasoning.effort if req.reasoning is not None else None
    if effort:
        budget = budgets.get(effort, -1)
        gen["thinkingConfig"] = {"includeThoughts": budget != 0, "thinkingBudget": budget}
    if gen:
        body["generationConfig"] = gen
    return body, tmap
