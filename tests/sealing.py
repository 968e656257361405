"""Sealing in translator-level tests: one secret and tenant, and the lookup the gateway hands a
translator (engine/seal.py open_items fills it; here a token opens as either kind, so a test of a
translator alone can seal what it likes and still see the translator's own refusals)."""

from __future__ import annotations

from respline.engine.seal import COMPACTION, REASONING, Sealer

TENANT = "tenant:test"
SEALER = Sealer("test-secret")


def unseal(token: str):
    return SEALER.open(TENANT, REASONING, token) or SEALER.open(TENANT, COMPACTION, token)


def seal_reasoning(text: str, signature: str | None = None, redacted: str | None = None) -> str:
    return SEALER.seal_reasoning(TENANT, text, signature, redacted)


def open_reasoning(token: str):
    return SEALER.open(TENANT, REASONING, token)
