"""The upstream transport: chunked decoding under any split, body framing, connection reuse."""

from __future__ import annotations

from functools import partial

import httpx
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from respline.adapters.http1 import HeadReader, encode_request
from respline.adapters.transport import ChunkedDecoder, UpstreamTransport


def encode_chunked(pieces: list[bytes], ext: bool = False) -> bytes:
    out = b""
    for p in pieces:
        out += f"{len(p):x}".encode() + (b";name=value" if ext else b"") + b"\r\n" + p + b"\r\n"
    return out + b"0\r\nx-trailer: 1\r\n\r\n"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(min_size=1, max_size=40), max_size=12),
    st.lists(st.integers(min_value=1, max_value=30), min_size=1, max_size=50),
    st.booleans(),
)
def test_chunked_decoder_any_split(pieces, cuts, ext):
    wire = encode_chunked(pieces, ext) + b"LEFTOVER"
    dec = ChunkedDecoder()
    got = b""
    pos = 0
    i = 0
    while not dec.done and pos < len(wire):
        cut = cuts[i % len(cuts)]
        i += 1
        got += dec.feed(wire[pos : pos + cut])
        pos += cut
    assert dec.done
    assert got == b"".join(pieces)


def test_chunked_decoder_rejects_garbage():
    with pytest.raises(httpx.RemoteProtocolError):
        ChunkedDecoder().feed(b"zz\r\nhello\r\n")
    with pytest.raises(httpx.RemoteProtocolError):
        ChunkedDecoder().feed(b"5\r\nhelloXX")


_HEAD = (
    b"HTTP/1.1 100 Continue\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nContent-Type:  text/event-stream \r\nTransfer-Encoding: chunked\r\nX-Empty:\r\n\r\n"
)


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(_HEAD) + 5), max_size=6))
def test_head_reader_any_split(cuts):
    """The response head (after an interim 100) is the same however the bytes arrive, and what
    followed it is handed back as the start of the body."""
    data = _HEAD + b"5\r\nhello"
    bounds = sorted(set([0, *[min(c, len(data)) for c in cuts], len(data)]))
    reader = HeadReader()
    head = None
    for a, b in zip(bounds, bounds[1:]):
        if head is None and a < b:
            head = reader.feed(data[a:b])
            rest = reader.rest
        elif head is not None:
            rest += data[a:b]
    assert head is not None
    assert head.status_code == 200 and head.http_version == b"1.1" and head.reason == b"OK"
    assert head.headers == [(b"content-type", b"text/event-stream"), (b"transfer-encoding", b"chunked"), (b"x-empty", b"")]
    assert rest == b"5\r\nhello"


def test_head_reader_bare_lf_and_rejections():
    head = HeadReader().feed(b"HTTP/1.0 404 Not Found\nContent-Length: 0\n\n")
    assert head.status_code == 404 and head.http_version == b"1.0" and head.headers == [(b"content-length", b"0")]
    for bad in (
        b"HTTX/1.1 200 OK\r\n\r\n",  # not a status line
        b"HTTP/1.1 2x0 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno-colon\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nName : v\r\n\r\n",  # whitespace before the colon
        b"HTTP/1.1 200 OK\r\nA: 1\r\n folded\r\n\r\n",  # obs-fold
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    ):
        with pytest.raises(httpx.RemoteProtocolError):
            HeadReader().feed(bad)
    with pytest.raises(httpx.RemoteProtocolError):  # closed before a head
        HeadReader().feed(b"")
    reader = HeadReader()
    with pytest.raises(httpx.RemoteProtocolError):  # a head without end is bounded
        for _ in range(100):
            reader.feed(b"x-filler: " + b"a" * 1000 + b"\r\n")


def test_request_head_is_one_buffer_and_refuses_smuggling():
    out = encode_request(b"POST", b"/v1/chat/completions", [(b"host", b"up:80"), (b"x-k", b"v")], b"{}")
    assert out == b"POST /v1/chat/completions HTTP/1.1\r\nhost: up:80\r\nx-k: v\r\ncontent-length: 2\r\n\r\n{}"
    assert encode_request(b"GET", b"/", [(b"content-length", b"0")], b"") == b"GET / HTTP/1.1\r\ncontent-length: 0\r\n\r\n"
    for headers, target in (
        ([(b"x-k", b"v\r\nx-injected: 1")], b"/"),
        ([(b"x-k", b"v\n")], b"/"),
        ([(b"x-k\r", b"v")], b"/"),
        ([(b"x-k", b"v\0")], b"/"),
        ([], b"/ HTTP/1.1\r\nx: y"),
        ([], b"/a b"),
    ):
        with pytest.raises(httpx.LocalProtocolError):
            encode_request(b"POST", target, headers, b"{}")


