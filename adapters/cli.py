"""``respline serve | replay``: the composition root that wires adapters to the engine."""

from __future__ import annotations

import argparse
import functools
import gc
import logging
import os
import signal
import socket
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from respline.adapters.background import Runs
from respline.adapters.config import (
    Config,
    ConfigError,
    RouteConfig,
    Router,
    check,
    expand_env,
    load,
)
from respline.adapters import cassette, logs
from respline.adapters import tracing
from respline.adapters.exchange import Telemetry
from respline.adapters.frontends.observed import metrics_only
from respline.adapters.metrics import MULTIPROC_ENV, Metrics, TimedStore, mark_worker_dead
from respline.adapters.frontends.auth import Auth
from respline.adapters.frontends.http import build_app
from respline.adapters.gateway import Gateway
from respline.adapters.secret import load_secret
from respline.adapters.providers.common import build_provider
from respline.adapters.providers.replay_cassette import player as cassette_replay
from respline.adapters.state import private_file, resolve
from respline.adapters.watch import SHUTDOWN
from respline.engine.ids import Clock, Ids, deterministic
from respline.engine import registry
from respline.engine.replay import load_recording, replay
from respline.engine.seal import Sealer
from respline.engine.store import Retention
from respline.engine.stages.reasoning_dialect import REASONING_DIALECTS

log = logging.getLogger("respline")


# --- serve ---------------------------------------------------------------------------------


def build_config(args: argparse.Namespace) -> Config:
    cfg = load(args.config) if args.config else Config()
    if args.host is not None:
        cfg.server.host = args.host
    if args.port is not None:
        cfg.server.port = args.port
    if args.api_key:
        cfg.server.api_keys = list(cfg.server.api_keys) + list(args.api_key)
    if args.record:
        cfg.server.record_dir = args.record
    if args.replay:  # the cassette's providers (each replayed) and routes
        if args.upstream or cfg.server.record_dir:
            raise ConfigError("--replay serves a cassette: it does not go with --upstream or --record")
        cassette_replay.configure(cfg, args.replay, args.replay_pace, args.replay_strict)
    elif args.replay_strict or args.replay_pace != "fast":
        raise ConfigError("--replay-pace and --replay-strict go with --replay DIR")
    if args.reasoning_dialect:
        cfg.server.reasoning_dialect = args.reasoning_dialect
    if args.secret_file:  # a path on the command line is relative to the current directory
        cfg.server.secret_file = os.path.abspath(args.secret_file)
    if args.log_format:
        cfg.server.log_format = args.log_format
    if args.shutdown_grace is not None:
        cfg.server.shutdown_grace = args.shutdown_grace
    if args.store:
        if args.store == "memory":
            cfg.store.backend = "memory"
        elif args.store.startswith("sqlite:") and len(args.store) > 7:
            cfg.store.backend = "sqlite"
            cfg.store.path = os.path.abspath(args.store[7:])
        elif args.store.startswith(("postgresql://", "postgres://")):
            cfg.store.backend = "postgres"
            cfg.store.dsn = args.store
        else:
            raise ConfigError("--store must be 'memory', 'sqlite:PATH' or 'postgresql://...'")
    if args.upstream:
        key = None
        if args.upstream_key_env:
            key = "$" + args.upstream_key_env
        cfg.providers = dict(cfg.providers)
        cfg.providers["upstream"] = registry.get(args.upstream_kind).config(base_url=args.upstream, api_key=key)
        # every model is routed there as-is; routes from a config file still win where exact
        cfg.routes = list(cfg.routes) + [RouteConfig(model="*", provider="upstream")]
    if not cfg.providers:
        # Nothing configured: the built-in demo model answers from the project's own fixtures.
        demo = registry.get("demo")
        cfg.providers = {"demo": demo.config()}
        cfg.routes = [*(RouteConfig(model=m, provider="demo") for m in demo.models), RouteConfig(model="*", provider="demo")]
    check(cfg, args.config or "command line")
    resolve(cfg, args.state_dir)
    return cfg


def build_store(cfg: Config):
    retention = Retention(
        ttl=cfg.store.ttl_seconds,
        max_responses=cfg.store.max_responses,
        max_conversations=cfg.store.max_conversations,
    )
    if cfg.store.backend == "sqlite":
        from respline.adapters.stores.sqlite import SqliteStore

        try:
            private_file(Path(cfg.store.path))  # owner-only, and so its -wal and -shm
            return SqliteStore(cfg.store.path, retention)
        except Exception as exc:  # noqa: BLE001 - any failure to open the file is a start-up error
            raise ConfigError(f"store: cannot open SQLite database {cfg.store.path}: {exc}") from None
    if cfg.store.backend == "postgres":
        return build_postgres_store(cfg, retention)
    from respline.adapters.stores.memory import MemoryStore

    return MemoryStore(retention)


