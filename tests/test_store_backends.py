"""Every store backend against the same contract: retention by TTL and by count evicts what it
should and nothing else; tenants never see each other; SQLite is shared by two handles.
PostgreSQL (each test in a fresh schema; skipped, saying why, where no server answers) also:
writers in two processes, leases taken by racing stores, migrations from several processes,
one sweeper at a time, and live follow by LISTEN/NOTIFY."""

from __future__ import annotations

import pytest

import pgtest
from pgtest import pg_schema  # noqa: F401 - a fixture
from respline.adapters.stores.memory import MemoryStore
from respline.adapters.stores.sqlite import SCHEMA_VERSION, SqliteStore
from respline.engine.store import Retention, StoredConversation, StoredEvent, StoredResponse, expand_chain


class FakeClock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


BACKENDS = ["memory", "sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
def make_store(request, tmp_path):
    if request.param == "postgres":
        schema = request.getfixturevalue("pg_schema")

    def make(retention: Retention, clock: FakeClock):
        if request.param == "memory":
            return MemoryStore(retention, now=clock)
        if request.param == "sqlite":
            return SqliteStore(str(tmp_path / "s.db"), retention, now=clock)
        from respline.adapters.stores.postgres import PostgresStore

        return PostgresStore(schema.dsn, retention, now=clock, pool_size=4)

    return make


def resp(tenant: str, rid: str, created: int, prev: str | None = None, out: str = "answer") -> StoredResponse:
    return StoredResponse(
        tenant=tenant,
        id=rid,
        response={"id": rid, "status": "completed", "output": [{"type": "message", "id": f"msg_{rid}", "role": "assistant",
                                                              "status": "completed", "content": [{"type": "output_text", "text": out, "annotations": []}]}]},
        input_items=[{"type": "message", "id": f"in_{rid}", "role": "user", "status": "completed",
                      "content": [{"type": "input_text", "text": f"q-{rid}"}]}],
        previous_response_id=prev,
        created_at=created,
    )


async def test_ttl_expiry(make_store):
    clock = FakeClock()
    store = make_store(Retention(ttl=100, max_responses=0, max_conversations=0), clock)
    now = int(clock.t)
    await store.put_response(resp("t", "old", now - 150))
    await store.put_response(resp("t", "new", now - 50))
    await store.put_conversation(StoredConversation("t", "conv_old", now - 150, {}))
    await store.put_conversation(StoredConversation("t", "conv_new", now - 10, {}))
    # expired entries read as missing before any sweep
    assert await store.get_response("t", "old") is None
    assert (await store.get_response("t", "new")).id == "new"
    assert await store.get_conversation("t", "conv_old") is None
    removed = await store.sweep(now)
    assert removed == 2
    assert (await store.get_response("t", "new")).id == "new"
    assert (await store.get_conversation("t", "conv_new")).id == "conv_new"
    clock.t += 60  # now "new" is 110 s old as well
    assert await store.get_response("t", "new") is None
    assert await store.sweep(int(clock.t)) == 1
    await store.aclose()


async def test_count_bound_evicts_oldest_only(make_store):
    clock = FakeClock()
    store = make_store(Retention(ttl=0, max_responses=3, max_conversations=2), clock)
    for i in range(5):
        await store.put_response(resp("t", f"r{i}", 1000 + i))
    kept = [i for i in range(5) if await store.get_response("t", f"r{i}") is not None]
    assert kept == [2, 3, 4]
    # evicted responses take their indexed items with them
    assert await store.get_item("t", "in_r0") is None
    assert (await store.get_item("t", "in_r4"))["id"] == "in_r4"
    for i in range(3):
        await store.put_conversation(StoredConversation("t", f"c{i}", 1000 + i, {}))
    assert [i for i in range(3) if await store.get_conversation("t", f"c{i}")] == [1, 2]
    await store.aclose()


async def test_tenants_and_chain(make_store):
    store = make_store(Retention(), FakeClock())
    now = int(FakeClock().t)
    await store.put_response(resp("a", "r1", now, out="one"))
    await store.put_response(resp("a", "r2", now, prev="r1", out="two"))
    chain = await expand_chain(store, "a", "r2")
    assert [i["id"] for i in chain] == ["in_r1", "msg_r1", "in_r2", "msg_r2"]
    assert await expand_chain(store, "b", "r2") is None
    assert await store.get_response("b", "r1") is None
    assert await store.delete_response("b", "r1") is False
    assert await store.get_item("b", "msg_r1") is None
    await store.append_events("a", "r2", [StoredEvent(0, "response.created", b"{}"), StoredEvent(1, "response.in_progress", b"{}")])
    assert [e.seq for e in await store.get_events("a", "r2", 0)] == [1]
    assert await store.get_events("b", "r2", -1) == []
    assert await store.delete_response("a", "r1") is True
    assert await expand_chain(store, "a", "r2") is None
    await store.aclose()


async def test_conversation_items(make_store):
    store = make_store(Retention(), FakeClock())
    conv = StoredConversation("a", "conv_1", int(FakeClock().t), {"k": "v"})
    await store.put_conversation(conv)
    items = [{"type": "message", "id": f"msg_{i}", "role": "user", "content": []} for i in range(3)]
    await store.add_conversation_items("a", "conv_1", items[:2])
    await store.add_conversation_items("a", "conv_1", items[2:])
    assert [i["id"] for i in await store.conversation_items("a", "conv_1")] == ["msg_0", "msg_1", "msg_2"]
    assert await store.conversation_items("b", "conv_1") == []
    assert await store.delete_conversation_item("a", "conv_1", "msg_1") is True
    assert await store.delete_conversation_item("a", "conv_1", "msg_1") is False
    assert [i["id"] for i in await store.conversation_items("a", "conv_1")] == ["msg_0", "msg_2"]
    assert (await store.get_item("a", "msg_2"))["id"] == "msg_2"
    await store.put_conversation(StoredConversation("a", "conv_1", conv.created_at, {"k": "w"}))
    assert (await store.get_conversation("a", "conv_1")).metadata == {"k": "w"}
    assert await store.delete_conversation("a", "conv_1") is True
    assert await store.get_conversation("a", "conv_1") is None
    await store.aclose()


async def test_sqlite_shared_by_two_handles(tmp_path):
    """Two stores on one file (as two worker processes have): each sees the other's writes."""
    path = str(tmp_path / "shared.db")
    one, two = SqliteStore(path), SqliteStore(path)
    await one.put_response(resp("t", "r1", 10**10))
    assert (await two.get_response("t", "r1")).id == "r1"
    await two.delete_response("t", "r1")
    assert await one.get_response("t", "r1") is None
    await one.aclose()
    await two.aclose()


async def test_sqlite_migrates_a_version_1_file(tmp_path):
    import sqlite3

    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE responses (tenant TEXT NOT NULL, id TEXT NOT NULL, created_at INTEGER NOT NULL, "
                 "body BLOB NOT NULL, PRIMARY KEY (tenant, id))")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    store = SqliteStore(str(path))
    await store.put_conversation(StoredConversation("t", "conv_x", 10**10, {}))
    assert (await store.get_conversation("t", "conv_x")).id == "conv_x"
    await store.aclose()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM leases").fetchone()[0] == 0


async def test_items_by_id_and_copies(make_store):
    """``item_reference`` lookups find input and output items, follow deletes, and every read is
    a copy: changing what was read changes nothing stored (as with SQLite's rows)."""
    store = make_store(Retention(), FakeClock())
    now = int(FakeClock().t)
    await store.put_response(resp("a", "r1", now, out="one"))
    await store.put_response(resp("a", "r2", now, out="two"))
    assert (await store.get_item("a", "in_r1"))["content"][0]["text"] == "q-r1"
    assert (await store.get_item("a", "msg_r2"))["content"][0]["text"] == "two"
    got = await store.get_response("a", "r1")
    got.response["status"] = "cancelled"
    got.input_items.clear()
    again = await store.get_response("a", "r1")
    assert again.response["status"] == "completed" and len(again.input_items) == 1
    await store.put_response(resp("a", "r3", now, out="three"))
    assert await store.delete_response("a", "r1") is True
    assert await store.get_item("a", "in_r1") is None
    assert await store.get_item("a", "msg_r2") is not None
    await store.aclose()


async def test_memory_store_keeps_responses_out_of_the_collector():
    """Stored responses are bytes, not dict graphs: a full collection does not walk them. (As
    dicts, 100,000 small responses made one full collection take ~0.5 s, a pause of every
    open stream.)"""
    import gc

    store = MemoryStore(Retention(max_responses=0), now=FakeClock())
    gc.collect()
    before = len(gc.get_objects())
    now = int(FakeClock().t)
    for i in range(2000):
        await store.put_response(resp("a", f"r{i}", now))
    gc.collect()
    assert len(gc.get_objects()) - before < 100  # ~14 per response as dicts
    assert (await store.get_response("a", "r1999")).response["output"][0]["content"][0]["text"] == "answer"


async def test_leases(make_store):
    """A lease lapses when its owner stops renewing it; take_lapsed hands each lapsed lease to
    the caller once; end_lease forgets it."""
    from respline.engine.store import RunLease

    store = make_store(Retention(), FakeClock())
    await store.lease_run("a", "r1", "host1", 100.0)
    await store.lease_run("a", "r2", "host1", 100.0)
    await store.lease_run("b", "r3", "host2", 50.0)
    assert await store.take_lapsed(40.0, "host3", 200.0) == []
    await store.renew_leases("host1", 300.0)  # host1 is alive, host2 stopped renewing
    assert await store.take_lapsed(120.0, "host3", 200.0) == [RunLease("b", "r3", "host3", 200.0)]
    assert await store.take_lapsed(120.0, "host4", 200.0) == []  # taken: no longer lapsed
    await store.end_lease("b", "r3")
    taken = await store.take_lapsed(1000.0, "host4", 2000.0, limit=1)
    taken += await store.take_lapsed(1000.0, "host4", 2000.0, limit=5)
    assert sorted(taken, key=lambda lease: lease.response_id) == [
        RunLease("a", "r1", "host4", 2000.0),
        RunLease("a", "r2", "host4", 2000.0),
    ]
    await store.lease_run("a", "r1", "host5", 10.0)  # replaced, not added
    assert await store.take_lapsed(1500.0, "host6", 3000.0) == [RunLease("a", "r1", "host6", 3000.0)]
    await store.aclose()


async def test_leases_renewed_taken_once_ended(make_store):
    """Leases of responses being produced: renewed by owner, taken only once they lapsed, and by
    one taker; an ended lease is gone."""
    store = make_store(Retention(), FakeClock())
    await store.lease_run("t", "r1", "A", 100.0)
    await store.lease_run("t", "r2", "B", 100.0)
    await store.lease_run("u", "r3", "A", 100.0)
    assert await store.take_lapsed(50.0, "C", 200.0) == []
    await store.renew_leases("A", 300.0)
    taken = await store.take_lapsed(150.0, "C", 400.0)
    assert [(x.tenant, x.response_id, x.owner, x.expires_at) for x in taken] == [("t", "r2", "C", 400.0)]
    assert await store.take_lapsed(150.0, "D", 500.0) == []  # the taker holds it now
    await store.end_lease("t", "r1")
    await store.lease_run("t", "r2", "B", 100.0)  # re-leased by its producer: replaced
    assert [x.response_id for x in await store.take_lapsed(1000.0, "D", 2000.0, limit=1)] in (["r2"], ["r3"])
    assert len(await store.take_lapsed(1000.0, "E", 3000.0)) == 1  # the other one
    assert await store.take_lapsed(1000.0, "F", 3000.0) == []
    await store.aclose()


async def test_put_response_begins_and_ends_its_lease(make_store):
    """A response being produced is recorded with its lease in one write, and stored final with
    its lease ended in one; a progress write (committed without waiting for the disk where the
    backend can) keeps the lease and is read back like any other."""
    from respline.engine.store import RunLease

    store = make_store(Retention(), FakeClock())
    running = resp("t", "r1", 1_000_000)
    running.response["status"] = "in_progress"
    await store.put_response(running, lease=RunLease("t", "r1", "A", 100.0))
    assert await store.take_lapsed(150.0, "B", 200.0) == [RunLease("t", "r1", "B", 200.0)]
    await store.put_response(resp("t", "r2", 1_000_000), lease=RunLease("t", "r2", "A", 100.0))
    running.response["output"].append({"type": "message", "id": "msg_more", "role": "assistant", "status": "completed", "content": []})
    await store.put_response(running, progress=True)
    got = await store.get_response("t", "r1")
    assert got.response["status"] == "in_progress" and got.response["output"][-1]["id"] == "msg_more"
    assert (await store.get_item("t", "msg_more"))["id"] == "msg_more"
    await store.put_response(resp("t", "r2", 1_000_000), release=True)  # final: its lease gone with it
    await store.put_response(resp("t", "r1", 1_000_000), release=True)
    assert await store.take_lapsed(10_000.0, "C", 20_000.0) == []
    assert (await store.get_response("t", "r1")).response["status"] == "completed"
    await store.aclose()


async def test_sqlite_lapsed_leases_taken_once(tmp_path):
    """Two processes' reapers at the same moment: each lapsed lease goes to exactly one."""
    import trio

    path = str(tmp_path / "leases.db")
    one, two = SqliteStore(path), SqliteStore(path)
    for i in range(200):
        await one.lease_run("t", f"r{i}", "dead", 10.0)
    got: dict[str, list] = {}

    async def reap(name: str, store: SqliteStore) -> None:
        got[name] = []
        while batch := await store.take_lapsed(100.0, name, 1000.0, limit=7):
            got[name] += [x.response_id for x in batch]
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reap, "one", one)
        nursery.start_soon(reap, "two", two)
    assert not set(got["one"]) & set(got["two"])
    assert sorted(got["one"] + got["two"]) == sorted(f"r{i}" for i in range(200))
    await one.aclose()
    await two.aclose()
