"""A server process that dies (kill -9) leaves nothing in_progress for good: every response it
was producing is held under a lease it renews; once the lease runs out, another process on the
same SQLite file ends it as failed with the output it had, and a background run's followers get
``error`` + ``response.failed``. A process that is alive keeps its runs, whoever starts next to it.
"""

from __future__ import annotations

import sqlite3
import time

import httpx
import trio

from conftest import Server, route_all_to
from upstream import DONE, USAGE, Reply, chunk, text_stream
from validate import checked, parse_sse


def config(upstream, db) -> str:
    return f"""
[store]
backend = "sqlite"
path = "{db}"
lease_seconds = 1
lease_renew_seconds = 0.3
{route_all_to(upstream.base_url)}"""


def thinking_then_text(n: int, delay: float) -> Reply:
    """A reasoning item (complete once the text starts), then a long slow message."""
    pieces = [chunk({"role": "assistant", "content": None})]
    pieces += [chunk({"reasoning_content": f"think{i} "}) for i in range(3)]
    pieces += [chunk({"content": f"w{i} "}) for i in range(n)]
    return Reply(pieces + [chunk({}, "stop"), chunk(usage=USAGE, choices=False), DONE], delay=delay)


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_kill_9_then_another_process_ends_what_it_left(upstream, tmp_path):
    db = tmp_path / "crash.db"
    first = Server(tmp_path, [], config=config(upstream, db))
    upstream.queue(*[thinking_then_text(400, 0.05) for _ in range(3)])
    try:
        runs = [
            httpx.post(first.url + "/responses", json={"model": "m", "input": f"run {i}", "background": True}).json()["id"]
            for i in range(2)
        ]
        foreground = b""
        async with httpx.AsyncClient(timeout=30) as client:
            async with client.stream(
                "POST", first.url + "/responses", json={"model": "m", "input": "fg", "stream": True}
            ) as r:
                async for piece in r.aiter_bytes():
                    foreground += piece
                    if foreground.count(b"response.output_text.delta") >= 3:
                        break

                def runs_have_text():
                    with sqlite3.connect(db) as conn:
                        deltas = conn.execute(
                            "SELECT COUNT(DISTINCT response_id) FROM events WHERE type = 'response.output_text.delta'"
                        ).fetchone()[0]
                    return deltas == 2 and all(
                        len(httpx.get(f"{first.url}/responses/{rid}").json()["output"]) == 1 for rid in runs
                    )  # each run's reasoning item is complete and stored, its text streaming

                wait_for(runs_have_text, 10, "the background runs to stream text")
                first.proc.kill()  # kill -9, mid-stream
                first.proc.wait()
    finally:
        first.stop()
    fg_id = parse_sse(foreground[: foreground.rindex(b"\n\n") + 2], require_done=False)[0]["response"]["id"]
    # just after the crash everything is still recorded in_progress
    rows = sqlite3.connect(db).execute("SELECT COUNT(*) FROM leases").fetchone()[0]
    assert rows == 3
    second = Server(tmp_path, [], config=config(upstream, db))
    try:
        for rid in runs:
            stored = wait_for(
                lambda: (r := httpx.get(f"{second.url}/responses/{rid}").json())["status"] == "failed" and r,
                10,
                "the orphaned run to be ended",
            )
            assert "stopped" in stored["error"]["message"] and stored["error"]["code"] == "server_error"
            reasoning, message = stored["output"]
            assert reasoning["type"] == "reasoning" and reasoning["status"] == "completed"
            assert message["status"] == "incomplete" and message["content"][0]["text"].startswith("w0 w1 ")
            # a follower from the start gets the whole stream, ended
            events = checked(parse_sse(httpx.get(f"{second.url}/responses/{rid}", params={"stream": "true"}).content))
            assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
            assert events[-1]["response"]["output"] == stored["output"]
        fg = httpx.get(f"{second.url}/responses/{fg_id}").json()
        assert fg["status"] == "failed" and "stopped" in fg["error"]["message"]
        assert fg["output"][0]["type"] == "reasoning"  # the item it had completed
        assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM leases").fetchone()[0] == 0
        assert "ended 3 responses left by a server process that stopped" in second.log()
    finally:
        second.stop()


def test_a_starting_process_leaves_a_live_sibling_alone(upstream, tmp_path):
    """Two processes on one SQLite file (as --workers N are): the second one's reaper, at start
    and after, never ends the first one's live run, long past the lease length."""
    db = tmp_path / "siblings.db"
    one = Server(tmp_path, [], config=config(upstream, db))
    two = None
    try:
        upstream.queue(thinking_then_text(50, 0.05))  # ~2.7 s, several leases long
        rid = httpx.post(one.url + "/responses", json={"model": "m", "input": "x", "background": True}).json()["id"]
        two = Server(tmp_path, [], config=config(upstream, db))
        stored = wait_for(
            lambda: (r := httpx.get(f"{two.url}/responses/{rid}").json())["status"] not in ("queued", "in_progress") and r,
            15,
            "the run to end",
        )
        assert stored["status"] == "completed", stored.get("error")
        assert "left by a server process" not in two.log()
    finally:
        one.stop()
        if two is not None:
            two.stop()


def test_follower_gets_an_end_the_log_lacks(start_server, upstream, tmp_path):
    """A run whose stored status is final but whose log has no terminal event (its process died
    between the two writes): a follower gets the end from the stored status."""
    db = tmp_path / "end.db"
    server = start_server([], config=config(upstream, db))
    upstream.queue(Reply(text_stream("All", " done.")))
    rid = httpx.post(server.url + "/responses", json={"model": "m", "input": "x", "background": True}).json()["id"]
    wait_for(lambda: httpx.get(f"{server.url}/responses/{rid}").json()["status"] == "completed", 10, "the run")
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM events WHERE type = 'response.completed'")
    events = checked(parse_sse(httpx.get(f"{server.url}/responses/{rid}", params={"stream": "true"}).content))
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["output"] == httpx.get(f"{server.url}/responses/{rid}").json()["output"]
