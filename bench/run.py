"""The respline bench: upstream, gateway and load client, each its own process on loopback.

    python bench/run.py                  # every scenario (make bench)
    python bench/run.py --quick          # a small version of every scenario (make bench BENCH_QUICK=1)
    python bench/run.py --scenarios 1,2  # some of them
    python bench/run.py --peers          # scenario 2 at 100 streams, scenarios 4 and 6: direct,
                                         # respline and LiteLLM's proxy side by side (make bench-peers)
    python bench/run.py --profile        # py-spy on respline during scenario 1 (make bench-profile)
    python bench/run.py --rev abc123     # respline as of a git revision: an optimisation's "before"

Every measurement is taken "direct" (client -> bench upstream) and "through" a gateway in the same
run, interleaved, each repeated; the medians are reported, with the ratio gateway / direct as the
headline. A markdown table goes to stdout and the raw numbers (every repeat) to
bench/results/<time>-<mode>.json, with the machine's core count and load. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
LITELLM_VENV = BENCH / ".venv-litellm"
LITELLM_SPEC = os.environ.get("BENCH_LITELLM_SPEC", "litellm[proxy]==1.80.16")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

sys.path.insert(0, str(BENCH))
import codex_request  # noqa: E402
from loadgen import raise_nofile  # noqa: E402

PROMPT = "Write a long story about a gateway."
# scenario 6 (gateway benchmarks' definitions): 64 text chunks 20 ms apart, and an upstream that
# takes 20 ms to answer a short non-streamed request
PACED_MODEL = "bench-n64-r50"
PACED_TOKENS, PACED_INTERVAL = 64, 0.020
NONSTREAM_MODEL = "bench-n20-d20"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (worker processes)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def cpu_seconds(pid: int) -> float:
    """user + system CPU of ``pid`` and its descendants, from /proc/PID/stat (utime, stime, and
    cutime/cstime for children already reaped)."""
    total = 0
    for p in proc_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return total / CLK_TCK


def rss_bytes(pid: int) -> int:
    """Resident memory (VmRSS) summed over ``pid`` and its descendants."""
    total = 0
    for p in proc_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue
    return total


def http_get(port: int, path: str, timeout: float = 2.0) -> int:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n".encode())
            data = s.recv(64)
        return int(data[9:12])
    except (OSError, ValueError):
        return 0


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the bench process dies, however it dies."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort
        pass


class Proc:
    def __init__(self, name: str, cmd: list[str], port: int, health: str, tmp: Path, env: dict | None = None) -> None:
        self.name, self.port, self.health = name, port, health
        self.log_path = tmp / f"{name}-{port}.log"
        self.logf = open(self.log_path, "wb")  # noqa: SIM115
        self.p = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=tmp, preexec_fn=_die_with_parent)
        self.pid = self.p.pid

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.p.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.p.returncode} at start:\n{self.tail()}")
            if http_get(self.port, self.health) == 200:
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f}s:\n{self.tail()}")

    def tail(self, n: int = 25) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def stop(self) -> None:
        if self.p.poll() is None:
            tree = proc_tree(self.pid)
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                pass
            for pid in tree:  # only the processes this one started
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self.logf.close()


# --- targets ---------------------------------------------------------------------------------


class Target:
    """Where the load client points: the bench upstream itself ("direct") or a gateway."""

    def __init__(self, kind: str, port: int, proc: Proc | None) -> None:
        self.kind, self.port, self.proc = kind, port, proc

    @property
    def direct(self) -> bool:
        return self.kind == "direct"

    @property
    def path(self) -> str:
        return "/v1/chat/completions" if self.direct else "/v1/responses"

    def stream_body(self, model: str, *, store: bool = False) -> str:
        if self.direct:
            body = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "stream": True, "stream_options": {"include_usage": True}}
        else:
            body = {"model": model, "input": PROMPT, "stream": True, "store": store}
        return json.dumps(body)

    def plain_body(self, model: str) -> str:
        """A short non-streaming request (scenario 6)."""
        if self.direct:
            return json.dumps({"model": model, "messages": [{"role": "user", "content": PROMPT}]})
        return json.dumps({"model": model, "input": PROMPT, "store": False})

    @property
    def label(self) -> str:
        if self.kind == "respline-noobs":
            return "respline (no obs)"
        if self.kind == "respline-hc":
            return "respline (writes through hypercorn)"
        if self.kind.startswith("respline-w"):
            return f"respline --workers {self.kind[10:]}"
        if self.kind.startswith("floor-w"):
            return f"floor --workers {self.kind[7:]}"
        return self.kind

    def codex_body(self, model: str, *, stream: bool = False) -> str:
        if self.direct:
            return json.dumps(codex_request.chat_body(model, stream=stream))
        return json.dumps(codex_request.responses_body(model, stream=stream))

    def markers(self, streaming: bool = True) -> dict:
        if self.direct:
            return {"ok_marker": "[DONE]" if streaming else '"finish_reason":"stop"', "token_marker": '"content":"', "bad_markers": []}
        if not streaming:
            return {"ok_marker": '"status":"completed"', "token_marker": "", "bad_markers": []}
        return {"ok_marker": "response.completed", "token_marker": "output_text.delta", "bad_markers": ["event: error", "response.failed", '"type":"error"']}

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid) if self.proc else 0.0

    def rss(self) -> int:
        return rss_bytes(self.proc.pid) if self.proc else 0


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick = args.quick
        self.tmpdir = tempfile.TemporaryDirectory(prefix="respline-bench-")
        self.tmp = Path(self.tmpdir.name)
        self.procs: list[Proc] = []
        self.nofile = raise_nofile()
        self.respline_bin = args.respline or str(ROOT / ".venv" / "bin" / "respline")
        if args.rev:
            self.respline_bin = checkout_rev(args.rev, self.tmp)
        self.upstream: Proc | None = None
        self.results: dict = {"scenarios": {}}
        self.body_files = 0
        self.notes: set[str] = set()
        self.noobs: Target | None = None

    # -- processes

    def start_upstream(self) -> Proc:
        port = free_port()
        p = Proc("upstream", [sys.executable, str(BENCH / "upstream.py"), "--port", str(port)], port, "/health", self.tmp)
        self.procs.append(p)
        deadline = time.monotonic() + 15
        while http_get(port, "/health") == 0 and time.monotonic() < deadline:  # any answer = up
            time.sleep(0.1)
        self.upstream = p
        return p

    def respline_help(self) -> str:
        try:
            return subprocess.run([self.respline_bin, "serve", "--help"], capture_output=True, text=True, timeout=60).stdout
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"cannot run respline: {exc.__class__.__name__}"

    def respline_config(self, obs: str | None, *, access_log: bool = True, direct_write: bool = True) -> str:
        """respline's config file for the bench. ``obs``: None = as always (log_level warning);
        "on" = logging at info (request lines written) and metrics as configured by default;
        "off" = the same with ``[metrics] enabled = false`` and ``[server] access_log = false``
        (``--obs-off``): the two differ only in those keys."""
        # upstream_connections: the default pool (4096) would queue scenario 3's streams
        gc_line = f"gc_thresholds = [{self.args.gc_thresholds}]\n" if self.args.gc_thresholds is not None else ""
        level = "warning" if obs is None else "info"
        server = f'[server]\nlog_level = "{level}"\n{gc_line}'
        if not direct_write:
            server += "direct_write = false\n"
        if obs == "off" and access_log:
            server += "access_log = false\n"
        metrics = "\n[metrics]\nenabled = false\n" if obs == "off" else ""
        return f"{server}\n[limits]\nupstream_connections = 20000\n{metrics}"

    def start_respline(self, *, workers: int = 0, store: str = "memory", obs: str | None = None, kind: str = "respline") -> Target:
        assert self.upstream is not None
        if obs is None and self.args.obs_off:
            obs = "on"  # --obs-off: the usual respline rows are the "on" side
        access_log = True
        while True:
            port = free_port()
            cfg = self.tmp / f"{kind}.toml"
            cfg.write_text(self.respline_config(obs, access_log=access_log, direct_write=kind != "respline-hc"))
            cmd = [
                self.respline_bin, "serve", "--host", "127.0.0.1", "--port", str(port),
                "--upstream", f"http://127.0.0.1:{self.upstream.port}/v1",
                "--config", str(cfg), "--store", store, "--secret-file", str(self.tmp / "secret"),
            ]
            if workers:
                cmd += ["--workers", str(workers)]
            p = Proc(kind, cmd, port, "/health", self.tmp)
            self.procs.append(p)
            try:
                p.wait_ready(60)
            except RuntimeError as exc:
                self.stop(p)
                if obs == "off" and access_log and "access_log" in str(exc):
                    # this respline has no [server] access_log yet: metrics off only, and say so
                    access_log = False
                    self.notes.add("`--obs-off`: this respline does not know `[server] access_log` yet; "
                                   "the \"no obs\" target has only `[metrics] enabled = false`.")
                    continue
                raise
            return Target(kind, port, p)

    def obs_off_target(self) -> Target:
        """``--obs-off``: respline with logging and metrics off, started once, shared by scenarios."""
        if self.noobs is None:
            self.noobs = self.start_respline(obs="off", kind="respline-noobs")
        return self.noobs

    def start_floor(self, workers: int = 1) -> Target:
        """The hypercorn floor (floor.py): hypercorn with an app that answers at once; with
        ``workers`` > 1, that many floor processes on one socket (``floor-wN``)."""
        port = free_port()
        kind = "floor" if workers <= 1 else f"floor-w{workers}"
        argv = [sys.executable, str(BENCH / "floor.py"), "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
        p = Proc(kind, argv, port, "/health", self.tmp)
        self.procs.append(p)
        p.wait_ready(60)
        return Target(kind, port, p)

    def start_litellm(self) -> Target:
        assert self.upstream is not None
        port = free_port()
        models = sorted({self.s2_model(), self.s4_model(), PACED_MODEL, NONSTREAM_MODEL})
        lines = ["model_list:"]
        for m in models:
            lines += [
                f"  - model_name: {m}",
                "    litellm_params:",
                f"      model: hosted_vllm/{m}",
                f"      api_base: http://127.0.0.1:{self.upstream.port}/v1",
                "      api_key: bench",
            ]
        lines += ["litellm_settings:", "  drop_params: true", "  telemetry: false", "general_settings:", "  disable_spend_logs: true"]
        cfg = self.tmp / "litellm.yaml"
        cfg.write_text("\n".join(lines) + "\n")
        env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR", NO_PROXY="*", no_proxy="*")
        for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
            env.pop(k, None)
        cmd = [str(LITELLM_VENV / "bin" / "litellm"), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
        p = Proc("litellm", cmd, port, "/health/liveliness", self.tmp, env=env)
        self.procs.append(p)
        p.wait_ready(180)
        return Target("litellm", port, p)

    def stop(self, target: Target | Proc | None) -> None:
        proc = target.proc if isinstance(target, Target) else target
        if proc is not None:
            proc.stop()
            if proc in self.procs:
                self.procs.remove(proc)

    def close(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        self.procs.clear()
        self.tmpdir.cleanup()

    def direct(self) -> Target:
        assert self.upstream is not None
        return Target("direct", self.upstream.port, self.upstream)

    # -- the load client

    def client(self, target: Target, cfg: dict, *, timeout: float) -> dict:
        cfg = dict(cfg, host="127.0.0.1", port=target.port, path=target.path)
        path = self.tmp / "client.json"
        path.write_text(json.dumps(cfg))
        out = subprocess.run([sys.executable, str(BENCH / "loadgen.py"), "--config", str(path)], capture_output=True, text=True, timeout=timeout, preexec_fn=_die_with_parent)
        if out.returncode != 0:
            raise RuntimeError(f"load client failed ({out.returncode}):\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    def body_file(self, text: str) -> str:
        self.body_files += 1
        path = self.tmp / f"body-{self.body_files}.json"
        path.write_text(text)
        return str(path)

    def measure(self, target: Target, cfg: dict, *, timeout: float = 900) -> dict:
        """One client run with the target's CPU (and the bench upstream's) around it."""
        cpu0, up0 = target.cpu(), self.direct().cpu()
        r = self.client(target, cfg, timeout=timeout)
        r["target_cpu"] = target.cpu() - cpu0
        r["upstream_cpu"] = self.direct().cpu() - up0
        return r

    # -- model names

    def s1_tokens(self) -> int:
        return 2000

    def s2_tokens(self) -> int:
        return 20 if self.quick else 100

    def s2_model(self) -> str:
        return f"bench-n{self.s2_tokens()}"

    def s4_model(self) -> str:
        return "bench-n20"


# --- statistics ------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(q / 100 * (len(s) - 1)))))
    return s[k]


def med(values: list) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def stream_metrics(r: dict) -> dict:
    events = r["events"]
    errors = sum(r["errors"].values())
    return {
        "events_per_s": events / r["wall"] if r["wall"] else 0.0,
        "ttfb_p50_ms": _ms(pct(r["ttfb"], 50)),
        "ttfb_p99_ms": _ms(pct(r["ttfb"], 99)),
        "ttft_p50_ms": _ms(pct(r["ttft"], 50)),
        "ttft_p99_ms": _ms(pct(r["ttft"], 99)),
        "errors": errors,
        "error_reasons": r["errors"],
        "requests": r["requests"],
        "events": events,
        "wall_s": r["wall"],
        "target_cpu_s": r["target_cpu"],
        "target_cpu_us_per_event": (r["target_cpu"] / r.get("events_all", events) * 1e6) if events else None,
        "upstream_cpu_s": r["upstream_cpu"],
        "client_cpu_s": r["client_cpu"],
        "client_cpu_us_per_event": (r["client_cpu"] / r.get("events_all", events) * 1e6) if events else None,
        "events_per_read": events / r["reads"] if r.get("reads") else None,
        "events_per_stream": events / r["requests"] if r["requests"] else None,
    }


def _ms(v: float | None) -> float | None:
    return None if v is None else v * 1000


def median_of(reps: list[dict]) -> dict:
    out: dict = {}
    for k, v in reps[0].items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) or v is None:
            out[k] = med([r.get(k) for r in reps])
        elif k == "error_reasons":
            merged: dict = {}
            for r in reps:
                for reason, n in r.get(k, {}).items():
                    merged[reason] = merged.get(reason, 0) + n
            out[k] = merged
    out["errors_total"] = sum(r.get("errors", 0) or 0 for r in reps)
    out["repeats"] = len(reps)
    return out


def fmt(v, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if abs(v) >= 100000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def ratio(a, b) -> str:
    if a is None or b in (None, 0):
        return "-"
    return f"{a / b:.3f}" if a / b < 10 else f"{a / b:.1f}"


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(c) if not isinstance(c, str) else c for c in row) + " |")
    return "\n".join(lines)


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("**met**" if ok else "**missed**")


# --- scenarios -------------------------------------------------------------------------------


def scenario1(b: Bench, gw: Target) -> tuple[dict, str]:
    """One stream of 2000 tokens at a time: events/s and CPU per 1000 events."""
    n_req = 3 if b.quick else 10
    repeats = b.args.repeats
    model = f"bench-n{b.s1_tokens()}"
    targets = [b.direct(), gw] + ([b.obs_off_target()] if b.args.obs_off else [])
    reps: dict[str, list] = {t.kind: [] for t in targets}
    for t in targets:  # warm-up: imports, pools, caches
        b.client(t, {"workers": 1, "requests": 2, "body": t.stream_body(model), **t.markers()}, timeout=120)
    for i in range(repeats):
        for t in targets:
            r = b.measure(t, {"workers": 1, "requests": n_req, "body": t.stream_body(model), **t.markers()})
            m = stream_metrics(r)
            # a single stream's rate: events over the time spent in exchanges
            m["stream_events_per_s"] = r["events"] / sum(r["durations"]) if r["durations"] else 0.0
            reps[t.kind].append(m)
        log(f"scenario 1 repeat {i + 1}/{repeats}: {gw.kind} {reps[gw.kind][-1]['stream_events_per_s']:.0f} events/s, "
            f"{reps[gw.kind][-1]['target_cpu_us_per_event'] or 0:.1f} us CPU/event; direct {reps['direct'][-1]['stream_events_per_s']:.0f} events/s")
    d, g = median_of(reps["direct"]), median_of(reps[gw.kind])
    cpu_us = g["target_cpu_us_per_event"]
    res = {"tokens": b.s1_tokens(), "streams_per_repeat": n_req, "direct": d, gw.kind: g, "repeats": {k: v for k, v in reps.items()},
           "targets": {"cpu_us_per_event_max": 20, "cpu_us_per_event": cpu_us, "met": cpu_us is not None and cpu_us <= 20}}
    md = [f"### Scenario 1: one stream of {b.s1_tokens()} tokens ({n_req} streams one after another per repeat, median of {repeats})", ""]
    md.append(table(
        ["metric", "direct", gw.kind, f"{gw.kind} / direct", "target"],
        [
            ["events/s (one stream)", d["stream_events_per_s"], g["stream_events_per_s"], ratio(g["stream_events_per_s"], d["stream_events_per_s"]), "reported"],
            ["server CPU ms per 1000 events", d["target_cpu_us_per_event"], g["target_cpu_us_per_event"], "-", f"<= 20 ({verdict(res['targets']['met'])})"],
            ["client CPU ms per 1000 events", d["client_cpu_us_per_event"], g["client_cpu_us_per_event"], "-", "-"],
            ["events per client read (write batching)", d["events_per_read"], g["events_per_read"], "-", "-"],
            ["errors (all repeats)", str(int(d["errors_total"])), str(int(g["errors_total"])), "-", "0"],
        ],
    ))
    if b.args.obs_off:
        n = median_of(reps["respline-noobs"])
        res["respline-noobs"] = n
        md += ["", f"`--obs-off`: respline (no obs) {fmt(n['stream_events_per_s'])} events/s, {fmt(n['target_cpu_us_per_event'])} us CPU/event; "
               f"respline (logging at info, metrics on) {fmt(g['stream_events_per_s'])} events/s, {fmt(g['target_cpu_us_per_event'])} us CPU/event."]
    md.append("")
    md.append("Server CPU is user + system time of the server's processes (the bench upstream for direct), from /proc; "
              "ms per 1000 events = us per event.")
    return res, "\n".join(md)


def parse_level(level: str) -> tuple[int, float]:
    """``"100"``: 100 closed-loop streams at full upstream speed; ``"100@50"``: paced at 50 tokens/s."""
    streams, _, rate = str(level).partition("@")
    return int(streams), float(rate or 0)


def scenario2(b: Bench, gw: Target, levels: list[str] | None = None, peers: list[Target] | None = None) -> tuple[dict, str]:
    """1, 10, 100, 1000 concurrent streams at full upstream speed, and 100 paced at a realistic
    rate: aggregate events/s, TTFB p50/p99, errors."""
    if levels is None:
        levels = ["1", "10", "100", "1000", "100@20", "100@50"]
    repeats = b.args.repeats
    model = b.s2_model()
    floor = [] if b.args.no_floor else [b.start_floor()]
    targets = [b.direct(), gw] + floor + (peers or [])
    res: dict = {"tokens": b.s2_tokens(), "levels": {}}
    rows = []
    for t in targets:
        b.client(t, {"workers": 4, "requests": 8, "body": t.stream_body(model), **t.markers()}, timeout=120)
    for label in levels:
        c, rate = parse_level(label)
        n_req = max(c, 10) if b.quick else (max(2 * c, 40) if c <= 100 else c)
        level_model = f"{model}-r{rate:g}" if rate else model
        reps: dict[str, list] = {t.kind: [] for t in targets}
        for i in range(repeats):
            for t in targets:
                cfg = {"workers": c, "requests": n_req, "body": t.stream_body(level_model), "timeout": 300, "max_seconds": 600, **t.markers()}
                if rate:  # paced streams start spread over one stream's length, not in step
                    cfg["stagger"] = b.s2_tokens() / rate
                reps[t.kind].append(stream_metrics(b.measure(t, cfg)))
            log(f"scenario 2 @{label} repeat {i + 1}/{repeats}: " + ", ".join(f"{k} {v[-1]['events_per_s']:.0f} ev/s ttfb p50 {fmt(v[-1]['ttfb_p50_ms'], 2)} ms err {v[-1]['errors']}" for k, v in reps.items()))
        meds = {k: median_of(v) for k, v in reps.items()}
        d = meds["direct"]
        level = {"streams": c, "tokens_per_s": rate or None, "requests": n_req, **meds, "repeats": reps}
        for t in targets[1:]:
            g = meds[t.kind]
            level[f"{t.kind}_added_ttfb_p50_ms"] = _sub(g["ttfb_p50_ms"], d["ttfb_p50_ms"])
            level[f"{t.kind}_added_ttfb_p99_ms"] = _sub(g["ttfb_p99_ms"], d["ttfb_p99_ms"])
            rows.append([
                label, t.kind, g["events_per_s"], ratio(g["events_per_s"], d["events_per_s"]), g["events_per_stream"],
                g["ttfb_p50_ms"], g["ttfb_p99_ms"], level[f"{t.kind}_added_ttfb_p50_ms"], level[f"{t.kind}_added_ttfb_p99_ms"],
                g["ttft_p50_ms"], g["ttft_p99_ms"], g["target_cpu_us_per_event"], str(int(g["errors_total"])),
            ])
        rows.append([label, "direct", d["events_per_s"], "1", d["events_per_stream"], d["ttfb_p50_ms"], d["ttfb_p99_ms"], "-", "-", d["ttft_p50_ms"], d["ttft_p99_ms"], d["target_cpu_us_per_event"], str(int(d["errors_total"]))])
        if c == 100:  # the targets: at full speed and paced
            g = meds[gw.kind]
            a50, a99 = level[f"{gw.kind}_added_ttfb_p50_ms"], level[f"{gw.kind}_added_ttfb_p99_ms"]
            level["targets"] = {"added_ttfb_p50_ms_max": 2, "added_ttfb_p99_ms_max": 10,
                                "p50_met": a50 is not None and a50 < 2, "p99_met": a99 is not None and a99 < 10}
            if "litellm" in meds and meds["litellm"]["events_per_s"]:
                level["targets"]["vs_litellm"] = g["events_per_s"] / meds["litellm"]["events_per_s"]
                level["targets"]["vs_litellm_met"] = level["targets"]["vs_litellm"] >= 3
        res["levels"][label] = level
    for f in floor:
        b.stop(f)
    md = [f"### Scenario 2: concurrent streams of {b.s2_tokens()} tokens (median of {repeats}; {'requests per level = max(streams, 10)' if b.quick else 'requests per level = max(2 x streams, 40), 1 per stream at 1000'})", ""]
    md.append(table(
        ["streams", "target", "events/s", "/ direct", "events/stream", "TTFB p50 ms", "TTFB p99 ms", "added p50", "added p99", "first token p50 ms", "first token p99 ms", "server CPU us/event", "errors"],
        rows,
    ))
    for label, lv in res["levels"].items():
        t100 = lv.get("targets")
        if not t100:
            continue
        how = f"paced at {lv['tokens_per_s']:g} tokens/s" if lv["tokens_per_s"] else "at full upstream speed (closed loop, respline CPU-bound)"
        md.append("")
        line = (f"At 100 streams {how}: added TTFB p50 {fmt(lv[f'{gw.kind}_added_ttfb_p50_ms'], 2)} ms (target < 2: {verdict(t100['p50_met'])}), "
                f"p99 {fmt(lv[f'{gw.kind}_added_ttfb_p99_ms'], 2)} ms (target < 10: {verdict(t100['p99_met'])})")
        if "vs_litellm" in t100:
            line += f"; {gw.kind} / litellm events/s = {t100['vs_litellm']:.2f} (target >= 3: {verdict(t100['vs_litellm_met'])})"
        md.append(line + ".")
        if floor:
            md.append(f"The hypercorn floor there (`floor.py`: hypercorn with an app that answers at once, no upstream): added TTFB p50 "
                      f"{fmt(lv['floor_added_ttfb_p50_ms'], 2)} ms, p99 {fmt(lv['floor_added_ttfb_p99_ms'], 2)} ms; "
                      f"{fmt(lv['floor']['target_cpu_us_per_event'], 1)} us of server CPU per event.")
    md.append("")
    md.append("TTFB: request written -> first response byte. First token: -> first content delta (`output_text.delta` through a gateway). "
              "Added = gateway minus direct, medians of the per-repeat percentiles.")
    return res, "\n".join(md)


def _sub(a, b):
    return None if a is None or b is None else a - b


def scenario3(b: Bench) -> tuple[dict, str]:
    """10,000 open streams paced at one token a second: RSS per open stream, errors."""
    # One respline process holds two sockets per stream (client + upstream), so where the hard
    # RLIMIT_NOFILE is below that, the streams are spread over worker processes (--workers N,
    # SQLite store shared), each holding its share. The client and the upstream hold one each.
    per_proc = (b.nofile - 200) // 2
    wanted = 300 if b.quick else b.args.hold_streams
    # workers share one listening socket, so their shares are uneven: each is sized for 80%
    workers = 1 if wanted <= per_proc else -(-wanted // int(per_proc * 0.8))
    streams = min(wanted, b.nofile - 200)
    note = ""
    if workers > 1:
        note = (f"{workers} respline worker processes (`--workers {workers}`, SQLite store): the hard RLIMIT_NOFILE here is "
                f"{b.nofile} and one process needs two descriptors per stream. RSS is summed over all of respline's processes.")
    if streams < wanted:
        note += (f" Capped at {streams} streams: the client and the upstream hold one descriptor per stream in one process each, "
                 f"under the same limit of {b.nofile}.")
    repeats = 1 if b.quick else b.args.hold_repeats
    ramp_s = 30 if b.quick else b.args.hold_ramp_seconds
    rate = b.args.hold_rate
    hold_tokens = int((ramp_s + 120) * rate) + 10  # paced streams outlast ramp + measurement; the client closes them
    model = f"bench-n{hold_tokens}-r{rate:g}"
    sources = [f"127.0.0.{i}" for i in range(2, 10)]
    reps: dict[str, list] = {"direct": [], "respline": []}
    for i in range(repeats):
        for kind in ("direct", "respline"):
            t = b.direct() if kind == "direct" else (
                b.start_respline(workers=workers, store=f"sqlite:{b.tmp / f's3-{i}.db'}") if workers > 1 else b.start_respline())
            try:
                b.client(t, {"workers": 2, "requests": 4, "body": t.stream_body("bench-n20"), **t.markers()}, timeout=60)
                time.sleep(0.5)
                rss0, cpu0 = t.rss(), t.cpu()
                body = {"body_file": b.body_file(t.codex_body(model, stream=True))} if b.args.hold_codex else {"body": t.stream_body(model)}
                cfg = {"mode": "hold", "streams": streams, "ramp_parallel": 100, "ramp_seconds": ramp_s, "hold_seconds": 120,
                       "source_ips": sources, **body, **t.markers(), "host": "127.0.0.1", "port": t.port, "path": t.path}
                m = hold_run(b, t, cfg, rss0, cpu0)
                reps[kind].append(m)
                log(f"scenario 3 repeat {i + 1}/{repeats} {kind}: {m['opened']}/{streams} open in {m['ramp_s']:.1f}s, "
                    f"{m['rss_per_stream_kb']:.1f} KB/stream, errors {m['errors']} {m['error_reasons']}")
            finally:
                if kind != "direct":
                    b.stop(t)
    d, g = median_of(reps["direct"]), median_of(reps["respline"])
    kb = g["rss_per_stream_kb"]
    met = kb is not None and kb < 64 and g["errors_total"] == 0 and g["opened"] == streams and streams >= 10000 and not b.args.hold_codex
    res = {"streams": streams, "wanted": wanted, "workers": workers, "note": note, "direct": d, "respline": g, "repeats": reps,
           "targets": {"rss_per_stream_kb_max": 64, "rss_met": kb is not None and kb < 64, "errors_met": g["errors_total"] == 0, "met": met}}
    what = "Codex-sized requests (~100 KB of input items, 20 tools, store: false)" if b.args.hold_codex else "small requests"
    md = [f"### Scenario 3: {streams} open streams paced at {rate:g} token/s, {what} (median of {repeats}; opening stops after {ramp_s:g} s)", ""]
    md.append(table(
        ["metric", "direct (bench upstream)", "respline", "target"],
        [
            ["streams open (first token seen)", d["opened"], g["opened"], str(streams)],
            ["ramp time s (100 connecting at once)", d["ramp_s"], g["ramp_s"], "-"],
            ["server RSS before, MB", _mb(d["rss_before"]), _mb(g["rss_before"]), "-"],
            ["server RSS with all open, MB", _mb(d["rss_open"]), _mb(g["rss_open"]), "-"],
            ["RSS per open stream, KB", d["rss_per_stream_kb"], g["rss_per_stream_kb"],
             "(the target is for small requests)" if b.args.hold_codex else f"< 64 ({verdict(res['targets']['rss_met'])})"],
            ["first token p50 / p99 ms", f"{fmt(d['ttft_p50_ms'])} / {fmt(d['ttft_p99_ms'])}", f"{fmt(g['ttft_p50_ms'])} / {fmt(g['ttft_p99_ms'])}", "-"],
            ["server CPU while holding, % of a core", d["hold_cpu_pct"], g["hold_cpu_pct"], "-"],
            ["client / bench upstream CPU while holding, % of a core", f"{fmt(d['client_cpu_pct'])} / {fmt(d['upstream_cpu_pct'])}",
             f"{fmt(g['client_cpu_pct'])} / {fmt(g['upstream_cpu_pct'])}", "-"],
            ["errors (all repeats)", str(int(d["errors_total"])), str(int(g["errors_total"])), f"0 ({verdict(res['targets']['errors_met'])})"],
        ],
    ))
    if note:
        md += ["", note]
    return res, "\n".join(md)


def _mb(v):
    return None if v is None else v / 1e6


def hold_run(b: Bench, t: Target, cfg: dict, rss0: int, cpu0: float) -> dict:
    path = b.tmp / "hold.json"
    path.write_text(json.dumps(cfg))
    p = subprocess.Popen([sys.executable, str(BENCH / "loadgen.py"), "--config", str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_die_with_parent)
    t0 = time.monotonic()
    try:
        line = p.stdout.readline()
        if not line:
            raise RuntimeError(f"hold client ended early: {p.stderr.read()[-2000:]}")
        opened = json.loads(line)
        time.sleep(3)
        samples = []
        c0, w0, cc0, u0 = t.cpu(), time.monotonic(), cpu_seconds(p.pid), b.direct().cpu()
        for _ in range(4):
            samples.append(t.rss())
            time.sleep(1)
        wall = time.monotonic() - w0
        hold_cpu = (t.cpu() - c0) / wall * 100
        client_cpu = (cpu_seconds(p.pid) - cc0) / wall * 100
        upstream_cpu = (b.direct().cpu() - u0) / wall * 100
        rss_open = max(samples)
        p.stdin.write("close\n")
        p.stdin.flush()
        out, err = p.communicate(timeout=180)
    except BaseException:
        p.kill()
        p.wait()
        raise
    r = json.loads(out.strip().splitlines()[-1])
    n = max(1, opened["opened"])
    return {
        "opened": opened["opened"],
        "ramp_s": opened["ramp_seconds"],
        "rss_before": rss0,
        "rss_open": rss_open,
        "rss_per_stream_kb": (rss_open - rss0) / n / 1024,
        "hold_cpu_pct": hold_cpu,
        "client_cpu_pct": client_cpu,
        "upstream_cpu_pct": upstream_cpu,
        "ttft_p50_ms": _ms(pct(r["ttft"], 50)),
        "ttft_p99_ms": _ms(pct(r["ttft"], 99)),
        "errors": sum(r["errors"].values()),
        "error_reasons": r["errors"],
        "finished_early": r["finished_early"],
        "events": r["events"],
        "total_s": time.monotonic() - t0,
        "server_cpu_s": t.cpu() - cpu0,
        "ramp_timeline": r.get("timeline", []),  # [seconds, streams open, errors] every 5 s
    }


def scenario4(b: Bench, gw: Target, peers: list[Target] | None = None) -> tuple[dict, str]:
    """Non-streaming requests/s with a Codex-sized request (~100 KB input, 20 tools)."""
    repeats = b.args.repeats
    workers = 4 if b.quick else 8
    n_req = 20 if b.quick else 200
    model = b.s4_model()
    targets = [b.direct(), gw] + (peers or [])
    reps: dict[str, list] = {t.kind: [] for t in targets}
    files = {t.kind: b.body_file(t.codex_body(model)) for t in targets}
    sizes = {k: os.path.getsize(v) for k, v in files.items()}
    for t in targets:
        b.client(t, {"workers": 2, "requests": 4, "body_file": files[t.kind], **t.markers(False)}, timeout=120)
    for i in range(repeats):
        for t in targets:
            r = b.measure(t, {"workers": workers, "requests": n_req, "body_file": files[t.kind], "timeout": 120, **t.markers(False)})
            reps[t.kind].append({
                "requests_per_s": r["ok"] / r["wall"] if r["wall"] else 0.0,
                "latency_p50_ms": _ms(pct(r["durations"], 50)),
                "latency_p99_ms": _ms(pct(r["durations"], 99)),
                "server_cpu_ms_per_request": r["target_cpu"] / max(1, r["ok"]) * 1000,
                "client_cpu_ms_per_request": r["client_cpu"] / max(1, r["ok"]) * 1000,
                "errors": sum(r["errors"].values()),
                "error_reasons": r["errors"],
            })
        log(f"scenario 4 repeat {i + 1}/{repeats}: " + ", ".join(f"{k} {v[-1]['requests_per_s']:.0f} req/s err {v[-1]['errors']}" for k, v in reps.items()))
    meds = {k: median_of(v) for k, v in reps.items()}
    d = meds["direct"]
    res = {"workers": workers, "requests": n_req, "body_bytes": sizes, **meds, "repeats": reps}
    rows = []
    for t in targets:
        g = meds[t.kind]
        rows.append([t.kind, f"{sizes[t.kind] / 1000:.0f} KB", g["requests_per_s"], ratio(g["requests_per_s"], d["requests_per_s"]),
                     g["latency_p50_ms"], g["latency_p99_ms"], g["server_cpu_ms_per_request"], str(int(g["errors_total"]))])
    if "litellm" in meds and meds["litellm"]["requests_per_s"]:
        res["vs_litellm"] = meds[gw.kind]["requests_per_s"] / meds["litellm"]["requests_per_s"]
    md = [f"### Scenario 4: non-streaming Codex-sized requests ({workers} concurrent, {n_req} per repeat, median of {repeats})", ""]
    md.append(table(["target", "request body", "requests/s", "/ direct", "latency p50 ms", "latency p99 ms", "server CPU ms/request", "errors"], rows))
    md += ["", "Direct sends the same conversation as a Chat Completions body (non-streamed answer); a gateway gets the "
           "Responses body (~100 KB of input items, 20 tools, `stream: false`), translates it and asks the upstream for its whole 20-token answer (a non-streaming request does since `9801e0b`)."]
    return res, "\n".join(md)


def scenario5(b: Bench) -> tuple[dict, str]:
    """State shared by several respline processes: one host vs several over PostgreSQL vs
    SQLite (one host, or --workers N on one file), 100 ``store: true`` streams in all; events/s
    and the time the store adds to each response (bench/store_timing.py)."""
    help_text = b.respline_help()
    n = b.args.workers or max(2, os.cpu_count() or 2)
    hosts = S5_HOSTS
    pg, pg_note = s5_postgres()
    rows, res = [], {"supported": True, "workers": n, "hosts": hosts, "runs": {}, "postgres": pg_note or "ok"}
    setups: list[tuple[str, int, int, str]] = [("1 host, SQLite", 1, 0, "sqlite")]  # label, hosts, workers, store
    if "--workers" in help_text:
        setups.append((f"1 host --workers {n}, SQLite", 1, n, "sqlite"))
    if pg is not None:
        setups += [
            ("1 host, PostgreSQL", 1, 0, "postgres"),
            (f"{hosts} hosts, PostgreSQL", hosts, 0, "postgres"),
            # the same database without waiting for its disk at each commit: the store's own share
            ("1 host, PostgreSQL, synchronous_commit off", 1, 0, "postgres-async"),
        ]
    n_req = 100 if b.quick else 400
    body = json.dumps({"model": b.s2_model(), "input": PROMPT, "stream": True})  # store: true
    paced = json.dumps({"model": S5_PACED_MODEL, "input": PROMPT, "stream": True})
    try:
        for label, n_hosts, workers, kind in setups:
            schema = pg.new() if kind.startswith("postgres") else None
            store = schema if schema is not None else f"sqlite:{b.tmp / ('s5-%d-%d.db' % (n_hosts, workers))}"
            if kind == "postgres-async":
                store += "%20-csynchronous_commit%3Doff"  # a second option in the URL's options
            targets = [s5_start(b, store, i, workers) for i in range(n_hosts)]
            try:
                for t in targets:  # warm-up: connections, pools, caches
                    b.client(t, {"workers": 4, "requests": S5_WARMUP, "body": body, **t.markers()}, timeout=120)
                reps, windows = [], {"full": [], "paced": []}
                for _ in range(b.args.repeats):
                    t0 = time.time()
                    reps.append(stream_metrics(s5_measure(b, targets, body, n_req)))
                    windows["full"].append((t0, time.time()))
                t0 = time.time()
                paced_m = stream_metrics(s5_measure(b, targets, paced, n_req, stagger=S5_PACED_SECONDS))
                windows["paced"].append((t0 + S5_PACED_SECONDS, time.time()))  # after the staggered start
            finally:
                for t in targets:
                    b.stop(t)
                if schema is not None:
                    pg.drop(schema)
            m = median_of(reps)
            full, slow = s5_store_times(targets, windows["full"]), s5_store_times(targets, windows["paced"])
            run = {**m, "store_full_speed": full, "paced": {**paced_m, "store": slow}, "repeats": reps}
            if kind.startswith("postgres") and slow.get("finish_p50_ms") is not None:
                run["target_met"] = slow["finish_p50_ms"] < 1.0 and slow["finish_p99_ms"] < 5.0
            res["runs"][label] = run
            rows.append([
                label, m["events_per_s"], m["ttfb_p50_ms"], m["target_cpu_us_per_event"],
                full.get("finish_p50_ms"), full.get("finish_p99_ms"),
                slow.get("finish_p50_ms"), slow.get("finish_p99_ms"), slow.get("begin_p50_ms"), slow.get("begin_p99_ms"),
                str(int(m["errors_total"] + sum(paced_m["error_reasons"].values()))),
            ])
            log(f"scenario 5 {label}: {m['events_per_s']:.0f} events/s; store before the terminal event at full speed "
                f"p50 {fmt(full.get('finish_p50_ms'), 2)} p99 {fmt(full.get('finish_p99_ms'), 2)} ms, paced "
                f"p50 {fmt(slow.get('finish_p50_ms'), 2)} p99 {fmt(slow.get('finish_p99_ms'), 2)} ms")
        if pg is not None:
            res["durable_floor"] = s5_durable_floor(pg.base, 100 if b.quick else 300)
    finally:
        if pg is not None:
            pg.close()
    md = [f"### Scenario 5: state shared by several processes (100 streams in all, `store: true`, median of {b.args.repeats})", ""]
    md.append(table(
        ["server", "events/s", "TTFB p50 ms", "server CPU us/event", "store before terminal, full speed p50 ms", "p99 ms",
         "paced p50 ms", "p99 ms", "store before first event, paced p50 ms", "p99 ms", "errors"],
        rows,
    ))
    md += ["", f"Full speed: {b.s2_tokens()}-token streams back to back (events/s; the server's CPU is the limit, and the "
           f"store's time there is mostly waiting for it). Paced: {S5_PACED_MODEL} (20 tokens at 10 tokens/s, the 100 streams' "
           f"starts spread over 2 s), where the server has CPU to spare and the store's time is its own. {hosts} hosts: {hosts} respline processes on this machine, each with its "
           "own load client and its share of the streams, as behind a balancer. Store before terminal: `Gateway.finish`, "
           "the writes a stored response awaits between its last upstream read and its terminal event; before first "
           "event: its lease and in_progress record (bench/store_timing.py). Target over PostgreSQL, paced: p50 under "
           "1 ms, p99 under 5 ms. `synchronous_commit off` (a DSN option here; a role or database setting in "
           "PostgreSQL) commits without waiting for the WAL to reach the disk: the row shows what the store costs "
           "without the disk's flush."]
    for label, run in res["runs"].items():
        if "target_met" in run:
            md.append(f"- {label}: {verdict(run['target_met'])}")
    floor = res.get("durable_floor")
    if floor:
        md += ["", "One write at a time, every 10 ms, no other load (`bench/store_write.py --floor`): respline's final write "
               f"p50 {fmt(floor['write'][0], 2)} / p99 {fmt(floor['write'][1], 2)} ms; the least a durable write costs on this "
               f"server (a one-row INSERT, committed, the same way) p50 {fmt(floor['floor'][0], 2)} / p99 {fmt(floor['floor'][1], 2)} ms."]
    if pg_note:
        md += ["", f"PostgreSQL rows missing: {pg_note}"]
    return res, "\n".join(md)


def s5_durable_floor(dsn: str, n: int) -> dict | None:
    """``store_write.py --floor``: respline's final write and a one-row committed INSERT, one at
    a time at the same pace: (p50, p99) ms of each, or None if it could not run."""
    try:
        out = subprocess.run([sys.executable, str(BENCH / "store_write.py"), "--dsn", dsn, "--n", str(n), "--floor"],
                             capture_output=True, text=True, timeout=300).stdout
    except subprocess.TimeoutExpired:
        return None
    found = re.findall(r"p50 ([0-9.]+) p90 [0-9.]+ p99 ([0-9.]+)", out)
    if len(found) != 2:
        log(f"scenario 5: store_write.py --floor gave no figures: {out.strip()[-300:]}")
        return None
    (w50, w99), (f50, f99) = ((float(a), float(b)) for a, b in found)
    return {"write": [w50, w99], "floor": [f50, f99], "writes": n}


S5_HOSTS = 3
S5_WARMUP = 8  # requests per host before the measured ones
S5_PACED_MODEL = "bench-n20-r10"  # 20 tokens at 10 tokens/s: 2 s per stream, 1,000 events/s at 100 streams
S5_PACED_SECONDS = 2.0  # the paced streams' starts are spread over one stream's length


class _PgSchemas:
    """Fresh schemas for scenario 5's PostgreSQL rows in the server at ``$RESPLINE_BENCH_PG_DSN``
    (or ``$RESPLINE_TEST_PG_DSN``, else the local one the tests use), each dropped after its row."""

    def __init__(self, base: str) -> None:
        import psycopg

        self.base = base
        self.admin = psycopg.connect(base, autocommit=True, connect_timeout=5)
        self.names: dict[str, str] = {}  # url -> schema

    def new(self) -> str:
        from urllib.parse import quote

        name = "bench_" + os.urandom(5).hex()
        self.admin.execute(f"CREATE SCHEMA {name}")
        sep = "&" if "?" in self.base else "?"
        url = f"{self.base}{sep}options={quote('-csearch_path=' + name, safe='')}"
        self.names[url] = name
        return url

    def drop(self, url: str) -> None:
        self.admin.execute(f"DROP SCHEMA IF EXISTS {self.names.pop(url)} CASCADE")

    def close(self) -> None:
        self.admin.close()


def s5_postgres() -> tuple[_PgSchemas | None, str | None]:
    base = os.environ.get("RESPLINE_BENCH_PG_DSN") or os.environ.get("RESPLINE_TEST_PG_DSN") or "postgresql://postgres@127.0.0.1:5432/test"
    if not base.startswith(("postgresql://", "postgres://")):
        return None, "the PostgreSQL DSN is not a postgresql:// URL"
    try:
        return _PgSchemas(base), None
    except ImportError:
        return None, "psycopg is not installed (pip install 'respline[postgres]')"
    except Exception as exc:  # noqa: BLE001 - any reason is reported, and the other rows run
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        return None, f"no PostgreSQL at {base.split('@')[-1]}: {first}"


def s5_start(b: Bench, store: str, index: int, workers: int) -> Target:
    """One host: respline under bench/store_timing.py (one process), or ``respline serve
    --workers N`` (whose workers are not timed)."""
    assert b.upstream is not None
    port = free_port()
    cfg = b.tmp / "s5.toml"
    cfg.write_text('[server]\nlog_level = "warning"\n\n[limits]\nupstream_connections = 20000\n')
    args = [
        "serve", "--host", "127.0.0.1", "--port", str(port), "--upstream", f"http://127.0.0.1:{b.upstream.port}/v1",
        "--config", str(cfg), "--store", store, "--secret-file", str(b.tmp / "secret"),
    ]
    env = dict(os.environ)
    times = b.tmp / f"s5-times-{port}.json"
    if workers:
        cmd = [b.respline_bin, *args, "--workers", str(workers)]
    elif b.args.respline and not b.args.rev:
        cmd = [b.respline_bin, *args]  # another respline command: not timed
    else:
        cmd = [sys.executable, str(BENCH / "store_timing.py"), *args]
        env["BENCH_STORE_TIMES"] = str(times)
        if b.args.rev:
            env["PYTHONPATH"] = str(Path(b.respline_bin).parent)
    p = Proc(f"respline{index}", cmd, port, "/health", b.tmp, env=env)
    b.procs.append(p)
    p.wait_ready(60)
    t = Target("respline", port, p)
    t.times = times  # type: ignore[attr-defined]
    return t


def s5_measure(b: Bench, targets: list[Target], body: str, n_req: int, stagger: float = 0.0) -> dict:
    """100 streams split over the hosts, one load client each, started together; their
    results summed (events, requests, errors, CPU), wall the longest, latencies pooled.
    ``stagger``: the streams start spread over this many seconds (and what starts meanwhile is
    warm-up), so paced streams of one length do not all end at the same moment."""
    k = len(targets)
    cpu0, up0 = [t.cpu() for t in targets], b.direct().cpu()
    procs = []
    for i, t in enumerate(targets):
        cfg = {"workers": 100 // k + (i < 100 % k), "requests": n_req // k + (i < n_req % k), "body": body, "timeout": 300,
               "stagger": stagger, **t.markers(), "host": "127.0.0.1", "port": t.port, "path": t.path}
        path = b.tmp / f"s5-client-{i}.json"
        path.write_text(json.dumps(cfg))
        procs.append(subprocess.Popen([sys.executable, str(BENCH / "loadgen.py"), "--config", str(path)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_die_with_parent))
    results = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        if p.returncode != 0:
            raise RuntimeError(f"load client failed ({p.returncode}):\n{err[-3000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    merged: dict = {"errors": {}, "ttfb": [], "ttft": []}
    for r in results:
        for key in ("events", "events_all", "requests", "reads", "client_cpu"):
            merged[key] = merged.get(key, 0) + r.get(key, 0)
        merged["wall"] = max(merged.get("wall", 0.0), r["wall"])
        merged["ttfb"] += r["ttfb"]
        merged["ttft"] += r["ttft"]
        for reason, count in r["errors"].items():
            merged["errors"][reason] = merged["errors"].get(reason, 0) + count
    merged["target_cpu"] = sum(t.cpu() - c for t, c in zip(targets, cpu0))
    merged["upstream_cpu"] = b.direct().cpu() - up0
    return merged


def s5_store_times(targets: list[Target], windows: list[tuple[float, float]]) -> dict:
    """Percentiles (ms) of the hosts' store times that ended within ``windows``; {} when not timed."""
    pooled: dict[str, list[float]] = {"finish": [], "begin": [], "progress": []}
    for t in targets:
        try:
            data = json.loads(t.times.read_text())  # type: ignore[attr-defined]
        except (OSError, ValueError):
            continue
        for key in pooled:
            pooled[key] += [d for end, d in data.get(key, []) if any(a <= end <= z for a, z in windows)]
    out: dict = {}
    for key, values in pooled.items():
        if values:
            out[f"{key}_n"] = len(values)
            out[f"{key}_p50_ms"] = _ms(pct(values, 50))
            out[f"{key}_p99_ms"] = _ms(pct(values, 99))
            out[f"{key}_max_ms"] = _ms(max(values))
    return out


