"""The PostgreSQL store where several hosts share it: writers in two processes lose nothing,
leases are taken once by racing stores, migrations run once from several processes, one host
sweeps at a time, count bounds hold under concurrent writers, and a follower on one host wakes
when another host writes (LISTEN/NOTIFY), the host running a run when another writes its status. Each test has its own schema; without a server every
test that needs one skips, saying why. Start-up errors (no server, no psycopg) need none."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import trio
import trio.testing

from pgtest import admin, pg_schema  # noqa: F401 - a fixture
from respline.engine.store import Retention, RunLease, StoredConversation, StoredEvent, StoredResponse


def store(dsn: str, retention: Retention | None = None, **kw):
    from respline.adapters.stores.postgres import PostgresStore

    return PostgresStore(dsn, retention or Retention(), **{"pool_size": 4, **kw})


def resp(rid: str, created: int = 10**10, background: bool = False, status: str = "completed") -> StoredResponse:
    return StoredResponse(
        tenant="t",
        id=rid,
        response={"id": rid, "status": status, "output": [{"type": "message", "id": f"msg_{rid}"}]},
        input_items=[{"type": "message", "id": f"in_{rid}"}],
        created_at=created,
        background=background,
    )


class Processes:
    """Python processes that each run ``code`` (with ``dsn`` and ``name`` defined), wait at a
    barrier (they print "ready", the test writes "go" to all), then do their part at once."""

    def __init__(self, code: str, dsn: str, names: list[str]) -> None:
        prelude = "import sys\ndsn, name = sys.argv[1], sys.argv[2]\n"
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-c", prelude + textwrap.dedent(code), dsn, name],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name in names
        ]

    def run(self, timeout: float = 60) -> list[str]:
        for p in self.procs:
            assert p.stdout.readline().strip() == "ready", p.stderr.read()
        for p in self.procs:  # as close together as two writes get
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = []
        for p in self.procs:
            out, err = p.communicate(timeout=timeout)
            assert p.returncode == 0, err
            outs.append(out)
        return outs


BARRIER = """
    print("ready", flush=True)
    assert sys.stdin.readline().strip() == "go"
