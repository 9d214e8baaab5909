"""The WAL position the mapped re-check compares target rows with (verify/wal_bound.py
``wal_position``): every change below it must be seen by the snapshot taken right after, so it
waits for the transactions that were writing when it read the position — and gives up, saying no
change counts as seen (0), when they stay open."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from crossfade.embedded.postgres import EmbeddedPostgres
from crossfade.verify.wal_bound import wal_position

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def dsn(pg_server: EmbeddedPostgres) -> Iterator[str]:
    name = f"walpos_{time.monotonic_ns()}"
    pg_server.create_database(name)
    with psycopg.connect(pg_server.dsn(name), autocommit=True) as c:
        c.execute("CREATE TABLE t (id int PRIMARY KEY)")
    yield pg_server.dsn(name)
    with psycopg.connect(pg_server.dsn(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_waits_for_a_writing_transaction_then_its_changes_are_below_and_seen(dsn: str) -> None:
    writer = psycopg.connect(dsn)
    writer.execute("INSERT INTO t VALUES (1)")  # open, with an xid and a WAL record
    with psycopg.connect(dsn) as src:
        threading.Timer(0.6, writer.commit).start()
        t0 = time.monotonic()
        lsn = wal_position(src, wait_s=10)
        waited = time.monotonic() - t0
        # the snapshot taken next sees the insert whose record is below the position
        assert src.execute("SELECT count(*) FROM t WHERE id = 1").fetchone() == (1,)
        src.rollback()
    writer.close()
    assert lsn > 0 and waited >= 0.5, (lsn, waited)


def test_a_transaction_left_open_means_no_change_counts_as_seen(dsn: str) -> None:
    writer = psycopg.connect(dsn)
    writer.execute("INSERT INTO t VALUES (2)")
    try:
        with psycopg.connect(dsn) as src:
            t0 = time.monotonic()
            assert wal_position(src, wait_s=0.3) == 0
            assert 0.3 <= time.monotonic() - t0 < 5
    finally:
        writer.rollback()
        writer.close()


def test_no_open_writer_returns_the_position_at_once(dsn: str) -> None:
    with psycopg.connect(dsn) as src:
        t0 = time.monotonic()
        lsn = wal_position(src, wait_s=10)
        assert lsn > 0 and time.monotonic() - t0 < 2
