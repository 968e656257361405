"""The bench load client: a lean raw-socket HTTP/1.1 client (trio for closed loops, epoll for held streams).

It sends one pre-encoded request per exchange and reads the answer without parsing it: it counts
SSE frames (each ends in a blank line, ``\\n\\n``; ``data: [DONE]`` is not counted as an event),
notes the time to the first response byte (TTFB) and to the first token (a marker such as
``output_text.delta``), and finds the end of a chunked body from its terminator, so a read costs a
few ``bytes.count``/``in`` calls whatever its size. It is checked against the bench upstream
directly (the "direct" rows), where it sustains far more events/s than any gateway.

Two modes, configured by one JSON object (``--config FILE`` or ``--config-json TEXT``); the result
is one JSON object on stdout:

``run``   ``workers`` keep-alive connections (opened before the clock starts) issue ``requests``
          exchanges in all, as fast as they complete; per-exchange TTFB/TTFT/duration lists, events, errors by reason, wall and CPU.
``hold``  opens ``streams`` streaming exchanges (at most ``ramp_parallel`` waiting for their first
          response byte at once, from
          ``source_ips`` in turn), prints ``{"phase": "open", ...}`` once every stream has sent its
          first token (or ``ramp_seconds`` ran out), keeps reading them until a line arrives on
          stdin or ``hold_seconds`` pass, then closes them all and prints the result.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import resource
import select
import socket
import sys
import time
from collections import deque

import trio

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
READ = 65536


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def build_request(cfg: dict) -> bytes:
    if cfg.get("body_file"):
        with open(cfg["body_file"], "rb") as f:
            body = f.read()
    else:
        body = cfg["body"].encode()
    head = (
        f"POST {cfg['path']} HTTP/1.1\r\n"
        f"host: {cfg['host']}:{cfg['port']}\r\n"
        "content-type: application/json\r\n"
        "accept: text/event-stream\r\n"
        f"content-length: {len(body)}\r\n"
    )
    for k, v in (cfg.get("headers") or {}).items():
        head += f"{k}: {v}\r\n"
    return head.encode() + b"\r\n" + body


class Result:
    __slots__ = ("status", "ttfb", "ttft", "duration", "events", "nbytes", "ok", "reason", "keep", "reads")

    def __init__(self) -> None:
        self.status = 0
        self.ttfb = None
        self.ttft = None
        self.duration = 0.0
        self.events = 0
        self.nbytes = 0
        self.ok = False
        self.reason = ""
        self.keep = False
        self.reads = 0


class Markers:
    def __init__(self, cfg: dict) -> None:
        self.ok = cfg.get("ok_marker", "[DONE]").encode()
        self.token = cfg.get("token_marker", "").encode() or None
        self.bad = [m.encode() for m in cfg.get("bad_markers", [])]

    def scan(self, c, window: bytes) -> None:
        """Note on ``c`` (an epoll-mode connection) whether ``window`` holds the marker of a
        complete answer or an error marker."""
        if not c.ok and self.ok in window:
            c.ok = True
        for b in self.bad:
            if b in window:
                c.bad = True


def _rounded(seconds: list[float]) -> list[float]:
    return [round(x, 6) for x in seconds]


def _latencies(ttfb: list[float], ttft: list[float], durations: list[float]) -> dict:
    return {"ttfb": _rounded(ttfb), "ttft": _rounded(ttft), "durations": _rounded(durations)}


# --- the epoll modes' connections (hold and fleet): what they do alike ---------------------------
# ``c`` is a _Held or a _FleetConn: its socket (``sock``, ``fd``), ``phase``, the request bytes
# left to send (``out``) and the response head read so far (``buf``).


def _writable(c, ep) -> str | None:
    """``c`` may be written to: its connect finished (a fleet connection opened for the pool, with
    no exchange yet, goes idle), or the socket takes more of the request; once all is sent, it
    waits for the head. A transport error's reason, or None."""
    if c.phase == "connect":
        rc = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if rc:
            return f"transport: {errno.errorcode.get(rc, rc)}"
        if not hasattr(c, "out"):
            c.phase = "idle"
            ep.modify(c.fd, select.EPOLLIN)
            return None
        c.phase = "send"
    try:
        sent = c.sock.send(c.out)
    except BlockingIOError:
        return None
    except OSError as exc:
        return f"transport: {exc.__class__.__name__}"
    c.out = c.out[sent:]
    if not len(c.out):
        c.phase = "head"
        ep.modify(c.fd, select.EPOLLIN)
    return None


