"""Several respline hosts sharing one PostgreSQL database and one secret (issue 14): three
processes, each with its own working directory, as three machines would be. A chain, a
conversation and item references continue from any host; a background run started on one host
is followed live from a second and cancelled from a third (within a second); two hosts appending
turns to one conversation at once keep both; sealed items made on one host open on the others
(and a host with another secret refuses them with a 400); a WebSocket chain continues over a
socket to another host; ``--workers N`` shares PostgreSQL too; and the crash test: kill -9 a
host serving 100 stored streams, three times, and nothing a client was told is lost.

Each test's hosts use a fresh schema; without a PostgreSQL server every test here skips."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import msgspec
import openai
import pytest
import trio

import pgtest
from pgtest import pg_schema  # noqa: F401 - a fixture
from conftest import Server, route_all_to
from upstream import DONE, USAGE, Reply, chunk, text_stream, tool_stream
from validate import checked, parse_sse, validate_event, validate_response

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
{route_all_to(upstream_url)}"""


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
def cluster_db():
    schema = pgtest.new_schema()  # skips, saying why, without a server
    yield schema
    schema.drop()


@pytest.fixture(scope="module")
def cluster(upstream_server, tmp_path_factory, cluster_db):
    hosts = start_hosts(tmp_path_factory.mktemp("cluster"), cluster_db, upstream_server.base_url, 3)
    yield hosts
    for h in hosts:
        h.stop()


def sdk(host: Server) -> openai.OpenAI:
    return host.sdk(KEY)


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
        items = client.responses.input_items.list(second.id).data
        assert [i.content[0].text for i in items] == ["Its population?"]
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
    assert not upstream.hangups
    sent = time.monotonic()
    cancelled = sdk(canceller).responses.cancel(resp.id)
    answered = time.monotonic()
    assert cancelled.status == "cancelled"
    # host 3 answers once host 1 has logged the run's end, and host 1 closed its upstream
    # connection before that (the upstream notices at its next write, 50 ms apart): within a
    # second of the cancel being sent, as the issue asks. A poll of the stored status (every
    # 0.5 s) would make this up to 0.5 s longer.
    assert answered - sent < 1.0, f"the cancel took {answered - sent:.2f}s to be answered"
    deadline = time.monotonic() + 10
    while not upstream.hangups and time.monotonic() < deadline:
        time.sleep(0.01)
    assert upstream.hangups, "host 1 kept reading the upstream of a run cancelled on host 3"
    assert upstream.hangups[0] - sent < 1.0, f"host 1 stopped the run {upstream.hangups[0] - sent:.2f}s after the cancel"
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
    checked(events)
    assert events[-1]["type"] == "response.completed"
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == "".join(
        f"w{i} " for i in range(30)
    )


async def test_follow_yields_an_end_logged_between_its_reads():
    """The host producing a run stores its final status, then logs its terminal event; a
    follower (on any host) that read the log before the event landed and the status after it
    must still get that event, not end the stream without one (the crash test caught this)."""
    from respline.adapters.cli import build_gateway
    from respline.adapters.config import Config, ServerConfig
    from respline.engine.store import StoredEvent, StoredResponse

    gateway, _clients = build_gateway(Config(server=ServerConfig(secret="test-secret")))
    store = gateway.store
    await store.put_response(StoredResponse(tenant="t", id="resp_1", response={"id": "resp_1", "status": "completed"},
                                            input_items=[], background=True, created_at=int(time.time())))
    await store.append_events("t", "resp_1", [StoredEvent(0, "response.created", b"{}"), StoredEvent(1, "response.in_progress", b"{}")])

    class Interleaved:
        """The store as the follower sees it: the producer's terminal event lands just as the
        follower reads the stored status."""

        def __getattr__(self, name):
            return getattr(store, name)

        async def get_response(self, tenant, response_id):
            if not await store.get_events(tenant, response_id, 1):
                await store.append_events(tenant, response_id, [StoredEvent(2, "response.completed", b"{}")])
            return await store.get_response(tenant, response_id)

    gateway.store = Interleaved()
    with trio.fail_after(10):
        got = [ev for batch in [b async for b in gateway.follow("t", "resp_1", 1)] for ev in batch]
    assert [(ev.seq, ev.type) for ev in got] == [(2, "response.completed")]
    # one that starts at the end is done at once, with nothing
    with trio.fail_after(1):
        assert [b async for b in gateway.follow("t", "resp_1", 2)] == []


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


TOOL = {"type": "function", "name": "f", "parameters": {"type": "object", "properties": {}}}


