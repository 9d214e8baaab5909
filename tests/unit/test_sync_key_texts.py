"""The texts sync spells keys and member rows with are the ones the unoptimised code gave, over
generated values of every type a key or a mapped value has (strings with quotes, backslashes,
control and non-ASCII characters, ints, bools, floats, UUIDs, dates, decimals, lists, dicts,
None): ``key_text`` (ledger entries, tombstones, crosswalk, parents), ``event_key_id`` (a
batch's origins, poisoned keys) and the dedup sink's ``_json_row`` (a member's stored row).
Blocking keys of dedup (``Matcher.block_keys``' text) too. The references below are the code
as it was."""

from __future__ import annotations

import json
import math
import random
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from crossfade.events.model import ChangeEvent
from crossfade.mapping.dedup import _block_text
from crossfade.mapping.engine import jsonable
from crossfade.sync.key_text import key_text
from crossfade.sync.sinks.dedup import _json_row
from crossfade.target.apply import event_key_id

_REF_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def ref_key_text(values: Any) -> str:
    return _REF_ENCODER.encode([jsonable(v) for v in values])


def ref_event_key_id(e: ChangeEvent) -> str:
    return json.dumps(e.key, sort_keys=True, default=str)


def ref_json_row(values: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dict(values), default=str, ensure_ascii=False))  # type: ignore[no-any-return]


CHARS = [
    '"',
    "\\",
    "/",
    "\n",
    "\t",
    "\x00",
    "\x1f",
    "\x7f",
    "a",
    "Z",
    "é",
    "€",
    "\u2028",
    "😀",
    " ",
]


def value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(14 if depth < 2 else 11)
    if kind == 0:
        return "".join(rng.choice(CHARS) for _ in range(rng.randrange(0, 6)))
    if kind == 1:
        return str(uuid.UUID(int=rng.getrandbits(128)))
    if kind == 2:
        return rng.choice([0, 1, -1, 2**63, -(2**70), rng.randrange(-(10**9), 10**9)])
    if kind == 3:
        return rng.choice([True, False])
    if kind == 4:
        return None
    if kind == 5:
        return rng.choice([0.0, -0.0, 1.5, 1e300, 1e-7, float("nan"), float("inf")])
    if kind == 6:
        return uuid.UUID(int=rng.getrandbits(128))
    if kind == 7:
        return date(2000 + rng.randrange(30), 1 + rng.randrange(12), 1 + rng.randrange(28))
    if kind == 8:
        return datetime(2024, 5, 6, 7, 8, 9, rng.randrange(10**6), tzinfo=UTC)
    if kind == 9:
        return Decimal(rng.choice(["1.50", "-0", "1E+3", "12345678901234567890.1"]))
    if kind == 10:
        return f"mail:{rng.randrange(1000)}@example.com"
    if kind == 11:
        return [value(rng, depth + 1) for _ in range(rng.randrange(3))]
    if kind == 12:
        return (value(rng, depth + 1),)
    return {f"k{i}": value(rng, depth + 1) for i in range(rng.randrange(3))}


def same(a: Any, b: Any) -> bool:
    """Equal, NaN included (a NaN is not equal to itself)."""
    return json.dumps(a, default=repr, sort_keys=True) == json.dumps(
        b, default=repr, sort_keys=True
    )


@pytest.mark.parametrize("seed", range(4))
def test_key_text_as_before(seed: int) -> None:
    rng = random.Random(seed)
    kinds: set[str] = set()
    for _ in range(3000):
        vals = [value(rng) for _ in range(rng.choice([1, 1, 1, 2, 3]))]
        kinds.update(type(v).__name__ for v in vals)
        as_list, as_tuple, as_gen = list(vals), tuple(vals), (v for v in vals)
        want = ref_key_text(vals)
        assert key_text(as_list) == want, vals
        assert key_text(as_tuple) == want, vals
        assert key_text(as_gen) == want, vals
    assert {"str", "int", "UUID", "bool", "float", "date", "list", "NoneType"} <= kinds
    assert key_text([]) == ref_key_text([]) == "[]"


@pytest.mark.parametrize("seed", range(4))
def test_event_key_id_as_before(seed: int) -> None:
    rng = random.Random(seed)
    fast = 0
    for _ in range(3000):
        n = rng.choice([1, 1, 1, 2])
        names = rng.sample(["id", "ID", 'a"b', "é", "k\\", "z"], n)
        key: dict[Any, Any] = {name: value(rng) for name in names}
        if rng.random() < 0.02:
            key = {7: "seven"}  # a key name that is no string: the old path
        e = ChangeEvent("public.t", "u", key, {}, 1, 0)
        assert event_key_id(e) == ref_event_key_id(e), key
        fast += n == 1 and type(next(iter(key.values()))) in (str, int)
    assert fast > 500


@pytest.mark.parametrize("seed", range(4))
def test_json_row_as_before(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(2000):
        row: dict[Any, Any] = {f"c{i}": value(rng) for i in range(rng.randrange(0, 8))}
        if rng.random() < 0.02:
            row[1] = "an int column name"
        got, want = _json_row(row), ref_json_row(row)
        assert same(got, want), row
        assert list(got) == list(want)
        for k, v in got.items():  # the same types too (a date is text, a tuple a list)
            assert type(v) is type(want[k]) or (isinstance(v, float) and math.isnan(v)), (k, v)


@pytest.mark.parametrize("seed", range(4))
def test_block_text_as_before(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(3000):
        parts = [rng.choice(["email", "phone+name", 'r"1'])]
        parts += [
            value(rng) if rng.random() < 0.2 else str(value(rng)) for _ in range(rng.randrange(3))
        ]
        assert _block_text(parts) == json.dumps(parts, default=str, ensure_ascii=False), parts