# --- scenario 6: paced streams, many of them (gateway benchmarks' definitions) ------------------


def paced_targets(b: Bench, gw: Target, peers: list[Target] | None) -> tuple[list[Target], list[Target]]:
    """Scenario 6's targets: direct, respline, respline --workers N, the hypercorn floor,
    respline with observability off (``--obs-off``), the peers. Returns (all, started here)."""
    started: list[Target] = []
    if b.args.paced_workers > 1:
        started.append(b.start_respline(workers=b.args.paced_workers, store=f"sqlite:{b.tmp / 'paced.db'}", kind=f"respline-w{b.args.paced_workers}"))
    if not b.args.no_floor:
        started.append(b.start_floor())
        if b.args.paced_workers > 1:  # the floor for the --workers row: as many floor processes
            started.append(b.start_floor(workers=b.args.paced_workers))
    only = {k.strip() for k in b.args.paced_targets.split(",") if k.strip()}
    # the same respline writing every body message through hypercorn ([server] direct_write =
    # false): only when asked for, beside "respline", so both write paths run interleaved
    hc = [b.start_respline(kind="respline-hc")] if "respline-hc" in only else []
    targets = [b.direct(), gw, *hc] + started[:1] + ([b.obs_off_target()] if b.args.obs_off else []) + started[1:] + (peers or [])
    started += hc
    if only:  # a name picks that target; "floor" picks the floor with and without workers
        targets = [t for t in targets if t.direct or t.kind in only or (t.kind.startswith("floor") and "floor" in only)]
    return targets, started


