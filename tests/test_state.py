"""State: stored responses, previous_response_id, input items, background runs, conversations,
tenants, restarts, and bad input on every state endpoint; each on every store backend (memory,
SQLite, PostgreSQL in a fresh schema: skipped, saying why, where no server answers)."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

import pgtest
from conftest import Server, route_all_to
from upstream import DONE, USAGE, Reply, chunk, text_stream
from validate import checked, parse_sse, validate_response

KEY_A = "sk-tenant-a"
KEY_B = "sk-tenant-b"
KEY_A2 = "sk-tenant-a-second-key"


class Backend:
    """A store for a server under test: its ``[store]`` lines, the environment they read, and
    a way to count a table's rows from outside."""

    def __init__(self, kind: str, tmp) -> None:
        self.kind = kind
        self.env: dict[str, str] = {}
        self.schema = None
        if kind == "sqlite":
            self.db = tmp / "state.db"
            self.toml = f'backend = "sqlite"\npath = "{self.db}"'
        elif kind == "postgres":
            self.schema = pgtest.new_schema()  # skips, saying why, without a server
            self.toml = 'backend = "postgres"\ndsn = "$RESPLINE_PG_DSN"'  # "$VAR" read at start
            self.env = {"RESPLINE_PG_DSN": self.schema.dsn}
        else:
            self.toml = 'backend = "memory"'

    def count(self, table: str) -> int:
        if self.schema is not None:
            return self.schema.count(table)
        import sqlite3

        return sqlite3.connect(self.db).execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]

    def close(self) -> None:
        if self.schema is not None:
            self.schema.drop()


@pytest.fixture(scope="module", params=["memory", "sqlite", "postgres"])
def server(request, upstream_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("state")
    backend = Backend(request.param, tmp)
    config = f"""
[tenants]
team-a = ["{KEY_A}", "{KEY_A2}"]

[server]
api_keys = ["{KEY_B}"]
shutdown_grace = 0.5

[store]
{backend.toml}
{route_all_to(upstream_server.base_url)}"""
    s = Server(tmp, [], config=config, env=backend.env)
    yield s
    s.stop()
    backend.close()


def sdk(server, key=KEY_A) -> openai.OpenAI:
    return server.sdk(key)


def slow_text(n: int, delay: float) -> Reply:
    pieces = [chunk({"role": "assistant", "content": ""})] + [chunk({"content": f"w{i} "}) for i in range(n)]
    return Reply(pieces + [chunk({}, "stop"), chunk(usage=USAGE, choices=False), DONE], delay=delay)


def test_chain_retrieve_delete_input_items(server, upstream):
    client = sdk(server)
    upstream.queue(Reply(text_stream("Paris.")), Reply(text_stream("About 2 million.")))
    first = client.responses.create(
        model="m", instructions="Answer briefly.", input=[{"role": "user", "content": "Capital of France?"}]
    )
    second = client.responses.create(model="m", input="Its population?", previous_response_id=first.id)
    assert second.output_text == "About 2 million."
    # the upstream saw the whole chain; the first turn's instructions were not carried over
    assert upstream.last["body"]["messages"] == [
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "Its population?"},
    ]
    got = client.responses.retrieve(second.id)
    assert got.id == second.id and got.output_text == "About 2 million."
    validate_response(got.model_dump(mode="json"))
    # a second key of the same tenant sees it too
    assert sdk(server, KEY_A2).responses.retrieve(second.id).id == second.id

    items = client.responses.input_items.list(second.id)
    assert [i.type for i in items.data] == ["message"]
    assert items.data[0].id and items.data[0].content[0].text == "Its population?"

    deleted = client.responses.delete(first.id)
    assert deleted is None or getattr(deleted, "deleted", True)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    # a chain with a deleted link cannot be continued
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.create(model="m", input="more", previous_response_id=second.id)
    assert info.value.body["code"] == "previous_response_not_found"
    assert info.value.body["param"] == "previous_response_id"


def test_store_false_saves_nothing(server, upstream):
    client = sdk(server)
    upstream.queue(Reply(text_stream("ephemeral")))
    resp = client.responses.create(model="m", input="x", store=False)
    assert resp.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(resp.id)


