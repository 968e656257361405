"""PostgreSQL statements run on the trio thread: no worker thread, no pool, no cursor.

The PostgreSQL store's hot statements (the writes and reads a stream waits for) are a few prepared
statements with a handful of parameters each. Run through psycopg's sync API they cost two
thread hops, a pool checkout and psycopg's Python layers around the round trip: together about
as much as the round trip itself. Here they go straight through libpq (``psycopg.pq``, psycopg's
public libpq wrapper) on connections in nonblocking mode that only the trio thread uses,
waiting on the socket with ``trio.lowlevel.wait_readable``.

- ``Statement``: SQL with ``%(name)s`` placeholders and a PostgreSQL type per name; it is
  prepared once per connection (when the connection opens) and run by name, parameters in
  binary (text, bytea, bigint, double, boolean, and one-dimensional arrays of text, bytea and
  integer), results in binary.
- ``Connections``: at most ``size`` connections, opened as needed (in the background: a connect
  is rare and takes long) and reused last-in first-out (the most recently used backend is the
  one most likely still warm in the server's caches).
- A server-side error raises psycopg's class for its SQLSTATE (``psycopg.errors.lookup``), as the
  sync API would; the connection stays in use. A lost connection raises
  ``psycopg.OperationalError``. A call that ends any other way mid-protocol (cancelled, say)
  leaves its connection in an unknown state: it is closed, never reused.
"""

from __future__ import annotations

import re
import struct
from collections import deque
from typing import Any, Callable, Iterable

import psycopg
import trio
from psycopg import errors as pg_errors
from psycopg import pq

# type oids (pg_type)
BOOL, BYTEA, INT8, INT4, TEXT, FLOAT8 = 16, 17, 20, 23, 25, 701
INT4_ARRAY, TEXT_ARRAY, BYTEA_ARRAY = 1007, 1009, 1001

_int8, _int4, _float8 = struct.Struct(">q"), struct.Struct(">i"), struct.Struct(">d")
_array_head = struct.Struct(">iiiii")  # dimensions, has nulls, element oid, length, lower bound
_empty_array = struct.Struct(">iii")  # no dimensions, no nulls, element oid
_BINARY = pq.Format.BINARY


def _text(v: str) -> bytes:
    return v.encode()


def _array(oid: int, encode: Callable[[Any], bytes]) -> Callable[[Iterable[Any]], bytes]:
    """The binary form of a one-dimensional array without nulls: a header, then each element
    as its length and its bytes."""

    def dump(values: Iterable[Any]) -> bytes:
        parts = [encode(v) for v in values]
        if not parts:
            return _empty_array.pack(0, 0, oid)
        out = [_array_head.pack(1, 0, oid, len(parts), 1)]
        for p in parts:
            out.append(_int4.pack(len(p)))
            out.append(p)
        return b"".join(out)

    return dump


_DUMP: dict[int, Callable[[Any], bytes]] = {
    BOOL: lambda v: b"\x01" if v else b"\x00",
    BYTEA: bytes,
    INT8: _int8.pack,
    INT4: _int4.pack,
    TEXT: _text,
    FLOAT8: _float8.pack,
    INT4_ARRAY: _array(INT4, _int4.pack),
    TEXT_ARRAY: _array(TEXT, _text),
    BYTEA_ARRAY: _array(BYTEA, bytes),
}

_LOAD: dict[int, Callable[[bytes], Any]] = {
    BOOL: lambda b: b == b"\x01",
    BYTEA: bytes,
    INT8: lambda b: _int8.unpack(b)[0],
    INT4: lambda b: _int4.unpack(b)[0],
    TEXT: bytes.decode,
    FLOAT8: lambda b: _float8.unpack(b)[0],
}

_PLACEHOLDER = re.compile(r"%\((\w+)\)[sb]")