def post(host: Server, body: dict, path: str = "/responses") -> httpx.Response:
    return httpx.post(host.url + path, json=body, headers={"authorization": f"Bearer {KEY}"}, timeout=30)


def assert_refused(r: httpx.Response, param: str) -> None:
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["type"], err["code"], err["param"]) == ("invalid_request_error", "invalid_encrypted_content", param)


def test_sealed_items_open_on_every_host_sharing_the_secret(cluster, cluster_db, upstream, tmp_path):
    """A reasoning item and a compaction item sealed on host 1 open on host 2 (sent back as
    input) and host 3 (a stored chain); a host of the same database with another secret (a
    misconfigured one) refuses them with a 400 naming the item, as the fleet refuses its own."""
    one, two, three = cluster
    upstream.queue(Reply(tool_stream("f", "{}", call_id="call_1", reasoning="the private plan")))
    r = post(one, {"model": "m", "input": "go", "tools": [TOOL], "include": ["reasoning.encrypted_content"]})
    assert r.status_code == 200, r.text
    rid, output = r.json()["id"], r.json()["output"]
    assert [o["type"] for o in output] == ["reasoning", "function_call"]
    assert "private plan" not in output[0]["encrypted_content"]
    upstream.queue(Reply(text_stream("the private summary")))
    item = post(one, {"model": "m", "input": "remember this"}, "/responses/compact").json()["output"][-1]
    assert item["type"] == "compaction" and "private summary" not in item["encrypted_content"]
    call_output = {"type": "function_call_output", "call_id": "call_1", "output": "ok"}
    # sent back as input to host 2 (store: false, as Codex does): both open, the upstream gets them
    upstream.queue(Reply(text_stream("done")))
    r = post(two, {"model": "m", "store": False, "tools": [TOOL], "input": [item, {"role": "user", "content": "go"}, *output, call_output]})
    assert r.status_code == 200, r.text
    sent = msgspec.json.encode(upstream.last["body"]).decode()
    assert "the private plan" in sent and "the private summary" in sent
    # the stored chain continued on host 3: the reasoning stored by host 1 opens there
    upstream.queue(Reply(text_stream("done")))
    r = post(three, {"model": "m", "previous_response_id": rid, "tools": [TOOL], "input": [call_output]})
    assert r.status_code == 200, r.text
    assert "the private plan" in msgspec.json.encode(upstream.last["body"]).decode()
    # a host of the same database whose secret differs: a clear 400 each time, nothing upstream
    home = tmp_path / "other-secret"
    home.mkdir()
    env = {"RESPLINE_PG_DSN": cluster_db.dsn, "RESPLINE_SECRET": "another-secret-0123456789abcdef"}
    stray = Server(home, [], config=host_config(upstream.base_url), env=env)
    try:
        upstream.reset()
        assert_refused(post(stray, {"model": "m", "tools": [TOOL], "input": [{"role": "user", "content": "go"}, *output, call_output]}), "input[1].encrypted_content")
        assert_refused(post(stray, {"model": "m", "input": [item]}), "input[0].encrypted_content")
        assert_refused(post(stray, {"model": "m", "previous_response_id": rid, "tools": [TOOL], "input": [call_output]}), "previous_response_id")
        assert upstream.requests == []
        # and what it seals, the fleet refuses the same way
        upstream.queue(Reply(text_stream("stray summary")))
        stray_item = post(stray, {"model": "m", "input": "x"}, "/responses/compact").json()["output"][-1]
        for host in cluster:
            assert_refused(post(host, {"model": "m", "input": [stray_item]}), "input[0].encrypted_content")
        assert stray.proc.poll() is None and all(h.proc.poll() is None for h in cluster)
    finally:
        stray.stop()


def ws_url(host: Server) -> str:
    return host.url.replace("http://", "ws://") + "/responses"


async def ws_turn(ws, frame: dict) -> list[dict]:
    await ws.send_message(msgspec.json.encode({"type": "response.create", **frame}).decode())
    events = []
    while True:
        with trio.fail_after(10):
            ev = msgspec.json.decode(await ws.get_message())
        events.append(ev)
        if ev["type"] in ("response.completed", "response.failed", "response.incomplete") or ev["type"] == "error":
            return events


