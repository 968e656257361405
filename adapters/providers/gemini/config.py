"""The ``gemini`` provider's config keys (README: providers)."""

from __future__ import annotations

from respline.adapters.config import ConfigError, ProviderConfig

# reasoning.effort -> thinkingConfig.thinkingBudget (tokens); 0 turns thinking off where the
# model allows it. Configurable per provider (``thinking_budgets``).
DEFAULT_THINKING_BUDGETS: dict[str, int] = {
    "none": 0,
    "minimal": 512,
    "low": 1024,
    "medium": 8192,
    "high": 24576,
    "xhigh": 24576,
    "max": 32768,
}


class GeminiConfig(ProviderConfig, tag="gemini"):
    # thinkingConfig.thinkingBudget per reasoning.effort, over the defaults above
    thinking_budgets: dict[str, int] = {}

    def budgets(self) -> dict[str, int]:
        return {**DEFAULT_THINKING_BUDGETS, **self.thinking_budgets}

    def check(self, where: str, name: str) -> None:
        for effort, budget in self.thinking_budgets.items():
            if budget < -1:
                raise ConfigError(f"{where}: providers.{name}.thinking_budgets.{effort}: {budget} must be >= -1 (-1: the model decides)")
