"""Cassettes on disk: ``serve --record DIR`` writes one, ``serve --replay DIR`` (the ``replay``
provider kind, adapters/providers/replay_cassette/) and ``respline cassette show|check`` read it.

A cassette is one directory holding every upstream exchange of a recorded session, and what it
takes to serve them again without the upstream::

    DIR/cassette.json         what made it (respline version, format), how requests are matched
                              (engine/cassette.py ``Ignore``), the providers (kind and translation
                              settings; never keys or headers) and routes, and one entry per
                              exchange: provider, kind, URL, status, headers, how it ended
    DIR/0001/request.json     the upstream request body as sent (indented)
    DIR/0001/upstream.sse     the upstream's raw response body (``respline replay`` reads it too)
    DIR/0001/chunks.json      the body's timing: [seconds since the request, bytes] per read

Recording happens at the transport: each provider's transport is wrapped, so the request is
taken exactly as sent and the body exactly as read (each piece one read), with refusals,
connect errors and streams cut short recorded as what they were. Nothing here runs per token
unless recording.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable

import httpx
import msgspec
import trio

from respline.adapters.config import CONNECTION_KEYS, DEFAULT_KIND, Config, ConfigError, ProviderConfig, RouteConfig, provider_config
from respline.engine import registry
from respline.engine.cassette import FORMAT, VERSION, Canonical, Ignore

# response headers worth keeping: what the gateway reads (content type, an error's retry hints)
KEPT_HEADERS = ("content-type", "retry-after", "retry-after-ms", "x-should-retry")

# provider settings never written into a cassette: keys, headers that may carry them, the replay
# kind's own, and how this machine reaches the upstream (a proxy may hold credentials, the TLS
# files are its paths; a replay makes no connection)
_SECRET_FIELDS = ("api_key", "headers", "cassette", "replay_pace", "replay_strict", *CONNECTION_KEYS)


class ExchangeEntry(msgspec.Struct, forbid_unknown_fields=True):
    dir: str  # "0001": the exchange's files
    provider: str  # the recorded provider's name (cassette.json "providers")
    kind: str  # its protocol: a registered kind (openai-chat, anthropic, gemini, a plug-in's)
    url: str = ""  # where it went (no credentials)
    key: str = ""  # the request's canonical digest when recorded (recomputed when loaded)
    status: int | None = None  # None: no answer (a connect error, or cut before the head)
    headers: dict[str, str] = {}
    head_at: float = 0.0  # seconds from the request to the response head
    end: str = "eof"  # eof | cut (respline stopped reading) | error:<httpx exception class>
    bytes: int = 0


class CassetteFile(msgspec.Struct, forbid_unknown_fields=True):
    format: str
    version: int
    respline: str = ""
    recorded_at: str = ""
    reasoning_dialect: str = "openai"
    ignore: Ignore = msgspec.field(default_factory=Ignore)
    providers: dict[str, dict[str, Any]] = {}
    routes: list[dict[str, Any]] = []
    exchanges: list[ExchangeEntry] = []


_file_decoder = msgspec.json.Decoder(CassetteFile)
_chunks_decoder = msgspec.json.Decoder(list[tuple[float, int]])


def respline_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("respline")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


# --- reading ---------------------------------------------------------------------------------


class Exchange:
    """One recorded exchange, loaded: its entry, request, canonical key, body and timing."""

    __slots__ = ("n", "entry", "request", "key", "data", "chunks")

    def __init__(self, n: int, entry: ExchangeEntry, request: Any, key: str, data: bytes, chunks: list[tuple[float, int]]) -> None:
        self.n = n  # 1-based position in the session
        self.entry = entry
        self.request = request
        self.key = key
        self.data = data
        self.chunks = chunks


class Cassette:
    """A cassette directory read whole and checked: anything malformed is a ConfigError naming
    the file and what is wrong, in one line (a start-up error, exit 2)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)
        index = self.dir / "cassette.json"
        if not self.dir.is_dir():
            raise ConfigError(f"cassette {self.dir}: no such directory")
        raw = _read(index, f"cassette {self.dir}: cassette.json is missing (not a cassette directory?)")
        try:
            self.file = _file_decoder.decode(raw)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"cassette {index}: {exc}") from None
        except msgspec.DecodeError as exc:
            raise ConfigError(f"cassette {index}: not valid JSON: {exc}") from None
        f = self.file
        if f.format != FORMAT:
            raise ConfigError(f"cassette {index}: format is {f.format!r}, not {FORMAT!r}")
        if not 1 <= f.version <= VERSION:
            raise ConfigError(f"cassette {index}: format version {f.version} is not one this respline reads (1 to {VERSION})")
        try:
            self.canonical = Canonical(f.ignore)
        except Exception as exc:  # noqa: BLE001 - re.error and friends: a bad pattern
            raise ConfigError(f"cassette {index}: ignore.text: {exc}") from None
        self.providers: dict[str, ProviderConfig] = {}
        for name, settings in f.providers.items():  # each decoded as its kind's config
            self.providers[name] = provider_config(name, _own_keys(settings), f"cassette {index}")
        try:
            self.routes = [msgspec.convert(r, RouteConfig) for r in f.routes]
        except msgspec.ValidationError as exc:
            raise ConfigError(f"cassette {index}: routes: {exc}") from None
        self.exchanges = [self._exchange(i + 1, entry) for i, entry in enumerate(f.exchanges)]

    def _exchange(self, n: int, entry: ExchangeEntry) -> Exchange:
        where = self.dir / entry.dir
        if entry.provider not in self.providers:
            raise ConfigError(f"cassette {self.dir}: exchange {entry.dir}: no provider named {entry.provider!r}")
        raw = _read(where / "request.json", f"cassette {self.dir}: exchange {entry.dir}: request.json is missing")
        try:
            request = msgspec.json.decode(raw)
        except msgspec.DecodeError as exc:
            raise ConfigError(f"cassette {where / 'request.json'}: not valid JSON: {exc}") from None
        data = _read(where / "upstream.sse", f"cassette {self.dir}: exchange {entry.dir}: upstream.sse is missing")
        raw = _read(where / "chunks.json", f"cassette {self.dir}: exchange {entry.dir}: chunks.json is missing")
        try:
            chunks = _chunks_decoder.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise ConfigError(f"cassette {where / 'chunks.json'}: {exc}") from None
        if sum(size for _, size in chunks) != len(data) or any(size < 0 for _, size in chunks):
            raise ConfigError(
                f"cassette {self.dir}: exchange {entry.dir}: chunks.json lists {sum(s for _, s in chunks)} bytes, "
                f"upstream.sse holds {len(data)}"
            )
        return Exchange(n, entry, request, self.canonical.key(entry.kind, request), data, chunks)

    def provider_for(self, name: str) -> tuple[str, ProviderConfig]:
        """The recorded provider a replay provider called ``name`` plays: the one of that name,
        else the cassette's only one."""
        if name in self.providers:
            return name, self.providers[name]
        if len(self.providers) == 1:
            return next(iter(self.providers.items()))
        raise ConfigError(
            f"cassette {self.dir}: no recorded provider named {name!r} (it has {', '.join(self.providers) or 'none'})"
        )


