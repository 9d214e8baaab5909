"""When a batch takes its parents' locks (crossfade.sync.children, issue 22): only in
``MappedTables.follow_parents``, just before it reads their children, not from the batch's first
write. Two workers took turns for whole batches when a load's 5,000 new parents locked nearly
every bucket before the ledger and target writes. The handshake still holds: a child that looked
for its parent while the parent's batch was in flight ends up mapped either way."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from crossfade.config.mapping import MappingConfig
from crossfade.events.decode import POSITION_HEADER
from crossfade.events.model import ChangeEvent
from crossfade.mapping.schema_check import load_mapper
from crossfade.sync import children
from crossfade.sync.sinks import Tx
from crossfade.sync.sinks.mapped import MappedTables
from crossfade.sync.sinks.mapped_source import build_mapped
from crossfade.target.apply import event_key_id
from crossfade.target.store.ledger import Origin

BK = "lp_bk"
ACCOUNTS, CONTACTS = "lp_src.accounts", "lp_src.contacts"
MAPPING = {
    "tables": {
        ACCOUNTS: {
            "filters": [{"name": "inactive", "when": [{"column": "active", "eq": False}]}],
            "targets": [{"table": "lp_tgt.accounts", "columns": {"legacy_id": "id"}}],
        },
        CONTACTS: {
            "targets": [
                {
                    "table": "lp_tgt.contacts",
                    "columns": {"legacy_id": "id", "account_id": "account_id", "boss": "boss"},
                    "rules": {
                        "account_id": {"references": "lp_tgt.accounts.legacy_id"},
                        "boss": {"references": "lp_tgt.contacts.legacy_id"},
                    },
                }
            ]
        },
    }
}
DDL = """
DROP SCHEMA IF EXISTS lp_src CASCADE; DROP SCHEMA IF EXISTS lp_tgt CASCADE;
CREATE SCHEMA lp_src; CREATE SCHEMA lp_tgt;
CREATE TABLE lp_src.accounts (id int PRIMARY KEY, active bool);
CREATE TABLE lp_src.contacts (id int PRIMARY KEY, account_id int, boss int);
CREATE TABLE lp_tgt.accounts (legacy_id int PRIMARY KEY);
CREATE TABLE lp_tgt.contacts (legacy_id int PRIMARY KEY, account_id int, boss int);
"""


class _JsonDecoder:
    """Decodes the JSON the test keeps as an event's origin (the ledger's copy of a child)."""

    def decode(self, key: bytes, value: bytes, table: str, pos: str | None = None) -> ChangeEvent:
        return ChangeEvent(table, "r", json.loads(key), json.loads(value), 0, 0, int(pos or 0))


@pytest.fixture
def workers(fresh_bookkeeping: Callable[..., str]) -> Iterator[Callable[[], tuple[Any, Tx]]]:
    """``start()``: a worker's (mapped tables, batch transaction) on a connection of its own."""
    dsn = fresh_bookkeeping(BK)
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(DDL)
        mapper, report = load_mapper(
            MappingConfig.model_validate(MAPPING), [ACCOUNTS, CONTACTS], c, c
        )
        report.raise_for_errors()
        built = build_mapped(mapper, report, c, BK)
    conns: list[psycopg.Connection] = []

    def start() -> tuple[Any, Tx]:
        conn = psycopg.connect(dsn)
        conn.execute("SET lock_timeout = '5s'")  # the old order deadlocks these tests: fail
        conns.append(conn)
        mapped = MappedTables(*built, [ACCOUNTS, CONTACTS], BK)
        mapped.decoder = _JsonDecoder()  # type: ignore[assignment]
        tx = Tx(conn)
        mapped.begin(tx)
        return mapped, tx

    yield start
    for conn in conns:
        conn.close()
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("DROP SCHEMA lp_src CASCADE; DROP SCHEMA lp_tgt CASCADE")


def _process(mapped: Any, tx: Tx, table: str, rows: list[dict[str, Any]], pos: int) -> None:
    events = []
    if table == CONTACTS:
        rows = [{"account_id": None, "boss": None, **r} for r in rows]
    else:
        rows = [{"active": True, **r} for r in rows]
    for i, row in enumerate(rows):
        e = ChangeEvent(table, "r", {"id": row["id"]}, row, 0, 0, pos + i)
        k, v = json.dumps(e.key).encode(), json.dumps(row).encode()
        o = Origin(table, 0, pos + i, k, v, {POSITION_HEADER: str(pos + i)})
        tx.origins[(table, event_key_id(e), e.position)] = o
        events.append(e)
    mapped.process(tx, mapped.mapped[table], events)


def _blocked(dsn_conn: psycopg.Connection, value: int, table: str = "lp_tgt.accounts") -> bool:
    """Does waiting for parent ``value`` (another worker's view) block? Never waits long."""
    dsn_conn.execute("SET lock_timeout = '200ms'")
    try:
        children.wait_for_parent(dsn_conn, table, json.dumps([value]))
    except psycopg.errors.LockNotAvailable:
        return True
    finally:
        dsn_conn.rollback()
    return False


def _outcome(conn: psycopg.Connection, entry: int) -> str | None:
    row = conn.execute(
        f"SELECT outcome FROM {BK}.ledger WHERE source_table = %s AND entry = %s",
        (CONTACTS, json.dumps([entry])),
    ).fetchone()
    return row[0] if row else None


