"""The ``anthropic`` provider kind: an Anthropic Messages upstream.

Its config keys (config.py), its request translator (engine/translate_anthropic.py, called by
provider.py), its head stages (stages.py) and its error parser (provider.py).
"""

from respline.adapters.providers.anthropic.config import AnthropicConfig
from respline.adapters.providers.anthropic.provider import AnthropicProvider, anthropic_error
from respline.adapters.providers.anthropic.stages import anthropic_pipeline
from respline.engine.registry import ProviderKind

__all__ = ["KIND", "AnthropicConfig", "AnthropicProvider", "anthropic_error", "anthropic_pipeline"]

KIND = ProviderKind(
    "anthropic",
    config=AnthropicConfig,
    provider=AnthropicProvider,
    pipeline=anthropic_pipeline,
    error=anthropic_error,
    fixtures="anthropic",
)
