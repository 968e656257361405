"""The hypercorn floor: what the server respline is fixed to costs with an app that does nothing.

A trivial ASGI app on hypercorn's trio worker (configured, and its garbage collector tuned, as
``respline serve`` does it) answers every ``POST`` at once with a pre-encoded Responses event
stream: no upstream, no request parsing beyond finding the bench model name, no translation.
Scenario 2 runs it as one more target beside direct and respline, so its rows show the least any
gateway built on hypercorn and trio can add on this machine, and respline's rows how much of
their cost is respline's own.

The model name says what to send, as for the bench upstream: ``bench-n100`` is 100 deltas in one
write (the opening and closing events included: 108 events, as respline sends for 100 tokens);
``bench-n100-r50`` paces them at 50 tokens/s, one write per token (the opening events go with the
first token, the closing ones with the last), as respline writes a paced stream.
``-d20`` answers after 20 ms, as an upstream that takes 20 ms would make a gateway wait. A body
without ``"stream": true`` gets the whole Response object as one JSON body (what respline answers a
non-streaming request with).

    python bench/floor.py --port 8001     # accepts respline serve's other options and ignores them
    python bench/floor.py --port 8001 --workers 2   # N processes on one socket, as respline --workers

``--workers N`` binds the socket once and runs N floor processes on it, as ``respline serve
--workers N`` does (the kernel spreads connections across them): the floor for respline's
``--workers`` rows.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import trio
from hypercorn.trio import serve

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from respline.adapters.cli import bind, hyper_config, tune_gc  # noqa: E402  (set up as respline serve sets itself up)
from respline.adapters.config import Config as ResplineConfig  # noqa: E402

_MODEL = re.compile(rb'"model"\s*:\s*"bench-n(\d+)(?:-r([0-9.]+))?(?:-d(\d+))?"')
_STREAM_TRUE = re.compile(rb'"stream"\s*:\s*true')
_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


def _event(kind: str, **fields) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **fields}, separators=(',', ':'))}\n\n".encode()


def _stream(tokens: int) -> tuple[bytes, list[bytes], bytes]:
    """(opening events, one delta per token, closing events), each pre-encoded."""
    resp = {"id": "resp_floor", "object": "response", "created_at": 0, "status": "in_progress", "model": "floor", "output": []}
    item = {"id": "msg_floor", "type": "message", "role": "assistant", "status": "in_progress", "content": []}
    part = {"type": "output_text", "text": "", "annotations": []}
    loc = {"item_id": "msg_floor", "output_index": 0, "content_index": 0}
    opening = b"".join([
        _event("response.created", sequence_number=0, response=resp),
        _event("response.in_progress", sequence_number=1, response=resp),
        _event("response.output_item.added", sequence_number=2, output_index=0, item=item),
        _event("response.content_part.added", sequence_number=3, part=part, **loc),
    ])
    deltas = [_event("response.output_text.delta", sequence_number=4 + i, delta=f" tok{i}", logprobs=[], **loc) for i in range(tokens)]
    text = "".join(f" tok{i}" for i in range(tokens))
    n = 4 + tokens
    done_part = dict(part, text=text)
    done_item = dict(item, status="completed", content=[done_part])
    closing = b"".join([
        _event("response.output_text.done", sequence_number=n, text=text, logprobs=[], **loc),
        _event("response.content_part.done", sequence_number=n + 1, part=done_part, **loc),
        _event("response.output_item.done", sequence_number=n + 2, output_index=0, item=done_item),
        _event("response.completed", sequence_number=n + 3, response=dict(resp, status="completed", output=[done_item])),
    ])
    return opening, deltas, closing


def _whole(tokens: int) -> bytes:
    """The non-streamed answer: a completed Response object with the text of ``tokens`` deltas."""
    text = "".join(f" tok{i}" for i in range(tokens))
    item = {"id": "msg_floor", "type": "message", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}
    resp = {"id": "resp_floor", "object": "response", "created_at": 0, "status": "completed", "model": "floor",
            "output": [item], "usage": {"input_tokens": 50, "output_tokens": tokens, "total_tokens": 50 + tokens}}
    return json.dumps(resp, separators=(",", ":")).encode()


_streams: dict[int, tuple[bytes, list[bytes], bytes]] = {}
_wholes: dict[int, bytes] = {}


async def not_http(scope, receive, send) -> bool:
    """True for a scope that is not an HTTP request: hypercorn's lifespan, answered here (started,
    then stopped), or anything else, ignored. writepath.py's app answers it the same way."""
    if scope["type"] == "http":
        return False
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                break
    return True


async def app(scope, receive, send) -> None:
    if await not_http(scope, receive, send):
        return
    body = b""
    more = True
    while more:
        msg = await receive()
        body += msg.get("body", b"")
        more = msg.get("more_body", False)
    m = _MODEL.search(body) if scope["method"] == "POST" else None
    if m is None:  # /health, or anything that is not a bench request
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"status":"ok"}'})
        return
    tokens, rate, delay = int(m[1]), float(m[2] or 0), int(m[3] or 0) / 1000
    if delay:
        await trio.sleep(delay)
    if not _STREAM_TRUE.search(body):
        if tokens not in _wholes:
            _wholes[tokens] = _whole(tokens)
        whole = _wholes[tokens]
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(whole)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": whole})
        return
    if tokens not in _streams:
        _streams[tokens] = _stream(tokens)
    opening, deltas, closing = _streams[tokens]
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    if not rate:
        await send({"type": "http.response.body", "body": opening + b"".join(deltas) + closing})
        return
    start = trio.current_time()
    last = len(deltas) - 1
    for i, delta in enumerate(deltas):
        if i:
            await trio.sleep_until(start + i / rate)
        chunk = (opening if i == 0 else b"") + delta + (closing if i == last else b"")
        await send({"type": "http.response.body", "body": chunk, "more_body": i != last})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", nargs="?", default="serve", help="ignored (so the bench can start it as it starts respline)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--workers", type=int, default=1, help="floor processes sharing the socket")
    p.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)  # a worker's socket
    args, _ = p.parse_known_args()
    # hypercorn and the garbage collector exactly as respline serve sets them (backlog,
    # keep-alive, GC thresholds): only the app differs
    rcfg = ResplineConfig()
    rcfg.server.host, rcfg.server.port = args.host, args.port
    if args.workers > 1:  # bound once here, served by each worker (respline's supervise, minus signals)
        sock = bind(args.host, args.port)
        sock.set_inheritable(True)
        argv = [sys.executable, __file__, "--host", args.host, "--port", str(args.port), "--listen-fd", str(sock.fileno())]
        workers = [subprocess.Popen(argv, pass_fds=[sock.fileno()]) for _ in range(args.workers)]
        sock.close()

        def forward(signum, _frame) -> None:  # a signal to the supervisor stops every worker
            for w in workers:
                if w.poll() is None:
                    w.send_signal(signum)

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        for w in workers:
            w.wait()
        return
    cfg = hyper_config(rcfg, args.listen_fd)
    tune_gc(rcfg.server.gc_thresholds)
    trio.run(serve, app, cfg)


if __name__ == "__main__":
    main()
