"""Golden records written set-based (crossfade.target.golden, issue 22) must leave exactly the
rows the row-by-row statements they replaced left (kept here, verbatim, as the reference), over
columns of many types: lengths, json and jsonb, arrays, dates, numerics, NULLs, a composite key,
rows gone and written in one batch, keys equal only once cast. Where the two differ on purpose
(a bool or a float into a column of another type) the new rows are what verify expects. A value
longer than its column is refused, never cut."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import sql

from crossfade.catalog import POS_COLUMN, TableShape, read_shape, uncut
from crossfade.config.settings import Settings
from crossfade.target.golden import GoldenWriter
from crossfade.verify.expected import Expected, rows_of

S = "dg_app"
COLS = (
    "name text, n int, label varchar(10), code char(3), note text, amount numeric(8,2), "
    "ratio numeric, qty bigint, flag boolean, born date, seen timestamptz, doc json, "
    "meta jsonb, tags text[], nums int[], short varchar(3)[], ident uuid, score float8"
)
KEY = ("name", "n")


@pytest.fixture
def db(dsn: str) -> Iterator[str]:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(f"DROP SCHEMA IF EXISTS {S} CASCADE")
        c.execute(f"CREATE SCHEMA {S}")
        for t in ("old", "new"):
            c.execute(f"CREATE TABLE {S}.{t} ({COLS}, {POS_COLUMN} numeric, PRIMARY KEY (name, n))")
        c.execute(
            f"CREATE TABLE {S}.tags (tag varchar(5) PRIMARY KEY, label varchar(5), "
            f"bits bit varying(3), names varchar(3)[], {POS_COLUMN} numeric)"
        )
    yield dsn
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(f"DROP SCHEMA IF EXISTS {S} CASCADE")


def _shape(conn: psycopg.Connection, table: str) -> TableShape:
    shape = read_shape(conn, f"{S}.{table}")
    assert shape is not None
    return shape


def old_write_target(
    conn: psycopg.Connection,
    shape: TableShape,
    key: tuple[str, ...],
    cols: list[str],
    rows: list[tuple[dict[str, Any], int]],
    gone_keys: list[list[Any]],
) -> None:
    """The row-by-row statements DedupWriter._write_target ran before (its _type and _param)."""
    I = sql.Identifier  # noqa: E741,N806
    json_cols = {c.name for c in shape.columns if c.type_sql in ("json", "jsonb")}
    target = sql.SQL("{}.{}").format(I(shape.schema), I(shape.name))

    def _type(col: str) -> sql.SQL:
        return sql.SQL(uncut(shape.column(col).type_sql))

    def _param(col: str, v: Any) -> Any:
        if v is None:
            return None
        if col in json_cols:
            return json.dumps(v)
        if isinstance(v, list | dict):
            return v
        return v if isinstance(v, str | bool | int | float) else str(v)

    key_match = sql.SQL(" AND ").join(
        sql.SQL("{} = CAST(%s AS {})").format(I(k), _type(k)) for k in key
    )
    all_cols = [*cols, POS_COLUMN]
    types = [_type(c) for c in cols] + [sql.SQL("numeric")]
    non_key = [c for c in all_cols if c not in key]
    upsert = sql.SQL(
        "INSERT INTO {t} ({cols}) VALUES ({vals}) ON CONFLICT ({key}) DO UPDATE SET {sets}"
    ).format(
        t=target,
        cols=sql.SQL(", ").join(map(I, all_cols)),
        vals=sql.SQL(", ").join(sql.SQL("CAST(%s AS {})").format(t) for t in types),
        key=sql.SQL(", ").join(map(I, key)),
        sets=sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(I(c)) for c in non_key),
    )
    delete = sql.SQL("DELETE FROM {} WHERE {}").format(target, key_match)
    with conn.cursor() as cur:
        if gone_keys:
            cur.executemany(delete, gone_keys)
        if rows:
            cur.executemany(
                upsert, [[*(_param(c, vals.get(c)) for c in cols), pos] for vals, pos in rows]
            )


def _table(conn: psycopg.Connection, t: str) -> list[str]:
    """Every row of ``t`` as PostgreSQL spells it (json's text too, not only its value)."""
    return [r[0] for r in conn.execute(f"SELECT x::text FROM {S}.{t} x ORDER BY name, n")]


def _r(name: str, n: Any, **values: Any) -> dict[str, Any]:
    return {"name": name, "n": n, **values}


FULL = _r(
    "ann",
    1,
    label="Ann Lee",
    code="AB",  # padded to char(3)
    note='tab\there, "quoted", back\\slash, new\nline, ünïcødé',
    amount="1234.565",  # a decimal kept as text in the member: rounds to 1234.57
    ratio="0.1000000000000000000001",
    qty=9_007_199_254_740_993,  # past a float's exact integers
    flag=True,
    born="2024-02-29",
    seen="2024-01-01 10:00:00+02",
    doc={"b": 1, "a": [1, 2, {"c": None}]},  # json keeps its text: key order, spacing
    meta={"z": "1", "a": True},
    tags=["a,b", 'q"uote', "", None, "back\\slash", "{brace}"],
    nums=[1, None, -3],
    short=["abc", None],
    ident="123e4567-e89b-12d3-a456-426614174000",
    score=-0.5,
)
BATCHES: list[tuple[list[tuple[dict[str, Any], int]], list[list[Any]]]] = [
    (
        [
            (FULL, 10),
            (_r("bob", 2), 11),  # every other column NULL
            (_r("cy", 3, label="", note="", tags=[], nums=[], doc="a string", meta=[1, "x"]), 12),
            (_r("di", 4, amount=7, ratio=Decimal("1E+3"), born=date(2001, 2, 3)), 13),
            (_r("ed", 5, doc=None, meta=None, tags=[["a", "b"], ["c", None]]), 14),
            (_r("ann", 2, label="Ann 2", code="X  "), 15),  # the key's first column shared
        ],
        [],
    ),
    (
        [  # updates: values changed, set NULL, a row gone and written again in one batch
            ({**FULL, "label": "Ann Leigh", "note": None, "meta": {"a": False}}, 20),
            (_r("bob", 2, label="Bob", flag=False, qty=-1), 21),
            (_r("di", 4), 22),
            (_r("fay", 6, note="new"), 23),
        ],
        [["cy", 3], ["di", 4], ["nobody", 9], ["ed", 5]],  # a key no row has
    ),
    (
        [  # two spellings of one key (n 7 and "7"): the last one is the row
            (_r("gus", 7, label="first"), 30),
            (_r("gus", "7", label="second"), 31),
            (_r("hal", 8, label="h"), 32),
        ],
        [["fay", "6"], ["ann", 2]],  # a gone key spelled as text
    ),
    ([], [["hal", 8]]),
    ([(_r("bob", 2, label="Bob 3"), 50)], []),
]


def test_golden_rows_written_set_based_match_the_row_by_row_statements(db: str) -> None:
    with psycopg.connect(db) as c:
        old, new = _shape(c, "old"), _shape(c, "new")
        cols = [col.name for col in new.columns if col.name != POS_COLUMN]
        w = GoldenWriter(new, KEY, cols)
        for rows, gone in BATCHES:
            old_write_target(c, old, KEY, cols, rows, gone)
            w.write(c, rows, gone)
            assert _table(c, "new") == _table(c, "old")
        c.commit()
        # spot checks of what the batches mean (the reference could be wrong too)
        got = {
            (r[0], r[1]): r[2:]
            for r in c.execute(
                f"SELECT name, n, label, amount, doc::text, tags, {POS_COLUMN} FROM {S}.new"
            )
        }
        assert sorted(got) == [("ann", 1), ("bob", 2), ("di", 4), ("gus", 7)]
        assert got[("ann", 1)][:3] == ("Ann Leigh", Decimal("1234.57"), json.dumps(FULL["doc"]))
        assert got[("ann", 1)][3] == FULL["tags"]
        assert got[("bob", 2)][0] == "Bob 3" and got[("bob", 2)][4] == 50
        assert got[("di", 4)] == (None, None, None, None, 22)
        assert got[("gus", 7)][0] == "second" and got[("gus", 7)][4] == 31


@pytest.mark.parametrize(
    "values",
    [
        {"label": "Annabelle"},
        {"bits": "1011"},
        {"names": ["abc", "abcd"]},  # an array's element
    ],
)
def test_a_value_longer_than_its_column_is_refused_not_cut(db: str, values: dict[str, Any]) -> None:
    with psycopg.connect(db) as c:
        shape = _shape(c, "tags")
        w = GoldenWriter(shape, ("tag",), ["tag", "label", "bits", "names"])
        with pytest.raises(psycopg.errors.StringDataRightTruncation):
            w.write(c, [({"tag": "t1", **values}, 1)], [])
        c.rollback()
        w.write(c, [({"tag": "Ann    ", "label": "x       "}, 2)], [])  # spaces past it: dropped
        w.write(c, [], [["Ann  belle"]])  # a key the column cannot hold finds no row
        assert c.execute(f"SELECT tag, label FROM {S}.tags").fetchall() == [("Ann  ", "x    ")]


def test_a_bool_or_a_float_into_a_column_of_another_type_is_what_verify_expects(
    db: str,
) -> None:
    """The row-by-row statements cast a bool parameter to text ("true") and a float8 one to
    numeric (15 digits) or text ("1"); verify's expected rows (COPY, as the plain path) read
    their text: "t", 0.30000000000000004, "1.0". The set-based path writes what verify expects."""
    with psycopg.connect(db) as c:
        shape = _shape(c, "new")
        cols = ["name", "n", "note", "ratio", "label", "score"]
        # what a member gives back from JSON (crossfade.sync.sinks.dedup stores them so)
        row = _r("x", 1, note=True, ratio=0.1 + 0.2, label=1.0, score=0.1 + 0.2)
        GoldenWriter(shape, KEY, cols).write(c, [(row, 1)], [])
        old_write_target(c, _shape(c, "old"), KEY, cols, [(row, 1)], [])
        c.commit()
        got = rows_of(c, sql.SQL(f"{S}.new"), shape, KEY, cols, [("x", 1)])[("x", 1)]
        before = rows_of(c, sql.SQL(f"{S}.old"), shape, KEY, cols, [("x", 1)])[("x", 1)]
    settings = Settings(
        source={"dsn": db},
        target={"dsn": db},
        kafka={"bootstrap_servers": "127.0.0.1:1"},
        tables=["public.t"],
    )
    exp = Expected(settings, shape, KEY, cols)
    try:
        exp.write(row)
        exp.finish()
        want = exp.rows_of([("x", 1)])[("x", 1)]
    finally:
        exp.close()
    assert want is not None and got == want
    assert got[2:] == ("t", Decimal("0.30000000000000004"), "1.0", 0.30000000000000004)
    assert before is not None and before[2:] == ("true", Decimal("0.3"), "1", 0.30000000000000004)
