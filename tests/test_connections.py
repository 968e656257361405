"""Connections: keep-alive never wedges, request bodies have a deadline, and no framework
timeout cuts a long answer (issue 12).

hypercorn starts reading a keep-alive connection's next request only once the app has read the
previous body; a route that answered first (a 401, a 404, a 405, a missing id) left the socket
neither read nor closed, and the next request on it waited forever.
"""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from conftest import TEST_KEY, Server
from upstream import DONE, Reply, chunk
from validate import checked, parse_sse

AUTH = f"authorization: Bearer {TEST_KEY}\r\n"


class RawConnection:
    """One TCP connection speaking HTTP/1.1 by hand, so a test controls every byte and pause."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> bool:
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"no answer in time; got so far {self.buf[:300]!r}") from None
        self.buf += data
        return bool(data)

    def response(self, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
        """The next response (the body by content-length), within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            assert self._fill(deadline), f"closed before a response: {self.buf!r}"
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers["content-length"])
        while len(self.buf) < length:
            assert self._fill(deadline), "closed mid-body"
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, body

    def closed(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        try:
            while self._fill(deadline):
                pass
        except ConnectionResetError:
            pass
        return True

    def close(self) -> None:
        self.sock.close()


def request(method: str, path: str, body: bytes = b"", auth: bool = True, extra: str = "") -> tuple[bytes, bytes]:
    head = f"{method} {path} HTTP/1.1\r\nhost: test\r\n{AUTH if auth else ''}{extra}"
    if body or method in ("POST", "PUT", "PATCH"):
        head += f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
    return (head + "\r\n").encode(), body


def envelope(status: int, headers: dict, body: bytes) -> dict:
    assert headers["content-type"].startswith("application/json"), headers
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return err


# each answered before its body was read, by the server as it was
EARLY = [
    ("401 on a Quart route", request("GET", "/v1/models", b'{"x": 1}', auth=False), 401),
    ("401 on create", request("POST", "/v1/responses", b'{"model": "m1", "input": "x"}', auth=False), 401),
    ("404 route with a body", request("POST", "/v1/nothing-here", b'{"a": 1}'), 404),
    ("405 POST to a GET-only route", request("POST", "/v1/models", b'{"a": 1}'), 405),
    ("405 PUT", request("PUT", "/v1/responses/resp_x", b'{"a": 1}'), 405),
    ("missing conversation's items", request("POST", "/v1/conversations/conv_missing/items", b'{"items": []}'), 404),
    ("missing conversation's items, listed", request("GET", "/v1/conversations/conv_missing/items", b'{"a": 1}'), 404),
    ("cancel of a missing id", request("POST", "/v1/responses/resp_missing/cancel", b"{}"), 404),
    ("GET with a body", request("GET", "/v1/responses/resp_missing", b'{"a": 1}'), 404),
    ("DELETE with a body", request("DELETE", "/v1/conversations/conv_missing", b'{"a": 1}'), 404),
    ("invalid JSON on create", request("POST", "/v1/responses", b'{"model": '), 400),
    ("invalid UTF-8 on create", request("POST", "/v1/responses", b'{"model": "m\xff", "input": "x"}'), 400),
]


def test_keep_alive_survives_every_early_answer(respline):
    """On ONE connection: each early-answering request, its body sent a moment after its head
    (the server used to answer in between), then a request that must be answered at once."""
    conn = RawConnection(respline.port)
    try:
        for name, (head, body), status in EARLY:
            conn.send(head)
            time.sleep(0.05)
            conn.send(body)
            got, headers, answer = conn.response()
            assert got == status, (name, got, answer)
            envelope(got, headers, answer)
            assert headers.get("connection") != "close", name
            conn.send(b"GET /health HTTP/1.1\r\nhost: test\r\n\r\n")
            got, _, answer = conn.response(timeout=3)
            assert got == 200 and json.loads(answer) == {"status": "ok"}, (name, answer)
    finally:
        conn.close()


def test_sdk_style_client_reuses_its_connection(respline):
    """httpx (the openai SDK's client) keeps one connection across the same early answers, with
    bodies large enough (600 KB) that the server could answer before all of it arrived."""
    ports = set()
    with httpx.Client(base_url=respline.base, timeout=5) as client:
        for name, (head, body), status in EARLY:
            method, path = head.split(b" ")[:2]
            try:
                body = json.dumps({**json.loads(body), "pad": "x" * 600_000}).encode()
            except ValueError:
                pass  # the invalid ones stay as they are
            auth = {"authorization": f"Bearer {TEST_KEY}"} if AUTH.encode() in head else {}
            r = client.request(method.decode(), path.decode(), content=body, headers={**auth, "content-type": "application/json"})
            assert r.status_code == status, (name, r.text)
            r = client.get("/health")
            assert r.status_code == 200, name
            ports.add(r.extensions["network_stream"].get_extra_info("client_addr")[1])
    assert len(ports) == 1, "the connection was not reused"


@pytest.fixture(scope="module")
def short_deadline(upstream_server, tmp_path_factory):
    """A server whose request bodies must arrive within 1 s and hold at most 5,000 bytes."""
    config = """
[timeouts]
client_body = 1
[limits]
body_bytes = 5000
"""
    server = Server(tmp_path_factory.mktemp("deadline"), ["--upstream", upstream_server.base_url, "--api-key", TEST_KEY], config)
    yield server
    server.stop()


@pytest.mark.parametrize("path", ["/v1/responses", "/v1/conversations", "/v1/responses/compact"])
def test_partial_body_gets_408_and_close(short_deadline, path):
    """content-length 1000, 13 bytes sent, then nothing: 408 after the deadline, then the
    connection closes (what is left of the body could not be told from a next request)."""
    conn = RawConnection(short_deadline.port)
    try:
        started = time.monotonic()
        conn.send(f"POST {path} HTTP/1.1\r\nhost: test\r\n{AUTH}content-length: 1000\r\n\r\n".encode() + b'{"model": "m1')
        status, headers, body = conn.response(timeout=5)
        assert status == 408 and headers["connection"] == "close"
        assert envelope(status, headers, body)["code"] == "request_timeout"
        assert time.monotonic() - started >= 0.9
        assert conn.closed()
    finally:
        conn.close()
    assert "Traceback" not in short_deadline.log()


@pytest.mark.parametrize("path", ["/v1/responses", "/v1/conversations"])
def test_body_over_the_limit_gets_413_and_close(short_deadline, path):
    conn = RawConnection(short_deadline.port)
    try:
        # declared too large: refused before any of it is read
        conn.send(f"POST {path} HTTP/1.1\r\nhost: test\r\n{AUTH}content-length: 1000000\r\n\r\n".encode() + b"{" * 100)
        status, headers, body = conn.response()
        assert status == 413 and headers["connection"] == "close"
        assert envelope(status, headers, body)["code"] == "request_too_large"
        assert conn.closed()
    finally:
        conn.close()
    conn = RawConnection(short_deadline.port)
    try:
        # chunked, found too large while reading: the queue of chunks hypercorn holds for the
        # app is drained while the answer goes out, so neither side waits on the other
        conn.send(f"POST {path} HTTP/1.1\r\nhost: test\r\n{AUTH}transfer-encoding: chunked\r\n\r\n".encode())
        # in one write: the server may answer and close once it has read past the limit, and a
        # write after that close would fail on this side (EPIPE), not the server's
        try:
            conn.send((b"3e8\r\n" + b" " * 1000 + b"\r\n") * 40)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the answer is already on its way (read below)
        status, headers, body = conn.response()
        assert status == 413 and headers["connection"] == "close"
    finally:
        conn.close()
    # the server still answers
    assert httpx.get(short_deadline.base + "/health").status_code == 200
    assert "Traceback" not in short_deadline.log()


def test_follow_outlives_every_configured_limit(short_deadline, upstream):
    """A background run of ~2.5 s followed with GET ?stream=true runs to its terminal event on a
    server whose body deadline is 1 s: no framework timeout (Quart's RESPONSE_TIMEOUT cut every
    follow at 60 s) nor any of ours cuts it."""
    pieces = [chunk({"role": "assistant", "content": ""})] + [chunk({"content": f"w{i} "}) for i in range(10)]
    upstream.queue(Reply(pieces + [chunk({}, "stop"), DONE], delay=0.25))
    auth = {"authorization": f"Bearer {TEST_KEY}"}
    rid = httpx.post(short_deadline.url + "/responses", json={"model": "m1", "input": "x", "background": True}, headers=auth).json()["id"]
    started = time.monotonic()
    r = httpx.get(f"{short_deadline.url}/responses/{rid}?stream=true", headers=auth, timeout=30)
    elapsed = time.monotonic() - started
    events = checked(parse_sse(r.content))
    assert events[-1]["type"] == "response.completed"
    assert "w9" in events[-1]["response"]["output"][0]["content"][0]["text"]
    assert elapsed > 1.5, elapsed  # it did outlast the 1 s limit


def test_no_hidden_framework_timeouts():
    """Quart's own deadlines are off: bodies have ours ([timeouts] client_body), and an answer
    lasts as long as what it streams."""
    from respline.adapters.cli import build_gateway
    from respline.adapters.config import Config, ServerConfig
    from respline.adapters.frontends.auth import Auth
    from respline.adapters.frontends.http import build_app

    gateway, _clients = build_gateway(Config(server=ServerConfig(secret="test-secret")))
    app = build_app(gateway, Auth([])).quart_app
    assert app.config["RESPONSE_TIMEOUT"] is None
    assert app.config["BODY_TIMEOUT"] is None


def test_client_body_config_is_checked(tmp_path):
    from respline.adapters.config import ConfigError, load

    path = tmp_path / "bad.toml"
    path.write_text("[timeouts]\nclient_body = 0\n")
    with pytest.raises(ConfigError, match="client_body"):
        load(path)
    path.write_text("[timeouts]\nclient_body = 2.5\n")
    assert load(path).timeouts.client_body == 2.5

