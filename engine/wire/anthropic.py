"""Anthropic Messages stream events, as loose msgspec Structs (SPEC 7, anthropic SDK 2.12).

One Struct for every event type rather than a tagged union: an event type or a block type this
version does not know (Anthropic adds them: server-tool blocks, ``citations_delta``) must pass
as "nothing to do", never fail the decode. Unknown keys (``caller``, ``stop_details`` extras,
``output_tokens_details``, QUIRKS G41) are ignored by msgspec.
"""

from __future__ import annotations

from typing import Any

from msgspec import Struct


class AnthropicUsage(Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    output_tokens_details: dict[str, Any] | None = None


class AnthropicMessage(Struct):
    id: str | None = None
    model: str | None = None
    usage: AnthropicUsage | None = None
    stop_reason: str | None = None


class AnthropicBlock(Struct):
    """``content_block_start.content_block``: text, thinking, redacted_thinking, tool_use, or a
    server-side block (server_tool_use, web_search_tool_result, mcp_tool_use, ...)."""

    type: str = ""
    text: str | None = None
    thinking: str | None = None
    signature: str | None = None
    data: str | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None


class AnthropicDelta(Struct):
    """``content_block_delta.delta`` or ``message_delta.delta``."""

    type: str | None = None
    text: str | None = None
    thinking: str | None = None
    signature: str | None = None
    partial_json: str | None = None
    stop_reason: str | None = None
    stop_details: dict[str, Any] | None = None


class AnthropicEvent(Struct):
    type: str = ""
    index: int | None = None
    message: AnthropicMessage | None = None
    content_block: AnthropicBlock | None = None
    delta: AnthropicDelta | None = None
    usage: AnthropicUsage | None = None
    error: Any = None
