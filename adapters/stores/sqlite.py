"""SQLite store: one file, WAL mode, safe for several server processes on one host.

Every database call runs in a worker thread (``trio.to_thread``) so the event loop never waits on
the disk; each thread keeps its own connection. Writes are single statements or short explicit
transactions, and ``busy_timeout`` makes concurrent writers from other processes wait rather
than fail. The schema version lives in ``PRAGMA user_version`` and is migrated at start.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import msgspec
import trio

from respline.engine.store import Retention, RunLease, StoredConversation, StoredEvent, StoredResponse

SCHEMA_VERSION = 3

# Migrations from version N-1 to N, in order. Version 1 had only the responses table; version 3
# added the leases of responses being produced (engine/store.py).
_MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE IF NOT EXISTS responses (
            tenant TEXT NOT NULL, id TEXT NOT NULL, created_at INTEGER NOT NULL, body BLOB NOT NULL,
            PRIMARY KEY (tenant, id))""",
    ],
    [
        "CREATE INDEX IF NOT EXISTS responses_created ON responses (created_at)",
        """CREATE TABLE IF NOT EXISTS events (
            tenant TEXT NOT NULL, response_id TEXT NOT NULL, seq INTEGER NOT NULL,
            type TEXT NOT NULL, data BLOB NOT NULL,
            PRIMARY KEY (tenant, response_id, seq))""",
        """CREATE TABLE IF NOT EXISTS items (
            tenant TEXT NOT NULL, id TEXT NOT NULL, owner TEXT NOT NULL, body BLOB NOT NULL,
            PRIMARY KEY (tenant, id))""",
        "CREATE INDEX IF NOT EXISTS items_owner ON items (tenant, owner)",
        """CREATE TABLE IF NOT EXISTS conversations (
            tenant TEXT NOT NULL, id TEXT NOT NULL, created_at INTEGER NOT NULL, metadata BLOB NOT NULL,
            PRIMARY KEY (tenant, id))""",
        "CREATE INDEX IF NOT EXISTS conversations_created ON conversations (created_at)",
        """CREATE TABLE IF NOT EXISTS conversation_items (
            pos INTEGER PRIMARY KEY AUTOINCREMENT,
            tenant TEXT NOT NULL, conv_id TEXT NOT NULL, item_id TEXT NOT NULL, body BLOB NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS conversation_items_conv ON conversation_items (tenant, conv_id, pos)",
    ],
    [
        """CREATE TABLE IF NOT EXISTS leases (
            tenant TEXT NOT NULL, response_id TEXT NOT NULL, owner TEXT NOT NULL, expires_at REAL NOT NULL,
            PRIMARY KEY (tenant, response_id))""",
        "CREATE INDEX IF NOT EXISTS leases_owner ON leases (owner)",
        "CREATE INDEX IF NOT EXISTS leases_expiry ON leases (expires_at)",
    ],
]

_enc = msgspec.json.Encoder()
_MAX_SEQ = 2**63 - 1  # the largest integer SQLite stores


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE takes the write lock up front, so two processes never deadlock upgrading
    a read lock; busy_timeout makes the loser wait."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
_dec_response = msgspec.json.Decoder(StoredResponse)


class SqliteStore:
    def __init__(self, path: str, retention: Retention | None = None, now: Callable[[], float] = time.time) -> None:
        self.path = path
        self.retention = retention or Retention()
        self._now = now
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._limiter = trio.CapacityLimiter(4)
        self._migrate()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def _migrate(self) -> None:
        conn = self._conn()
        with _transaction(conn):  # one process migrates; the others wait, then see it done
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for stmt in _MIGRATIONS[target - 1]:
                    conn.execute(stmt)
            if version < SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    # one statement outside a transaction, in a worker thread
    async def _execute(self, sql: str, params: tuple) -> None:
        await self._run(lambda: self._conn().execute(sql, params))

    async def _fetchone(self, sql: str, params: tuple) -> tuple | None:
        return await self._run(lambda: self._conn().execute(sql, params).fetchone())

    async def _fetchall(self, sql: str, params: tuple) -> list[tuple]:
        return await self._run(lambda: self._conn().execute(sql, params).fetchall())

    # -- responses -----------------------------------------------------------------------

    async def put_response(
        self, stored: StoredResponse, *, lease: RunLease | None = None, release: bool = False, progress: bool = False
    ) -> None:
        def put() -> None:
            conn = self._conn()
            with _transaction(conn):
                if lease is not None:
                    conn.execute(
                        "INSERT OR REPLACE INTO leases (tenant, response_id, owner, expires_at) VALUES (?, ?, ?, ?)",
                        (lease.tenant, lease.response_id, lease.owner, lease.expires_at),
                    )
                elif release:
                    conn.execute("DELETE FROM leases WHERE tenant = ? AND response_id = ?", (stored.tenant, stored.id))
                conn.execute(
                    "INSERT OR REPLACE INTO responses (tenant, id, created_at, body) VALUES (?, ?, ?, ?)",
                    (stored.tenant, stored.id, stored.created_at, _enc.encode(stored)),
                )
                rows = [
                    (stored.tenant, item["id"], stored.id, _enc.encode(item))
                    for item in (*stored.input_items, *(stored.response.get("output") or ()))
                    if isinstance(item, dict) and item.get("id")
                ]
                conn.executemany("INSERT OR REPLACE INTO items (tenant, id, owner, body) VALUES (?, ?, ?, ?)", rows)
                limit = self.retention.max_responses
                if limit:
                    self._evict(conn, "responses", limit)

        await self._run(put)

    @staticmethod
    def _evict(conn: sqlite3.Connection, table: str, limit: int) -> None:
        (count,) = conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()  # noqa: S608 - fixed names
        if count <= limit:
            return
        victims = conn.execute(
            f"SELECT tenant, id FROM {table} ORDER BY created_at, rowid LIMIT ?", (count - limit,)  # noqa: S608
        ).fetchall()
        for tenant, oid in victims:
            SqliteStore._delete_owned(conn, table, tenant, oid)

    @staticmethod
    def _delete_owned(conn: sqlite3.Connection, table: str, tenant: str, oid: str) -> int:
        cur = conn.execute(f"DELETE FROM {table} WHERE tenant = ? AND id = ?", (tenant, oid))  # noqa: S608
        if table == "responses":
            conn.execute("DELETE FROM events WHERE tenant = ? AND response_id = ?", (tenant, oid))
        else:
            conn.execute("DELETE FROM conversation_items WHERE tenant = ? AND conv_id = ?", (tenant, oid))
        conn.execute("DELETE FROM items WHERE tenant = ? AND owner = ?", (tenant, oid))
        return cur.rowcount

    async def _delete(self, table: str, tenant: str, oid: str) -> bool:
        """A response or conversation with what it owns, in one transaction; False: none."""

        def delete() -> bool:
            conn = self._conn()
            with _transaction(conn):
                n = self._delete_owned(conn, table, tenant, oid)
            return n > 0

        return await self._run(delete)

    async def get_response(self, tenant: str, response_id: str) -> StoredResponse | None:
        row = await self._fetchone(
            "SELECT body FROM responses WHERE tenant = ? AND id = ? AND created_at >= ?",
            (tenant, response_id, self.retention.cutoff(self._now())),
        )
        return _dec_response.decode(row[0]) if row else None

    async def delete_response(self, tenant: str, response_id: str) -> bool:
        return await self._delete("responses", tenant, response_id)

    async def append_events(self, tenant: str, response_id: str, events: list[StoredEvent]) -> None:
        rows = [(tenant, response_id, e.seq, e.type, e.data) for e in events]

        def append() -> None:
            conn = self._conn()
            with _transaction(conn):
                conn.executemany(
                    "INSERT OR REPLACE INTO events (tenant, response_id, seq, type, data) VALUES (?, ?, ?, ?, ?)", rows
                )

        await self._run(append)

    async def get_events(self, tenant: str, response_id: str, after: int) -> list[StoredEvent]:
        # SQLite integers are 64-bit: a larger ``after`` raised OverflowError when bound
        rows = await self._fetchall(
            "SELECT seq, type, data FROM events WHERE tenant = ? AND response_id = ? AND seq > ? ORDER BY seq",
            (tenant, response_id, min(after, _MAX_SEQ)),
        )
        return [StoredEvent(seq, typ, bytes(data)) for seq, typ, data in rows]

    async def get_item(self, tenant: str, item_id: str) -> dict[str, Any] | None:
        row = await self._fetchone("SELECT body FROM items WHERE tenant = ? AND id = ?", (tenant, item_id))
        return msgspec.json.decode(row[0]) if row else None

    # -- conversations -------------------------------------------------------------------

    async def put_conversation(self, conv: StoredConversation) -> None:
        def put() -> None:
            conn = self._conn()
            with _transaction(conn):
                conn.execute(
                    "INSERT INTO conversations (tenant, id, created_at, metadata) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (tenant, id) DO UPDATE SET metadata = excluded.metadata",
                    (conv.tenant, conv.id, conv.created_at, _enc.encode(conv.metadata)),
                )
                limit = self.retention.max_conversations
                if limit:
                    self._evict(conn, "conversations", limit)

        await self._run(put)

    async def get_conversation(self, tenant: str, conv_id: str) -> StoredConversation | None:
        row = await self._fetchone(
            "SELECT created_at, metadata FROM conversations WHERE tenant = ? AND id = ? AND created_at >= ?",
            (tenant, conv_id, self.retention.cutoff(self._now())),
        )
        if row is None:
            return None
        return StoredConversation(tenant=tenant, id=conv_id, created_at=row[0], metadata=msgspec.json.decode(row[1]))

    async def delete_conversation(self, tenant: str, conv_id: str) -> bool:
        return await self._delete("conversations", tenant, conv_id)

    async def add_conversation_items(self, tenant: str, conv_id: str, items: list[dict[str, Any]]) -> None:
        rows = [(tenant, conv_id, it["id"], _enc.encode(it)) for it in items]
        index = [(tenant, it["id"], conv_id, _enc.encode(it)) for it in items]

        def add() -> None:
            conn = self._conn()
            with _transaction(conn):
                conn.executemany(
                    "INSERT INTO conversation_items (tenant, conv_id, item_id, body) VALUES (?, ?, ?, ?)", rows
                )
                conn.executemany("INSERT OR REPLACE INTO items (tenant, id, owner, body) VALUES (?, ?, ?, ?)", index)

        await self._run(add)

    async def conversation_items(self, tenant: str, conv_id: str) -> list[dict[str, Any]]:
        rows = await self._fetchall("SELECT body FROM conversation_items WHERE tenant = ? AND conv_id = ? ORDER BY pos", (tenant, conv_id))
        return [msgspec.json.decode(row[0]) for row in rows]

    async def delete_conversation_item(self, tenant: str, conv_id: str, item_id: str) -> bool:
        def delete() -> bool:
            conn = self._conn()
            with _transaction(conn):
                cur = conn.execute(
                    "DELETE FROM conversation_items WHERE tenant = ? AND conv_id = ? AND item_id = ?",
                    (tenant, conv_id, item_id),
                )
                conn.execute("DELETE FROM items WHERE tenant = ? AND id = ? AND owner = ?", (tenant, item_id, conv_id))
            return cur.rowcount > 0

        return await self._run(delete)

    # -- leases ----------------------------------------------------------------------------

    async def lease_run(self, tenant: str, response_id: str, owner: str, expires_at: float) -> None:
        await self._execute(
            "INSERT OR REPLACE INTO leases (tenant, response_id, owner, expires_at) VALUES (?, ?, ?, ?)",
            (tenant, response_id, owner, expires_at),
        )

    async def renew_leases(self, owner: str, expires_at: float) -> None:
        await self._execute("UPDATE leases SET expires_at = ? WHERE owner = ?", (expires_at, owner))

    async def end_lease(self, tenant: str, response_id: str) -> None:
        await self._execute("DELETE FROM leases WHERE tenant = ? AND response_id = ?", (tenant, response_id))

    async def take_lapsed(self, now: float, owner: str, expires_at: float, limit: int = 100) -> list[RunLease]:
        def take() -> list[RunLease]:
            conn = self._conn()
            # the write lock is taken before the read: two processes never take the same lease
            with _transaction(conn):
                rows = conn.execute(
                    "SELECT tenant, response_id FROM leases WHERE expires_at < ? ORDER BY expires_at LIMIT ?",
                    (now, limit),
                ).fetchall()
                conn.executemany(
                    "UPDATE leases SET owner = ?, expires_at = ? WHERE tenant = ? AND response_id = ?",
                    [(owner, expires_at, tenant, rid) for tenant, rid in rows],
                )
            return [RunLease(tenant, rid, owner, expires_at) for tenant, rid in rows]

        return await self._run(take)

    # -- retention -----------------------------------------------------------------------

    async def sweep(self, now: int) -> int:
        ttl = self.retention.ttl
        if not ttl:
            return 0
        cutoff = now - ttl

        def sweep() -> int:
            conn = self._conn()
            with _transaction(conn):
                removed = 0
                for table in ("responses", "conversations"):
                    victims = conn.execute(
                        f"SELECT tenant, id FROM {table} WHERE created_at < ?", (cutoff,)  # noqa: S608
                    ).fetchall()
                    for tenant, oid in victims:
                        removed += self._delete_owned(conn, table, tenant, oid)
            return removed

        return await self._run(sweep)

    async def aclose(self) -> None:
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                conn.close()
            except sqlite3.Error:
                pass
