"""The server secret, which seals reasoning and compaction items (engine/seal.py)."""

from __future__ import annotations

import os
from pathlib import Path

from respline.adapters.config import Config, ConfigError, expand_env
from respline.adapters.state import private_dir


def load_secret(cfg: Config) -> bytes:
    """The server secret: from config (or its $ENV), else generated once and kept in secret_file
    (owner-only, in an owner-only directory when respline makes it: adapters/state.py)."""
    value = expand_env(cfg.server.secret, "server.secret")
    if value:
        return value.encode()
    path = Path(cfg.server.secret_file)
    try:
        try:
            data = path.read_bytes().strip()
            if data:
                return data
        except FileNotFoundError:
            pass
        private_dir(path.parent)
        secret = os.urandom(32).hex().encode()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another worker process wrote it first
            return path.read_bytes().strip()
        with os.fdopen(fd, "wb") as f:
            f.write(secret)
    except OSError as exc:  # unreadable, or nowhere to write it: a start-up error, one line
        raise ConfigError(f"server.secret_file {path}: {exc.strerror or exc}") from None
    return secret