def test_input_items_pagination(server, upstream):
    client = sdk(server)
    upstream.queue(Reply(text_stream("ok")))
    inputs = [{"role": "user", "content": f"m{i}"} for i in range(5)]
    resp = client.responses.create(model="m", input=inputs)
    page = client.responses.input_items.list(resp.id, limit=2, order="asc")
    assert [i.content[0].text for i in page.data] == ["m0", "m1"] and page.has_more
    page2 = client.responses.input_items.list(resp.id, limit=2, order="asc", after=page.last_id)
    assert [i.content[0].text for i in page2.data] == ["m2", "m3"]
    desc = client.responses.input_items.list(resp.id, limit=10)
    assert [i.content[0].text for i in desc.data] == ["m4", "m3", "m2", "m1", "m0"] and not desc.has_more
    # the SDK's auto-pagination walks every page
    assert len(list(client.responses.input_items.list(resp.id, limit=1))) == 5


def test_item_reference_resolves_from_store(server, upstream):
    client = sdk(server)
    upstream.queue(Reply(text_stream("Stored answer.")), Reply(text_stream("ok")))
    first = client.responses.create(model="m", input="question one")
    msg_id = first.output[0].id
    client.responses.create(model="m", input=[{"type": "item_reference", "id": msg_id}, {"role": "user", "content": "and?"}])
    assert upstream.last["body"]["messages"][0] == {"role": "assistant", "content": "Stored answer."}
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.create(model="m", input=[{"type": "item_reference", "id": "msg_nope"}])
    assert info.value.body["param"] == "input[0].id"


def test_background_polled_to_completion(server, upstream):
    client = sdk(server)
    upstream.queue(slow_text(5, 0.1))
    resp = client.responses.create(model="m", input="slow", background=True)
    assert resp.status in ("queued", "in_progress") and resp.background is True
    deadline = time.monotonic() + 20
    while resp.status in ("queued", "in_progress") and time.monotonic() < deadline:
        time.sleep(0.1)
        resp = client.responses.retrieve(resp.id)
    assert resp.status == "completed"
    assert resp.output_text == "w0 w1 w2 w3 w4 "


def test_background_cancelled(server, upstream):
    client = sdk(server)
    upstream.queue(slow_text(400, 0.05))
    resp = client.responses.create(model="m", input="very slow", background=True)
    time.sleep(0.5)
    cancelled = client.responses.cancel(resp.id)
    assert cancelled.status == "cancelled"
    assert client.responses.retrieve(resp.id).status == "cancelled"
    deadline = time.monotonic() + 2
    while not upstream.hangups and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstream.hangups, "the cancelled run kept reading its upstream"
    # cancelling again returns the same terminal response
    assert client.responses.cancel(resp.id).status == "cancelled"
    # its output so far is kept, and a follower gets the end of its events
    assert cancelled.output_text.startswith("w0 w1 ")
    raw = httpx.get(f"{server.url}/responses/{resp.id}", params={"stream": "true"}, headers={"authorization": f"Bearer {KEY_A}"})
    events = checked(parse_sse(raw.content))
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert events[-2]["code"] == "response_cancelled"


def test_dropped_stream_resumed_with_starting_after(server, upstream):
    upstream.queue(slow_text(20, 0.05))
    headers = {"authorization": f"Bearer {KEY_A}"}
    body = {"model": "m", "input": "resume me", "background": True, "stream": True}
    seen = b""
    with httpx.stream("POST", server.url + "/responses", json=body, headers=headers, timeout=30) as r:
        assert r.status_code == 200
        for piece in r.iter_bytes():
            seen += piece
            if seen.count(b"\n\n") >= 6:
                break  # the client drops the connection mid-stream
    frames = seen[: seen.rindex(b"\n\n") + 2]
    first = parse_sse(frames, require_done=False)
    last_seq = first[-1]["sequence_number"]
    response_id = first[0]["response"]["id"]
    # resume with the SDK from where it left off
    rest = list(sdk(server).responses.retrieve(response_id, stream=True, starting_after=last_seq))
    assert rest[0].sequence_number == last_seq + 1
    assert rest[-1].type == "response.completed"
    # and the same resumption on the wire, validated event by event
    raw = httpx.get(
        f"{server.url}/responses/{response_id}", params={"stream": "true", "starting_after": last_seq}, headers=headers
    )
    events = first + parse_sse(raw.content)
    checked(events)
    assert events[-1]["type"] == "response.completed"
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == "".join(
        f"w{i} " for i in range(20)
    )