class Statement:
    """A named prepared statement: ``sql`` with ``%(name)s`` (or ``%(name)b``) placeholders,
    ``types`` the PostgreSQL type of each name, in the order ``run`` takes their values.

    ``cancellable``: whether a cancelled call stops waiting (closing its connection). Only for
    reads: closing a connection does not stop its statement in the server, so a write given up on
    could still land after a later one (a progress write after the final one, say). A write runs
    to its end, as a call in a worker thread does, and the cancellation takes effect after."""

    def __init__(self, name: str, sql: str, *, cancellable: bool = False, **types: int) -> None:
        order = list(types)
        self.cancellable = cancellable
        self.name = name.encode()
        self.sql = _PLACEHOLDER.sub(lambda m: f"${order.index(m.group(1)) + 1}", sql).encode()
        self.types = list(types.values())
        self.dumps = [_DUMP[t] for t in self.types]
        self.formats = [_BINARY] * len(order)

    def values(self, args: tuple) -> list[bytes | None]:
        return [None if a is None else dump(a) for dump, a in zip(self.dumps, args, strict=True)]


def _error(result: pq.abc.PGresult) -> psycopg.Error:
    """The psycopg error the sync API raises for this error result."""
    state = (result.error_field(pq.DiagnosticField.SQLSTATE) or b"").decode()
    try:
        cls = pg_errors.lookup(state)
    except KeyError:
        cls = psycopg.OperationalError if state.startswith("08") else psycopg.DatabaseError
    message = result.error_field(pq.DiagnosticField.MESSAGE_PRIMARY) or result.error_message
    return cls(message.decode("utf-8", "replace"))


def _rows(result: pq.abc.PGresult) -> list[tuple]:
    n, width = result.ntuples, result.nfields
    if not n:
        return []
    loads = [_LOAD.get(result.ftype(c), bytes) for c in range(width)]
    get = result.get_value
    rows = []
    for r in range(n):
        row = []
        for c in range(width):
            v = get(r, c)
            row.append(None if v is None else loads[c](v))
        rows.append(tuple(row))
    return rows


class Connection:
    """One connection the trio thread owns. Between calls it is idle (no transaction, nothing
    unread); a call that does not end cleanly closes it."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self._conn = conn  # owns the libpq connection (and its notice handler)
        self.pg = conn.pgconn
        self.pg.nonblocking = 1
        self.fd = self.pg.socket
        self.lost = False  # closed after the server went away (rather than by a cancelled call)

    @property
    def broken(self) -> bool:
        """Closed, or lost (the server went away): what psycopg's ``Connection.broken`` says."""
        return self._conn.closed or self.pg.status == pq.ConnStatus.BAD

    @property
    def usable(self) -> bool:
        """Fit for the next call: open, and idle outside a transaction."""
        return not self.broken and self.pg.transaction_status == pq.TransactionStatus.IDLE

    def close(self) -> None:
        if not self._conn.closed:
            self.lost = self.pg.status == pq.ConnStatus.BAD
            try:
                trio.lowlevel.notify_closing(self.fd)  # (no task waits on it: it has one user)
            except RuntimeError:
                pass  # outside a trio run: nothing to tell
            self._conn.close()

    async def run(self, stmt: Statement, args: tuple) -> list[tuple]:
        """``stmt`` with ``args``: its rows. Raises as psycopg would; closes the connection if
        it ends before the whole reply was read."""
        values = stmt.values(args)  # (a value that does not fit fails here, the connection intact)
        done = False
        try:
            with trio.CancelScope(shield=not stmt.cancellable):
                rows, error = await self._exchange(stmt, values)
            done = True
        finally:
            if not done:
                self.close()
        if error is not None:
            raise error
        return rows

    async def _exchange(self, stmt: Statement, values: list) -> tuple[list[tuple], psycopg.Error | None]:
        """Send the statement, read its whole reply: the rows, or the server's error."""
        pg = self.pg
        pg.send_query_prepared(stmt.name, values, stmt.formats, _BINARY)
        while pg.flush():  # 1: more to send (a large parameter) than the socket took
            await trio.lowlevel.wait_writable(self.fd)
        rows: list[tuple] = []
        error: psycopg.Error | None = None
        while True:
            while pg.is_busy():
                await trio.lowlevel.wait_readable(self.fd)
                pg.consume_input()
            result = pg.get_result()
            if result is None:  # the reply's end
                return rows, error
            if result.status == pq.ExecStatus.TUPLES_OK:
                rows = _rows(result)
            elif result.status == pq.ExecStatus.FATAL_ERROR:
                error = error or _error(result)
            elif result.status != pq.ExecStatus.COMMAND_OK:
                error = error or psycopg.InterfaceError(f"unexpected result status {result.status!r}")


