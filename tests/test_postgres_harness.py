"""Proves the PostgreSQL test service really runs (fixtures in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from urllib.parse import urlsplit

import psycopg
import pytest

pytestmark = pytest.mark.postgres


def _db_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def _database_exists(pg_url: str, name: str) -> bool:
    with psycopg.connect(pg_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()
    return row == (1,)


def test_round_trip_survives_reconnect(pg_db: str) -> None:
    with psycopg.connect(pg_db) as conn:
        conn.execute("CREATE TABLE t (id integer PRIMARY KEY, body text NOT NULL)")
        conn.execute("INSERT INTO t VALUES (%s, %s), (%s, %s)", (1, "one", 2, "two"))
    # A new connection sees the committed rows.
    with psycopg.connect(pg_db) as conn:
        rows = conn.execute("SELECT id, body FROM t ORDER BY id").fetchall()
    assert rows == [(1, "one"), (2, "two")]


def test_each_test_gets_its_own_empty_database(pg_db: str, pg_url: str) -> None:
    assert _db_name(pg_db) != _db_name(pg_url)
    with psycopg.connect(pg_db) as conn:
        row = conn.execute(
            "SELECT current_database(),"
            " (SELECT count(*) FROM pg_tables WHERE schemaname = 'public')"
        ).fetchone()
    assert row == (_db_name(pg_db), 0)


def test_new_database_is_dropped_on_exit_even_while_connected(
    pg_url: str, pg_new_database: Callable[[], AbstractContextManager[str]]
) -> None:
    with pg_new_database() as url:
        name = _db_name(url)
        assert _database_exists(pg_url, name)
        lingering = psycopg.connect(url)  # DROP ... WITH (FORCE) must not wait for it
    try:
        assert not _database_exists(pg_url, name)
    finally:
        lingering.close()


def test_server_syncs_to_disk(pg_url: str) -> None:
    # Durability tests are meaningless against a server running with fsync=off.
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SHOW fsync").fetchone() == ("on",)
