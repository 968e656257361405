"""What one request costs respline, end to end and function by function (issue 17, per request).

Starts the bench upstream and ``respline serve`` (configured as bench/run.py configures it), then
sends requests one at a time on one keep-alive connection from this process and reports, per
round: respline's CPU per request (from /proc, so hypercorn, the app and the interpreter alike),
latency p50/p99 and, for streams, the time to the first body byte. Rounds of each target run in
turn (``--rev`` adds respline as of a git revision as a second target), medians at the end.

    python bench/reqpath.py                                # non-streaming, 20 ms upstream
    python bench/reqpath.py --model bench-n20 --requests 3000   # no upstream delay: CPU only
    python bench/reqpath.py --stream                       # streamed: time to first byte
    python bench/reqpath.py --rev main                     # before (main) and after (this tree)
    python bench/reqpath.py --floor                        # + the hypercorn floor (bench/floor.py)
    python bench/reqpath.py --cprofile 40                  # + respline's top 40 functions (cProfile)
    python bench/reqpath.py --obs                          # log_level info: request lines written
    python bench/reqpath.py --instructions --floor --rev main   # instructions per request (valgrind):
                                                           # exact, whatever else the machine runs

``--cprofile`` runs respline under cProfile, enabled only while the measured requests run
(SIGUSR1 toggles it), and prints the functions by own time and by cumulative time; the profiler
roughly doubles the CPU per request, so read its shares, not its absolute times.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import run  # noqa: E402  (the bench's process helpers)

# respline's CLI under cProfile: SIGUSR1 starts and stops the profiler, the stats are written at exit
_PROFILED = """
import cProfile, os, signal, sys
from respline.adapters.cli import main
prof = cProfile.Profile()
on = [False]
def toggle(*_):
    (prof.disable if on[0] else prof.enable)()
    on[0] = not on[0]
signal.signal(signal.SIGUSR1, toggle)
try:
    rc = main(sys.argv[1:])
finally:
    prof.disable()
    prof.dump_stats(os.environ["RESPLINE_PROFILE_OUT"])
