"""A streamed body written past hypercorn (adapters/frontends/connection.py).

The response head and the end of the body go through hypercorn; each write in between is one
HTTP/1.1 chunk written straight to the client's socket. These tests read responses off raw
sockets, so they see the exact bytes: the same as hypercorn's (``[server] direct_write = false``),
a connection that serves the next request after a stream, a client that leaves, a slow one, and
an HTTP/1.0 client (whose body is not chunked: it goes through hypercorn).
"""

from __future__ import annotations

import json
import re
import socket
import struct
import time

import httpx
import pytest

from test_slow_client import big_stream
from upstream import Reply, text_stream
from validate import checked, parse_sse

DEBUG = '[server]\nlog_level = "debug"\n'
DIRECT = "streamed body: chunks straight to the socket"
THROUGH = "streamed body: through hypercorn"


def request(body: dict, *, version: bytes = b"1.1", request_id: bytes = b"req-direct-test") -> bytes:
    payload = json.dumps(body).encode()
    return (
        b"POST /v1/responses HTTP/" + version + b"\r\nhost: x\r\ncontent-type: application/json\r\n"
        + b"x-request-id: " + request_id + b"\r\ncontent-length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload
    )


class Reader:
    """A raw HTTP/1.1 client's side of one connection: whole responses, chunk by chunk."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.settimeout(10)
        self.buf = bytearray()  # (a stream's last chunk can be 100 MB: no quadratic appends)

    def _more(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("the server closed the connection")
        self.buf += data

    def _before(self, sep: bytes) -> bytes:
        """What comes before the next ``sep`` (taken, with it)."""
        while (end := self.buf.find(sep)) < 0:
            self._more()
        out = bytes(self.buf[:end])
        del self.buf[: end + len(sep)]
        return out

    def head(self) -> bytes:
        return self._before(b"\r\n\r\n")

    def chunk(self) -> bytes:
        """The next chunk's data (b"" for the last chunk, whose trailers must be empty)."""
        size = int(self._before(b"\r\n"), 16)
        while len(self.buf) < size + 2:
            self._more()
        data, end = bytes(self.buf[:size]), bytes(self.buf[size : size + 2])
        del self.buf[: size + 2]
        assert end == b"\r\n", f"chunk not ended by CRLF: {end!r}"
        return data

    def response(self) -> tuple[bytes, list[bytes]]:
        """One whole chunked response: its head and its chunks, each exactly as framed."""
        head = self.head()
        assert b"transfer-encoding: chunked" in head.lower(), head
        chunks = []
        while data := self.chunk():
            chunks.append(data)
        return head, chunks

    def close(self) -> None:
        self.sock.close()


def same_length_ids(data: bytes) -> bytes:
    """Generated ids, timestamps and the date header blanked, each kept at its length (so the
    chunk sizes still hold)."""
    data = re.sub(rb"_[0-9a-f]{32}", b"_" + b"0" * 32, data)
    data = re.sub(rb'"(created_at|completed_at)":(\d+)', lambda m: b'"%s":%s' % (m[1], b"0" * len(m[2])), data)
    return re.sub(rb"\r\ndate: [^\r]*", b"\r\ndate: -", data)


def stream_body(reader: Reader, body: dict | None = None) -> tuple[bytes, list[bytes]]:
    reader.sock.sendall(request(body or {"model": "m", "input": "x", "stream": True}))
    return reader.response()


def after_hang_up(server, upstream, response_id: str) -> dict:
    """The client just hung up: respline closes its upstream connection within a second, and the
    response is stored as it ended."""
    hung_up_at = time.monotonic()
    while not upstream.hangups and time.monotonic() < hung_up_at + 3:
        time.sleep(0.02)
    assert upstream.hangups and upstream.hangups[0] - hung_up_at < 1.0, "respline kept reading the upstream"
    deadline = time.monotonic() + 5
    while (stored := httpx.get(f"{server.url}/responses/{response_id}").json())["status"] == "in_progress":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return stored


