"""The TOML config, decoded into msgspec Structs: a bad file fails at start with the key path.

Example (README has the full list)::

    [server]
    api_keys = ["sk-team-a"]

    [providers.deepseek]
    kind = "openai-chat"
    base_url = "https://api.deepseek.com/v1"
    api_key = "$DEEPSEEK_API_KEY"

    [[routes]]
    model = "deepseek-*"
    provider = "deepseek"
"""

from __future__ import annotations

import fnmatch
import importlib.util
import os
import ssl
import urllib.parse
from pathlib import Path
from typing import Any, ClassVar, Union

import msgspec
from msgspec import Struct

from respline.engine import registry
from respline.engine.stages.reasoning_dialect import OPENAI, REASONING_DIALECTS
from respline.engine.tool_policy import POLICIES as HOSTED_TOOL_POLICIES

# A provider's ``kind`` names its package in the registry (engine/registry.py): built in are
# "openai-chat" (Chat Completions, POST {base_url}/chat/completions), "anthropic" (Messages,
# POST {base_url}/messages), "openai-responses" (the Responses API itself, passed through,
# POST {base_url}/responses) and "demo" (the built-in demo model); a plug-in adds its own.
DEFAULT_KIND = "openai-chat"


class ConfigError(Exception):
    pass


class Timeouts(Struct, forbid_unknown_fields=True):
    connect: float = 10.0  # TCP/TLS connect to the upstream
    first_byte: float = 600.0  # request sent -> first body byte (reasoning models think silently)
    idle: float = 120.0  # between two upstream reads
    total: float = 3600.0  # a whole request, start to end
    # an idle pooled upstream connection is reused for this long, then closed at its next
    # checkout: keep it below the upstream's own keep-alive timeout (0: never reuse)
    pool_idle: float = 30.0
    # server-wide, read from [timeouts] only: a client's request body must arrive within this
    # many seconds of its head (then 408 and the connection closes)
    client_body: float = 30.0
    # one write to the client (server-wide; ignored under providers.*.timeouts): a client that
    # takes longer to accept one write is dropped and its upstream request cancelled. The
    # upstream limits above count only time spent waiting on the upstream, never on the client.
    client_write: float = 60.0


class Limits(Struct, forbid_unknown_fields=True):
    body_bytes: int = 16 * 1024 * 1024
    upstream_connections: int = 4096


