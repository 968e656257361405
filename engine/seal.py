"""Seal reasoning so that only this respline deployment can open it again (AES-GCM).

A reasoning item respline streams out carries its text in ``encrypted_content``; a client with
``store: false`` (Codex) sends it back verbatim next turn, and respline opens it to rebuild the
upstream's ``reasoning_content`` (DeepSeek rejects a tool-call turn without it), or Anthropic's
``thinking`` block with its ``signature`` (``redacted_thinking`` with its data), which Anthropic
requires back, byte for byte, on a tool-use turn. The key comes from
the server secret, so tokens survive restarts but not a change of secret. Anything that does not
open (another server's token, a tampered one) is treated as absent, never as an error.
"""

from __future__ import annotations

import base64
import hashlib
import os

import msgspec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "rsp1."
_AAD = b"respline reasoning v1"


class Sealer:
    __slots__ = ("_aead",)

    def __init__(self, secret: bytes | str) -> None:
        if isinstance(secret, str):
            secret = secret.encode()
        self._aead = AESGCM(hashlib.sha256(b"respline-seal:" + secret).digest())

    def seal(self, payload: dict) -> str:
        nonce = os.urandom(12)
        blob = self._aead.encrypt(nonce, msgspec.json.encode(payload), _AAD)
        return PREFIX + base64.urlsafe_b64encode(nonce + blob).decode().rstrip("=")

    def open(self, token: str | None) -> dict | None:
        if not token or not token.startswith(PREFIX):
            return None
        try:
            body = token[len(PREFIX) :]
            # padding from the body's length, not the whole token's: counting the 5-char prefix
            # under-padded 2 of every 3 tokens, which then never opened (reasoning silently lost)
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            data = self._aead.decrypt(raw[:12], raw[12:], _AAD)
            value = msgspec.json.decode(data)
        except Exception:  # noqa: BLE001 - any failure means "not ours"
            return None
        return value if isinstance(value, dict) else None

    def seal_reasoning(self, text: str, signature: str | None = None, redacted: str | None = None) -> str:
        """``{"text"}``, plus Anthropic's ``signature`` or ``redacted`` (redacted_thinking data)
        when the upstream gave one: readers that know only ``text`` keep working."""
        payload: dict = {"text": text}
        if signature:
            payload["signature"] = signature
        if redacted:
            payload["redacted"] = redacted
        return self.seal(payload)