def test_a_stream_is_written_past_hypercorn_and_the_bytes_are_hypercorns(start_server, upstream):
    """With direct_write on (the default) the stream's chunks go straight to the socket; with it
    off they go through hypercorn; the bytes on the wire are the same, head, chunk framing and
    all (one chunk per upstream read in both), but for generated ids and times."""
    direct = start_server(["--upstream", upstream.base_url, "--store", "memory"], config=DEBUG)
    through = start_server(["--upstream", upstream.base_url, "--store", "memory"], config=DEBUG + "direct_write = false\n")
    wire = []
    for server in (direct, through):
        upstream.queue(Reply(text_stream("one", " two", " three"), delay=0.05))
        reader = Reader(server.port)
        head, chunks = stream_body(reader)
        reader.close()
        assert len(chunks) >= 4, chunks  # the opening events, one per word, the end
        events = checked(parse_sse(b"".join(chunks)))
        assert events[-1]["type"] == "response.completed"
        assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == "one two three"
        wire.append(same_length_ids(head + b"\r\n\r\n" + b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)))
    assert wire[0] == wire[1]
    assert DIRECT in direct.log() and THROUGH not in direct.log()
    assert THROUGH in through.log() and DIRECT not in through.log()


def test_keep_alive_after_a_direct_written_stream(start_server, upstream):
    """Two streams and a plain request, one after another on one connection: hypercorn ended
    each body (h11's last chunk) and took the next request, so h11's state was right after
    chunks it never saw."""
    server = start_server(["--upstream", upstream.base_url, "--store", "memory"], config=DEBUG)
    reader = Reader(server.port)
    for words in (("first",), ("second", " stream")):
        upstream.queue(Reply(text_stream(*words), delay=0.02))
        head, chunks = stream_body(reader)
        assert head.startswith(b"HTTP/1.1 200"), head
        assert b"connection: close" not in head.lower()
        events = checked(parse_sse(b"".join(chunks)))
        assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == "".join(words)
    reader.sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
    head = reader.head()
    assert head.startswith(b"HTTP/1.1 200"), head
    length = int(re.search(rb"content-length: (\d+)", head, re.I)[1])
    while len(reader.buf) < length:
        reader._more()
    assert json.loads(reader.buf[:length]) == {"status": "ok"}
    reader.close()
    assert server.log().count(DIRECT) == 2


def test_a_client_that_leaves_mid_stream(start_server, upstream):
    """A raw client reads a few direct-written chunks and hangs up: respline closes its upstream
    connection at once and stores the response as failed (the client disconnected); the server
    goes on serving."""
    server = start_server(["--upstream", upstream.base_url, "--store", "memory"], config=DEBUG)
    slow = text_stream(*[f" w{i}" for i in range(300)])
    upstream.queue(Reply(slow, delay=0.02))
    reader = Reader(server.port)
    reader.sock.sendall(request({"model": "m", "input": "x", "stream": True}))
    reader.head()
    seen = b""
    while seen.count(b"output_text.delta") < 3:
        seen += reader.chunk()
    response_id = seen.split(b'"id":"', 1)[1].split(b'"', 1)[0].decode()
    reader.close()
    stored = after_hang_up(server, upstream, response_id)
    assert stored["status"] == "failed" and "client disconnected" in stored["error"]["message"], stored
    assert DIRECT in server.log()
    upstream.queue(Reply(text_stream("after")))
    reader = Reader(server.port)
    _, chunks = stream_body(reader)
    reader.close()
    assert checked(parse_sse(b"".join(chunks)))[-1]["type"] == "response.completed"


