"""``crossfade.db.jsonb_dumps`` (orjson) spells the ledger's and the dedup sink's ``jsonb`` values:
PostgreSQL must store the same ``jsonb`` as from ``json.dumps``' text (psycopg's default, what
the code wrote before), over generated values of what sync stores per row (source keys, rule
failures, record headers, members' rows: strings with quotes, backslashes, control and non-ASCII
characters, ints up to and beyond 64 bits, floats, bools, None, nested lists and dicts); and
what ``json.dumps`` refuses or writes as PostgreSQL refuses it (NaN, a ``Decimal``, a
``datetime``, a key that is not a string) fails the same way."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import random
from typing import Any

import psycopg
import pytest

from crossfade.db import jsonb, jsonb_dumps

CHARS = ['"', "\\", "/", "\n", "\t", "\x01", "\x1f", "\x7f", "a", "é", "€", "\u2028", "😀", " "]


def text(r: random.Random) -> str:
    return "".join(r.choice(CHARS) for _ in range(r.randint(0, 8)))


def scalar(r: random.Random) -> Any:
    return r.choice(
        [
            lambda: text(r),
            lambda: r.randint(-(2**63), 2**63 - 1),
            lambda: r.choice([0, -1, 2**64, -(2**70), 10**30]),
            lambda: r.choice([0.1, -0.0, 1e16, 1.5e-7, 123456.789, 1e300, r.random()]),
            lambda: r.choice([True, False, None]),
        ]
    )()


def value(r: random.Random, depth: int = 0) -> Any:
    kind = r.randint(0, 3) if depth < 3 else 0
    if kind == 0:
        return scalar(r)
    if kind == 1:
        items = [value(r, depth + 1) for _ in range(r.randint(0, 4))]
        return tuple(items) if r.random() < 0.2 else items
    return {text(r): value(r, depth + 1) for _ in range(r.randint(0, 4))}


def as_text(b: bytes | str) -> str:
    return b.decode() if isinstance(b, bytes) else b


def test_the_same_jsonb_as_json_dumps(dsn: str) -> None:
    r = random.Random(11)
    objs: list[Any] = [value(r) for _ in range(3000)]
    objs += [
        ["k"],
        [1],
        {"crossfade.epoch": "e", "crossfade.position": "123"},
        [{"rule": "r", "value": 1.25, "parent": ["app.t", "c"]}],
    ]
    with psycopg.connect(dsn) as c:
        rows = c.execute(
            "SELECT a::jsonb = b::jsonb, a::jsonb::text, b::jsonb::text "
            "FROM unnest(%s::text[], %s::text[]) AS x(a, b)",
            ([as_text(jsonb_dumps(o)) for o in objs], [json.dumps(o) for o in objs]),
        ).fetchall()
    for o, (same, new, old) in zip(objs, rows, strict=True):
        assert same and new == old, (o, new, old)


@pytest.mark.parametrize(
    "obj",
    [
        float("nan"),
        [1.0, float("inf")],
        {"a": [float("-inf")]},
        {"v": None, "w": float("nan")},
    ],
)
def test_non_finite_floats_as_json_dumps_writes_them(obj: Any) -> None:
    """orjson would write null; json.dumps' NaN/Infinity (which PostgreSQL refuses) stays."""
    assert jsonb_dumps(obj) == json.dumps(obj)


@pytest.mark.parametrize(
    "obj",
    [
        decimal.Decimal("1.5"),
        dt.datetime(2024, 1, 2, 3, 4, 5),
        dt.date(2024, 1, 2),
        {1: "non-string key"},
        {"v": {2.5: "x"}},
        ["\ud800"],
        {"big": 2**64 + 1},
    ],
)
def test_what_orjson_refuses_goes_through_json_dumps(obj: Any) -> None:
    try:
        expected: Any = json.dumps(obj)
    except (TypeError, ValueError) as exc:
        with pytest.raises(type(exc)):
            jsonb_dumps(obj)
        return
    assert jsonb_dumps(obj) == expected


def test_jsonb_parameter_dumps_with_it(dsn: str) -> None:
    with psycopg.connect(dsn) as c:
        got = c.execute("SELECT %s::jsonb", (jsonb({"a": ["é", 1]}),)).fetchone()
    assert got == ({"a": ["é", 1]},)
    assert jsonb([1]).dumps is jsonb_dumps


def test_non_ascii_reads_right_in_a_latin1_database(dsn: str) -> None:
    """psycopg sends a dumper's bytes as they are: orjson's UTF-8 would be read as LATIN1 text
    by a LATIN1 database; json.dumps' escapes are ASCII, read right in any encoding."""
    obj = {"name": "Zoë Ångström", "k": ["é"]}
    assert jsonb_dumps(obj) == json.dumps(obj)
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("DROP DATABASE IF EXISTS cf_latin1")
        c.execute(
            "CREATE DATABASE cf_latin1 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' "
            "TEMPLATE template0"
        )
    try:
        other = psycopg.conninfo.make_conninfo(dsn, dbname="cf_latin1")
        with psycopg.connect(other) as c:
            c.execute("CREATE TEMP TABLE j (v jsonb)")
            with c.cursor().copy("COPY j (v) FROM STDIN") as cp:
                cp.write_row((jsonb(obj),))
            (back,) = c.execute("SELECT v::text FROM j").fetchone() or (None,)
        assert json.loads(back) == obj
    finally:
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("DROP DATABASE IF EXISTS cf_latin1")
