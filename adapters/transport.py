"""An httpx transport for upstream streams: HTTP/1.1 on trio sockets with h11, pooled.

Why not httpx's default transport: httpcore yields one body piece per HTTP chunk, through
several layers of async generators, and LLM upstreams send one chunk per token. Profiling
(bench/README.md) put that at a fifth of respline's CPU per event. This transport drains every
chunk h11 has already parsed before yielding, so a socket read of many tokens reaches the
pipeline as one piece, and frames ready together are written together downstream. It speaks
plain HTTP/1.1 (with TLS for https), keeps idle connections for reuse, and raises httpx's own
exception types, so everything above it is ordinary httpx.
"""

from __future__ import annotations

import ssl
from collections import deque
from typing import AsyncIterator

import h11
import httpx
import trio

_READ = 65536


class _Conn:
    __slots__ = ("stream", "h11", "key", "idle_since", "token")

    def __init__(self, stream: trio.abc.Stream, key: tuple[str, str, int]) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)
        self.key = key
        self.idle_since = 0.0
        self.token: object = None


class _Body(httpx.AsyncByteStream):
    """The response body: each yielded piece is everything parsed so far, joined."""

    __slots__ = ("_transport", "_conn", "_done")

    def __init__(self, transport: "UpstreamTransport", conn: _Conn) -> None:
        self._transport = transport
        self._conn = conn
        self._done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        parser = conn.h11
        stream = conn.stream
        while True:
            pieces: list[bytes] = []
            while True:
                try:
                    event = parser.next_event()
                except h11.RemoteProtocolError as exc:
                    raise httpx.RemoteProtocolError(str(exc)) from None
                kind = type(event)
                if kind is h11.Data:
                    pieces.append(event.data)
                elif kind is h11.NEED_DATA:
                    break
                elif kind is h11.EndOfMessage:
                    self._done = True
                    if pieces:
                        yield pieces[0] if len(pieces) == 1 else b"".join(pieces)
                    self._transport._release(conn)
                    return
                elif kind is h11.ConnectionClosed:
                    raise httpx.RemoteProtocolError("upstream closed the connection mid-body")
            if pieces:
                yield pieces[0] if len(pieces) == 1 else b"".join(pieces)
            try:
                data = await stream.receive_some(_READ)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise httpx.ReadError(str(exc) or exc.__class__.__name__) from None
            parser.receive_data(data)  # b"" marks EOF; h11 then reports how the body ended

    async def aclose(self) -> None:
        if not self._done:
            self._done = True
            await self._transport._discard(self._conn)