"""  # indented as the code around it, which is dedented whole


def test_two_processes_append_to_one_conversation(pg_schema):
    """Two hosts append turns to one conversation at the same moment (4 tasks each): every turn
    is kept, each turn's items stay together, and each writer's turns keep their order."""

    async def setup():
        s = store(pg_schema.dsn)
        await s.put_conversation(StoredConversation("t", "conv_1", 10**10, {}))
        await s.aclose()

    trio.run(setup)
    writer = """
    import trio
    from respline.adapters.stores.postgres import PostgresStore
    from respline.engine.store import Retention

    s = PostgresStore(dsn, Retention(), pool_size=4)
    """ + BARRIER + """
    async def task(k):
        for turn in range(10):
            items = [{"type": "message", "id": f"{name}-{k}-{turn}-{i}"} for i in range(8)]
            await s.add_conversation_items("t", "conv_1", items)

    async def main():
        async with trio.open_nursery() as n:
            for k in range(4):
                n.start_soon(task, k)
        await s.aclose()

    trio.run(main)
    """
    Processes(writer, pg_schema.dsn, ["A", "B"]).run()

    async def check():
        s = store(pg_schema.dsn)
        items = [it["id"] for it in await s.conversation_items("t", "conv_1")]
        assert len(items) == 2 * 4 * 10 * 8 and len(set(items)) == len(items)
        turns = [items[i : i + 8] for i in range(0, len(items), 8)]
        for turn in turns:  # contiguous, in order within the turn
            prefix = turn[0].rsplit("-", 1)[0]
            assert turn == [f"{prefix}-{i}" for i in range(8)], turn
        for writer in ("A", "B"):
            for k in range(4):
                mine = [int(t[0].split("-")[2]) for t in turns if t[0].startswith(f"{writer}-{k}-")]
                assert mine == list(range(10))
        # the two processes really wrote at the same time: their turns interleave
        writers = [t[0][0] for t in turns]
        assert sum(a != b for a, b in zip(writers, writers[1:])) >= 2, writers
        # the item index has them all
        assert (await s.get_item("t", "B-3-9-7"))["id"] == "B-3-9-7"
        await s.aclose()

    trio.run(check)


async def test_take_lapsed_two_stores_race(pg_schema):
    """Two stores (two hosts' pools) take lapsed leases in small batches from 4 tasks each at
    once: every lapsed lease is taken exactly once; a live one is never taken."""
    one, two = store(pg_schema.dsn), store(pg_schema.dsn)
    for i in range(300):
        await one.lease_run("t", f"resp_{i}", "dead-host", 100.0)
    await one.lease_run("t", "resp_live", "live-host", 10_000.0)
    taken: dict[str, list[RunLease]] = {"one": [], "two": []}

    async def reaper(s, owner: str) -> None:
        while True:
            got = await s.take_lapsed(500.0, owner, 5000.0, limit=7)
            if not got:
                return
            assert all(lease.owner == owner and lease.expires_at == 5000.0 for lease in got)
            taken[owner].extend(got)

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(reaper, one, "one")
            nursery.start_soon(reaper, two, "two")
    ids = [lease.response_id for lease in taken["one"] + taken["two"]]
    assert sorted(ids) == sorted(f"resp_{i}" for i in range(300))  # each once, none twice
    assert taken["one"] and taken["two"]  # both really raced
    with admin() as conn:
        rows = dict(conn.execute(f"SELECT response_id, owner FROM {pg_schema.name}.leases").fetchall())
    assert rows["resp_live"] == "live-host"
    assert all(rows[lease.response_id] == "one" for lease in taken["one"])
    await one.aclose()
    await two.aclose()


def test_migrations_from_several_processes(pg_schema):
    """Four hosts start on an empty schema at once: one migrates, the others wait and find the
    schema ready; the version is recorded once."""
    starter = BARRIER + """
    from respline.adapters.stores.postgres import PostgresStore, SCHEMA_VERSION
    import trio
    s = PostgresStore(dsn, pool_size=1)
    trio.run(s.aclose)
    print(SCHEMA_VERSION)
    """
    outs = Processes(starter, pg_schema.dsn, ["a", "b", "c", "d"]).run()
    with admin() as conn:
        versions = conn.execute(f"SELECT version FROM {pg_schema.name}.schema_version").fetchall()
        counts = conn.execute(f"SELECT name, n FROM {pg_schema.name}.counts ORDER BY name").fetchall()
    assert versions == [(int(outs[0].split()[-1]),)]
    assert counts == [("conversations", 0), ("responses", 0)]  # the seed rows once, not four times


async def test_newer_schema_is_refused(pg_schema):
    from respline.adapters.stores.postgres import SCHEMA_VERSION

    s = store(pg_schema.dsn)
    await s.aclose()
    with admin() as conn:
        conn.execute(f"UPDATE {pg_schema.name}.schema_version SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(RuntimeError, match="newer than this respline"):
        store(pg_schema.dsn)


async def test_one_sweeper_at_a_time(pg_schema):
    """While another host holds the sweep lock, a sweep does nothing and returns at once."""
    import psycopg

    from respline.adapters.stores.postgres import _SWEEP_TRY, _SWEEP_UNLOCK

    s = store(pg_schema.dsn, Retention(ttl=100))
    await s.put_response(resp("old", created=1000))
    await s.put_conversation(StoredConversation("t", "conv_old", 1000, {}))
    with psycopg.connect(pg_schema.dsn, autocommit=True) as other:
        assert other.execute(_SWEEP_TRY).fetchone()[0]  # the other host is sweeping
        assert await s.sweep(10_000) == 0
        assert pg_schema.count("responses") == 1
        other.execute(_SWEEP_UNLOCK)
    assert await s.sweep(10_000) == 2
    assert [pg_schema.count(t) for t in ("responses", "items", "conversations", "counts")] == [0, 0, 0, 2]
    with admin() as conn:
        assert conn.execute(f"SELECT sum(n) FROM {pg_schema.name}.counts").fetchone()[0] == 0
    await s.aclose()


async def test_count_bound_holds_under_concurrent_writers(pg_schema):
    """Two hosts insert at once past max_responses: exactly the bound is kept (no excess
    evicted twice), and the kept count matches the rows."""
    one, two = store(pg_schema.dsn, Retention(ttl=0, max_responses=10)), store(pg_schema.dsn, Retention(ttl=0, max_responses=10))

    async def writer(s, name: str) -> None:
        for i in range(40):
            await s.put_response(resp(f"{name}{i}", created=1000 + i))

    async with trio.open_nursery() as nursery:
        for k in range(3):
            nursery.start_soon(writer, one, f"a{k}-")
            nursery.start_soon(writer, two, f"b{k}-")
    assert pg_schema.count("responses") == 10
    assert pg_schema.count("items") == 20  # each response's input and output item
    with admin() as conn:
        n = conn.execute(f"SELECT n FROM {pg_schema.name}.counts WHERE name = 'responses'").fetchone()[0]
        newest = conn.execute(f"SELECT min(created_at) FROM {pg_schema.name}.responses").fetchone()[0]
    assert n == 10
    assert newest >= 1000 + 40 - 10  # the oldest went first (a few writers finish the same ages)
    await one.aclose()
    await two.aclose()


async def test_follow_wakes_across_hosts(pg_schema):
    """A follower waiting on one store wakes when another store appends events, writes the
    response's status, or deletes it; with no notice it waits out its timeout."""
    here, there = store(pg_schema.dsn), store(pg_schema.dsn)
    await there.put_response(resp("resp_bg", background=True, status="in_progress"))
    await here.wait_events("resp_bg", 30)  # returns once the listener is connected

    async def woken_by(write) -> None:
        with trio.fail_after(20):  # far below the wait's own timeout: only a notice wakes it
            async with trio.open_nursery() as nursery:
                nursery.start_soon(here.wait_events, "resp_bg", 600)
                await trio.testing.wait_all_tasks_blocked()
                await write()

    await woken_by(lambda: there.append_events("t", "resp_bg", [StoredEvent(0, "response.created", b"{}")]))
    await woken_by(lambda: there.put_response(resp("resp_bg", background=True, status="cancelled")))
    await woken_by(lambda: there.delete_response("t", "resp_bg"))
    # a notice for another response does not wake it
    with trio.move_on_after(0.3) as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(here.wait_events, "resp_bg", 600)
            await trio.testing.wait_all_tasks_blocked()
            await there.append_events("t", "resp_other", [StoredEvent(0, "response.created", b"{}")])
    assert scope.cancelled_caught
    await here.aclose()
    await there.aclose()


async def test_status_waiter_wakes_for_writes_of_the_response_only(pg_schema):
    """``wait_status`` (what the host running a background run watches for a cancel from
    another host) wakes when another store writes the response or deletes it, not for each
    batch of its events (the run's own appends would wake it for nothing)."""
    here, there = store(pg_schema.dsn), store(pg_schema.dsn)
    await there.put_response(resp("resp_bg", background=True, status="in_progress"))
    await here.wait_status("resp_bg", 30)  # returns once the listener is connected

    async def woken_by(write) -> bool:
        with trio.move_on_after(2) as scope:  # far below the wait's own timeout
            async with trio.open_nursery() as nursery:
                nursery.start_soon(here.wait_status, "resp_bg", 600)
                await trio.testing.wait_all_tasks_blocked()
                await write()
        return not scope.cancelled_caught

    assert not await woken_by(lambda: there.append_events("t", "resp_bg", [StoredEvent(0, "response.created", b"{}")]))
    assert await woken_by(lambda: there.put_response(resp("resp_bg", background=True, status="cancelled")))
    assert await woken_by(lambda: there.delete_response("t", "resp_bg"))
    await here.aclose()
    await there.aclose()


async def test_a_waiting_call_does_not_block_the_event_loop(pg_schema):
    """A call that waits on the database (here an append held up by another host's lock on its
    conversation) waits in a worker thread: the event loop goes on, and other calls answer."""
    s = store(pg_schema.dsn)
    await s.put_conversation(StoredConversation(tenant="t", id="conv_1", created_at=10**10))
    await s.put_response(resp("resp_other"))
    holder = admin()
    holder.execute("BEGIN")
    holder.execute(f"SELECT 1 FROM {pg_schema.name}.conversations WHERE id = 'conv_1' FOR UPDATE")
    # were the append to wait on the event loop's thread, nothing below would run until this
    # lets go; then the append would be found done
    release = threading.Timer(5, holder.execute, ["COMMIT"])
    release.start()
    appended = trio.Event()

    async def append() -> None:
        await s.add_conversation_items("t", "conv_1", [{"type": "message", "id": "msg_1", "role": "user", "content": []}])
        appended.set()

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(append)
            ticks = 0
            for _ in range(20):  # the loop runs while the append waits on the lock
                await trio.sleep(0.01)
                ticks += 1
            assert (await s.get_response("t", "resp_other")).id == "resp_other"
            assert not appended.is_set() and ticks == 20
            release.cancel()
            await trio.to_thread.run_sync(holder.execute, "COMMIT")
            await appended.wait()
    holder.close()
    assert [i["id"] for i in await s.conversation_items("t", "conv_1")] == ["msg_1"]
    await s.aclose()


async def test_connections_lost_while_serving(pg_schema):
    """The server drops every connection (as a restart does): the next calls run on fresh ones,
    a conversation append included (its connection died before COMMIT, so nothing landed
    twice), and the follower's listener reconnects."""
    import secrets

    from psycopg.conninfo import make_conninfo

    app = "rt-" + secrets.token_hex(4)
    s = store(make_conninfo(pg_schema.dsn, application_name=app))
    await s.put_conversation(StoredConversation("t", "conv_1", 10**10, {}))
    await s.put_response(resp("resp_1", background=True, status="in_progress"))
    await s.wait_events("resp_1", 30)  # the listener is connected

    def drop_all() -> int:
        with admin() as conn:
            return len(conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", (app,)
            ).fetchall())

    assert drop_all() >= 2  # the pool's connection and the listener's
    assert (await s.get_response("t", "resp_1")).id == "resp_1"
    assert drop_all() >= 1
    await s.add_conversation_items("t", "conv_1", [{"type": "message", "id": "msg_1"}])
    assert [i["id"] for i in await s.conversation_items("t", "conv_1")] == ["msg_1"]
    # the listener comes back: a waiter wakes long before its timeout (by the write's notice, or
    # by the reconnection, which wakes every waiter since notices may have been missed)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(s.wait_events, "resp_1", 600)
            await trio.testing.wait_all_tasks_blocked()
            await s.append_events("t", "resp_1", [StoredEvent(0, "response.created", b"{}")])
    await s.aclose()


