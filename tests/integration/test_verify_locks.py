"""verify's last re-check round share-locks the rows that keep changing: it must never be the
reason an application transaction fails.

The deadlock it used to close (a CI run of the fallback pgbench drill, reproduced here 2 in 40
attempts against pgbench, with pgbench failing transactions too): verify locks the rows of table
A, an application transaction that already wrote table B waits for A, verify then waits for B.
PostgreSQL aborts one of the two. These tests build that interleaving on purpose, against the
embedded PostgreSQL (no broker needed)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from crossfade.catalog import read_shape
from crossfade.embedded.postgres import EmbeddedPostgres
from crossfade.verify.chunked import TableComparer
from crossfade.verify.run import Verifier

pytestmark = pytest.mark.integration


@pytest.fixture
def db(pg_server: EmbeddedPostgres) -> Iterator[str]:
    name = f"locks_{time.monotonic_ns()}"
    pg_server.create_database(name)
    dsn = pg_server.dsn(name)
    with psycopg.connect(dsn, autocommit=True) as c:
        for t in ("ta", "tb"):
            c.execute(f"CREATE TABLE {t} (id int PRIMARY KEY, v int NOT NULL)")
            c.execute(f"INSERT INTO {t} VALUES (1, 0)")
    yield dsn
    with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _verifier(dsn: str, lock_wait: float) -> tuple[Verifier, psycopg.Connection]:
    """A Verifier with just what its locked read uses: the comparers of the two tables."""
    conn = psycopg.connect(dsn, autocommit=True)
    v = Verifier.__new__(Verifier)
    v.lock_wait = lock_wait
    v.comparers = {}
    for t in ("public.ta", "public.tb"):
        shape = read_shape(conn, t)
        assert shape is not None
        v.comparers[t] = TableComparer(conn, conn, shape)
    return v, conn


def _application(
    dsn: str,
    first: str,
    then: str,
    pause: float,
    errors: list[BaseException],
    started: threading.Event,
) -> None:
    """Writes ``first``, pauses (verify locks ``then`` meanwhile), writes ``then``, commits."""
    try:
        with psycopg.connect(dsn) as c:
            c.execute(f"UPDATE {first} SET v = v + 1 WHERE id = 1")
            started.set()
            time.sleep(pause)
            c.execute(f"UPDATE {then} SET v = v + 1 WHERE id = 1")
            c.commit()
    except BaseException as exc:  # noqa: BLE001 - reported by the test
        errors.append(exc)
        started.set()


def test_locked_read_never_deadlocks_an_application_transaction(db: str) -> None:
    v, conn = _verifier(db, lock_wait=10)
    errors: list[BaseException] = []
    started = threading.Event()
    # the application holds tb and, 0.5 s later, wants ta; verify reads ta first, then tb
    app = threading.Thread(target=_application, args=(db, "tb", "ta", 0.5, errors, started))
    app.start()
    assert started.wait(10)
    hold = psycopg.connect(db)
    try:
        t0 = time.monotonic()
        s1 = v._read_held(
            hold, {"public.ta": {("1",): "different"}, "public.tb": {("1",): "different"}}
        )
        took = time.monotonic() - t0
        # the rows are held: an application write to them now waits for verify's transaction
        with psycopg.connect(db, autocommit=True) as c:
            c.execute("SET lock_timeout = '200ms'")
            with pytest.raises(psycopg.errors.LockNotAvailable):
                c.execute("UPDATE ta SET v = v + 1 WHERE id = 1")
    finally:
        hold.rollback()
        hold.close()
    app.join(10)
    assert not errors, f"the application's transaction failed: {errors!r}"
    assert set(s1) == {"public.ta", "public.tb"} and all(len(h) == 1 for h in s1.values()), s1
    # verify read the rows after the application committed (it could not hold tb before)
    assert conn.execute("SELECT (SELECT v FROM ta) + (SELECT v FROM tb)").fetchone() == (2,)
    assert took >= 0.4, f"verify held tb's row before the application released it ({took:.2f} s)"
    conn.close()


def test_locked_read_gives_up_after_lock_wait_without_blocking(db: str) -> None:
    v, conn = _verifier(db, lock_wait=1.0)
    writer = psycopg.connect(db)
    writer.execute("UPDATE tb SET v = v + 1 WHERE id = 1")  # held for the whole attempt
    hold = psycopg.connect(db)
    try:
        t0 = time.monotonic()
        with pytest.raises(psycopg.errors.LockNotAvailable):
            v._read_held(
                hold, {"public.ta": {("1",): "different"}, "public.tb": {("1",): "different"}}
            )
        took = time.monotonic() - t0
        # and it held nothing while it retried: ta is free for the application
        writer.execute("UPDATE ta SET v = v + 1 WHERE id = 1")
        writer.commit()
    finally:
        hold.rollback()
        hold.close()
        writer.close()
    assert 1.0 <= took < 3.0, took
    conn.close()
