"""A provider's upstream connection options, through a real respline server to real upstreams on
loopback: a CA of the test's own (``ca_bundle``), client certificates, HTTP/2 (``http2``, httpx
transport), a proxy from the environment or the config, and the load-time errors for options
that cannot work. The fast transport stays the default; where an option works on both
transports, both are shown."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import threading
import time
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio import serve as hyper_serve

from certs import CA
from conftest import config_error, load_config, route_all_to
from loopback import SocketServer, relay
from test_observability import scrape, value
from upstream import DONE, Reply, chunk, text_stream
from validate import checked, parse_sse, validate_event, validate_response

TRANSPORTS = ["fast", "httpx"]


# --- upstreams: hypercorn (TLS, client certificates, HTTP/2) and a proxy ----------------------


class HyperUpstream:
    """A Chat Completions upstream served by hypercorn in a thread of its own: TLS with
    ``certfile``/``keyfile``, client certificates required when ``client_ca`` is given, HTTP/2
    by ALPN over TLS or by prior knowledge over plain TCP. Each request is logged with the HTTP
    version it came in and its JSON body; ``hang`` delays the status line, ``delay`` paces the
    answer's pieces, and a request whose client went away before the answer's end is marked
    ``gone`` (the monotonic time)."""

    def __init__(self, tls: tuple[Any, Any] | None = None, client_ca: Any = None, max_streams: int = 100) -> None:
        self.requests: list[dict[str, Any]] = []
        self.pieces = text_stream("over", " the", " wire")
        self.delay = 0.0
        self.hang = 0.0  # seconds before the status line
        config = HyperConfig()
        config.bind = ["127.0.0.1:0"]
        config.accesslog = None
        config.errorlog = None
        config.h2_max_concurrent_streams = max_streams
        if tls is not None:
            config.certfile, config.keyfile = str(tls[0]), str(tls[1])
        if client_ca is not None:
            config.ca_certs = str(client_ca)
            config.verify_mode = ssl.CERT_REQUIRED
        self._config = config
        self._ready = threading.Event()
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "hypercorn did not start"
        scheme = "https" if tls is not None else "http"
        self.base_url = f"{scheme}://127.0.0.1:{self.port}/v1"

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(partial(hyper_serve, self._app, self._config, shutdown_trigger=self._stop.wait, mode="asgi"))
            self.port = int(binds[0].rsplit(":", 1)[1])
            self._ready.set()

    def stop(self) -> None:
        trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(10)

    async def _app(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        entry: dict[str, Any] = {"http_version": scope["http_version"], "path": scope["path"], "body": json.loads(body), "gone": None}
        self.requests.append(entry)
        ending = False
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                if (await receive())["type"] == "http.disconnect" and not ending:
                    entry["gone"] = time.monotonic()
                    nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            await trio.sleep(self.hang)
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
            for piece in self.pieces:
                await send({"type": "http.response.body", "body": piece, "more_body": True})
                if self.delay:
                    await trio.sleep(self.delay)
            ending = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            nursery.cancel_scope.cancel()


@pytest.fixture
def hyper():
    made: list[HyperUpstream] = []

    def make(**kw: Any) -> HyperUpstream:
        made.append(HyperUpstream(**kw))
        return made[-1]

    yield make
    for up in made:
        up.stop()


class Proxy(SocketServer):
    """An HTTP proxy on loopback, in threads: CONNECT opens a tunnel (an https upstream), an
    absolute-form request is forwarded in origin form (an http upstream). ``seen`` lists the
    request line of each request it got, ``auth`` their Proxy-Authorization values."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.auth: list[str | None] = []
        super().__init__()
        self.url = f"http://127.0.0.1:{self.port}"

    def serve(self, conn: socket.socket) -> None:
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = conn.recv(65536)
            if not data:
                conn.close()
                return
            buf += data
        head, _, rest = buf.partition(b"\r\n\r\n")
        line, *fields = head.split(b"\r\n")
        method, target, version = line.split(b" ")
        names = {f.split(b":", 1)[0].strip().lower(): f.split(b":", 1)[1].strip().decode() for f in fields}
        self.seen.append(line.decode())
        self.auth.append(names.get(b"proxy-authorization"))
        if method == b"CONNECT":
            host, port = target.rsplit(b":", 1)
            up = socket.create_connection((host.decode(), int(port)))
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            url = urlsplit(target.decode())
            up = socket.create_connection((url.hostname, url.port or 80))
            kept = [f for f in fields if not f.lower().startswith(b"proxy-")]
            origin = (url.path or "/") + (f"?{url.query}" if url.query else "")
            up.sendall(b"\r\n".join([b" ".join([method, origin.encode(), version]), *kept]) + b"\r\n\r\n")
        if rest:
            up.sendall(rest)
        threading.Thread(target=relay, args=(up, conn), daemon=True).start()
        relay(conn, up)


PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy")


@pytest.fixture
def proxy(monkeypatch):
    """The test's proxy; no proxy variable of the machine's own reaches the servers it starts
    (they inherit this process's environment plus what a test gives them)."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    p = Proxy()
    yield p
    p.stop()


def provider(base_url: str, kind: str = "openai-chat", **options: Any) -> str:
    """A config with one provider, ``up``, serving every model, with these connection keys."""
    return route_all_to(base_url, kind, provider="\n".join(f"{k} = {json.dumps(v)}" for k, v in options.items()))


def ask(server, text: str = "hi", **extra: Any) -> httpx.Response:
    return httpx.post(server.url + "/responses", json={"model": "m", "input": text, "stream": True, **extra}, timeout=30)


def answered(r: httpx.Response) -> str:
    """A streamed answer that completed, every event valid: its text."""
    assert r.status_code == 200, r.text
    events = checked(parse_sse(r.content))
    assert events[-1]["type"] == "response.completed", events[-1]
    return events[-1]["response"]["output"][-1]["content"][0]["text"]


def refused(r: httpx.Response, code: str) -> dict:
    assert r.status_code == 502, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == code, err
    return err


@pytest.fixture
def ca(tmp_path):
    return CA(tmp_path / "pki")


# --- (a) a CA of the upstream's own -------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_ca_bundle_trusts_the_upstreams_own_ca(start_server, hyper, ca, transport):
    """An https upstream whose certificate a CA of its own signed: reached with ``ca_bundle``;
    without it the request is a 502 ``upstream_unreachable`` and the log says why."""
    up = hyper(tls=ca.issue("upstream"))
    server = start_server([], config=provider(up.base_url, transport=transport, ca_bundle=str(ca.cert)))
    assert answered(ask(server, "secure")) == "over the wire"
    assert [r["body"]["messages"][-1]["content"] for r in up.requests] == ["secure"]

    plain = start_server([], config=provider(up.base_url, transport=transport))
    refused(ask(plain, "refused"), "upstream_unreachable")
    assert len(up.requests) == 1  # nothing reached the upstream
    assert "certificate verify failed" in plain.log().lower()


# --- (b) client certificates ------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_client_certificate(start_server, hyper, ca, tmp_path, transport):
    """An upstream that requires a client certificate signed by its CA answers only a provider
    configured with one (``client_cert`` + ``client_key``, or both in one file)."""
    clients = CA(tmp_path / "clients", name="client CA")
    up = hyper(tls=ca.issue("upstream"), client_ca=clients.cert)
    cert, key = clients.issue("respline", client=True)
    server = start_server([], config=provider(up.base_url, transport=transport, ca_bundle=str(ca.cert), client_cert=str(cert), client_key=str(key)))
    assert answered(ask(server, "with a cert")) == "over the wire"
    both, _ = clients.issue("respline-both", client=True, key_in_cert=True)
    one_file = start_server([], config=provider(up.base_url, transport=transport, ca_bundle=str(ca.cert), client_cert=str(both)))
    assert answered(ask(one_file, "one file")) == "over the wire"

    anonymous = start_server([], config=provider(up.base_url, transport=transport, ca_bundle=str(ca.cert)))
    r = ask(anonymous, "no cert")
    # TLS 1.3: the upstream refuses the missing certificate after the client's handshake ended,
    # so the request may have been written: a 502 either way, never an answer
    assert r.status_code == 502 and r.json()["error"]["code"] in ("upstream_unreachable", "upstream_error")
    assert [q["body"]["messages"][-1]["content"] for q in up.requests] == ["with a cert", "one file"]


# --- (c) HTTP/2 --------------------------------------------------------------------------------


def test_http2_over_tls(start_server, hyper, ca):
    """``http2 = true``: the upstream gets the request over HTTP/2 (ALPN), and its stream is
    translated as any other; without it the httpx transport speaks HTTP/1.1."""
    up = hyper(tls=ca.issue("upstream"))
    server = start_server([], config=provider(up.base_url, transport="httpx", http2=True, ca_bundle=str(ca.cert)))
    for text in ("one", "two"):
        assert answered(ask(server, text)) == "over the wire"
    one = start_server([], config=provider(up.base_url, transport="httpx", ca_bundle=str(ca.cert)))
    assert answered(ask(one, "three")) == "over the wire"
    assert [(r["http_version"], r["body"]["messages"][-1]["content"]) for r in up.requests] == [("2", "one"), ("2", "two"), ("1.1", "three")]
    assert up.requests[0]["path"] == "/v1/chat/completions"


def test_http2_prior_knowledge_on_http(start_server, hyper):
    """On an http:// upstream, ``http2 = true`` is HTTP/2 by prior knowledge (h2c)."""
    up = hyper()
    server = start_server([], config=provider(up.base_url, transport="httpx", http2=True))
    r = httpx.post(server.url + "/responses", json={"model": "m", "input": "h2c"}, timeout=30)  # not streamed
    assert r.status_code == 200 and r.json()["output"][-1]["content"][0]["text"] == "over the wire"
    validate_response(r.json())
    assert [q["http_version"] for q in up.requests] == ["2"]


