"""The ``replay`` kind at work: a cassette (adapters/cassette.py) served back in place of the
upstream.

The provider it builds (the recorded kind's own provider, translating exactly as when recording,
over a transport that answers from the cassette), ``serve --replay DIR`` (``configure``: a
``replay`` provider for every recorded one), the determinism a replaying server runs with, and
the verdict at shutdown.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import httpx
import msgspec
import trio

from respline.adapters.cassette import Cassette, Exchange
from respline.adapters.config import Config, ConfigError, expand_env
from respline.adapters.providers.replay_cassette.config import PACES, ReplayConfig
from respline.engine import registry
from respline.engine.cassette import contrast, differences
from respline.engine.ids import Clock, Ids, deterministic
from respline.engine.seal import Sealer, derived_nonces

log = logging.getLogger("respline.replay")

KIND = "replay"
SEED = 0
# The secret a replaying server seals with when the config sets none: fixed, so that the same run
# gives the same sealed bytes on any machine. Replay serves recorded traffic; nothing it seals is
# worth keeping from anyone.
REPLAY_SECRET = b"respline-replay"
STRICT_EXIT = 3  # serve's exit code when a strict replay left exchanges unused or repeated


def in_use(cfg: Config) -> bool:
    return any(p.kind == KIND for p in cfg.providers.values())


def configure(cfg: Config, directory: str, pace: str, strict: bool) -> None:
    """``serve --replay DIR``: the cassette's providers, each replayed, and its routes."""
    cassette = Cassette(directory)
    where = str(cassette.dir.absolute())
    cfg.providers = {
        name: ReplayConfig(cassette=where, replay_pace=pace, replay_strict=strict) for name in cassette.providers
    }
    cfg.routes = list(cassette.routes)
    cfg.server.reasoning_dialect = cassette.file.reasoning_dialect


def determinism(cfg: Config) -> tuple[Ids, Clock, Sealer] | None:
    """Replay mode (any provider of the kind): seeded ids, a fixed clock, and sealing with a
    fixed secret (``server.secret`` if set) and nonces derived from the content and the seed,
    so that the same agent run gives the same Responses bytes every time. The fixed clock
    stands in 2023, so stored objects never expire here (``store.ttl_seconds`` is set to 0)."""
    if not in_use(cfg):
        return None
    secret = (expand_env(cfg.server.secret, "server.secret") or "").encode() or REPLAY_SECRET
    cfg.store.ttl_seconds = 0
    ids, clock = deterministic(SEED)
    key = hashlib.sha256(b"respline-replay-nonce:" + SEED.to_bytes(8, "big") + secret).digest()
    return ids, clock, Sealer(secret, nonce=derived_nonces(key))


class Player:
    """One cassette being served: which request gets which recorded exchange.

    A request is answered by an exchange of its provider kind whose request has the same
    canonical key (engine/cassette.py), the first not yet served (one recorded for the asking
    provider first); when all were served, the last one again, noted as repeated. A request
    that matches none is refused with the closest recorded request and where it differs."""

    def __init__(self, cassette: Cassette) -> None:
        self.cassette = cassette
        self.strict = False
        self.served = [0] * len(cassette.exchanges)
        self.misses: list[str] = []
        self._by_key: dict[str, list[Exchange]] = {}
        for ex in cassette.exchanges:
            self._by_key.setdefault(ex.key, []).append(ex)

    def take(self, kind: str, provider: str, body: Any) -> Exchange | str:
        """The exchange to serve, or why there is none (one line)."""
        found = self._by_key.get(self.cassette.canonical.key(kind, body))
        if not found:
            why = self.mismatch(kind, body)
            self.misses.append(why)
            return why
        fresh = [ex for ex in found if not self.served[ex.n - 1]]
        ex = next((e for e in fresh if e.entry.provider == provider), fresh[0] if fresh else found[-1])
        self.served[ex.n - 1] += 1
        return ex

    def mismatch(self, kind: str, body: Any) -> str:
        canonical = self.cassette.canonical
        sent = canonical.of(body)
        head = f"no recorded exchange matches this request (cassette {self.cassette.dir}"
        candidates = [ex for ex in self.cassette.exchanges if ex.entry.kind == kind]
        if not candidates:
            return head + f": it recorded no {kind} request)"
        best, best_diffs = None, None
        for ex in candidates:  # the fewest differing fields; an exchange not served yet first
            diffs = differences(canonical.of(ex.request), sent)
            rank = (len(diffs), self.served[ex.n - 1] > 0)
            if best_diffs is None or rank < (len(best_diffs), self.served[best.n - 1] > 0):
                best, best_diffs = ex, diffs
        first = best_diffs[0]
        recorded, sent, at = contrast(first.recorded, first.sent)
        text = (
            f"{head}); the closest is exchange {best.entry.dir} ({best.n} of {len(self.cassette.exchanges)}), "
            f"which differs at {first.path}{f' (character {at})' if at is not None else ''}: recorded {recorded}, sent {sent}"
        )
        if len(best_diffs) > 1:
            more = [d.path for d in best_diffs[1:6]]
            text += f"; and {len(best_diffs) - 1} more: {', '.join(more)}{', ...' if len(best_diffs) > 6 else ''}"
        return text

    def problems(self) -> list[str]:
        """What a strict replay fails on: exchanges never served or served again, and requests
        that matched nothing."""
        out = []
        exchanges = self.cassette.exchanges
        unused = [ex.entry.dir for ex in exchanges if not self.served[ex.n - 1]]
        repeated = [f"{ex.entry.dir} x{self.served[ex.n - 1]}" for ex in exchanges if self.served[ex.n - 1] > 1]
        if unused:
            out.append(f"{len(unused)} of {len(exchanges)} recorded exchanges never requested ({', '.join(unused)})")
        if repeated:
            out.append(f"{len(repeated)} served more than once ({', '.join(repeated)})")
        if self.misses:
            out.append(f"{len(self.misses)} requests matched nothing (first: {self.misses[0]})")
        return out


