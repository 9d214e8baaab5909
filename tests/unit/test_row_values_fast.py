"""``row_values`` / ``event_row`` (sync maps every change event's row through them) give what the
per-value :func:`python_value` of every column gave, now that the columns it leaves as they are
skip its dispatch (a plan per row schema): over generated rows of every Connect and semantic type
the decoder produces, with Debezium's unavailable placeholder, numeric text, unknown columns and
values that cannot be converted (the same DecodeError). The references below are the code as it
was, the conversion of one value too (``_convert`` compared a semantic type with each name in
turn; it now looks it up in a table)."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import random
import uuid
from collections.abc import Mapping
from typing import Any

import pytest

from crossfade.errors import DecodeError
from crossfade.events.model import UNAVAILABLE, ChangeEvent, FieldType, RowSchema
from crossfade.events.pgtext import TIMESTAMP_NEGATIVE_INFINITY, TIMESTAMP_POSITIVE_INFINITY
from crossfade.mapping import values as mv
from crossfade.mapping.values import event_key, event_row, row_values


def ref_python_value(v: Any, ftype: FieldType | None, pg_type: str | None = None) -> Any:
    if v is None or ftype is None:
        return v
    try:
        return ref_convert(v, ftype, pg_type)
    except DecodeError:
        raise
    except (TypeError, ValueError, KeyError, ArithmeticError, OverflowError) as exc:
        what = ftype.semantic or ftype.connect_type
        raise DecodeError(f"cannot read {v!r:.80} as {what}: {exc}") from exc


def ref_convert(v: Any, ftype: FieldType, pg_type: str | None) -> Any:  # noqa: C901
    sem = ftype.semantic
    if sem in ("io.debezium.time.Date", "org.apache.kafka.connect.data.Date"):
        return v if isinstance(v, dt.date) else dt.date(1970, 1, 1) + dt.timedelta(days=v)
    if sem == "io.debezium.time.MicroTimestamp":
        return mv._ts(v, 1, False)
    if sem in ("io.debezium.time.Timestamp", "org.apache.kafka.connect.data.Timestamp"):
        return mv._ts(v, 1000, False)
    if sem == "io.debezium.time.NanoTimestamp":
        return mv._ts(v, 1000, True)
    if sem == "io.debezium.time.ZonedTimestamp":
        return mv._zoned_ts(v)
    if sem == "io.debezium.time.MicroTime":
        return mv._time(v, 1, False)
    if sem in ("io.debezium.time.Time", "org.apache.kafka.connect.data.Time"):
        return mv._time(v, 1000, False)
    if sem == "io.debezium.time.NanoTime":
        return mv._time(v, 1000, True)
    if sem == "io.debezium.time.ZonedTime":
        return mv._zoned_time(v)
    if sem == "io.debezium.time.MicroDuration":
        return v if isinstance(v, dt.timedelta) else dt.timedelta(microseconds=v)
    if sem == "io.debezium.time.Interval":
        return mv.interval(v)
    if sem == "org.apache.kafka.connect.data.Decimal":
        return mv._decimal_bytes(v, ftype)
    if sem == "io.debezium.data.VariableScaleDecimal":
        return mv._vsd(v)
    if sem == "io.debezium.data.Uuid":
        return v if isinstance(v, uuid.UUID) else uuid.UUID(v)
    if sem == "io.debezium.data.Json":
        return json.loads(v) if isinstance(v, str | bytes) else v
    if ftype.connect_type == "array":
        item_pg = pg_type[:-2] if pg_type and pg_type.endswith("[]") else None
        return [None if x is None else ref_python_value(x, ftype.items, item_pg) for x in v]
    if (
        ftype.connect_type == "string"
        and pg_type
        and mv._NUMERIC_PG.match(pg_type)
        and isinstance(v, str)
    ):
        return decimal.Decimal(mv._NUMERIC_SPECIALS.get(v, v))
    if ftype.connect_type == "bytes" and isinstance(v, bytearray | memoryview):
        return bytes(v)
    return v


def ref_row_values(
    values: Mapping[str, Any], schema: RowSchema | None, pg_types: Mapping[str, str] | None = None
) -> dict[str, Any]:
    if schema is None:
        return dict(values)
    types = dict(schema.fields)
    pg = pg_types or {}
    return {c: ref_python_value(v, types.get(c), pg.get(c)) for c, v in values.items()}


def ref_event_row(
    event: ChangeEvent, pg_types: Mapping[str, str] | None = None
) -> tuple[dict[str, Any], frozenset[str]]:
    assert event.after is not None
    after = {
        c: (None if c in event.unavailable or v == UNAVAILABLE else v)
        for c, v in event.after.items()
    }
    unavailable = event.unavailable | {c for c, v in event.after.items() if v == UNAVAILABLE}
    return ref_row_values(after, event.row_schema, pg_types), frozenset(unavailable)


def ft(connect: str, semantic: str | None = None, **params: str) -> FieldType:
    return FieldType(connect, semantic, parameters=tuple(params.items()))


# (type, pg type, generator of a value of it: good ones, and some that cannot be converted)
COLUMNS: list[tuple[FieldType, str | None, Any]] = [
    (ft("int64"), "bigint", lambda r: r.choice([0, -1, 2**62, r.randint(-9, 9)])),
    (ft("int32"), None, lambda r: r.randint(-(2**31), 2**31 - 1)),
    (ft("boolean"), "boolean", lambda r: r.choice([True, False])),
    (ft("float64"), "double precision", lambda r: r.choice([0.5, -1e300, float("nan")])),
    (ft("string"), "text", lambda r: r.choice(["", "x", "NaN", "1.5", UNAVAILABLE, "é"])),
    (ft("string"), None, lambda r: r.choice(["12.50", "abc", UNAVAILABLE])),
    (ft("string"), "numeric(14,2)", lambda r: r.choice(["12.50", "NAN", "-0.01", "oops"])),
    (ft("string"), "numeric", lambda r: r.choice(["1e5", "POSITIVE_INFINITY", UNAVAILABLE])),
    (ft("string", "io.debezium.data.Enum", allowed="a,b"), "mood", lambda r: r.choice("ab")),
    (ft("string", "io.debezium.data.Json"), "jsonb", lambda r: r.choice(['{"a": [1]}', "[", "1"])),
    (
        ft("string", "io.debezium.data.Uuid"),
        "uuid",
        lambda r: r.choice([str(uuid.UUID(int=r.getrandbits(128))), "no"]),
    ),
    (
        ft("string", "io.debezium.time.ZonedTimestamp"),
        "timestamptz",
        lambda r: r.choice(["2024-01-02T03:04:05.123456Z", "2024-13-01T00:00:00Z"]),
    ),
    (
        ft("int64", "io.debezium.time.MicroTimestamp"),
        "timestamp",
        lambda r: r.randint(-(10**15), 10**15),
    ),
    (ft("int32", "io.debezium.time.Date"), "date", lambda r: r.randint(-1000, 20000)),
    (ft("int64", "io.debezium.time.MicroTime"), "time", lambda r: r.randint(0, 86_399_999_999)),
    (
        ft("bytes", "org.apache.kafka.connect.data.Decimal", scale="2"),
        "numeric(14,2)",
        lambda r: r.choice([b"\x01\x00", bytearray(b"\xff"), decimal.Decimal("1.25")]),
    ),
    (ft("bytes"), "bytea", lambda r: r.choice([b"ab", bytearray(b"\x00"), memoryview(b"z")])),
    (
        FieldType("array", items=ft("int32", "io.debezium.time.Date")),
        "date[]",
        lambda r: [r.randint(0, 9), None],
    ),
    (
        FieldType("array", items=ft("string")),
        "numeric[]",
        lambda r: r.choice([["1.5", None], ["x"]]),
    ),
    (FieldType("array", items=ft("string")), "text[]", lambda r: r.choice([["1.5", "a"], []])),
    (ft("int64", "io.debezium.time.MicroDuration"), "interval", lambda r: r.randint(0, 10**9)),
    (ft("int32", "org.apache.kafka.connect.data.Date"), "date", lambda r: r.randint(-9, 9)),
    (
        ft("int64", "io.debezium.time.Timestamp"),
        "timestamp(3)",
        lambda r: r.choice([r.randint(-(10**12), 10**12), TIMESTAMP_POSITIVE_INFINITY]),
    ),
    (
        ft("int64", "org.apache.kafka.connect.data.Timestamp"),
        None,
        lambda r: r.choice([r.randint(0, 10**12), TIMESTAMP_NEGATIVE_INFINITY]),
    ),
    (ft("int64", "io.debezium.time.NanoTimestamp"), None, lambda r: r.randint(0, 10**18)),
    (ft("int32", "io.debezium.time.Time"), "time(3)", lambda r: r.randint(0, 86_399_999)),
    (ft("int32", "org.apache.kafka.connect.data.Time"), None, lambda r: r.randint(0, 9999)),
    (ft("int64", "io.debezium.time.NanoTime"), None, lambda r: r.randint(0, 86_399 * 10**9)),
    (
        ft("string", "io.debezium.time.ZonedTime"),
        "timetz",
        lambda r: r.choice(["03:04:05.5Z", "10:00:00+02:00", "25:00:00Z"]),
    ),
    (
        ft("string", "io.debezium.time.Interval"),
        "interval",
        lambda r: r.choice(["P1Y2M3DT4H5M6.5S", "-PT1S", "P1W", "bad"]),
    ),
    (
        ft("struct", "io.debezium.data.VariableScaleDecimal"),
        "numeric",
        lambda r: r.choice([{"scale": 2, "value": b"\x01\x00"}, {"scale": 0}, 3]),
    ),
    (ft("int32", "io.debezium.data.Bits"), "bit(3)", lambda r: r.randint(0, 7)),
]


def call(f: Any, *args: Any) -> Any:
    try:
        return ("ok", f(*args))
    except DecodeError as exc:
        return ("error", str(exc))


def spelled(v: Any) -> Any:
    """Values compared by type and text (NaN != NaN; 1 == True == 1.0)."""
    if isinstance(v, tuple):
        return tuple(spelled(x) for x in v)
    if isinstance(v, dict):
        return {k: spelled(x) for k, x in v.items()}
    if isinstance(v, list):
        return [spelled(x) for x in v]
    if isinstance(v, frozenset):
        return sorted(v)
    return (type(v).__name__, repr(v))


@pytest.mark.parametrize("seed", range(40))
def test_rows_as_the_per_value_conversion_gave(seed: int) -> None:
    r = random.Random(seed)
    cols = r.sample(range(len(COLUMNS)), r.randint(1, len(COLUMNS)))
    fields = tuple((f"c{i}", COLUMNS[i][0]) for i in cols)
    schema = RowSchema(f"t{seed}", fields)
    pg = {f"c{i}": COLUMNS[i][1] for i in cols if COLUMNS[i][1] is not None}
    for _ in range(30):
        values: dict[str, Any] = {
            f"c{i}": None if r.random() < 0.15 else COLUMNS[i][2](r) for i in cols
        }
        if r.random() < 0.3:
            values["not_in_schema"] = r.choice(["1.5", 3, None])
        for pgt in (pg, None):
            assert spelled(call(row_values, values, schema, pgt)) == spelled(
                call(ref_row_values, values, schema, pgt)
            )
        assert row_values(values, None) == ref_row_values(values, None)
        unavailable = frozenset(r.sample(sorted(values), min(len(values), r.randint(0, 2))))
        e = ChangeEvent(
            "public.t", "u", {"c0": 1}, values, 0, 0, 0, unavailable=unavailable, row_schema=schema
        )
        assert spelled(call(event_row, e, pg)) == spelled(call(ref_event_row, e, pg))


def test_event_key_unchanged() -> None:
    schema = RowSchema("k", (("id", ft("string", "io.debezium.data.Uuid")),))
    u = uuid.uuid4()
    e = ChangeEvent("public.t", "d", {"id": str(u)}, None, 0, 0, 0, key_schema=schema)
    assert event_key(e) == {"id": u}
    d = dt.date(1970, 1, 11)
    schema = RowSchema("k", (("d", ft("int32", "io.debezium.time.Date")),))
    e = ChangeEvent("public.t", "d", {"d": 10}, None, 0, 0, 0, key_schema=schema)
    assert event_key(e) == {"d": d}
