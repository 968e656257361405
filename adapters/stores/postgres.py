"""PostgreSQL store: one database shared by respline hosts (and by the workers of each).

Same contract as memory.py and sqlite.py (engine/store.py). How it stays sound across hosts:

- Nothing blocks the trio thread. The statements streams wait for (``put_response``, one
  statement with the lease it begins or ends; ``append_events``; ``get_response`` and
  ``get_events``) run on the trio thread itself, through libpq in nonblocking mode on connections
  only it uses (pgtrio.py: prepared once per connection, parameters in binary): no thread hop, no
  pool checkout, none of psycopg's Python layers, which together cost as much as the round trip.
  Everything else (conversations, deletes, evictions, sweeps, leases, migrations) takes a
  connection from a sync ``ConnectionPool`` in a worker thread (``trio.to_thread``; psycopg's
  async API is asyncio-only), with a ``CapacityLimiter`` the size of the pool so threads do not
  queue on it. Every connection is in autocommit mode: a one-statement call is one round trip. A
  progress write (``put_response(progress=True)``) commits asynchronously (``synchronous_commit``
  off for its transaction): the next write supersedes it. A write runs to its end even if its
  caller is cancelled meanwhile (as a call in a worker thread does), so a write given up on can
  never land after a later one; a read gives up at once (its connection is closed).
- The schema is versioned (``schema_version``) and migrated at start inside a transaction that
  holds ``pg_advisory_xact_lock``: when several hosts start together one migrates, the others
  wait for it and then find nothing to do.
- The count bounds (``max_responses``, ``max_conversations``) use a row per table in ``counts``,
  updated in the transaction that inserts or deletes (a ``COUNT(*)`` of 100,000 rows on every
  write would cost more than the write). A writer that takes a count past its bound evicts the
  oldest rows afterwards, holding the count's row lock so two hosts never both evict for one
  excess.
- A conversation append locks the conversation's row first: concurrent appends (two hosts
  finishing turns of one conversation at once) both land, each turn's items contiguous, in
  commit order (``bigserial`` positions).
- The sweeper runs under ``pg_try_advisory_lock``: a host that does not get it skips the sweep.
- ``take_lapsed`` hands leases over with ``UPDATE ... FOR UPDATE SKIP LOCKED ... RETURNING``:
  two hosts never take the same lease.
- ``wait_events`` (live follow across hosts): appending events sends ``NOTIFY respline_events``
  with the response id, writing a background response (its status) or deleting a response
  sends it with ``s:`` before the id; one listener connection per process, in its own thread,
  wakes the trio tasks waiting on that id. ``wait_status`` waits for the ``s:`` notices only:
  the host running a background run watches it to see a cancel written by another host at
  once, without waking for each batch of the run's own events.

The tables live in the first schema of the connection's ``search_path``; to keep them apart add
``options=-csearch_path=NAME`` to the DSN. Deadlocks and serialization failures (rare: two
writers sharing an item id while one evicts) are retried; a call whose connection turned out
dead (the server restarted) is retried on a fresh one, except a conversation append whose
COMMIT may have landed (it is not idempotent). On either path a server-side error raises
psycopg's class for its SQLSTATE.

Connections per process: up to ``pool_size`` for the trio-thread statements (one opened at
start, more as concurrent calls need them), up to ``pool_size`` in the pool (one at start), and
the listener's.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

import msgspec
import psycopg
import trio
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool

from respline.adapters.stores import pgtrio
from respline.adapters.stores.pgtrio import BOOL, BYTEA, BYTEA_ARRAY, FLOAT8, INT4, INT4_ARRAY, INT8, TEXT, TEXT_ARRAY
from respline.engine.store import Retention, RunLease, StoredConversation, StoredEvent, StoredResponse

log = logging.getLogger("respline.store")

SCHEMA_VERSION = 1

# Migrations from version N-1 to N, in order; each runs in the migrating transaction.
_MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE responses (
            tenant text NOT NULL, id text NOT NULL, created_at bigint NOT NULL, body bytea NOT NULL,
            pos bigserial NOT NULL, PRIMARY KEY (tenant, id))""",
        "CREATE INDEX responses_age ON responses (created_at, pos)",
        """CREATE TABLE events (
            tenant text NOT NULL, response_id text NOT NULL, seq integer NOT NULL,
            type text NOT NULL, data bytea NOT NULL, PRIMARY KEY (tenant, response_id, seq))""",
        """CREATE TABLE items (
            tenant text NOT NULL, id text NOT NULL, owner text NOT NULL, body bytea NOT NULL,
            PRIMARY KEY (tenant, id))""",
        "CREATE INDEX items_owner ON items (tenant, owner)",
        """CREATE TABLE conversations (
            tenant text NOT NULL, id text NOT NULL, created_at bigint NOT NULL, metadata bytea NOT NULL,
            pos bigserial NOT NULL, PRIMARY KEY (tenant, id))""",
        "CREATE INDEX conversations_age ON conversations (created_at, pos)",
        """CREATE TABLE conversation_items (
            pos bigserial PRIMARY KEY, tenant text NOT NULL, conv_id text NOT NULL,
            item_id text NOT NULL, body bytea NOT NULL)""",
        "CREATE INDEX conversation_items_conv ON conversation_items (tenant, conv_id, pos)",
        """CREATE TABLE leases (
            tenant text NOT NULL, response_id text NOT NULL, owner text NOT NULL,
            expires_at double precision NOT NULL, PRIMARY KEY (tenant, response_id))""",
        "CREATE INDEX leases_expiry ON leases (expires_at)",
        "CREATE INDEX leases_owner ON leases (owner)",
        "CREATE TABLE counts (name text PRIMARY KEY, n bigint NOT NULL)",
        "INSERT INTO counts (name, n) VALUES ('responses', 0), ('conversations', 0)",
    ],
]