class CassetteTransport(httpx.AsyncBaseTransport):
    """Answers a replay provider's upstream requests from its cassette: the recorded status,
    headers and body, byte for byte and piece for piece, at once or at the recorded pace."""

    def __init__(self, player: Player, kind: str, provider: str, paced: bool) -> None:
        self.player = player
        self.kind = kind
        self.provider = provider
        self.paced = paced

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        start = trio.current_time()
        try:
            body = msgspec.json.decode(request.content)
        except msgspec.DecodeError:
            body = None
        found = self.player.take(self.kind, self.provider, body)
        if isinstance(found, str):
            # 400, not 5xx: nothing retries it or falls back, and the client reads why at once
            log.warning("replay: %s", found)
            envelope = {"error": {"message": "respline replay: " + found, "type": "invalid_request_error", "param": None, "code": "cassette_mismatch"}}
            body = httpx.ByteStream(msgspec.json.encode(envelope))  # read by the gateway like any upstream body
            return httpx.Response(400, headers={"content-type": "application/json"}, stream=body)
        entry = found.entry
        if self.paced:
            await trio.sleep_until(start + entry.head_at)
        else:
            await trio.lowlevel.checkpoint()
        if entry.status is None:  # no answer was recorded
            if entry.end == "cut":
                await trio.sleep_forever()  # as live: the gateway's own deadline ends it
            raise _error(entry.end, "the recorded upstream failed before answering")
        return httpx.Response(entry.status, headers=entry.headers, stream=_Played(found, start, self.paced))


def _error(end: str, message: str) -> httpx.HTTPError:
    cls = getattr(httpx, end.partition(":")[2], None)
    if not (isinstance(cls, type) and issubclass(cls, httpx.TransportError)):
        cls = httpx.ReadError
    return cls(message)


class _Played(httpx.AsyncByteStream):
    """A recorded body, read as it was: the same pieces, then the same end."""

    __slots__ = ("_ex", "_start", "_paced", "_left")

    def __init__(self, ex: Exchange, start: float, paced: bool) -> None:
        self._ex = ex
        self._start = start
        self._paced = paced
        self._left = len(ex.chunks)

    @property
    def buffered(self) -> bool:
        return not self._paced

    @property
    def complete(self) -> bool:
        return self._left == 0 and self._ex.entry.end == "eof"

    async def __aiter__(self):
        ex, start, paced = self._ex, self._start, self._paced
        data = ex.data
        at = 0
        for t, size in ex.chunks:
            if paced:
                await trio.sleep_until(start + t)
            else:
                await trio.lowlevel.checkpoint()
            self._left -= 1
            yield data[at : at + size]
            at += size
        end = ex.entry.end
        if end == "cut":  # respline stopped reading here when recording
            await trio.sleep_forever()
        if end != "eof":
            raise _error(end, "the recorded upstream connection failed mid-stream")

    async def aclose(self) -> None:
        pass


def build(
    kind: registry.ProviderKind, name: str, p: ReplayConfig, cfg: Config, *, wrap: Any = None, shared: dict | None = None
) -> tuple[Any, httpx.AsyncClient]:
    """The registry's ``build`` for the ``replay`` kind: the recorded provider's own kind (any
    registered kind that talks to an upstream, a plug-in's too) over a CassetteTransport. One
    Player per cassette, kept in ``shared`` (one dict per server), serves every provider of
    that server replaying it. A replay is never recorded again: ``wrap`` is not applied."""
    players = (shared if shared is not None else {}).setdefault("replay.players", {})
    where = Path(p.cassette).absolute()
    player = players.get(where)
    if player is None:
        player = players[where] = Player(Cassette(where))
    player.strict = player.strict or p.replay_strict
    recorded_name, recorded = player.cassette.provider_for(name)
    recorded_kind = registry.kinds().get(recorded.kind)
    if recorded_kind is None or not recorded_kind.upstream:
        raise ConfigError(f"cassette {where}: provider {recorded_name!r} has kind {recorded.kind!r}, which cannot be replayed")
    transport = CassetteTransport(player, recorded.kind, recorded_name, p.replay_pace == "recorded")
    client = httpx.AsyncClient(transport=transport)
    provider = recorded_kind.provider(name, recorded, client, cfg.timeouts, api_key="", transport=transport)
    return provider, client


def verdict(providers: dict[str, Any]) -> int:
    """At shutdown: log what each cassette's replay left over; a strict one that left anything
    makes the exit code STRICT_EXIT."""
    players = {id(t.player): t.player for p in providers.values() if isinstance(t := getattr(p, "transport", None), CassetteTransport)}
    code = 0
    for player in players.values():
        problems = player.problems()
        where = player.cassette.dir
        if not problems:
            log.info("replay of %s: every recorded exchange was served once", where)
        elif player.strict:
            log.error("replay strict: cassette %s: %s", where, "; ".join(problems))
            code = STRICT_EXIT
        else:
            log.warning("replay of %s: %s", where, "; ".join(problems))
    return code
