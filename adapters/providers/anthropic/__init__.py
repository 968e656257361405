"""The ``anthropic`` provider kind: an Anthropic Messages upstream.

Its config keys (config.py), its request translator (engine/translate_anthropic.py, called by
provider.py), its head stages (stages.py) and its error parser (engine/upstream_errors/anthropic.py, beside
its stream decoder).
"""

from respline.adapters.providers.anthropic.config import AnthropicConfig
from respline.adapters.providers.anthropic.provider import AnthropicProvider
from respline.adapters.providers.anthropic.stages import anthropic_pipeline
from respline.engine.registry import ProviderKind
from respline.engine.upstream_errors.anthropic import anthropic_error

__all__ = ["KIND", "AnthropicConfig", "AnthropicProvider", "anthropic_error", "anthropic_pipeline"]

KIND = ProviderKind(
    "anthropic",
    config=AnthropicConfig,
    provider=AnthropicProvider,
    pipeline=anthropic_pipeline,
    error=anthropic_error,
    fixtures="anthropic",
)
