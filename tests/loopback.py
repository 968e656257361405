"""A TCP server on loopback for tests that speak raw bytes (one thread accepts, one thread per
connection runs the subclass's ``serve``), and the byte relay of the proxies built on it."""

from __future__ import annotations

import socket
import threading


class SocketServer:
    """Listening once constructed (set a subclass's own state before calling this ``__init__``);
    ``port`` is where, ``connections`` counts those accepted, ``_lock`` guards counters."""

    def __init__(self) -> None:
        self.connections = 0
        self._lock = threading.Lock()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._sock.close()


def relay(src: socket.socket, dst: socket.socket, keep: bytearray | None = None) -> None:
    """Copy what ``src`` sends to ``dst`` (and into ``keep``) until either end stops, then shut
    both down: the relay holds neither end open once one has gone."""
    try:
        while data := src.recv(65536):
            if keep is not None:
                keep += data
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
