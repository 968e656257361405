"""PostgreSQL for tests: the server in RESPLINE_TEST_PG_DSN (default: a local one, trust auth).

Each test gets a schema of its own (``pg_schema``), dropped at the end, and reaches it through
``options=-csearch_path=...`` in its DSN, so runs never see each other's rows. Where no server
answers (or psycopg is not installed) those tests skip and say why.
"""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def base_dsn() -> str:
    return os.environ.get("RESPLINE_TEST_PG_DSN") or DEFAULT_DSN


@lru_cache(maxsize=1)
def unavailable() -> str | None:
    """Why PostgreSQL tests cannot run here, or None."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'respline[postgres]')"
    try:
        with psycopg.connect(base_dsn(), connect_timeout=5, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        where = "RESPLINE_TEST_PG_DSN" if os.environ.get("RESPLINE_TEST_PG_DSN") else f"{DEFAULT_DSN} (set RESPLINE_TEST_PG_DSN)"
        return f"no PostgreSQL at {where}: {first}"
    return None


def require() -> None:
    reason = unavailable()
    if reason:
        pytest.skip(reason)


def admin():
    import psycopg

    return psycopg.connect(base_dsn(), autocommit=True, connect_timeout=5)


class Schema:
    """A fresh schema: ``dsn`` (key=value) and ``url`` (postgresql://, for ``--store``) both
    put respline's tables in it."""

    def __init__(self, name: str) -> None:
        from psycopg.conninfo import make_conninfo

        self.name = name
        options = f"-csearch_path={name}"
        self.dsn = make_conninfo(base_dsn(), options=options)
        base = base_dsn()
        if base.startswith(("postgresql://", "postgres://")):
            parts = urlsplit(base)
            query = "&".join(q for q in [parts.query, "options=" + quote(options, safe="")] if q)
            self.url = urlunsplit(parts._replace(query=query))
        else:
            self.url = None  # a key=value DSN has no URL form: pass it in a config file instead

    def count(self, table: str) -> int:
        with admin() as conn:
            return conn.execute(f"SELECT count(*) FROM {self.name}.{table}").fetchone()[0]

    def drop(self) -> None:
        with admin() as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {self.name} CASCADE")


def new_schema() -> Schema:
    require()
    schema = Schema("rt_" + secrets.token_hex(6))
    with admin() as conn:
        conn.execute(f"CREATE SCHEMA {schema.name}")
    return schema


@pytest.fixture
def pg_schema():
    schema = new_schema()
    yield schema
    schema.drop()