class _Server:
    """A loopback HTTP/1.1 server answering from a list of raw responses, counting connections."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = answers
        self.connections = 0
        self.requests: list[bytes] = []

    async def handler(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        buf = b""
        while self.answers:
            while b"\r\n\r\n" not in buf:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buf += data
            head, _, buf = buf.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            while len(buf) < length:
                buf += await stream.receive_some(65536)
            self.requests.append(head + b"\r\n\r\n" + buf[:length])
            buf = buf[length:]
            answer = self.answers.pop(0)
            await stream.send_all(answer)
            if b"connection: close" in answer.lower():
                await stream.aclose()
                return


async def serve(nursery, answers):
    server = _Server(answers)
    listeners = await nursery.start(partial(trio.serve_tcp, server.handler, 0, host="127.0.0.1"))
    return server, listeners[0].socket.getsockname()[1]


async def test_framings_and_reuse(nursery):
    chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + encode_chunked([b"data: a\n\n", b"data: b\n\n"])
    sized = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"
    closing = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\n\r\nbusy"
    server, port = await serve(nursery, [chunked, sized, closing])
    async with httpx.AsyncClient(transport=UpstreamTransport()) as client:
        url = f"http://127.0.0.1:{port}/v1/x"
        async with client.stream("POST", url, content=b'{"a":1}') as r:
            assert r.status_code == 200
            assert b"".join([p async for p in r.aiter_raw()]) == b"data: a\n\ndata: b\n\n"
        r = await client.post(url, content=b"{}")
        assert r.content == b"hello"
        r = await client.post(url, content=b"{}")
        assert r.status_code == 503 and r.content == b"busy"  # body delimited by the close
    assert server.connections == 1  # both earlier answers left the connection reusable
    assert server.requests[0].endswith(b'{"a":1}') and b"content-length: 7" in server.requests[0].lower()


async def test_stale_pooled_connection_is_retried(nursery):
    ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    server, port = await serve(nursery, [ok])
    async with httpx.AsyncClient(transport=UpstreamTransport()) as client:
        url = f"http://127.0.0.1:{port}/"
        assert (await client.post(url, content=b"1")).content == b"ok"
        # the server handler has returned after its only answer: the pooled connection is dead
        server.answers.append(ok)
        await trio.sleep(0.05)
        assert (await client.post(url, content=b"2")).content == b"ok"


async def test_connect_error_and_cut_body(nursery):
    async with httpx.AsyncClient(transport=UpstreamTransport()) as client:
        with pytest.raises(httpx.ConnectError):
            await client.post("http://127.0.0.1:1/", content=b"x")
    cut = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhel"
    server, port = await serve(nursery, [cut])
    async with httpx.AsyncClient(transport=UpstreamTransport()) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            async with client.stream("POST", f"http://127.0.0.1:{port}/", content=b"x") as r:
                async for _ in r.aiter_raw():
                    pass


def _self_signed(tmp_path):
    """A CA-less self-signed certificate for 127.0.0.1, made with cryptography (a dependency)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


async def test_https_upstream(nursery, tmp_path):
    import ssl

    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + encode_chunked([b"data: secure\n\n"])
    server = _Server([answer, answer])

    async def tls_handler(stream):
        tls = trio.SSLStream(stream, server_ctx, server_side=True)
        await tls.do_handshake()
        await server.handler(tls)

    listeners = await nursery.start(partial(trio.serve_tcp, tls_handler, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    url = f"https://127.0.0.1:{port}/v1/chat/completions"
    trusting = ssl.create_default_context(cafile=str(cert))
    async with httpx.AsyncClient(transport=UpstreamTransport(ssl_context=trusting)) as client:
        for _ in range(2):  # the second request reuses the TLS connection
            async with client.stream("POST", url, content=b"{}") as r:
                assert b"".join([p async for p in r.aiter_raw()]) == b"data: secure\n\n"
    assert server.connections == 1
    # the system trust store does not know this certificate: a connect error, not a hang
    async with httpx.AsyncClient(transport=UpstreamTransport()) as client:
        with pytest.raises(httpx.ConnectError):
            await client.post(url, content=b"{}")
