"""The Responses API as respline emits it: output items, the Response object, stream events.

Shapes follow the openai SDK 3.54 models and the Open Responses 2026-04-24 schemas (SPEC 1.2-1.4).
Where the two differ we emit the union of what both require (SPEC 0.1): every Response key is
present (nullable ones as null), ``logprobs: []`` on text events, and the error event carries both
the flat and the nested shape.

Items use ``omit_defaults`` so optional keys (``phase``, ``encrypted_content``, ``namespace``) only
appear when set; every key a schema requires has no default and is therefore always written.
"""

from __future__ import annotations

from typing import Any, Union

import msgspec
from msgspec import Struct

# --- content parts -------------------------------------------------------------------------


class OutputText(Struct, tag_field="type", tag="output_text"):
    text: str
    annotations: list[Any]
    logprobs: list[Any]


class Refusal(Struct, tag_field="type", tag="refusal"):
    refusal: str


class ReasoningText(Struct, tag_field="type", tag="reasoning_text"):
    text: str


class SummaryText(Struct, tag_field="type", tag="summary_text"):
    text: str


ContentPart = Union[OutputText, Refusal, ReasoningText]

# --- output items --------------------------------------------------------------------------


class MessageItem(Struct, tag_field="type", tag="message", omit_defaults=True):
    id: str
    status: str
    role: str
    content: list[Union[OutputText, Refusal]]
    phase: str | None = None


class ReasoningItem(Struct, tag_field="type", tag="reasoning", omit_defaults=True):
    id: str
    summary: list[SummaryText]
    content: list[ReasoningText] | None = None
    encrypted_content: str | None = None
    status: str | None = None


class FunctionCallItem(Struct, tag_field="type", tag="function_call", omit_defaults=True):
    id: str
    status: str
    call_id: str
    name: str
    arguments: str
    namespace: str | None = None


class CustomToolCallItem(Struct, tag_field="type", tag="custom_tool_call", omit_defaults=True):
    id: str
    status: str
    call_id: str
    name: str
    input: str
    namespace: str | None = None


class CompactionItem(Struct, tag_field="type", tag="compaction", omit_defaults=True):
    """The context summarised and sealed (``compaction_trigger``, ``context_management``)."""

    id: str
    encrypted_content: str


class ToolSearchCallItem(Struct, tag_field="type", tag="tool_search_call"):
    """The model searched the client's deferred tools (``tool_search`` with client execution):
    the client runs the search and answers with a ``tool_search_output`` item."""

    id: str
    status: str
    call_id: str
    arguments: Any
    execution: str = "client"


OutputItem = Union[MessageItem, ReasoningItem, FunctionCallItem, CustomToolCallItem, CompactionItem, ToolSearchCallItem]

# --- the Response object -------------------------------------------------------------------


class InputTokensDetails(Struct):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(Struct):
    reasoning_tokens: int = 0


class Usage(Struct):
    input_tokens: int = 0
    input_tokens_details: InputTokensDetails = msgspec.field(default_factory=InputTokensDetails)
    output_tokens: int = 0
    output_tokens_details: OutputTokensDetails = msgspec.field(default_factory=OutputTokensDetails)
    total_tokens: int = 0


class IncompleteDetails(Struct):
    reason: str


class ResponseError(Struct):
    code: str
    message: str


class Response(Struct):
    """The full ResponseResource. Every key is always written (Open Responses requires them)."""

    id: str
    created_at: int
    model: str
    object: str = "response"
    completed_at: int | None = None
    status: str = "in_progress"
    incomplete_details: IncompleteDetails | None = None
    previous_response_id: str | None = None
    instructions: str | None = None
    output: list[OutputItem] = msgspec.field(default_factory=list)
    error: ResponseError | None = None
    # a fresh template holds the echo pre-encoded, as msgspec.Raw (translate.response_template)
    tools: list[Any] = msgspec.field(default_factory=list)
    tool_choice: Any = "auto"
    truncation: str = "disabled"
    parallel_tool_calls: bool = True
    text: Any = msgspec.field(default_factory=lambda: {"format": {"type": "text"}})
    top_p: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    top_logprobs: int = 0
    temperature: float = 1.0
    reasoning: Any = None
    usage: Usage | None = None
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    store: bool = True
    background: bool = False
    service_tier: str = "default"
    metadata: Any = msgspec.field(default_factory=dict)
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    user: str | None = None
    conversation: Any = None


