"""What every provider adapter shares: the turn context it builds a request in, headers, keys.

A provider adapter (openai_chat, anthropic, openai_responses) has one job per turn: ``prepare``
turns the validated request into the upstream HTTP request and the pipeline that will read the
upstream's answer, and ``error`` reads the upstream's refusal (status + body) as an ApiError.
The gateway knows nothing of any provider's wire format.
"""

from __future__ import annotations

from typing import Any, Callable

import httpx
import msgspec

from respline.adapters.config import ProviderConfig, Timeouts, expand_env, tls_context
from respline.adapters.httpx_transport import httpx_transport
from respline.adapters.transport import UpstreamTransport
from respline.engine.ids import Clock, Ids
from respline.engine.pipeline import ResponsePipeline
from respline.engine.seal import Sealer
from respline.engine.wire.responses import Response

_json = msgspec.json.Encoder()


class TurnContext:
    """What a provider needs from the gateway to prepare one turn.

    Sealing is bound to the tenant (engine/seal.py): ``seal_reasoning`` seals for this turn's
    tenant, and ``unseal`` reads the tokens the gateway already opened for it (``opened``,
    filled by ``seal.open_items`` before any provider translates), so a translator never opens
    anything itself and a token that did not open never reaches one."""

    __slots__ = ("template", "ids", "clock", "encoding", "reasoning_dialect", "sealer", "include_encrypted", "tenant", "opened", "whole")

    def __init__(
        self,
        template: Response,
        ids: Ids,
        clock: Clock,
        encoding: str | None,
        reasoning_dialect: str,
        sealer: Sealer,
        include_encrypted: bool,
        tenant: str,
        opened: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.template = template
        self.ids = ids
        self.clock = clock
        self.encoding = encoding
        self.reasoning_dialect = reasoning_dialect
        self.sealer = sealer
        self.include_encrypted = include_encrypted  # the client asked for reasoning.encrypted_content
        self.tenant = tenant
        self.opened = opened if opened is not None else {}  # sealed token -> its payload
        # nobody reads this turn's events as they come (a non-streaming request that is not a
        # background run): a provider may ask its upstream for the whole answer at once
        self.whole = False

    @property
    def unseal(self) -> Callable[[str], dict[str, Any] | None]:
        return self.opened.get

    @property
    def seal_reasoning(self) -> Callable[..., str]:
        return self.sealer.reasoning_sealer(self.tenant)


class Prepared:
    __slots__ = ("request", "payload", "body", "pipeline", "answer")

    def __init__(self, request: httpx.Request, payload: bytes, body: dict[str, Any], pipeline: ResponsePipeline) -> None:
        self.request = request
        self.payload = payload
        self.body = body
        self.pipeline = pipeline
        # turns an upstream's whole JSON answer (asked for when nobody reads the events as they
        # come) into the stream bytes the pipeline reads; None: the kind has none
        self.answer: Callable[[bytes], bytes] | None = None


class HttpProvider:
    """The part every provider shares: its endpoint, headers (auth first, then the configured
    extras), timeouts, client, and building the upstream HTTP request. A subclass names its
    ``kind`` and ``default_path``, says how its key is sent (``auth_headers``), and implements
    ``prepare`` and ``error``."""

    kind = ""
    default_path = ""

    def __init__(
        self,
        name: str,
        cfg: ProviderConfig,
        client: httpx.AsyncClient,
        timeouts: Timeouts,
        api_key: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.client = client
        self.transport = transport
        self.timeouts = cfg.timeouts or timeouts
        self.url = httpx.URL(endpoint(cfg, self.default_path))
        key = api_key if api_key is not None else expand_env(cfg.api_key, f"providers.{name}.api_key")
        self.headers = provider_headers(name, cfg, self.auth_headers(cfg, key))
        # encoded at the first request, so that a kind's own __init__ may still add to
        # self.headers after this one (the NDJSON test plug-in sets its accept header)
        self._fields: httpx.Headers | None = None
        self._timeout = upstream_timeout(self.timeouts).as_dict()

    def auth_headers(self, cfg: ProviderConfig, key: str | None) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"} if key else {}

    def fields(self, headers: dict[str, str]) -> httpx.Headers:
        """``headers`` as this provider's requests send them (``Host`` first, as httpx puts it),
        encoded once: ``build`` copies them rather than encoding every name and value again."""
        host = [] if any(k.lower() == "host" for k in headers) else [(b"Host", self.url.netloc)]
        return httpx.Headers([*host, *headers.items()])

    def build(self, body: dict[str, Any], headers: dict[str, str] | httpx.Headers | None = None) -> tuple[httpx.Request, bytes]:
        """The upstream request: ``headers`` (default the provider's own; ``fields`` made once for
        a set used on every request) and ``body`` as JSON. Built from a stream with its fields
        complete, which skips httpx's per-request header encoding (~20 us of each request)."""
        payload = _json.encode(body)
        if not headers:
            headers = self._fields
            if headers is None:
                headers = self._fields = self.fields(self.headers)
        fields = httpx.Headers(headers if isinstance(headers, httpx.Headers) else self.fields(headers))
        fields["Content-Length"] = str(len(payload))
        request = httpx.Request("POST", self.url, headers=fields, stream=httpx.ByteStream(payload), extensions={"timeout": self._timeout})
        request.read()  # its content is the payload (the transport sends request.content)
        return request, payload

    async def send(self, request: httpx.Request) -> httpx.Response:
        """Straight to the transport when the provider has its own: an upstream call needs none
        of the client's redirects, auth flows or cookie jar (a jar shared by every tenant's
        requests would even carry one tenant's upstream cookies into another's)."""
        if self.transport is None:
            return await self.client.send(request, stream=True)
        # the response is not tied to its request: the request holds the encoded upstream body
        # (~130 KB for a Codex turn), which the response would keep for the whole stream
        return await self.transport.handle_async_request(request)


def provider_headers(name: str, cfg: ProviderConfig, auth: dict[str, str]) -> dict[str, str]:
    """SSE accept + JSON body, the provider's auth headers, then the configured extra headers
    (values may be ``$ENV`` too, e.g. ``api-key = "$AZURE_KEY"``)."""
    headers = {"content-type": "application/json", "accept": "text/event-stream"}
    headers.update(auth)
    for k, v in cfg.headers.items():
        headers[k.lower()] = expand_env(v, f"providers.{name}.headers.{k}") or ""
    return headers


def endpoint(cfg: ProviderConfig, default_path: str) -> str:
    return cfg.base_url.rstrip("/") + (cfg.path if cfg.path is not None else default_path)


def upstream_timeout(t: Timeouts) -> httpx.Timeout:
    """httpx's deadlines for an upstream call: none on reads, whose deadlines (first byte, idle,
    total) respline keeps itself, per stream."""
    return httpx.Timeout(connect=t.connect, read=None, write=60.0, pool=t.connect)


def build_provider(
    kind: Any, name: str, p: ProviderConfig, cfg: Any, *, wrap: Callable[..., Any] | None = None, shared: dict | None = None
) -> tuple[HttpProvider, httpx.AsyncClient]:
    """How a kind's provider is built unless the kind says otherwise (``ProviderKind.build``):
    its class over the transport the provider chose (``upstream_transport``). ``wrap`` (``serve
    --record``) tees the transport into the cassette."""
    t = p.timeouts or cfg.timeouts
    timeout = upstream_timeout(t)
    transport = upstream_transport(name, p, cfg)
    if wrap is not None:
        transport = wrap(transport)
    # trust_env=False: a proxy variable in the environment must not reroute upstream calls
    # (a provider sends straight to its transport anyway; the client only closes it)
    client = httpx.AsyncClient(transport=transport, timeout=timeout, trust_env=False)
    return kind.provider(name, p, client, cfg.timeouts, transport=transport), client


def upstream_transport(name: str, p: ProviderConfig, cfg: Any) -> httpx.AsyncBaseTransport:
    """The upstream connection pool a provider's connection keys ask for: the fast transport
    (adapters/transport.py, the default) or httpx's (adapters/httpx_transport.py), either with
    the provider's TLS context. A kind's own ``build`` that talks to an upstream uses this too,
    so that its config's connection keys hold."""
    t = p.timeouts or cfg.timeouts
    tls = tls_context(p, "config", name)
    if p.transport == "httpx":
        return httpx_transport(name, p, cfg.limits, t, tls)
    return UpstreamTransport(max_connections=cfg.limits.upstream_connections, keepalive_expiry=t.pool_idle, ssl_context=tls)


def builder_options(ctx: "TurnContext", tools: Any, max_tool_calls: int | None, *, seal: bool = True) -> dict[str, Any]:
    """What a builder-based pipeline (Chat, Anthropic, Gemini and plug-ins like them) takes from
    the turn, besides its template, ids and clock; the head stages are the kind's own."""
    return {
        "encoding": ctx.encoding,
        "reasoning_dialect": ctx.reasoning_dialect,
        "tools": tools,
        "seal_reasoning": ctx.seal_reasoning if seal else None,
        "max_tool_calls": max_tool_calls,
    }