sys.exit(rc)
"""


class Client:
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self, port: int, body: bytes) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.request = (
            b"POST /v1/responses HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        self.buf = b""

    def exchange(self) -> tuple[float, float, bytes]:
        """(seconds to the first body byte, seconds to the end, body)."""
        t0 = time.perf_counter()
        self.sock.sendall(self.request)
        while b"\r\n\r\n" not in self.buf:
            self._recv()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lower = head.lower()
        if b"transfer-encoding: chunked" in lower:
            body = b""
            first = None
            while True:
                while b"\r\n" not in self.buf:
                    self._recv()
                line, _, rest = self.buf.partition(b"\r\n")
                size = int(line.split(b";")[0], 16)
                while len(rest) < size + 2:
                    self._recv()
                    rest = self.buf.partition(b"\r\n")[2]
                self.buf = rest[size + 2 :]
                if size == 0:
                    break
                if first is None:
                    first = time.perf_counter()
                body += rest[:size]
        else:
            length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
            while len(self.buf) < length:
                self._recv()
            body, self.buf = self.buf[:length], self.buf[length:]
            first = time.perf_counter()
        end = time.perf_counter()
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"respline answered {head[:40]!r}: {body[:300]!r}")
        return first - t0, end - t0, body

    def _recv(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise RuntimeError("respline closed the connection")
        self.buf += data

    def close(self) -> None:
        self.sock.close()


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def respline_command(tmp: Path, name: str, upstream: int, args: argparse.Namespace, rev: str | None) -> tuple[list[str], dict, Path | None]:
    """How to start respline serve (as bench/run.py configures it) for this target: the command,
    its environment and where its cProfile stats go (``--cprofile``)."""
    cfg = tmp / f"{name}.toml"
    level = "info" if args.obs else "warning"
    cfg.write_text(f'[server]\nlog_level = "{level}"\n\n[limits]\nupstream_connections = 20000\n')
    serve = ["serve", "--host", "127.0.0.1", "--port", "{port}", "--upstream", f"http://127.0.0.1:{upstream}/v1",
             "--config", str(cfg), "--store", "memory", "--secret-file", str(tmp / "secret")]
    env = dict(os.environ)
    prof_out = None
    if rev:
        env["PYTHONPATH"] = str(Path(run.checkout_rev(rev, tmp)).parent)
    if args.cprofile:
        prof_out = tmp / f"{name}.prof"
        env["RESPLINE_PROFILE_OUT"] = str(prof_out)
        return [sys.executable, "-c", _PROFILED, *serve], env, prof_out
    return [sys.executable, "-m", "respline.adapters.cli", *serve], env, None


def start(name: str, cmd: list[str], env: dict, tmp: Path, valgrind: bool = False) -> run.Proc:
    """The target on a free port (``{port}`` in its command); under valgrind's callgrind, which
    counts every instruction the process runs and prints the total when it exits."""
    port = run.free_port()
    cmd = [c.replace("{port}", str(port)) for c in cmd]
    if valgrind:
        cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *cmd]
    p = run.Proc(f"{name}-{'vg' if valgrind else 'run'}", cmd, port, "/health", tmp, env=env)
    p.wait_ready(300 if valgrind else 60)
    return p


def counted_stop(p: run.Proc) -> int:
    """Stop a target started under valgrind and read its instruction count."""
    p.p.send_signal(signal.SIGTERM)
    p.p.wait(300)
    p.logf.close()
    found = re.search(r"Collected : (\d+)", p.log_path.read_text(errors="replace"))
    if found is None:
        raise RuntimeError(f"{p.name}: valgrind printed no count:\n{p.tail()}")
    return int(found.group(1))


def instructions(name: str, cmd: list[str], env: dict, tmp: Path, body: bytes) -> float:
    """Instructions per request: two runs under valgrind that differ only in how many requests
    they serve (warm-up and start-up the same), the difference divided by that."""
    counts = []
    for n in (INSTR_FEW, INSTR_MANY):
        p = start(name, cmd, env, tmp, valgrind=True)
        try:
            measure(p, body, n)
        finally:
            counts.append(counted_stop(p))
    return (counts[1] - counts[0]) / (INSTR_MANY - INSTR_FEW)


INSTR_FEW, INSTR_MANY = 20, 520


def measure(p: run.Proc, body: bytes, n: int) -> dict:
    c = Client(p.port, body)
    try:
        for _ in range(20):  # warm-up: the connection, the upstream pool, first-call caches
            c.exchange()
        cpu0 = run.cpu_seconds(p.pid)
        firsts, totals = [], []
        for i in range(n):
            if i % 500 == 499:  # hypercorn closes a keep-alive connection after 1,000 requests
                c.close()
                c = Client(p.port, body)
            first, total, out = c.exchange()
            firsts.append(first)
            totals.append(total)
        cpu = run.cpu_seconds(p.pid) - cpu0
    finally:
        c.close()
    if b'"completed"' not in out and b"response.completed" not in out:
        raise RuntimeError(f"not a completed response: {out[:300]!r}")
    return {
        "cpu_ms": cpu / n * 1000,
        "first_p50_ms": pct(firsts, 50) * 1000,
        "first_p99_ms": pct(firsts, 99) * 1000,
        "p50_ms": pct(totals, 50) * 1000,
        "p99_ms": pct(totals, 99) * 1000,
    }


def start_spy(proc: run.Proc, out: Path, args: argparse.Namespace) -> tuple[subprocess.Popen, Path]:
    spy = Path(sys.executable).parent / "py-spy"
    cmd = [str(spy), "record", "--format", "raw", "-o", str(out), "--rate", "1000", "--pid", str(proc.pid), "--nonblocking"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # py-spy attaches
    return p, out


def stop_spy(spy: tuple[subprocess.Popen, Path]) -> Path:
    p, out = spy
    p.send_signal(signal.SIGINT)  # py-spy writes what it has on SIGINT
    p.wait(60)
    return out


# Where a sample of one request's path belongs: the first of these found on its stack, from the
# leaf up (so the innermost named phase wins)
PHASES = (
    ("hypercorn: write to the client (app_send and below)", ("HTTPStream.app_send",)),
    ("upstream: transport request (encode, pool check, write, read head)", ("UpstreamTransport.handle_async_request",)),
    ("upstream: read the answer's body", ("_Body.__aiter__", "_WholeAnswer.__aiter__")),
    ("whole answer as a stream (completion_as_sse)", ("completion_as_sse",)),
    ("pipeline (feed, close)", ("ResponsePipeline.", "BuilderPipeline.")),
    ("provider prepare (translate, build httpx.Request, pipeline)", ("ChatProvider.prepare",)),
    ("gateway prepare_request (route, items, template)", ("Gateway.prepare_request",)),
    ("gateway open_upstream (scopes, headers, fallbacks)", ("Gateway.open_upstream",)),
    ("gateway pump/collect/finish", ("Gateway.pump", "Gateway.collect", "Gateway.finish")),
    ("parse_create (decode, validate)", ("parse_create",)),
    ("read the request body (read_body)", ("read_body",)),
    ("telemetry end (request line, metrics)", ("Telemetry.end",)),
    ("other: create handler (_serve, _handle, send_json, encode)", ("CreateHandler.",)),
    ("other: outer app (observed.asgi: Exchange, ids)", ("observed.<locals>.asgi", "asgi (respline")),
    ("hypercorn: read the request, connection tasks, timers", ("hypercorn",)),
)


def _phase(frames: list[str]) -> str:
    for label, keys in PHASES:
        if any(k in fr for fr in reversed(frames) for k in keys):
            return label
    if any("epoll" in fr or "get_events" in fr for fr in frames):
        return "trio: waiting in epoll (idle)"
    return "trio: run loop, task switching"


def print_spy(name: str, files: list[Path], top: int) -> None:
    stacks = []
    for f in files:
        if f.exists():
            stacks += run.parse_collapsed(f.read_text())
    idle = sum(n for fr, n in stacks if fr and ("epoll.poll" in fr[-1] or "poll (select" in fr[-1] or "_epoll_wait" in fr[-1]))
    busy = [(fr, n) for fr, n in stacks if fr and not ("epoll.poll" in fr[-1] or "_epoll_wait" in fr[-1])]
    total = sum(n for _, n in busy) or 1
    phases: dict[str, int] = {}
    for fr, n in busy:
        k = _phase(fr)
        phases[k] = phases.get(k, 0) + n
    print(f"\n## py-spy, {name}: {total} busy samples at 1 kHz ({idle} idle)\n\n| phase | % of busy samples |\n|---|---|")
    for k, v in sorted(phases.items(), key=lambda kv: -kv[1]):
        print(f"| {k} | {v / total * 100:.1f} |")
    summary = run.summarize(busy)
    print(f"\nInclusive, top {top}:\n")
    for k, v in summary["inclusive"][:top]:
        print(f"{v:5.1f}  {k}")


def print_profile(path: Path, top: int) -> None:
    stats = pstats.Stats(str(path))
    stats.strip_dirs()
    for key in ("tottime", "cumulative"):
        print(f"\n### cProfile, by {key} (top {top})\n", flush=True)
        stats.sort_stats(key).print_stats(top)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="bench-n20-d20", help="the bench upstream's model (bench-n20-d20: 20 tokens after 20 ms)")
    p.add_argument("--stream", action="store_true", help="streamed requests instead of non-streaming ones")
    p.add_argument("--requests", type=int, default=500, help="requests per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--rev", default=None, help="also respline as of this git revision (the 'before')")
    p.add_argument("--floor", action="store_true", help="also the hypercorn floor (bench/floor.py): the least any app on hypercorn costs")
    p.add_argument("--obs", action="store_true", help="log_level info (request lines written) instead of warning")
    p.add_argument("--cprofile", type=int, default=0, metavar="N", help="run respline under cProfile; print its top N functions")
    p.add_argument("--py-spy", type=int, default=0, metavar="N", help="py-spy (1 kHz) on respline while it is measured: phases, top N functions")
    p.add_argument("--instructions", action="store_true",
                   help="count each target's instructions per request with valgrind (apt's valgrind package) instead of timing")
    p.add_argument("--profile-out", default=None, metavar="PREFIX", help="keep the cProfile stats as PREFIX-<target>.prof (for pstats)")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, run._interrupt)
    run.raise_nofile()
    body = json.dumps({"model": args.model, "input": run.PROMPT, "store": False, "stream": args.stream}).encode()
    with tempfile.TemporaryDirectory(prefix="respline-reqpath-") as d:
        tmp = Path(d)
        up_port = run.free_port()
        upstream = run.Proc("upstream", [sys.executable, str(BENCH / "upstream.py"), "--port", str(up_port)], up_port, "/health", tmp)
        procs = [upstream]
        targets: list[tuple[str, run.Proc, Path | None]] = []
        try:
            deadline = time.monotonic() + 15
            while run.http_get(up_port, "/health") == 0 and time.monotonic() < deadline:
                time.sleep(0.1)
            commands: list[tuple[str, list[str], dict, Path | None]] = []
            if args.floor:
                commands.append(("hypercorn floor", [sys.executable, str(BENCH / "floor.py"), "--port", "{port}"], dict(os.environ), None))
            for name, rev in ([(args.rev, args.rev)] if args.rev else []) + [("this tree", None)]:
                commands.append((name, *respline_command(tmp, re.sub(r"[^A-Za-z0-9]", "-", name), up_port, args, rev)))
            if args.instructions:
                print(f"load average {os.getloadavg()[0]:.2f}; instructions per {'streamed' if args.stream else 'non-streaming'} "
                      f"request to {args.model} (valgrind, {INSTR_MANY} - {INSTR_FEW} requests)", file=sys.stderr, flush=True)
                print("\n| target | thousand instructions per request |\n|---|---|")
                for name, cmd, env, _ in commands:
                    print(f"| {name} | {instructions(name, cmd, env, tmp, body) / 1000:.0f} |", flush=True)
                return 0
            for name, cmd, env, prof in commands:
                proc = start(name, cmd, env, tmp)
                procs.append(proc)
                targets.append((name, proc, prof))
            results: dict[str, list[dict]] = {name: [] for name, _, _ in targets}
            spies: dict[str, list[Path]] = {}
            print(f"load average {os.getloadavg()[0]:.2f}; {args.requests} {'streamed' if args.stream else 'non-streaming'} "
                  f"requests per round to {args.model}, one at a time", file=sys.stderr, flush=True)
            for i in range(args.rounds):
                for name, proc, prof in targets:
                    if prof is not None:
                        os.kill(proc.pid, signal.SIGUSR1)
                    spy = start_spy(proc, tmp / f"spy-{i}-{proc.pid}.txt", args) if args.py_spy else None
                    r = measure(proc, body, args.requests)
                    if prof is not None:
                        os.kill(proc.pid, signal.SIGUSR1)
                    if spy is not None:
                        spies.setdefault(name, []).append(stop_spy(spy))
                    results[name].append(r)
                    print(f"round {i + 1} {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in r.items()), file=sys.stderr, flush=True)
            print(f"\n| target | CPU ms per request | first byte p50 / p99 ms | whole p50 / p99 ms |\n|---|---|---|---|")
            for name, reps in results.items():
                m = {k: statistics.median(r[k] for r in reps) for k in reps[0]}
                print(f"| {name} | {m['cpu_ms']:.3f} | {m['first_p50_ms']:.2f} / {m['first_p99_ms']:.2f} | {m['p50_ms']:.2f} / {m['p99_ms']:.2f} |")
            print(f"\nload average at end {os.getloadavg()[0]:.2f}")
            for name, files in spies.items():
                print_spy(name, files, args.py_spy)
        finally:
            for proc in reversed(procs):
                proc.stop()
        for name, _, prof in targets:
            if prof is not None and prof.exists():
                print(f"\n## {name}")
                print_profile(prof, args.cprofile)
                if args.profile_out:
                    shutil.copyfile(prof, f"{args.profile_out}-{prof.stem}.prof")
    return 0


if __name__ == "__main__":
    sys.exit(main())