def test_a_slow_client_gets_every_chunk_whole(start_server, upstream):
    """150 x 64 KB to a client that pauses: the kernel takes part of a chunk, the rest waits
    for the client (trio's send_all) while the upstream is not read; every chunk arrives whole
    and in order, and the next request on the connection is served."""
    server = start_server(["--upstream", upstream.base_url, "--store", "memory"], config=DEBUG)
    reply = big_stream(150)
    upstream.queue(reply)
    reader = Reader(server.port)
    reader.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    reader.sock.sendall(request({"model": "m", "input": "x", "stream": True}))
    reader.head()
    chunks = [reader.chunk()]
    time.sleep(1.5)  # reads nothing: respline's writes block
    assert reply.finished is None, "the writes did not block (the test proves nothing)"
    while data := reader.chunk():
        chunks.append(data)
    events = checked(parse_sse(b"".join(chunks)))
    assert events[-1]["type"] == "response.completed"
    assert sum(len(e["delta"]) for e in events if e["type"] == "response.output_text.delta") == 150 * 65536
    upstream.queue(Reply(text_stream("next")))
    _, chunks = stream_body(reader)
    reader.close()
    assert checked(parse_sse(b"".join(chunks)))[-1]["type"] == "response.completed"
    assert server.log().count(DIRECT) == 2


@pytest.mark.parametrize("how", ["reset", "eof"])
def test_a_client_that_leaves_while_a_chunk_is_half_written(start_server, upstream, how):
    """The client stops reading, so respline's write of a large chunk blocks with part of it
    sent, then hangs up: with a reset the write fails; with an end of its sending side hypercorn
    sees the client leave and the blocked write is cancelled. Either way the connection is
    closed (its framing is broken), the upstream request is cancelled and the response stored
    failed, and the server goes on serving."""
    server = start_server(["--upstream", upstream.base_url, "--store", "memory"], config=DEBUG)
    upstream.queue(big_stream(150))
    reader = Reader(server.port)
    reader.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader.sock.sendall(request({"model": "m", "input": "x", "stream": True}))
    reader.head()
    first = reader.chunk()
    response_id = first.split(b'"id":"', 1)[1].split(b'"', 1)[0].decode()
    time.sleep(1.0)  # reads nothing: a 64 KB chunk's write blocks halfway
    if how == "reset":
        reader.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        reader.close()
    else:
        reader.sock.shutdown(socket.SHUT_WR)
    stored = after_hang_up(server, upstream, response_id)
    assert stored["status"] == "failed", stored
    if how == "eof":
        reader.sock.settimeout(5)
        try:
            while reader.sock.recv(1 << 20):  # what was in flight, then the end: closed
                pass
        except ConnectionResetError:
            pass
        reader.close()
    upstream.queue(Reply(text_stream("after")))
    reader = Reader(server.port)
    _, chunks = stream_body(reader)
    reader.close()
    assert checked(parse_sse(b"".join(chunks)))[-1]["type"] == "response.completed"
    assert "unexpected error" not in server.log()


def test_an_http_1_0_client_is_written_through_hypercorn(start_server, upstream):
    """An HTTP/1.0 client gets a body ended by closing the connection, not chunks: respline
    leaves it to hypercorn."""
    server = start_server(["--upstream", upstream.base_url, "--store", "memory"], config=DEBUG)
    upstream.queue(Reply(text_stream("old", " client")))
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.settimeout(10)
    sock.sendall(request({"model": "m", "input": "x", "stream": True}, version=b"1.0"))
    data = b""
    while piece := sock.recv(65536):
        data += piece
    sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower(), head
    events = checked(parse_sse(body))
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == "old client"
    assert THROUGH in server.log() and DIRECT not in server.log()


async def test_an_http2_client_is_written_through_hypercorn(start_server, upstream):
    """HTTP/2 (prior knowledge, no TLS) has its own framing and flow control: hypercorn's h2
    protocol writes the stream, and it arrives whole."""
    server = start_server(["--upstream", upstream.base_url, "--store", "memory"], config=DEBUG)
    upstream.queue(Reply(text_stream("over", " h2"), delay=0.02))
    async with httpx.AsyncClient(http1=False, http2=True, timeout=10) as client:
        async with client.stream("POST", server.url + "/responses", json={"model": "m", "input": "x", "stream": True}) as r:
            assert r.http_version == "HTTP/2"
            body = await r.aread()
    events = checked(parse_sse(body))
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == "over h2"
    assert THROUGH in server.log() and DIRECT not in server.log()