# -- the hot statements, run on the trio thread (pgtrio) -----------------------------------------


def app_dsn(pg_schema, **options: str) -> tuple[str, str]:
    """The schema's DSN under an application name of its own (to find its backends), with
    more ``-c`` server options; and that name."""
    import secrets

    from psycopg.conninfo import make_conninfo

    app = "rt-" + secrets.token_hex(4)
    opts = " ".join(f"-c{k}={v}" for k, v in {"search_path": pg_schema.name, **options}.items())
    return make_conninfo(pg_schema.dsn, application_name=app, options=opts), app


def backends(app: str) -> list[tuple[int, str]]:
    with admin() as conn:
        return conn.execute("SELECT pid, state FROM pg_stat_activity WHERE application_name = %s", (app,)).fetchall()


async def test_hot_statements_need_no_worker_thread(pg_schema, monkeypatch):
    """put_response, get_response, append_events and get_events run on the trio thread: with
    worker threads made to fail they still work (a connection is open from the start), and what
    they write reads back as written: text beyond ASCII, bytes, no items, a lease, numbers past
    32 bits."""
    s = store(pg_schema.dsn)

    async def no_threads(*args, **kwargs):
        raise AssertionError("a worker thread was used")

    monkeypatch.setattr(trio.to_thread, "run_sync", no_threads)
    r = resp("resp_1", status="in_progress")
    r.response["output"] = []
    r.input_items[0]["content"] = [{"type": "input_text", "text": "h\u00e9 \u65e5\u672c \U0001F600 'quote' \\ back"}]
    await s.put_response(r, lease=RunLease("t", "resp_1", "host-a", 2.5e9 + 0.25))
    back = await s.get_response("t", "resp_1")
    assert back == r
    await s.append_events("t", "resp_1", [StoredEvent(i, f"type.{i}", bytes([i, 0, 255]) * i) for i in range(3)])
    events = await s.get_events("t", "resp_1", 0)
    assert [(e.seq, e.type, e.data) for e in events] == [(i, f"type.{i}", bytes([i, 0, 255]) * i) for i in (1, 2)]
    assert await s.get_events("t", "resp_1", 2**40) == []
    assert await s.get_response("t", "resp_missing") is None
    with admin() as conn:
        lease = conn.execute(f"SELECT owner, expires_at FROM {pg_schema.name}.leases").fetchall()
    assert lease == [("host-a", 2.5e9 + 0.25)]
    await s.put_response(resp("resp_1"), release=True)
    assert (await s.get_response("t", "resp_1")).response["status"] == "completed"
    assert pg_schema.count("leases") == 0 and pg_schema.count("items") == 2
    monkeypatch.undo()
    await s.aclose()