def test_conversations_api(server, upstream):
    client = sdk(server)
    conv = client.conversations.create(items=[{"role": "user", "content": "My name is Ada."}], metadata={"topic": "intro"})
    assert conv.id.startswith("conv_") and conv.metadata == {"topic": "intro"}
    upstream.queue(Reply(text_stream("Hello Ada.")), Reply(text_stream("Your name is Ada.")))
    r1 = client.responses.create(model="m", input="Hi!", conversation=conv.id)
    assert r1.conversation.id == conv.id
    client.responses.create(model="m", input="What is my name?", conversation={"id": conv.id})
    # the conversation's items were the context, and each turn was appended
    assert upstream.last["body"]["messages"] == [
        {"role": "user", "content": "My name is Ada."},
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello Ada."},
        {"role": "user", "content": "What is my name?"},
    ]
    items = client.conversations.items.list(conv.id, order="asc")
    texts = [i.content[0].text for i in items.data]
    assert texts == ["My name is Ada.", "Hi!", "Hello Ada.", "What is my name?", "Your name is Ada."]
    added = client.conversations.items.create(conv.id, items=[{"type": "message", "role": "user", "content": "extra"}])
    assert added.data[0].id
    one = client.conversations.items.retrieve(added.data[0].id, conversation_id=conv.id)
    assert one.content[0].text == "extra"
    client.conversations.items.delete(added.data[0].id, conversation_id=conv.id)
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.retrieve(added.data[0].id, conversation_id=conv.id)
    updated = client.conversations.update(conv.id, metadata={"topic": "names"})
    assert updated.metadata == {"topic": "names"} and client.conversations.retrieve(conv.id).metadata == {"topic": "names"}
    assert client.conversations.delete(conv.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(conv.id)
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="m", input="x", conversation="conv_1", previous_response_id="resp_1")


def test_tenant_isolation(server, upstream):
    a, b = sdk(server, KEY_A), sdk(server, KEY_B)
    upstream.queue(Reply(text_stream("secret of A")))
    resp = a.responses.create(model="m", input="x")
    conv = a.conversations.create(items=[{"role": "user", "content": "A's conversation"}])
    with pytest.raises(openai.NotFoundError):
        b.responses.retrieve(resp.id)
    with pytest.raises(openai.NotFoundError):
        b.responses.input_items.list(resp.id)
    with pytest.raises(openai.NotFoundError) as info:
        b.responses.create(model="m", input="continue", previous_response_id=resp.id)
    assert info.value.body["code"] == "previous_response_not_found"
    with pytest.raises(openai.NotFoundError):
        b.responses.delete(resp.id)
    with pytest.raises(openai.NotFoundError):
        b.conversations.retrieve(conv.id)
    with pytest.raises(openai.NotFoundError):
        b.conversations.items.list(conv.id)
    with pytest.raises(openai.NotFoundError):
        b.conversations.delete(conv.id)
    with pytest.raises(openai.NotFoundError):
        b.responses.create(model="m", input="x", conversation=conv.id)
    with pytest.raises(openai.NotFoundError):
        b.responses.create(model="m", input=[{"type": "item_reference", "id": resp.output[0].id}])
    # A still has everything
    assert a.responses.retrieve(resp.id).output_text == "secret of A"
    assert a.conversations.retrieve(conv.id).id == conv.id


@pytest.mark.parametrize(
    "method,path,params,param",
    [
        ("GET", "/responses/resp_missing", None, "response_id"),
        ("DELETE", "/responses/resp_missing", None, "response_id"),
        ("GET", "/responses/resp_missing/input_items", None, "response_id"),
        ("POST", "/responses/resp_missing/cancel", None, "response_id"),
        ("GET", "/conversations/conv_missing", None, "conversation_id"),
        ("GET", "/conversations/conv_missing/items", None, "conversation_id"),
        ("DELETE", "/conversations/conv_missing", None, "conversation_id"),
    ],
)
def test_unknown_ids_404(server, method, path, params, param):
    r = httpx.request(method, server.url + path, params=params, headers={"authorization": f"Bearer {KEY_A}"})
    assert r.status_code == 404
    assert r.json()["error"]["param"] == param