class ServerConfig(Struct, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8080
    api_keys: list[str] = []
    secret: str | None = None  # "$ENV" or literal; default: a generated secret persisted in secret_file
    # where respline keeps its own files (adapters/state.py); default $XDG_STATE_HOME/respline
    state_dir: str | None = None
    secret_file: str = "secret"  # a relative path is inside state_dir
    reasoning_dialect: str = OPENAI
    record_dir: str | None = None
    log_level: str = "info"  # debug | info | warning | error
    log_format: str = ""  # "json" | "text"; "" = json unless stderr is a terminal
    access_log: bool = True  # one line per request when it ends (logger respline.access)
    # a streamed body's chunks written straight to the client's socket, past hypercorn's
    # per-write layers (adapters/frontends/connection.py); false: every write through hypercorn
    direct_write: bool = True
    # seconds in-flight streams, WebSocket turns and background runs get to finish at shutdown;
    # then each is ended with error + response.failed and stored as it stands
    shutdown_grace: float = 10.0
    websocket_max_age: float = 3600.0  # a WebSocket connection's lifetime (OpenAI: 60 minutes)
    # CPython's cyclic GC thresholds (gen0, gen1, gen2). The default (700, 10, 10) scans the
    # whole heap ever more often as thousands of open streams grow it: at 3,000 paced streams
    # that cost 40% of a core and stalls of seconds (bench/README.md). [] keeps CPython's.
    gc_thresholds: list[int] = msgspec.field(default_factory=lambda: [50_000, 20, 100])


class StoreConfig(Struct, forbid_unknown_fields=True):
    backend: str = "memory"  # "memory" | "sqlite" | "postgres"
    path: str = "respline.db"  # a relative path is inside server.state_dir
    dsn: str = ""  # postgres: a libpq URL or key=value string, or "$ENV_VAR"
    pool_size: int = 8  # postgres: connections per process for the hot statements, and as many (with worker threads) for the rest
    ttl_seconds: int = 30 * 24 * 3600  # 0 keeps entries until evicted by count
    max_responses: int = 100_000  # 0 = unbounded
    max_conversations: int = 100_000
    sweep_interval: float = 60.0  # seconds between expiry sweeps
    # A response being produced (background run, store: true stream) is held under a lease its
    # server process renews every lease_renew_seconds; one that ran out (its process died) is
    # ended as failed by whichever process notices (engine/store.py).
    lease_seconds: float = 30.0
    lease_renew_seconds: float = 10.0


class ProviderConfig(Struct, tag_field="kind", forbid_unknown_fields=True):
    """What every provider kind's config has. Each kind's own Struct (in its package, e.g.
    adapters/providers/openai_chat/config.py) subclasses this with ``tag=<kind>``: the providers
    table is a tagged union on ``kind`` (engine/registry.py lists the kinds), so a key one kind
    does not take is an error naming that key, not silently ignored."""

    # a kind that needs no upstream (the demo) says False
    needs_base_url: ClassVar[bool] = True

    base_url: str = ""
    api_key: str | None = None  # "$ENV_VAR" reads the environment
    headers: dict[str, str] = {}
    timeouts: Timeouts | None = None
    path: str | None = None  # the endpoint under base_url; default by kind (/chat/completions, ...)
    # How the upstream is reached (README: "Connecting to an upstream"; checked by
    # ``check_connection``). "fast": respline's own HTTP/1.1 pool (adapters/transport.py);
    # "httpx": httpx's transport, for what the fast one does not do (a proxy, HTTP/2).
    transport: str = "fast"
    http2: bool = False  # httpx: HTTP/2 (ALPN on https, prior knowledge on http)
    proxy: str | None = None  # httpx: every request through this proxy ("http://HOST:PORT", "$VAR")
    trust_env: bool = False  # httpx: HTTPS_PROXY / HTTP_PROXY / ALL_PROXY / NO_PROXY from the environment
    ca_bundle: str | None = None  # https: trust the CAs in this PEM file instead of the system's
    client_cert: str | None = None  # https: present this PEM certificate (chain; may hold the key too)
    client_key: str | None = None  # its private key (PEM, unencrypted) when client_cert does not hold it

    @property
    def kind(self) -> str:
        return self.__struct_config__.tag

    def check(self, where: str, name: str) -> None:
        """A kind's own checks of its values (the common ones are in ``check`` below)."""


class Fallback(Struct, forbid_unknown_fields=True):
    provider: str
    upstream_model: str | None = None  # default: the route's upstream model


class RouteConfig(Struct, forbid_unknown_fields=True):
    model: str  # exact name or glob ("deepseek-*", "*")
    provider: str
    upstream_model: str | None = None  # default: the requested name
    # tried in order when the provider before fails before any byte reached the client
    # (connect error, timeout, 429, 5xx): a provider name, or {provider, upstream_model}
    fallbacks: list[str | Fallback] = []
    models: list[str] = []  # a glob route: the names GET /v1/models lists for it
    # hosted tools (web_search, ...) on a Chat or Anthropic upstream, which cannot run them:
    # "drop" leaves them out of the request and the echoed Response, "reject" answers 400
    hosted_tools: str = "drop"
    context_window: int | None = None  # tokens; what truncation: "auto" trims the context to


class MetricsConfig(Struct, forbid_unknown_fields=True):
    enabled: bool = True  # GET /metrics in the Prometheus text format
    address: str = ""  # "HOST:PORT": serve /metrics there instead of on the main port
    key: str | None = None  # "$ENV" or literal: /metrics answers only "Authorization: Bearer KEY"


class Config(Struct, forbid_unknown_fields=True):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    timeouts: Timeouts = msgspec.field(default_factory=Timeouts)
    limits: Limits = msgspec.field(default_factory=Limits)
    store: StoreConfig = msgspec.field(default_factory=StoreConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    providers: dict[str, ProviderConfig] = {}
    routes: list[RouteConfig] = []
    tenants: dict[str, list[str]] = {}  # tenant name -> its client keys (a lone key is its own tenant)


def expand_env(value: str | None, where: str) -> str | None:
    """``$NAME`` reads the environment; a missing variable is a config error, not an empty key."""
    if value is None or not value.startswith("$"):
        return value
    name = value[1:].strip("{}")
    if name not in os.environ:
        raise ConfigError(f"{where}: environment variable {name} is not set")
    return os.environ[name]


def load(path: str | os.PathLike[str]) -> Config:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        data = msgspec.toml.decode(raw)
    except msgspec.DecodeError as exc:
        raise ConfigError(f"config {path}: not valid TOML: {exc}") from None
    providers = data.pop("providers", {})
    try:
        cfg = msgspec.convert(data, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"config {path}: {exc}") from None
    if not isinstance(providers, dict):
        raise ConfigError(f"config {path}: Expected `object`, got `{type(providers).__name__}` - at `$.providers`")
    cfg.providers = {name: provider_config(name, entry, f"config {path}") for name, entry in providers.items()}
    check(cfg, str(path))
    return cfg


def provider_config(name: str, entry: Any, where: str) -> ProviderConfig:
    """One ``[providers.NAME]`` table, decoded as the config Struct of its ``kind`` (default
    openai-chat): the registered kinds' Structs are one tagged union."""
    if isinstance(entry, dict):
        entry = {"kind": DEFAULT_KIND, **entry}
        kind = entry["kind"]
        if isinstance(kind, str) and kind in registry.broken():
            raise ConfigError(f"{where}: providers.{name}.kind: the provider kind {kind!r} is installed but failed to load: {registry.broken()[kind]}")
        if isinstance(kind, str) and kind not in registry.kinds():
            raise ConfigError(f"{where}: providers.{name}.kind: {kind!r} is not one of {', '.join(registry.names())}")
    configs = tuple(k.config for k in registry.kinds().values())
    try:
        return msgspec.convert(entry, Union[configs])  # type: ignore[valid-type]
    except msgspec.ValidationError as exc:
        message = str(exc)
        # msgspec names no path for a fault at the table itself (an unknown key)
        at = message.replace("`$", f"`$.providers.{name}", 1) if "`$" in message else f"{message} - at `$.providers.{name}`"
        raise ConfigError(f"{where}: {at}") from None


def check(cfg: Config, where: str = "config") -> None:
    if cfg.server.reasoning_dialect not in REASONING_DIALECTS:
        raise ConfigError(
            f"{where}: server.reasoning_dialect must be one of {', '.join(REASONING_DIALECTS)}"
        )
    if cfg.server.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"{where}: server.log_level must be one of debug, info, warning, error")
    if cfg.server.log_format not in ("", "json", "text"):
        raise ConfigError(f"{where}: server.log_format must be \"json\" or \"text\"")
    addr = cfg.metrics.address
    if addr and (":" not in addr or not addr.rsplit(":", 1)[1].isdigit()):
        raise ConfigError(f"{where}: metrics.address must be HOST:PORT, got {addr!r}")
    gct = cfg.server.gc_thresholds
    if gct and (len(gct) != 3 or any(v < 0 for v in gct)):
        raise ConfigError(f"{where}: server.gc_thresholds must be [] or three integers >= 0 (gen0, gen1, gen2)")
    for name, t in [("timeouts", cfg.timeouts)] + [(f"providers.{n}.timeouts", p.timeouts) for n, p in cfg.providers.items()]:
        if t is not None and t.pool_idle < 0:
            raise ConfigError(f"{where}: {name}.pool_idle must be >= 0")
    if cfg.store.backend not in ("memory", "sqlite", "postgres"):
        raise ConfigError(f"{where}: store.backend must be 'memory', 'sqlite' or 'postgres'")
    if cfg.store.backend == "postgres" and not cfg.store.dsn:
        raise ConfigError(f"{where}: store.dsn is required with backend 'postgres' (e.g. \"$RESPLINE_PG_DSN\")")
    if cfg.store.pool_size < 1:
        raise ConfigError(f"{where}: store.pool_size must be at least 1")
    if cfg.store.ttl_seconds < 0 or cfg.store.max_responses < 0 or cfg.store.max_conversations < 0:
        raise ConfigError(f"{where}: store.ttl_seconds, max_responses and max_conversations must be >= 0")
    if cfg.timeouts.client_body <= 0:
        raise ConfigError(f"{where}: timeouts.client_body must be > 0")
    if cfg.store.sweep_interval <= 0:
        raise ConfigError(f"{where}: store.sweep_interval must be > 0")
    if not 0 < cfg.store.lease_renew_seconds < cfg.store.lease_seconds:
        raise ConfigError(f"{where}: store.lease_renew_seconds must be > 0 and below store.lease_seconds")
    if cfg.server.shutdown_grace < 0:
        raise ConfigError(f"{where}: server.shutdown_grace must be >= 0")
    for name, t in [("timeouts", cfg.timeouts)] + [(f"providers.{n}.timeouts", p.timeouts) for n, p in cfg.providers.items()]:
        if t is not None and min(t.connect, t.first_byte, t.idle, t.total, t.client_write) <= 0:
            raise ConfigError(f"{where}: {name}: every timeout must be > 0 seconds")
    seen: dict[str, str] = {}
    for tname, keys in cfg.tenants.items():
        for key in keys:
            if key in seen:
                raise ConfigError(f"{where}: tenants.{tname}: a key is listed for both {seen[key]} and {tname}")
            seen[key] = tname
    for name, p in cfg.providers.items():
        if p.needs_base_url and not p.base_url:
            raise ConfigError(f"{where}: providers.{name}.base_url is required")
        check_connection(p, where, name)
        p.check(where, name)
    for i, r in enumerate(cfg.routes):
        if r.provider not in cfg.providers:
            raise ConfigError(f"{where}: routes[{i}].provider: no provider named {r.provider!r}")
        for name in r.models:
            if not fnmatch.fnmatchcase(name, r.model):
                raise ConfigError(f"{where}: routes[{i}].models: {name!r} does not match {r.model!r}")
        if r.hosted_tools not in HOSTED_TOOL_POLICIES:
            raise ConfigError(f"{where}: routes[{i}].hosted_tools must be one of {', '.join(HOSTED_TOOL_POLICIES)}")
        if r.context_window is not None and r.context_window < 1:
            raise ConfigError(f"{where}: routes[{i}].context_window must be at least 1")
        for j, fb in enumerate(r.fallbacks):
            fname = fb if isinstance(fb, str) else fb.provider
            if fname not in cfg.providers:
                raise ConfigError(f"{where}: routes[{i}].fallbacks[{j}]: no provider named {fname!r}")


TRANSPORTS = ("fast", "httpx")
# the connection keys and their defaults: a kind with no upstream takes none of them
CONNECTION_KEYS = {
    "transport": "fast", "http2": False, "proxy": None, "trust_env": False,
    "ca_bundle": None, "client_cert": None, "client_key": None,
}
# what only the httpx transport does, and why the fast one cannot
_HTTPX_ONLY = {
    "http2": "speaks HTTP/1.1 only",
    "proxy": "connects to the upstream directly",
    "trust_env": "connects to the upstream directly",
}


def check_connection(p: ProviderConfig, where: str, name: str) -> None:
    """A provider's connection keys, checked together at load: a combination that cannot work is
    an error naming the key, and the TLS files are read now (``tls_context``), not at the first
    request."""
    at = f"{where}: providers.{name}"
    if p.transport not in TRANSPORTS:
        raise ConfigError(f'{at}.transport must be "fast" or "httpx", got {p.transport!r}')
    if not p.needs_base_url:
        for key, default in CONNECTION_KEYS.items():
            if getattr(p, key) != default:
                raise ConfigError(f"{at}.{key}: kind {p.kind!r} makes no upstream connection")
        return
    for key, why in _HTTPX_ONLY.items():
        if getattr(p, key) and p.transport != "httpx":
            raise ConfigError(f'{at}.{key} needs transport = "httpx" (the fast transport {why})')
    scheme = urllib.parse.urlsplit(p.base_url).scheme.lower()
    if p.proxy is not None:
        if p.trust_env:
            raise ConfigError(f"{at}: proxy and trust_env = true both name a proxy; keep one")
        proxy_url(expand_env(p.proxy, f"providers.{name}.proxy") or "", f"{at}.proxy")
        if p.http2 and scheme == "http":
            raise ConfigError(f"{at}.http2: HTTP/2 over http:// (prior knowledge) does not go through a proxy")
    if p.http2 and importlib.util.find_spec("h2") is None:
        raise ConfigError(f"{at}.http2 needs the h2 package: pip install 'respline[http2]'")
    if p.client_key is not None and p.client_cert is None:
        raise ConfigError(f"{at}.client_key goes with client_cert (the certificate it is the key of)")
    if (p.ca_bundle is not None or p.client_cert is not None) and scheme != "https":
        key = "ca_bundle" if p.ca_bundle is not None else "client_cert"
        raise ConfigError(f"{at}.{key}: base_url {p.base_url!r} is not https://; the TLS keys need an https upstream")
    tls_context(p, where, name)


def tls_context(p: ProviderConfig, where: str, name: str) -> ssl.SSLContext | None:
    """The provider's TLS settings as one context, which either transport takes: the system's
    trust store (or ``ca_bundle`` instead), and the client certificate if one is configured;
    None when it configures neither (the system's defaults). A file that cannot be read, or is
    not what its key says, is a config error naming the key."""
    if p.ca_bundle is None and p.client_cert is None:
        return None
    at = f"{where}: providers.{name}"
    for key in ("ca_bundle", "client_cert", "client_key"):
        path = getattr(p, key)
        try:
            if path is not None:
                Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"{at}.{key}: cannot read {path}: {exc.strerror or exc}") from None
    try:
        ctx = ssl.create_default_context(cafile=p.ca_bundle)
    except ssl.SSLError as exc:
        raise ConfigError(f"{at}.ca_bundle: {p.ca_bundle} is not a PEM bundle of CA certificates ({exc.reason or exc})") from None
    if p.client_cert is not None:

        def encrypted() -> bytes:  # never OpenSSL's prompt on the terminal: a server has no one there
            raise ConfigError(f"{at}.client_key: the private key is encrypted; respline takes an unencrypted PEM key")

        try:
            ctx.load_cert_chain(p.client_cert, p.client_key, password=encrypted)
        except ssl.SSLError as exc:
            key = f"the private key in {p.client_key}" if p.client_key else "a private key in the same file (or client_key)"
            raise ConfigError(f"{at}.client_cert: {p.client_cert} and {key} are not a PEM certificate and its key ({exc.reason or exc})") from None
    return ctx


