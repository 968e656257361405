"""The ``openai-chat`` provider kind: a Chat Completions upstream.

Its config keys (config.py), its request translator (engine/translate.py, called by
provider.py), its head stages (stages.py) and its error parser (engine/upstream_errors/openai.py,
beside its stream decoder), registered under the ``respline.providers`` entry-point group as
every kind is (engine/registry.py).
"""

from respline.adapters.providers.openai_chat.config import ChatConfig
from respline.adapters.providers.openai_chat.provider import ChatProvider
from respline.adapters.providers.openai_chat.stages import chat_pipeline
from respline.engine.registry import ProviderKind
from respline.engine.upstream_errors.openai import error_from_upstream

__all__ = ["KIND", "ChatConfig", "ChatProvider", "chat_pipeline", "error_from_upstream"]

KIND = ProviderKind(
    "openai-chat",
    config=ChatConfig,
    provider=ChatProvider,
    pipeline=chat_pipeline,
    error=error_from_upstream,
    fixtures="chat",
)
