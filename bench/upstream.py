"""The bench upstream: a raw trio socket server answering ``POST .../chat/completions``.

It serves pre-encoded Chat Completions answers: HTTP/1.1 head + one chunked-encoding chunk per
SSE event, built once per model name and cached, so a request costs one socket read loop and one
``send_all``. Nothing is encoded per request; the upstream is never the bottleneck. Paced streams
are written by one pacer task per rate (a non-blocking ``os.write`` per due token), so 10,000
streams at 1 token/s cost it a tenth of a core rather than a whole one.

The model name says what to send (respline routes every model upstream as-is):

    bench-n2000        2000 content tokens, as fast as the socket allows
    bench-n600-r1      600 tokens paced at 1 token/s, the first at once (r0.5 = one every 2 s)
    bench-n20-d20      20 tokens, the answer (head included) after 20 ms: an upstream that takes
                       20 ms, streamed or not (scenario 6's requests/s ladder)

A body without ``"stream": true`` gets a whole ``chat.completion`` JSON object instead (for a paced
model, once the stream would have ended: n / rate seconds).
Keep-alive is honoured; the server stops on SIGTERM/SIGINT.

    python bench/upstream.py --port 9100 [--host 127.0.0.1]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
from collections import deque

import trio

from loadgen import raise_nofile  # bench/ is the script's folder, first on sys.path

_MODEL = re.compile(rb'"model"\s*:\s*"([^"\\]{1,200})"')
_STREAM_TRUE = re.compile(rb'"stream"\s*:\s*true')
_SPEC = re.compile(r"^bench-n(\d+)(?:-r([0-9.]+))?(?:-d(\d+))?$")

WORDS = (
    " the", " gateway", " streams", " every", " token", " back", " as", " a", " Responses",
    " event", ",", " and", " nothing", " is", " dropped", ".", " Tool", " calls", " stream",
    " live", " too",
)
CREATED = 1700000000


def _chunk_line(model: str, delta: dict, finish: str | None = None) -> bytes:
    obj = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def _http_chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n"
    b"\r\n"
)
END = b"0\r\n\r\n"


class Answer:
    """One model's pre-encoded answer: ``head`` (status line, headers, role chunk), ``tokens``
    (one chunked-encoding chunk each), ``tail`` (finish, usage, [DONE], terminator), ``blob``
    (all of it, for unpaced streams) and ``whole`` (the non-streamed JSON response)."""

    __slots__ = ("n", "rate", "delay", "head", "tokens", "tail", "blob", "whole")

    def __init__(self, model: str) -> None:
        m = _SPEC.match(model)
        n = int(m.group(1)) if m else 20
        rate = float(m.group(2)) if m and m.group(2) else 0.0
        self.n, self.rate = n, rate
        self.delay = int(m.group(3)) / 1000 if m and m.group(3) else 0.0
        words = [WORDS[i % len(WORDS)] for i in range(n)]
        self.head = SSE_HEAD + _http_chunk(_chunk_line(model, {"role": "assistant"}))
        self.tokens = [_http_chunk(_chunk_line(model, {"content": w})) for w in words]
        usage = {"prompt_tokens": 50, "completion_tokens": n, "total_tokens": 50 + n}
        final = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "choices": [],
            "usage": usage,
        }
        self.tail = (
            _http_chunk(_chunk_line(model, {}, "stop"))
            + _http_chunk(b"data: " + json.dumps(final, separators=(",", ":")).encode() + b"\n\n")
            + _http_chunk(b"data: [DONE]\n\n")
            + END
        )
        self.blob = self.head + b"".join(self.tokens) + self.tail
        body = json.dumps(
            {
                "id": "chatcmpl-bench",
                "object": "chat.completion",
                "created": CREATED,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(words)},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            },
            separators=(",", ":"),
        ).encode()
        self.whole = (
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (len(body), body)
        )


class Paced:
    """One paced stream: which token is next, bytes the socket has not taken yet."""

    __slots__ = ("fd", "answer", "next", "due", "pending", "failed", "done")

    def __init__(self, fd: int, answer: Answer) -> None:
        self.fd = fd
        self.answer = answer
        self.next = 1
        self.due = 0.0
        self.pending = b""
        self.failed = False
        self.done = trio.Event()


class Pacer:
    """Writes the paced tokens of every stream of one rate from a single task.

    A task per stream (sleep, wake, send_all) costs ~100 us of trio per token on a small machine,
    a core at 10,000 streams; here a due stream costs one non-blocking ``os.write``. Streams are
    kept in due order in a deque (same gap for all); the task sleeps until the first is due, and
    writes every token due within ``tick`` together. The tick is short (1 ms) because streams
    started at different times must get their tokens at different times, as from a real model
    server: a coarse tick would hand the gateway synchronised bursts.
    """

    def __init__(self, rate: float) -> None:
        self.gap = 1.0 / rate
        self.queue: deque[Paced] = deque()
        self.wake = trio.Event()

    def add(self, p: Paced) -> None:
        p.due = trio.current_time() + self.gap
        self.queue.append(p)
        self.wake.set()

    async def run(self, tick: float = 0.001) -> None:
        queue = self.queue
        while True:
            if not queue:
                self.wake = trio.Event()
                await self.wake.wait()
            now = trio.current_time()
            while queue and queue[0].due <= now:
                p = queue.popleft()
                a = p.answer
                if p.next < len(a.tokens):
                    data = p.pending + a.tokens[p.next]
                    p.next += 1
                else:
                    p.pending += a.tail  # the handler sends what is left and ends the stream
                    p.done.set()
                    continue
                try:
                    sent = os.write(p.fd, data)
                except BlockingIOError:
                    sent = 0
                except OSError:  # the reader went away
                    p.failed = True
                    p.done.set()
                    continue
                p.pending = data[sent:]
                p.due += self.gap
                queue.append(p)
            if queue:
                await trio.sleep_until(max(queue[0].due, now + tick))


class Server:
    def __init__(self, nursery: trio.Nursery) -> None:
        self.answers: dict[bytes, Answer] = {}
        self.pacers: dict[float, Pacer] = {}
        self.nursery = nursery
        self.requests = 0
        self.open_streams = 0

    def pacer(self, rate: float) -> Pacer:
        p = self.pacers.get(rate)
        if p is None:
            p = self.pacers[rate] = Pacer(rate)
            self.nursery.start_soon(p.run)
        return p

    def answer(self, model: bytes) -> Answer:
        a = self.answers.get(model)
        if a is None:
            a = self.answers[model] = Answer(model.decode("utf-8", "replace"))
        return a

    async def handle(self, stream: trio.SocketStream) -> None:
        buf = b""
        try:
            while True:
                # --- one request: head, then content-length bytes of body
                while b"\r\n\r\n" not in buf:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                lower = head.lower()
                length = 0
                i = lower.find(b"\r\ncontent-length:")
                if i >= 0:
                    j = lower.find(b"\r\n", i + 2)
                    length = int(lower[i + 17 : j if j >= 0 else None].strip())
                while len(buf) < length:
                    data = await stream.receive_some(max(65536, length - len(buf)))
                    if not data:
                        return
                    buf += data
                body, buf = buf[:length], buf[length:]
                close = b"\r\nconnection: close" in lower
                self.requests += 1
                m = _MODEL.search(body)
                a = self.answer(m.group(1) if m else b"bench-n20")
                if a.delay:  # an upstream that takes this long to answer
                    await trio.sleep(a.delay)
                if not _STREAM_TRUE.search(body):  # absent means false, as at OpenAI
                    if a.rate > 0:  # a paced model answers a non-streamed request once it is done
                        await trio.sleep(a.n / a.rate)
                    await stream.send_all(a.whole)
                elif a.rate <= 0:
                    await stream.send_all(a.blob)
                else:
                    self.open_streams += 1
                    try:
                        # head and first token at once, then the pacer writes one token every 1/rate s
                        await stream.send_all(a.head + (a.tokens[0] if a.tokens else b""))
                        paced = Paced(stream.socket.fileno(), a)
                        self.pacer(a.rate).add(paced)
                        await paced.done.wait()
                        if paced.failed:
                            return
                        if paced.pending:
                            await stream.send_all(paced.pending)
                    finally:
                        self.open_streams -= 1
                if close:
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
            return
        finally:
            await trio.aclose_forcefully(stream)


async def main(host: str, port: int) -> None:
    raise_nofile()
    async with trio.open_nursery() as nursery:
        server = Server(nursery)
        listeners = await nursery.start(
            lambda task_status: trio.serve_tcp(server.handle, port, host=host, backlog=4096, task_status=task_status)
        )
        print(f"bench upstream listening on http://{host}:{listeners[0].socket.getsockname()[1]}", file=sys.stderr, flush=True)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                nursery.cancel_scope.cancel()
                return


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9100)
    a = p.parse_args()
    trio.run(main, a.host, a.port)