async def test_websocket_continues_on_another_host_from_the_store(cluster, upstream):
    """WebSocket mode keeps its connection-local cache and falls back to the shared store: a
    stored chain begun over a socket to host 1 continues over a socket to host 2; a store: false
    response (only in host 1's connection cache) is not found there."""
    from trio_websocket import open_websocket_url

    headers = [("authorization", f"Bearer {KEY}")]
    upstream.queue(Reply(text_stream("One.")), Reply(text_stream("Two.")), Reply(text_stream("Unstored.")))
    async with open_websocket_url(ws_url(cluster[0]), extra_headers=headers) as ws:
        first = checked(await ws_turn(ws, {"model": "m", "input": "first"}))[-1]["response"]["id"]
        second = checked(await ws_turn(ws, {"model": "m", "input": "second", "previous_response_id": first}))[-1]["response"]["id"]
        unstored = (await ws_turn(ws, {"model": "m", "input": "x", "store": False}))[-1]["response"]["id"]
        # the connection's cache continues what was never stored, on this socket
        upstream.queue(Reply(text_stream("Cached.")))
        checked(await ws_turn(ws, {"model": "m", "input": "y", "store": False, "previous_response_id": unstored}))
        assert [m["content"] for m in upstream.last["body"]["messages"]] == ["x", "Unstored.", "y"]
    upstream.queue(Reply(text_stream("Three.")))
    async with open_websocket_url(ws_url(cluster[1]), extra_headers=headers) as ws:
        third = checked(await ws_turn(ws, {"model": "m", "input": "third", "previous_response_id": second}))
        assert third[-1]["response"]["output"][0]["content"][0]["text"] == "Three."
        assert [(m["role"], m["content"]) for m in upstream.last["body"]["messages"]] == [
            ("user", "first"), ("assistant", "One."), ("user", "second"), ("assistant", "Two."), ("user", "third")
        ]
        (err,) = await ws_turn(ws, {"model": "m", "input": "y", "previous_response_id": unstored})
        assert err["status"] == 400 and err["error"]["code"] == "previous_response_not_found"
        # the socket to host 2 goes on, its own chain from its cache
        upstream.queue(Reply(text_stream("Four.")))
        rid = third[-1]["response"]["id"]
        fourth = checked(await ws_turn(ws, {"model": "m", "input": "fourth", "previous_response_id": rid}))
        assert fourth[-1]["type"] == "response.completed"
    assert sdk(cluster[2]).responses.retrieve(rid).output_text == "Three."


def test_workers_share_postgres(start_server, upstream, tmp_path):
    """``--workers 2 --store postgresql://...``: fresh connections land on either worker; the
    chain holds across them; both workers run background runs (their leases name each
    process), and each run is followed and cancelled through whichever worker a fresh
    connection reaches."""
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
        runs: list[str] = []
        owners: set[str] = set()
        for i in range(30):  # each on a fresh connection, until both workers run one
            upstream.queue(slow_text(400, 0.05))
            runs.append(httpx.post(f"{server.url}/responses", json={"model": "m", "input": f"bg{i}", "background": True}).json()["id"])
            with pgtest.admin() as conn:
                owners = {row[0] for row in conn.execute(f"SELECT owner FROM {schema.name}.leases")}
            if len(owners) == 2:
                break
        assert len(owners) == 2, "one worker accepted every connection"
        for rid in runs:
            with httpx.stream("GET", f"{server.url}/responses/{rid}", params={"stream": "true"}, timeout=30) as r:
                assert next(r.iter_lines()).startswith("event: response.created")
            assert httpx.post(f"{server.url}/responses/{rid}/cancel", timeout=30).json()["status"] == "cancelled"
        events = checked(parse_sse(httpx.get(f"{server.url}/responses/{runs[-1]}", params={"stream": "true"}, timeout=30).content, require_done=False))
        assert events[-2]["error"]["code"] == "response_cancelled" and events[-1]["type"] == "response.failed"
        assert all(httpx.get(f"{server.url}/responses/{rid}").json()["status"] == "cancelled" for rid in runs)
        with pgtest.admin() as conn:
            assert conn.execute(f"SELECT count(*) FROM {schema.name}.leases").fetchone()[0] == 0
        server.stop()
    finally:
        schema.drop()


# -- the crash test ---------------------------------------------------------------------------

LEASE = 2.0  # [store] lease_seconds of the crash test's hosts
RENEW = 0.3  # [store] lease_renew_seconds: how often a host renews its leases and reaps
FOREGROUND, BACKGROUND_STREAMED, BACKGROUND = 60, 20, 20  # 100 store: true streams on the victim
SHORT = 45  # of the 100 upstream replies, those that end (in 0.4 to 2.6 s); the others run on


