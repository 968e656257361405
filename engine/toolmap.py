"""How an upstream function name maps back to the tool the client offered.

Chat upstreams only know flat function tools. ``custom`` tools (Codex's freeform apply_patch) are
offered as a function with one string parameter and must come back as ``custom_tool_call`` items;
``namespace`` tools are offered as their inner functions under a joined name and must come back
with ``namespace`` and the inner name (SPEC 2.3).
"""

from __future__ import annotations

from msgspec import Struct

CUSTOM_INPUT_PARAM = "input"
NAMESPACE_SEPARATOR = "__"


class ToolTarget(Struct, frozen=True):
    kind: str  # "function" | "custom"
    name: str
    namespace: str | None = None


ToolMap = dict[str, ToolTarget]
