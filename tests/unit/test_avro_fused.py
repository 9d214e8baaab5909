"""The fused encoder (payload straight to Avro) writes exactly the two-step path's bytes, and
leaves to it every payload it does not take, errors included."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from crossfade.events.avro_codec import ConnectCodec
from crossfade.events.avro_fused import Fallback

RECORD = json.loads((Path(__file__).with_name("debezium_record.json")).read_text())


def _f(t: str, field: str, optional: bool = True, **kw: Any) -> dict[str, Any]:
    return {"type": t, "optional": optional, "field": field, **kw}


ROW = {
    "type": "struct",
    "optional": True,
    "name": "p.public.t.Value",
    "fields": [
        _f("int64", "id", False),
        _f("int8", "i8"),
        _f("int16", "i16"),
        _f("int32", "i32"),
        _f("int32", "day", name="org.apache.kafka.connect.data.Date", version=1),
        _f("float32", "f4"),
        _f("float64", "f8"),
        _f("boolean", "bo"),
        _f("string", "s"),
        _f("string", "snap", default="false"),
        _f("int64", "dflt", default=7),
        _f("bytes", "b"),
        _f(
            "bytes",
            "dec",
            name="org.apache.kafka.connect.data.Decimal",
            version=1,
            parameters={"scale": "2"},
        ),
        {"type": "array", "optional": True, "field": "arr", "items": _f("string", "", True)},
        {
            "type": "map",
            "optional": True,
            "field": "m",
            "keys": {"type": "string", "optional": False},
            "values": {"type": "int64", "optional": True},
        },
    ],
}
ENVELOPE = {
    "type": "struct",
    "optional": False,
    "name": "p.public.t.Envelope",
    "fields": [
        {**ROW, "field": "before"},
        {**ROW, "field": "after"},
        _f("string", "op", False),
        _f("int64", "ts_ms"),
    ],
}

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 70), max_value=1 << 70)
    | st.integers(min_value=-300, max_value=300)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=80)
    | st.sampled_from(["NaN", "Infinity", "12", "AAE=", "\ud800", "x" * 70])
)
_values = _scalars | st.lists(_scalars, max_size=3) | st.dictionaries(st.text(max_size=3), _scalars)
_row = st.fixed_dictionaries(
    {},
    optional={
        f["field"]: _values
        for f in ROW["fields"]  # type: ignore[index]
    },
)
_int = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1) | st.integers(-200, 200)
_typed = {
    "int64": _int,
    "int8": _int,
    "int16": _int,
    "int32": _int,
    "float32": st.floats(width=32) | st.floats(),
    "float64": st.floats(),
    "boolean": st.booleans(),
    "string": st.text(max_size=80),
    "bytes": st.sampled_from(["AAE=", "AQ==", ""]),
    "array": st.lists(st.none() | st.text(max_size=5), max_size=3),
    "map": st.dictionaries(st.text(max_size=3), st.none() | _int, max_size=3),
}
_typed_row = st.fixed_dictionaries(  # mostly what the fused path takes: it writes these itself
    {},
    optional={
        f["field"]: st.none() | _typed.get(f["type"], _values)  # type: ignore[index]
        for f in ROW["fields"]  # type: ignore[attr-defined]
    },
)
_payload = st.fixed_dictionaries(  # anything
    {},
    optional={
        "before": st.none() | _row | _values | _typed_row,
        "after": st.none() | _row | _typed_row,
        "op": st.sampled_from(["c", "u", "d"]) | _values,
        "ts_ms": st.integers(min_value=0, max_value=1 << 64) | _values,
    },
) | st.fixed_dictionaries(  # mostly well-typed
    {"op": st.sampled_from(["c", "u", "d"]), "ts_ms": _int},
    optional={"before": st.none() | _typed_row, "after": st.none() | _typed_row},
)
CODEC = ConnectCodec(ENVELOPE)


def _two_step(cc: ConnectCodec, payload: Any) -> tuple[str, Any]:
    try:
        return "ok", cc.avro.encode(cc.to_datum(payload))
    except Exception as exc:  # noqa: BLE001 - compared by type
        return "error", type(exc)


def _encode(cc: ConnectCodec, payload: Any) -> tuple[str, Any]:
    try:
        return "ok", cc.encode(payload)
    except Exception as exc:  # noqa: BLE001 - compared by type
        return "error", type(exc)


def _clean_row(i: int) -> dict[str, Any]:
    return {
        "id": i,
        "i8": -3,
        "i16": 300,
        "i32": -(1 << 31),
        "day": 19000,
        "f4": 1.5,
        "f8": math.pi,
        "bo": True,
        "s": "é ☃ " * 30,
        "b": "AAE=",
        "dec": "AQ==",
        "arr": ["a", None],
        "m": {"k": 1},
    }


def test_the_fused_path_is_taken_and_writes_the_two_step_bytes() -> None:
    assert CODEC._fused is not None
    for i in (0, 63, 64, -65, 1 << 40, (1 << 63) - 1, -(1 << 63)):
        payload = {"before": None, "after": _clean_row(i), "op": "u", "ts_ms": i & (1 << 62)}
        fused = CODEC._fused(payload)  # raises if it did not take it
        assert fused == _two_step(CODEC, payload)[1]


@settings(max_examples=400, deadline=None)
@given(_payload)
def test_any_payload_encodes_or_fails_as_the_two_step_path(payload: dict[str, Any]) -> None:
    assert _encode(CODEC, payload) == _two_step(CODEC, payload)


def test_debezium_record_same_bytes() -> None:
    for raw in (RECORD["key"], RECORD["value"]):
        doc = json.loads(raw)
        cc = ConnectCodec(doc["schema"])
        assert cc._fused is not None
        assert cc._fused(doc["payload"]) == cc.avro.encode(cc.to_datum(doc["payload"]))


def test_a_payload_it_does_not_take_falls_back() -> None:
    assert CODEC._fused is not None
    for payload in (None, {"after": {"id": True}}, {"after": {"id": 1, "f8": 1}}, []):
        try:
            CODEC._fused(payload)
        except Fallback:
            continue
        raise AssertionError(f"fused took {payload!r}")


def test_kept_string_encodings_stay_right_past_the_cache_bound() -> None:
    cc = ConnectCodec(ENVELOPE)
    assert cc._fused is not None
    rows = [{"id": 1, "s": s, "snap": s} for s in ("", "é", "x" * 32, "x" * 33, "y" * 200)]
    rows += [{"id": i, "s": f"s{i}"} for i in range(600)]
    for _ in range(2):  # the second pass reads what the first kept
        for row in rows:
            payload = {"after": row, "op": "c"}
            assert cc._fused(payload) == cc.avro.encode(cc.to_datum(payload))


def test_long_ints_around_every_branch_and_past_the_high_part_cache() -> None:
    """Varints of 1 to 10 bytes (the long branch keeps the part above 28 bits), 64-bit edges,
    and ints beyond 64 bits (they fall back: the two-step path reports them)."""
    cc = ConnectCodec(ENVELOPE)
    assert cc._fused is not None
    edges = [0, 63, 64, -64, -65, 8191, 8192, (1 << 27) - 1, 1 << 27, (1 << 27) + 1, -(1 << 27)]
    edges += [(1 << 63) - 1, -(1 << 63), 1 << 62, -(1 << 62) - 1, 1_763_820_000_100_000_000]
    edges += [(1 << k) + d for k in range(28, 63, 5) for d in (-1, 0, 1)]
    edges += [1_763_820_000_000_000 + 7919 * i for i in range(5000)]  # past the cache bound
    for i in edges + edges[:50]:  # again: read from what was kept
        payload = {"before": None, "after": {"id": i, "i8": 1}, "op": "u", "ts_ms": ~i}
        assert cc._fused(payload) == cc.avro.encode(cc.to_datum(payload)), i
    for i in (1 << 63, -(1 << 63) - 1, 1 << 64, -(1 << 64), 1 << 100, -(1 << 100)):
        payload = {"before": None, "after": {"id": i}, "op": "u"}
        try:
            cc._fused(payload)
        except Fallback:
            assert _encode(cc, payload) == _two_step(cc, payload)
            continue
        raise AssertionError(f"fused took {i}")


def test_a_payload_missing_fields_takes_their_defaults_as_the_two_step_path() -> None:
    """Debezium writes every field; a payload without some is encoded by the lenient encoder."""
    cc = ConnectCodec(ENVELOPE)
    assert cc._fused is not None
    for payload in ({"after": {"id": 5}, "op": "c"}, {"op": "d", "before": {"id": 1}}):
        assert cc._fused(payload) == cc.avro.encode(cc.to_datum(payload))


def test_strings_of_every_length_form() -> None:
    """Lengths of one, two and three varint bytes (the length table ends at 8192 bytes)."""
    cc = ConnectCodec(ENVELOPE)
    assert cc._fused is not None
    for n in (0, 1, 31, 32, 33, 63, 64, 65, 8191, 8192, 8193, 20000):
        for s in ("x" * n, "é" * (n // 2)):
            payload = {"before": None, "after": {"id": n, "s": s}, "op": "c"}
            assert cc._fused(payload) == cc.avro.encode(cc.to_datum(payload)), n
