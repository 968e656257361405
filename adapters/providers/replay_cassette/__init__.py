"""The ``replay`` provider kind: a recorded session (a cassette, adapters/cassette.py) served
back in place of the upstream (player.py), registered by entry point like every kind.

A replay provider is built as the recorded provider's own kind (its provider class, translating
exactly as when recording) over a transport that answers from the cassette, so ``provider``,
``pipeline`` and ``error`` here are never used to serve: ``build`` picks the recorded kind's.
It talks to no upstream (``upstream=False``).
"""

from __future__ import annotations

from typing import Any

from respline.adapters.providers.replay_cassette.config import PACES, ReplayConfig
from respline.adapters.providers.replay_cassette.player import build
from respline.engine.registry import ProviderKind

__all__ = ["KIND", "PACES", "ReplayConfig"]


def _unused(*args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError("a replay provider serves as its recorded kind (player.py build)")


KIND = ProviderKind(
    "replay",
    config=ReplayConfig,
    provider=object,
    pipeline=_unused,
    error=_unused,
    build=build,
    upstream=False,
)