def _read_head(c, piece: bytes) -> tuple[bytes, bytes] | None:
    """(the response head, lower-cased; the body bytes after it) once the head is complete."""
    c.buf += piece
    end = c.buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = c.buf[:end].lower()
    rest = c.buf[end + 4 :]
    c.buf = b""
    return head, rest


def _forget(c, conns: dict, ep) -> None:
    conns.pop(c.fd, None)
    try:
        ep.unregister(c.fd)
    except OSError:
        pass
    c.sock.close()


async def connect(host: str, port: int, source: str | None) -> trio.SocketStream:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if source:
            sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            await sock.bind((source, 0))
        await sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def exchange(stream: trio.SocketStream, request: bytes, mk: Markers, r: Result, on_token=None, on_first_byte=None) -> None:
    """One request and its whole answer. Fills ``r``; raises on transport errors."""
    now = time.perf_counter
    t0 = now()
    await stream.send_all(request)
    buf = b""
    while True:
        data = await stream.receive_some(READ)
        r.reads += 1
        if not data:
            r.reason = "closed before head"
            return
        if r.ttfb is None:
            r.ttfb = now() - t0
            if on_first_byte is not None:
                on_first_byte()
        buf += data
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            break
    head = buf[:end].lower()
    body = buf[end + 4 :]
    try:
        r.status = int(head[9:12])
    except ValueError:
        r.reason = "bad status line"
        return
    chunked = b"\r\ntransfer-encoding: chunked" in head
    length = -1
    i = head.find(b"\r\ncontent-length:")
    if i >= 0:
        j = head.find(b"\r\n", i + 2)
        length = int(head[i + 17 : j if j >= 0 else None].strip())
    keep = b"\r\nconnection: close" not in head
    ok = False
    bad = False
    tail = b""
    last = b""
    total = 0
    events = 0
    token_marker = mk.token
    ok_marker = mk.ok
    piece = body
    fd = stream.socket.fileno()
    eager = 0
    while True:
        if piece:
            total += len(piece)
            events += piece.count(b"\n\n")
            if last.endswith(b"\n") and piece[:1] == b"\n":
                events += 1
            window = tail + piece
            if not ok and ok_marker in window:
                ok = True
            if token_marker is not None and token_marker in window:
                r.ttft = now() - t0
                token_marker = None
                if on_token is not None:
                    on_token()
            for b in mk.bad:
                if b in window:
                    bad = True
            tail = window[-48:]
            last = tail
            r.events = events
            if length >= 0:
                if total >= length:
                    break
            elif chunked and (tail.endswith(b"\r\n0\r\n\r\n") or tail == b"0\r\n\r\n"):
                break
        # the body is read straight off the descriptor: with one token per read (paced
        # streams), trio's receive_some costs several times the read itself
        try:
            piece = os.read(fd, READ)
            eager += 1
            if eager >= 8:  # a firehose answer still lets the other connections run
                eager = 0
                await trio.lowlevel.checkpoint()
        except BlockingIOError:
            eager = 0
            await trio.lowlevel.wait_readable(fd)
            piece = b""
            continue
        r.reads += 1
        if not piece:
            keep = False
            if length >= 0 or chunked:
                r.reason = "closed mid-body"
                r.duration = now() - t0
                r.events = events
                r.nbytes = total
                return
            break
    r.duration = now() - t0
    if b"data: [DONE]" in tail:
        events -= 1
    r.events = events
    r.nbytes = total
    r.keep = keep
    if r.status != 200:
        r.reason = f"http {r.status}"
    elif bad:
        r.reason = "error event"
    elif not ok:
        r.reason = "incomplete"
    else:
        r.ok = True


# --- run mode --------------------------------------------------------------------------------


