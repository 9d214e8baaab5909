"""The merge's two paths, against the embedded PostgreSQL (no broker needed): a table segment with
neither deletes nor kept TOAST values goes without the guard join against the target (the
upsert's ``ON CONFLICT ... WHERE`` refuses older positions itself); any other takes the guard.
Both must refuse an older change, apply a newer one and count what they did alike."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from crossfade.catalog import read_shape
from crossfade.embedded.postgres import EmbeddedPostgres
from crossfade.target.apply import TableApplier
from crossfade.target.store import ensure_schema

pytestmark = pytest.mark.integration


class _Recording(psycopg.Cursor[Any]):
    seen: list[str] = []  # noqa: RUF012 - one test at a time

    def execute(self, query: Any, params: Any = None, **kw: Any) -> Any:
        _Recording.seen.append(query.as_string(self) if hasattr(query, "as_string") else str(query))
        return super().execute(query, params, **kw)


@pytest.fixture
def conn(pg_server: EmbeddedPostgres) -> Iterator[psycopg.Connection]:
    name = f"paths_{time.monotonic_ns()}"
    pg_server.create_database(name)
    c = psycopg.connect(pg_server.dsn(name), autocommit=True)
    ensure_schema(c, "crossfade")
    c.execute("CREATE TABLE t (id int PRIMARY KEY, v text, _cf_pos numeric)")
    c.execute(
        "INSERT INTO t VALUES (1, 'one@100', 100), (2, 'two@100', 100), (3, 'three@100', 100)"
    )
    c.autocommit = False
    c.cursor_factory = _Recording
    yield c
    c.close()
    with psycopg.connect(pg_server.dsn(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _applier(conn: psycopg.Connection) -> TableApplier:
    shape = read_shape(conn, "public.t")
    assert shape is not None
    a = TableApplier(shape, "crossfade")
    a.prepare(conn)
    return a


def _row(id_: int, v: str | None, pos: int, delete: bool = False) -> tuple[Any, ...]:
    return (str(id_), v, str(pos), "t" if delete else "f", f'["{id_}"]', None)


def _guard_joins() -> int:
    return sum(
        1 for q in _Recording.seen if q.startswith("DELETE FROM") and 'USING "public"."t"' in q
    )


def _target(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT id, v FROM t ORDER BY id").fetchall()


def test_upserts_alone_skip_the_guard_join_and_still_refuse_older_changes(
    conn: psycopg.Connection,
) -> None:
    a = _applier(conn)
    _Recording.seen.clear()
    # id 1: older than the target row (refused); id 2: newer (applied); id 4: new row (applied)
    res = a.apply_rows(
        conn,
        iter([_row(1, "one@50", 50), _row(2, "two@200", 200), _row(4, "four@200", 200)]),
        5,
        -1,
    )
    conn.commit()
    assert _guard_joins() == 0, _Recording.seen
    assert (res.applied, res.deleted, res.skipped) == (2, 0, 3)  # 5 events in, 2 rows written
    assert _target(conn) == [(1, "one@100"), (2, "two@200"), (3, "three@100"), (4, "four@200")]
    # replay: an equal position re-applies, an older one stays refused
    _Recording.seen.clear()
    res = a.apply_rows(
        conn, iter([_row(2, "two@200 fixed", 200), _row(3, "three@99", 99)]), 2, -1, replay=True
    )
    conn.commit()
    assert _guard_joins() == 0
    assert (res.applied, res.skipped) == (1, 1)
    assert _target(conn)[1:3] == [(2, "two@200 fixed"), (3, "three@100")]


def test_a_segment_with_a_delete_takes_the_guard(conn: psycopg.Connection) -> None:
    a = _applier(conn)
    _Recording.seen.clear()
    # id 1 deleted by an older change (refused), id 3 deleted by a newer one, id 2 older update (refused)
    res = a.apply_rows(
        conn,
        iter(
            [_row(1, None, 50, delete=True), _row(3, None, 300, delete=True), _row(2, "two@60", 60)]
        ),
        3,
        -1,
    )
    conn.commit()
    assert _guard_joins() == 1, _Recording.seen
    assert (res.applied, res.deleted, res.skipped) == (0, 1, 2)
    assert _target(conn) == [(1, "one@100"), (2, "two@100")]