async def test_a_cancelled_read_leaves_no_broken_connection(pg_schema):
    """A read cancelled while the server works on it gives up at once, and its connection (in
    the middle of a reply) is closed, not reused: the calls after it work."""
    dsn, app = app_dsn(pg_schema)
    s = store(dsn)
    await s.put_response(resp("resp_1"))
    holder = admin()
    holder.execute("BEGIN")
    holder.execute(f"LOCK TABLE {pg_schema.name}.responses IN ACCESS EXCLUSIVE MODE")  # reads wait
    release = threading.Timer(5, holder.execute, ["COMMIT"])  # (were the read not given up)
    release.start()
    t0 = trio.current_time()
    with trio.move_on_after(0.3) as scope:
        await s.get_response("t", "resp_1")
    assert scope.cancelled_caught and trio.current_time() - t0 < 2
    release.cancel()
    holder.execute("COMMIT")
    holder.close()
    for _ in range(3):
        assert (await s.get_response("t", "resp_1")).id == "resp_1"
        await s.put_response(resp("resp_2"))
        assert [e.seq for e in await s.get_events("t", "resp_1", -1)] == []
    assert all(c.usable for c in s._conns._idle)
    # the given-up connection's backend ends (it finds its client gone): none is left behind
    with trio.fail_after(10):
        while len(backends(app)) > len(s._conns._idle) + 1:  # + the pool's
            await trio.sleep(0.05)
    await s.aclose()