def build_postgres_store(cfg: Config, retention: Retention):
    """psycopg is imported only here: the other backends do not need it installed."""
    try:
        from respline.adapters.stores.postgres import PostgresStore, describe
    except ImportError as exc:
        if (exc.name or "").startswith("psycopg"):
            raise ConfigError(
                "store: the postgres backend needs psycopg 3 and psycopg-pool: pip install 'respline[postgres]'"
            ) from None
        raise
    dsn = expand_env(cfg.store.dsn, "store.dsn") or ""
    try:
        return PostgresStore(dsn, retention, pool_size=cfg.store.pool_size)
    except Exception as exc:  # noqa: BLE001 - any failure to reach or migrate the database is a start-up error
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise ConfigError(f"store: cannot use PostgreSQL at {describe(dsn)}: {reason}") from None


def build_auth(cfg: Config) -> Auth:
    """Each configured key belongs to its tenant; a key listed alone is its own tenant."""
    tenants = {key: name for name, keys in cfg.tenants.items() for key in keys}
    keys = list(dict.fromkeys([*cfg.server.api_keys, *tenants]))
    return Auth(keys, {k: "tenant:" + n for k, n in tenants.items()})


def build_providers(cfg: Config) -> tuple[dict[str, Any], list[httpx.AsyncClient]]:
    """One provider (and its client) per configured provider, built as its kind says
    (engine/registry.py)."""
    providers: dict[str, Any] = {}
    clients: list[httpx.AsyncClient] = []
    # --record: every provider's transport is teed into one cassette (adapters/cassette.py)
    recorder = cassette.Recorder(cfg, cfg.server.record_dir) if cfg.server.record_dir else None
    shared: dict[str, Any] = {}  # what a kind's build keeps across this server's providers
    for name, p in cfg.providers.items():
        kind = registry.get(p.kind)
        wrap = recorder.wrapper(name, p.kind) if recorder is not None else None
        provider, client = (kind.build or build_provider)(kind, name, p, cfg, wrap=wrap, shared=shared)
        providers[name] = provider
        clients.append(client)
    return providers, clients


def build_gateway(cfg: Config) -> tuple[Gateway, list[httpx.AsyncClient]]:
    providers, clients = build_providers(cfg)
    # replay mode: seeded ids, a fixed clock, derived sealing nonces (adapters/providers/replay_cassette/)
    fixed = cassette_replay.determinism(cfg)
    ids, clock, sealer = fixed or (Ids(), Clock(), Sealer(load_secret(cfg)))
    gateway = Gateway(cfg, providers, Router(cfg.routes), build_store(cfg), sealer, ids, clock)
    return gateway, clients


# The listening socket's queue of connections not yet accepted (the kernel caps it at
# net.core.somaxconn). hypercorn's default of 100 overflows when a fleet connects at once: in one
# run of 1,000 simultaneous connections the kernel dropped 740 handshakes, and those clients waited
# for SYN retransmits (1 s, then 3 s) before their first byte (bench/README.md, session 4).
LISTEN_BACKLOG = 4096


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, made before anything else starts, so that a busy, forbidden or
    invalid address is one line and exit code 2 (a ConfigError), and ``--port 0`` can be logged
    as the port the kernel chose. hypercorn (or each --workers process) then serves it."""
    where = f"cannot listen on {host}:{port}"
    if not 0 <= port <= 65535:
        raise ConfigError(f"{where}: the port must be 0-65535")
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(f"{where}: {getattr(exc, 'strerror', None) or exc}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart over TIME_WAIT
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as hypercorn sets on its own
        sock.bind(addr)
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"{where}: {exc.strerror or exc}") from None
    return sock


def hyper_config(cfg: Config, listen_fd: int | None = None):
    """hypercorn's settings for ``respline serve``."""
    from hypercorn.config import Config as HyperConfig

    hc = HyperConfig()
    # the socket cmd_serve bound (or, in a --workers process, its supervisor)
    hc.bind = [f"fd://{listen_fd}"] if listen_fd is not None else [f"{cfg.server.host}:{cfg.server.port}"]
    hc.backlog = LISTEN_BACKLOG
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.keep_alive_timeout = 75
    hc.graceful_timeout = cfg.server.shutdown_grace  # in-flight requests (and idle keep-alives) get this long
    return hc


