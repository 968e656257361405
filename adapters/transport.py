"""An httpx transport for upstream streams: HTTP/1.1 on trio sockets, pooled.

Why not httpx's default transport: httpcore yields one body piece per HTTP chunk, through
several layers of async generators, and LLM upstreams send one chunk per token; h11 itself
spends several Python calls per chunk. Profiling (bench/README.md) put those at a fifth, then
two fifths, of respline's CPU per event. Here ``http1`` writes the request head and reads the
response head, and the body is framed by a sans-I/O chunked decoder that turns a whole socket
read into one piece, so the pipeline gets many tokens per call and frames ready together are
written together downstream. It keeps idle connections for reuse, speaks TLS for https, and raises
httpx's own exception types, so everything above it is ordinary httpx.

A request is never sent twice once all of it was written: the upstream may be generating (and
billing) the answer even if its connection then drops. A pooled connection is checked before
reuse (an idle connection with something to read was closed or spoiled by the upstream) and
expires after ``keepalive_expiry`` idle seconds, so it is rarely stale; the one retry left is on
a reused connection whose first write failed with no byte taken.
"""

from __future__ import annotations

import os
import select
import ssl
from collections import deque
from typing import AsyncIterator

import httpx
import trio

from respline.adapters.http1 import HeadReader, ResponseHead, encode_request

_READ = 65536
_EAGER_READS = 8  # reads without a yield before the body iterator yields anyway
# A read shorter than this most likely emptied the socket (a paced token is ~150 bytes): the next
# read waits for readiness first instead of failing with EAGAIN
_DRAINED = 4096
# expired idle connections closed per checkout and per release (UpstreamTransport._trim)
_TRIM = 2


MAX_IDLE = 256  # idle connections kept for reuse (the httpx transport keeps as many)

_BUF = bytearray(_READ)
_VIEW = memoryview(_BUF)


def _read(fd: int) -> bytes:
    """One read into a buffer that every stream shares (one thread reads at a time), then a copy
    of what arrived. ``os.read(fd, 64K)`` allocates 64 KB per read and shrinks it: with
    thousands of open streams those transient blocks between long-lived ones fragment the heap
    (10,000 streams at 1 token/s: 67-74 KB of RSS per stream, with this 61; bench/README.md)."""
    return _VIEW[: os.readv(fd, (_BUF,))].tobytes()


class _Conn:
    __slots__ = ("stream", "fd", "key", "idle_since", "token", "keep_alive")

    def __init__(self, stream: trio.abc.Stream, key: tuple[str, str, int]) -> None:
        self.stream = stream
        # plain TCP is read and written on the descriptor itself (see _Body.__aiter__); TLS
        # goes through trio's SSLStream
        self.fd = stream.socket.fileno() if type(stream) is trio.SocketStream else -1
        self.key = key
        self.idle_since = 0.0
        self.token: object = None
        self.keep_alive = True


