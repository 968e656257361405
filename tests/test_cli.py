"""The command line: replay, config errors, recording, the demo model, reasoning dialects."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from conftest import ROOT
from upstream import DONE, USAGE, Reply, chunk, text_stream
from validate import check_lifecycle, checked, parse_sse, validate_event

DEMO = ROOT / "fixtures" / "demo" / "text.sse"


def respline(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "respline.adapters.cli", *args],
        capture_output=True,
        cwd=cwd or ROOT,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


def test_replay_is_deterministic_and_valid():
    a = respline("replay", str(DEMO), "--deterministic")
    b = respline("replay", str(DEMO), "--deterministic")
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout
    events = parse_sse(a.stdout)
    checked(events)
    assert events[-1]["response"]["output"][-1]["content"][0]["text"].startswith("Hello from respline")
    # without --deterministic the ids differ from run to run
    c = respline("replay", str(DEMO))
    assert c.returncode == 0 and c.stdout != a.stdout


def test_replay_reasoning_dialects():
    names = {}
    for dialect in ("openai", "openresponses", "summary"):
        out = respline("replay", str(DEMO), "--deterministic", "--reasoning-dialect", dialect)
        events = parse_sse(out.stdout)
        checked(events, dialect)
        names[dialect] = {e["type"] for e in events if "reasoning" in e["type"]}
    assert names["openai"] == {"response.reasoning_text.delta", "response.reasoning_text.done"}
    assert names["openresponses"] == {"response.reasoning.delta", "response.reasoning.done"}
    assert "response.reasoning_summary_text.delta" in names["summary"]


def test_replay_missing_file():
    out = respline("replay", "/nonexistent/stream.sse")
    assert out.returncode == 2 and b"cannot read" in out.stderr


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('[providers.x]\nkind = 5\n', [b"$.providers.x.kind", b"Expected `str`"]),
        ('[server]\nportt = 8080\n', [b"portt"]),
        ('[[routes]]\nmodel = "*"\nprovider = "nobody"\n', [b"routes[0].provider"]),
        ('[providers.x]\nbase_url = "http://x/v1"\napi_key = "$RESPLINE_SURELY_UNSET"\n', [b"RESPLINE_SURELY_UNSET"]),
        ('[server]\ngc_thresholds = [700, 10]\n', [b"server.gc_thresholds"]),
        ('[providers.x]\nbase_url = "https://x/v1"\nhttp2 = true\n', [b'providers.x.http2 needs transport = "httpx"']),
    ],
)
def test_bad_config_fails_at_start_with_key_path(tmp_path, text, said):
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    out = respline("serve", "--config", str(bad), "--port", "1")
    assert out.returncode == 2
    for words in said:
        assert words in out.stderr


def test_tune_gc_freezes_startup_objects_and_sets_thresholds():
    import gc

    from respline.adapters.cli import tune_gc

    before = gc.get_threshold()
    try:
        tune_gc([12345, 7, 3])
        assert gc.get_threshold() == (12345, 7, 3)
        assert gc.get_freeze_count() > 1000  # the modules and everything imported so far
        tune_gc([])  # [] keeps the thresholds as they are
        assert gc.get_threshold() == (12345, 7, 3)
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_demo_model_without_any_upstream(start_server):
    server = start_server([])
    client = openai.OpenAI(base_url=server.url, api_key="anything", max_retries=0)
    resp = client.responses.create(model="demo", input="hello")
    assert resp.output_text.startswith("Hello from respline")
    models = httpx.get(server.url + "/models").json()
    assert "demo" in [m["id"] for m in models["data"]]
    r = httpx.post(server.url + "/responses", json={"model": "demo", "input": "hi", "stream": True})
    events = parse_sse(r.content)
    check_lifecycle(events)


def test_record_saves_request_and_raw_stream(start_server, upstream, tmp_path):
    rec = tmp_path / "rec"
    server = start_server(["--upstream", upstream.base_url, "--record", str(rec)])
    pieces = [chunk({"role": "assistant", "content": "Rec"}), chunk({"content": "orded"}), chunk({}, "stop"),
              chunk(usage=USAGE, choices=False), DONE]
    upstream.queue(Reply(pieces))
    r = httpx.post(server.url + "/responses", json={"model": "m", "input": "hi", "stream": True})
    live = parse_sse(r.content)
    # one cassette (tests/test_cassette.py): cassette.json and a folder per exchange
    assert sorted(p.name for p in rec.iterdir()) == ["0001", "cassette.json"]
    request = json.loads((rec / "0001" / "request.json").read_text())
    assert request["messages"] == [{"role": "user", "content": "hi"}]
    assert (rec / "0001" / "upstream.sse").read_bytes() == b"".join(pieces)
    # the recording replays to the same events the client saw, ids aside
    replayed = parse_sse(respline("replay", str(rec / "0001" / "upstream.sse")).stdout)
    assert [e["type"] for e in replayed] == [e["type"] for e in live]


def test_reasoning_dialect_on_the_server(start_server, upstream):
    server = start_server(["--upstream", upstream.base_url, "--reasoning-dialect", "openresponses"])
    upstream.queue(Reply([chunk({"reasoning": "hmm"}), *text_stream("ok")]))
    r = httpx.post(server.url + "/responses", json={"model": "m", "input": "hi", "stream": True})
    events = parse_sse(r.content)
    for ev in events:
        validate_event(ev, dialect="openresponses")
    assert "response.reasoning.delta" in [e["type"] for e in events]


def _accept_queue(port: int) -> int | None:
    """Connections waiting in the accept queue of the socket listening on ``port`` (Linux: for a
    listening socket, /proc/net/tcp's rx_queue is that count)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, queues = fields[1], fields[3], fields[4]
        if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
            return int(queues.split(":")[1], 16)
    return None


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads the accept queue from Linux's /proc/net/tcp")
def test_a_fleet_connecting_at_once_waits_in_the_accept_queue(start_server):
    """300 clients connect while respline is not accepting (stopped): all 300 wait in the listen
    queue. hypercorn's default backlog (100) holds 101; the rest had their handshakes dropped and
    waited for SYN retransmits, seconds before a first byte (bench/README.md, session 4)."""
    import signal
    import socket

    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    if somaxconn <= 150:
        pytest.skip(f"net.core.somaxconn is {somaxconn}: the kernel caps every backlog near hypercorn's default")
    server = start_server([])
    n = min(300, somaxconn)
    socks: list[socket.socket] = []
    server.proc.send_signal(signal.SIGSTOP)
    try:
        for _ in range(n):
            s = socket.socket()
            s.settimeout(5)
            s.connect(("127.0.0.1", server.port))
            socks.append(s)
        deadline = time.monotonic() + 5
        queued = _accept_queue(server.port)
        while (queued or 0) < n and time.monotonic() < deadline:  # the handshakes' last ACKs
            time.sleep(0.05)
            queued = _accept_queue(server.port)
        assert queued == n
    finally:
        server.proc.send_signal(signal.SIGCONT)
        for s in socks:
            s.close()
    assert httpx.get(server.base + "/health", timeout=5).status_code == 200