# --- stream events -------------------------------------------------------------------------
# sequence_number is assigned by the Sequencer stage; builders leave it at 0.


class Event(Struct, tag_field="type", kw_only=True):
    sequence_number: int = 0


class ResponseCreated(Event, tag="response.created"):
    response: Response


class ResponseInProgress(Event, tag="response.in_progress"):
    response: Response


class ResponseQueued(Event, tag="response.queued"):
    response: Response


class ResponseCompleted(Event, tag="response.completed"):
    response: Response


class ResponseIncomplete(Event, tag="response.incomplete"):
    response: Response


class ResponseFailed(Event, tag="response.failed"):
    response: Response


class OutputItemAdded(Event, tag="response.output_item.added"):
    output_index: int
    item: OutputItem


class OutputItemDone(Event, tag="response.output_item.done"):
    output_index: int
    item: OutputItem


class ContentPartAdded(Event, tag="response.content_part.added"):
    item_id: str
    output_index: int
    content_index: int
    part: ContentPart


class ContentPartDone(Event, tag="response.content_part.done"):
    item_id: str
    output_index: int
    content_index: int
    part: ContentPart


class OutputTextDelta(Event, tag="response.output_text.delta"):
    item_id: str
    output_index: int
    content_index: int
    delta: str
    logprobs: list[Any] = msgspec.field(default_factory=list)


class OutputTextDone(Event, tag="response.output_text.done"):
    item_id: str
    output_index: int
    content_index: int
    text: str
    logprobs: list[Any] = msgspec.field(default_factory=list)


class RefusalDelta(Event, tag="response.refusal.delta"):
    item_id: str
    output_index: int
    content_index: int
    delta: str


class RefusalDone(Event, tag="response.refusal.done"):
    item_id: str
    output_index: int
    content_index: int
    refusal: str


class FunctionCallArgumentsDelta(Event, tag="response.function_call_arguments.delta"):
    item_id: str
    output_index: int
    delta: str


class FunctionCallArgumentsDone(Event, tag="response.function_call_arguments.done"):
    item_id: str
    output_index: int
    arguments: str


class CustomToolCallInputDelta(Event, tag="response.custom_tool_call_input.delta"):
    item_id: str
    output_index: int
    delta: str


class CustomToolCallInputDone(Event, tag="response.custom_tool_call_input.done"):
    item_id: str
    output_index: int
    input: str


# Raw reasoning: OpenAI names (default) and Open Responses names (config switch, SPEC 0.1).
class ReasoningTextDelta(Event, tag="response.reasoning_text.delta"):
    item_id: str
    output_index: int
    content_index: int
    delta: str


class ReasoningTextDone(Event, tag="response.reasoning_text.done"):
    item_id: str
    output_index: int
    content_index: int
    text: str


class ReasoningDelta(Event, tag="response.reasoning.delta"):
    item_id: str
    output_index: int
    content_index: int
    delta: str


class ReasoningDone(Event, tag="response.reasoning.done"):
    item_id: str
    output_index: int
    content_index: int
    text: str


class ReasoningSummaryPartAdded(Event, tag="response.reasoning_summary_part.added"):
    item_id: str
    output_index: int
    summary_index: int
    part: SummaryText


class ReasoningSummaryPartDone(Event, tag="response.reasoning_summary_part.done"):
    item_id: str
    output_index: int
    summary_index: int
    part: SummaryText


class ReasoningSummaryTextDelta(Event, tag="response.reasoning_summary_text.delta"):
    item_id: str
    output_index: int
    summary_index: int
    delta: str