def thinking_then_text(n: int, delay: float) -> Reply:
    """A reasoning item (complete, and recorded in the stored response, once the text starts),
    then ``n`` words of text, one every ``delay`` seconds."""
    pieces = [chunk({"role": "assistant", "content": None})]
    pieces += [chunk({"reasoning_content": f"think{i} "}) for i in range(3)]
    pieces += [chunk({"content": f"w{i} "}) for i in range(n)]
    return Reply(pieces + [chunk({}, "stop"), chunk(usage=USAGE, choices=False), DONE], delay=delay)


def complete_frames(raw: bytes) -> list[dict]:
    """The events of an SSE body cut anywhere (its connection reset): whole frames only."""
    end = raw.rfind(b"\n\n")
    return parse_sse(raw[: end + 2], require_done=False) if end >= 0 else []


class Stream:
    """One client of the victim: what it was sent, and what it saw."""

    def __init__(self, kind: str, n: int) -> None:
        self.kind, self.n = kind, n  # "foreground", "background+stream", "background"
        self.raw = bytearray()
        self.id: str | None = None
        self.completed = False  # it saw response.completed
        self.followed = bytearray()  # a follower's stream, from another host (background runs)
        self.follow_ended: float | None = None


def unfinished(schema: pgtest.Schema) -> int:
    """Stored responses not in a final state, every host's."""
    with pgtest.admin() as conn:
        return conn.execute(
            f"SELECT count(*) FROM {schema.name}.responses "
            "WHERE convert_from(body, 'UTF8')::jsonb #>> '{response,status}' IN ('queued', 'in_progress')"
        ).fetchone()[0]


