"""``crossfade.db.OrjsonbLoader`` (orjson) reads the ``jsonb`` results of every connection
``crossfade.db.connect`` makes (sync reads dedup members' keys and rows, crosswalk survivors back
per batch): the same Python values, of the same types, as psycopg's loader (``json.loads``, what
the code read before), over generated values PostgreSQL stored and prints back (strings with
quotes, backslashes, control and non-ASCII characters, integers up to and beyond 64 bits, numbers
with many digits or exponents, bools, null, nested arrays and objects); and what ``json.loads``
fails on fails the same way."""

from __future__ import annotations

import json
import random
from typing import Any

import psycopg
import pytest
from psycopg.types.json import JsonbLoader

from crossfade.db import OrjsonbLoader

CHARS = ['"', "\\", "/", "\n", "\t", "\x01", "\x1f", "\x7f", "a", "é", "€", "\u2028", "😀", " "]
NUMBERS = [
    "0",
    "-0",
    "-0.0",
    "1.0",
    "0.1",
    "1e16",
    "1.5e-7",
    "123456.789",
    "1e300",
    "1e-300",
    "1e400",
    "1e-400",
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "123456789012345678",
    "1234567890123456789",
    "123456789012345678901234567890.123",
    "3.141592653589793238462643383279",
    "0.30000000000000004",
    "2.2250738585072014e-308",
    "4.9e-324",
    "1.7976931348623157e308",
]


def text(r: random.Random) -> str:
    return "".join(r.choice(CHARS) for _ in range(r.randint(0, 8)))


def scalar(r: random.Random) -> str:
    """A JSON literal."""
    return r.choice(
        [
            lambda: json.dumps(text(r)),
            lambda: str(r.randint(-(2**70), 2**70)),
            lambda: str(r.randint(-999, 999)),
            lambda: r.choice(NUMBERS),
            lambda: repr(r.uniform(-1e6, 1e6)),
            lambda: repr(r.random() * 10 ** r.randint(-30, 30)),
            lambda: json.dumps("1234567890123456789012"),  # digits in a string
            lambda: r.choice(["true", "false", "null"]),
        ]
    )()


def value(r: random.Random, depth: int = 0) -> str:
    """JSON text of a generated value."""
    kind = r.randint(0, 3) if depth < 3 else 0
    if kind == 0:
        return scalar(r)
    if kind == 1:
        return "[" + ", ".join(value(r, depth + 1) for _ in range(r.randint(0, 4))) + "]"
    items = (f"{json.dumps(text(r))}: {value(r, depth + 1)}" for _ in range(r.randint(0, 4)))
    return "{" + ", ".join(items) + "}"


def same(a: Any, b: Any) -> bool:
    """Equal values of the same types all the way down (1 is not 1.0, nor True; -0.0 is not
    0.0), object keys in the same order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return repr(a) == repr(b)
    return bool(a == b)


def loaded(dsn: str, texts: list[str], loader: type[JsonbLoader]) -> list[Any]:
    with psycopg.connect(dsn) as c:
        c.adapters.register_loader("jsonb", loader)
        rows = c.execute(
            "SELECT t::jsonb FROM unnest(%s::text[]) WITH ORDINALITY AS x(t, i) ORDER BY i",
            (texts,),
        ).fetchall()
    return [r[0] for r in rows]


def test_the_same_values_as_json_loads(dsn: str) -> None:
    r = random.Random(5)
    texts = [value(r) for _ in range(4000)] + [f"[{n}]" for n in NUMBERS]
    texts += ['{"a": 1, "a": 2}', '{"k": ["\\u00e9", "\\ud83d\\ude00", "\\u0001"]}']
    new, old = loaded(dsn, texts, OrjsonbLoader), loaded(dsn, texts, JsonbLoader)
    for t, a, b in zip(texts, new, old, strict=True):
        assert same(a, b), (t, a, b)


def test_an_integer_beyond_64_bits_stays_an_integer() -> None:
    """orjson reads it as a float: the loader must not give that."""
    loader = OrjsonbLoader(0)
    assert same(loader.load(b'{"n": 18446744073709551616}'), {"n": 18446744073709551616})
    assert same(loader.load(b"[-9223372036854775809]"), [-9223372036854775809])


@pytest.mark.parametrize("data", [b"[1,", "é".encode("latin-1"), b"[" * 2000 + b"]" * 2000])
def test_what_json_loads_fails_on_fails_the_same(data: bytes) -> None:
    try:
        expected: Any = json.loads(data)
    except (ValueError, RecursionError) as exc:
        with pytest.raises(type(exc)):
            OrjsonbLoader(0).load(data)
        return
    assert same(OrjsonbLoader(0).load(data), expected)


def test_connect_registers_it(dsn: str) -> None:
    from crossfade.config import DatabaseConfig
    from crossfade.db import connect

    db = DatabaseConfig(dsn=dsn)  # type: ignore[arg-type]
    with connect(db, "target") as c:
        loader = c.adapters.get_loader(c.adapters.types["jsonb"].oid, psycopg.pq.Format.TEXT)
        assert loader is OrjsonbLoader
        assert c.execute('SELECT \'{"a": [1, 2.5, "é"]}\'::jsonb').fetchone() == (
            {"a": [1, 2.5, "é"]},
        )
