"""crossfade.target.store.staging.text_array: a list of texts as the one text a COPY of a ``text[]``
column writes as the same bytes as psycopg's list dumper (crossfade.db.TextListDumper, what a
connection made by crossfade.db.connect uses), and dedup members' block keys staged that way."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
from psycopg._copy_base import format_row_text
from psycopg.adapt import AdaptersMap, Transformer
from psycopg.postgres import adapters as pg_adapters

from crossfade.db import TextListDumper
from crossfade.target.store import dedup as store_dedup
from crossfade.target.store.staging import text_array
from tests.unit.test_list_dumper import lists, texts

UTF8: Any = SimpleNamespace(info=SimpleNamespace(encoding="utf-8"))
# every character psycopg's needs-quotes test names, its neighbours, and Unicode spaces it
# does not (U+00A0, U+200B): each alone, and inside a text
ODD = [chr(c) for c in range(0x21)] + [chr(c) for c in range(0x7B, 0x80)] + ['"', "\\", ","]
ODD += ["\u1680", "\u2000", "\u200a", "\u200b", "\u2028", "\u2029", "\u202f", "\u205f", "\u3000"]
ODD += [
    "\u00a0",
    "\u0085",
    "\u1f80",
    "null",
    "NULL",
    "nUlL",
    "null\n",
    "nul",
    "nulll",
    "é",
    "\u212a",
]


def copy_bytes(tx: Transformer, value: Any) -> bytes | str:
    out = bytearray()
    try:
        format_row_text((value,), tx, out)
    except psycopg.DataError as exc:  # a NUL: refused either way
        return str(exc)
    return bytes(out)


def crossfade_tx() -> Transformer:
    am = AdaptersMap(pg_adapters)
    am.register_dumper(list, TextListDumper)
    return Transformer(SimpleNamespace(adapters=am, connection=None))  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_same_copy_bytes_as_psycopg(seed: int) -> None:
    tx = crossfade_tx()
    rng = random.Random(seed)
    cases = [xs for xs in lists(seed) if all(type(x) is str for x in xs)]
    cases += [[c] for c in ODD] + [[f"a{c}b", c + c] for c in ODD]
    cases += [texts(rng, rng.randrange(1, 30)) for _ in range(300)]
    for xs in cases:
        literal = text_array(UTF8, xs)
        assert isinstance(literal, str)
        assert copy_bytes(tx, literal) == copy_bytes(tx, xs), xs
    assert len(cases) > 500


def test_anything_else_left_to_psycopg() -> None:
    for xs in ([None], ["a", None], [1], [["a"]]):
        assert text_array(UTF8, xs) is xs
    latin: Any = SimpleNamespace(info=SimpleNamespace(encoding="iso8859-1"))
    assert text_array(latin, ["a b"]) == ["a b"]


def test_members_block_keys_staged_as_one_text(monkeypatch: pytest.MonkeyPatch) -> None:
    staged: list[tuple[Any, ...]] = []

    def stage(_conn: Any, _like: Any, _cols: Any, rows: Any, _merge: Any, **_kw: Any) -> None:
        staged.extend(rows)

    monkeypatch.setattr(store_dedup, "stage_and_merge", stage)
    store_dedup.write_members(
        UTF8, "bk", "t", [("m1", ["1"], ["name:a b", "phone:1"], {}, 5)], [("m2", ["2"], 6)]
    )
    assert [r[2] for r in staged] == ['{"name:a b",phone:1}', "{}"]
