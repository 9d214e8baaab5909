"""crossfade.db.TextListDumper dumps list parameters to the same bytes as psycopg's ListDumper
(what every connection made by crossfade.db.connect sends for ``%s`` with a list, and writes
for a list in a text COPY), over generated lists of the texts sync sends (JSON keys, block
keys) and of texts made of the characters an array literal must quote or escape."""

from __future__ import annotations

import json
import random
import uuid
from datetime import date
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg.adapt import PyFormat, Transformer
from psycopg.types.array import ListDumper
from pydantic import SecretStr

from crossfade.config import DatabaseConfig
from crossfade.db import TextListDumper, connect

TRICKY = ['"', "\\", " ", "\t", "\n", "{", "}", ",", "a", "é", "\u3000", "\u2028", "NULL", "'"]


def texts(rng: random.Random, n: int) -> list[str]:
    out = []
    for _ in range(n):
        kind = rng.randrange(5)
        if kind == 0:
            out.append(json.dumps([str(uuid.UUID(int=rng.getrandbits(128)))]))
        elif kind == 1:
            out.append(json.dumps([rng.randrange(10**6), 'x\\y"z'], ensure_ascii=False))
        elif kind == 2:
            out.append(f"email:{rng.randrange(10**5)}@example.com")
        elif kind == 3:
            out.append("".join(rng.choice(TRICKY) for _ in range(rng.randrange(0, 8))))
        else:
            out.append(rng.choice(["", "null", "NULL", "Null", "plain"]))
    return out


def lists(seed: int) -> list[list[Any]]:
    rng = random.Random(seed)
    out: list[list[Any]] = []
    for _ in range(200):
        xs: list[Any] = texts(rng, rng.randrange(0, 40))
        if xs and rng.random() < 0.3:
            xs[rng.randrange(len(xs))] = None
        out.append(xs)
    out += [[], [None], [None, None], [[]], [["a", '"b"'], ["c\\", None]]]
    out += [[1, 2, -3], [10**12], [Decimal("1.5"), None], [date(2020, 1, 2)], [True, False]]
    out += [[uuid.UUID(int=rng.getrandbits(128)) for _ in range(5)]]
    return out


def dumped(dumper_cls: type, tx: Transformer, xs: list[Any]) -> tuple[int, bytes | None]:
    d = dumper_cls(list, tx).upgrade(xs, PyFormat.TEXT)
    out = d.dump(xs)
    return d.oid, bytes(out) if out is not None else None


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_same_bytes_as_psycopg(seed: int) -> None:
    tx = Transformer()
    checked = 0
    for xs in lists(seed):
        assert dumped(TextListDumper, tx, xs) == dumped(ListDumper, tx, xs), xs
        checked += 1
    assert checked > 200


def test_quotes_and_backslashes_escaped() -> None:
    # the order of the two replaces matters: a backslash added before a quote is not doubled
    tx = Transformer()
    _oid, out = dumped(TextListDumper, tx, ['a"b\\c', '["k"]'])
    assert out == b'{"a\\"b\\\\c","[\\"k\\"]"}'


def test_connections_use_it_and_the_server_reads_it_back(dsn: str) -> None:
    conn = connect(DatabaseConfig(dsn=SecretStr(dsn)), "target")
    with conn:
        assert conn.adapters.get_dumper(list, PyFormat.AUTO) is TextListDumper
        xs = texts(random.Random(4), 300) + [None]
        (back,) = conn.execute("SELECT %s::text[]", (xs,)).fetchone() or (None,)
        assert back == xs
        with conn.transaction():
            conn.execute("CREATE TEMP TABLE t_ld (a text[]) ON COMMIT DROP")
            with conn.cursor().copy("COPY t_ld (a) FROM STDIN") as cp:
                cp.write_row((xs,))
            (copied,) = conn.execute("SELECT a FROM t_ld").fetchone() or (None,)
        assert copied == xs
    with psycopg.connect(dsn) as plain:  # psycopg's own, for contrast: also reads back the same
        (back2,) = plain.execute("SELECT %s::text[]", (xs,)).fetchone() or (None,)
        assert back2 == xs
