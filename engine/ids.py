"""Id and time sources, injectable so that a replay is byte-for-byte deterministic."""

from __future__ import annotations

import os
import random
import time


class Ids:
    """Random ids in OpenAI's shapes: ``resp_``, ``msg_``, ``fc_``, ``rs_``, ``call_`` + hex."""

    __slots__ = ("_rand",)

    def __init__(self, seed: int | None = None) -> None:
        self._rand = random.Random(seed) if seed is not None else None

    def new(self, prefix: str) -> str:
        if self._rand is None:
            return prefix + os.urandom(16).hex()
        return prefix + "%032x" % self._rand.getrandbits(128)


class Clock:
    """Unix seconds; a fixed clock returns the same instant every time."""

    __slots__ = ("_fixed",)

    def __init__(self, fixed: int | None = None) -> None:
        self._fixed = fixed

    def now(self) -> int:
        return self._fixed if self._fixed is not None else int(time.time())


def deterministic(seed: int = 0, at: int = 1_700_000_000) -> tuple[Ids, Clock]:
    return Ids(seed), Clock(at)