# At shutdown, streams still writing their last events this long after the cut have their
# clients dropped; hypercorn cancels whatever else still runs a little later (its
# graceful_timeout), so the process exits within shutdown_grace plus about CUT_MARGIN seconds.
CLOSE_STUCK_AFTER = 1.0
CUT_MARGIN = 1.5


def build_telemetry(cfg: Config, gateway: Gateway, tracer: tracing.Tracer | None = None) -> Telemetry:
    """Metrics (unless switched off, with the store's latency), traces where OpenTelemetry is
    set up, the access log: handed to the gateway, which every front end reaches."""
    metrics = Metrics() if cfg.metrics.enabled else None
    if metrics is not None:
        gateway.store = TimedStore(gateway.store, metrics, cfg.store.backend)
    tracer = tracer or tracing.from_environment()
    gateway.telemetry = Telemetry(metrics, tracer, access_log=cfg.server.access_log)
    return gateway.telemetry


def started_fields(cfg: Config) -> dict[str, Any]:
    """What the start-up line says besides the address: providers, store, metrics."""
    return {
        "host": cfg.server.host,
        "port": cfg.server.port,
        "providers": [f"{name}:{p.kind}" for name, p in cfg.providers.items()],
        "store": cfg.store.backend,
        "metrics": (cfg.metrics.address or "/metrics") if cfg.metrics.enabled else "off",
    }