def proxy_url(value: str, at: str) -> str:
    """A proxy's URL, checked: http:// or https:// with a host (a bare HOST:PORT is taken as
    http://, as curl does)."""
    url = value if "://" in value else f"http://{value}"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{at}: {_without_password(value)!r} is not an http:// or https:// proxy URL")
    return url


def _without_password(url: str) -> str:
    parts = urllib.parse.urlsplit(url if "://" in url else f"//{url}")
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


class Route(Struct, frozen=True):
    provider: str
    upstream_model: str
    fallbacks: tuple[tuple[str, str], ...] = ()  # (provider, upstream model), in order
    pattern: str = ""  # the route's `model` as configured: the metrics' model label
    hosted_tools: str = "drop"
    context_window: int | None = None

    @property
    def attempts(self) -> tuple[tuple[str, str], ...]:
        return ((self.provider, self.upstream_model), *self.fallbacks)


_KNOWN_MODELS = 1024


class Router:
    """Exact names win over globs; among globs the first declared wins."""

    def __init__(self, routes: list[RouteConfig]) -> None:
        self._exact = {r.model: r for r in routes if not _is_glob(r.model)}
        self._globs = [r for r in routes if _is_glob(r.model)]
        # model name -> its Route (frozen, the same for every tenant): a request's route is
        # found once per name, not built again; cleared when full (clients choose the names)
        self._known: dict[str, Route | None] = {}

    def resolve(self, model: str) -> Route | None:
        try:
            return self._known[model]
        except KeyError:
            pass
        route = self._resolve(model)
        if len(self._known) >= _KNOWN_MODELS:
            self._known.clear()
        self._known[model] = route
        return route

    def _resolve(self, model: str) -> Route | None:
        r = self._exact.get(model)
        if r is None:
            for g in self._globs:
                if fnmatch.fnmatchcase(model, g.model):
                    r = g
                    break
        if r is None:
            return None
        upstream = r.upstream_model or model
        fallbacks = tuple(
            (fb, upstream) if isinstance(fb, str) else (fb.provider, fb.upstream_model or upstream)
            for fb in r.fallbacks
        )
        return Route(r.provider, upstream, fallbacks, r.model, r.hosted_tools, r.context_window)

    def models(self) -> list[str]:
        return list(self._exact) + [g.model for g in self._globs]

    def listed(self, routes: list[RouteConfig]) -> list[tuple[str, str]]:
        """What ``GET /v1/models`` lists, with the provider that serves each: exact routes by
        name; a glob route by the names in its ``models`` when it has them, else by the pattern
        itself (the models behind a glob cannot be known without asking the upstream); the
        catch-all ``*`` is not listed. Each id once, in declaration order."""
        out: dict[str, str] = {}
        for r in routes:
            if not _is_glob(r.model):
                names = [r.model]
            elif r.models:
                names = r.models
            elif r.model != "*":
                out.setdefault(r.model, r.provider)
                continue
            else:
                continue
            for name in names:
                route = self.resolve(name)  # the provider that really serves it (exact wins)
                out.setdefault(name, route.provider if route is not None else r.provider)
        return list(out.items())


def _is_glob(name: str) -> bool:
    return any(c in name for c in "*?[")