async def run_mode(cfg: dict) -> dict:
    request = build_request(cfg)
    mk = Markers(cfg)
    workers = int(cfg.get("workers", 1))
    total = int(cfg["requests"])
    timeout = float(cfg.get("timeout", 120))
    deadline = trio.current_time() + float(cfg.get("max_seconds", 600))
    sources = cfg.get("source_ips") or [None]
    host, port = cfg["host"], int(cfg["port"])
    # stagger: worker i starts at i/workers of this many seconds, so that closed-loop streams of
    # equal length do not start, pace and end in step (real clients are not synchronised);
    # exchanges started before the stagger is over are warm-up, not measured
    stagger = float(cfg.get("stagger", 0))
    state = {"issued": 0, "warmup": 0}
    ttfb: list[float] = []
    ttft: list[float] = []
    durations: list[float] = []
    errors: dict[str, int] = {}
    counters = {"events": 0, "events_all": 0, "bytes": 0, "ok": 0, "connects": 0, "reads": 0}

    def error(reason: str) -> None:
        errors[reason] = errors.get(reason, 0) + 1

    streams: list = [None] * workers
    gate = trio.Semaphore(200)

    async def preconnect(idx: int) -> None:
        async with gate:
            try:
                with trio.move_on_after(timeout):
                    streams[idx] = await connect(host, port, sources[idx % len(sources)])
                    counters["connects"] += 1
            except OSError:
                pass  # the worker retries, and counts the error if it fails again

    async def worker(idx: int) -> None:
        stream = streams[idx]
        source = sources[idx % len(sources)]
        try:
            if stagger:
                await trio.sleep(stagger * idx / workers)
            while state["issued"] < total and trio.current_time() < deadline:
                measured = trio.current_time() >= measure_from
                if measured:
                    state["issued"] += 1
                else:
                    state["warmup"] += 1
                r = Result()
                try:
                    with trio.move_on_after(timeout) as scope:
                        if stream is None:
                            stream = await connect(host, port, source)
                            counters["connects"] += 1
                        await exchange(stream, request, mk, r)
                    if scope.cancelled_caught:
                        r.reason = "timeout"
                except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    r.reason = f"transport: {exc.__class__.__name__}"
                counters["events_all"] += r.events
                if not measured:
                    if not r.ok:
                        error(r.reason or "unknown")
                elif r.ok:
                    counters["ok"] += 1
                    counters["events"] += r.events
                    counters["bytes"] += r.nbytes
                    counters["reads"] += r.reads
                    durations.append(r.duration)
                    if r.ttfb is not None:
                        ttfb.append(r.ttfb)
                    if r.ttft is not None:
                        ttft.append(r.ttft)
                else:
                    counters["events"] += r.events
                    counters["bytes"] += r.nbytes
                    counters["reads"] += r.reads
                    error(r.reason or "unknown")
                if not (r.ok and r.keep) and stream is not None:
                    await trio.aclose_forcefully(stream)
                    stream = None
        finally:
            if stream is not None:
                await trio.aclose_forcefully(stream)

    # connections first (as a pool would hold them), then the clock starts
    async with trio.open_nursery() as nursery:
        for i in range(workers):
            nursery.start_soon(preconnect, i)
    measure_from = trio.current_time() + stagger
    cpu0 = cpu_seconds()
    t0 = time.perf_counter() + stagger
    async with trio.open_nursery() as nursery:
        for i in range(workers):
            nursery.start_soon(worker, i)
    wall = time.perf_counter() - t0
    return {
        "mode": "run",
        "workers": workers,
        "requests": state["issued"],
        "warmup_requests": state["warmup"],
        "ok": counters["ok"],
        "errors": errors,
        "events": counters["events"],
        "events_all": counters["events_all"],  # warm-up included: the server CPU covers it too
        "bytes": counters["bytes"],
        "connects": counters["connects"],
        "reads": counters["reads"],
        "wall": wall,
        "client_cpu": cpu_seconds() - cpu0,
        **_latencies(ttfb, ttft, durations),
    }


# --- hold mode -------------------------------------------------------------------------------


