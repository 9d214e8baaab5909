"""The parents' handshake locks (crossfade.sync.children, issue 22): a batch with many parents
missing or changed holds a bounded number of locks. One advisory lock per parent exhausted
PostgreSQL's lock table in a 1M-row mapped load (sync retried ``out of shared memory`` forever);
and the handshake still makes a waiter wait for the writer of its parent."""

from __future__ import annotations

import threading
import time

import psycopg

from crossfade.sync import children

MANY = 20_000  # far more than the lock table holds (64 per connection by default)


def _advisory_locks(conn: psycopg.Connection) -> int:
    """Advisory lock objects this session holds (pg_locks shows one row per mode held: the lock
    table holds one entry per object)."""
    row = conn.execute(
        "SELECT count(DISTINCT (classid, objid, objsubid)) FROM pg_locks "
        "WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
    ).fetchone()
    return int(row[0]) if row else 0


def test_a_batch_of_many_parents_holds_a_bounded_number_of_locks(dsn: str) -> None:
    changed = children.ParentChanges()
    for i in range(MANY):
        changed.add("app.accounts", f"[{i}]")
    with psycopg.connect(dsn) as conn:
        children.wait_for_parents(conn, [("app.people", f'["p{i}"]') for i in range(MANY)])
        children.lock_parents(conn, changed)
        held = _advisory_locks(conn)
        conn.rollback()
    assert 0 < held <= children.PARENT_LOCKS


def test_a_waiter_waits_for_the_writer_of_its_parent(dsn: str) -> None:
    changed = children.ParentChanges()
    changed.add("app.accounts", "[7]")
    waited: list[float] = []
    with psycopg.connect(dsn) as writer:
        children.lock_parents(writer, changed)

        def wait() -> None:
            with psycopg.connect(dsn) as w:
                t0 = time.monotonic()
                children.wait_for_parent(w, "app.accounts", "[7]")
                waited.append(time.monotonic() - t0)
                w.rollback()

        t = threading.Thread(target=wait)
        t.start()
        time.sleep(0.5)
        assert not waited  # still waiting for the writer's commit
        writer.commit()
        t.join(10)
    assert waited and waited[0] >= 0.4