async def serve(
    cfg: Config,
    gateway: Gateway,
    clients: list[httpx.AsyncClient],
    listen_fd: int | None = None,
    metrics_fd: int | None = None,
    *,
    tracer: tracing.Tracer | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT, then drain: stop accepting, give streams, WebSocket turns and
    background runs ``shutdown_grace`` seconds, cut what still runs (each ends with ``error`` +
    ``response.failed`` and is stored as it stands), close WebSockets with 1001 as their turns
    end, and exit. The grace period runs once, for hypercorn's requests and the runs together."""
    from hypercorn.trio import serve as hyper_serve

    closing = trio.Event()
    telemetry = build_telemetry(cfg, gateway, tracer)
    metrics_apart = cfg.metrics.enabled and bool(cfg.metrics.address)
    metrics_key = expand_env(cfg.metrics.key, "metrics.key") if cfg.metrics.key else None
    app = build_app(gateway, build_auth(cfg), closing, metrics_here=cfg.metrics.enabled and not metrics_apart, metrics_key=metrics_key)
    runs = Runs(gateway)
    watch = gateway.watch
    grace = cfg.server.shutdown_grace
    hc = hyper_config(cfg, listen_fd)
    hc.graceful_timeout = grace + CUT_MARGIN  # a backstop: respline ends its own streams at `grace`
    shutdown = trio.Event()

    async def on_signals() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                shutdown.set()
                return

    async def sweeper() -> None:
        while True:
            await trio.sleep(cfg.store.sweep_interval)
            try:
                removed = await gateway.store.sweep(int(time.time()))
            except Exception:  # noqa: BLE001 - a failed sweep is retried next interval
                log.exception("store sweep failed")
                continue
            if removed:
                log.info("expired %d stored objects", removed)

    async def leases() -> None:
        """Renew this process's leases; end the responses of processes that died (at start too)."""
        while True:
            try:
                await gateway.renew_leases()
                ended = await gateway.reap()
            except Exception:  # noqa: BLE001 - retried next interval
                log.exception("lease renewal failed")
            else:
                if ended:
                    log.info("ended %d responses left by a server process that stopped", ended)
            await trio.sleep(cfg.store.lease_renew_seconds)

    async def drain() -> None:
        await shutdown.wait()
        in_flight = set(watch.active)
        log.info(
            "shutting down: %d responses in flight get %gs to finish", len(in_flight), grace,
            extra={"fields": {"in_flight": len(in_flight), "grace_s": grace}},
        )
        closing.set()  # WebSockets close with 1001 between turns
        await trio.sleep(grace)
        drained, cut = len(in_flight - watch.active), len(watch.active)
        log.info(
            "shutdown: %d responses finished in the grace period, %d ended now (error + response.failed, stored as they stand)",
            drained, cut,
            extra={"fields": {"drained": drained, "cut": cut}},
        )
        watch.cut_all(SHUTDOWN)
        await trio.sleep(CLOSE_STUCK_AFTER)
        watch.close_stuck()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(on_signals)
            nursery.start_soon(sweeper)
            nursery.start_soon(watch.run)
            nursery.start_soon(leases)
            nursery.start_soon(drain)
            await nursery.start(runs.serve)
            if metrics_apart:
                mc = hyper_config(cfg, metrics_fd)
                if metrics_fd is None:
                    mc.bind = [cfg.metrics.address]
                mc.graceful_timeout = 1
                nursery.start_soon(functools.partial(hyper_serve, metrics_only(telemetry, metrics_key), mc, shutdown_trigger=shutdown.wait))
            log.info(
                "respline listening on http://%s:%d",
                cfg.server.host,
                cfg.server.port,
                extra={"fields": started_fields(cfg)},
            )
            await hyper_serve(app, hc, shutdown_trigger=shutdown.wait)
            await runs.wait_all()
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            for c in clients:
                await c.aclose()
            await gateway.store.aclose()


def cmd_serve(args: argparse.Namespace) -> int:
    sock: socket.socket | None = None
    try:
        cfg = build_config(args)
        if args.workers < 1:
            raise ConfigError("--workers must be at least 1")
        if args.workers > 1 and cfg.store.backend not in ("sqlite", "postgres"):
            raise ConfigError("--workers > 1 needs a store the workers share: use --store sqlite:PATH or postgresql://...")
        if args.workers > 1 and (cfg.server.record_dir or cassette_replay.in_use(cfg)):
            raise ConfigError("recording and replaying a cassette run in one process: drop --workers")
        if args.listen_fd is None:
            sock = bind(cfg.server.host, cfg.server.port)
            listen_fd = sock.fileno()
        else:  # a --workers process: its supervisor bound the socket
            listen_fd = args.listen_fd
            sock = socket.socket(fileno=listen_fd)
        cfg.server.port = sock.getsockname()[1]  # --port 0: the one the kernel chose, logged
        setup_logging(cfg)
        if args.workers > 1:
            load_secret(cfg)  # created once here, so every worker seals with the same secret
            return supervise(args, cfg, sock)
        metrics_fd = args.metrics_fd
        if metrics_fd is None and cfg.metrics.enabled and cfg.metrics.address:
            host, port = cfg.metrics.address.rsplit(":", 1)
            metrics_sock = bind(host.strip("[]"), int(port))  # a busy address fails here too
            metrics_fd = metrics_sock.detach()
        gateway, clients = build_gateway(cfg)  # env keys, secret, store: fail here, not mid-serve
    except ConfigError as exc:
        if sock is not None:
            sock.close()
        print(f"respline: {exc}", file=sys.stderr)
        return 2
    sock.detach()  # hypercorn's own socket object owns the descriptor from here
    tune_gc(cfg.server.gc_thresholds)
    trio.run(serve, cfg, gateway, clients, listen_fd, metrics_fd)
    return cassette_replay.verdict(gateway.providers)  # 3: a strict replay left exchanges over


def setup_logging(cfg: Config) -> None:
    logs.setup(cfg.server.log_level, cfg.server.log_format or None)


def tune_gc(thresholds: list[int]) -> None:
    """Everything alive now (modules, config, the app) lives as long as the process: freeze it
    out of the collector's scans, then collect young garbage less often (server.gc_thresholds)."""
    gc.collect()
    gc.freeze()
    if thresholds:
        gc.set_threshold(*thresholds)


def supervise(args: argparse.Namespace, cfg: Config, sock: socket.socket) -> int:
    """``--workers N``: run N worker processes on the socket bound once, stop them together.

    Each worker is a whole respline (its own trio loop, upstream pools and background runs);
    the kernel spreads accepted connections across them and the SQLite file is their shared
    state. A signal to the supervisor is passed on to every worker.
    """
    log.info("respline supervising %d workers on http://%s:%d", args.workers, cfg.server.host, cfg.server.port)
    sock.set_inheritable(True)
    fd = sock.fileno()
    argv = [a for a in sys.argv[1:]]
    i = argv.index("--workers") if "--workers" in argv else -1
    if i >= 0:
        del argv[i : i + 2]
    argv = [a for a in argv if not a.startswith("--workers=")]
    argv += ["--listen-fd", str(fd)]
    fds = [fd]
    metrics_sock = None
    if cfg.metrics.enabled and cfg.metrics.address:  # bound once here too, served by every worker
        host, port = cfg.metrics.address.rsplit(":", 1)
        metrics_sock = bind(host.strip("[]"), int(port))
        metrics_sock.set_inheritable(True)
        argv += ["--metrics-fd", str(metrics_sock.fileno())]
        fds.append(metrics_sock.fileno())
    # the workers' metrics go to files in one directory, so any worker's /metrics reports the sum
    made_dir = None
    if not os.environ.get(MULTIPROC_ENV):
        made_dir = tempfile.mkdtemp(prefix="respline-metrics-")
        os.environ[MULTIPROC_ENV] = made_dir
    workers = [
        subprocess.Popen([sys.executable, "-m", "respline.adapters.cli", *argv], pass_fds=fds)
        for _ in range(args.workers)
    ]
    sock.close()
    if metrics_sock is not None:
        metrics_sock.close()

    def forward(signum, _frame) -> None:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [w.wait() for w in workers]
    for w in workers:
        mark_worker_dead(w.pid)
    if made_dir is not None:
        shutil.rmtree(made_dir, ignore_errors=True)
    return max(codes) if codes else 0


# --- replay --------------------------------------------------------------------------------


def cmd_replay(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        data = load_recording(path.name, path.read_bytes())
    except OSError as exc:
        print(f"respline: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 2
    if args.deterministic:
        ids, clock = deterministic(args.seed)
    else:
        ids, clock = Ids(), Clock()
    frames = replay(
        [data],
        ids=ids,
        clock=clock,
        model=args.model,
        reasoning_dialect=args.reasoning_dialect,
        think_tags=args.think_tags,
        kind=args.kind,
    )
    out = sys.stdout.buffer
    for f in frames:
        out.write(f)
    out.flush()
    return 0


# --- entry point ---------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="respline", description="A Responses API gateway.")
    p.add_argument("--version", action="version", version=f"respline {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the gateway")
    s.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=None, help="port (default 8080)")
    s.add_argument("--config", default=None, metavar="FILE", help="TOML config file")
    s.add_argument("--upstream", default=None, metavar="URL", help="base URL ending in /v1; every model is routed there")
    s.add_argument(
        "--upstream-kind",
        default="openai-chat",
        choices=registry.names(upstream=True),
        help="upstream protocol: Chat Completions, Anthropic Messages, or the Responses API passed through",
    )
    s.add_argument("--upstream-key-env", default=None, metavar="VAR", help="env var holding the upstream key")
    s.add_argument("--store", default=None, metavar="memory|sqlite:PATH|postgresql://...", help="where responses are stored")
    s.add_argument("--api-key", action="append", default=[], metavar="KEY", help="accepted client key (repeatable)")
    s.add_argument("--record", default=None, metavar="DIR", help="record every upstream exchange into a cassette directory")
    s.add_argument("--replay", default=None, metavar="DIR", help="answer upstream requests from a recorded cassette (no upstream)")
    s.add_argument("--replay-pace", default="fast", choices=cassette_replay.PACES, help="replay streams at once (fast) or as recorded")
    s.add_argument("--replay-strict", action="store_true", help="exit 3 at shutdown if an exchange was never requested or requested twice")
    s.add_argument("--reasoning-dialect", default=None, choices=REASONING_DIALECTS, help="reasoning event names")
    s.add_argument("--log-format", default=None, choices=("json", "text"), help="log lines as JSON objects or text (default: json unless stderr is a terminal)")
    s.add_argument("--state-dir", default=None, metavar="DIR", help="where respline keeps its secret and default database (owner-only)")
    s.add_argument("--secret-file", default=None, metavar="FILE", help="where the sealing secret is kept")
    s.add_argument("--shutdown-grace", type=float, default=None, metavar="SECONDS", help="time in-flight work gets at shutdown (default 10)")
    s.add_argument("--workers", type=int, default=1, metavar="N", help="worker processes (N > 1 needs a sqlite or postgres store)")
    s.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)
    s.add_argument("--metrics-fd", type=int, default=None, help=argparse.SUPPRESS)  # set by the supervisor  # set by the supervisor
    s.set_defaults(func=cmd_serve)

    r = sub.add_parser("replay", help="print the Responses SSE a recorded upstream stream becomes")
    r.add_argument("file", help="a recorded upstream stream (.sse raw bytes or .chunks.jsonl)")
    r.add_argument("--kind", default="openai-chat", choices=registry.names(upstream=True))
    r.add_argument("--deterministic", action="store_true", help="seeded ids and a fixed clock")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--model", default="replay")
    r.add_argument("--reasoning-dialect", default="openai", choices=REASONING_DIALECTS)
    r.add_argument("--think-tags", action="store_true", help="treat <think>...</think> in content as reasoning")
    r.set_defaults(func=cmd_replay)

    c = sub.add_parser("cassette", help="inspect a cassette recorded with serve --record")
    csub = c.add_subparsers(dest="action", required=True)
    show = csub.add_parser("show", help="what was recorded: turns, tools called, tokens")
    show.add_argument("dir", metavar="DIR")
    show.set_defaults(func=cassette.cmd_show)
    chk = csub.add_parser("check", help="whether it still replays, and which respline made it")
    chk.add_argument("dir", metavar="DIR")
    chk.set_defaults(func=cassette.cmd_check)
    return p


def _version() -> str:
    return cassette.respline_version()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