class ChunkedDecoder:
    """Sans-I/O ``Transfer-Encoding: chunked`` body decoding (RFC 9112 section 7.1).

    h11 turns every chunk into an event object through several Python calls; an LLM upstream
    sends one chunk per token, so here a whole read is decoded with ``bytes.find`` and slices.
    """

    __slots__ = ("_buf", "_remaining", "_crlf", "_trailers", "done")

    def __init__(self) -> None:
        self._buf = b""
        self._remaining = 0  # bytes of chunk data still to come
        self._crlf = False  # the CRLF after a chunk's data is due
        self._trailers = False  # after the last chunk: trailer lines until a blank one
        self.done = False

    @property
    def spare(self) -> bool:
        """Bytes arrived after the body's end (``done``)."""
        return bool(self._buf)

    def feed(self, data: bytes) -> bytes:
        buf = self._buf + data if self._buf else data
        out: list[bytes] = []
        pos = 0
        n = len(buf)
        while pos < n and not self.done:
            remaining = self._remaining
            if remaining:
                take = remaining if remaining <= n - pos else n - pos
                out.append(buf[pos : pos + take])
                pos += take
                self._remaining = remaining - take
                self._crlf = self._remaining == 0
                continue
            if self._crlf:
                if n - pos < 2:
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    raise httpx.RemoteProtocolError("malformed chunked body: no CRLF after chunk data")
                pos += 2
                self._crlf = False
                continue
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                if n - pos > 4096:
                    raise httpx.RemoteProtocolError("malformed chunked body: chunk header too long")
                break
            if self._trailers:
                self.done = eol == pos
                pos = eol + 2
                continue
            size_field = buf[pos:eol].split(b";", 1)[0].strip()
            try:
                size = int(size_field, 16)
            except ValueError:
                raise httpx.RemoteProtocolError(f"malformed chunk size {size_field[:20]!r}") from None
            pos = eol + 2
            if size == 0:
                self._trailers = True
            else:
                self._remaining = size
        self._buf = buf[pos:]  # after the end: what followed the body (see ``spare``)
        if not out:
            return b""
        return out[0] if len(out) == 1 else b"".join(out)


class _Body(httpx.AsyncByteStream):
    """The response body: each yielded piece is all of the body that one socket read holds."""

    __slots__ = ("_transport", "_conn", "_first", "_chunked", "_left", "_done")

    def __init__(self, transport: "UpstreamTransport", conn: _Conn, first: bytes, head: ResponseHead) -> None:
        self._transport = transport
        self._conn = conn
        self._first = first  # body bytes that arrived with the head
        self._done = False
        headers = head.headers
        encoding = _header(headers, b"transfer-encoding")
        length = _header(headers, b"content-length")
        self._chunked = ChunkedDecoder() if encoding is not None and b"chunked" in encoding.lower() else None
        # None: the body ends when the upstream closes the connection
        self._left = int(length) if self._chunked is None and length is not None and length.isdigit() else None
        if head.status_code in (204, 304) or (self._left == 0 and self._chunked is None):
            self._left = 0

    @property
    def buffered(self) -> bool:
        """Body bytes arrived with the head: the first piece needs no wait."""
        return bool(self._first)

    @property
    def complete(self) -> bool:
        """The piece just yielded was the body's last: the next step ends without a read. The
        gateway then writes that piece's events and the terminal ones together."""
        chunked = self._chunked
        return chunked.done if chunked is not None else self._left == 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        stream = self._conn.stream
        chunked = self._chunked
        data = self._first
        self._first = b""
        # Plain TCP: read the descriptor directly. A paced token is one read, and trio's
        # receive_some spends more on its wrappers and its post-read yield than the read itself
        # (bench/README.md, optimisation log).
        fd = self._conn.fd
        eager = 0  # reads in a row that found data without waiting
        drained = False
        spare = False  # bytes came after the body's end: the next answer could not be trusted
        while True:
            if data:
                if chunked is not None:
                    piece = chunked.feed(data)
                    if piece:
                        yield piece
                    if chunked.done:
                        spare = chunked.spare
                        break
                elif self._left is not None:
                    piece = data[: self._left]
                    self._left -= len(piece)
                    if piece:
                        yield piece
                    if self._left == 0:
                        spare = len(data) > len(piece)
                        break
                else:
                    yield data
            elif self._left == 0:
                break
            try:
                if fd < 0:
                    data = await stream.receive_some(_READ)
                else:
                    if drained:  # the last read took what there was: wait, skip a futile read
                        eager = 0
                        await trio.lowlevel.wait_readable(fd)
                    try:
                        data = _read(fd)
                        eager += 1
                        if eager >= _EAGER_READS:  # a firehose upstream still lets others run
                            eager = 0
                            await trio.lowlevel.checkpoint()
                    except BlockingIOError:
                        eager = 0
                        await trio.lowlevel.wait_readable(fd)
                        data = _read(fd)
                    drained = len(data) < _DRAINED
            except BlockingIOError:  # woken without data (spurious): read again
                data = None
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise httpx.ReadError(str(exc) or exc.__class__.__name__) from None
            if data is None:
                continue
            if not data:  # the upstream closed
                if chunked is None and self._left is None:
                    break  # a body delimited by the end of the connection
                raise httpx.RemoteProtocolError("upstream closed the connection mid-body")
        self._done = True
        self._transport._release(self._conn, reusable=(self._left is not None or chunked is not None) and not spare)

    async def aclose(self) -> None:
        if not self._done:
            self._done = True
            await self._transport._discard(self._conn)