async def _leave_after_first_delta(server) -> float:
    """A streamed request whose client leaves at its first text delta, every event it got
    valid: when it left."""
    seen = b""
    async with httpx.AsyncClient(timeout=10) as client:
        async with client.stream("POST", server.url + "/responses", json={"model": "m", "input": "x", "stream": True}) as r:
            assert r.status_code == 200
            async for piece in r.aiter_bytes():
                seen += piece
                if b"output_text.delta" in seen:
                    break
    left = time.monotonic()
    events = parse_sse(seen[: seen.rindex(b"\n\n") + 2], require_done=False)
    for ev in events:
        validate_event(ev)
    assert [e["type"] for e in events[:2]] == ["response.created", "response.in_progress"]
    return left


async def test_http2_client_leaving_resets_the_upstream_stream(start_server, hyper, ca):
    """A client that leaves mid-stream cancels its upstream request over HTTP/2 too: the
    upstream's stream is reset at once (its handler sees the disconnect), and the connection,
    which allows two streams at a time, still serves requests after more abandoned streams
    than that (h2 does not count the reset ones as open)."""
    up = hyper(tls=ca.issue("upstream"), max_streams=2)
    up.pieces = [chunk({"role": "assistant", "content": ""})] + [chunk({"content": f"w{i} "}) for i in range(400)] + [DONE]
    up.delay = 0.05
    server = start_server([], config=provider(up.base_url, transport="httpx", http2=True, ca_bundle=str(ca.cert)))
    for n in range(3):
        left = await _leave_after_first_delta(server)
        deadline = left + 2.0
        while up.requests[n]["gone"] is None and time.monotonic() < deadline:
            await trio.sleep(0.02)
        assert up.requests[n]["gone"] is not None, "the upstream went on streaming to nobody"
        assert up.requests[n]["gone"] - left < 1.0
    up.pieces, up.delay = text_stream("still", " fine"), 0.0
    r = await trio.to_thread.run_sync(ask, server, "after")
    assert answered(r) == "still fine"
    assert {q["http_version"] for q in up.requests} == {"2"}


async def test_http2_first_byte_timeout_resets_the_upstream_stream(start_server, hyper, ca):
    """An HTTP/2 upstream that does not answer within first_byte: 504, and its stream is reset
    then, not left generating for nobody."""
    up = hyper(tls=ca.issue("upstream"))
    up.hang = 5.0
    config = provider(up.base_url, transport="httpx", http2=True, ca_bundle=str(ca.cert)) + "\n[timeouts]\nconnect = 1\nfirst_byte = 1\n"
    server = start_server([], config=config)
    r = await trio.to_thread.run_sync(ask, server, "slow")
    timed_out = time.monotonic()
    assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"
    while up.requests[0]["gone"] is None and time.monotonic() < timed_out + 2.0:
        await trio.sleep(0.02)
    assert up.requests[0]["gone"] is not None and up.requests[0]["gone"] - timed_out < 1.0


# --- (d) a proxy ------------------------------------------------------------------------------