def lock_row(pg_schema, rid: str):
    """Another host's transaction holding response ``rid``'s row lock: COMMIT it to let go."""
    holder = admin()
    holder.execute("BEGIN")
    holder.execute(f"SELECT 1 FROM {pg_schema.name}.responses WHERE id = %s FOR UPDATE", (rid,))
    return holder


async def test_a_cancelled_write_ends_before_the_call_returns(pg_schema):
    """A write cancelled while it waits (here on another host's lock on its row) is not given
    up: it lands before the call returns, as a call in a worker thread did, so no later write
    can be overtaken by it; its connection is reused."""
    dsn, app = app_dsn(pg_schema)
    s = store(dsn)
    await s.put_response(resp("resp_1", status="in_progress"))
    holder = lock_row(pg_schema, "resp_1")
    n = len(backends(app))
    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, lambda: (__import__("time").sleep(1), holder.execute("COMMIT")))
        with trio.move_on_after(0.2):
            await s.put_response(resp("resp_1", status="completed"))
        returned = trio.current_time() - t0
    holder.close()
    assert returned >= 0.9  # it waited for the lock: the write ran to its end
    assert (await s.get_response("t", "resp_1")).response["status"] == "completed"
    await s.put_response(resp("resp_1", status="cancelled"))  # a later write: the last word
    assert (await s.get_response("t", "resp_1")).response["status"] == "cancelled"
    assert len(backends(app)) == n  # the same connections, none closed or added
    await s.aclose()