class _Held:
    """One held stream's state in hold mode (see ``hold_mode``)."""

    __slots__ = ("sock", "fd", "out", "phase", "buf", "tail", "chunked", "events", "t0", "token_seen", "ok", "bad", "gated")

    def __init__(self, sock: socket.socket, request: bytes) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.out = memoryview(request)
        self.phase = "connect"  # -> "head" (request sent) -> "body"
        self.buf = b""
        self.tail = b""
        self.chunked = False
        self.events = 0
        self.t0 = time.perf_counter()
        self.token_seen = False
        self.ok = False
        self.bad = False
        self.gated = True  # holds one of the ramp's ``ramp_parallel`` places until its first byte


def hold_mode(cfg: dict) -> dict:
    """Thousands of open, paced streams: a plain epoll loop rather than trio.

    Each descriptor is registered once (level-triggered), so a token costs one ``epoll_wait``
    share and one ``os.read``: about a quarter of what a trio task per stream spends (a wake-up,
    and an ``epoll_ctl`` per wait). At 10,000 streams x 1 token/s that difference is ~0.3 of a
    core, which this bench's 2-core machine otherwise takes from the gateway under test.
    """
    request = build_request(cfg)
    mk = Markers(cfg)
    n = int(cfg["streams"])
    ramp_parallel = int(cfg.get("ramp_parallel", 100))
    ramp_seconds = float(cfg.get("ramp_seconds", 120))
    hold_seconds = float(cfg.get("hold_seconds", 60))
    sources = cfg.get("source_ips") or [None]
    addr = (cfg["host"], int(cfg["port"]))
    token_marker = mk.token
    errors: dict[str, int] = {}
    ttft: list[float] = []
    conns: dict[int, _Held] = {}
    opened = 0
    started = 0
    pending = 0  # streams started that have not had their first response byte
    finished_early = 0
    events_done = 0
    ep = select.epoll()
    stdin_fd = sys.stdin.fileno()
    try:
        ep.register(stdin_fd, select.EPOLLIN)
        watch_stdin = True
    except (OSError, ValueError):  # e.g. /dev/null cannot be polled: rely on hold_seconds
        watch_stdin = False
    now = time.perf_counter
    t0 = now()
    timeline: list[list] = []  # [seconds, opened, errors] every 5 s: how the ramp went
    next_tick = t0 + 5

    def error(reason: str) -> None:
        errors[reason] = errors.get(reason, 0) + 1

    def drop(c: _Held, reason: str | None) -> None:
        nonlocal pending, events_done
        if reason is not None:
            error(reason)
        if c.gated:
            c.gated = False
            pending -= 1
        events_done += c.events
        _forget(c, conns, ep)

    def start_one() -> None:
        nonlocal started, pending
        src = sources[started % len(sources)]
        started += 1
        pending += 1
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        c = _Held(sock, request)
        try:
            if src:
                sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((src, 0))
            rc = sock.connect_ex(addr)
        except OSError as exc:
            pending -= 1
            error(f"transport: {exc.__class__.__name__}")
            sock.close()
            return
        if rc not in (0, errno.EINPROGRESS):
            pending -= 1
            error(f"transport: {errno.errorcode.get(rc, rc)}")
            sock.close()
            return
        conns[c.fd] = c
        ep.register(c.fd, select.EPOLLOUT)

    def on_writable(c: _Held) -> None:
        failed = _writable(c, ep)
        if failed:
            drop(c, failed)

    def on_readable(c: _Held) -> None:
        nonlocal pending, opened, finished_early
        try:
            piece = os.read(c.fd, READ)
        except BlockingIOError:
            return
        except OSError as exc:
            drop(c, f"transport: {exc.__class__.__name__}")
            return
        if not piece:
            if c.phase == "body" and not c.chunked and c.ok and not c.bad:  # close-delimited
                finished_early += 1
                drop(c, None)
            else:
                drop(c, "closed before head" if c.phase == "head" else "closed mid-body")
            return
        if c.phase == "head":
            if c.gated:  # first response byte: the next stream may start connecting
                c.gated = False
                pending -= 1
            read = _read_head(c, piece)
            if read is None:
                return
            head, piece = read
            if head[9:12] != b"200":
                drop(c, f"http {head[9:12].decode(errors='replace')}")
                return
            c.chunked = b"\r\ntransfer-encoding: chunked" in head
            c.phase = "body"
            if not piece:
                return
        window = c.tail + piece
        # frames end in a blank line; the window's tail carries one split across reads
        c.events += window.count(b"\n\n") - c.tail.count(b"\n\n")
        if not c.token_seen and token_marker is not None and token_marker in window:
            c.token_seen = True
            ttft.append(now() - c.t0)
            opened += 1
        mk.scan(c, window)
        c.tail = window[-48:]
        if c.chunked and c.tail.endswith(b"\r\n0\r\n\r\n"):
            if c.ok and not c.bad:
                finished_early += 1  # the paced stream ended before we closed it
                c.events -= 1 if b"data: [DONE]" in c.tail else 0
                drop(c, None)
            else:
                drop(c, "error event" if c.bad else "incomplete")

    def loop(until: float, stop_when_open: bool) -> bool:
        """Serve every descriptor until ``until``; True if stdin asked to stop."""
        nonlocal next_tick, watch_stdin
        while True:
            t = now()
            if t >= next_tick:
                timeline.append([round(t - t0, 1), opened, sum(errors.values())])
                next_tick += 5
            if stop_when_open and opened >= n:
                return False
            if t >= until:
                return False
            if stop_when_open:
                while pending < ramp_parallel and started < n:
                    start_one()
            for fd, ev in ep.poll(min(until, next_tick) - t, 4096):
                if fd == stdin_fd:
                    line = os.read(stdin_fd, 64)
                    if line:
                        return True
                    ep.unregister(stdin_fd)  # EOF: hold for hold_seconds
                    watch_stdin = False
                    continue
                c = conns.get(fd)
                if c is None:
                    continue
                if ev & select.EPOLLIN:
                    on_readable(c)
                elif ev & select.EPOLLOUT:
                    on_writable(c)
                elif ev & (select.EPOLLERR | select.EPOLLHUP):
                    drop(c, "transport: connection reset")

    loop(t0 + ramp_seconds, True)
    open_info = {
        "phase": "open",
        "opened": opened,
        "streams": n,
        "ramp_seconds": now() - t0,
        "errors_so_far": sum(errors.values()),
    }
    print(json.dumps(open_info), flush=True)
    loop(now() + hold_seconds, False)
    still_open = opened - finished_early - sum(errors.values())
    errors_at_close = dict(errors)
    for c in list(conns.values()):
        events_done += c.events
        c.sock.close()
    ep.close()
    return {
        "mode": "hold",
        "streams": n,
        "opened": opened,
        "still_open_at_close": still_open,
        "ramp_seconds": open_info["ramp_seconds"],
        "finished_early": finished_early,
        "errors": errors_at_close,
        "events": events_done,
        "ttft": _rounded(ttft),
        "client_cpu": cpu_seconds(),
        "timeline": timeline,
    }


