"""``respline serve`` started as a user starts it, ready when it logs the address it listens on.

conftest.Server picks a free port first; these tests need what respline itself reports
(``--port 0``), its exit code and its stderr.
"""

from __future__ import annotations

import queue
import re
import subprocess
import threading
import time
from pathlib import Path

from conftest import terminate

LISTENING = re.compile(r"respline listening on http://([^\s\"]+):(\d+)")


class Launched:
    def __init__(self, cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for raw in self.proc.stdout:
            self._queue.put(raw.decode(errors="replace"))
        self._queue.put(None)

    def port(self, timeout: float = 30.0) -> int:
        """The port from the first 'listening on' line; fails with the output so far."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if line is None:
                break
            self.lines.append(line)
            m = LISTENING.search(line)
            if m:
                return int(m.group(2))
        raise AssertionError("respline did not log where it listens:\n" + "".join(self.lines))

    def stop(self) -> None:
        terminate(self.proc)
