"""``crossfade.db.jsonb_dumps`` (orjson) spells the ledger's and the dedup sink's ``jsonb`` values:
PostgreSQL must store the same ``jsonb`` as from ``json.dumps``' text (psycopg's default, what
the code wrote before), over generated values of what sync stores per row (source keys, rule
failures, record headers, members' rows: strings with quotes, backslashes, control and non-ASCII
characters, ints up to and beyond 64 bits, floats, bools, None, nested lists and dicts); what
``json.dumps`` refuses (a ``Decimal``, a ``datetime``) fails the same way; and a NaN or
infinity, which ``json.dumps`` writes as PostgreSQL's ``jsonb`` refuses it (a row holding one
failed its batch on every retry: FAULTS 24), is stored as PostgreSQL's own ``to_jsonb`` stores
it and read back as the float."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import random
from typing import Any

import orjson
import psycopg
import pytest

from crossfade.db import finite_json, float_from_json, jsonb, jsonb_dumps

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


NON_FINITE = [
    float("nan"),
    [1.0, float("inf")],
    {"a": [float("-inf")]},
    {"v": None, "w": float("nan")},
    (2.5, float("-inf")),
    {"name": "Zoë", "score": float("nan")},  # non-ASCII: the json.dumps path
    {"big": 2**64 + 1, "r": [float("inf")]},  # beyond orjson: the json.dumps path
    [{"rule": "t.c:range", "value": float("inf"), "parent": None}],
]


@pytest.mark.parametrize("obj", NON_FINITE)
def test_non_finite_floats_stored_as_postgresql_writes_them(dsn: str, obj: Any) -> None:
    """PostgreSQL takes the text, and stores what its own ``to_jsonb`` of the float8 gives
    (``"NaN"``, ``"Infinity"``, ``"-Infinity"``): the same jsonb as ``finite_json(obj)``."""
    with psycopg.connect(dsn) as c:
        got, pg = c.execute(
            "SELECT %s::text::jsonb, jsonb_build_array(to_jsonb('NaN'::float8), "
            "to_jsonb('Infinity'::float8), to_jsonb('-Infinity'::real))",
            (as_text(jsonb_dumps(obj)),),
        ).fetchone() or (None, None)
    assert pg == ["NaN", "Infinity", "-Infinity"]
    assert got == finite_json(obj) == json.loads(json.dumps(finite_json(obj)))


@pytest.mark.parametrize("v", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_float_read_back(dsn: str, v: float) -> None:
    """What jsonb_dumps stored reads back as the float (and PostgreSQL casts it to float8)."""
    with psycopg.connect(dsn) as c:
        (got, cast) = c.execute(
            "SELECT %s::jsonb, (%s::jsonb ->> 0)::float8", (jsonb(v), jsonb([v]))
        ).fetchone() or (None, None)
    back = float_from_json(got)
    assert isinstance(back, float) and str(back) == str(v) == str(cast)
    assert float_from_json("nan") == "nan" and float_from_json(1.5) == 1.5
    assert float_from_json("Infinity ") == "Infinity "


def test_finite_floats_take_the_fast_path_unchanged() -> None:
    obj = {"a": 1.5, "b": None, "c": [0.1, -0.0, 1e300], "d": "NaN"}
    assert jsonb_dumps(obj) == orjson.dumps(obj)


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
