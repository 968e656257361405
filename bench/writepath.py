"""What one paced write to a client costs, layer by layer of hypercorn's write path.

Each row writes the same ~300-byte frame (a Responses delta event) ``--writes`` times over
loopback TCP to a reader in another process, one write every ``--gap-ms`` (the reader sleeps
between writes, as a client of a paced stream does; ``--gap-ms 0`` writes back to back), and
reports this process's CPU per write, less the CPU of the sleeps alone:

    syscall          os.write on the socket (the kernel's loopback path, the reader's wake-up)
    trio send_all    trio's SocketStream.send_all (its conflict detector, checkpoints, the send)
    + shielded scope hypercorn's ``with trio.CancelScope(shield=True)`` around it
    + send lock      hypercorn's ``async with self.send_lock`` (a trio.Lock) around that
    + h11 framing    h11's ``Connection.send(Data(...))`` (chunked framing, state checks)
    hypercorn        an ASGI app's ``await send({"type": "http.response.body", ...})`` served by
                     hypercorn's trio worker, configured as ``respline serve`` configures it: the
                     whole path (HTTPStream, H11Protocol, TCPServer, the above)

    python bench/writepath.py [--writes 3000] [--gap-ms 2]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time
from pathlib import Path

import h11
import trio

FRAME = (
    b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":12,'
    b'"item_id":"msg_6dad42f7e05ac94f2c92e1f84148c6c0","output_index":0,"content_index":0,"delta":" gateway",'
    b'"logprobs":[],"obfuscation":"x1y2z3w4"}\n\n'
)


def cpu() -> float:
    return time.process_time()


def reader(port: int, request: bytes | None = None) -> int:
    """A process that connects and drains until the other end closes (a client of a stream)."""
    pid = os.fork()
    if pid:
        return pid
    s = socket.create_connection(("127.0.0.1", port))
    if request:
        s.sendall(request)
    while s.recv(1 << 20):
        pass
    os._exit(0)


async def layers(writes: int, gap: float, rounds: int) -> dict[str, float]:
    out: dict[str, float] = {}
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    pid = reader(listener.getsockname()[1])
    sock, _ = await listener.accept()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    stream = trio.SocketStream(sock)
    lock = trio.Lock()
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    conn.next_event()
    conn.next_event()
    stream_head = conn.send(h11.Response(status_code=200, headers=[(b"content-type", b"text/event-stream")]))
    await stream.send_all(stream_head)
    fd = sock.fileno()

    async def sleep_only() -> None:
        pass

    async def syscall() -> None:
        os.write(fd, FRAME)

    async def send_all() -> None:
        await stream.send_all(FRAME)

    async def shielded() -> None:
        with trio.CancelScope(shield=True):
            await stream.send_all(FRAME)

    async def locked() -> None:
        async with lock:
            with trio.CancelScope(shield=True):
                await stream.send_all(FRAME)

    async def framed() -> None:
        data = conn.send(h11.Data(data=FRAME))
        async with lock:
            with trio.CancelScope(shield=True):
                await stream.send_all(data)

    rows = (("sleeps alone", sleep_only), ("syscall", syscall), ("trio send_all", send_all), ("+ shielded scope", shielded),
            ("+ send lock", locked), ("+ h11 framing", framed))
    # rounds of every layer in turn, each less its round's sleeps alone; the median round counts
    # (the machine is shared: a round may be slowed as a whole)
    per: dict[str, list[float]] = {label: [] for label, _ in rows}
    block = max(1, writes // rounds)
    for _ in range(rounds):
        for label, op in rows:
            await op()
            t = cpu()
            for _ in range(block):
                if gap:
                    await trio.sleep(gap)
                await op()
            per[label].append((cpu() - t) / block * 1e6)
    base = per["sleeps alone"]
    out["sleeps alone"] = statistics.median(base)
    for label, _ in rows[1:]:
        out[label] = statistics.median(v - b for v, b in zip(per[label], base)) + out["sleeps alone"]
    sock.close()
    os.waitpid(pid, 0)
    return out


async def through_hypercorn(writes: int, gap: float, rounds: int) -> float:
    """CPU per ``send`` of an ASGI app served by hypercorn as respline serves (sleeps included)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from floor import not_http  # bench/ is the script's folder, first on sys.path
    from hypercorn.trio import serve

    from respline.adapters.cli import hyper_config
    from respline.adapters.config import Config as ResplineConfig

    result: dict[str, float] = {}
    done = trio.Event()

    async def app(scope, receive, send) -> None:
        if await not_http(scope, receive, send):
            return
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        message = {"type": "http.response.body", "body": FRAME, "more_body": True}
        await send(message)
        # in rounds, each less the sleeps alone of its round, measured here (under hypercorn's
        # own tasks and timers)
        per = []
        block = max(1, writes // rounds)
        for _ in range(rounds):
            t = cpu()
            for _ in range(block):
                if gap:
                    await trio.sleep(gap)
            idle = cpu() - t
            t = cpu()
            for _ in range(block):
                if gap:
                    await trio.sleep(gap)
                await send(message)
            per.append((cpu() - t - idle) / block * 1e6)
        result["cpu"] = statistics.median(per)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        done.set()

    rcfg = ResplineConfig()
    rcfg.server.host, rcfg.server.port = "127.0.0.1", 0
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    rcfg.server.port = port
    cfg = hyper_config(rcfg)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve, app, cfg)
        await trio.sleep(0.5)
        pid = reader(port, b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        await done.wait()
        nursery.cancel_scope.cancel()
    os.waitpid(pid, 0)
    return result["cpu"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--writes", type=int, default=3000)
    p.add_argument("--gap-ms", type=float, default=2.0, help="time between writes (0: back to back)")
    p.add_argument("--rounds", type=int, default=6, help="rounds of every layer in turn (the median round is reported)")
    a = p.parse_args()
    gap = a.gap_ms / 1000
    rows = trio.run(layers, a.writes, gap, a.rounds)
    base = rows.pop("sleeps alone")
    rows["hypercorn (the whole path)"] = trio.run(through_hypercorn, a.writes, gap, a.rounds) + base
    print(f"CPU per write of a {len(FRAME)}-byte frame, {a.writes} writes {a.gap_ms:g} ms apart ({a.rounds} rounds, median), "
          f"less the sleeps' own {base:.1f} us (trio waking the process from idle):\n")
    print("| layer | us per write | added by the layer |\n|---|---|---|")
    prev = 0.0
    for label, v in rows.items():
        v -= base
        print(f"| {label} | {v:.1f} | {v - prev:+.1f} |")
        prev = v


if __name__ == "__main__":
    main()