def test_https_proxy_from_the_environment(start_server, hyper, ca, proxy):
    """``trust_env = true``: HTTPS_PROXY carries an https upstream's requests through a CONNECT
    tunnel (TLS end to end, ``ca_bundle`` still the upstream's CA, HTTP/2 inside it); NO_PROXY
    naming the host goes direct; the fast transport never reads the variables."""
    up = hyper(tls=ca.issue("upstream"))
    host = f"127.0.0.1:{up.port}"
    env = {"HTTPS_PROXY": proxy.url}
    server = start_server([], config=provider(up.base_url, transport="httpx", trust_env=True, http2=True, ca_bundle=str(ca.cert)), env=env)
    assert answered(ask(server, "tunnelled")) == "over the wire"
    assert proxy.seen == [f"CONNECT {host} HTTP/1.1"] and up.requests[0]["http_version"] == "2"
    assert "through the proxy at " + proxy.url in server.log()

    direct = start_server([], config=provider(up.base_url, transport="httpx", trust_env=True, ca_bundle=str(ca.cert)), env={**env, "NO_PROXY": "localhost,127.0.0.1"})
    assert answered(ask(direct, "direct")) == "over the wire"
    fast = start_server([], config=provider(up.base_url, ca_bundle=str(ca.cert)), env=env)
    assert answered(ask(fast, "fast")) == "over the wire"
    assert len(proxy.seen) == 1
    assert [r["body"]["messages"][-1]["content"] for r in up.requests] == ["tunnelled", "direct", "fast"]


def test_http_proxy_from_the_environment(start_server, upstream, proxy):
    """HTTP_PROXY forwards an http upstream's requests (absolute form), lower-case names win,
    and an https-only variable leaves an http upstream alone."""
    env = {"HTTP_PROXY": "http://127.0.0.1:9", "http_proxy": proxy.url}
    server = start_server([], config=provider(upstream.base_url, transport="httpx", trust_env=True), env=env)
    assert answered(ask(server, "forwarded")) == "default"
    assert proxy.seen == [f"POST {upstream.base_url}/chat/completions HTTP/1.1"]
    assert upstream.last["path"] == "/v1/chat/completions" and upstream.last["body"]["messages"][-1]["content"] == "forwarded"
    only_https = start_server([], config=provider(upstream.base_url, transport="httpx", trust_env=True), env={"HTTPS_PROXY": proxy.url})
    assert answered(ask(only_https, "direct")) == "default"
    assert len(proxy.seen) == 1


def test_proxy_from_the_config(start_server, upstream, proxy):
    """``proxy`` (here from ``$VAR``, with credentials) sends every request through it, whatever
    the environment says; the credentials go as Proxy-Authorization, never into the log."""
    url = proxy.url.replace("http://", "http://alice:s3cret@")
    env = {"NO_PROXY": "*", "UPSTREAM_PROXY": url}
    server = start_server([], config=provider(upstream.base_url, transport="httpx", proxy="$UPSTREAM_PROXY"), env=env)
    assert answered(ask(server, "configured")) == "default"
    assert proxy.seen == [f"POST {upstream.base_url}/chat/completions HTTP/1.1"]
    assert proxy.auth == ["Basic " + base64.b64encode(b"alice:s3cret").decode()]
    assert "s3cret" not in server.log()


# --- the httpx transport keeps respline's guarantees ------------------------------------------


def test_httpx_transport_timeouts_and_metrics(start_server, upstream):
    """Over the httpx transport the watch's limits hold (first_byte: 504 before the stream,
    idle: error + response.failed mid-stream) and the metrics count each upstream call."""
    config = provider(upstream.base_url, transport="httpx") + "\n[timeouts]\nconnect = 1\nfirst_byte = 1\nidle = 0.5\n"
    server = start_server([], config=config)
    before = scrape(server.base)
    upstream.queue(Reply(text_stream("late"), hang=3))
    r = ask(server, "late")
    assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"
    upstream.queue(Reply([chunk({"role": "assistant", "content": "partial"}), chunk({"content": "never"})], delay=1.5))
    events = checked(parse_sse(ask(server, "stalls").content))
    assert events[-2]["type"] == "error" and events[-2]["code"] == "upstream_timeout"
    assert events[-1]["type"] == "response.failed"
    assert answered(ask(server, "fine")) == "default"
    after = scrape(server.base)
    for outcome, n in (("timeout", 2), ("ok", 1)):
        labels = {"provider": "up", "outcome": outcome}
        assert value(after, "respline_upstream_requests_total", **labels) - value(before, "respline_upstream_requests_total", **labels) == n


