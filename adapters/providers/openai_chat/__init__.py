"""The ``openai-chat`` provider kind: a Chat Completions upstream.

Its config keys (config.py), its request translator (engine/translate.py, called by
provider.py), its head stages (stages.py) and its error parser (provider.py), registered under the
``respline.providers`` entry-point group as every kind is (engine/registry.py).
"""

from respline.adapters.providers.openai_chat.config import ChatConfig
from respline.adapters.providers.openai_chat.provider import PASS_HEADERS, ChatProvider, error_from_upstream
from respline.adapters.providers.openai_chat.stages import chat_pipeline
from respline.engine.registry import ProviderKind

__all__ = ["KIND", "PASS_HEADERS", "ChatConfig", "ChatProvider", "chat_pipeline", "error_from_upstream"]

KIND = ProviderKind(
    "openai-chat",
    config=ChatConfig,
    provider=ChatProvider,
    pipeline=chat_pipeline,
    error=error_from_upstream,
    fixtures="chat",
)
