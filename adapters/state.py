"""Where respline keeps what it writes for itself: the generated sealing secret and the default
SQLite database, in one state directory only its owner can read.

The directory is ``--state-dir``, else ``$RESPLINE_STATE_DIR``, else ``[server] state_dir``, else
``$XDG_STATE_HOME/respline`` (``~/.local/state/respline``): never the directory the server
happens to start from. Relative ``server.secret_file`` and ``store.path`` values from a config
file are inside it; paths given on the command line are relative to the current directory, as
a shell user expects. Nothing is created until something is written there.
"""

from __future__ import annotations

import os
from pathlib import Path

from respline.adapters.config import Config

ENV = "RESPLINE_STATE_DIR"


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME", "")
    # the XDG spec ignores a relative value
    root = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "state"
    return root / "respline"


def resolve(cfg: Config, cli_state_dir: str | None) -> None:
    """Make ``server.state_dir``, ``server.secret_file`` and ``store.path`` absolute."""
    chosen = cli_state_dir or os.environ.get(ENV) or cfg.server.state_dir
    state = Path(os.path.abspath(os.path.expanduser(chosen))) if chosen else default_state_dir()
    cfg.server.state_dir = str(state)
    cfg.server.secret_file = str(state / os.path.expanduser(cfg.server.secret_file))
    cfg.store.path = str(state / os.path.expanduser(cfg.store.path))


def private_dir(path: Path) -> None:
    """``path`` exists; made here, it is owner-only (0700). An existing directory is left as it
    is: it may be one the operator shares on purpose (and must never be /tmp made private)."""
    if not path.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:  # another worker process made it first
            pass


def private_file(path: Path) -> None:
    """``path`` exists and only its owner may read or write it (0600), and so do SQLite's
    ``-wal`` and ``-shm`` beside it: SQLite gives those the database file's own mode when it
    makes them, and an older respline made them world-readable."""
    private_dir(path.parent)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            st = p.stat()
            if st.st_mode & 0o077 and st.st_uid == os.getuid():
                os.chmod(p, 0o600)
        except FileNotFoundError:
            pass