def fleet(b: Bench, t: Target, cfg: dict, *, timeout: float = 300) -> dict:
    """One fleet-mode client run (loadgen.py) against ``t``, with the server CPU around it."""
    cfg = {"mode": "fleet", "timeout": 60, "max_seconds": 240, **cfg}
    return b.measure(t, cfg, timeout=timeout)


def _pct_of(values: list[float], q: float) -> float | None:
    return _ms(pct(values, q))


def ladder_metrics(r: dict, level: int) -> dict:
    """One run of the clean-stream ladder: clean or not, and what the streams saw."""
    errors = sum(r["errors"].values())
    streams = r["ok"]
    gp = r["gap_pcts"]
    return {
        "streams": level,
        "exchanges": r["requests"],
        "ok": streams,
        "errors": errors,
        "error_reasons": r["errors"],
        "clean": errors == 0 and r["streams_over_limit"] == 0 and streams == r["requests"] and streams > 0,
        "streams_over_40ms": r["streams_over_limit"],
        "max_gap_ms": _ms(max(r["max_gaps"])) if r["max_gaps"] else None,
        "gap_p50_ms": _ms(gp["50"]),
        "gap_p99_ms": _ms(gp["99"]),
        "gap_p999_ms": _ms(gp["99.9"]),
        "ttft_p50_ms": _pct_of(r["ttft"], 50),
        "ttft_p99_ms": _pct_of(r["ttft"], 99),
        "ttfb_p99_ms": _pct_of(r["ttfb"], 99),
        "late_frames": r["late_frames"],
        "late_burst": r["late_burst"],
        "cpu_us_per_token": r["target_cpu"] / (streams * PACED_TOKENS) * 1e6 if streams else None,
        "upstream_cpu_us_per_token": r["upstream_cpu"] / (streams * PACED_TOKENS) * 1e6 if streams else None,
        "client_cpu_us_per_token": r["client_cpu"] / (streams * PACED_TOKENS) * 1e6 if streams else None,
        "server_cpu_pct": r["target_cpu"] / r["wall"] * 100 if r["wall"] else None,
        "late": r["late"][:200],
    }