# Advisory lock keys: (respline's class id, a hash of the schema), so two schemas of one database
# migrate and sweep independently. 0x7273706C is "rspl".
_LOCK_CLASS = 0x7273706C
_MIGRATE_LOCK = f"SELECT pg_advisory_xact_lock({_LOCK_CLASS}, hashtext('migrate:' || coalesce(current_schema(), '')))"
_SWEEP_TRY = f"SELECT pg_try_advisory_lock({_LOCK_CLASS}, hashtext('sweep:' || coalesce(current_schema(), '')))"
_SWEEP_UNLOCK = f"SELECT pg_advisory_unlock({_LOCK_CLASS}, hashtext('sweep:' || coalesce(current_schema(), '')))"

CHANNEL = "respline_events"
STATUS = "s:"  # before the response id in a notice: its stored response changed (or went)

POOL_TIMEOUT = 10.0  # seconds a call waits for a pooled connection before failing
CONNECT_TIMEOUT = 10  # seconds (libpq's connect_timeout)
SWEEP_BATCH = 1000  # rows deleted per sweep statement: short locks, bounded transactions
_ATTEMPTS = 3

_enc = msgspec.json.Encoder()
_dec_response = msgspec.json.Decoder(StoredResponse)
_decode = msgspec.json.decode


def describe(dsn: str) -> str:
    """Where a DSN points, for messages: host, port and database, never the password."""
    try:
        parts = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "(an invalid DSN)"
    host = parts.get("host") or "the local socket"
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"{host}{port}/{parts.get('dbname') or parts.get('user') or ''}"


def migrate(conn: psycopg.Connection) -> int:
    """Bring the schema to SCHEMA_VERSION; returns the version found. Safe to run from several
    hosts at once: the advisory lock makes them take turns, and each sees the others' work."""
    with conn.transaction():
        conn.execute(_MIGRATE_LOCK)
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
        row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        found = row[0] if row and row[0] is not None else 0
        if found > SCHEMA_VERSION:
            raise RuntimeError(
                f"the database schema is at version {found}, newer than this respline's ({SCHEMA_VERSION}): upgrade respline"
            )
        for target in range(found + 1, SCHEMA_VERSION + 1):
            for stmt in _MIGRATIONS[target - 1]:
                conn.execute(stmt)
        if found < SCHEMA_VERSION:
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (SCHEMA_VERSION,))
    return found


