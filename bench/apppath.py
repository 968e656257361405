"""respline's own CPU per request: its ASGI app driven in this process, no server, no sockets.

``respline serve``'s app (the observed layer, the create handler, the gateway, the provider, the
pipeline, the telemetry) answers requests one at a time from a canned upstream: a transport that
hands back the bench upstream's own answer at once. What is left is respline's work per request
(hypercorn, the kernel and waking the process are not in it: bench/reqpath.py has those), so
the figure is steady on a busy machine and shows one change at a time. ``--cprofile N`` prints
where it goes.

    python bench/apppath.py                       # non-streaming, 20 tokens
    python bench/apppath.py --stream              # streamed, 20 tokens
    python bench/apppath.py --codex               # scenario 4's Codex-sized request, non-streaming
    python bench/apppath.py --cprofile 30         # + the top 30 functions by own time
    python bench/apppath.py --rev main            # respline as of a git revision, then this tree,
                                                  # in alternate rounds (one process per round)
    python bench/apppath.py --instructions --rev main --rounds 1
                                                  # instructions per request (valgrind's callgrind,
                                                  # apt's valgrind package): exact on a busy machine
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import codex_request  # noqa: E402
import upstream as bench_upstream  # noqa: E402

from respline.adapters import cli  # noqa: E402
from respline.adapters.frontends.http import build_app  # noqa: E402


class CannedTransport(httpx.AsyncBaseTransport):
    """The bench upstream's answer for the model, as the transport would return it, at once."""

    def __init__(self, model: str) -> None:
        answer = bench_upstream.Answer(model)
        self.whole = answer.whole.split(b"\r\n\r\n", 1)[1]
        self.stream = b"".join(_unchunk(part) for part in [answer.head.split(b"\r\n\r\n", 1)[1], *answer.tokens, answer.tail])

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if b"text/event-stream" in request.headers.get("accept", "").encode():
            return httpx.Response(200, headers=[(b"content-type", b"text/event-stream")], stream=httpx.ByteStream(self.stream))
        return httpx.Response(200, headers=[(b"content-type", b"application/json")], stream=httpx.ByteStream(self.whole))


WARM_UP = 200  # requests before the measured ones: first-call caches, the allocator's pools


def _unchunk(data: bytes) -> bytes:
    """The payloads of HTTP/1.1 chunks (the bench upstream's pre-encoded stream)."""
    out = []
    while data:
        size, _, rest = data.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        out.append(rest[:n])
        data = rest[n + 2 :]
    return b"".join(out)


async def one(app, body: bytes) -> bytes:
    """One request through the app, its messages delivered as hypercorn delivers them: through a
    memory channel, the body first, ``http.disconnect`` once the response has ended; each send
    yields once, as hypercorn's write to the socket does."""
    sent: list[bytes] = []
    to_app, receive_channel = trio.open_memory_channel(10)
    to_app.send_nowait({"type": "http.request", "body": body, "more_body": False})

    async def send(message: dict) -> None:
        if message["type"] == "http.response.body":
            sent.append(message.get("body", b""))
            if not message.get("more_body"):
                to_app.send_nowait({"type": "http.disconnect"})
        await trio.lowlevel.checkpoint()  # hypercorn's socket write yields

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/responses", "raw_path": b"/v1/responses", "query_string": b"", "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    }
    await app(scope, receive_channel.receive, send)
    return b"".join(sent)


