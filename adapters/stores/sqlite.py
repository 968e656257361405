"""SQLite store: one file, WAL mode, shared safely by several processes on one host.

Every database call runs in a worker thread (``trio.to_thread``) so the event loop never waits on
the disk; each call opens its own short transaction on a per-thread connection.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import msgspec
import trio

from engine.store import StoredResponse

SCHEMA_VERSION = 1
_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS responses (
        tenant TEXT NOT NULL,
        id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        body BLOB NOT NULL,
        PRIMARY KEY (tenant, id)
    )""",
]

_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder(StoredResponse)


class SqliteStore:
    def __init__(self, path: str) -> None:
        self.path = path
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._limiter = trio.CapacityLimiter(4)
        conn = self._conn()
        with conn:
            for stmt in _SCHEMA:
                conn.execute(stmt)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=True)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    async def _run(self, fn, *args):
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    async def put_response(self, stored: StoredResponse) -> None:
        def put() -> None:
            self._conn().execute(
                "INSERT OR REPLACE INTO responses (tenant, id, created_at, body) VALUES (?, ?, ?, ?)",
                (stored.tenant, stored.id, stored.created_at, _enc.encode(stored)),
            )

        await self._run(put)

    async def get_response(self, tenant: str, response_id: str) -> StoredResponse | None:
        def get():
            return self._conn().execute(
                "SELECT body FROM responses WHERE tenant = ? AND id = ?", (tenant, response_id)
            ).fetchone()

        row = await self._run(get)
        return _dec.decode(row[0]) if row else None

    async def delete_response(self, tenant: str, response_id: str) -> bool:
        def delete() -> bool:
            cur = self._conn().execute("DELETE FROM responses WHERE tenant = ? AND id = ?", (tenant, response_id))
            return cur.rowcount > 0

        return await self._run(delete)

    async def aclose(self) -> None:
        pass
