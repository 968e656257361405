"""Frames that are ready together are written together (ARCHITECTURE.md): each write to the
client costs the server a fixed ~0.1 ms, so respline does not split what one upstream read gave it.
Each HTTP chunk respline writes arrives as its own piece of ``aiter_raw`` here."""

from __future__ import annotations

import httpx

from conftest import TEST_KEY
from upstream import DONE, USAGE, Reply, chunk
from validate import checked, parse_sse

AUTH = {"Authorization": f"Bearer {TEST_KEY}"}


def _body(*words: str) -> bytes:
    pieces = [chunk({"role": "assistant", "content": ""})] + [chunk({"content": w}) for w in words]
    return b"".join(pieces + [chunk({}, "stop"), chunk(usage=USAGE, choices=False), DONE])


async def _pieces(respline) -> list[bytes]:
    async with httpx.AsyncClient(timeout=30) as client:
        async with client.stream(
            "POST", respline.url + "/responses", json={"model": "m1", "input": "x", "stream": True}, headers=AUTH
        ) as r:
            assert r.status_code == 200
            return [p async for p in r.aiter_raw()]


async def test_last_read_and_terminal_events_share_a_write(respline, upstream):
    """A length-delimited upstream body that arrives in one read: its deltas and the terminal
    events (which respline adds once the body has ended) go out in one write, not two."""
    upstream.queue(Reply(body=_body("one", " two"), headers={"content-type": "text/event-stream"}))
    pieces = await _pieces(respline)
    events = checked(parse_sse(b"".join(pieces)))
    assert [e["type"] for e in events][-1] == "response.completed"
    together = [p for p in pieces if b"response.output_text.delta" in p and b"response.completed" in p]
    assert together, [p[:80] for p in pieces]
    assert sum(p.count(b"event: response.output_text.delta") for p in pieces) == 2


async def test_paced_tokens_are_not_held_back(respline, upstream):
    """A close-delimited, paced upstream: each token is written when it arrives (nothing waits
    for the next read), and the stream still ends with the terminal events."""
    words = [f"w{i} " for i in range(4)]
    pieces = [chunk({"role": "assistant", "content": ""})] + [chunk({"content": w}) for w in words]
    upstream.queue(Reply(pieces + [chunk({}, "stop"), DONE], delay=0.2))
    got = await _pieces(respline)
    deltas = [p for p in got if b"response.output_text.delta" in p]
    assert len(deltas) == 4, "each paced token went out in its own write"
    assert b"response.completed" not in deltas[-1]  # the end of a close-delimited body is only seen later
    events = checked(parse_sse(b"".join(got)))
