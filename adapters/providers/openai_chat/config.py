"""The ``openai-chat`` provider's config keys (README: providers)."""

from __future__ import annotations

from respline.adapters.config import ConfigError, ProviderConfig
from respline.engine.translate import CHAT_FIELDS, ChatDialect


class ChatConfig(ProviderConfig, tag="openai-chat"):
    max_tokens_param: str = "max_tokens"
    reasoning_effort_param: str | None = "reasoning_effort"
    effort_map: dict[str, str] = {}
    reasoning_field: str = "reasoning_content"
    send_reasoning_back: bool = True
    think_tags: bool = False
    # Responses fields this Chat upstream takes as they are (OpenAI's Chat Completions takes all
    # four: prompt_cache_key, service_tier, user, safety_identifier); others refuse unknown keys
    chat_fields: list[str] = []

    def dialect(self) -> ChatDialect:
        return ChatDialect(
            max_tokens_param=self.max_tokens_param,
            reasoning_effort_param=self.reasoning_effort_param,
            effort_map=dict(self.effort_map),
            reasoning_field=self.reasoning_field,
            send_reasoning_back=self.send_reasoning_back,
            think_tags=self.think_tags,
            request_fields=tuple(self.chat_fields),
        )

    def check(self, where: str, name: str) -> None:
        if self.max_tokens_param not in ("max_tokens", "max_completion_tokens"):
            raise ConfigError(
                f"{where}: providers.{name}.max_tokens_param must be max_tokens or max_completion_tokens"
            )
        for field in self.chat_fields:
            if field not in CHAT_FIELDS:
                raise ConfigError(f"{where}: providers.{name}.chat_fields: {field!r} is not one of {', '.join(CHAT_FIELDS)}")
