"""write_members and write_crosswalk (issue 22): set-based (a COPY into a staging table, then
one merge) they must leave exactly the rows the row-by-row statements they replaced left: new
members and entries, members and entries updated, members deleted (their key kept), entries
dropped, a key given twice in a batch, in or out of the caller's transaction. The old
statements are kept here, verbatim, as the reference."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from crossfade.target.store.dedup import write_crosswalk, write_members

OLD, NEW = "dw_old_crossfade", "dw_new_crossfade"
T = "public.customers"


@pytest.fixture
def db(fresh_bookkeeping: Callable[..., str]) -> str:
    return fresh_bookkeeping(OLD, NEW)


def old_write_members(
    conn: psycopg.Connection, schema: str, table: str, upserts: list[Any], deletes: list[Any]
) -> None:
    """The row-by-row statements write_members ran before (dedup_blocks: the same code)."""
    bk = sql.Identifier(schema)
    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL(
                "INSERT INTO {}.dedup_members AS m (target_table, member_key, key, source_table, block_keys, row, position, deleted) "
                "VALUES (%s,%s,%s,NULL,%s,%s,%s,false) ON CONFLICT (target_table, member_key) DO UPDATE SET "
                "key = EXCLUDED.key, block_keys = EXCLUDED.block_keys, row = EXCLUDED.row, position = EXCLUDED.position, "
                "deleted = false"
            ).format(bk),
            [(table, *u) for u in upserts],
        )
        cur.executemany(
            sql.SQL(
                "INSERT INTO {}.dedup_members AS m (target_table, member_key, key, block_keys, row, position, deleted) "
                "VALUES (%s,%s,%s,'{{}}',NULL,%s,true) ON CONFLICT (target_table, member_key) DO UPDATE SET "
                "block_keys = '{{}}', row = NULL, position = EXCLUDED.position, deleted = true"
            ).format(bk),
            [(table, *d) for d in deletes],
        )
    keys = [u[0] for u in upserts] + [d[0] for d in deletes]
    conn.execute(  # the index by block key, rebuilt for the keys written
        sql.SQL(
            "DELETE FROM {bk}.dedup_blocks WHERE target_table = %s AND member_key = ANY(%s)"
        ).format(bk=bk),
        (table, keys),
    )
    conn.execute(
        sql.SQL(
            "INSERT INTO {bk}.dedup_blocks SELECT m.target_table, b, m.member_key "
            "FROM {bk}.dedup_members m, unnest(m.block_keys) b WHERE NOT m.deleted "
            "AND m.target_table = %s AND m.member_key = ANY(%s) ON CONFLICT DO NOTHING"
        ).format(bk=bk),
        (table, keys),
    )


def old_write_crosswalk(
    conn: psycopg.Connection, schema: str, table: str, entries: list[Any], dropped: list[str]
) -> None:
    bk = sql.Identifier(schema)
    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL(
                "INSERT INTO {}.crosswalk (target_table, member_key, survivor_key, survivor, rule, evidence) "
                "VALUES (%s,%s,%s,%s,%s,%s) ON CONFLICT (target_table, member_key) DO UPDATE SET "
                "survivor_key = EXCLUDED.survivor_key, survivor = EXCLUDED.survivor, rule = EXCLUDED.rule, "
                "evidence = EXCLUDED.evidence, updated_at = now()"
            ).format(bk),
            entries,
        )
        if dropped:
            cur.execute(
                sql.SQL(
                    "DELETE FROM {}.crosswalk WHERE target_table = %s AND member_key = ANY(%s)"
                ).format(bk),
                (table, dropped),
            )


def _members(c: psycopg.Connection, schema: str) -> list[tuple[Any, ...]]:
    return c.execute(
        f"SELECT target_table, member_key, key, source_table, block_keys, row, position, deleted "
        f"FROM {schema}.dedup_members ORDER BY 1, 2"
    ).fetchall()


def _blocks(c: psycopg.Connection, schema: str) -> list[tuple[Any, ...]]:
    return c.execute(f"SELECT * FROM {schema}.dedup_blocks ORDER BY 1, 2, 3").fetchall()


def _crosswalk(c: psycopg.Connection, schema: str) -> list[tuple[Any, ...]]:
    # updated_at: now() of the writing transaction; whether it moved is compared, not its value
    return c.execute(
        f"SELECT target_table, member_key, survivor_key, survivor, source_table, rule, evidence, "
        f"updated_at > '2000-01-01' FROM {schema}.crosswalk ORDER BY 1, 2"
    ).fetchall()


def _m(n: int, blocks: list[str], pos: int, key: Any = None) -> tuple[Any, ...]:
    k = key if key is not None else [str(n)]
    return (f'["{n}"]', Jsonb(k), blocks, Jsonb({"id": str(n), "b": blocks}), pos)


def _d(n: int, pos: int, key: Any = None) -> tuple[Any, ...]:
    return (f'["{n}"]', Jsonb(key if key is not None else [str(n)]), pos)


MEMBER_BATCHES: list[tuple[list[Any], list[Any]]] = [
    # new members, one without blocks, one deleted before it was ever seen
    ([_m(1, ["e:a", "p:1"], 10), _m(2, ["e:a"], 11), _m(3, [], 12)], [_d(9, 13)]),
    # updates (blocks changed, kept, dropped), a new one, deletes of a live and a gone member
    (
        [_m(1, ["e:b", "p:1"], 20), _m(2, ["e:a"], 21), _m(4, ["p:4"], 22)],
        [_d(3, 23), _d(9, 24)],
    ),
    # duplicates: a member upserted twice (the second wins), one upserted then deleted (the
    # upsert's key stays), one deleted twice (the first delete's key stays), a deleted member
    # back (with another key spelling: the upsert's), one deleted under another key spelling
    (
        [
            _m(5, ["x"], 30),
            _m(5, ["y"], 31),
            _m(6, ["z"], 32, key=["6", 1]),
            _m(3, ["e:a"], 33, key=[3]),
        ],
        [_d(6, 34, key=["6", 2]), _d(7, 35, key=["7a"]), _d(7, 36, key=["7b"]), _d(1, 37, key=[1])],
    ),
    ([], [_d(2, 40)]),
    ([_m(2, ["e:c"], 50)], []),
]


@pytest.mark.parametrize("in_tx", [False, True])
def test_members_written_set_based_match_the_row_by_row_statements(db: str, in_tx: bool) -> None:
    with psycopg.connect(db, autocommit=not in_tx) as c:
        for upserts, deletes in MEMBER_BATCHES:
            old_write_members(c, OLD, T, upserts, deletes)
            write_members(c, NEW, T, upserts, deletes)
            write_members(c, NEW, "public.other", upserts[:1], [])  # another table, same keys
            old_write_members(c, OLD, "public.other", upserts[:1], [])
            assert _members(c, NEW) == _members(c, OLD)
            assert _blocks(c, NEW) == _blocks(c, OLD)
        if in_tx:
            c.commit()
    with psycopg.connect(db) as c:
        got = {r[1]: r for r in _members(c, NEW) if r[0] == T}
        assert _members(c, NEW) == _members(c, OLD) and len(got) == 8
        # spot checks of what the batches mean (the reference could be wrong too)
        assert got['["5"]'][4:8] == (["y"], {"id": "5", "b": ["y"]}, 31, False)
        assert got['["6"]'][2] == ["6", 1] and got['["6"]'][4:8] == ([], None, 34, True)
        assert got['["7"]'][2] == ["7a"] and got['["7"]'][6] == 36
        assert got['["1"]'][2] == ["1"] and got['["1"]'][7]  # deleted: the key it had
        assert got['["3"]'][2] == [3] and not got['["3"]'][7]  # back, with its new key
        assert got['["2"]'][4:8] == (["e:c"], {"id": "2", "b": ["e:c"]}, 50, False)
        assert [b for b in _blocks(c, NEW) if b[0] == T] == [
            (T, "e:a", '["3"]'),
            (T, "e:c", '["2"]'),
            (T, "p:4", '["4"]'),
            (T, "y", '["5"]'),
        ]


def test_a_rolled_back_batch_leaves_nothing_and_the_next_one_writes(db: str) -> None:
    """The staging table a rolled-back transaction created goes with it; the next batch of the
    same session creates it again; each call empties it (a member staged twice in one merge
    would fail: ON CONFLICT DO UPDATE cannot affect a row twice)."""
    with psycopg.connect(db) as c:
        write_members(c, NEW, T, [_m(1, ["a"], 10)], [])
        write_crosswalk(c, NEW, T, [(T, '["1"]', '["1"]', Jsonb(["1"]), None, None)], [])
        c.rollback()
        assert _members(c, NEW) == [] and _crosswalk(c, NEW) == []
        write_members(c, NEW, T, [_m(2, ["a"], 11)], [])
        write_members(c, NEW, T, [_m(2, ["b"], 12), _m(3, ["b"], 12)], [])
        write_crosswalk(c, NEW, T, [(T, '["2"]', '["2"]', Jsonb(["2"]), None, None)], [])
        write_crosswalk(c, NEW, T, [(T, '["2"]', '["3"]', Jsonb(["3"]), None, None)], [])
        c.commit()
        assert [(r[1], r[6]) for r in _members(c, NEW)] == [('["2"]', 12), ('["3"]', 12)]
        assert _blocks(c, NEW) == [(T, "b", '["2"]'), (T, "b", '["3"]')]
        assert [r[2] for r in _crosswalk(c, NEW)] == ['["3"]']


def _e(
    mk: int, sk: int, rule: str | None = None, ev: Any = None, table: str = T
) -> tuple[Any, ...]:
    return (table, f'["{mk}"]', f'["{sk}"]', Jsonb([str(sk)]), rule, Jsonb(ev) if ev else None)


EV = [{"rule": "email", "a": ["1"], "b": ["2"]}]
CROSSWALK_BATCHES: list[tuple[list[Any], list[str]]] = [
    ([_e(1, 1), _e(2, 1, "email", EV), _e(3, 3), _e(1, 1, table="public.other")], []),
    # 2 leaves 1's group, 3 joins it, 4 is new; a member never in it dropped
    ([_e(2, 2), _e(3, 1, "phone", [{"rule": "phone"}]), _e(4, 4)], ['["9"]']),
    # an entry given twice (the second wins), a member dropped (only this table's entry goes)
    ([_e(5, 5), _e(5, 1, "email", EV), _e(4, 1, "email", EV)], ['["1"]']),
    ([], ['["4"]', '["5"]']),
]


@pytest.mark.parametrize("in_tx", [False, True])
def test_crosswalk_written_set_based_matches_the_row_by_row_statements(
    db: str, in_tx: bool
) -> None:
    with psycopg.connect(db, autocommit=not in_tx) as c:
        for entries, dropped in CROSSWALK_BATCHES:
            old_write_crosswalk(c, OLD, T, entries, dropped)
            write_crosswalk(c, NEW, T, entries, dropped)
            assert _crosswalk(c, NEW) == _crosswalk(c, OLD)
        if in_tx:
            c.commit()
    with psycopg.connect(db) as c:
        assert _crosswalk(c, NEW) == _crosswalk(c, OLD)
        assert [(r[0], r[1], r[2], r[5]) for r in _crosswalk(c, NEW)] == [
            ("public.customers", '["2"]', '["2"]', None),
            ("public.customers", '["3"]', '["1"]', "phone"),
            ("public.other", '["1"]', '["1"]', None),
        ]