def test_a_batch_locks_its_new_parents_only_when_it_follows_them(workers: Any) -> None:
    mapped, tx = workers()
    _, other = workers()
    _process(mapped, tx, ACCOUNTS, [{"id": i} for i in range(1, 4)], 100)
    assert not _blocked(other.conn, 2)  # written, not yet followed: nobody waits for it
    mapped.follow_parents(tx)
    assert _blocked(other.conn, 2)  # from here to the commit, a waiter waits
    tx.conn.commit()
    assert not _blocked(other.conn, 2)


def test_a_child_that_missed_its_parent_in_flight_is_mapped_by_the_parents_batch(
    workers: Any,
) -> None:
    parent, ptx = workers()
    child, ctx = workers()
    _process(parent, ptx, ACCOUNTS, [{"id": 1}], 100)
    # the child looks while the parent's batch is in flight: shared lock taken, parent not seen
    _process(child, ctx, CONTACTS, [{"id": 10, "account_id": 1}], 200)
    assert _outcome(ctx.conn, 10) == "deferred"
    followed: list[int] = []
    t = threading.Thread(target=lambda: followed.append(parent.follow_parents(ptx)))
    t.start()
    time.sleep(0.5)
    assert not followed  # the parent's batch waits for the child's commit...
    ctx.conn.commit()
    t.join(10)
    assert followed == [1]  # ...then finds the child among the parent's children
    ptx.conn.commit()
    assert _outcome(ctx.conn, 10) == "mapped"
    assert ctx.conn.execute("SELECT account_id FROM lp_tgt.contacts").fetchall() == [(1,)]


def test_a_child_that_looks_after_the_parent_is_followed_waits_and_finds_it(
    workers: Any,
) -> None:
    parent, ptx = workers()
    child, ctx = workers()
    _process(parent, ptx, ACCOUNTS, [{"id": 1}], 100)
    assert parent.follow_parents(ptx) == 0  # no child yet
    t = threading.Thread(
        target=lambda: _process(child, ctx, CONTACTS, [{"id": 10, "account_id": 1}], 200)
    )
    t.start()
    time.sleep(0.5)
    assert t.is_alive()  # waits for the parent's batch
    ptx.conn.commit()
    t.join(10)
    ctx.conn.commit()
    assert _outcome(ctx.conn, 10) == "mapped"


def test_parents_left_changing_after_the_last_round_stay_locked(workers: Any) -> None:
    """A chain deeper than follow_parents' rounds (a self-reference): the last round's new
    parents are not followed, but still locked, so a child looking for one waits and finds it."""
    mapped, tx = workers()
    _, other = workers()
    _process(mapped, tx, CONTACTS, [{"id": i, "boss": i - 1} for i in range(2, 8)], 100)
    tx.conn.commit()  # all deferred: their boss is not there
    mapped.begin(tx)
    _process(mapped, tx, CONTACTS, [{"id": 1}], 200)
    rounds = len(mapped.order) + 2
    mapped.follow_parents(tx)  # one link of the chain per round
    assert _outcome(tx.conn, rounds + 1) == "mapped"  # its children are not followed...
    assert _outcome(tx.conn, rounds + 2) == "deferred"
    assert _blocked(other.conn, rounds + 1, "lp_tgt.contacts")  # ...but it is locked


def _filtered_account(workers: Any) -> None:
    mapped, tx = workers()
    _process(mapped, tx, ACCOUNTS, [{"id": 1, "active": False}], 100)
    mapped.follow_parents(tx)
    tx.conn.commit()


def test_a_child_of_a_parent_coming_back_waits_on_its_ledger_row_not_its_lock(
    workers: Any,
) -> None:
    """A parent the ledger knows (filtered) is waited for on its ledger row: the child waits
    for the batch bringing it back, and that batch does not wait for the child (with the
    parent's lock both waited for each other: a deadlock, one batch rolled back)."""
    _filtered_account(workers)
    parent, ptx = workers()
    child, ctx = workers()
    _process(parent, ptx, ACCOUNTS, [{"id": 1}], 300)  # active again, not yet followed
    errors: list[BaseException] = []

    def look() -> None:
        try:
            _process(child, ctx, CONTACTS, [{"id": 10, "account_id": 1}], 400)
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    t = threading.Thread(target=look)
    t.start()
    time.sleep(0.5)
    assert t.is_alive()  # waits for the batch bringing the parent back...
    assert parent.follow_parents(ptx) == 0  # ...which does not wait for it
    ptx.conn.commit()
    t.join(10)
    assert not errors
    ctx.conn.commit()
    assert _outcome(ctx.conn, 10) == "mapped"


def test_a_parent_coming_back_after_its_child_looked_maps_the_child(workers: Any) -> None:
    _filtered_account(workers)
    child, ctx = workers()
    parent, ptx = workers()
    _process(child, ctx, CONTACTS, [{"id": 10, "account_id": 1}], 400)
    assert _outcome(ctx.conn, 10) == "dead_letter"  # its parent is known filtered
    followed: list[int] = []

    def back() -> None:
        _process(parent, ptx, ACCOUNTS, [{"id": 1}], 500)
        followed.append(parent.follow_parents(ptx))

    t = threading.Thread(target=back)
    t.start()
    time.sleep(0.5)
    assert not followed  # waits for the child's batch (its ledger row)...
    ctx.conn.commit()
    t.join(10)
    assert followed == [1]  # ...then maps the child again
    ptx.conn.commit()
    assert _outcome(ctx.conn, 10) == "mapped"