def _item_rows(items: Any) -> tuple[list[str], list[bytes]]:
    """Ids and JSON of the items that have an id; the last of a repeated id wins (one statement
    may not upsert a row twice), in id order so concurrent writers lock rows in one order."""
    by_id = {item["id"]: item for item in items if isinstance(item, dict) and item.get("id")}
    ids = sorted(by_id)
    return ids, [_enc.encode(by_id[i]) for i in ids]


# put_response as one statement: upsert the response, drop index rows of items it no longer has,
# index its items, count it if it is new, record or end its lease, tell followers (background
# runs only); a progress write commits without waiting for the WAL to reach the disk (it is
# superseded by the next write; an operator's synchronous_commit applies to every other one).
# Item rows that did not change (the input, at each write after the first) are left as they
# are: no new row version, less WAL for the commit to flush. ``xmax = 0`` on the upserted row
# means it was inserted rather than updated.
_PUT_RESPONSE_SQL = """
WITH up AS (
    INSERT INTO responses AS r (tenant, id, created_at, body) VALUES (%(tenant)s, %(id)s, %(created)s, %(body)b)
    ON CONFLICT (tenant, id) DO UPDATE SET created_at = EXCLUDED.created_at, body = EXCLUDED.body
    RETURNING (r.xmax = 0) AS inserted
), stale AS (
    DELETE FROM items WHERE tenant = %(tenant)s AND owner = %(id)s AND NOT (id = ANY(%(ids)s::text[]))
), idx AS (
    INSERT INTO items AS i (tenant, id, owner, body)
    SELECT %(tenant)s, u.id, %(id)s, u.body FROM unnest(%(ids)s::text[], %(bodies)b::bytea[]) AS u(id, body)
    ON CONFLICT (tenant, id) DO UPDATE SET owner = EXCLUDED.owner, body = EXCLUDED.body
    WHERE i.owner <> EXCLUDED.owner OR i.body <> EXCLUDED.body
), counted AS (
    UPDATE counts SET n = n + 1 WHERE name = 'responses' AND (SELECT inserted FROM up) RETURNING n
), leased AS (
    INSERT INTO leases (tenant, response_id, owner, expires_at)
    SELECT %(tenant)s, %(id)s, %(owner)s::text, %(expires)s::double precision WHERE %(owner)s::text IS NOT NULL
    ON CONFLICT (tenant, response_id) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at
), released AS (
    DELETE FROM leases WHERE %(release)s AND tenant = %(tenant)s AND response_id = %(id)s
)
SELECT (SELECT n FROM counted),
    CASE WHEN %(notify)s THEN pg_notify('""" + CHANNEL + """', '""" + STATUS + """' || %(id)s::text) END,
    CASE WHEN %(progress)s THEN set_config('synchronous_commit', 'off', true) END
"""
_PUT_RESPONSE = pgtrio.Statement(
    "respline_put_response", _PUT_RESPONSE_SQL, tenant=TEXT, id=TEXT, created=INT8, body=BYTEA, ids=TEXT_ARRAY,
    bodies=BYTEA_ARRAY, notify=BOOL, owner=TEXT, expires=FLOAT8, release=BOOL, progress=BOOL,
)

_APPEND_EVENTS = pgtrio.Statement(
    "respline_append_events",
    """WITH ins AS (
        INSERT INTO events (tenant, response_id, seq, type, data)
        SELECT %(tenant)s, %(id)s, u.seq, u.type, u.data FROM unnest(%(seqs)s, %(types)s, %(datas)s) AS u(seq, type, data)
        ON CONFLICT (tenant, response_id, seq) DO UPDATE SET type = EXCLUDED.type, data = EXCLUDED.data
    )
    SELECT pg_notify('""" + CHANNEL + """', %(id)s)""",
    tenant=TEXT, id=TEXT, seqs=INT4_ARRAY, types=TEXT_ARRAY, datas=BYTEA_ARRAY,
)
_GET_RESPONSE = pgtrio.Statement(
    "respline_get_response",
    "SELECT body FROM responses WHERE tenant = %(tenant)s AND id = %(id)s AND created_at >= %(cutoff)s",
    cancellable=True,
    tenant=TEXT, id=TEXT, cutoff=INT8,
)
_GET_EVENTS = pgtrio.Statement(
    "respline_get_events",
    "SELECT seq, type, data FROM events WHERE tenant = %(tenant)s AND response_id = %(id)s AND seq > %(after)s ORDER BY seq",
    cancellable=True,
    tenant=TEXT, id=TEXT, after=INT8,  # (a client's starting_after may be any number)
)
# what runs on the trio thread (pgtrio): the statements streams wait for
_NATIVE = (_PUT_RESPONSE, _APPEND_EVENTS, _GET_RESPONSE, _GET_EVENTS)

