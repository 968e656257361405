"""The httpx transport, for a provider that chooses it (``transport = "httpx"``).

The fast transport (adapters/transport.py) stays the default: it speaks HTTP/1.1 straight to the
upstream and is measured faster (bench/README.md). httpx's own transport is there for what the
fast one does not do: a proxy (``proxy``, or the environment's with ``trust_env``) and HTTP/2
(``http2``). Both take the same TLS context (``config.tls_context``: the system's trust store or
``ca_bundle``, and a client certificate), so choosing a transport never changes whom respline
trusts. Everything above a transport is the same for both: a provider sends straight to it
(``HttpProvider.send``), and its errors are httpx's own exception types.

A provider only ever talks to its own ``base_url``'s origin, so whether a request goes through a
proxy (``NO_PROXY``) is decided once, when the provider is built.
"""

from __future__ import annotations

import logging
import ssl
import urllib.request
from typing import Any

import httpx
import trio

from respline.adapters.config import ConfigError, ProviderConfig, expand_env, proxy_url
from respline.adapters.transport import MAX_IDLE

log = logging.getLogger("respline.transport")

# how long telling an HTTP/2 upstream that a stream is abandoned may wait for the connection
_RESET_WRITE = 5.0


def httpx_transport(
    name: str, p: ProviderConfig, limits: Any, timeouts: Any, tls: ssl.SSLContext | None
) -> httpx.AsyncHTTPTransport:
    """The provider's httpx transport: pooled as the fast one is (``limits.upstream_connections``,
    ``timeouts.pool_idle``), through its proxy if it has one, HTTP/2 if asked for."""
    url = httpx.URL(p.base_url)
    proxy = upstream_proxy(name, p, url)
    # HTTP/2 on https is negotiated (ALPN: h2, else HTTP/1.1); on http:// it can only be assumed
    h2c = p.http2 and url.scheme == "http"
    via: httpx.Proxy | None = None
    if proxy is not None:
        # an https:// proxy is trusted by the system's store too (ca_bundle is the upstream's CA)
        https = proxy.lower().startswith("https://")
        via = httpx.Proxy(proxy, ssl_context=ssl.create_default_context()) if https else httpx.Proxy(proxy)
    if p.http2:
        _reset_abandoned_streams()
    return httpx.AsyncHTTPTransport(
        # the fast transport's default too (not httpx's own CA bundle): the system's trust store
        verify=tls if tls is not None else ssl.create_default_context(),
        http1=not h2c,
        http2=p.http2,
        limits=httpx.Limits(
            max_connections=limits.upstream_connections, max_keepalive_connections=MAX_IDLE, keepalive_expiry=timeouts.pool_idle
        ),
        proxy=via,
        trust_env=False,  # the proxy is chosen above; SSL_CERT_FILE is the TLS context's business
    )


def upstream_proxy(name: str, p: ProviderConfig, url: httpx.URL) -> str | None:
    """The proxy the provider's requests go through: ``proxy``, else with ``trust_env`` the one
    the environment names for the upstream's scheme (HTTPS_PROXY for https, HTTP_PROXY for
    http, else ALL_PROXY; lower-case names win, as curl reads them), unless NO_PROXY lists its
    host; else none."""
    where = f"providers.{name}"
    if p.proxy is not None:
        proxy = proxy_url(expand_env(p.proxy, f"{where}.proxy") or "", f"{where}.proxy")
        log.info("provider %s: upstream requests go through the proxy at %s", name, _origin(proxy))
        return proxy
    if not p.trust_env:
        return None
    proxies = urllib.request.getproxies_environment()
    value = proxies.get(url.scheme) or proxies.get("all")
    port = url.port or (443 if url.scheme == "https" else 80)
    if not value or urllib.request.proxy_bypass_environment(f"{url.host}:{port}", proxies):
        return None
    proxy = proxy_url(value, f"{where}.trust_env: the environment's proxy for {url.scheme}://")
    if p.http2 and url.scheme == "http":
        raise ConfigError(f"{where}.http2: HTTP/2 over http:// (prior knowledge) does not go through the environment's proxy {_origin(proxy)}")
    log.info("provider %s: upstream requests go through the proxy at %s (from the environment)", name, _origin(proxy))
    return proxy


def _origin(url: str) -> str:
    """A proxy URL for the log: no credentials."""
    u = httpx.URL(url)
    return f"{u.scheme}://{u.host}" + (f":{u.port}" if u.port else "")


def _reset_abandoned_streams() -> None:
    """httpcore (1.0) forgets an HTTP/2 stream it stops reading without telling the upstream: no
    RST_STREAM goes out, so the upstream goes on generating (and billing) an answer nobody reads,
    and h2 still counts the stream as open, until new streams on that connection fail with "max
    outbound streams". respline abandons upstream streams all the time (a client left, a
    timeout, a cancelled run), so here the one method every stream's end goes through,
    ``_response_closed``, first resets a stream that h2 still has open, and sends the frame.
    Installed once, when a provider asks for HTTP/2; tests/test_httpx_transport.py shows the
    upstream told, and the connection still usable after more abandoned streams than it allows
    at once, so an httpcore that changes this is caught there."""
    from httpcore import AsyncHTTP2Connection

    if getattr(AsyncHTTP2Connection, "_respline_resets", False):
        return
    closed = AsyncHTTP2Connection._response_closed

    async def _response_closed(self: Any, stream_id: int) -> None:
        try:
            await _reset(self, stream_id)
        finally:
            await closed(self, stream_id)

    AsyncHTTP2Connection._response_closed = _response_closed
    AsyncHTTP2Connection._respline_resets = True


async def _reset(conn: Any, stream_id: int) -> None:
    """RST_STREAM (CANCEL) for a stream not yet closed both ways, written at once (bounded: a
    connection that cannot take the frame is broken anyway, and this runs shielded)."""
    import h2.errors
    import h2.exceptions

    state = conn._h2_state
    stream = state.streams.get(stream_id)
    if stream is None or stream.closed:
        return
    try:
        state.reset_stream(stream_id, error_code=h2.errors.ErrorCodes.CANCEL)
    except h2.exceptions.ProtocolError:  # the connection is closing: nothing to reset
        return
    with trio.move_on_after(_RESET_WRITE):
        try:
            async with conn._write_lock:
                data = state.data_to_send()
                if data:
                    await conn._network_stream.write(data)
        except Exception:  # noqa: BLE001 - a broken connection: the upstream saw it close
            pass
