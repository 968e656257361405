"""Shared fixtures: a scripted upstream and a real respline server process on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
import trio

from respline.adapters.config import Config, ConfigError, load
from respline.engine.replay import load_recording
from upstream import Upstream
from validate import parse_sse

ROOT = Path(__file__).resolve().parents[1]
TEST_KEY = "sk-test-key"
# third-party recorded streams live beside the project, never in it (provider-streams/README.md)
PROVIDER_STREAMS = ROOT.parent / "shared" / "provider-streams"
NO_RECORDINGS = f"third-party provider recordings not found at {PROVIDER_STREAMS} (they live beside the project)"


def recordings(*folders: str) -> list[str]:
    """The recorded streams of these provider-streams folders, as ``folder/file``; none where absent."""
    return sorted(
        f"{d}/{p.name}"
        for d in folders
        if (PROVIDER_STREAMS / d).is_dir()
        for p in (PROVIDER_STREAMS / d).iterdir()
        if p.name.endswith((".sse", ".jsonl"))
    )


def recording(name: str) -> bytes:
    """One recorded stream (``folder/file``) as SSE bytes (a JSONL recording reframed)."""
    return load_recording(name, (PROVIDER_STREAMS / name).read_bytes())


def route_all_to(upstream_url: str, kind: str = "openai-chat", route: str = "", provider: str = "") -> str:
    """Config text: the provider ``up`` (``kind``) at ``upstream_url`` and one route sending every
    model to it; ``route`` adds lines to that route (``context_window = 120``), ``provider`` to
    the provider (``transport = "httpx"``)."""
    return f"""
[providers.up]
kind = "{kind}"
base_url = "{upstream_url}"
{provider}

[[routes]]
model = "*"
provider = "up"
{route}
"""


def load_config(tmp: Path, text: str) -> Config:
    """``text`` as a config file, loaded as ``respline serve --config`` loads it."""
    path = tmp / "c.toml"
    path.write_text(text)
    return load(path)


def config_error(tmp: Path, text: str) -> str:
    """Why ``text`` is refused as a config (the test fails if it is not)."""
    with pytest.raises(ConfigError) as exc:
        load_config(tmp, text)
    return str(exc.value)


async def until_healthy(client: httpx.AsyncClient) -> None:
    """Wait, up to about 4 s, for a server started in this process to answer ``/health``."""
    for _ in range(200):
        try:
            if (await client.get("/health")).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await trio.sleep(0.02)


def replay_command(tmp: Path, kind: str, stream: bytes) -> list[dict]:
    """``respline replay --kind KIND --deterministic`` of an upstream's stream (saved in ``tmp``),
    run as a user runs it: the events it printed."""
    path = tmp / "upstream.sse"
    path.write_bytes(stream)
    out = subprocess.run(
        [sys.executable, "-m", "respline.adapters.cli", "replay", "--kind", kind, "--deterministic", str(path)],
        cwd=ROOT, capture_output=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return parse_sse(out.stdout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``respline serve`` as a child process; ``url`` is its /v1 base URL."""

    def __init__(self, tmp: Path, args: list[str], config: str | None = None, env: dict | None = None) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = self.base + "/v1"
        cmd = [sys.executable, "-m", "respline.adapters.cli", "serve", "--port", str(self.port)]
        cmd += ["--secret-file", str(tmp / "secret"), "--shutdown-grace", "1"]
        if config is not None:
            cfg = tmp / f"config-{self.port}.toml"
            cfg.write_text(config)
            cmd += ["--config", str(cfg)]
        cmd += args
        self.log_path = tmp / f"server-{self.port}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        full_env = dict(os.environ)
        full_env.pop("PYTHONPATH", None)  # the installed respline, as a user runs it
        full_env.update(env or {})
        self.proc = subprocess.Popen(cmd, cwd=tmp, stdout=self._log, stderr=subprocess.STDOUT, env=full_env)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"respline exited early:\n{self.log()}")
            try:
                if httpx.get(self.base + "/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"respline did not become ready:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def sdk(self, key: str = TEST_KEY) -> openai.OpenAI:
        """The openai SDK pointed at this server, without its retries (a test sees every answer)."""
        return openai.OpenAI(base_url=self.url, api_key=key, max_retries=0)

    def stop(self) -> None:
        terminate(self.proc)
        self._log.close()


def terminate(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM, as a user stops respline; SIGKILL if it has not exited after ``grace`` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def upstream_server():
    up = Upstream().start()
    yield up
    up.stop()


@pytest.fixture
def upstream(upstream_server):
    upstream_server.reset()
    yield upstream_server
    upstream_server.reset()


@pytest.fixture(scope="session")
def respline(upstream_server, tmp_path_factory):
    """The shared server: every model routed to the scripted upstream, one client key."""
    tmp = tmp_path_factory.mktemp("respline")
    server = Server(tmp, ["--upstream", upstream_server.base_url, "--api-key", TEST_KEY])
    yield server
    server.stop()


@pytest.fixture
def start_server(tmp_path):
    """Start a server with its own options; stopped at the end of the test."""
    servers: list[Server] = []

    def start(args: list[str], config: str | None = None, env: dict | None = None) -> Server:
        s = Server(tmp_path, args, config, env)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()