# Deleting responses or conversations with everything they own: the rows first (which locks
# them), then what they own in a second statement, whose fresh snapshot (READ COMMITTED) sees
# everything committed up to the rows' deletion: an append that held a conversation's lock
# meanwhile leaves no orphan items. The count's row is updated last (or, when evicting, locked
# first), so no two transactions take that lock and a row lock in opposite orders.
_DEPENDENTS = {
    "responses": (
        "WITH g AS (SELECT * FROM unnest(%(tenants)s::text[], %(ids)s::text[]) AS g(tenant, id)), "
        "ev AS (DELETE FROM events e USING g WHERE e.tenant = g.tenant AND e.response_id = g.id) "
        "DELETE FROM items i USING g WHERE i.tenant = g.tenant AND i.owner = g.id"
    ),
    "conversations": (
        "WITH g AS (SELECT * FROM unnest(%(tenants)s::text[], %(ids)s::text[]) AS g(tenant, id)), "
        "ci AS (DELETE FROM conversation_items c USING g WHERE c.tenant = g.tenant AND c.conv_id = g.id) "
        "DELETE FROM items i USING g WHERE i.tenant = g.tenant AND i.owner = g.id"
    ),
}
_UNCOUNT = "UPDATE counts SET n = n - %s WHERE name = %s"


def _again(exc: psycopg.Error, broken: bool, last: bool, retry: bool | Callable[[], bool]) -> bool:
    """Whether a call that failed with ``exc`` is tried again: after a deadlock or a
    serialization failure, or on a fresh connection after its own was lost (``broken``) if the
    call allows it (``retry``)."""
    if last:
        return False
    if isinstance(exc, (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)):
        return True
    return isinstance(exc, psycopg.OperationalError) and broken and (retry() if callable(retry) else retry)


