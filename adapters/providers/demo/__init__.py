"""The ``demo`` provider kind: the built-in demo model (``make run`` with nothing configured).

A Chat Completions provider whose transport answers from the project's own recorded streams
(adapters/providers/replay.py), so the demo runs the same code path as a real upstream. It needs
no base_url and serves the model ``demo``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import httpx

from respline.adapters.config import ProviderConfig
from respline.adapters.providers.common import upstream_timeout
from respline.adapters.providers.openai_chat import ChatConfig, ChatProvider, chat_pipeline, error_from_upstream
from respline.adapters.providers.replay import DemoTransport
from respline.engine.registry import ProviderKind


class DemoConfig(ProviderConfig, tag="demo"):
    needs_base_url: ClassVar[bool] = False


def build(
    kind: ProviderKind, name: str, p: ProviderConfig, cfg: Any, *, wrap: Any = None, shared: dict | None = None
) -> tuple[ChatProvider, httpx.AsyncClient]:
    timeout = upstream_timeout(p.timeouts or cfg.timeouts)
    transport: httpx.AsyncBaseTransport = DemoTransport()
    if wrap is not None:  # recorded as what it is: a Chat Completions upstream
        transport = wrap(transport, "openai-chat")
    client = httpx.AsyncClient(transport=transport, timeout=timeout)
    chat_cfg = ChatConfig(base_url="http://demo.invalid/v1")
    return ChatProvider(name, chat_cfg, client, cfg.timeouts, transport=transport), client


KIND = ProviderKind(
    "demo",
    config=DemoConfig,
    provider=ChatProvider,
    pipeline=chat_pipeline,
    error=error_from_upstream,
    build=build,
    upstream=False,
    models=("demo",),
)
