"""A sync worker frozen inside its batch transaction (SIGSTOP, GC pause, hung host) must not hold
the offset row locks its successor's claim waits for: its target session ends after
``sync.idle_in_transaction_timeout_s`` (the successor's claim then goes through), the frozen
worker's error when it wakes is transient (it reconnects and retries), and its retried batch is
refused as stale. While the claim waits, the holder is named in a WARNING (sync/lock_wait.py)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from crossfade.config import Settings
from crossfade.db import is_transient
from crossfade.errors import StaleAssignment, classify_db_error
from crossfade.sync.commit import lock_owned
from crossfade.sync.worker import SyncWorker
from crossfade.target.store import claim_partitions, ensure_schema, store_next_offsets

BK = "itx_crossfade"
TP = ("itx.public.t", 0)
EPOCH = "e1"
TIMEOUT_S = 2.0


@pytest.fixture
def db(dsn: str) -> Iterator[str]:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(f"DROP SCHEMA IF EXISTS {BK} CASCADE")
        ensure_schema(c, BK)
    yield dsn


def _worker(dsn: str, idle_s: float = TIMEOUT_S, warn_s: float = 0.5) -> SyncWorker:
    w = SyncWorker(
        Settings(
            source={"dsn": "postgresql://u@127.0.0.1:1/legacy"},
            target={"dsn": dsn},
            kafka={"bootstrap_servers": "127.0.0.1:1"},
            tables=["public.t"],
            sync={
                "bookkeeping_schema": BK,
                "tag_origin": False,
                "idle_in_transaction_timeout_s": idle_s,
                "claim_wait_warn_s": warn_s,
            },
        )
    )
    w.tables.appliers["public.t"] = object()  # connected before: a refused connect is transient
    return w


def _claim(w: SyncWorker) -> str:
    token, _ = w._claim([TP], EPOCH)
    w.group.owner[TP] = token
    return token


def _close(*workers: SyncWorker) -> None:
    for w in workers:
        if w.conn is not None:
            w.conn.close()


def test_target_sessions_carry_the_timeout(db: str) -> None:
    on, off = _worker(db, idle_s=2.5), _worker(db, idle_s=0)
    try:
        assert on._db().execute("SHOW idle_in_transaction_session_timeout").fetchone() == (
            "2500ms",
        )
        # 0 leaves the server's setting alone (off on the test server)
        assert off._db().execute("SHOW idle_in_transaction_session_timeout").fetchone() == ("0",)
    finally:
        _close(on, off)


def test_frozen_batch_is_ended_the_claim_goes_through_and_the_wakeup_is_refused(
    db: str, caplog: pytest.LogCaptureFixture
) -> None:
    old, new = _worker(db), _worker(db)
    _claim(old)
    caplog.set_level(logging.INFO)
    claimed: dict[str, Any] = {}

    def successor() -> None:
        t0 = time.monotonic()
        try:
            claimed["token"] = _claim(new)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertions below
            claimed["error"] = exc
        claimed["s"] = time.monotonic() - t0

    thread = threading.Thread(target=successor)
    errors: list[BaseException] = []
    attempts: list[int] = []

    def batch() -> None:
        conn = old._db()
        attempts.append(conn.info.backend_pid)
        with conn.transaction():
            lock_owned(conn, BK, old.settings.sync.group_id, old.owner, [TP])
            if len(attempts) == 1:  # frozen between two statements of its batch
                thread.start()
                thread.join(30)
            try:
                store_next_offsets(conn, BK, old.settings.sync.group_id, {TP: 99})
            except psycopg.Error as exc:
                errors.append(exc)
                raise

    try:
        with pytest.raises(StaleAssignment, match=r"owned by another sync worker"):
            old._with_db_retry(batch)
        assert "error" not in claimed, claimed
        # the successor waited for the frozen session's end, not forever
        assert TIMEOUT_S - 0.5 <= claimed["s"] < TIMEOUT_S + 10, claimed
        assert len(errors) == 1 and len(attempts) == 2 and attempts[0] != attempts[1]
        # what the frozen worker gets when it wakes is a passing failure: reconnect and retry
        assert classify_db_error(errors[0]) == "transient", repr(errors[0])
        assert is_transient(errors[0])
        with new._db().transaction():  # the successor owns it and its stored offset is intact
            assert lock_owned(new.conn, BK, new.settings.sync.group_id, new.owner, [TP]) == {TP: 0}  # type: ignore[arg-type]
        waits = [
            r.getMessage()
            for r in caplog.records
            if r.name == "crossfade.sync.lock_wait" and r.levelno == logging.WARNING
        ]
        # named while it waited, with the holder: pid, state, its last statement
        assert waits, caplog.text
        assert all(
            f"the claim of {TP[0]}[{TP[1]}] has waited" in m and f"pid {attempts[0]} " in m
            for m in waits
        ), waits
        assert "(idle in transaction, " in waits[0] and ".offsets o" in waits[0], waits[0]
        assert "sync.idle_in_transaction_timeout_s (2 s)" in waits[0], waits[0]
        assert len(waits) >= 2, waits  # repeated while it waits
        assert new.lock_wait.current is None  # the stall watch no longer names it
        assert any("went through after" in r.getMessage() for r in caplog.records)
    finally:
        _close(old, new)


def test_without_the_timeout_the_claim_keeps_waiting(db: str) -> None:
    """The control: with the setting at 0 the frozen session keeps its lock (what CI saw)."""
    old, new = _worker(db, idle_s=0), _worker(db, idle_s=0)
    try:
        _claim(old)
        conn = old._db()
        with conn.transaction():
            lock_owned(conn, BK, old.settings.sync.group_id, old.owner, [TP])
            time.sleep(TIMEOUT_S + 0.5)  # past the timeout the other tests use
            waiting = new._db()
            waiting.execute("SET lock_timeout = '1s'")
            with pytest.raises(psycopg.errors.LockNotAvailable):
                claim_partitions(waiting, BK, new.settings.sync.group_id, [TP], EPOCH, "new:1")
    finally:
        _close(old, new)


def test_a_holder_the_server_does_not_end_is_ended_by_the_waiting_claim(
    db: str, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL arms idle_in_transaction_session_timeout when it reports itself ready for the
    next statement; a flush request after that (psycopg sends one after the Sync ending a
    pipeline, as every applier's statements do) disarms it. The frozen session is then ended by
    the waiting claim's watch, a moment past the timeout."""
    old, new = _worker(db), _worker(db)
    try:
        _claim(old)
        caplog.set_level(logging.WARNING)
        conn = old._db()
        conn.execute("BEGIN")
        lock_owned(conn, BK, old.settings.sync.group_id, old.owner, [TP])
        with conn.cursor() as cur, conn.pipeline():  # how an applier's statements end
            for _ in range(3):
                cur.execute(f"SELECT count(*) FROM {BK}.offsets")
        # psycopg's pipeline exit sends a flush request after its Sync when results are still on
        # their way (most times, not always): send one here so the server's timer is disarmed
        conn.pgconn.send_flush_request()
        conn.pgconn.flush()
        t0 = time.monotonic()
        _claim(new)
        took = time.monotonic() - t0
        # not the server at TIMEOUT_S: the watch, after its grace, at its next look
        assert TIMEOUT_S + 2 <= took < TIMEOUT_S + 2 + 0.5 + 5, took
        ended = [r.getMessage() for r in caplog.records if "ended session" in r.getMessage()]
        assert len(ended) == 1 and f"ended session {conn.info.backend_pid}," in ended[0], ended
        with pytest.raises(psycopg.Error) as woke:
            conn.execute("SELECT 1")
        assert classify_db_error(woke.value) == "transient", repr(woke.value)
        old.conn = None
        with pytest.raises(StaleAssignment):
            old._with_db_retry(
                lambda: lock_owned(old._db(), BK, old.settings.sync.group_id, old.owner, [TP])
            )
    finally:
        _close(old, new)
