"""Start-up: the port is bound before anything is logged or written, a port that cannot be had
is one line and exit code 2, and respline's own files go to an owner-only state directory."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys

import httpx
import pytest

from launch import Launched
from validate import checked, parse_sse

CLI = [sys.executable, "-m", "respline.adapters.cli"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RESPLINE_STATE_DIR", "XDG_STATE_HOME")}
    env.update(extra)
    return env


def _run(args: list[str], cwd) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=60)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def busy_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def _one_line(out: subprocess.CompletedProcess, *words: str) -> None:
    assert out.returncode == 2, out.stderr
    assert out.stdout == ""
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith("respline: cannot listen on ")
    for w in words:
        assert w in out.stderr, out.stderr


@pytest.mark.parametrize("workers", [[], ["--workers", "2", "--store", "sqlite:w.db"]])
def test_busy_port_is_one_line_and_exit_2(busy_port, tmp_path, workers):
    out = _run(["serve", "--port", str(busy_port), "--state-dir", "state", *workers], tmp_path)
    _one_line(out, f"127.0.0.1:{busy_port}", "in use")
    assert list(tmp_path.iterdir()) == []  # no secret, no database: it stopped before those


def test_invalid_host_and_port_are_one_line_and_exit_2(tmp_path):
    _one_line(_run(["serve", "--host", "no-such-host.invalid", "--port", "0"], tmp_path), "no-such-host.invalid")
    _one_line(_run(["serve", "--port", "70000"], tmp_path), "0-65535")
    assert list(tmp_path.iterdir()) == []


def test_port_0_logs_the_port_it_got(tmp_path):
    """`--port 0`: the kernel picks the port, and the log says which one (not 0)."""
    work, state = tmp_path / "cwd", tmp_path / "state"
    work.mkdir()
    server = Launched([*CLI, "serve", "--port", "0", "--state-dir", str(state)], work, _env())
    try:
        port = server.port()
        assert port != 0
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
    finally:
        server.stop()
    assert list(work.iterdir()) == []
    assert _mode(state) == 0o700 and _mode(state / "secret") == 0o600


def test_state_files_go_to_the_owner_only_state_dir(tmp_path):
    """With no --state-dir, $XDG_STATE_HOME/respline holds the generated secret and the SQLite
    database (relative config paths resolve there), all owner-only, the database's -wal and
    -shm too; nothing lands in the directory the server started from."""
    work, xdg = tmp_path / "cwd", tmp_path / "xdg"
    work.mkdir()
    config = tmp_path / "respline.toml"
    config.write_text('[store]\nbackend = "sqlite"\n')
    server = Launched([*CLI, "serve", "--port", "0", "--config", str(config)], work, _env(XDG_STATE_HOME=str(xdg)))
    try:
        port = server.port()
        r = httpx.post(f"http://127.0.0.1:{port}/v1/responses", json={"model": "demo", "input": "hi", "stream": True}, timeout=30)
        stored = checked(parse_sse(r.content))[-1]["response"]["id"]
        assert httpx.get(f"http://127.0.0.1:{port}/v1/responses/{stored}", timeout=5).status_code == 200
        state = xdg / "respline"
        assert _mode(state) == 0o700
        files = {p.name: _mode(p) for p in state.iterdir()}
        assert files == {"secret": 0o600, "respline.db": 0o600, "respline.db-wal": 0o600, "respline.db-shm": 0o600}
    finally:
        server.stop()
    assert list(work.iterdir()) == []


def test_state_dir_from_the_environment_and_paths_from_the_command_line(tmp_path):
    """$RESPLINE_STATE_DIR chooses the state directory; a relative --secret-file or
    --store sqlite:PATH on the command line is relative to the current directory. A database
    an older respline left world-readable is made owner-only."""
    work, state = tmp_path / "cwd", tmp_path / "env-state"
    (work / "db").mkdir(parents=True)
    old = work / "db" / "r.db"
    old.touch(mode=0o644)
    os.chmod(old, 0o644)
    env = _env(RESPLINE_STATE_DIR=str(state))
    server = Launched([*CLI, "serve", "--port", "0", "--secret-file", "keys/s", "--store", "sqlite:db/r.db"], work, env)
    try:
        server.port()
        assert _mode(work / "keys") == 0o700 and _mode(work / "keys" / "s") == 0o600
        assert _mode(old) == 0o600
        assert not state.exists()  # nothing of this run belongs there
    finally:
        server.stop()
    server = Launched([*CLI, "serve", "--port", "0"], work, env)
    try:
        server.port()
        assert [p.name for p in state.iterdir()] == ["secret"]
    finally:
        server.stop()