def _read(path: Path, missing: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(missing) from None
    except OSError as exc:
        raise ConfigError(f"cassette {path}: {exc.strerror or exc}") from None


# --- recording -------------------------------------------------------------------------------


class Recorder:
    """``serve --record DIR``: one cassette for the whole session. cassette.json is written at
    start (a session with no exchange is still a cassette) and again, whole and atomically, as
    each exchange ends."""

    def __init__(self, cfg: Config, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory).absolute()
        if (self.dir / "cassette.json").exists():
            raise ConfigError(f"--record {self.dir}: it already holds a cassette; remove it or record elsewhere")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--record {self.dir}: {exc.strerror or exc}") from None
        self.file = CassetteFile(
            format=FORMAT,
            version=VERSION,
            respline=respline_version(),
            recorded_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            reasoning_dialect=cfg.server.reasoning_dialect,
            providers={name: _settings(p) for name, p in cfg.providers.items()},
            routes=[msgspec.to_builtins(r) for r in cfg.routes],
        )
        self.canonical = Canonical(self.file.ignore)
        self.count = 0
        self._write()

    def wrap(self, transport: httpx.AsyncBaseTransport, provider: str, kind: str) -> "RecordingTransport":
        return RecordingTransport(self, transport, provider, kind)

    def wrapper(self, provider: str, kind: str) -> Callable[..., httpx.AsyncBaseTransport]:
        """A kind's ``build`` gets this as ``wrap`` (engine/registry.py): ``wrap(transport)``
        records as the provider's kind, ``wrap(transport, as_kind)`` as the protocol the
        transport really speaks (the demo records as openai-chat)."""

        def wrap(transport: httpx.AsyncBaseTransport, as_kind: str = kind) -> httpx.AsyncBaseTransport:
            return self.wrap(transport, provider, as_kind)

        return wrap

    def begin(self, provider: str, kind: str, request: httpx.Request) -> "_Take":
        self.count += 1
        name = f"{self.count:04d}"
        where = self.dir / name
        where.mkdir()
        body = request.content
        try:
            body = msgspec.json.format(body, indent=2)
        except msgspec.DecodeError:
            pass  # not JSON: kept as sent (the replay will refuse to load it, saying so)
        (where / "request.json").write_bytes(body)
        url = request.url.copy_with(username=None, password=None, query=None)
        entry = ExchangeEntry(dir=name, provider=provider, kind=kind, url=str(url), end="cut")
        try:
            entry.key = self.canonical.key(kind, msgspec.json.decode(request.content))
        except msgspec.DecodeError:
            pass
        return _Take(self, entry, where)

    def done(self, entry: ExchangeEntry) -> None:
        self.file.exchanges.append(entry)
        self.file.exchanges.sort(key=lambda e: e.dir)
        self._write()

    def _write(self) -> None:
        tmp = self.dir / "cassette.json.tmp"
        tmp.write_bytes(msgspec.json.format(msgspec.json.encode(self.file), indent=2) + b"\n")
        os.replace(tmp, self.dir / "cassette.json")


def _own_keys(settings: dict[str, Any]) -> dict[str, Any]:
    """A recorded provider's settings, less keys its kind does not take: a cassette recorded
    before each kind had its own config (engine/registry.py) lists every kind's keys for every
    provider (``anthropic_version`` on an openai-chat one). An unknown kind is left whole, for
    ``provider_config`` to refuse naming it."""
    kind = registry.kinds().get(settings.get("kind", DEFAULT_KIND))
    if kind is None:
        return settings
    own = {f.encode_name for f in msgspec.structs.fields(kind.config)} | {"kind"}
    return {k: v for k, v in settings.items() if k in own}


def _settings(p: ProviderConfig) -> dict[str, Any]:
    """A provider as the cassette keeps it: how it translates, never its key or headers. The
    demo model is recorded as what it is, a Chat Completions provider."""
    out = {k: v for k, v in msgspec.to_builtins(p).items() if k not in _SECRET_FIELDS}
    if p.kind == "demo":
        out["kind"], out["base_url"] = "openai-chat", "http://demo.invalid/v1"
    parts = urllib.parse.urlsplit(out.get("base_url") or "")
    if parts.username or parts.password or parts.query or parts.fragment:
        host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
        out["base_url"] = urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))
    return out