# --- fleet mode ------------------------------------------------------------------------------


class _FleetConn:
    """One connection of fleet mode and the exchange it carries (see ``fleet_mode``)."""

    __slots__ = (
        "sock", "fd", "phase", "out", "worker", "t_sched", "t0", "deadline", "buf", "tail", "chunked", "length",
        "total", "events", "ttfb", "ttft", "last_frame", "max_gap", "ok", "bad", "status", "keep", "reads",
    )

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.phase = "idle"  # "connect" -> "send" -> "head" -> "body" -> "idle"
        self.worker = -1

    def start(self, request: bytes, t_sched: float, now: float, timeout: float) -> None:
        self.out = memoryview(request)
        self.t_sched = t_sched
        self.t0 = now
        self.deadline = now + timeout
        self.buf = b""
        self.tail = b""
        self.chunked = False
        self.length = -1
        self.total = 0
        self.events = 0
        self.ttfb = None
        self.ttft = None
        self.last_frame = 0.0
        self.max_gap = 0.0
        self.ok = False
        self.bad = False
        self.status = 0
        self.keep = True
        self.reads = 0


def _burst(times: list[float], window: float) -> tuple[int, float]:
    """The most late frames within any ``window`` seconds, and when that window starts."""
    times = sorted(times)
    best, at, j = 0, 0.0, 0
    for i, t in enumerate(times):
        while t - times[j] > window:
            j += 1
        if i - j + 1 > best:
            best, at = i - j + 1, times[j]
    return best, at