class PostgresStore:
    def __init__(
        self,
        dsn: str,
        retention: Retention | None = None,
        now: Callable[[], float] = time.time,
        pool_size: int = 8,
    ) -> None:
        self.dsn = dsn
        self.retention = retention or Retention()
        self._now = now
        self._connect_kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": CONNECT_TIMEOUT}
        if "application_name" not in psycopg.conninfo.conninfo_to_dict(dsn):
            self._connect_kwargs["application_name"] = "respline"  # how an operator tells them apart
        # at start, on this thread: a database that cannot be reached or migrated fails here
        with psycopg.connect(dsn, **self._connect_kwargs) as conn:
            migrate(conn)
        self._pool = ConnectionPool(
            dsn,
            min_size=1,
            max_size=pool_size,
            kwargs=self._connect_kwargs,
            timeout=POOL_TIMEOUT,
            name="respline",
            open=False,
        )
        self._pool.open(wait=True, timeout=POOL_TIMEOUT)
        self._limiter = trio.CapacityLimiter(pool_size)
        # the hot statements' connections (pgtrio), one opened now so the first stream does not wait
        self._conns = pgtrio.Connections(dsn, self._connect_kwargs, _NATIVE, pool_size)
        self._conns.keep(self._conns.connect())
        # live follow: response id -> [event set by the listener, last used (monotonic)]
        self._waiters: dict[str, list[Any]] = {}
        self._listener: threading.Thread | None = None
        self._closing = threading.Event()

    # -- running calls -------------------------------------------------------------------

    async def _run(self, fn: Callable[..., Any], *args: Any, retry: bool | Callable[[], bool] = True) -> Any:
        return await trio.to_thread.run_sync(self._call, fn, args, retry, limiter=self._limiter)

    def _call(self, fn: Callable[..., Any], args: tuple, retry: bool | Callable[[], bool]) -> Any:
        """In a worker thread: ``fn(conn, *args)`` on a pooled connection, retried as the
        module docstring says."""
        for attempt in range(_ATTEMPTS):
            with self._pool.connection() as conn:
                try:
                    return fn(conn, *args)
                except psycopg.Error as exc:
                    if not _again(exc, conn.broken, attempt + 1 == _ATTEMPTS, retry):
                        raise
                    broken = conn.broken  # the pool drops this connection when it comes back
            if broken:
                self._pool.check()  # the others may be dead too (a restarted server)
        raise AssertionError("unreachable")

    async def _exec(self, stmt: pgtrio.Statement, *args: Any) -> list[tuple]:
        """One of the hot statements, on the trio thread (pgtrio): its rows. Retried as
        ``_call`` retries (each of them is idempotent)."""
        for attempt in range(_ATTEMPTS):
            conn = await self._conns.take()
            try:
                return await conn.run(stmt, args)
            except psycopg.Error as exc:
                if not _again(exc, conn.broken, attempt + 1 == _ATTEMPTS, True):
                    raise
            finally:
                self._conns.give(conn)
        raise AssertionError("unreachable")

    # -- responses -----------------------------------------------------------------------

    async def put_response(
        self, stored: StoredResponse, *, lease: RunLease | None = None, release: bool = False, progress: bool = False
    ) -> None:
        ids, bodies = _item_rows((*stored.input_items, *(stored.response.get("output") or ())))
        rows = await self._exec(
            _PUT_RESPONSE,
            stored.tenant,
            stored.id,
            stored.created_at,
            _enc.encode(stored),
            ids,
            bodies,
            stored.background,  # notify: a follower on another host sees the status change
            lease.owner if lease is not None else None,
            lease.expires_at if lease is not None else None,
            release and lease is None,
            progress,
        )
        count = rows[0][0]
        limit = self.retention.max_responses
        if count is not None and limit and count > limit:
            await self._run(self._evict, "responses", limit)

    @staticmethod
    def _delete_rows(conn: psycopg.Connection, table: str, which: str, params: Any) -> int:
        """In the caller's transaction: delete the rows of ``table`` that ``which`` picks with
        everything they own, and uncount them; returns how many went."""
        rows = conn.execute(f"DELETE FROM {table} WHERE {which} RETURNING tenant, id", params).fetchall()  # noqa: S608 - fixed names
        if rows:
            conn.execute(_DEPENDENTS[table], {"tenants": [r[0] for r in rows], "ids": [r[1] for r in rows]})
            conn.execute(_UNCOUNT, (len(rows), table))
        return len(rows)

    @classmethod
    def _evict(cls, conn: psycopg.Connection, table: str, limit: int) -> None:
        """Delete the oldest rows beyond ``limit``. The count's row is locked first, so the
        excess is counted once however many hosts evict at the same moment."""
        with conn.transaction():
            (count,) = conn.execute("SELECT n FROM counts WHERE name = %s FOR UPDATE", (table,)).fetchone()
            if count > limit:
                which = f"(tenant, id) IN (SELECT tenant, id FROM {table} ORDER BY created_at, pos LIMIT %s FOR UPDATE SKIP LOCKED)"
                cls._delete_rows(conn, table, which, (count - limit,))

    @classmethod
    def _delete_one(cls, conn: psycopg.Connection, table: str, tenant: str, oid: str) -> int:
        with conn.transaction():
            gone = cls._delete_rows(conn, table, "tenant = %s AND id = %s", (tenant, oid))
            if table == "responses":  # events may outlive a missing response row (memory/sqlite drop them too)
                conn.execute("DELETE FROM events WHERE tenant = %s AND response_id = %s", (tenant, oid))
                conn.execute(f"SELECT pg_notify('{CHANNEL}', %s)", (STATUS + oid,))  # its followers stop
        return gone

    async def get_response(self, tenant: str, response_id: str) -> StoredResponse | None:
        rows = await self._exec(_GET_RESPONSE, tenant, response_id, self.retention.cutoff(self._now()))
        return _dec_response.decode(rows[0][0]) if rows else None

    async def delete_response(self, tenant: str, response_id: str) -> bool:
        return await self._run(self._delete_one, "responses", tenant, response_id) > 0

    async def append_events(self, tenant: str, response_id: str, events: list[StoredEvent]) -> None:
        if not events:
            return
        await self._exec(
            _APPEND_EVENTS, tenant, response_id, [e.seq for e in events], [e.type for e in events], [e.data for e in events]
        )

    async def get_events(self, tenant: str, response_id: str, after: int) -> list[StoredEvent]:
        return [StoredEvent(seq, typ, data) for seq, typ, data in await self._exec(_GET_EVENTS, tenant, response_id, after)]

    async def get_item(self, tenant: str, item_id: str) -> dict[str, Any] | None:
        def get(conn: psycopg.Connection):
            return conn.execute(
                "SELECT body FROM items WHERE tenant = %s AND id = %s", (tenant, item_id), binary=True
            ).fetchone()

        row = await self._run(get)
        return _decode(row[0]) if row else None

    # -- conversations -------------------------------------------------------------------

    async def put_conversation(self, conv: StoredConversation) -> None:
        params = (conv.tenant, conv.id, conv.created_at, _enc.encode(conv.metadata))

        def put(conn: psycopg.Connection) -> int | None:
            with conn.transaction():
                row = conn.execute(
                    "INSERT INTO conversations (tenant, id, created_at, metadata) VALUES (%s, %s, %s, %b) "
                    "ON CONFLICT (tenant, id) DO UPDATE SET metadata = EXCLUDED.metadata "
                    "RETURNING (xmax = 0)",
                    params,
                ).fetchone()
                if not row[0]:
                    return None
                return conn.execute("UPDATE counts SET n = n + 1 WHERE name = 'conversations' RETURNING n").fetchone()[0]

        count = await self._run(put)
        limit = self.retention.max_conversations
        if count is not None and limit and count > limit:
            await self._run(self._evict, "conversations", limit)

    async def get_conversation(self, tenant: str, conv_id: str) -> StoredConversation | None:
        def get(conn: psycopg.Connection):
            return conn.execute(
                "SELECT created_at, metadata FROM conversations WHERE tenant = %s AND id = %s AND created_at >= %s",
                (tenant, conv_id, self.retention.cutoff(self._now())),
                binary=True,
            ).fetchone()

        row = await self._run(get)
        if row is None:
            return None
        return StoredConversation(tenant=tenant, id=conv_id, created_at=row[0], metadata=_decode(row[1]))

    async def delete_conversation(self, tenant: str, conv_id: str) -> bool:
        return await self._run(self._delete_one, "conversations", tenant, conv_id) > 0

    async def add_conversation_items(self, tenant: str, conv_id: str, items: list[dict[str, Any]]) -> None:
        if not items:
            return
        ids = [it["id"] for it in items]
        bodies = [_enc.encode(it) for it in items]
        index_ids, index_bodies = _item_rows(items)

        committing = [False]

        def add(conn: psycopg.Connection) -> None:
            committing[0] = False
            with conn.transaction():
                # the conversation's row lock makes concurrent appends take turns: each turn's
                # items get consecutive positions, in commit order
                if conn.execute(
                    "SELECT 1 FROM conversations WHERE tenant = %s AND id = %s FOR UPDATE", (tenant, conv_id)
                ).fetchone() is None:
                    return  # deleted meanwhile: nothing to append to (as memory.py)
                conn.execute(
                    "INSERT INTO conversation_items (tenant, conv_id, item_id, body) "
                    "SELECT %s, %s, u.id, u.body FROM unnest(%s::text[], %b::bytea[]) WITH ORDINALITY AS u(id, body, k) "
                    "ORDER BY u.k",
                    (tenant, conv_id, ids, bodies),
                )
                conn.execute(
                    "INSERT INTO items (tenant, id, owner, body) "
                    "SELECT %s, u.id, %s, u.body FROM unnest(%s::text[], %b::bytea[]) AS u(id, body) "
                    "ON CONFLICT (tenant, id) DO UPDATE SET owner = EXCLUDED.owner, body = EXCLUDED.body",
                    (tenant, conv_id, index_ids, index_bodies),
                )
                committing[0] = True

        # not idempotent: a connection lost at COMMIT may have committed, and a retry would
        # append the turn twice; lost before that, the server rolled it back: retried
        await self._run(add, retry=lambda: not committing[0])

    async def conversation_items(self, tenant: str, conv_id: str) -> list[dict[str, Any]]:
        def get(conn: psycopg.Connection):
            return conn.execute(
                "SELECT body FROM conversation_items WHERE tenant = %s AND conv_id = %s ORDER BY pos",
                (tenant, conv_id),
                binary=True,
            ).fetchall()

        return [_decode(row[0]) for row in await self._run(get)]

    async def delete_conversation_item(self, tenant: str, conv_id: str, item_id: str) -> bool:
        def delete(conn: psycopg.Connection) -> bool:
            row = conn.execute(
                "WITH gone AS (DELETE FROM conversation_items WHERE tenant = %s AND conv_id = %s AND item_id = %s RETURNING 1), "
                "idx AS (DELETE FROM items WHERE tenant = %s AND id = %s AND owner = %s) "
                "SELECT count(*) FROM gone",
                (tenant, conv_id, item_id, tenant, item_id, conv_id),
            ).fetchone()
            return row[0] > 0

        return await self._run(delete)

    # -- retention -----------------------------------------------------------------------

    async def sweep(self, now: int) -> int:
        """Delete what expired. One host sweeps at a time (an advisory lock); a host that does
        not get the lock returns 0 at once, the holder is doing the work."""
        ttl = self.retention.ttl
        if not ttl:
            return 0
        cutoff = now - ttl

        def sweep(conn: psycopg.Connection) -> int:
            if not conn.execute(_SWEEP_TRY).fetchone()[0]:
                return 0
            removed = 0
            try:
                for table in ("responses", "conversations"):
                    which = (
                        f"(tenant, id) IN (SELECT tenant, id FROM {table} WHERE created_at < %s "
                        f"LIMIT {SWEEP_BATCH} FOR UPDATE SKIP LOCKED)"
                    )
                    while True:  # in batches: each transaction short, its locks few
                        with conn.transaction():
                            gone = self._delete_rows(conn, table, which, (cutoff,))
                        removed += gone
                        if gone < SWEEP_BATCH:
                            break
            finally:
                if not conn.broken:
                    conn.execute(_SWEEP_UNLOCK)
            return removed

        return await self._run(sweep)

    # -- leases of responses being produced ------------------------------------------------

    async def lease_run(self, tenant: str, response_id: str, owner: str, expires_at: float) -> None:
        def lease(conn: psycopg.Connection) -> None:
            conn.execute(
                "INSERT INTO leases (tenant, response_id, owner, expires_at) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (tenant, response_id) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at",
                (tenant, response_id, owner, expires_at),
            )

        await self._run(lease)

    async def renew_leases(self, owner: str, expires_at: float) -> None:
        def renew(conn: psycopg.Connection) -> None:
            conn.execute("UPDATE leases SET expires_at = %s WHERE owner = %s", (expires_at, owner))

        await self._run(renew)

    async def end_lease(self, tenant: str, response_id: str) -> None:
        def end(conn: psycopg.Connection) -> None:
            conn.execute("DELETE FROM leases WHERE tenant = %s AND response_id = %s", (tenant, response_id))

        await self._run(end)

    async def take_lapsed(self, now: float, owner: str, expires_at: float, limit: int = 100) -> list[RunLease]:
        """Lapsed leases handed to ``owner``. The inner SELECT locks the rows it picks and skips
        rows another host is taking; a row taken and committed meanwhile is re-checked against
        ``expires_at < now`` (READ COMMITTED re-reads a locked row's latest version) and left out."""

        def take(conn: psycopg.Connection):
            return conn.execute(
                "UPDATE leases SET owner = %s, expires_at = %s "
                "WHERE (tenant, response_id) IN ("
                "  SELECT tenant, response_id FROM leases WHERE expires_at < %s"
                "  ORDER BY expires_at LIMIT %s FOR UPDATE SKIP LOCKED) "
                "AND expires_at < %s "
                "RETURNING tenant, response_id, owner, expires_at",
                (owner, expires_at, now, limit, now),
            ).fetchall()

        return [RunLease(t, rid, o, exp) for t, rid, o, exp in await self._run(take)]

    # -- live follow ---------------------------------------------------------------------

    async def wait_events(self, response_id: str, timeout: float) -> None:
        """Return when events of ``response_id`` (or its status) may have changed, from any host,
        or after ``timeout``. A notice that arrived since the last wait returns at once."""
        await self._wait(response_id, timeout)

    async def wait_status(self, response_id: str, timeout: float) -> None:
        """As ``wait_events``, for writes of the stored response only (a status change, a
        cancel, a delete), not for its events: what the host running a background run
        watches to see a cancel sent to another host."""
        await self._wait(STATUS + response_id, timeout)

    async def _wait(self, key: str, timeout: float) -> None:
        if self._listener is None:
            self._start_listener()
        entry = self._waiters.get(key)
        now = time.monotonic()
        if entry is None:
            if len(self._waiters) > 1024:
                self._prune(now)
            entry = self._waiters[key] = [trio.Event(), now]
        entry[1] = now
        with trio.move_on_after(timeout):
            await entry[0].wait()
        if entry[0].is_set() and self._waiters.get(key) is entry:
            del self._waiters[key]  # consumed: the next wait waits for a new notice

    def _prune(self, now: float) -> None:
        """Entries of responses nobody waits on any more (their follow ended between notices)."""
        for rid, (_, used) in list(self._waiters.items()):
            if used < now - 60:
                del self._waiters[rid]

    def _wake(self, payload: str | None) -> None:
        """On the trio thread: a notice (a response id, or ``s:`` and the id), or one for
        everything (None: the listener (re)connected, so notices may have been missed). A status
        notice wakes the response's followers too."""
        if payload is None:
            for ev, _ in self._waiters.values():
                ev.set()
            return
        for key in (payload, payload[len(STATUS) :]) if payload.startswith(STATUS) else (payload,):
            entry = self._waiters.get(key)
            if entry is not None:
                entry[0].set()

    def _start_listener(self) -> None:
        token = trio.lowlevel.current_trio_token()
        self._listener = threading.Thread(target=self._listen, args=(token,), name="respline-pg-listen", daemon=True)
        self._listener.start()

    def _listen(self, token: trio.lowlevel.TrioToken) -> None:
        """The listener thread: LISTEN on its own connection, pass each notice for a response
        someone here waits on to the trio thread; reconnect after a failure."""
        backoff = 0.5
        while not self._closing.is_set():
            try:
                with psycopg.connect(self.dsn, **self._connect_kwargs) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    token.run_sync_soon(self._wake, None)
                    backoff = 0.5
                    while not self._closing.is_set():
                        waiters = self._waiters
                        for notice in conn.notifies(timeout=0.5):
                            p = notice.payload
                            # a racy read of the waiters is fine: a miss costs one timeout
                            if p in waiters or (p.startswith(STATUS) and p[len(STATUS) :] in waiters):
                                token.run_sync_soon(self._wake, p)
            except trio.RunFinishedError:
                return
            except psycopg.Error as exc:
                if self._closing.is_set():
                    return
                log.warning("store: lost the PostgreSQL listener connection (%s); reconnecting", exc)
                self._closing.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    async def aclose(self) -> None:
        self._closing.set()
        self._conns.close()
        listener, self._listener = self._listener, None

        def close() -> None:
            if listener is not None:
                listener.join(5)
            self._pool.close()

        await trio.to_thread.run_sync(close)
