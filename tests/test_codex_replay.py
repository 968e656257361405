"""The Codex CLI recorded once, replayed with no upstream: a tool loop with ``exec_command`` and
``apply_patch`` is recorded against the scripted upstream into a cassette, then replayed twice by
``respline serve --replay``. Codex completes the same task each time, and the Responses streams
respline sent it (taken off the wire by a proxy) are byte-identical across the two replays, all
but the ``prompt_cache_key`` Codex itself sends (its new thread id), which a Response echoes.
Skipped, like tests/test_codex.py, where npm cannot install Codex."""

from __future__ import annotations

import json
import re
import socket
import threading

from conftest import TEST_KEY
from loopback import SocketServer, relay
from test_codex import assert_ran, codex, run_codex  # noqa: F401 - codex is a fixture
from upstream import Reply, text_stream, tool_stream

PATCH = "*** Begin Patch\n*** Add File: notes.txt\n+recorded once, replayed forever\n*** End Patch\n"
TASK = "Run echo hello-cassette, then create notes.txt"


class Capture(SocketServer):
    """A TCP proxy in front of respline keeping every byte respline sent back, per connection."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.received: list[bytearray] = []
        super().__init__()
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def serve(self, client: socket.socket) -> None:
        server = socket.create_connection(("127.0.0.1", self.target))
        got = bytearray()
        self.received.append(got)
        threading.Thread(target=relay, args=(client, server), daemon=True).start()
        relay(server, client, got)

    def streams(self) -> list[bytes]:
        """The body of every event-stream response, de-chunked, in order."""
        out = []
        for raw in self.received:
            for head, body in _responses(bytes(raw)):
                if b"text/event-stream" in head.lower():
                    out.append(body)
        return out


def _responses(data: bytes):
    """(head, body) of each HTTP/1.1 response in one connection's bytes (the last may lack its
    closing chunk: a client that has its terminal event may hang up before it arrives)."""
    while data:
        end = data.index(b"\r\n\r\n")
        head, data = data[:end], data[end + 4 :]
        if re.search(rb"(?im)^transfer-encoding:\s*chunked", head):
            body = bytearray()
            while True:
                line_end = data.find(b"\r\n")
                if line_end < 0:
                    data = b""
                    break
                size = int(data[:line_end].split(b";")[0], 16)
                data = data[line_end + 2 :]
                if size == 0:
                    data = data[data.index(b"\r\n") + 2 :]
                    break
                body += data[:size]
                data = data[size + 2 :]
            yield head, bytes(body)
        else:
            m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            size = int(m.group(1)) if m else len(data)
            yield head, data[:size]
            data = data[size:]


def check_task(events: list[dict], work) -> None:
    assert assert_ran(events, "hello-cassette", "Ran it and wrote notes.txt.")["exit_code"] == 0
    assert (work / "notes.txt").read_text() == "recorded once, replayed forever\n"
    assert events[-1]["type"] == "turn.completed"


def test_codex_recorded_once_replays_twice_byte_for_byte(codex, start_server, upstream, tmp_path):  # noqa: F811
    cassette = tmp_path / "cassette"
    upstream.queue(
        Reply(tool_stream("exec_command", '{"cmd": "echo hello-cassette"}', call_id="call_exec", reasoning="Run it first.")),
        Reply(tool_stream("apply_patch", json.dumps({"input": PATCH}), call_id="call_patch", reasoning="Now the file.")),
        Reply(text_stream("Ran it and wrote notes.txt.")),
    )
    live = start_server(["--upstream", upstream.base_url, "--api-key", TEST_KEY, "--record", str(cassette)])
    (tmp_path / "record").mkdir()
    events, work = run_codex(codex, live.url, tmp_path / "record", TASK)
    check_task(events, work)
    live.stop()
    assert len(upstream.requests) == 3
    upstream.reset()

    streams = []
    for n in range(2):  # no upstream at all: the replay server knows none
        server = start_server(["--replay", str(cassette), "--api-key", TEST_KEY, "--replay-strict"])
        proxy = Capture(server.port)
        (tmp_path / f"replay{n}").mkdir()
        events, work = run_codex(codex, proxy.url, tmp_path / f"replay{n}", TASK)
        check_task(events, work)
        proxy.stop()
        # Codex sends its thread id (a new UUID each run) as prompt_cache_key, which the Response
        # echoes as the API says: the client's own input, the one thing that may differ
        thread = next(e["thread_id"] for e in events if e["type"] == "thread.started").encode()
        got = proxy.streams()
        assert all(b'"prompt_cache_key":"' + thread + b'"' in s for s in got)
        streams.append([s.replace(thread, b"<codex thread id>") for s in got])
        server.stop()
        assert server.proc.returncode == 0  # strict: each recorded exchange served once
    assert upstream.requests == []
    assert len(streams[0]) == 3
    # the sealed reasoning Codex sent back each turn opened, and was sealed the same both times
    assert b'"encrypted_content":"rsp2.' in streams[0][0]
    assert streams[0] == streams[1]