def fleet_mode(cfg: dict) -> dict:
    """Paced streams and short requests, many at once, timed per frame: a plain epoll loop.

    Two drivers:

    ``closed``  ``workers`` connections (opened before the clock starts), each issuing
                ``per_worker`` exchanges one after another; worker i starts at i/workers of
                ``stagger`` seconds, so streams of equal length are not in step.
    ``open``    requests arrive at ``rate`` per second for ``seconds`` seconds, at fixed
                intervals, whatever the server does; each takes an idle keep-alive connection or
                opens one. Latency runs from the scheduled arrival, so a server that falls behind
                is charged its queue (no coordinated omission).

    Per exchange it notes TTFB, the first token (``token_marker``), and the gap between each
    read that completed at least one SSE frame and the one before it, from the first token to
    the end: the "gap between chunks" of paced streams. Gaps over ``late_ms`` are kept with the
    time they ended, to show frames that are late together (a stall of the whole server).
    An epoll loop rather than trio: a frame costs the client one ``os.read`` and a few bytes
    operations, so the client's own delays stay out of the gaps it measures.
    """
    import heapq

    request = build_request(cfg)
    mk = Markers(cfg)
    driver = cfg.get("driver", "closed")
    timeout = float(cfg.get("timeout", 60))
    max_seconds = float(cfg.get("max_seconds", 600))
    late = float(cfg.get("late_ms", 25)) / 1000
    gap_limit = float(cfg.get("gap_limit_ms", 40)) / 1000
    sources = cfg.get("source_ips") or [None]
    addr = (cfg["host"], int(cfg["port"]))
    token_marker = mk.token
    now = time.perf_counter
    ep = select.epoll()
    conns: dict[int, _FleetConn] = {}
    idle: list[_FleetConn] = []
    errors: dict[str, int] = {}
    ttfb: list[float] = []
    ttft: list[float] = []
    durations: list[float] = []
    gaps: list[float] = []
    max_gaps: list[float] = []
    late_frames: list[list[float]] = []
    counters = {"ok": 0, "events": 0, "reads": 0, "connects": 0, "issued": 0}
    opened = [0]

    def error(reason: str) -> None:
        errors[reason] = errors.get(reason, 0) + 1

    def new_conn(blocking: bool) -> _FleetConn | None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        src = sources[opened[0] % len(sources)]
        opened[0] += 1
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if src:
                sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((src, 0))
            if blocking:
                sock.settimeout(timeout)
                sock.connect(addr)
                sock.setblocking(False)
                rc = 0
            else:
                sock.setblocking(False)
                rc = sock.connect_ex(addr)
        except OSError as exc:
            error(f"transport: {exc.__class__.__name__}")
            sock.close()
            return None
        if rc not in (0, errno.EINPROGRESS):
            error(f"transport: {errno.errorcode.get(rc, rc)}")
            sock.close()
            return None
        c = _FleetConn(sock)
        c.phase = "idle" if rc == 0 else "connect"
        conns[c.fd] = c
        ep.register(c.fd, select.EPOLLIN if rc == 0 else select.EPOLLOUT)
        counters["connects"] += 1
        return c

    def close(c: _FleetConn) -> None:
        _forget(c, conns, ep)

    def begin(c: _FleetConn, t_sched: float) -> None:
        counters["issued"] += 1
        c.start(request, t_sched, now(), timeout)
        if c.phase == "connect":  # the request goes once the connection is up
            return
        c.phase = "send"
        ep.modify(c.fd, select.EPOLLOUT)
        on_writable(c)

    def end(c: _FleetConn, reason: str | None) -> None:
        """The exchange on ``c`` is over (``reason`` None: it ended well so far)."""
        t = now()
        if reason is None:
            if c.status != 200:
                reason = f"http {c.status}"
            elif c.bad:
                reason = "error event"
            elif not c.ok:
                reason = "incomplete"
        counters["events"] += c.events
        counters["reads"] += c.reads
        if reason is None:
            counters["ok"] += 1
            durations.append(t - c.t_sched)
            if c.ttfb is not None:
                ttfb.append(c.ttfb)
            if c.ttft is not None:
                ttft.append(c.ttft)
                max_gaps.append(c.max_gap)
        else:
            error(reason)
        w = c.worker
        if reason is None and c.keep:
            c.phase = "idle"
            ep.modify(c.fd, select.EPOLLIN)
            reuse = c
        else:
            close(c)
            reuse = None
        done(w, reuse)

    def on_writable(c: _FleetConn) -> None:
        failed = _writable(c, ep)
        if failed:
            end(c, failed)

    def on_readable(c: _FleetConn) -> None:
        try:
            piece = os.read(c.fd, READ)
        except BlockingIOError:
            return
        except OSError as exc:
            if c.phase == "idle":
                close(c)
            else:
                end(c, f"transport: {exc.__class__.__name__}")
            return
        t = now()
        if c.phase == "idle":  # the server closed a kept-alive connection
            close(c)
            if c in idle:
                idle.remove(c)
            return
        c.reads += 1
        if not piece:
            if c.phase == "body" and not c.chunked and c.length < 0:
                end(c, None)  # close-delimited
            else:
                end(c, "closed before head" if c.phase == "head" else "closed mid-body")
            return
        if c.phase == "head":
            if c.ttfb is None:
                c.ttfb = t - c.t0
            read = _read_head(c, piece)
            if read is None:
                return
            head, piece = read
            try:
                c.status = int(head[9:12])
            except ValueError:
                end(c, "bad status line")
                return
            c.chunked = b"\r\ntransfer-encoding: chunked" in head
            j = head.find(b"\r\ncontent-length:")
            if j >= 0:
                k = head.find(b"\r\n", j + 2)
                c.length = int(head[j + 17 : k if k >= 0 else None].strip())
            c.keep = b"\r\nconnection: close" not in head
            c.phase = "body"
            if not piece and c.length != 0:
                return
        c.total += len(piece)
        window = c.tail + piece
        frames = window.count(b"\n\n") - c.tail.count(b"\n\n")
        c.events += frames
        if c.ttft is not None:
            if frames:
                gap = t - c.last_frame
                c.last_frame = t
                gaps.append(gap)
                if gap > c.max_gap:
                    c.max_gap = gap
                if gap > late and len(late_frames) < 50000:
                    late_frames.append([t - t_start, gap])
        elif token_marker is not None and token_marker in window:
            c.ttft = t - c.t0
            c.last_frame = t
        mk.scan(c, window)
        c.tail = window[-48:]
        if (c.length >= 0 and c.total >= c.length) or (c.chunked and (c.tail.endswith(b"\r\n0\r\n\r\n") or c.tail == b"0\r\n\r\n")):
            if b"data: [DONE]" in c.tail:
                c.events -= 1
            end(c, None)

    # --- the drivers
    timers: list[tuple[float, int, int]] = []  # (when, seq, worker): a worker's next exchange
    seq = [0]
    workers = int(cfg.get("workers", 1))
    per_worker = int(cfg.get("per_worker", 1))
    left = [per_worker] * workers
    worker_conn: list[_FleetConn | None] = [None] * workers
    active = [0]
    queue: deque[float] = deque()  # open driver: arrivals waiting for a connection
    arrivals = {"next": 0, "n": 0, "gap": 0.0}

    def done(w: int, reuse: _FleetConn | None) -> None:
        active[0] -= 1
        if driver == "closed":
            worker_conn[w] = reuse
            if left[w] > 0:
                heapq.heappush(timers, (now(), seq[0], w))
                seq[0] += 1
        else:
            if reuse is not None:
                idle.append(reuse)
            if queue:
                dispatch(queue.popleft())

    def dispatch(t_sched: float) -> None:
        """Open driver: start an exchange scheduled for ``t_sched`` (an idle connection or a new one)."""
        c = idle.pop() if idle else new_conn(False)
        if c is None:
            return  # new_conn counted the error
        c.worker = -1
        active[0] += 1
        begin(c, t_sched)

    if driver == "closed":
        for w in range(workers):  # connections first, as a pool would hold them
            worker_conn[w] = new_conn(True)
    else:
        rate = float(cfg["rate"])
        arrivals["n"] = int(rate * float(cfg["seconds"]))
        arrivals["gap"] = 1.0 / rate
        for _ in range(int(cfg.get("preconnect", 16))):
            c = new_conn(True)
            if c is not None:
                idle.append(c)
    cpu0 = cpu_seconds()
    t_start = now() + 0.05
    stagger = float(cfg.get("stagger", 0))
    if driver == "closed":
        for w in range(workers):
            heapq.heappush(timers, (t_start + stagger * w / workers, seq[0], w))
            seq[0] += 1
    hard_end = t_start + max_seconds
    next_check = t_start + 0.1
    while True:
        t = now()
        if driver == "closed":
            while timers and timers[0][0] <= t:
                _, _, w = heapq.heappop(timers)
                c = worker_conn[w]
                if c is None:
                    c = new_conn(False)
                    worker_conn[w] = c
                if c is None:
                    left[w] = 0
                    continue
                left[w] -= 1
                c.worker = w
                active[0] += 1
                begin(c, t)
            finished = not timers and active[0] == 0
            wake = timers[0][0] if timers else t + 0.1
        else:
            while arrivals["next"] < arrivals["n"]:
                due = t_start + arrivals["next"] * arrivals["gap"]
                if due > t:
                    break
                arrivals["next"] += 1
                if idle or len(conns) < 20000:
                    dispatch(due)
                else:
                    queue.append(due)
            finished = arrivals["next"] >= arrivals["n"] and active[0] == 0 and not queue
            wake = t_start + arrivals["next"] * arrivals["gap"] if arrivals["next"] < arrivals["n"] else t + 0.1
        if finished or t >= hard_end:
            break
        if t >= next_check:  # per-request deadlines
            next_check = t + 0.1
            for c in list(conns.values()):
                if c.phase not in ("idle",) and hasattr(c, "deadline") and t > c.deadline:
                    end(c, "timeout")
        for fd, ev in ep.poll(max(0.0, min(wake, next_check) - t), 4096):
            c = conns.get(fd)
            if c is None:
                continue
            if ev & select.EPOLLIN:
                on_readable(c)
            elif ev & select.EPOLLOUT:
                on_writable(c)
            elif ev & (select.EPOLLERR | select.EPOLLHUP):
                if c.phase == "idle":
                    close(c)
                else:
                    end(c, "transport: connection reset")
    wall = now() - t_start
    unfinished = sum(1 for c in conns.values() if c.phase not in ("idle",) and hasattr(c, "out"))
    if unfinished:
        errors["unfinished at the time limit"] = unfinished
    for c in list(conns.values()):
        c.sock.close()
    ep.close()
    gaps.sort()
    late_times = [x[0] for x in late_frames]
    burst, burst_at = _burst(late_times, 0.02)
    return {
        "mode": "fleet",
        "driver": driver,
        "requests": counters["issued"],
        "ok": counters["ok"],
        "errors": errors,
        "events": counters["events"],
        "events_all": counters["events"],
        "reads": counters["reads"],
        "connects": counters["connects"],
        "wall": wall,
        "client_cpu": cpu_seconds() - cpu0,
        **_latencies(ttfb, ttft, durations),
        "gaps_n": len(gaps),
        "gap_pcts": {str(q): (gaps[min(len(gaps) - 1, int(round(q / 100 * (len(gaps) - 1))))] if gaps else None) for q in (50, 90, 99, 99.9, 100)},
        "gaps_over_limit": sum(1 for g in gaps if g > gap_limit),
        "streams_over_limit": sum(1 for g in max_gaps if g > gap_limit),
        "max_gaps": [round(x, 5) for x in max_gaps],
        "late_frames": len(late_frames),
        "late_burst": burst,  # the most frames later than late_ms within 20 ms of each other
        "late_burst_at": round(burst_at, 3),
        "late": [[round(a, 4), round(b, 4)] for a, b in late_frames[:2000]],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="a JSON file")
    p.add_argument("--config-json", help="the JSON itself")
    a = p.parse_args()
    if a.config:
        with open(a.config) as f:
            cfg = json.load(f)
    else:
        cfg = json.loads(a.config_json)
    raise_nofile()
    mode = cfg.get("mode")
    result = hold_mode(cfg) if mode == "hold" else fleet_mode(cfg) if mode == "fleet" else trio.run(run_mode, cfg)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