async def crash_once(victim: Server, survivors: list[Server], schema: pgtest.Schema, upstream, rng) -> dict:
    """100 store: true streams on ``victim`` (foreground SSE, background runs streamed from it,
    background runs followed from the survivors), kill -9 mid-way, then check everything."""
    headers = {"authorization": f"Bearer {KEY}"}
    replies = [thinking_then_text(rng.randint(1, 22), 0.1) for _ in range(SHORT)]
    replies += [thinking_then_text(2000, 0.1) for _ in range(100 - SHORT)]
    rng.shuffle(replies)  # which request gets which depends on arrival order anyway
    upstream.queue(*replies)
    streams = [Stream("foreground", i) for i in range(FOREGROUND)]
    streams += [Stream("background+stream", i) for i in range(BACKGROUND_STREAMED)]
    streams += [Stream("background", i) for i in range(BACKGROUND)]
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    timeout = httpx.Timeout(60)
    killed = trio.Event()
    started = {"ids": 0}

    async def follow(client: httpx.AsyncClient, st: Stream) -> None:
        host = survivors[st.n % len(survivors)]
        async with client.stream("GET", f"{host.url}/responses/{st.id}", params={"stream": "true"}, headers=headers) as r:
            assert r.status_code == 200
            async for piece in r.aiter_bytes():
                st.followed += piece
        st.follow_ended = time.monotonic()

    async def produce(client: httpx.AsyncClient, nursery, st: Stream) -> None:
        body = {"model": "m", "input": f"{st.kind} {st.n}", "stream": st.kind != "background"}
        if st.kind != "foreground":
            body["background"] = True
        try:
            async with client.stream("POST", f"{victim.url}/responses", json=body, headers=headers) as r:
                assert r.status_code == 200
                async for piece in r.aiter_bytes():
                    st.raw += piece
                    if st.id is None and b"\n\n" in st.raw and st.kind != "background":
                        st.id = complete_frames(bytes(st.raw))[0]["response"]["id"]
                        started["ids"] += 1
                        if st.kind != "foreground":
                            nursery.start_soon(follow, client, st)
                    if b"event: response.completed" in st.raw:
                        st.completed = True
        except httpx.HTTPError:
            assert killed.is_set(), "a stream failed before the kill"
        if st.kind == "background" and st.id is None:
            st.id = msgspec.json.decode(bytes(st.raw))["id"]
            started["ids"] += 1
            nursery.start_soon(follow, client, st)

    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        async with trio.open_nursery() as nursery:
            for st in streams:
                nursery.start_soon(produce, client, nursery, st)
            # kill once every stream is under way and a third of those that end have ended
            # (the next ones end around the kill: some while the victim stores them)
            with trio.fail_after(60):
                while started["ids"] < len(streams) or sum(st.completed for st in streams) < SHORT // 3:
                    await trio.sleep(0.01)
            killed.set()
            os.kill(victim.proc.pid, signal.SIGKILL)
            t_kill = time.monotonic()
            await trio.to_thread.run_sync(victim.proc.wait)
            # every run the victim owned ends failed within the lease (plus one renew interval,
            # how often the survivors look, and their work); the followers get that end
            t_ended = None
            with trio.fail_after(30):
                while await trio.to_thread.run_sync(unfinished, schema):
                    await trio.sleep(0.05)
                t_ended = time.monotonic()
    victim.stop()
    ended_after = t_ended - t_kill
    assert ended_after < LEASE + RENEW + 1.0, f"the victim's responses were ended {ended_after:.2f}s after the kill"

    one, two = (httpx.Client(base_url=h.url, headers=headers, timeout=30) for h in survivors)
    counts = {"completed": 0, "failed": 0, "completed unseen": 0}  # unseen: the victim died before telling
    for st in streams:
        stored = one.get(f"/responses/{st.id}").json()
        assert stored == two.get(f"/responses/{st.id}").json()
        validate_response(stored)
        if st.kind == "background":  # its client is the follower on another host
            seen = complete_frames(bytes(st.followed))
            st.completed = any(e["type"] == "response.completed" for e in seen)
        else:
            seen = complete_frames(bytes(st.raw))
        if st.completed:
            # its client was told it completed: it is stored complete, as the client saw it
            assert stored["status"] == "completed", (st.kind, stored["status"], stored.get("error"))
            final = next(e for e in seen if e["type"] == "response.completed")["response"]
            assert stored["output"] == final["output"] and stored["usage"] == final["usage"]
            text = "".join(e["delta"] for e in seen if e["type"] == "response.output_text.delta")
            assert stored["output"][-1]["content"][0]["text"] == text
            counts["completed"] += 1
        elif stored["status"] == "completed":
            counts["completed unseen"] += 1  # stored final by the victim, which died before telling its client
        else:
            assert stored["status"] == "failed", (st.kind, stored["status"])
            assert stored["error"]["code"] == "server_error" and "stopped" in stored["error"]["message"]
            counts["failed"] += 1
            if seen:  # what its client saw is in the stored output (reasoning complete, text begun)
                text = "".join(e["delta"] for e in seen if e["type"] == "response.output_text.delta")
                stored_text = "".join(
                    p["text"] for item in stored["output"] if item["type"] == "message" for p in item["content"]
                )
                if st.kind == "background+stream":  # the log is the stream: it has all the client saw
                    assert stored_text.startswith(text)
        if st.kind != "foreground":
            # a follower on a survivor got the whole stream and its end, as stored
            followed = checked(parse_sse(bytes(st.followed)))
            assert followed[-1]["type"] == f"response.{stored['status']}"
            assert followed[-1]["response"]["output"] == stored["output"]
            if stored["status"] == "failed":
                assert followed[-2]["type"] == "error" and st.follow_ended - t_kill < LEASE + RENEW + 3.0
    with pgtest.admin() as conn:
        assert conn.execute(f"SELECT count(*) FROM {schema.name}.leases").fetchone()[0] == 0
    one.close()
    two.close()
    assert counts["completed"] and counts["failed"], counts
    return {**counts, "ended_after_s": round(ended_after, 2)}


async def test_kill_9_one_host_serving_100_stored_streams(upstream, tmp_path, pg_schema):
    """The issue's crash test, three times: kill -9 a host serving 100 concurrent ``store:
    true`` streams (60 foreground SSE, 20 background runs streamed from it, 20 followed from
    the other hosts). Every response whose client saw ``response.completed`` is retrievable,
    complete, from the other hosts; every one it was still producing ends failed (its output so
    far kept) within the lease; followers on other hosts get that end; no lease is left."""
    import random

    rng = random.Random(14)
    schema = pg_schema  # a sync fixture: without PostgreSQL the skip says why
    lease = f"lease_seconds = {LEASE}\nlease_renew_seconds = {RENEW}"
    survivors = start_hosts(tmp_path, schema, upstream.base_url, 2, lease)
    try:
        for n in range(3):
            upstream.reset()
            home = tmp_path / f"victim{n}"
            home.mkdir()
            env = {"RESPLINE_PG_DSN": schema.dsn, "RESPLINE_SECRET": SECRET}
            victim = Server(home, [], config=host_config(upstream.base_url, lease), env=env)
            result = await crash_once(victim, survivors, schema, upstream, rng)
            print(f"crash {n + 1}: {result}")
    finally:
        for h in survivors:
            h.stop()
