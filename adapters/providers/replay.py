"""An httpx transport that answers Chat Completions requests with recorded streams.

It backs the built-in ``demo`` model (``make run`` with no upstream configured) and works like any
other upstream: the gateway sends a real request through httpx and reads a real streamed body, so
the demo exercises the same code path as production.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import msgspec

import respline.fixtures

from respline.engine.replay import load_recording

# The demo's streams ship as package data in the `respline.fixtures` namespace (pyproject.toml),
# so an installed respline finds them from any directory. Its __path__ is read directly because an
# editable install adds a path-hook entry there that importlib.resources cannot list.
DEMO = next(Path(p) for p in respline.fixtures.__path__ if Path(p).is_dir()) / "demo"
DEMO_TEXT = DEMO / "text.sse"
DEMO_TOOL = DEMO / "tool_call.sse"


class _Body(httpx.AsyncByteStream):
    def __init__(self, data: bytes, piece: int) -> None:
        self._data = data
        self._piece = piece

    async def __aiter__(self):
        for i in range(0, len(self._data), self._piece):
            yield self._data[i : i + self._piece]


class ReplayTransport(httpx.AsyncBaseTransport):
    """Serves ``files`` in turn (the last one repeats); ``piece`` bytes per read."""

    def __init__(self, files: list[Path], piece: int = 256) -> None:
        self._files = files
        self._piece = piece
        self.requests: list[dict] = []

    def pick(self, body: dict) -> Path:
        return self._files[min(len(self.requests) - 1, len(self._files) - 1)]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = msgspec.json.decode(await request.aread())
        self.requests.append(body)
        if len(self.requests) > 100:  # only the latest matter; keep memory bounded
            del self.requests[:50]
        path = self.pick(body)
        data = load_recording(path.name, path.read_bytes())
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=_Body(data, self._piece))


class DemoTransport(ReplayTransport):
    """The demo model: a text answer; when the client offers an ``exec_command`` tool (Codex does)
    and the last turn is the user's, a call to it that runs ``echo``, so a whole tool loop can be
    tried end to end with no provider at all."""

    def __init__(self) -> None:
        super().__init__([DEMO_TEXT])

    def pick(self, body: dict) -> Path:
        messages = body.get("messages") or []
        last = messages[-1].get("role") if messages else None
        names = {t.get("function", {}).get("name") for t in body.get("tools") or []}
        if "exec_command" in names and last == "user":
            return DEMO_TOOL
        return DEMO_TEXT
