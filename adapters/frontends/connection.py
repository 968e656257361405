"""The client's connection under hypercorn: closing it from any task, and writing a streamed
body's chunks to it directly.

hypercorn's ASGI ``send`` is a bound method of its stream object (``HTTPStream.app_send``),
whose ``send`` is the protocol's (``H11Protocol.stream_send``), whose ``send`` is the
``TCPServer``'s (``protocol_send``), which holds the trio stream. ``_connection`` walks that
chain once per request.

Why write past hypercorn: a paced stream writes once per token, and each ASGI body message goes
through ``HTTPStream``, ``H11Protocol``, h11's chunk framing, the server's send ``trio.Lock``, a
shielded ``CancelScope`` and trio's ``send_all``: ~125 us of CPU per write here, of which the
syscall is ~20 (bench/README.md, "Writing a stream's body past hypercorn"). ``ChunkWriter``
frames each write as one HTTP/1.1 chunk itself and writes it with one non-blocking syscall. The
response head and the end of the body still go through hypercorn, so h11's state (and with it
keep-alive) stays right: in chunked mode h11 counts no body bytes (its ``ChunkedWriter`` keeps no
state and a ``Data`` event leaves the connection in ``SEND_BODY``), so the chunks it did not see
change nothing it checks when the body ends.
"""

from __future__ import annotations

import os
from time import perf_counter
from typing import Any, Callable

import h11
import trio

try:  # h11's writer for a chunked body: the proof that the body in progress is chunked
    from h11._writers import ChunkedWriter as _ChunkedWriter
except ImportError:  # another h11: every body goes through hypercorn
    _ChunkedWriter = None
try:
    from hypercorn.protocol.h11 import H11Protocol as _H11Protocol
except ImportError:
    _H11Protocol = None

_CRLF = b"\r\n"
# A write that the kernel takes at once does not yield; the pump's upstream read yields when it
# waits (a paced stream, every token), and a firehose upstream still lets other tasks run after
# this many writes in a row
_YIELD_EVERY = 8


def _connection(send) -> tuple[Any, Any] | None:
    """(the protocol object, the ``TCPServer``) behind hypercorn's ASGI ``send``; None when the
    server is not one whose connection can be found."""
    fn = send
    below = None
    for _ in range(6):
        owner = getattr(fn, "__self__", None)
        if owner is None:
            return None
        if isinstance(getattr(owner, "stream", None), (trio.SocketStream, trio.SSLStream)):
            return below, owner
        below = owner
        fn = getattr(owner, "send", None)
    return None


def client_closer(send) -> Callable[[], None] | None:
    """A function that closes this client's connection, from any task, even mid-write; None if
    the server is not one whose connection can be found.

    hypercorn writes to the socket inside a shielded cancel scope (TCPServer.protocol_send), so
    cancelling a task blocked on a client that stopped reading does not end the write: the task,
    the connection and its upstream connection would be held forever. Closing the socket does end
    it (trio wakes a task blocked on a socket closed under it, and hypercorn takes that as the
    client leaving)."""
    found = _connection(send)
    if found is None:
        return None
    stream = found[1].stream
    if isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    return stream.socket.close if isinstance(stream, trio.SocketStream) else None


def chunk_writer(send, exchange: Any = None) -> ChunkWriter | None:
    """A writer of this response's body chunks straight to the client's socket, once the
    response head went out through hypercorn's ``send``; None (write through ``send``) unless
    the response is an HTTP/1.1 chunked body on a plain TCP connection served by hypercorn's h11
    protocol. HTTP/2 has its own framing and flow control; an HTTP/1.0 client gets a body ended
    by closing the connection; TLS (respline has no TLS listener) would need trio's SSLStream,
    whose ``send_all`` is most of the cost saved here. ``exchange``: the request's record, whose
    ``first_byte`` the first chunk sets (observed.py sees only what goes through hypercorn)."""
    if _ChunkedWriter is None or _H11Protocol is None:
        return None
    found = _connection(send)
    if found is None:
        return None
    protocol, server = found
    if type(protocol) is not _H11Protocol:
        return None
    conn = protocol.connection  # (a WebSocket's is hypercorn's own stand-in)
    if type(conn) is not h11.Connection or conn.our_state is not h11.SEND_BODY:
        return None
    if type(getattr(conn, "_writer", None)) is not _ChunkedWriter:
        return None
    stream = server.stream
    lock = getattr(server, "send_lock", None)
    if type(stream) is not trio.SocketStream or not isinstance(lock, trio.Lock):
        return None
    return ChunkWriter(stream, lock, exchange)


class ChunkWriter:
    """Writes each piece of a body as one HTTP/1.1 chunk (``hex-length CRLF data CRLF``) to the
    client's socket: one non-blocking ``writev``, and only when the kernel's buffer is full the
    rest through trio's ``send_all``, which waits for the client (backpressure: the pump does not
    read its upstream meanwhile, and the watch drops a client that takes nothing for
    ``[timeouts] client_write`` by closing its socket, which ends that wait).

    Not shielded, unlike hypercorn's write: a write cancelled with part of a chunk sent has
    broken the body's framing, so the connection is closed (never reused). A write that fails
    (the client left, or its socket was closed under it) closes the socket too: hypercorn's
    reader then sees the connection end and tells the app (``http.disconnect``), as when its own
    write fails; later writes do nothing.

    hypercorn's send lock is not taken: while a body is being sent only this request's task
    writes to the connection (h11 answers nothing else until the response ends: a pipelined
    request waits, a protocol error closes), and every hypercorn write of this response (its
    head, its end) has returned before or starts after these. Were the lock ever held, the chunk
    waits for it.
    """

    __slots__ = ("_stream", "_socket", "_lock", "_run", "_exchange", "broken")

    def __init__(self, stream: trio.SocketStream, lock: trio.Lock, exchange: Any = None) -> None:
        self._stream = stream
        self._socket = stream.socket
        self._lock = lock
        self._run = 0  # writes in a row that did not yield
        self._exchange = exchange if exchange is not None and exchange.first_byte is None else None
        self.broken = False

    async def write(self, data: bytes) -> None:
        if self.broken or not data:  # (an empty chunk would end the body)
            return
        if self._exchange is not None:
            self._exchange.first_byte = perf_counter()
            self._exchange = None
        head = b"%x\r\n" % len(data)
        if self._lock.locked():
            await self._locked(head + data + _CRLF)
            return
        try:
            # -1 once closed: writev fails rather than reach a descriptor reused since
            sent = os.writev(self._socket.fileno(), (head, data, _CRLF))
        except BlockingIOError:
            sent = 0
        except OSError:
            self._gone()
            return
        left = len(head) + len(data) + 2 - sent
        if left == 0:
            self._run += 1
            if self._run >= _YIELD_EVERY:
                self._run = 0
                await trio.lowlevel.checkpoint()
            return
        self._run = 0
        chunk = head + data + _CRLF
        await self._rest(memoryview(chunk)[len(chunk) - left :])

    async def _rest(self, rest) -> None:
        """What the kernel did not take at once, when the client has made room for it."""
        try:
            await self._stream.send_all(rest)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._gone()
        except BaseException:  # cancelled, maybe halfway through the chunk
            self._gone()
            raise

    async def _locked(self, chunk: bytes) -> None:
        async with self._lock:
            await self._rest(chunk)

    def _gone(self) -> None:
        self.broken = True
        self._socket.close()
