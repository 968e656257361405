"""The Responses create body and its input items (SPEC 2.1-2.3), as respline accepts them.

Unknown top-level keys are accepted and ignored (clients add fields faster than gateways learn
them); known keys are type-checked so a wrong type is a 400 naming the field. Input items are
decoded one by one by ``type`` in translate.py, so an error can name ``input[3].call_id``.
"""

from __future__ import annotations

from typing import Any

from msgspec import Struct


class TextParam(Struct):
    format: dict[str, Any] | None = None
    verbosity: str | None = None


class ReasoningParam(Struct):
    effort: str | None = None
    summary: str | None = None
    generate_summary: str | None = None


class CreateRequest(Struct, dict=True):
    # dict=True: decode_create keeps the raw body on the instance (``raw_body``) so a
    # Responses-API upstream gets the fields this Struct does not know (translate_responses.py)
    model: str | None = None
    input: str | list[Any] | None = None
    instructions: str | None = None
    previous_response_id: str | None = None
    store: bool | None = None
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_logprobs: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    text: TextParam | None = None
    reasoning: ReasoningParam | None = None
    include: list[str] | None = None
    metadata: dict[str, str] | None = None
    truncation: str | None = None
    service_tier: str | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    background: bool | None = None
    conversation: str | dict[str, Any] | None = None
    prompt: dict[str, Any] | None = None
    client_metadata: dict[str, Any] | None = None
    context_management: Any = None
    stop: str | list[str] | None = None
    generate: bool | None = None  # WebSocket prewarm
    type: str | None = None  # WebSocket frames carry "type": "response.create"


# --- shapes ------------------------------------------------------------------------------------
# The request keeps tools, tool choices, formats and content parts as the client sent them (a
# Responses-API upstream gets them back untouched, unknown fields included); these Structs are
# what respline itself reads of them, so each is checked against its shape once, at decode time
# (translate.validate / decode_item), and a wrong type is a 400 naming the field rather than a
# crash wherever the value is first used.


class ContentPartShape(Struct):
    type: str
    text: str | None = None
    refusal: str | None = None
    image_url: str | None = None
    detail: str | None = None
    file_id: str | None = None
    file_data: str | None = None
    file_url: str | None = None
    filename: str | None = None


class FunctionToolShape(Struct):
    type: str
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class GrammarShape(Struct):
    type: str
    syntax: str | None = None
    definition: str | None = None


class CustomToolShape(Struct):
    type: str
    name: str
    description: str | None = None
    format: GrammarShape | None = None


class NamespaceToolShape(Struct):
    type: str
    name: str
    description: str | None = None
    tools: list[dict[str, Any]] | None = None


TOOL_SHAPES: dict[str, type] = {
    "function": FunctionToolShape,
    "custom": CustomToolShape,
    "namespace": NamespaceToolShape,
}


class FunctionNameShape(Struct):
    name: str | None = None


class ToolRefShape(Struct):
    type: str | None = None
    name: str | None = None
    namespace: str | None = None
    function: FunctionNameShape | None = None


class ToolChoiceShape(Struct):
    type: str
    name: str | None = None
    namespace: str | None = None
    function: FunctionNameShape | None = None
    mode: str | None = None
    tools: list[ToolRefShape] | None = None


class TextFormatShape(Struct):
    type: str
    name: str | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None


class ConversationRefShape(Struct):
    id: str


# --- input items ---------------------------------------------------------------------------


class MessageIn(Struct):
    role: str
    content: str | list[dict[str, Any]]
    type: str | None = "message"
    id: str | None = None
    status: str | None = None
    phase: str | None = None


class FunctionCallIn(Struct):
    call_id: str
    name: str
    arguments: str
    type: str = "function_call"
    id: str | None = None
    status: str | None = None
    namespace: str | None = None


class FunctionCallOutputIn(Struct):
    call_id: str
    output: str | list[dict[str, Any]]
    type: str = "function_call_output"
    id: str | None = None
    status: str | None = None
    # not in the OpenAI schema; a client may say a tool failed (Anthropic ``is_error``)
    success: bool | None = None
    is_error: bool | None = None


class ReasoningIn(Struct):
    type: str = "reasoning"
    id: str | None = None
    summary: list[dict[str, Any]] | None = None
    content: list[dict[str, Any]] | None = None
    encrypted_content: str | None = None
    status: str | None = None


class CustomToolCallIn(Struct):
    call_id: str
    name: str
    input: str
    type: str = "custom_tool_call"
    id: str | None = None
    namespace: str | None = None


class CustomToolCallOutputIn(Struct):
    call_id: str
    output: str | list[dict[str, Any]]
    type: str = "custom_tool_call_output"
    id: str | None = None


class ItemReferenceIn(Struct):
    id: str
    type: str | None = "item_reference"


class CompactionIn(Struct):
    encrypted_content: str
    type: str = "compaction"
    id: str | None = None


class CompactionTriggerIn(Struct):
    """``{"type": "compaction_trigger"}``, the final input item: compact the context instead of
    answering (Codex's built-in OpenAI provider compacts this way); engine/compact_turn.py."""

    type: str = "compaction_trigger"
    id: str | None = None


# Output items of hosted tools (web_search_call, ...): no Chat or Anthropic equivalent, so those
# translations leave them out; a Responses-API upstream gets them back as they were.
HOSTED_ITEM_TYPES = frozenset(
    {
        "web_search_call", "file_search_call", "computer_call", "computer_call_output",
        "code_interpreter_call", "image_generation_call", "local_shell_call",
        "local_shell_call_output", "shell_call", "shell_call_output", "apply_patch_call",
        "apply_patch_call_output", "mcp_call", "mcp_list_tools", "mcp_approval_request",
        "mcp_approval_response", "tool_search_call", "tool_search_output",
        # tools made available from this point of the context on (engine/tool_policy.py)
        "additional_tools",
    }
)


class HostedItemIn(Struct):
    """A hosted-tool item, kept whole (``raw``) for a Responses-API upstream."""

    raw: dict[str, Any]
    type: str = "hosted"
    id: str | None = None
