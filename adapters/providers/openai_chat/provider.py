"""A Chat Completions upstream: the request respline sends, and how its failures read to a client."""

from __future__ import annotations

from typing import Any

import httpx
import msgspec

from respline.adapters.config import Timeouts
from respline.adapters.providers.common import HttpProvider, Prepared, TurnContext, builder_options
from respline.adapters.providers.openai_chat.config import ChatConfig
from respline.adapters.providers.openai_chat.stages import chat_pipeline
from respline.engine.errors import ApiError
from respline.engine.stages.sse import DONE_FRAME, frame
from respline.engine.translate import ChatDialect, to_chat_request
from respline.engine.upstream_errors.openai import error_from_upstream
from respline.engine.wire import request as Q


class ChatProvider(HttpProvider):
    kind = "openai-chat"

    default_path = "/chat/completions"

    def __init__(self, name: str, cfg: ChatConfig, client: httpx.AsyncClient, timeouts: Timeouts, api_key: str | None = None, transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(name, cfg, client, timeouts, api_key, transport)
        self.dialect: ChatDialect = cfg.dialect()
        self._whole_fields = self.fields({**self.headers, "accept": "application/json"})

    def prepare(self, req: Q.CreateRequest, items: list[Any], upstream_model: str, ctx: TurnContext) -> Prepared:
        # A whole answer nobody reads as it comes is asked for whole: one JSON body instead of a
        # chunk per token, each a read, a wake-up and a pass through the pipeline (bench/README.md,
        # scenario 6: non-streaming requests)
        whole = ctx.whole
        body, tools = to_chat_request(req, items, upstream_model, self.dialect, ctx.unseal, stream=not whole)
        request, payload = self.build(body, self._whole_fields if whole else None)
        pipeline = chat_pipeline(
            ctx.template,
            ctx.ids,
            ctx.clock,
            think_tags=self.dialect.think_tags,
            **builder_options(ctx, tools, req.max_tool_calls, seal=ctx.include_encrypted),
        )
        prepared = Prepared(request, payload, body, pipeline)
        # a JSON answer is read as one chunk whether asked for (whole) or not (an upstream, or a
        # cassette recorded from a non-streaming request, may answer a stream request whole)
        prepared.answer = completion_as_sse
        return prepared

    def error(self, status: int, body: bytes, headers: httpx.Headers) -> ApiError:
        return error_from_upstream(status, body, headers)


_completion = msgspec.json.Decoder()
_encode = msgspec.json.Encoder().encode


def completion_as_sse(body: bytes) -> bytes:
    """A whole ``chat.completion`` as the stream the Chat pipeline reads: one chunk whose delta is
    the first choice's message (tool calls numbered as a stream numbers them), then the usage
    chunk and ``[DONE]``. A body that is not a completion goes through as one ``data:`` line,
    so the pipeline reads it as a streamed upstream's in-band error (``response.failed``)."""
    try:
        data = _completion.decode(body)
        choice = data["choices"][0]
        message = dict(choice["message"])
    except (msgspec.DecodeError, KeyError, IndexError, TypeError, ValueError):
        return frame(body.strip().replace(b"\n", b" "))
    calls = message.get("tool_calls")
    if calls:
        message["tool_calls"] = [dict(call, index=i) for i, call in enumerate(calls)]
    chunk = {
        "id": data.get("id"),
        "object": "chat.completion.chunk",
        "created": data.get("created"),
        "model": data.get("model"),
        "choices": [{"index": 0, "delta": message, "logprobs": choice.get("logprobs"), "finish_reason": choice.get("finish_reason")}],
    }
    out = frame(_encode(chunk))
    if data.get("usage") is not None:
        usage = {"id": data.get("id"), "object": "chat.completion.chunk", "created": data.get("created"), "model": data.get("model"),
                 "choices": [], "usage": data["usage"]}
        out += frame(_encode(usage))
    return out + DONE_FRAME
