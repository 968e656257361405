"""The ``gemini`` provider kind: Google's Gemini API, natively (``streamGenerateContent``).

Its config keys (config.py), its request translator (translate.py), its head stages (stages.py:
SSE framing and the Gemini decoder) and its error parser (errors.py), registered by entry
point like every kind; nothing outside this package names it.
"""

from respline.adapters.providers.gemini.config import GeminiConfig
from respline.adapters.providers.gemini.errors import gemini_error
from respline.adapters.providers.gemini.provider import GeminiProvider, gemini_pipeline
from respline.engine.registry import ProviderKind

__all__ = ["KIND", "GeminiConfig", "GeminiProvider", "gemini_error", "gemini_pipeline"]

KIND = ProviderKind(
    "gemini",
    config=GeminiConfig,
    provider=GeminiProvider,
    pipeline=gemini_pipeline,
    error=gemini_error,
    fixtures="gemini",
)
