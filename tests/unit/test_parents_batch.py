"""TargetParents.map_batch (issue 22): a batch's parents looked up in one statement per parent
table and column must give every row the answer the row-by-row look-up gives, lock every
parent found until the batch commits, and wait once for each one missing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from crossfade.catalog import read_shape
from crossfade.sync import children
from crossfade.sync.parents import TargetParents
from crossfade.target.store import ensure_schema

BK = "pb_crossfade"
PEOPLE = "pb_app.people"  # deduplicated: members resolve through the crosswalk
ACCOUNTS = "pb_app.accounts"


@pytest.fixture
def db(dsn: str) -> Iterator[str]:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(f"DROP SCHEMA IF EXISTS pb_app CASCADE; DROP SCHEMA IF EXISTS {BK} CASCADE")
        c.execute("CREATE SCHEMA pb_app")
        c.execute("CREATE TABLE pb_app.accounts (account_id bigint PRIMARY KEY, code text UNIQUE)")
        c.execute("INSERT INTO pb_app.accounts SELECT g, 'A' || g FROM generate_series(1, 20) g")
        c.execute("CREATE TABLE pb_app.people (person_id text PRIMARY KEY)")
        c.execute("INSERT INTO pb_app.people VALUES ('p1'), ('p2')")
        ensure_schema(c, BK)
        # p9 was merged into p1: it has no row, only its crosswalk entry
        c.execute(
            f"INSERT INTO {BK}.crosswalk (target_table, member_key, survivor_key, survivor) "
            "VALUES (%s, %s, %s, %s)",
            (PEOPLE, '["p9"]', '["p1"]', Jsonb(["p1"])),
        )
    yield dsn


def _parents(conn: psycopg.Connection) -> TargetParents:
    shapes = {t: read_shape(conn, t) for t in (ACCOUNTS, PEOPLE)}
    return TargetParents(conn, shapes, {PEOPLE: ("person_id",)}, BK)  # type: ignore[arg-type]


# each item: the parents one row refers to
ITEMS: list[list[tuple[str, str, Any]]] = [
    [(ACCOUNTS, "account_id", 1), (PEOPLE, "person_id", "p1")],
    [(ACCOUNTS, "account_id", 99)],  # missing
    [(ACCOUNTS, "account_id", "7"), (ACCOUNTS, "code", "A3")],  # text for a bigint; 2nd column
    [(PEOPLE, "person_id", "p9")],  # a merged member: crosswalk only
    [(PEOPLE, "person_id", "nobody"), (ACCOUNTS, "account_id", 2)],  # one missing, one found
    [(ACCOUNTS, "account_id", 99), (ACCOUNTS, "account_id", 20)],  # the same missing again
    [(ACCOUNTS, "account_id", 5), ("pb_app.unknown", "id", 1)],  # a table not in the shapes
]


def _map_one(item: list[tuple[str, str, Any]], p: Any) -> list[bool | None]:
    return [p(t, c, v) for t, c, v in item]


class _Counting:
    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn, self.statements = conn, 0

    def execute(self, *a: Any, **kw: Any) -> Any:
        self.statements += 1
        return self.conn.execute(*a, **kw)


def test_batch_answers_as_row_by_row_with_fewer_statements(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[tuple[str, str]] = []
    real_wait, real_waits = children.wait_for_parent, children.wait_for_parents
    monkeypatch.setattr(
        children, "wait_for_parent", lambda c, t, v: (waits.append((t, v)), real_wait(c, t, v))
    )

    def wait_all(c: Any, pairs: list[tuple[str, str]]) -> None:
        waits.extend(pairs)
        real_waits(c, pairs)

    monkeypatch.setattr(children, "wait_for_parents", wait_all)
    with psycopg.connect(db) as conn:
        one = _parents(conn)
        row_by_row = _Counting(conn)
        one.conn = row_by_row  # type: ignore[assignment]
        expected = [_map_one(item, one) for item in ITEMS]
        row_waits = sorted(waits)
        conn.rollback()
        waits.clear()
        counting = _Counting(conn)
        batched = _parents(conn)
        batched.conn = counting  # type: ignore[assignment]
        got = batched.map_batch(ITEMS, _map_one)
        conn.rollback()
    assert got == expected
    assert expected[1] == [False] and expected[3] == [True] and expected[4] == [False, True]
    # each missing parent is waited for once, as row by row
    assert sorted(waits) == row_waits == [(ACCOUNTS, "[99]"), (PEOPLE, '["nobody"]')]
    # the look-up: people's crosswalk and rows, accounts.account_id's int and str arrays,
    # accounts.code (5); the missing ones' wait (1) and their look-up after it: people's
    # crosswalk and rows, accounts.account_id (3); the second ask of 99 costs nothing
    assert counting.statements == 9, counting.statements
    assert row_by_row.statements > 15, row_by_row.statements


def _locked(dsn: str, stmt: str, args: tuple[Any, ...]) -> bool:
    """Whether another transaction finds the row locked against ``stmt`` (NOWAIT)."""
    with psycopg.connect(dsn) as other:
        try:
            other.execute(stmt, args)
        except psycopg.errors.LockNotAvailable:
            return True
        finally:
            other.rollback()
    return False


def test_batch_locks_every_parent_found_until_commit(db: str) -> None:
    upd = "SELECT 1 FROM pb_app.accounts WHERE account_id = %s FOR UPDATE NOWAIT"
    upd_p = "SELECT 1 FROM pb_app.people WHERE person_id = %s FOR UPDATE NOWAIT"
    upd_cw = (
        f"SELECT 1 FROM {BK}.crosswalk WHERE target_table = %s AND member_key = %s "
        "FOR UPDATE NOWAIT"
    )
    with psycopg.connect(db) as conn:
        p = _parents(conn)
        p.map_batch(ITEMS, _map_one)
        for a in (1, 7, 3, 2, 20, 5):  # 3: found through its code
            assert _locked(db, upd, (a,)), a
        for a in (4, 6, 19):  # parents nobody asked for stay free
            assert not _locked(db, upd, (a,)), a
        assert _locked(db, upd_p, ("p1",))
        assert not _locked(db, upd_p, ("p2",))
        assert _locked(db, upd_cw, (PEOPLE, '["p9"]'))
        conn.commit()
        assert not _locked(db, upd, (1,))


def test_a_parent_arriving_while_waited_for_is_found_and_locked(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def arrives(c: psycopg.Connection, pairs: list[tuple[str, str]]) -> None:
        assert sorted(pairs) == [(ACCOUNTS, "[98]"), (ACCOUNTS, "[99]")]
        with psycopg.connect(db, autocommit=True) as other:
            other.execute("INSERT INTO pb_app.accounts VALUES (99, 'A99')")

    monkeypatch.setattr(children, "wait_for_parents", arrives)
    with psycopg.connect(db) as conn:
        items = [[(ACCOUNTS, "account_id", 99)], [(ACCOUNTS, "account_id", 98)]]
        got = _parents(conn).map_batch(items, _map_one)
        assert got == [[True], [False]]
        assert _locked(
            db, "SELECT 1 FROM pb_app.accounts WHERE account_id = 99 FOR UPDATE NOWAIT", ()
        )


def test_found_parents_are_cached_and_forget_drops_them(db: str) -> None:
    with psycopg.connect(db) as conn:
        p = _parents(conn)
        p.map_batch([[(ACCOUNTS, "account_id", 1)]], _map_one)
        with psycopg.connect(db, autocommit=True) as other:  # another worker deletes it later
            other.execute("SET lock_timeout = '100ms'")
            with pytest.raises(psycopg.errors.LockNotAvailable):
                other.execute("DELETE FROM pb_app.accounts WHERE account_id = 1")
        conn.execute("DELETE FROM pb_app.accounts WHERE account_id = 1")  # this batch removes it
        assert p.map_batch([[(ACCOUNTS, "account_id", 1)]], _map_one) == [[True]]  # cached
        changes = children.ParentChanges()
        changes.add(ACCOUNTS, "[1]")
        p.forget(changes)
        assert p.map_batch([[(ACCOUNTS, "account_id", 1)]], _map_one) == [[False]]
        conn.rollback()
