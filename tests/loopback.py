"""A TCP server on loopback for tests that speak raw bytes: one thread accepts, one thread per
connection runs the subclass's ``serve``."""

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
