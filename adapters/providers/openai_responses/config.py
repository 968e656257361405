"""The ``openai-responses`` provider's config keys (README: providers)."""

from __future__ import annotations

from respline.adapters.config import ProviderConfig


class ResponsesConfig(ProviderConfig, tag="openai-responses"):
    drop_fields: list[str] = []  # request fields this upstream refuses ("include", "reasoning.summary")