def _header(headers, name: bytes) -> bytes | None:
    for k, v in headers:
        if k == name:
            return v
    return None


class UpstreamTransport(httpx.AsyncBaseTransport):
    def __init__(
        self,
        max_connections: int = 4096,
        keepalive_expiry: float = 30.0,
        max_idle: int = MAX_IDLE,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._idle: dict[tuple[str, str, int], deque[_Conn]] = {}
        self._limiter = trio.CapacityLimiter(max_connections)
        self._keepalive_expiry = keepalive_expiry
        self._max_idle = max_idle
        self._n_idle = 0
        self._ssl = ssl_context  # default: the system's trust store, made on first https use

    # -- connections ---------------------------------------------------------------------

    def _take_idle(self, key: tuple[str, str, int]) -> _Conn | None:
        """The most recently used idle connection that is young enough and still quiet. The age
        is checked here, at checkout, rather than by a timer per connection; the spoiled ones
        met on the way are closed. The pool is a stack (the most recently used on top), so
        once the top one has expired every one under it has too: that one is closed and the
        rest are left to ``_trim``, a few per request (see there)."""
        pool = self._idle.get(key)
        if not pool:
            return None
        now = trio.current_time()
        expiry = self._keepalive_expiry
        found = None
        while pool:
            conn = pool.pop()
            self._n_idle -= 1
            if now - conn.idle_since >= expiry:
                _close_now(conn)
                break
            if _quiet(conn):
                found = conn
                break
            _close_now(conn)
        self._trim(pool, now)
        return found

    def _trim(self, pool: deque[_Conn], now: float) -> None:
        """Close at most ``_TRIM`` expired connections at the old end of ``pool``. A burst of
        streams leaves as many idle connections, which expire together; closed all at once,
        they held up the one request that found them expired (128 closes, and the upstream's
        128 hang-ups in its way: 40 ms before its first token, bench/README.md), where a few
        per checkout and release cost nothing and still empty the pool."""
        expiry = self._keepalive_expiry
        for _ in range(_TRIM):
            if not pool or now - pool[0].idle_since < expiry:
                return
            self._n_idle -= 1
            _close_now(pool.popleft())

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
            # a failed TLS handshake is a BrokenResourceError whose cause says why (the certificate)
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc.__cause__ or exc}") from None
        return _Conn(stream, key)

    def _release(self, conn: _Conn, reusable: bool) -> None:
        """A body read to its end: keep the connection for the next request unless either side
        said close."""
        self._limiter.release_on_behalf_of(conn.token)
        now = trio.current_time()
        pool = self._idle.get(conn.key)
        if pool:
            self._trim(pool, now)
        if reusable and conn.keep_alive and self._n_idle < self._max_idle and self._keepalive_expiry > 0:
            conn.idle_since = now
            if pool is None:
                pool = self._idle[conn.key] = deque()
            pool.append(conn)
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
            # a free slot is taken without a yield: under load every yield on the way to the
            # first byte waits a whole scheduler round behind the running streams
            self._limiter.acquire_on_behalf_of_nowait(token)
        except trio.WouldBlock:
            try:
                with trio.fail_after(timeouts.get("pool") or 3600):
                    await self._limiter.acquire_on_behalf_of(token)
            except trio.TooSlowError:
                raise httpx.PoolTimeout("no upstream connection free in time") from None
        conn: _Conn | None = None
        try:
            out = encode_request(request.method.encode(), target, headers, body)
            conn = self._take_idle(key)
            reused = conn is not None
            if conn is None:
                conn = await self._connect(key, timeouts.get("connect"))
            try:
                head, first = await self._send(conn, out)
            except _NothingSent:
                if not reused:
                    raise
                # the pooled connection was closed between the check and the write (its RST
                # came first): not a byte of the request left, so a fresh connection may send it
                _close_now(conn)
                conn = await self._connect(key, timeouts.get("connect"))
                head, first = await self._send(conn, out)
        except BaseException:
            self._limiter.release_on_behalf_of(token)
            if conn is not None:
                _close_now(conn)
            raise
        conn.token = token
        connection = _header(head.headers, b"connection")
        conn.keep_alive = head.http_version == b"1.1" and not (connection is not None and b"close" in connection.lower())
        return httpx.Response(
            head.status_code,
            headers=head.headers,
            stream=_Body(self, conn, first, head),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": head.reason},
        )

    async def _send(self, conn: _Conn, out: bytes) -> tuple[ResponseHead, bytes]:
        """Write the request in one write and read the response head: the head and the body
        bytes that came with it. Any failure after the write is final: the upstream may have
        the whole request (``handle_async_request`` never sends it again)."""
        await _send_all(conn, out)
        try:
            reader = HeadReader()
            while True:
                head = reader.feed(await _receive(conn))
                if head is not None:
                    return head, reader.rest
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise httpx.ReadError(str(exc) or exc.__class__.__name__) from None

    async def aclose(self) -> None:
        for pool in self._idle.values():
            for conn in pool:
                _close_now(conn)
        self._idle.clear()
        self._n_idle = 0


