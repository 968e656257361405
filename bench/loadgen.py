"""The bench load client: a lean raw-socket HTTP/1.1 client on trio.

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
import json
import os
import resource
import socket
import sys
import time

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
        "ttfb": [round(x, 6) for x in ttfb],
        "ttft": [round(x, 6) for x in ttft],
        "durations": [round(x, 6) for x in durations],
    }


# --- hold mode -------------------------------------------------------------------------------


async def hold_mode(cfg: dict) -> dict:
    request = build_request(cfg)
    mk = Markers(cfg)
    n = int(cfg["streams"])
    ramp_parallel = int(cfg.get("ramp_parallel", 100))
    ramp_seconds = float(cfg.get("ramp_seconds", 120))
    hold_seconds = float(cfg.get("hold_seconds", 60))
    sources = cfg.get("source_ips") or [None]
    host, port = cfg["host"], int(cfg["port"])
    opened = 0
    all_open = trio.Event()
    errors: dict[str, int] = {}
    ttft: list[float] = []
    events = [0]
    finished_early = [0]
    gate = trio.Semaphore(ramp_parallel)

    def error(reason: str) -> None:
        errors[reason] = errors.get(reason, 0) + 1

    async def one(idx: int) -> None:
        released = False

        def on_first_byte() -> None:
            nonlocal released
            if not released:
                released = True
                gate.release()

        def on_token() -> None:
            nonlocal opened
            opened += 1
            if opened >= n:
                all_open.set()

        await gate.acquire()
        r = Result()
        stream = None
        try:
            stream = await connect(host, port, sources[idx % len(sources)])
            await exchange(stream, request, mk, r, on_token, on_first_byte)
            if r.ok:
                finished_early[0] += 1  # the paced stream ended before we closed it
            else:
                error(r.reason or "unknown")
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            error(f"transport: {exc.__class__.__name__}")
        finally:
            if not released:
                released = True
                gate.release()
            if r.ttft is not None:
                ttft.append(r.ttft)
            events[0] += r.events
            if stream is not None:
                await trio.aclose_forcefully(stream)

    async def wait_stdin(cancel: trio.CancelScope) -> None:
        stdin = trio.lowlevel.FdStream(sys.stdin.fileno())
        try:
            data = await stdin.receive_some(64)
        except Exception:  # noqa: BLE001 - no usable stdin: rely on hold_seconds
            data = b""
        if not data:  # EOF (e.g. /dev/null): hold for hold_seconds
            await trio.sleep_forever()
        cancel.cancel()

    t0 = time.perf_counter()
    open_info: dict = {}
    timeline: list[list] = []  # [seconds, opened, errors] every 5 s: how the ramp went

    async def progress() -> None:
        while True:
            await trio.sleep(5)
            timeline.append([round(time.perf_counter() - t0, 1), opened, sum(errors.values())])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(progress)
        for i in range(n):
            nursery.start_soon(one, i)
        with trio.move_on_after(ramp_seconds):
            await all_open.wait()
        open_info = {
            "phase": "open",
            "opened": opened,
            "streams": n,
            "ramp_seconds": time.perf_counter() - t0,
            "errors_so_far": sum(errors.values()),
        }
        print(json.dumps(open_info), flush=True)
        with trio.CancelScope() as hold:
            hold.deadline = trio.current_time() + hold_seconds
            async with trio.open_nursery() as waiter:
                waiter.start_soon(wait_stdin, hold)
                await trio.sleep_forever()
        still_open = opened - finished_early[0] - sum(errors.values())
        nursery.cancel_scope.cancel()
    errors_at_close = dict(errors)
    return {
        "mode": "hold",
        "streams": n,
        "opened": open_info.get("opened", 0),
        "still_open_at_close": still_open,
        "ramp_seconds": open_info.get("ramp_seconds"),
        "finished_early": finished_early[0],
        "errors": errors_at_close,
        "events": events[0],
        "ttft": [round(x, 6) for x in ttft],
        "client_cpu": cpu_seconds(),
        "timeline": timeline,
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
    fn = hold_mode if cfg.get("mode") == "hold" else run_mode
    result = trio.run(fn, cfg)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