class ReasoningSummaryTextDone(Event, tag="response.reasoning_summary_text.done"):
    item_id: str
    output_index: int
    summary_index: int
    text: str


class CompactionCompacting(Event, tag="response.compaction.compacting"):
    item_id: str
    output_index: int


class ErrorPayload(Struct):
    type: str
    code: str | None
    message: str
    param: str | None


class ErrorEvent(Event, tag="error"):
    """SPEC 3.2: the flat (a) and nested (b) shapes merged, valid for both SDKs."""

    code: str | None
    message: str
    param: str | None
    error: ErrorPayload


StreamEvent = Union[
    ResponseCreated,
    ResponseInProgress,
    ResponseQueued,
    ResponseCompleted,
    ResponseIncomplete,
    ResponseFailed,
    OutputItemAdded,
    OutputItemDone,
    ContentPartAdded,
    ContentPartDone,
    OutputTextDelta,
    OutputTextDone,
    RefusalDelta,
    RefusalDone,
    FunctionCallArgumentsDelta,
    FunctionCallArgumentsDone,
    CustomToolCallInputDelta,
    CustomToolCallInputDone,
    ReasoningTextDelta,
    ReasoningTextDone,
    ReasoningDelta,
    ReasoningDone,
    ReasoningSummaryPartAdded,
    ReasoningSummaryPartDone,
    ReasoningSummaryTextDelta,
    ReasoningSummaryTextDone,
    CompactionCompacting,
    ErrorEvent,
]


def event_type(cls: type[Event]) -> str:
    """The ``type`` tag of an event class."""
    return cls.__struct_config__.tag  # type: ignore[return-value]


# The events that end a stream, one per final status: the one home of that list (the
# normaliser reads the upstream's, the CompletionRebuilder completes ours, the gateway finds the
# end of a stored event log by their names).
TERMINAL_EVENTS = (ResponseCompleted, ResponseIncomplete, ResponseFailed)
TERMINAL_TYPES = frozenset(event_type(c) for c in TERMINAL_EVENTS)

# The calls whose arguments stream, by item type: (the arguments' ``*.delta`` event, their
# ``*.done`` event, the item), for the builder and the normaliser alike. The two kinds' classes
# share their fields' order, so either is built positionally: the events (item_id,
# output_index, text), the items (id, status, call_id, name, text, namespace).
CALLS = {
    "function_call": (FunctionCallArgumentsDelta, FunctionCallArgumentsDone, FunctionCallItem),
    "custom_tool_call": (CustomToolCallInputDelta, CustomToolCallInputDone, CustomToolCallItem),
}


class PassEvent(Event, tag=False):
    """An upstream Responses event respline has no Struct for (hosted tools: ``web_search_call``
    progress, ``output_text.annotation.added``), passed on with its indexes and ids rewritten.

    ``fields`` is the upstream's JSON object without ``type``, ``sequence_number`` and
    ``obfuscation``, in the upstream's key order. On the wire it is one flat object, ``type``
    and ``sequence_number`` first (``encode_event``); msgspec's own encoding of this Struct
    would nest ``fields``, so whatever writes events goes through that function. An Event, so
    the Sequencer numbers it with the rest.
    """

    type: str
    fields: dict[str, Any]


_encode = msgspec.json.Encoder().encode


def encode_pass(event: PassEvent) -> bytes:
    head = b'{"type":' + _encode(event.type) + b',"sequence_number":' + _encode(event.sequence_number)
    if not event.fields:
        return head + b"}"
    return head + b"," + _encode(event.fields)[1:]


def encode_event(event: Event) -> bytes:
    """An event's JSON, as the SSE and WebSocket encoders and the stored event log write it."""
    if type(event) is PassEvent:
        return encode_pass(event)  # type: ignore[arg-type]
    return _encode(event)


def type_of(event: Event) -> str:
    """The ``type`` of an event object."""
    if type(event) is PassEvent:
        return event.type  # type: ignore[attr-defined]
    return event_type(type(event))