async def measure(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="respline-apppath-") as d:
        parsed = cli.parser().parse_args(
            ["serve", "--upstream", "http://127.0.0.1:9/v1", "--store", "memory", "--secret-file", str(Path(d) / "secret")]
        )
        cfg = cli.build_config(parsed)
        cfg.metrics.enabled = not args.no_metrics
        if args.access_log:  # respline serve's default: log_level info, a JSON request line each (to /dev/null here)
            sys.stderr = open(os.devnull, "w")  # noqa: SIM115
            cli.setup_logging(cfg)
        gateway, _clients = cli.build_gateway(cfg)
        cli.build_telemetry(cfg, gateway)
        model = args.model
        for provider in gateway.providers.values():
            provider.transport = CannedTransport(model)
        if args.codex:
            body = json.dumps(codex_request.responses_body(model, stream=args.stream)).encode()
        else:
            body = json.dumps({"model": model, "input": "Write a long story about a gateway.", "store": False, "stream": args.stream}).encode()
        app = build_app(gateway, cli.build_auth(cfg))
        cli.tune_gc(cfg.server.gc_thresholds)  # the garbage collector as respline serve sets it
        out = await one(app, body)
        if b"completed" not in out:
            raise SystemExit(f"not a completed response: {out[:400]!r}")
        for _ in range(WARM_UP):
            await one(app, body)
        rounds = []
        for _ in range(args.rounds):
            t0 = time.process_time()
            for _ in range(args.requests):
                await one(app, body)
            rounds.append((time.process_time() - t0) / args.requests * 1e6)
        if args.json:
            print(json.dumps({"us": statistics.median(rounds)}))
            return
        what = "Codex-sized" if args.codex else "short"
        print(f"{what} {'streamed' if args.stream else 'non-streaming'} request ({model}): "
              f"{statistics.median(rounds):.1f} us of CPU each (median of {args.rounds} rounds of {args.requests}; "
              f"rounds {', '.join(f'{r:.1f}' for r in rounds)})")
        if args.cprofile:
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(args.requests):
                await one(app, body)
            prof.disable()
            stats = pstats.Stats(prof)
            stats.strip_dirs().sort_stats("tottime").print_stats(args.cprofile)


def instructions(argv: list[str], env: dict[str, str]) -> float:
    """Machine instructions per request, counted by valgrind (callgrind): two runs of this
    script that differ only in their number of requests, the difference divided by it. Exact
    and the same on a busy machine, so one change shows even where CPU time is all noise."""
    counts = []
    for n in (INSTR_FEW, INSTR_MANY):
        cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__, *argv,
               "--requests", str(n), "--rounds", "1", "--json"]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        found = re.search(r"Collected : (\d+)", out.stderr)
        if found is None:
            raise SystemExit(f"valgrind said no count:\n{out.stderr[-2000:]}")
        counts.append(int(found.group(1)))
    return (counts[1] - counts[0]) / (INSTR_MANY - INSTR_FEW)


INSTR_FEW, INSTR_MANY = 20, 220


def compare(args: argparse.Namespace, argv: list[str]) -> None:
    """``--rev`` and ``--instructions``: a process (or two, under valgrind) per round, alternately
    the revision's respline and this tree's."""
    import run  # noqa: PLC0415  (the bench's git archive helper)

    drop = {"--rev": 1, "--rounds": 1, "--requests": 1, "--instructions": 0}
    rest, skip = [], 0
    for a in argv:
        if skip:
            skip -= 1
        elif a in drop:
            skip = drop[a]
        else:
            rest.append(a)
    with tempfile.TemporaryDirectory(prefix="respline-apppath-") as d:
        trees: dict[str, str | None] = {}
        if args.rev:
            trees[args.rev] = str(Path(run.checkout_rev(args.rev, Path(d))).parent)
        trees["this tree"] = None
        found: dict[str, list[float]] = {name: [] for name in trees}
        for _ in range(args.rounds):
            for name, path in trees.items():
                env = dict(os.environ)
                if path is not None:
                    env["PYTHONPATH"] = path
                if args.instructions:
                    found[name].append(instructions(rest, env))
                    continue
                cmd = [sys.executable, __file__, *rest, "--requests", str(args.requests), "--rounds", "1", "--json"]
                out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
                found[name].append(json.loads(out.stdout.strip().splitlines()[-1])["us"])
        unit = "thousand instructions" if args.instructions else "us of CPU"
        scale = 1e-3 if args.instructions else 1.0
        for name, rounds in found.items():
            print(f"{name}: {statistics.median(rounds) * scale:.1f} {unit} per request (rounds {', '.join(f'{r * scale:.1f}' for r in rounds)})")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="bench-n20", help="the bench upstream model whose answer is canned")
    p.add_argument("--stream", action="store_true")
    p.add_argument("--codex", action="store_true", help="scenario 4's Codex-sized request")
    p.add_argument("--requests", type=int, default=2000, help="requests per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--cprofile", type=int, default=0, metavar="N")
    p.add_argument("--no-metrics", action="store_true", help="[metrics] enabled = false: what the metrics cost")
    p.add_argument("--access-log", action="store_true", help="log at info as respline serve does by default (request lines to /dev/null)")
    p.add_argument("--rev", default=None, help="compare with respline as of this git revision")
    p.add_argument("--instructions", action="store_true", help="count instructions per request with valgrind instead of timing")
    p.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.rev or args.instructions:
        compare(args, sys.argv[1:])
    else:
        trio.run(measure, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
