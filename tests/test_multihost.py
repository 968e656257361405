"""Several respline hosts sharing one PostgreSQL database and one secret (issue 14): three
processes, each with its own working directory, as three machines would be. A chain, a
conversation and item references continue from any host; a background run started on one host
is followed live from a second and cancelled from a third; two hosts appending turns to one
conversation at once keep both; ``--workers N`` shares PostgreSQL too; a host killed with -9
mid-run has its run ended by another (needs the runs work: leases and the reaper).

Each test's hosts use a fresh schema; without a PostgreSQL server every test here skips."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

import pgtest
from conftest import Server
from upstream import DONE, USAGE, Reply, chunk, text_stream
from validate import check_lifecycle, parse_sse, validate_event, validate_response

KEY = "sk-multihost"
SECRET = "multihost-shared-secret-0123456789abcdef"


def slow_text(n: int, delay: float) -> Reply:
    pieces = [chunk({"role": "assistant", "content": ""})] + [chunk({"content": f"w{i} "}) for i in range(n)]
    return Reply(pieces + [chunk({}, "stop"), chunk(usage=USAGE, choices=False), DONE], delay=delay)


def host_config(upstream_url: str, extra: str = "") -> str:
    return f"""
[server]
api_keys = ["{KEY}"]
secret = "$RESPLINE_SECRET"
shutdown_grace = 0.5

[store]
backend = "postgres"
dsn = "$RESPLINE_PG_DSN"
{extra}

[providers.up]
kind = "openai-chat"
base_url = "{upstream_url}"