async def test_a_server_error_surfaces_as_psycopg_raises_it(pg_schema):
    """An error the server reports (here a lock timeout) raises psycopg's class for its SQLSTATE,
    as the pooled path does; the connection stays in use for the next call."""
    from psycopg import errors

    dsn, app = app_dsn(pg_schema, lock_timeout="200")
    s = store(dsn)
    await s.put_response(resp("resp_1", status="in_progress"))
    holder = lock_row(pg_schema, "resp_1")
    n = len(backends(app))
    with pytest.raises(errors.LockNotAvailable, match="lock timeout") as raised:
        await s.put_response(resp("resp_1"))
    assert raised.value.sqlstate == "55P03"
    with pytest.raises(errors.LockNotAvailable):  # the pooled path, for comparison
        await s.delete_response("t", "resp_1")
    holder.execute("COMMIT")
    holder.close()
    await s.put_response(resp("resp_1"))
    assert (await s.get_response("t", "resp_1")).response["status"] == "completed"
    assert len(backends(app)) == n
    await s.aclose()


async def test_a_killed_connection_is_retried(pg_schema):
    """Connections the server ends (pg_terminate_backend from another session) under the hot
    statements: the next write and read run on fresh ones, once each."""
    dsn, app = app_dsn(pg_schema)
    s = store(dsn)
    await s.put_response(resp("resp_1", status="in_progress"))
    killed = 0
    for call in (
        lambda: s.put_response(resp("resp_1")),
        lambda: s.append_events("t", "resp_1", [StoredEvent(0, "response.created", b"{}")]),
        lambda: s.get_events("t", "resp_1", -1),
    ):
        with admin() as conn:
            killed += len(conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", (app,)
            ).fetchall())
        await call()
    assert killed >= 3
    assert (await s.get_response("t", "resp_1")).response["status"] == "completed"
    assert [e.type for e in await s.get_events("t", "resp_1", -1)] == ["response.created"]
    with admin() as conn:
        assert conn.execute(f"SELECT n FROM {pg_schema.name}.counts WHERE name = 'responses'").fetchone()[0] == 1
    await s.aclose()


async def test_a_call_does_not_wait_for_a_connect(pg_schema, monkeypatch):
    """More calls at once than open connections: one more opens in the background, and a call
    that found none idle takes the first that frees (here long before a slow connect ends); the
    new connection joins the set when it is ready. A connect that fails is reported to the calls
    waiting for it, and the next call connects again."""
    import time

    import psycopg

    s = store(pg_schema.dsn)
    assert len(s._conns._idle) == 1  # one opened at start
    connect = s._conns.connect

    def slow_connect():
        time.sleep(2)
        return connect()

    monkeypatch.setattr(s._conns, "connect", slow_connect)
    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        for i in range(3):
            nursery.start_soon(s.put_response, resp(f"resp_{i}"))
    assert trio.current_time() - t0 < 1.5  # none waited for the connect
    assert [(await s.get_response("t", f"resp_{i}")).id for i in range(3)] == ["resp_0", "resp_1", "resp_2"]
    with trio.fail_after(10):
        while len(s._conns._idle) < 3:  # the two that found none idle each opened one
            await trio.sleep(0.05)
    s._conns.drop_idle()

    def failing_connect():
        raise psycopg.OperationalError("no server here")

    monkeypatch.setattr(s._conns, "connect", failing_connect)
    with trio.fail_after(10), pytest.raises(psycopg.OperationalError, match="no server here"):
        await s.put_response(resp("resp_3"))
    monkeypatch.setattr(s._conns, "connect", connect)
    await s.put_response(resp("resp_3"))
    assert (await s.get_response("t", "resp_3")).id == "resp_3"
    await s.aclose()