def test_bad_cursors_limits_and_flags(server, upstream):
    client = sdk(server)
    upstream.queue(Reply(text_stream("ok")))
    resp = client.responses.create(model="m", input="x")
    h = {"authorization": f"Bearer {KEY_A}"}
    url = f"{server.url}/responses/{resp.id}/input_items"
    for params, param in [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"order": "sideways"}, "order"),
        ({"after": "msg_unknown"}, "after"),
        ({"before": "msg_unknown"}, "before"),
    ]:
        r = httpx.get(url, params=params, headers=h)
        assert r.status_code == 400, (params, r.text)
        assert r.json()["error"]["param"] == param
    # streaming a response that was not a background run, cancelling one
    r = httpx.get(f"{server.url}/responses/{resp.id}", params={"stream": "true"}, headers=h)
    assert r.status_code == 400 and r.json()["error"]["param"] == "stream"
    r = httpx.post(f"{server.url}/responses/{resp.id}/cancel", headers=h)
    assert r.status_code == 400
    r = httpx.post(server.url + "/responses", json={"model": "m", "input": "x", "background": True, "store": False}, headers=h)
    assert r.status_code == 400 and r.json()["error"]["param"] == "background"
    conv = client.conversations.create()
    r = httpx.post(f"{server.url}/conversations/{conv.id}/items", json={"items": [{"type": "nonsense"}]}, headers=h)
    assert r.status_code == 400 and r.json()["error"]["param"] == "items[0].type"
    r = httpx.post(f"{server.url}/conversations/{conv.id}/items", content=b"{oops", headers=h)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = httpx.post(f"{server.url}/conversations", json={"metadata": {"k": 1}}, headers=h)
    assert r.status_code == 400 and r.json()["error"]["param"].startswith("metadata")
    r = httpx.get(f"{server.url}/conversations/{conv.id}/items", params={"after": "msg_x"}, headers=h)
    assert r.status_code == 400 and r.json()["error"]["param"] == "after"


@pytest.fixture(params=["sqlite", "postgres"])
def durable(request, tmp_path):
    backend = Backend(request.param, tmp_path)
    yield backend
    backend.close()


def test_chain_survives_restart_and_shutdown_records_runs(upstream_server, tmp_path, durable):
    """Stop the server, start it again on the same database: the chain continues. A background
    run still going at shutdown is ended after the grace period: failed, its output kept."""
    upstream = upstream_server
    upstream.reset()
    config = f"""
[server]
shutdown_grace = 0.3

[store]
{durable.toml}
{route_all_to(upstream.base_url)}"""
    first_server = Server(tmp_path, [], config=config, env=durable.env)
    try:
        client = openai.OpenAI(base_url=first_server.url, api_key="x", max_retries=0)
        upstream.queue(Reply(text_stream("Remember 42.")), slow_text(500, 0.05))
        first = client.responses.create(model="m", input="Remember a number.")
        conv = client.conversations.create(items=[{"role": "user", "content": "kept"}])
        running = client.responses.create(model="m", input="long", background=True)
        time.sleep(0.3)
    finally:
        first_server.stop()
    second_server = Server(tmp_path, [], config=config, env=durable.env)
    try:
        client = openai.OpenAI(base_url=second_server.url, api_key="x", max_retries=0)
        upstream.queue(Reply(text_stream("It was 42.")))
        second = client.responses.create(model="m", input="Which number?", previous_response_id=first.id)
        assert second.output_text == "It was 42."
        assert upstream.last["body"]["messages"][:2] == [
            {"role": "user", "content": "Remember a number."},
            {"role": "assistant", "content": "Remember 42."},
        ]
        assert client.responses.retrieve(first.id).output_text == "Remember 42."
        assert client.conversations.items.list(conv.id).data[0].content[0].text == "kept"
        # cut by shutdown: stored failed with what it had produced, its log ended with a
        # terminal event that a resumed stream gets before [DONE]
        cut = client.responses.retrieve(running.id)
        assert cut.status == "failed" and "shutting down" in cut.error.message
        assert cut.output_text.startswith("w0 w1 ")
        raw = httpx.get(f"{second_server.url}/responses/{running.id}", params={"stream": "true"})
        events = checked(parse_sse(raw.content))
        assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
        assert events[-2]["code"] == "server_shutting_down"
        assert events[-1]["response"]["output"] == httpx.get(f"{second_server.url}/responses/{running.id}").json()["output"]
    finally:
        second_server.stop()
    upstream.reset()


def test_sweeper_removes_expired_rows(start_server, upstream, durable):
    config = f"""
[store]
{durable.toml}
ttl_seconds = 1
sweep_interval = 0.2
"""
    server = start_server(["--upstream", upstream.base_url], config=config, env=durable.env)
    client = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0)
    upstream.queue(Reply(text_stream("short-lived")))
    resp = client.responses.create(model="m", input="x")
    conv = client.conversations.create(items=[{"role": "user", "content": "short-lived too"}])
    assert durable.count("responses") == 1
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        counts = [durable.count(t) for t in ("responses", "items", "conversations", "conversation_items")]
        if counts == [0, 0, 0, 0]:
            break
        time.sleep(0.2)
    assert counts == [0, 0, 0, 0], counts
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(resp.id)
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(conv.id)