class _Take:
    """One exchange being recorded: the body's bytes to upstream.sse, its reads' timing."""

    __slots__ = ("recorder", "entry", "where", "start", "chunks", "_f", "_closed")

    def __init__(self, recorder: Recorder, entry: ExchangeEntry, where: Path) -> None:
        self.recorder = recorder
        self.entry = entry
        self.where = where
        self.start = trio.current_time()
        self.chunks: list[tuple[float, int]] = []
        self._f = open(where / "upstream.sse", "wb")  # noqa: SIM115 - closed in close()
        self._closed = False

    def head(self, response: httpx.Response) -> None:
        self.entry.status = response.status_code
        self.entry.head_at = round(trio.current_time() - self.start, 6)
        self.entry.headers = {k: response.headers[k] for k in KEPT_HEADERS if k in response.headers}

    def piece(self, data: bytes) -> None:
        self.chunks.append((round(trio.current_time() - self.start, 6), len(data)))
        self._f.write(data)

    def close(self, end: str | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        if end is not None:
            self.entry.end = end
        self._f.close()
        self.entry.bytes = sum(n for _, n in self.chunks)
        (self.where / "chunks.json").write_bytes(msgspec.json.encode(self.chunks))
        self.recorder.done(self.entry)


class RecordingTransport(httpx.AsyncBaseTransport):
    """A provider's transport, teed into the cassette."""

    def __init__(self, recorder: Recorder, inner: httpx.AsyncBaseTransport, provider: str, kind: str) -> None:
        self.recorder = recorder
        self.inner = inner
        self.provider = provider
        self.kind = kind

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        take = self.recorder.begin(self.provider, self.kind, request)
        try:
            response = await self.inner.handle_async_request(request)
        except httpx.HTTPError as exc:
            take.close(f"error:{exc.__class__.__name__}")
            raise
        except BaseException:
            take.close("cut")  # cancelled before the head (a timeout, the client left)
            raise
        take.head(response)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_TeeBody(response.stream, take),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.inner.aclose()


class _TeeBody(httpx.AsyncByteStream):
    """The upstream body as read, each piece also written to the cassette. ``buffered`` and
    ``complete`` are the wrapped body's (the gateway groups its writes by them)."""

    __slots__ = ("_inner", "_take")

    def __init__(self, inner: Any, take: _Take) -> None:
        self._inner = inner
        self._take = take

    @property
    def buffered(self) -> bool:
        return getattr(self._inner, "buffered", False)

    @property
    def complete(self) -> bool:
        return getattr(self._inner, "complete", False)

    async def __aiter__(self):
        take = self._take
        try:
            async for piece in self._inner:
                take.piece(piece)
                yield piece
        except httpx.HTTPError as exc:
            take.close(f"error:{exc.__class__.__name__}")
            raise
        take.close("eof")

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._take.close()  # not read to its end: "cut"


# --- respline cassette show | check ----------------------------------------------------------


class _Outcome:
    """What one exchange's recorded stream turns into (engine/replay.py, no I/O)."""

    __slots__ = ("status", "tools", "text", "input_tokens", "output_tokens", "error")

    def __init__(self, ex: Exchange) -> None:
        from respline.engine.replay import replay
        from respline.engine.wire.responses import CustomToolCallItem, FunctionCallItem, MessageItem, OutputText

        self.tools: list[tuple[str, str]] = []
        self.text = ""
        self.input_tokens = self.output_tokens = 0
        self.error = ""
        entry = ex.entry
        if entry.status is None or entry.status >= 400:
            self.status = f"HTTP {entry.status}" if entry.status is not None else f"no answer ({entry.end})"
            self.error = ex.data[:200].decode("utf-8", "replace").strip()
            return
        events = replay([ex.data], kind=entry.kind, encoding=None)
        resp = getattr(events[-1], "response", None)
        if resp is None:
            self.status = "no terminal event"
            return
        self.status = resp.status
        if resp.error is not None:
            self.error = resp.error.message
        if resp.usage is not None:
            self.input_tokens, self.output_tokens = resp.usage.input_tokens, resp.usage.output_tokens
        for item in resp.output:
            if type(item) is FunctionCallItem:
                self.tools.append((item.name, item.arguments))
            elif type(item) is CustomToolCallItem:
                self.tools.append((item.name, item.input))
            elif type(item) is MessageItem:
                self.text += "".join(p.text for p in item.content if type(p) is OutputText)


def _clip(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _asked(request: Any) -> str:
    """A request in a few words: its model, how much context, what came last."""
    if not isinstance(request, dict):
        return "(not a JSON object)"
    context = request.get("messages") if "messages" in request else request.get("input")
    n = len(context) if isinstance(context, list) else 1
    last = context[-1] if isinstance(context, list) and context else context
    if isinstance(last, dict):
        what = last.get("role") or last.get("type") or "item"
        if what == "tool" or last.get("type") in ("function_call_output", "custom_tool_call_output", "tool_result"):
            what = "tool output"
        elif isinstance(last.get("content"), list) and any(
            isinstance(b, dict) and b.get("type") == "tool_result" for b in last["content"]
        ):
            what = "tool output"
    else:
        what = "text"
    tools = len(request.get("tools") or [])
    return f"{request.get('model')}: {n} items, last {what}, {tools} tools"


def _header(c: Cassette) -> list[str]:
    f = c.file
    lines = [f"cassette {c.dir}: recorded {f.recorded_at or '(unknown)'} by respline {f.respline or '(unknown)'} (format {f.version})"]
    for name, p in c.providers.items():
        lines.append(f"  provider {name}: {p.kind} at {p.base_url or '(no URL)'}")
    for r in c.routes:
        lines.append(f"  route {r.model} -> {r.provider}" + (f" as {r.upstream_model}" if r.upstream_model else ""))
    return lines


def show(c: Cassette) -> list[str]:
    lines = _header(c)
    calls: dict[str, int] = {}
    tokens_in = tokens_out = 0
    for ex in c.exchanges:
        out = _Outcome(ex)
        e = ex.entry
        lines.append(f"{e.dir} {e.provider} ({e.kind}) {_asked(ex.request)}")
        answer = ", ".join(f"{name}({_clip(args, 50)})" for name, args in out.tools)
        if out.text:
            answer += (" and " if answer else "") + f'"{_clip(out.text)}"'
        lines.append(f"     -> {out.status}{': ' + answer if answer else ''}{' error: ' + _clip(out.error, 100) if out.error else ''}")
        lines.append(f"        tokens {out.input_tokens} in, {out.output_tokens} out; {e.bytes} bytes in {len(ex.chunks)} reads over {ex.chunks[-1][0] if ex.chunks else e.head_at:g}s")
        for name, _ in out.tools:
            calls[name] = calls.get(name, 0) + 1
        tokens_in += out.input_tokens
        tokens_out += out.output_tokens
    used = ", ".join(f"{name} x{n}" for name, n in calls.items()) or "none"
    lines.append(f"{len(c.exchanges)} turns; tools called: {used}; tokens: {tokens_in} in, {tokens_out} out")
    return lines


def check(c: Cassette) -> tuple[bool, list[str]]:
    """Whether every exchange still replays with this respline: its request is matched as it
    was when recorded (the canonical key), and its stream turns into a whole response."""
    lines = _header(c)
    ok = True
    made = c.file.respline
    lines.append(f"this is respline {respline_version()}" + ("" if made == respline_version() else f" (the cassette was made by {made or 'an unknown version'})"))
    for ex in c.exchanges:
        e = ex.entry
        problems = []
        if e.key and e.key != ex.key:
            problems.append("its request is now matched by another key (this respline canonicalises requests differently): re-record")
        try:
            out = _Outcome(ex)
        except Exception as exc:  # noqa: BLE001 - any failure to replay is what check reports
            problems.append(f"its stream no longer replays: {exc.__class__.__name__}: {exc}")
            out = None
        if out is not None and out.status == "no terminal event":
            problems.append("its stream ends without a terminal event")
        if problems:
            ok = False
            lines.append(f"{e.dir} FAILS: " + "; ".join(problems))
        else:
            lines.append(f"{e.dir} ok: {out.status}")
    lines.append(f"{'ok' if ok else 'FAILED'}: {len(c.exchanges)} exchanges" + (" replay" if ok else ""))
    return ok, lines


def _open(where: str) -> Cassette | None:
    """The cassette a command names, or None with the reason on stderr (exit code 2)."""
    try:
        return Cassette(where)
    except ConfigError as exc:
        print(f"respline: {exc}", file=sys.stderr)
        return None


def cmd_show(args: Any) -> int:
    c = _open(args.dir)
    if c is None:
        return 2
    print("\n".join(show(c)))
    return 0


def cmd_check(args: Any) -> int:
    c = _open(args.dir)
    if c is None:
        return 2
    ok, lines = check(c)
    print("\n".join(lines))
    return 0 if ok else 1
