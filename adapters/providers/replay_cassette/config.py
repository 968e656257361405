"""The ``replay`` provider kind's config keys (README: cassettes)."""

from __future__ import annotations

from typing import ClassVar

from respline.adapters.config import ConfigError, ProviderConfig

PACES = ("fast", "recorded")


class ReplayConfig(ProviderConfig, tag="replay"):
    # the recorded providers' own base_url is in the cassette; this one needs none
    needs_base_url: ClassVar[bool] = False

    cassette: str = ""  # the cassette directory (serve --record DIR)
    replay_pace: str = "fast"  # "fast": at once; "recorded": at the recorded pace
    # shutdown fails (exit 3) on exchanges never served, served twice, or requests matching none
    replay_strict: bool = False

    def check(self, where: str, name: str) -> None:
        if not self.cassette:
            raise ConfigError(f"{where}: providers.{name}.cassette is required with kind 'replay'")
        if self.replay_pace not in PACES:
            raise ConfigError(f"{where}: providers.{name}.replay_pace must be 'fast' or 'recorded'")