[[routes]]
model = "*"
provider = "up"
"""


def start_hosts(tmp: Path, schema: pgtest.Schema, upstream_url: str, n: int, extra: str = "") -> list[Server]:
    env = {"RESPLINE_PG_DSN": schema.dsn, "RESPLINE_SECRET": SECRET}
    hosts = []
    try:
        for i in range(n):
            home = tmp / f"host{i + 1}"  # nothing on disk is shared
            home.mkdir()
            hosts.append(Server(home, [], config=host_config(upstream_url, extra), env=env))
    except BaseException:
        for h in hosts:
            h.stop()
        raise
    return hosts


@pytest.fixture(scope="module")
def cluster(upstream_server, tmp_path_factory):
    schema = pgtest.new_schema()  # skips, saying why, without a server
    hosts = start_hosts(tmp_path_factory.mktemp("cluster"), schema, upstream_server.base_url, 3)
    yield hosts
    for h in hosts:
        h.stop()
    schema.drop()


def sdk(host: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=host.url, api_key=KEY, max_retries=0)


def test_chain_conversation_and_items_across_three_hosts(cluster, upstream):
    one, two, three = (sdk(h) for h in cluster)
    upstream.queue(Reply(text_stream("Paris.")), Reply(text_stream("About 2 million.")), Reply(text_stream("Yes.")))
    first = one.responses.create(model="m", input="Capital of France?")
    second = two.responses.create(model="m", input="Its population?", previous_response_id=first.id)
    third = three.responses.create(model="m", input="Sure?", previous_response_id=second.id)
    assert third.output_text == "Yes."
    assert upstream.last["body"]["messages"] == [
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "Its population?"},
        {"role": "assistant", "content": "About 2 million."},
        {"role": "user", "content": "Sure?"},
    ]
    for client in (one, two, three):
        got = client.responses.retrieve(second.id)
        assert got.output_text == "About 2 million."
        validate_response(got.model_dump(mode="json"))
    # an item stored through one host is referenced through another
    upstream.queue(Reply(text_stream("ok")))
    two.responses.create(model="m", input=[{"type": "item_reference", "id": first.output[0].id}])
    assert upstream.last["body"]["messages"] == [{"role": "assistant", "content": "Paris."}]
    # a conversation created on one host, continued on the others
    conv = three.conversations.create(items=[{"role": "user", "content": "My name is Ada."}])
    upstream.queue(Reply(text_stream("Hello Ada.")), Reply(text_stream("Ada.")))
    one.responses.create(model="m", input="Hi!", conversation=conv.id)
    two.responses.create(model="m", input="My name?", conversation=conv.id)
    texts = [i.content[0].text for i in three.conversations.items.list(conv.id, order="asc").data]
    assert texts == ["My name is Ada.", "Hi!", "Hello Ada.", "My name?", "Ada."]
    # deleted on one host: gone on all
    one.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        three.responses.retrieve(first.id)


def test_background_run_followed_and_cancelled_from_other_hosts(cluster, upstream):
    """Started on host 1, followed live from host 2 (LISTEN/NOTIFY wakes it), cancelled from
    host 3: host 1 stops reading its upstream, the follower's stream ends, and every host reads
    the run as cancelled."""
    starter, follower, canceller = cluster
    upstream.queue(slow_text(400, 0.05))
    resp = sdk(starter).responses.create(model="m", input="very slow", background=True)
    seen = bytearray()
    got_some = threading.Event()
    ended = threading.Event()

    def follow() -> None:
        url = f"{follower.url}/responses/{resp.id}"
        with httpx.stream("GET", url, params={"stream": "true"}, headers={"authorization": f"Bearer {KEY}"}, timeout=30) as r:
            assert r.status_code == 200
            for piece in r.iter_bytes():
                seen.extend(piece)
                if seen.count(b"response.output_text.delta") >= 5:
                    got_some.set()
        ended.set()

    t = threading.Thread(target=follow, daemon=True)
    t.start()
    assert got_some.wait(20), "the follower on another host saw no live events"
    assert not ended.is_set()
    cancelled = sdk(canceller).responses.cancel(resp.id)
    assert cancelled.status == "cancelled"
    assert ended.wait(20), "the follower's stream did not end after the cancel"
    t.join(5)
    # a cancelled run has no terminal event (its status says cancelled); the stream ends with
    # [DONE], which parse_sse's framing rules reject without one, so read the events before it
    body = bytes(seen)
    assert body.endswith(b"data: [DONE]\n\n")
    events = parse_sse(body[: -len(b"data: [DONE]\n\n")], require_done=False)
    for ev in events:
        validate_event(ev)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created"
    deadline = time.monotonic() + 10
    while not upstream.hangups and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstream.hangups, "host 1 kept reading the upstream of a run cancelled on host 3"
    for host in cluster:
        assert sdk(host).responses.retrieve(resp.id).status == "cancelled"


def test_background_run_completes_for_a_follower_on_another_host(cluster, upstream):
    """A follower on host 2 that joins mid-run receives the rest and the terminal event, then
    [DONE]; joined with what it resumed after, the stream is whole and valid."""
    upstream.queue(slow_text(30, 0.03))
    starter, follower, _ = cluster
    resp = sdk(starter).responses.create(model="m", input="stream me", background=True)
    time.sleep(0.3)
    raw = httpx.get(
        f"{follower.url}/responses/{resp.id}",
        params={"stream": "true", "starting_after": "-1"},
        headers={"authorization": f"Bearer {KEY}"},
        timeout=30,
    )
    events = parse_sse(raw.content)
    for ev in events:
        validate_event(ev)
    check_lifecycle(events)
    assert events[-1]["type"] == "response.completed"
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == "".join(
        f"w{i} " for i in range(30)
    )


def test_two_hosts_append_to_one_conversation_at_once(cluster, upstream):
    """Turns finishing on two hosts at the same moment: both kept, each turn's input and answer
    together."""
    conv = sdk(cluster[0]).conversations.create()
    errors: list[BaseException] = []

    def turns(host: Server, name: str) -> None:
        client = sdk(host)
        try:
            for i in range(6):
                client.responses.create(model="m", input=f"{name}{i}", conversation=conv.id)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=turns, args=(h, n)) for h, n in ((cluster[0], "a"), (cluster[1], "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    items = sdk(cluster[2]).conversations.items.list(conv.id, order="asc", limit=100).data
    assert len(items) == 24
    pairs = [(items[i], items[i + 1]) for i in range(0, 24, 2)]
    for question, answer in pairs:
        assert question.role == "user" and answer.role == "assistant", (question, answer)
    asked = [q.content[0].text for q, _ in pairs]
    assert sorted(asked) == sorted(f"{n}{i}" for n in "ab" for i in range(6))
    for n in "ab":
        assert [a for a in asked if a[0] == n] == [f"{n}{i}" for i in range(6)]


def test_workers_share_postgres(start_server, upstream, tmp_path):
    """``--workers 2 --store postgresql://...``: fresh connections land on either worker; the
    chain holds across them."""
    schema = pgtest.new_schema()
    try:
        if schema.url is None:
            pytest.skip("RESPLINE_TEST_PG_DSN is not a postgresql:// URL")
        server = start_server(["--upstream", upstream.base_url, "--workers", "2", "--store", schema.url])
        prev = None
        for i in range(6):
            upstream.queue(Reply(text_stream(f"a{i}")))
            fresh = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0)
            prev = fresh.responses.create(model="m", input=f"q{i}", previous_response_id=prev).id
        messages = upstream.last["body"]["messages"]
        assert [m["content"] for m in messages] == [x for i in range(6) for x in (f"q{i}", f"a{i}")][:-1]
        server.stop()
    finally:
        schema.drop()


def test_host_killed_mid_run_is_ended_by_another(upstream_server, tmp_path):
    """kill -9 the host producing a background run: another host takes the lapsed lease and
    ends the run as failed; a follower on a third host sees the stream end."""
    upstream = upstream_server
    upstream.reset()
    schema = pgtest.new_schema()
    hosts = start_hosts(tmp_path, schema, upstream.base_url, 3)
    try:
        victim, survivor, watcher = hosts
        upstream.queue(slow_text(2000, 0.05))
        resp = sdk(victim).responses.create(model="m", input="doomed", background=True)
        deadline = time.monotonic() + 10
        while sdk(watcher).responses.retrieve(resp.id).status != "in_progress" and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(victim.proc.pid, signal.SIGKILL)
        victim.proc.wait()
        raw = httpx.get(
            f"{watcher.url}/responses/{resp.id}",
            params={"stream": "true"},
            headers={"authorization": f"Bearer {KEY}"},
            timeout=120,
        )
        events = parse_sse(raw.content)
        for ev in events:
            validate_event(ev)
        final = sdk(survivor).responses.retrieve(resp.id)
        assert final.status == "failed", final.status
        assert final.error is not None and final.error.message
        for host in (survivor, watcher):
            assert sdk(host).responses.retrieve(resp.id).status == "failed"
    finally:
        for h in hosts:
            h.stop()
        schema.drop()
        upstream.reset()