class UpstreamTransport(httpx.AsyncBaseTransport):
    def __init__(self, max_connections: int = 4096, keepalive_expiry: float = 30.0, max_idle: int = 256) -> None:
        self._idle: dict[tuple[str, str, int], deque[_Conn]] = {}
        self._limiter = trio.CapacityLimiter(max_connections)
        self._keepalive_expiry = keepalive_expiry
        self._max_idle = max_idle
        self._n_idle = 0
        self._ssl: ssl.SSLContext | None = None

    # -- connections ---------------------------------------------------------------------

    def _take_idle(self, key: tuple[str, str, int]) -> _Conn | None:
        pool = self._idle.get(key)
        now = trio.current_time()
        while pool:
            conn = pool.pop()
            self._n_idle -= 1
            if now - conn.idle_since < self._keepalive_expiry:
                return conn
            _close_now(conn)
        return None

    async def _connect(self, key: tuple[str, str, int], timeout: float | None) -> _Conn:
        scheme, host, port = key
        try:
            with trio.fail_after(timeout if timeout is not None else 3600):
                stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
                if scheme == "https":
                    if self._ssl is None:
                        self._ssl = ssl.create_default_context()
                    stream = trio.SSLStream(stream, self._ssl, server_hostname=host, https_compatible=True)
                    await stream.do_handshake()
        except trio.TooSlowError:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out") from None
        except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc}") from None
        return _Conn(stream, key)

    def _release(self, conn: _Conn) -> None:
        """A body read to its end: keep the connection if both sides can start over."""
        self._limiter.release_on_behalf_of(conn.token)
        parser = conn.h11
        if parser.our_state is h11.DONE and parser.their_state is h11.DONE and self._n_idle < self._max_idle:
            parser.start_next_cycle()
            conn.idle_since = trio.current_time()
            self._idle.setdefault(conn.key, deque()).append(conn)
            self._n_idle += 1
        else:
            _close_now(conn)

    async def _discard(self, conn: _Conn) -> None:
        """A body abandoned before its end (client gone, timeout): the connection cannot be
        reused, and closing it is what tells the upstream to stop generating."""
        self._limiter.release_on_behalf_of(conn.token)
        _close_now(conn)

    # -- requests ------------------------------------------------------------------------

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        if scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported scheme {scheme!r}")
        port = url.port or (443 if scheme == "https" else 80)
        key = (scheme, url.host, port)
        timeouts = request.extensions.get("timeout") or {}
        body = request.content if request.stream is not None else b""
        target = url.raw_path
        headers = [(k, v) for k, v in request.headers.raw]
        if not any(k.lower() == b"host" for k, _ in headers):
            headers.insert(0, (b"host", url.netloc))
        token = object()  # counts this request against max_connections until its body is done
        try:
            with trio.fail_after(timeouts.get("pool") or 3600):
                await self._limiter.acquire_on_behalf_of(token)
        except trio.TooSlowError:
            raise httpx.PoolTimeout("no upstream connection free in time") from None
        conn: _Conn | None = None
        try:
            conn = self._take_idle(key)
            reused = conn is not None
            if conn is None:
                conn = await self._connect(key, timeouts.get("connect"))
            try:
                head = await self._send(conn, request.method.encode(), target, headers, body)
            except httpx.HTTPError:
                _close_now(conn)
                if not reused:
                    raise
                # a pooled connection the upstream had already closed: once more on a new one
                conn = await self._connect(key, timeouts.get("connect"))
                head = await self._send(conn, request.method.encode(), target, headers, body)
        except BaseException:
            self._limiter.release_on_behalf_of(token)
            if conn is not None:
                _close_now(conn)
            raise
        conn.token = token
        return httpx.Response(
            head.status_code,
            headers=head.headers,
            stream=_Body(self, conn),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": head.reason},
        )

    async def _send(self, conn: _Conn, method: bytes, target: bytes, headers: list, body: bytes) -> h11.Response:
        parser = conn.h11
        has_length = any(k.lower() in (b"content-length", b"transfer-encoding") for k, _ in headers)
        if body and not has_length:
            headers = [*headers, (b"content-length", str(len(body)).encode())]
        out = parser.send(h11.Request(method=method, target=target, headers=headers))
        if body:
            out += parser.send(h11.Data(data=body))
        out += parser.send(h11.EndOfMessage())
        try:
            await conn.stream.send_all(out)  # the whole request in one write
            while True:
                event = parser.next_event()
                if event is h11.NEED_DATA:
                    parser.receive_data(await conn.stream.receive_some(_READ))
                    continue
                if type(event) is h11.Response:
                    return event
                if type(event) is h11.InformationalResponse:
                    continue
                raise httpx.RemoteProtocolError("upstream closed the connection before answering")
        except h11.RemoteProtocolError as exc:
            raise httpx.RemoteProtocolError(str(exc)) from None
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise httpx.ReadError(str(exc) or exc.__class__.__name__) from None

    async def aclose(self) -> None:
        for pool in self._idle.values():
            for conn in pool:
                _close_now(conn)
        self._idle.clear()
        self._n_idle = 0


def _close_now(conn: _Conn) -> None:
    """Close without waiting (no TLS close_notify): the connection is not coming back."""
    stream = conn.stream
    raw = getattr(stream, "transport_stream", stream)
    sock = getattr(raw, "socket", None)
    if sock is not None:
        sock.close()