async def test_httpx_transport_client_leaving_closes_the_upstream(start_server, upstream):
    """A client that leaves mid-stream closes its HTTP/1.1 upstream connection at once over the
    httpx transport too."""
    slow = [chunk({"role": "assistant", "content": ""})] + [chunk({"content": f"w{i} "}) for i in range(300)]
    upstream.queue(Reply(slow, delay=0.05))
    server = start_server([], config=provider(upstream.base_url, transport="httpx"))
    left = await _leave_after_first_delta(server)
    while time.monotonic() < left + 1.0 and not upstream.hangups:
        await trio.sleep(0.02)
    assert upstream.hangups and upstream.hangups[0] - left < 1.0


# --- (e) what cannot work is refused at load ---------------------------------------------------


def _refused(tmp_path, base_url: str = "https://up.example/v1", **options: Any) -> str:
    """Why a config whose provider has these keys does not load."""
    return config_error(tmp_path, provider(base_url, **options))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"transport": "h3"}, 'providers.up.transport must be "fast" or "httpx", got \'h3\''),
        ({"http2": True}, 'providers.up.http2 needs transport = "httpx" (the fast transport speaks HTTP/1.1 only)'),
        ({"transport": "fast", "proxy": "http://p:3128"}, 'providers.up.proxy needs transport = "httpx"'),
        ({"trust_env": True}, 'providers.up.trust_env needs transport = "httpx"'),
        ({"transport": "httpx", "proxy": "http://p:3128", "trust_env": True}, "providers.up: proxy and trust_env = true both name a proxy"),
        ({"transport": "httpx", "proxy": "socks5://u:pw@p:1080"}, "providers.up.proxy: 'socks5://u:***@p:1080' is not an http:// or https:// proxy URL"),
        ({"transport": "httpx", "proxy": "$RESPLINE_SURELY_UNSET"}, "providers.up.proxy: environment variable RESPLINE_SURELY_UNSET is not set"),
        ({"client_key": "k.pem"}, "providers.up.client_key goes with client_cert"),
        ({"ca_bundle": "nowhere.pem"}, "providers.up.ca_bundle: cannot read nowhere.pem: No such file or directory"),
        ({"client_cert": "nowhere.pem"}, "providers.up.client_cert: cannot read nowhere.pem"),
        ({"kind": "demo", "transport": "httpx"}, "providers.up.transport: kind 'demo' makes no upstream connection"),
    ],
)
def test_connection_config_errors(tmp_path, options, message):
    assert message in _refused(tmp_path, **options)


def test_connection_config_errors_about_files_and_schemes(tmp_path, ca):
    cert, key = ca.issue("client", client=True)
    other_cert, other_key = ca.issue("other", client=True)
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    cases = [
        ({"ca_bundle": str(tmp_path / "junk.pem")}, "providers.up.ca_bundle: " + str(tmp_path / "junk.pem") + " is not a PEM bundle of CA certificates"),
        ({"client_cert": str(cert)}, "providers.up.client_cert: " + str(cert) + " and a private key in the same file (or client_key) are not"),
        ({"client_cert": str(cert), "client_key": str(other_key)}, "KEY_VALUES_MISMATCH"),
        ({"client_cert": str(tmp_path / "junk.pem"), "client_key": str(key)}, "are not a PEM certificate and its key"),
    ]
    for options, message in cases:
        assert message in _refused(tmp_path, **options)
    why = _refused(tmp_path, "http://up.example/v1", ca_bundle=str(ca.cert))
    assert "providers.up.ca_bundle: base_url 'http://up.example/v1' is not https://" in why
    why = _refused(tmp_path, "http://up.example/v1", transport="httpx", http2=True, proxy="http://p:3128")
    assert "providers.up.http2: HTTP/2 over http:// (prior knowledge) does not go through a proxy" in why
    # what works loads: the files are read at load, the context is made again at start
    options = {"transport": "httpx", "http2": True, "ca_bundle": str(ca.cert), "client_cert": str(other_cert), "client_key": str(other_key)}
    up = load_config(tmp_path, provider("https://up.example/v1", **options)).providers["up"]
    assert up.transport == "httpx" and up.http2
    assert load_config(tmp_path, provider("https://up.example/v1")).providers["up"].transport == "fast"  # the default


def test_encrypted_client_key_is_refused_not_prompted(tmp_path, ca):
    """An encrypted key is a config error, never OpenSSL asking for a passphrase on the terminal."""
    from cryptography.hazmat.primitives import serialization

    cert, key = ca.issue("client", client=True)
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    locked = tmp_path / "locked.key"
    locked.write_bytes(
        private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw"))
    )
    assert "providers.up.client_key: the private key is encrypted" in _refused(tmp_path, client_cert=str(cert), client_key=str(locked))
