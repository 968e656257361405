"""The ``anthropic`` provider's config keys (README: providers)."""

from __future__ import annotations

from respline.adapters.config import ConfigError, ProviderConfig
from respline.engine.translate_anthropic import ANTHROPIC_VERSION, DEFAULT_THINKING_BUDGETS, MIN_THINKING_BUDGET, AnthropicDialect


class AnthropicConfig(ProviderConfig, tag="anthropic"):
    anthropic_version: str = ANTHROPIC_VERSION  # the anthropic-version header
    default_max_tokens: int = 8192  # max_tokens when the request has no max_output_tokens
    thinking_budgets: dict[str, int] = {}  # reasoning.effort -> budget_tokens, over the defaults; 0 = off

    def anthropic_dialect(self) -> AnthropicDialect:
        return AnthropicDialect(
            default_max_tokens=self.default_max_tokens,
            thinking_budgets={**DEFAULT_THINKING_BUDGETS, **self.thinking_budgets},
        )

    def check(self, where: str, name: str) -> None:
        if self.default_max_tokens < 1:
            raise ConfigError(f"{where}: providers.{name}.default_max_tokens must be at least 1")
        for effort, budget in self.thinking_budgets.items():
            if budget and budget < MIN_THINKING_BUDGET:
                raise ConfigError(
                    f"{where}: providers.{name}.thinking_budgets.{effort}: {budget} is below Anthropic's "
                    f"minimum of {MIN_THINKING_BUDGET} (0 turns thinking off)"
                )