class _Waiter:
    """A call waiting for a connection: handed one (or the reason there is none), then woken."""

    __slots__ = ("woken", "conn", "error")

    def __init__(self) -> None:
        self.woken = trio.Event()
        self.conn: Connection | None = None
        self.error: Exception | None = None


class Connections:
    """At most ``size`` trio-owned connections to ``dsn``, each with ``statements`` prepared.

    A call that finds none idle waits in line (first come, first served: a connection coming
    back goes to the call that has waited longest), while one more opens in the background (a
    system task, the connect in a worker thread) if there is room: a connect takes far longer
    than a statement, so no call waits for one when another connection frees first (as with
    psycopg_pool's ``getconn``). When a connect fails and no connection is left to come back,
    the waiting calls raise ``psycopg.OperationalError``."""

    def __init__(self, dsn: str, connect_kwargs: dict[str, Any], statements: Iterable[Statement], size: int) -> None:
        self.dsn = dsn
        # binary text travels in the client encoding: make it UTF-8 whatever the server's
        self.kwargs = {**connect_kwargs, "autocommit": True, "client_encoding": "UTF8"}
        self.statements = list(statements)
        self.size = size
        self._idle: list[Connection] = []
        self._count = 0  # open (idle or in use) or opening
        self._waiting: deque[_Waiter] = deque()
        self._closed = False

    def connect(self) -> Connection:
        """A new connection with the statements prepared (blocking: at start, or in a thread)."""
        conn = psycopg.connect(self.dsn, **self.kwargs)
        try:
            for s in self.statements:
                result = conn.pgconn.prepare(s.name, s.sql, s.types)
                if result.status != pq.ExecStatus.COMMAND_OK:
                    raise _error(result)
        except BaseException:
            conn.close()
            raise
        return Connection(conn)

    def keep(self, conn: Connection) -> None:
        """A connection opened by the caller (at start), idle now."""
        self._count += 1
        self._idle.append(conn)

    async def take(self) -> Connection:
        """An idle connection, for one call or a few; hand it back with ``give``."""
        if self._idle:
            return self._idle.pop()  # no trip round the event loop
        waiter = _Waiter()
        self._waiting.append(waiter)
        self._grow()
        try:
            await waiter.woken.wait()
        except BaseException:
            if waiter.conn is not None:
                self.give(waiter.conn)  # handed one as it was cancelled: to the next in line
            elif waiter in self._waiting:
                self._waiting.remove(waiter)
            raise
        if waiter.conn is None:
            raise psycopg.OperationalError(f"cannot connect: {waiter.error}") from waiter.error
        return waiter.conn

    def give(self, conn: Connection) -> None:
        """To the call that has waited longest, or back to the idle ones, if it is fit for the
        next call; closed if not, and the other idle ones with it if it was lost (the server
        restarted? they are likely dead too)."""
        if conn.usable and not self._closed:
            if self._waiting:
                waiter = self._waiting.popleft()
                waiter.conn = conn
                waiter.woken.set()
            else:
                self._idle.append(conn)
            return
        self._count -= 1
        conn.close()
        if conn.lost:
            self.drop_idle()
        if self._waiting:
            self._grow()  # the calls waiting for it would wait for nothing

    def _grow(self) -> None:
        if self._count < self.size and not self._closed:
            self._count += 1
            trio.lowlevel.spawn_system_task(self._open, name="respline-pg-connect")

    async def _open(self) -> None:
        try:
            conn = await trio.to_thread.run_sync(self.connect)
        except Exception as exc:  # noqa: BLE001 - given to the waiting calls
            self._count -= 1
            if not self._count:  # none will come back to them
                waiting, self._waiting = self._waiting, deque()
                for waiter in waiting:
                    waiter.error = exc
                    waiter.woken.set()
            return
        self.give(conn)

    def drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        self._count -= len(idle)
        for conn in idle:
            conn.close()

    def close(self) -> None:
        """Close the idle connections now, those in use when they come back."""
        self._closed = True
        self.drop_idle()
