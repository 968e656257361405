"""Sealed content: what respline hands a client to give back later, readable only by this
deployment, only for the tenant it was issued to, and only as the kind of item it was issued in.

Two kinds are sealed:
- ``reasoning``: a reasoning item's ``encrypted_content``. A client with ``store: false`` (Codex)
  sends it back verbatim next turn, and respline opens it to rebuild the upstream's
  ``reasoning_content`` (DeepSeek rejects a tool-call turn without it), or Anthropic's
  ``thinking`` block with its ``signature`` (``redacted_thinking`` with its data), which
  Anthropic requires back, byte for byte, on a tool-use turn. The signature travels inside the
  reasoning token, so it is bound exactly as the text is.
- ``compaction``: the summary in a ``/v1/responses/compact`` item.

Format: ``rsp2.`` + unpadded base64url(12-byte nonce | AES-GCM ciphertext and tag). The prefix
is the format version; the associated data is ``["rsp2", kind, tenant]``, so a token opens only
under the same secret, version, kind and tenant: another tenant's item, another server's, a
reasoning token presented as a compaction item (or the reverse) and a changed byte all fail the
same way, and the client cannot tell which. Tokens of the first format (``rsp1.``, bound to
nothing but the secret) are recognised and refused. The key comes from the server secret, so
tokens survive restarts but not a change of secret.

Opening is strict: a token in respline's format that does not open is a 400
``invalid_encrypted_content`` (``open_items``), never skipped, so nothing is sent upstream in
its place. A token not in respline's format (an OpenAI upstream's own ``encrypted_content``) is
not respline's to open, and is left to the translator (passed through to a Responses upstream).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from typing import Any, Callable

import msgspec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from respline.engine.errors import ApiError
from respline.engine.wire import request as Q

VERSION = "rsp2"
PREFIX = VERSION + "."
LEGACY_PREFIXES = ("rsp1.",)  # earlier formats: recognised as respline's, never opened

REASONING = "reasoning"
COMPACTION = "compaction"

NONCE_SIZE = 12

# (associated data, plaintext) -> a 12-byte nonce. Random by default; injectable so that a
# deterministic mode can derive it (a nonce must never repeat for different plaintexts under one
# key, so a derived nonce has to be a keyed function of both arguments).
NonceSource = Callable[[bytes, bytes], bytes]

_json = msgspec.json.Encoder()
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")


def _random_nonce(_aad: bytes, _plaintext: bytes) -> bytes:
    return os.urandom(NONCE_SIZE)


def derived_nonces(key: bytes) -> NonceSource:
    """Nonces derived from what is sealed, for replay mode (adapters/cassette.py), where the
    same run must seal to the same bytes: HMAC-SHA256 under ``key`` (the secret and a seed)
    over the length-prefixed associated data and the plaintext, cut to 12 bytes. A nonce then
    repeats only for the very same content, which gives the very same token."""

    def nonce(aad: bytes, plaintext: bytes) -> bytes:
        mac = hmac.new(key, len(aad).to_bytes(4, "big") + aad + plaintext, hashlib.sha256)
        return mac.digest()[:NONCE_SIZE]

    return nonce


def _decode(body: str) -> bytes:
    """Unpadded base64url, strictly: the lenient decoder skips characters outside the alphabet,
    and a changed token must not open. (Half the cost of ``urlsafe_b64decode`` on a str.)"""
    if "+" in body or "/" in body:
        raise ValueError("not base64url")
    raw = body.encode("ascii").translate(_FROM_URLSAFE)
    # padding from the body's length, not the whole token's: counting the prefix under-padded
    # 2 of every 3 tokens, which then never opened
    return binascii.a2b_base64(raw + b"=" * (-len(raw) % 4), strict_mode=True)


def is_sealed(token: str | None) -> bool:
    """Whether the token is in respline's sealed format (any version): ``rsp<digits>.``."""
    if not token or not token.startswith("rsp"):
        return False
    dot = token.find(".", 3, 8)
    return dot > 3 and token[3:dot].isdigit()


