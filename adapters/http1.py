"""HTTP/1.1 heads for the upstream transport, sans-I/O: the request head written, the response
head read. Bodies are framed by the transport's ``ChunkedDecoder`` or a length.

Why not h11, which the transport used before: a fresh ``h11.Connection`` per exchange, the request
sent through it and the response head read back cost ~85 us per upstream request here (profiled
in bench/README.md: ~9% of a short streamed turn's CPU, all of it before the first byte). Heads
are all the transport needs from HTTP/1.1 parsing, and they are a few lines of rules (RFC 9112
sections 2-5), so they are done here, keeping the checks that matter for a client: no CR, LF or
NUL smuggled into what is sent, a well-formed status line and fields in what comes back, a bound
on the head's size, and 1xx interim responses skipped.
"""

from __future__ import annotations

import httpx

MAX_HEAD = 65536  # a response head larger than this is refused (h11's default limit too)

_BAD_OUT = (b"\r", b"\n", b"\0")


def encode_request(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    """The request line, the fields and the body in one buffer (one write). A
    ``content-length`` is added for a body that has no framing field."""
    framed = False
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        lower = name.lower()
        if lower == b"content-length" or lower == b"transfer-encoding":
            framed = True
        parts += (name, b": ", value, b"\r\n")
    if body and not framed:
        parts += (b"content-length: ", str(len(body)).encode(), b"\r\n")
    parts.append(b"\r\n")
    head = b"".join(parts)
    # a CR or LF inside a value or the target would start a field of its own (request
    # smuggling): the head has exactly one line break per line written above
    lines = len(headers) + 2 + (1 if body and not framed else 0)
    if head.count(b"\n") != lines or head.count(b"\r") != lines or b"\0" in head or b" " in target:
        raise httpx.LocalProtocolError("invalid character in the upstream request head")
    return head + body if body else head


class ResponseHead:
    __slots__ = ("status_code", "http_version", "reason", "headers")

    def __init__(self, status_code: int, http_version: bytes, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.status_code = status_code
        self.http_version = http_version
        self.reason = reason
        self.headers = headers  # names lower-cased, values without surrounding whitespace


class HeadReader:
    """Bytes in, a ``ResponseHead`` out once it is complete; ``rest`` is what followed it (the
    start of the body). Interim 1xx heads are read past. Raises ``httpx.RemoteProtocolError``
    on a malformed or oversized head, or on the end of input (``feed(b"")``) before a head."""

    __slots__ = ("_buf", "rest")

    def __init__(self) -> None:
        self._buf = b""
        self.rest = b""

    def feed(self, data: bytes) -> ResponseHead | None:
        if not data:
            raise httpx.RemoteProtocolError("upstream closed the connection before answering")
        buf = self._buf + data if self._buf else data
        while True:
            end = buf.find(b"\r\n\r\n")
            size = 4
            if end < 0:  # a bare LF as line end is accepted too (RFC 9112 section 2.2)
                end = buf.find(b"\n\n")
                size = 2
            if end < 0:
                if len(buf) > MAX_HEAD:
                    raise httpx.RemoteProtocolError("upstream response head too large")
                self._buf = buf
                return None
            if end > MAX_HEAD:
                raise httpx.RemoteProtocolError("upstream response head too large")
            head = _parse(buf[:end])
            buf = buf[end + size :]
            if 100 <= head.status_code < 200:
                if head.status_code == 101:
                    raise httpx.RemoteProtocolError("upstream switched protocols")
                continue  # 100 Continue, 103 Early Hints: the final head follows
            self._buf = b""
            self.rest = buf
            return head


def _parse(block: bytes) -> ResponseHead:
    lines = block.split(b"\n")
    status = lines[0].rstrip(b"\r")
    # HTTP-version SP status-code [SP reason-phrase]
    if len(status) < 12 or status[:5] != b"HTTP/" or status[6:7] != b"." or status[8:9] != b" ":
        raise httpx.RemoteProtocolError(f"malformed upstream status line {status[:40]!r}")
    version = status[5:8]
    code = status[9:12]
    if not (version[0:1].isdigit() and version[2:3].isdigit() and code.isdigit()) or status[12:13] not in (b"", b" "):
        raise httpx.RemoteProtocolError(f"malformed upstream status line {status[:40]!r}")
    headers = []
    for line in lines[1:]:
        line = line.rstrip(b"\r")
        colon = line.find(b":")
        # no whitespace before the colon, and no obs-fold continuation lines (RFC 9112 5.1-5.2)
        if colon <= 0 or line[colon - 1 : colon] in (b" ", b"\t") or line[:1] in (b" ", b"\t"):
            raise httpx.RemoteProtocolError(f"malformed upstream header line {line[:40]!r}")
        if b"\0" in line:
            raise httpx.RemoteProtocolError("NUL in an upstream header")
        headers.append((line[:colon].lower(), line[colon + 1 :].strip(b" \t")))
    return ResponseHead(int(code), version, status[13:], headers)
