"""``--workers N``: several processes on one port share the SQLite store."""

from __future__ import annotations

from pathlib import Path

import openai

from upstream import Reply, text_stream


def children(pid: int) -> list[int]:
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = (proc / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(proc.name))
    return out


def test_two_workers_share_state(start_server, upstream, tmp_path):
    server = start_server(["--upstream", upstream.base_url, "--workers", "2", "--store", f"sqlite:{tmp_path / 'w.db'}"])
    assert len(children(server.proc.pid)) == 2
    client = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0)
    prev = None
    for i in range(8):  # fresh connections land on either worker; the chain holds across them
        upstream.queue(Reply(text_stream(f"a{i}")))
        fresh = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0)
        resp = fresh.responses.create(model="m", input=f"q{i}", previous_response_id=prev)
        prev = resp.id
    messages = upstream.last["body"]["messages"]
    assert [m["content"] for m in messages] == [x for i in range(8) for x in (f"q{i}", f"a{i}")][:-1]
    assert client.responses.retrieve(prev).output_text == "a7"
    # stopping the supervisor stops its workers
    kids = children(server.proc.pid)
    server.stop()
    assert all(not Path(f"/proc/{k}").exists() or "zombie" in Path(f"/proc/{k}/status").read_text().lower() for k in kids)


def test_workers_need_a_shared_store(tmp_path):
    import subprocess
    import sys

    from conftest import ROOT

    out = subprocess.run(
        [sys.executable, "-m", "respline.adapters.cli", "serve", "--workers", "2", "--port", "1"],
        capture_output=True, cwd=tmp_path, env={"PYTHONPATH": str(ROOT)}, timeout=30,
    )
    assert out.returncode == 2 and b"sqlite" in out.stderr