def rate_metrics(r: dict, rate: float) -> dict:
    errors = sum(r["errors"].values())
    p99 = _pct_of(r["durations"], 99)
    return {
        "rate": rate,
        "requests": r["requests"],
        "ok": r["ok"],
        "errors": errors,
        "error_reasons": r["errors"],
        "achieved_per_s": r["ok"] / r["wall"] if r["wall"] else 0.0,
        "latency_p50_ms": _pct_of(r["durations"], 50),
        "latency_p99_ms": p99,
        "held": errors == 0 and r["ok"] == r["requests"] and p99 is not None and p99 < 1000,
        "cpu_ms_per_request": r["target_cpu"] / r["ok"] * 1000 if r["ok"] else None,
        "server_cpu_pct": r["target_cpu"] / r["wall"] * 100 if r["wall"] else None,
    }


def climb(b: Bench, targets: list[Target], steps: list, run, what: str) -> dict:
    """Each repeat climbs ``steps`` for every target, interleaved step by step, and stops a
    target after two steps in a row that failed (``run`` returns metrics with "clean" or
    "held"): one stall of this shared machine does not end a climb. Returns {kind: [per
    repeat {step: metrics}]}."""
    out: dict[str, list] = {t.kind: [] for t in targets}
    for i in range(b.args.repeats):
        climbing = list(targets)
        failed: dict[str, int] = {}
        for t in targets:
            out[t.kind].append({})
        for step in steps:
            for t in list(climbing):
                m = run(t, step)
                out[t.kind][-1][str(step)] = m
                failed[t.kind] = 0 if (m.get("clean") or m.get("held")) else failed.get(t.kind, 0) + 1
                if failed[t.kind]:
                    time.sleep(3)  # an overloaded server drains what it was left with before the next run
                if failed[t.kind] >= 2:
                    climbing.remove(t)
            log(f"scenario 6 {what} {step} repeat {i + 1}/{b.args.repeats}: " + ", ".join(
                f"{t.kind} {'ok' if (out[t.kind][-1].get(str(step), {}).get('clean') or out[t.kind][-1].get(str(step), {}).get('held')) else 'FAIL'}"
                for t in targets if str(step) in out[t.kind][-1]))
            if not climbing:
                break
    return out


