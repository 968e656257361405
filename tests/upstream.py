"""A scripted Chat Completions upstream for tests: a real HTTP server on loopback, in a thread.

Tests queue replies (status, headers, body pieces with delays); every request respline makes is
logged with its path, headers and JSON body, and the server notes when a client hung up on a
stream it was still writing, so a test can check that respline closed its upstream connection.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def chunk(delta: dict | None = None, finish: str | None = None, usage: dict | None = None, choices: bool = True) -> bytes:
    c: dict[str, Any] = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 1700000000, "model": "up"}
    c["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": finish}] if choices else []
    if usage is not None:
        c["usage"] = usage
    return b"data: " + json.dumps(c).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"
USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


def text_stream(*words: str, finish: str = "stop") -> list[bytes]:
    return [chunk({"role": "assistant", "content": ""})] + [chunk({"content": w}) for w in words] + [
        chunk({}, finish),
        chunk(usage=USAGE, choices=False),
        DONE,
    ]


def tool_stream(name: str, args: str, call_id: str = "call_up_1", reasoning: str | None = None) -> list[bytes]:
    out = [chunk({"role": "assistant", "content": None})]
    if reasoning:
        out.append(chunk({"reasoning_content": reasoning}))
    out.append(chunk({"tool_calls": [{"index": 0, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}]}))
    half = len(args) // 2
    for piece in (args[:half], args[half:]):
        out.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
    out += [chunk({}, "tool_calls"), chunk(usage=USAGE, choices=False), DONE]
    return out


class Reply:
    def __init__(
        self,
        pieces: list[bytes] | None = None,
        status: int = 200,
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
        body: bytes | None = None,
        hang: float = 0.0,
    ) -> None:
        self.pieces = pieces or []
        self.status = status
        self.headers = headers or {}
        self.delay = delay  # seconds between pieces
        self.body = body  # a whole non-streamed body (errors)
        self.hang = hang  # seconds to wait before the status line
        self.finished: float | None = None  # when this reply was written to its end


class Upstream:
    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.requests: list[dict[str, Any]] = []
        self.hangups: list[float] = []  # when a client hung up mid-stream (monotonic)
        self.finished: list[float] = []  # when a streamed reply was written to its end
        self.lock = threading.Lock()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                with upstream.lock:
                    upstream.requests.append(
                        {"path": self.path, "headers": dict(self.headers), "body": json.loads(raw or b"null")}
                    )
                    reply = upstream.replies.popleft() if upstream.replies else upstream.default_reply(self.path)
                if reply.hang:
                    time.sleep(reply.hang)
                try:
                    if reply.body is not None:
                        self.send_response(reply.status)
                        self.send_header("content-type", reply.headers.get("content-type", "application/json"))
                        for k, v in reply.headers.items():
                            if k != "content-type":
                                self.send_header(k, v)
                        self.send_header("content-length", str(len(reply.body)))
                        self.end_headers()
                        self.wfile.write(reply.body)
                        return
                    self.send_response(reply.status)
                    self.send_header("content-type", "text/event-stream")
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.send_header("connection", "close")
                    self.end_headers()
                    self.wfile.flush()
                    for piece in reply.pieces:
                        if reply.delay:
                            time.sleep(reply.delay)
                        self.wfile.write(piece)
                        self.wfile.flush()
                    reply.finished = time.monotonic()
                    upstream.finished.append(reply.finished)
                    self.close_connection = True
                except (BrokenPipeError, ConnectionResetError):
                    upstream.hangups.append(time.monotonic())
                    self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def default_reply(self, path: str) -> Reply:
        """What a request gets when no reply is queued (a test may replace this)."""
        return Reply(text_stream("default"))

    def start(self) -> "Upstream":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def reset(self) -> None:
        with self.lock:
            self.replies.clear()
            self.requests.clear()
            self.hangups.clear()
            self.finished.clear()

    def queue(self, *replies: Reply) -> None:
        with self.lock:
            self.replies.extend(replies)

    @property
    def last(self) -> dict[str, Any]:
        return self.requests[-1]
