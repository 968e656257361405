"""Chat Completions stream chunks, typed loosely enough for every provider in QUIRKS.md.

Unknown keys (``obfuscation``, ``p``, ``citations``, ``x_groq`` apart from its usage, ...) are ignored by msgspec, which
is exactly the tolerance QUIRKS A7/A8 ask for. Fields that real providers send in more than one
shape are typed as unions: Mistral's ``content`` is sometimes a list of parts (F36), OpenRouter's
error ``code`` is a number (A4), several providers send explicit nulls everywhere (B12).
"""

from __future__ import annotations

from typing import Any

from msgspec import Struct


class ChatFunction(Struct):
    name: str | None = None
    arguments: str | None = None


class ChatToolCall(Struct):
    index: int | None = None
    id: str | None = None
    type: str | None = None
    function: ChatFunction | None = None


class ChatDelta(Struct):
    role: str | None = None
    content: str | list[Any] | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    reasoning_details: list[Any] | None = None
    refusal: str | None = None
    tool_calls: list[ChatToolCall] | None = None
    function_call: ChatFunction | None = None  # legacy single-call form


class ChatChoice(Struct):
    index: int = 0
    delta: ChatDelta | None = None
    message: ChatDelta | None = None  # non-streaming bodies and a few odd streams
    finish_reason: str | None = None


class PromptTokensDetails(Struct):
    cached_tokens: int | None = None
    cache_write_tokens: int | None = None


class CompletionTokensDetails(Struct):
    reasoning_tokens: int | None = None


class ChatUsage(Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = None
    prompt_cache_hit_tokens: int | None = None  # DeepSeek
    cached_tokens: int | None = None  # HF / Together, top level


class XGroq(Struct):
    """Groq's extension object; older Groq streams carry usage only here (QUIRKS D22)."""

    usage: ChatUsage | None = None


class ChatChunk(Struct):
    id: str | None = None
    object: str | None = None
    model: str | None = None
    choices: list[ChatChoice] | None = None
    usage: ChatUsage | None = None
    x_groq: XGroq | None = None
    error: Any = None  # in-band error after HTTP 200 (SPEC 6.1)
    message: str | None = None  # vLLM's {"object":"error","message":...}
    type: str | None = None
    code: Any = None