def _highest(runs: list[dict], steps: list) -> list[float]:
    """Per repeat: the highest step held (0: none)."""
    return [max((step for step in steps if (rep.get(str(step)) or {}).get("clean") or (rep.get(str(step)) or {}).get("held")), default=0)
            for rep in runs]


def scenario6(b: Bench, gw: Target, peers: list[Target] | None = None) -> tuple[dict, str]:
    """Paced streams, many of them, measured the way gateway benchmarks measure: the clean-stream
    ladder, added TTFT and gap at concurrency 1, non-streaming added latency, requests/s."""
    targets, started = paced_targets(b, gw, peers)
    # the row the floor is compared with: one respline process, or the first respline row run
    # (--paced-targets may leave the one process out)
    ref = next((t for t in targets if t.kind == gw.kind), None) or next((t for t in targets if t.kind.startswith("respline")), gw)
    quick = b.quick
    levels = [int(x) for x in b.args.paced_levels.split(",")] if b.args.paced_levels else ([1, 16] if quick else [1, 8, 16, 32, 64, 128, 256, 512])
    rates = [int(x) for x in b.args.rps_levels.split(",")] if b.args.rps_levels else ([250, 1000] if quick else [25, 50, 100, 250, 500, 1000, 1500, 2000, 3000, 4000, 5000, 6000])
    one_streams = 2 if quick else 10
    per_worker = 1 if quick else 3
    stream_s = PACED_TOKENS * PACED_INTERVAL
    parts = set((b.args.paced_parts or "ladder,one,rps").split(","))
    res: dict = {"model": PACED_MODEL, "nonstream_model": NONSTREAM_MODEL, "targets": [t.kind for t in targets], "levels": levels, "rates": rates}
    md = [f"### Scenario 6: paced streams ({PACED_TOKENS} chunks {PACED_INTERVAL * 1000:g} ms apart) and a {NONSTREAM_MODEL[-2:]} ms upstream "
          f"(median of {b.args.repeats}; targets: {', '.join(t.label for t in targets)})", ""]
    try:
        for t in targets:  # warm-up
            fleet(b, t, {"driver": "closed", "workers": 4, "per_worker": 1, "stagger": 0.1, "body": t.stream_body(PACED_MODEL), **t.markers()})
            fleet(b, t, {"driver": "closed", "workers": 4, "per_worker": 5, "body": t.plain_body(NONSTREAM_MODEL), **t.markers(False)})

        def run_level(t: Target, level: int) -> dict:
            n = one_streams if level == 1 else per_worker
            cfg = {"driver": "closed", "workers": level, "per_worker": n, "stagger": stream_s if level > 1 else 0,
                   "source_ips": [f"127.0.0.{i}" for i in range(2, 10)], "body": t.stream_body(PACED_MODEL, store=b.args.paced_store), **t.markers()}
            return ladder_metrics(fleet(b, t, cfg), level)

        if "ladder" in parts:
            ladder = climb(b, targets, levels, run_level, "streams")
            res["ladder"] = {k: {"clean_streams": statistics.median_low(_highest(v, levels)), "clean_streams_repeats": _highest(v, levels), "repeats": v} for k, v in ladder.items()}
            md += [*_ladder_md(res["ladder"], targets, levels), ""]
            md += [*_cpu_md(res["ladder"], targets, levels, ref), ""]

        if "one" in parts:
            one: dict[str, list] = {t.kind: [] for t in targets}
            for i in range(b.args.repeats):
                for t in targets:
                    # level 1 of the ladder again when the ladder did not run
                    lvl = res.get("ladder", {}).get(t.kind, {}).get("repeats", [])
                    m = lvl[i].get("1") if i < len(lvl) and "1" in lvl[i] else run_level(t, 1)
                    r = fleet(b, t, {"driver": "closed", "workers": 1, "per_worker": 30 if quick else 150, "body": t.plain_body(NONSTREAM_MODEL), **t.markers(False)})
                    one[t.kind].append({**{k: m[k] for k in ("ttft_p50_ms", "ttft_p99_ms", "gap_p50_ms", "gap_p99_ms", "max_gap_ms", "clean")},
                                        "plain_p50_ms": _pct_of(r["durations"], 50), "plain_p99_ms": _pct_of(r["durations"], 99),
                                        "plain_errors": sum(r["errors"].values()),
                                        "plain_cpu_ms_per_request": r["target_cpu"] / r["ok"] * 1000 if r["ok"] else None})
                log(f"scenario 6 concurrency 1 repeat {i + 1}/{b.args.repeats}: " + ", ".join(
                    f"{k} ttft p99 {fmt(v[-1]['ttft_p99_ms'], 2)} gap p99 {fmt(v[-1]['gap_p99_ms'], 2)} plain p99 {fmt(v[-1]['plain_p99_ms'], 2)}" for k, v in one.items()))
            res["one"] = {k: {**median_of(v), "repeats": v} for k, v in one.items()}
            d = res["one"]["direct"]
            for k, v in res["one"].items():
                if k != "direct":
                    v["added_ttft_p99_ms"] = _sub(v["ttft_p99_ms"], d["ttft_p99_ms"])
                    v["added_gap_p99_ms"] = _sub(v["gap_p99_ms"], d["gap_p99_ms"])
                    v["added_plain_p99_ms"] = _sub(v["plain_p99_ms"], d["plain_p99_ms"])
            md += [*_one_md(res["one"], targets), ""]

        def run_rate(t: Target, rate: int) -> dict:
            cfg = {"driver": "open", "rate": rate, "seconds": 1 if quick else 3, "preconnect": min(256, max(4, rate // 50)),
                   "timeout": 10, "max_seconds": 20, "source_ips": [f"127.0.0.{i}" for i in range(2, 10)],
                   "body": t.plain_body(NONSTREAM_MODEL), **t.markers(False)}
            return rate_metrics(fleet(b, t, cfg), rate)

        if "rps" in parts:
            rps = climb(b, targets, rates, run_rate, "requests/s")
            res["rps"] = {k: {"held_per_s": statistics.median_low(_highest(v, rates)), "held_repeats": _highest(v, rates), "repeats": v} for k, v in rps.items()}
            md += [*_rps_md(res["rps"], targets, rates), ""]
    finally:
        for t in started:
            b.stop(t)
    res["targets_met"] = _paced_verdicts(res, ref, targets)
    md += _verdict_md(res["targets_met"])
    md += ["", f"Clean: no stream saw a gap over {2 * PACED_INTERVAL * 1000:g} ms between frames (from its first token to its end) and nothing "
           "failed; the figure is the highest level held (a target stops climbing after two levels in a row that were not). Streams start spread over one stream's length "
           f"({stream_s:g} s); each level runs {per_worker} streams per client ({one_streams} at 1). Gap: time between two client reads "
           "that each completed a frame. Late frames: gaps over 25 ms; burst: the most late frames within 20 ms. "
           "Requests/s: open loop at a fixed rate for " + ("1" if quick else "3") + " s, latency from the scheduled arrival; held: p99 < 1 s, "
           "no errors. CPU per paced token: the server's CPU / (streams x 64)."]
    return res, "\n".join(md)


def _cell_ladder(m: dict | None) -> str:
    if m is None:
        return "-"
    txt = fmt(m["max_gap_ms"], 1)
    if not m["clean"]:
        why = f"{m['streams_over_40ms']} >40ms" if m["streams_over_40ms"] else ""
        if m["errors"]:
            why += (", " if why else "") + f"{m['errors']} err"
        return f"~~{txt}~~ ({why})"
    return txt


def _median_step(runs: list[dict], step, key: str):
    return med([r[str(step)][key] for r in runs if str(step) in r])


def _ladder_md(ladder: dict, targets: list[Target], levels: list[int]) -> list[str]:
    rows = []
    for t in targets:
        v = ladder[t.kind]
        last = v["repeats"][-1] if v["repeats"] else {}
        rows.append([t.label, f"**{fmt(v['clean_streams'], 0)}** ({', '.join(str(x) for x in v['clean_streams_repeats'])})"]
                    + [_cell_ladder(last.get(str(lv))) for lv in levels])
    late_rows = []
    for t in targets:
        reps = ladder[t.kind]["repeats"]
        late_rows.append([t.label] + [
            "-" if _median_step(reps, lv, "late_frames") is None else
            f"{fmt(_median_step(reps, lv, 'late_frames'), 0)} / {fmt(_median_step(reps, lv, 'late_burst'), 0)}" for lv in levels])
    return [
        "Clean-stream ladder: the highest clean level (median; each repeat), and the longest gap any stream saw at each level, ms "
        "(last repeat; struck through where the level was not clean):", "",
        table(["target", "clean streams"] + [str(lv) for lv in levels], rows), "",
        "Late frames (gap > 25 ms) / the largest burst of them within 20 ms, median of repeats:", "",
        table(["target"] + [str(lv) for lv in levels], late_rows),
    ]


def _cpu_md(ladder: dict, targets: list[Target], levels: list[int], gw: Target) -> list[str]:
    rows = []
    for t in targets:
        reps = ladder[t.kind]["repeats"]
        rows.append([t.label] + [_median_step(reps, lv, "cpu_us_per_token") for lv in levels])
    out = ["Server CPU per paced token, us (median of repeats; direct: the bench upstream's):", "",
           table(["target"] + [str(lv) for lv in levels], rows)]
    if "floor" in ladder and gw.kind in ladder:
        diffs = []
        for lv in levels:
            a, f = _median_step(ladder[gw.kind]["repeats"], lv, "cpu_us_per_token"), _median_step(ladder["floor"]["repeats"], lv, "cpu_us_per_token")
            if a is not None and f is not None:
                diffs.append(f"{lv}: {a - f:+.1f}")
        out += ["", "respline minus the floor, us per paced token, by level: " + ", ".join(diffs) + "."]
    return out


def _one_md(one: dict, targets: list[Target]) -> list[str]:
    rows = []
    for t in targets:
        v = one[t.kind]
        rows.append([t.label, f"{fmt(v['ttft_p50_ms'], 2)} / {fmt(v['ttft_p99_ms'], 2)}", _signed(v.get("added_ttft_p99_ms")),
                     f"{fmt(v['gap_p50_ms'], 2)} / {fmt(v['gap_p99_ms'], 2)}", _signed(v.get("added_gap_p99_ms")),
                     f"{fmt(v['plain_p50_ms'], 2)} / {fmt(v['plain_p99_ms'], 2)}", _signed(v.get("added_plain_p99_ms")),
                     v["plain_cpu_ms_per_request"]])
    return ["Concurrency 1 (one paced stream at a time; one non-streaming request at a time against the 20 ms upstream):", "",
            table(["target", "TTFT p50 / p99 ms", "added TTFT p99", "gap p50 / p99 ms", "added gap p99", "non-streaming p50 / p99 ms",
                   "added p99", "CPU ms/request"], rows)]


def _signed(v) -> str:
    return "-" if v is None else f"{v:+.2f}"


def _rps_md(rps: dict, targets: list[Target], rates: list[int]) -> list[str]:
    rows = []
    for t in targets:
        v = rps[t.kind]
        last = v["repeats"][-1] if v["repeats"] else {}
        cells = []
        for r in rates:
            m = last.get(str(r))
            if m is None:
                cells.append("-")
            else:
                txt = fmt(m["latency_p99_ms"], 1)
                cells.append(txt if m["held"] else f"~~{txt}~~" + (f" ({m['errors']} err)" if m["errors"] else ""))
        rows.append([t.label, f"**{fmt(v['held_per_s'], 0)}** ({', '.join(str(x) for x in v['held_repeats'])})"] + cells)
    return ["Requests/s against an upstream that takes 20 ms (non-streaming, open loop): the most held with p99 < 1 s (median; each repeat), "
            "and the p99 latency at each rate, ms (last repeat):", "",
            table(["target", "held requests/s"] + [str(r) for r in rates], rows)]


def _paced_verdicts(res: dict, gw: Target, targets: list[Target]) -> dict:
    """Each target's figure for respline (its best row where several run), and beside it the
    hypercorn floor's (``floor``: its best row, one process or --workers), so a target the
    floor itself misses on this machine says so."""
    out: dict = {}
    respl = [t.kind for t in targets if t.kind.startswith("respline") and t.kind not in ("respline-noobs", "respline-hc")]
    floors = [t.kind for t in targets if t.kind.startswith("floor")]

    def best(part: str, key: str, kinds: list[str]) -> int | None:
        vals = [res[part][k][key] or 0 for k in kinds if k in res[part]]
        return int(max(vals)) if vals else None  # (a level or a rate: a whole number)

    if "ladder" in res:
        v = best("ladder", "clean_streams", respl) or 0
        out["clean_streams"] = {"value": v, "target": ">= 256", "met": v >= 256, "floor": best("ladder", "clean_streams", floors)}
        if "floor" in res["ladder"] and gw.kind in res["ladder"]:
            diffs = []
            for lv, cell in res["ladder"][gw.kind]["repeats"][0].items() if res["ladder"][gw.kind]["repeats"] else []:
                a = _median_step(res["ladder"][gw.kind]["repeats"], lv, "cpu_us_per_token")
                f = _median_step(res["ladder"]["floor"]["repeats"], lv, "cpu_us_per_token")
                if a is not None and f is not None and int(lv) >= 8:
                    diffs.append(a - f)
            if diffs:
                d = med(diffs)
                out["cpu_minus_floor_us"] = {"value": d, "target": "<= 10", "met": d <= 10}
    if "one" in res and gw.kind in res["one"]:
        v = res["one"][gw.kind]
        # direct's own gaps over 1.5 intervals: the machine stalled the reference, and a
        # difference against it says nothing
        noisy = (res["one"]["direct"].get("gap_p99_ms") or 0) > 1.5 * PACED_INTERVAL * 1000
        for key, limit in (("added_ttft_p99_ms", 1.0), ("added_gap_p99_ms", 1.0), ("added_plain_p99_ms", 0.5)):
            x = v.get(key)
            met = None if noisy and key == "added_gap_p99_ms" else x is not None and x < limit
            out[key] = {"value": x, "target": f"< {limit:g}", "met": met, "floor": res["one"].get("floor", {}).get(key)}
    if "rps" in res:
        v = best("rps", "held_per_s", respl) or 0
        out["requests_per_s"] = {"value": v, "target": ">= 3000", "met": v >= 3000, "floor": best("rps", "held_per_s", floors)}
    for x in out.values():  # the floor's own verdict: met by the floor, or not even by it
        f = x.get("floor")
        if f is not None:
            limit = float(x["target"].split()[-1])
            x["floor_met"] = f >= limit if x["target"].startswith(">=") else f < limit
    return out


def _verdict_md(v: dict) -> list[str]:
    names = {"clean_streams": "clean streams (best respline target)", "cpu_minus_floor_us": "CPU per paced token, respline minus floor, us (median over levels >= 8)",
             "added_ttft_p99_ms": "added TTFT p99 at concurrency 1, ms", "added_gap_p99_ms": "added gap p99 at concurrency 1, ms",
             "added_plain_p99_ms": "non-streaming added p99 at concurrency 1, ms", "requests_per_s": "requests/s held (best respline target)"}
    def num(x):
        return "-" if x is None else fmt(x, 2) if isinstance(x, float) else f"{x:,}"

    rows = []
    for k, x in v.items():
        said = "no verdict: direct itself stalled" if x["met"] is None else verdict(x["met"])
        if x["met"] is False and x.get("floor_met") is False:
            said += " (the hypercorn floor misses it too)"
        rows.append([names.get(k, k), num(x["value"]), x["target"], num(x.get("floor")), said])
    return ["Issue 17's targets (the floor: the hypercorn floor's own figure, its best row):", "",
            table(["figure", "value", "target", "the floor", ""], rows)] if rows else []


# --- LiteLLM ---------------------------------------------------------------------------------


def ensure_litellm() -> str | None:
    """Create bench/.venv-litellm with litellm[proxy]; None when ready, else why not."""
    exe = LITELLM_VENV / "bin" / "litellm"
    marker = LITELLM_VENV / ".installed"
    if exe.exists() and marker.exists() and marker.read_text().strip() == LITELLM_SPEC:
        return None
    log(f"installing {LITELLM_SPEC} into bench/.venv-litellm (first run only, a few minutes)")
    base = os.environ.get("BENCH_PYTHON") or sys.executable
    try:
        if not (LITELLM_VENV / "bin" / "python").exists():
            subprocess.run([base, "-m", "venv", str(LITELLM_VENV)], check=True, capture_output=True, text=True, timeout=300)
        out = subprocess.run([str(LITELLM_VENV / "bin" / "python"), "-m", "pip", "install", "-q", LITELLM_SPEC],
                             capture_output=True, text=True, timeout=1800)
    except subprocess.CalledProcessError as exc:
        return f"could not create the venv: {exc.stderr.strip()[-1500:]}"
    except subprocess.TimeoutExpired:
        return "pip install of litellm timed out"
    if out.returncode != 0:
        lines = [ln if len(ln) < 300 else ln[:240] + " ... " + ln[-50:] for ln in out.stderr.splitlines() if ln.strip() and not ln.startswith("WARNING: Location")]
        return f"pip install {LITELLM_SPEC} failed (exit {out.returncode}):\n" + "\n".join(lines[-25:])
    if not exe.exists():
        return "litellm installed but its `litellm` command is missing"
    marker.write_text(LITELLM_SPEC + "\n")
    return None


# --- profile ---------------------------------------------------------------------------------


def profile(b: Bench, gw: Target) -> tuple[dict, str]:
    """py-spy record on respline while scenario 1's streams run back to back, or (``--profile-paced
    N``) while N streams paced at 1 token/s are held open: one event per upstream read, the way
    real model servers send tokens."""
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists():
        return {"error": "py-spy is not installed in the project venv"}, "py-spy missing: `.venv/bin/pip install py-spy` (make bench-profile does)."
    paced = b.args.profile_paced
    model = f"bench-n{b.s1_tokens()}"
    seconds = b.args.profile_seconds
    b.client(gw, {"workers": 1, "requests": 3, "body": gw.stream_body(model), **gw.markers()}, timeout=120)
    raw = b.tmp / "profile.txt"
    cmd = [str(spy), "record", "--format", "raw", "-o", str(raw), "--rate", str(b.args.profile_rate), "-d", str(seconds), "--pid", str(gw.proc.pid), "--subprocesses"]
    hold = None
    if paced:
        cfg = {"mode": "hold", "streams": paced, "ramp_parallel": 100, "ramp_seconds": 120, "hold_seconds": seconds + 60,
               "body": gw.stream_body(f"bench-n{seconds + 200}-r1"), **gw.markers(), "host": "127.0.0.1", "port": gw.port, "path": gw.path}
        (b.tmp / "hold.json").write_text(json.dumps(cfg))
        hold = subprocess.Popen([sys.executable, str(BENCH / "loadgen.py"), "--config", str(b.tmp / "hold.json")], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_die_with_parent)
        opened = json.loads(hold.stdout.readline() or "{}").get("opened", 0)
        time.sleep(2)
    spy_p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1.0)
    cpu0 = gw.cpu()
    if hold is None and b.args.profile_codex:
        body = b.body_file(gw.codex_body(b.s4_model()))
        r = b.client(gw, {"workers": 8, "requests": 1000000, "max_seconds": seconds - 2, "body_file": body, "timeout": 60, **gw.markers(False)}, timeout=seconds + 120)
        what = f"{r['ok']} non-streaming Codex-sized requests, 8 at a time (scenario 4)"
        events = r["ok"]
        cpu_spy = None
    elif hold is None and b.args.profile_fleet:
        n = b.args.profile_fleet
        stream_s = PACED_TOKENS * PACED_INTERVAL
        per = max(1, int((seconds - 2 - stream_s) / stream_s))
        r = fleet(b, gw, {"driver": "closed", "workers": n, "per_worker": per, "stagger": stream_s, "max_seconds": seconds + 30,
                          "source_ips": [f"127.0.0.{i}" for i in range(2, 10)], "body": gw.stream_body(PACED_MODEL), **gw.markers()}, timeout=seconds + 120)
        what = (f"{r['ok']} paced streams of scenario 6 ({PACED_TOKENS} chunks {PACED_INTERVAL * 1000:g} ms apart), {n} at a time; "
                f"{r['streams_over_limit']} saw a gap over 40 ms, {r['late_frames']} late frames")
        events = r["ok"] * PACED_TOKENS
        cpu_spy = None
    elif hold is None and b.args.profile_concurrent:
        n = b.args.profile_concurrent
        r = b.client(gw, {"workers": n, "requests": 10000000, "max_seconds": seconds - 2, "body": gw.stream_body(b.s2_model()), "timeout": 300, **gw.markers()}, timeout=seconds + 120)
        what = f"{r['ok']} streams of {b.s2_tokens()} tokens, {n} at a time (scenario 2)"
        events = r["events"]
        cpu_spy = None
    elif hold is None:
        r = b.client(gw, {"workers": 1, "requests": 100000, "max_seconds": seconds - 2, "body": gw.stream_body(model), **gw.markers()}, timeout=seconds + 120)
        what = f"{r['ok']} streams of {b.s1_tokens()} tokens back to back"
        events = r["events"]
        cpu_spy = None
    else:
        ev0 = time.monotonic()
        spy_p.wait(timeout=seconds + 60)
        cpu = gw.cpu() - cpu0
        hold.stdin.write("close\n")
        hold.stdin.flush()
        out, _ = hold.communicate(timeout=120)
        events = opened * (time.monotonic() - ev0)  # 1 token/s each; the figure below uses the CPU rate
        what = f"{opened} streams held open, paced at 1 token/s (about {opened} events/s)"
        cpu_spy = cpu
    cpu = gw.cpu() - cpu0 if cpu_spy is None else cpu_spy
    spy_out, _ = spy_p.communicate(timeout=seconds + 60)
    if not raw.exists():
        return {"error": spy_out[-2000:]}, f"py-spy failed:\n\n```\n{spy_out[-2000:]}\n```"
    stacks = parse_collapsed(raw.read_text())
    summary = summarize(stacks)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(exist_ok=True)
    kind = "-paced" if paced else "-codex" if b.args.profile_codex else "-fleet" if b.args.profile_fleet else "-concurrent" if b.args.profile_concurrent else ""
    (RESULTS / f"{stamp}-profile{kind}.collapsed.txt").write_text("".join(f"{';'.join(s)} {n}\n" for s, n in stacks))
    res = {"seconds": seconds, "what": what, "paced": paced, "events": events, "cpu_us_per_event": cpu / max(1, events) * 1e6, **summary}
    unit = "request" if b.args.profile_codex and not paced else "event"
    md = [f"### Profile: py-spy on respline, {what} ({seconds} s, about "
          f"{res['cpu_us_per_event']:.0f} us CPU per {unit} while sampled)", ""]
    md.append(f"{summary['samples']} samples of the busy (non-idle) thread.")
    md.append("")
    md.append("Where the CPU goes (each sample counted once, first matching stage):\n")
    md.append(table(["stage", "% of samples"], [[k, v] for k, v in summary["stages"]]))
    md.append("\nShare of CPU by layer (the leaf frame's package):\n")
    md.append(table(["layer", "% of samples"], [[k, v] for k, v in summary["by_layer"]]))
    md.append("\nInclusive (function anywhere on the stack), top 25:\n")
    md.append(table(["function", "%"], [[f"`{k}`", v] for k, v in summary["inclusive"][:25]]))
    md.append("\nSelf (leaf frame), top 25:\n")
    md.append(table(["function", "%"], [[f"`{k}`", v] for k, v in summary["self"][:25]]))
    return res, "\n".join(md)


_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def _short(path: str) -> str:
    for marker in ("site-packages/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    root = str(ROOT) + "/"
    if path.startswith(root):
        path = path[len(root) :]
    if path.startswith("/"):
        path = path.rsplit("/", 2)[-1]
    return path


def parse_collapsed(text: str) -> list[tuple[list[str], int]]:
    out = []
    for line in text.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = []
        for fr in stack.split(";"):
            m = _FRAME.match(fr)
            if m:
                frames.append(f"{m.group('fn')} ({_short(m.group('file'))})")
            else:
                frames.append(fr)
        if frames and frames[0].startswith("process "):
            frames = frames[1:]
        if frames and frames[0].startswith("thread "):
            frames = frames[1:]
        out.append((frames, int(n)))
    return out


def _layer(frame: str) -> str:
    m = re.search(r"\((.*)\)$", frame)
    f = m.group(1) if m else frame
    if f.startswith("engine/"):
        return "engine/" + f.split("/")[1].split(".")[0] if "/stages/" not in f else "engine/stages/" + f.split("/")[2].split(".")[0]
    if f.startswith("adapters/"):
        return f.rsplit(".", 1)[0]
    top = f.split("/")[0].split(".")[0]
    return top or "?"


def summarize(stacks: list[tuple[list[str], int]]) -> dict:
    total = sum(n for _, n in stacks) or 1
    self_t: dict[str, int] = {}
    incl: dict[str, int] = {}
    layer: dict[str, int] = {}
    for frames, n in stacks:
        if not frames:
            continue
        leaf = frames[-1]
        self_t[leaf] = self_t.get(leaf, 0) + n
        layer[_layer(leaf)] = layer.get(_layer(leaf), 0) + n
        for fr in set(frames):
            incl[fr] = incl.get(fr, 0) + n

    def top(d: dict) -> list:
        return [(k, round(v / total * 100, 1)) for k, v in sorted(d.items(), key=lambda kv: -kv[1])]

    stage: dict[str, int] = {}
    for frames, n in stacks:
        k = _stage(frames)
        stage[k] = stage.get(k, 0) + n
    return {"samples": total, "stages": top(stage), "self": top(self_t)[:60], "inclusive": top(incl)[:80], "by_layer": top(layer)[:25]}


STAGES = (
    ("write to client: respline's chunk writer (frontends/connection.py: one writev; trio send_all when the socket is full)",
     ("ChunkWriter.",)),
    ("write to client: hypercorn's write path (app_send and all under it: h11 framing, send lock, shielded scope, trio send_all, the send syscall)",
     ("HTTPStream.app_send",)),
    ("translate: engine pipeline (sse, chat_decoder, builder, sequencer, rebuilder, encoder)", ("ResponsePipeline.",)),
    ("read upstream: the transport's body (readiness wait, read, chunked decoding)", ("_Body.__aiter__", "Response.aiter_raw", "ChunkedDecoder.")),
    ("channel hand-off pump -> writer (trio memory channel)", ("MemorySendChannel.", "MemoryReceiveChannel.", "ReceiveChannel.__anext__")),
    ("request setup: read body, parse, translate, open upstream", ("prepare_request", "open_upstream", "read_body", "parse_create", "Gateway.save")),
    # (py-spy names a method by the class that defines it: Gateway's parts, adapters/gateway/)
    ("store and finish (the response written to the store)", ("Records.finish", "Gateway.finish")),
)


def _stage(frames: list[str]) -> str:
    for label, keys in STAGES:
        if any(k in fr for fr in frames for k in keys):
            return label
    for i, fr in enumerate(frames[1:], 1):
        if ("StreamPump.pump" in frames[i - 1] or "Gateway.pump" in frames[i - 1]) and ("CancelScope" in fr or "move_on_after" in fr):
            return "per-read timeout scope in Gateway.pump (trio.move_on_after per upstream chunk)"
    if any("adapters/" in fr and "cli.py" not in fr for fr in frames):
        return "other respline code (pump loop, handler)"
    if any("hypercorn" in fr for fr in frames):
        return "other hypercorn (reading requests, connection tasks, timers)"
    return "trio run loop and task switching (no task frame on the stack)"


# --- main ------------------------------------------------------------------------------------


def checkout_rev(rev: str, tmp: Path) -> str:
    """``--rev REV``: respline's engine/ and adapters/ as of a git revision, run with the project
    venv's interpreter and packages, so an optimisation's before and after run on one machine."""
    dest = tmp / f"rev-{re.sub(r'[^A-Za-z0-9._-]', '_', rev)}"
    dest.mkdir()
    archive = subprocess.run(["git", "archive", rev, "engine", "adapters"], cwd=ROOT, capture_output=True, timeout=60)
    if archive.returncode != 0:
        raise SystemExit(f"bench: git archive {rev} failed: {archive.stderr.decode(errors='replace').strip()}")
    # revisions since the packaging change import respline.engine / respline.adapters (the folders
    # installed under the respline namespace); older ones import engine / adapters at the top level
    pkg = dest / "respline"
    pkg.mkdir()
    subprocess.run(["tar", "-x", "-C", str(pkg)], input=archive.stdout, check=True, timeout=60)
    namespaced = b"respline.adapters" in (pkg / "adapters" / "cli.py").read_bytes()
    path, module = (dest, "respline.adapters.cli") if namespaced else (pkg, "adapters.cli")
    wrapper = dest / "respline-rev"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH="{path}" exec "{sys.executable}" -m {module} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def machine(rev: str | None = None) -> dict:
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if rev:
        full = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        return {**_machine_common(model), "respline_rev": full or rev}
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "engine", "adapters"], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        if dirty:
            rev += "+dirty"
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {**_machine_common(model), "respline_rev": rev}


def _machine_common(model: str) -> dict:
    return {
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_gb": round(os.sysconf("SC_PHYS_PAGES") * PAGE / 2**30, 1),
        "loadavg_start": os.getloadavg(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "nofile_hard": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
    }


def scrub(text: str, tmp: Path) -> str:
    """Reports name no path of the machine they ran on (error messages quote logs and tracebacks)."""
    for path, name in ((str(tmp), "<tmp>"), (str(ROOT), "<repo>"), (sys.base_prefix, "<python>"), (os.path.expanduser("~"), "<home>")):
        if path and path != "/":
            text = text.replace(path, name)
    return text


def _interrupt(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    # SIGTERM, and SIGINT even where a background shell ignores it, unwind through the
    # finally blocks that stop the processes this run started
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", default=os.environ.get("BENCH_QUICK", "") not in ("", "0"), help="a small version of every scenario (BENCH_QUICK=1)")
    p.add_argument("--scenarios", default="1,2,3,4,5,6", help="comma-separated, of 1-6")
    p.add_argument("--levels", default="", help="scenario 2 levels: N streams at full speed, N@R paced at R tokens/s (default 1,10,100,1000,100@20,100@50; quick 1,10,100,250,100@50)")
    p.add_argument("--repeats", type=int, default=0, help="repeats per measurement (default 3, quick 1)")
    p.add_argument("--hold-streams", type=int, default=10000, help="scenario 3 open streams")
    p.add_argument("--hold-repeats", type=int, default=1, help="scenario 3 repeats (a fresh respline each)")
    p.add_argument("--hold-codex", action="store_true", help="scenario 3 with Codex-sized streaming requests (memory per open agent turn)")
    p.add_argument("--hold-rate", type=float, default=1.0, help="scenario 3 tokens per second per stream")
    p.add_argument("--hold-ramp-seconds", type=float, default=300, help="scenario 3: stop opening streams after this long")
    p.add_argument("--workers", type=int, default=0, help="scenario 5 worker processes (default: cores, at least 2)")
    p.add_argument("--peers", action="store_true", help="scenario 2 at 100 streams, scenarios 4 and 6 against LiteLLM too (of --scenarios)")
    p.add_argument("--profile", action="store_true", help="py-spy respline during scenario 1 streams")
    p.add_argument("--profile-seconds", type=int, default=30)
    p.add_argument("--serve-workers", type=int, default=1, metavar="N",
                   help="scenarios 1, 2 and 4 against respline --workers N (SQLite store) instead of one process")
    p.add_argument("--gc-thresholds", default=None, metavar="G0,G1,G2", help="respline's [server] gc_thresholds ('' = CPython's own)")
    p.add_argument("--profile-rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--profile-paced", type=int, default=0, metavar="N", help="profile N streams paced at 1 token/s instead")
    p.add_argument("--profile-concurrent", type=int, default=0, metavar="N", help="profile N concurrent closed-loop streams of scenario 2 instead")
    p.add_argument("--profile-codex", action="store_true", help="profile scenario 4's Codex-sized requests instead")
    p.add_argument("--no-floor", action="store_true", help="scenarios 2 and 6 without the hypercorn floor rows (floor.py)")
    p.add_argument("--obs-off", action="store_true",
                   help="scenarios 1 and 6 also run 'respline (no obs)': [metrics] enabled = false, [server] access_log = false "
                        "(respline's other rows then log at info, so the two differ only in those keys)")
    p.add_argument("--paced-workers", type=int, default=max(2, os.cpu_count() or 2), metavar="N",
                   help="scenario 6: also respline --workers N (SQLite store); 0 or 1 = not")
    p.add_argument("--paced-levels", default="", help="scenario 6 clean-stream ladder (default 1,8,16,32,64,128,256,512; quick 1,16)")
    p.add_argument("--rps-levels", default="", help="scenario 6 requests/s ladder (default 25,...,6000; quick 250,1000)")
    p.add_argument("--paced-targets", default="", help="scenario 6: only these targets besides direct (respline, respline-w2, floor, respline-noobs, litellm; "
                   "respline-hc, only when named: respline with [server] direct_write = false)")
    p.add_argument("--paced-store", action="store_true", help="scenario 6's streams with store: true (the store grows as they run)")
    p.add_argument("--paced-parts", default="", help="scenario 6: some of ladder,one,rps (default all)")
    p.add_argument("--profile-fleet", type=int, default=0, metavar="N",
                   help="profile N concurrent paced streams of scenario 6 (64 chunks 20 ms apart) instead")
    p.add_argument("--respline", default=None, help="the respline command (default: the project venv's)")
    p.add_argument("--rev", default=None, help="run respline's engine/ and adapters/ as of this git revision (before/after)")
    p.add_argument("--no-json", action="store_true", help="do not write bench/results/*.json")
    args = p.parse_args()
    if not args.repeats:
        args.repeats = 1 if args.quick else 3
    scenarios = {int(s) for s in args.scenarios.split(",") if s.strip()}
    mode = "profile" if args.profile else "peers" if args.peers else "quick" if args.quick else "full"

    peer_error = None
    if args.peers:
        peer_error = ensure_litellm()
        if peer_error:
            print(f"bench-peers: LiteLLM is not available, so the peer rows are missing.\n\n{peer_error}\n", file=sys.stderr)
            peer_error = scrub(peer_error, ROOT / "bench")

    b = Bench(args)
    info = machine(args.rev)
    out: dict = {"mode": mode, "quick": args.quick, "started": dt.datetime.now().isoformat(timespec="seconds"), "machine": info, "scenarios": {}}
    md: list[str] = [
        f"## respline bench ({mode}), {out['started']}",
        "",
        f"{info['cores']} cores ({info['cpu_model'] or 'unknown CPU'}), load average at start {info['loadavg_start'][0]:.2f}; "
        f"respline {info['respline_rev'] or '?'}; Python {info['python']}; upstream, respline and the client each one process on loopback. "
        f"Medians of {args.repeats} repeats; ratios (gateway / direct) are the figures to compare across machines.",
        "",
    ]
    t_start = time.monotonic()
    try:
        b.start_upstream()
        if args.profile:
            gw = b.start_respline()
            res, text = profile(b, gw)
            out["scenarios"]["profile"] = res
            md.append(text)
        elif args.peers:
            gw = b.start_respline()
            peers = []
            if not peer_error:
                try:
                    peers.append(b.start_litellm())
                except RuntimeError as exc:
                    peer_error = f"LiteLLM's proxy did not start: {exc}"
                    print(f"bench-peers: {peer_error}", file=sys.stderr)
            out["peer_error"] = peer_error
            for name, fn in (("2", lambda: scenario2(b, gw, ["100"], peers)), ("4", lambda: scenario4(b, gw, peers)),
                             ("6", lambda: scenario6(b, gw, peers))):
                if int(name) not in scenarios:
                    continue
                try:
                    res, text = fn()
                except Exception as exc:  # noqa: BLE001 - report it and go on to the next scenario
                    res, text = {"error": repr(exc)}, f"### Scenario {name}: failed\n\n```\n{exc}\n```"
                out["scenarios"][name] = res
                md += [text, ""]
            if peer_error:
                md += ["", f"LiteLLM rows missing: {peer_error.splitlines()[0]}"]
        else:
            gw = None
            for s in sorted(scenarios):
                t0 = time.monotonic()
                try:
                    if s in (1, 2, 4, 6) and gw is None:
                        sw = args.serve_workers
                        gw = b.start_respline(workers=sw, store=f"sqlite:{b.tmp / 'serve.db'}") if sw > 1 else b.start_respline()
                    if s == 1:
                        res, text = scenario1(b, gw)
                    elif s == 2:
                        levels = args.levels or ("1,10,100,250,100@50" if b.quick else "1,10,100,1000,100@20,100@50")
                        res, text = scenario2(b, gw, levels.split(","))
                    elif s == 3:
                        if gw is not None:  # a fresh process per hold run, for a clean RSS baseline
                            b.stop(gw)
                            gw = None
                        res, text = scenario3(b)
                    elif s == 4:
                        res, text = scenario4(b, gw)
                    elif s == 5:
                        res, text = scenario5(b)
                    elif s == 6:
                        res, text = scenario6(b, gw)
                    else:
                        continue
                except Exception as exc:  # noqa: BLE001
                    log(f"scenario {s} failed: {exc}")
                    res, text = {"error": repr(exc)}, f"### Scenario {s}: failed\n\n```\n{exc}\n```"
                res["seconds"] = time.monotonic() - t0
                out["scenarios"][str(s)] = res
                md += [text, ""]
    finally:
        b.close()
    if b.notes:
        md += ["", *sorted(b.notes)]
        out["notes"] = sorted(b.notes)
    out["seconds"] = time.monotonic() - t_start
    out["machine"]["loadavg_end"] = os.getloadavg()
    md.append(f"Total {out['seconds']:.0f} s; load average at end {out['machine']['loadavg_end'][0]:.2f}.")
    md = [scrub(line, b.tmp) for line in md]
    text = "\n".join(md)
    out["markdown"] = text
    if not args.no_json:
        RESULTS.mkdir(exist_ok=True)
        tag = f"-{re.sub(r'[^A-Za-z0-9._-]', '_', args.rev)}" if args.rev else ""
        path = RESULTS / f"{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-{mode}{tag}.json"
        path.write_text(scrub(json.dumps(out, indent=1, default=str), b.tmp))
        md.append(f"\nRaw numbers: bench/results/{path.name}")
    print("\n".join(md))
    failed = [k for k, v in out["scenarios"].items() if isinstance(v, dict) and "error" in v]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