class Sealer:
    __slots__ = ("_aead", "_nonce")

    def __init__(self, secret: bytes | str, nonce: NonceSource | None = None) -> None:
        if isinstance(secret, str):
            secret = secret.encode()
        self._aead = AESGCM(hashlib.sha256(b"respline-seal:" + secret).digest())
        self._nonce = nonce or _random_nonce

    @staticmethod
    def _aad(tenant: str, kind: str) -> bytes:
        # a JSON array: unambiguous whatever characters the tenant name holds
        return _json.encode([VERSION, kind, tenant])

    def seal(self, tenant: str, kind: str, payload: dict[str, Any]) -> str:
        aad = self._aad(tenant, kind)
        plaintext = _json.encode(payload)
        nonce = self._nonce(aad, plaintext)
        if len(nonce) != NONCE_SIZE:
            raise ValueError("a seal nonce is 12 bytes")
        blob = self._aead.encrypt(nonce, plaintext, aad)
        return PREFIX + base64.urlsafe_b64encode(nonce + blob).decode().rstrip("=")

    def open(self, tenant: str, kind: str, token: str | None) -> dict[str, Any] | None:
        """The payload, or None when the token does not open for this tenant and kind."""
        if not token or not token.startswith(PREFIX):
            return None
        try:
            raw = _decode(token[len(PREFIX) :])
            if len(raw) < NONCE_SIZE + 16:
                return None
            data = self._aead.decrypt(raw[:NONCE_SIZE], raw[NONCE_SIZE:], self._aad(tenant, kind))
            value = msgspec.json.decode(data)
        except Exception:  # noqa: BLE001 - any failure means "not for this tenant and kind"
            return None
        return value if isinstance(value, dict) else None

    def seal_reasoning(self, tenant: str, text: str, signature: str | None = None, redacted: str | None = None) -> str:
        """``{"text"}``, plus Anthropic's ``signature`` or ``redacted`` (redacted_thinking data)
        when the upstream gave one: readers that know only ``text`` keep working."""
        payload: dict[str, Any] = {"text": text}
        if signature:
            payload["signature"] = signature
        if redacted:
            payload["redacted"] = redacted
        return self.seal(tenant, REASONING, payload)

    def seal_summary(self, tenant: str, summary: str) -> str:
        """A compaction item's ``encrypted_content``."""
        return self.seal(tenant, COMPACTION, {"summary": summary})

    def reasoning_sealer(self, tenant: str) -> Callable[..., str]:
        """``seal_reasoning`` bound to one tenant: what the response builder calls."""

        def seal(text: str, signature: str | None = None, redacted: str | None = None) -> str:
            return self.seal_reasoning(tenant, text, signature, redacted)

        return seal


# --- opening a request's items --------------------------------------------------------------


def _kind_of(item: Any) -> str | None:
    kind = type(item)
    if kind is Q.ReasoningIn:
        return REASONING
    if kind is Q.CompactionIn:
        return COMPACTION
    return None


def refused(param: str, item_kind: str, token: str) -> ApiError:
    """The 400 for a sealed token that does not open."""
    if token.startswith(LEGACY_PREFIXES):
        why = "it was sealed by an earlier version of respline, whose items can no longer be opened"
    else:
        why = f"it was not sealed by this server, for this API key's tenant, as a {item_kind} item, or it was altered"
    return ApiError(
        400,
        f"The encrypted content of a {item_kind} item could not be opened: {why}.",
        param=param,
        code="invalid_encrypted_content",
    )


def open_items(
    sealer: Sealer,
    tenant: str,
    items: list[Any],
    opened: dict[str, dict[str, Any]],
    param: str = "input[{i}].encrypted_content",
) -> None:
    """Open every respline-sealed token of ``items`` (reasoning and compaction items) for
    ``tenant``, each as its item's kind, into ``opened`` (token -> payload); the translators
    read them from there. The first that does not open is an ApiError naming ``param``
    (``{i}``: the item's index). Once per request, before anything is sent upstream."""
    for i, item in enumerate(items):
        kind = _kind_of(item)
        if kind is None:
            continue
        token = item.encrypted_content
        if not is_sealed(token):
            continue  # not respline's: an upstream's own encrypted content, or none
        payload = sealer.open(tenant, kind, token)
        if payload is None:
            raise refused(param.format(i=i), kind, token)
        opened[token] = payload


def opened_payload(
    unseal: Callable[[str], dict[str, Any] | None] | None, token: str | None, param: str, item_kind: str
) -> dict[str, Any] | None:
    """For a translator: the payload of a respline-sealed token, None for a token that is not
    respline's (or no token); a sealed token that ``unseal`` cannot give is refused, so it is
    never dropped or forwarded in silence."""
    if not is_sealed(token):
        return None
    payload = unseal(token) if unseal is not None else None
    if payload is None:
        raise refused(param, item_kind, token)  # type: ignore[arg-type]
    return payload