async def test_calls_wait_in_line_for_a_connection(pg_schema):
    """With every connection busy (here the only one, its write waiting on a lock), calls wait
    in line and get the connection in the order they came; one that gives up meanwhile leaves
    the line (nothing of it is written) and the others go on."""
    s = store(pg_schema.dsn, pool_size=1)
    await s.put_response(resp("resp_0", status="in_progress"))
    holder = admin()
    holder.execute("BEGIN")
    holder.execute(f"SELECT 1 FROM {pg_schema.name}.responses WHERE id = 'resp_0' FOR UPDATE")
    done: list[str] = []

    async def put(rid: str) -> None:
        await s.put_response(resp(rid))
        done.append(rid)

    async def gives_up() -> None:
        with trio.move_on_after(0.3):
            await put("resp_3")

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for call in (lambda: put("resp_0"), lambda: put("resp_1"), gives_up, lambda: put("resp_2")):
                nursery.start_soon(call)
                await trio.testing.wait_all_tasks_blocked()
            await trio.sleep(0.5)  # resp_3 gave up
            assert done == []
            await trio.to_thread.run_sync(holder.execute, "COMMIT")
    holder.close()
    assert done == ["resp_0", "resp_1", "resp_2"]
    assert await s.get_response("t", "resp_3") is None
    await s.put_response(resp("resp_4"))
    assert s._conns._count == 1
    await s.aclose()


# -- start-up: what an operator sees when PostgreSQL is misconfigured ---------------------------


def serve(*args: str, config: str | None = None, tmp: Path, pre: str = "") -> subprocess.CompletedProcess:
    """``respline serve`` that is expected to stop at start; ``pre`` runs first in the process."""
    argv = ["serve", "--port", "1", *args]
    if config is not None:
        (tmp / "c.toml").write_text(config)
        argv += ["--config", str(tmp / "c.toml")]
    code = f"import sys\n{pre}\nfrom respline.adapters.cli import main\nsys.exit(main({argv!r}))"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESPLINE")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=tmp, timeout=60, env=env)


def test_unreachable_or_misconfigured_postgres_fails_at_start(tmp_path):
    out = serve("--store", "postgresql://someone:hunter2@127.0.0.1:1/db", tmp=tmp_path)
    assert out.returncode == 2, out.stderr
    assert b"cannot use PostgreSQL at 127.0.0.1:1/db" in out.stderr
    assert b"hunter2" not in out.stderr and b"Traceback" not in out.stderr
    out = serve(config='[store]\nbackend = "postgres"\n', tmp=tmp_path)
    assert out.returncode == 2 and b"store.dsn is required" in out.stderr
    out = serve(config='[store]\nbackend = "postgres"\ndsn = "$RESPLINE_SURELY_UNSET_DSN"\n', tmp=tmp_path)
    assert out.returncode == 2 and b"RESPLINE_SURELY_UNSET_DSN" in out.stderr
    out = serve("--store", "mysql://x", tmp=tmp_path)
    assert out.returncode == 2 and b"postgresql://" in out.stderr


def test_psycopg_is_needed_only_for_postgres(tmp_path):
    """Without psycopg installed, a postgres store is a clear start-up error; the other
    backends never import it."""
    hide = "sys.modules['psycopg'] = None  # as if not installed"
    out = serve("--store", "postgresql://x@127.0.0.1:1/db", tmp=tmp_path, pre=hide)
    assert out.returncode == 2 and b"pip install 'respline[postgres]'" in out.stderr, out.stderr
    check = (
        "import sys\n"
        "from respline.adapters import cli\n"
        "for store in ('memory', 'sqlite:s.db'):\n"
        "    cli.build_store(cli.build_config(cli.parser().parse_args(['serve', '--store', store])))\n"
        "assert not any(m.startswith('psycopg') for m in sys.modules), sorted(sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