class _NothingSent(httpx.WriteError):
    """The first write of a request failed before the socket took a byte of it."""


async def _send_all(conn: _Conn, data: bytes) -> None:
    """The request, written on the descriptor (plain TCP) with no yield when the socket takes it
    at once, which it nearly always does: each yield before the first byte costs a scheduler
    round behind the running streams (bench/README.md, time to first byte).

    Raises ``_NothingSent`` only when provably no byte left; TLS cannot tell how much of a
    record went out, so its failures are plain ``httpx.WriteError`` (never retried)."""
    if conn.fd < 0:
        try:
            await conn.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise httpx.WriteError(str(exc) or exc.__class__.__name__) from None
        return
    view = memoryview(data)
    sent = 0
    while sent < len(data):
        try:
            sent += os.write(conn.fd, view[sent:])
        except BlockingIOError:
            await trio.lowlevel.wait_writable(conn.fd)
        except OSError as exc:
            error = _NothingSent if sent == 0 else httpx.WriteError
            raise error(str(exc) or exc.__class__.__name__) from None


def _quiet(conn: _Conn) -> bool:
    """An idle connection has nothing to say until it is sent a request: anything readable
    (the upstream's FIN or RST, or bytes no request asked for) means it cannot be reused. One
    poll with no wait; TLS also counts what its SSL object holds undelivered."""
    stream = conn.stream
    if conn.fd >= 0:
        fd = conn.fd
    else:
        if stream.pending():  # decrypted bytes nobody asked for
            return False
        fd = stream.transport_stream.socket.fileno()
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI)
    return not poller.poll(0)


async def _receive(conn: _Conn) -> bytes:
    """One read of the response head: at once if data is there, else when it arrives."""
    if conn.fd < 0:
        return await conn.stream.receive_some(_READ)
    while True:
        try:
            return _read(conn.fd)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(conn.fd)


def _close_now(conn: _Conn) -> None:
    """Close without waiting (no TLS close_notify): the connection is not coming back."""
    stream = conn.stream
    raw = getattr(stream, "transport_stream", stream)
    sock = getattr(raw, "socket", None)
    if sock is not None:
        sock.close()
