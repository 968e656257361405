"""Cassettes, the pure part: the canonical form an upstream request is matched by, and how two
requests differ.

A cassette (adapters/cassette.py) holds every upstream exchange of a recorded session. When it
is replayed, each upstream request respline makes is answered by the recorded exchange whose
request has the same canonical form: the request body with what changes from run to run left
out, so the same agent run matches although ids, session keys and clock readings differ.

Left out (``Ignore``, written into each cassette so that its matching never changes under it):

- top-level fields that name a caller or a session rather than the conversation:
  ``stream_options``, ``prompt_cache_key``, ``client_metadata``, ``metadata``, ``user``,
  ``safety_identifier``;
- always, whatever the cassette's list says: the top-level ``stream`` (respline's choice, not
  the conversation's: a non-streaming request asks a Chat upstream for its whole answer since
  cassettes were first recorded, and respline reads a recorded stream or whole answer either way);
- at any depth, the keys of ids respline or the client make up: ``id``, ``call_id``,
  ``tool_call_id``, ``tool_use_id``;
- respline's own sealed tokens (``rsp<N>.``), which carry a nonce: compared as ``<sealed>``;
- inside text, what an agent writes that changes every run (each a regular expression and its
  replacement): the Codex CLI's environment context (``<cwd>``, ``<root>``, ``<current_date>``,
  ``<timezone>``), its skill roots (paths under ``CODEX_HOME``) and its command output header
  (``Chunk ID``, ``Wall time``).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import msgspec

from respline.engine.seal import is_sealed

FORMAT = "respline-cassette"
VERSION = 1  # the directory layout and cassette.json schema (adapters/cassette.py)

SEALED = "<sealed>"
ALWAYS_TOP_LEVEL = frozenset({"stream"})  # left out of every cassette's matching (module docstring)


class Ignore(msgspec.Struct, forbid_unknown_fields=True):
    """What a cassette's matching leaves out of a request (module docstring)."""

    top_level: list[str] = msgspec.field(
        default_factory=lambda: ["stream_options", "prompt_cache_key", "client_metadata", "metadata", "user", "safety_identifier"]
    )
    keys: list[str] = msgspec.field(default_factory=lambda: ["id", "call_id", "tool_call_id", "tool_use_id"])
    # [pattern, replacement] pairs, applied to every string in the body (re.sub)
    text: list[tuple[str, str]] = msgspec.field(
        default_factory=lambda: [
            (r"<(cwd|root|current_date|timezone)>[^<]*</\1>", r"<\1>*</\1>"),
            (r"`(r[0-9]+)` = `[^`]*`", r"`\1` = `*`"),  # Codex's skill roots (under CODEX_HOME)
            (r"Chunk ID: [0-9A-Za-z]+", "Chunk ID: *"),
            (r"Wall time: [0-9.]+ seconds", "Wall time: * seconds"),
        ]
    )


class Canonical:
    """``Ignore`` compiled: ``of(body)`` is the body as matched, ``key(kind, body)`` its digest."""

    __slots__ = ("_top", "_keys", "_subs")

    def __init__(self, ignore: Ignore) -> None:
        self._top = frozenset(ignore.top_level) | ALWAYS_TOP_LEVEL
        self._keys = frozenset(ignore.keys)
        self._subs = [(re.compile(p), r) for p, r in ignore.text]

    def of(self, body: Any) -> Any:
        if isinstance(body, dict):
            return {k: self._value(v) for k, v in body.items() if k not in self._top and k not in self._keys}
        return self._value(body)

    def _value(self, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: self._value(x) for k, x in v.items() if k not in self._keys}
        if isinstance(v, list):
            return [self._value(x) for x in v]
        if isinstance(v, str):
            if is_sealed(v):
                return SEALED
            for pattern, repl in self._subs:
                v = pattern.sub(repl, v)
        return v

    def key(self, kind: str, body: Any) -> str:
        """The digest of (provider kind, canonical body): keys sorted, so order never matters."""
        data = msgspec.json.encode([kind, self.of(body)], order="sorted")
        return "sha256:" + hashlib.sha256(data).hexdigest()


class Difference(msgspec.Struct, frozen=True):
    path: str  # e.g. messages[3].tool_calls[0].function.arguments.cmd
    recorded: Any
    sent: Any


MISSING = "(absent)"


def differences(recorded: Any, sent: Any, limit: int = 1000) -> list[Difference]:
    """Where two canonical bodies differ, leaf by leaf, in document order (at most ``limit``).
    A string holding a JSON object on both sides (tool-call arguments) is compared inside, so
    the difference names the argument."""
    out: list[Difference] = []
    _diff(recorded, sent, "", out, limit)
    return out


def _diff(a: Any, b: Any, path: str, out: list[Difference], limit: int) -> None:
    if len(out) >= limit or a == b:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            sub = f"{path}.{k}" if path else str(k)
            _diff(a.get(k, MISSING), b.get(k, MISSING), sub, out, limit)
        return
    if isinstance(a, list) and isinstance(b, list):
        for i in range(max(len(a), len(b))):
            _diff(a[i] if i < len(a) else MISSING, b[i] if i < len(b) else MISSING, f"{path}[{i}]", out, limit)
        return
    if isinstance(a, str) and isinstance(b, str) and a[:1] == b[:1] == "{":
        inner_a, inner_b = _json_object(a), _json_object(b)
        if inner_a is not None and inner_b is not None:
            _diff(inner_a, inner_b, path, out, limit)
            return
    out.append(Difference(path or "(body)", a, b))


def _json_object(text: str) -> dict | None:
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return None
    return value if isinstance(value, dict) else None


def shorten(value: Any, width: int = 80) -> str:
    """A value for a one-line message: JSON, cut to ``width`` characters."""
    text = value if value is MISSING else msgspec.json.encode(value).decode()
    return text if len(text) <= width else text[: width - 3] + "..."


def contrast(recorded: Any, sent: Any, width: int = 80) -> tuple[str, str, int | None]:
    """Both values for a one-line message. Two long strings are shown around the first
    character where they differ (returned too), since their beginnings are usually the same."""
    if recorded is MISSING or sent is MISSING or not (isinstance(recorded, str) and isinstance(sent, str)) or max(len(recorded), len(sent)) <= width:
        return shorten(recorded, width), shorten(sent, width), None
    at = next((i for i, (x, y) in enumerate(zip(recorded, sent)) if x != y), min(len(recorded), len(sent)))
    start = max(0, at - width // 4)

    def around(text: str) -> str:
        piece = msgspec.json.encode(text[start : start + width]).decode()
        return ("..." if start else "") + piece + ("..." if start + width < len(text) else "")

    return around(recorded), around(sent), at
