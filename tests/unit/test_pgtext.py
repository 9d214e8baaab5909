"""Unit tests of crossfade.events.pgtext: Connect/Avro values -> PostgreSQL input text.

The tests named ``test_real_pg_*`` check the literals against a real PostgreSQL server:
``CROSSFADE_TEST_PG_DSN`` if set, otherwise the session's embedded server (tests/conftest.py).
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crossfade.errors import DecodeError
from crossfade.events import pgtext
from crossfade.events.model import FieldType
from crossfade.events.pgtext import (
    TIMESTAMP_NEGATIVE_INFINITY,
    TIMESTAMP_POSITIVE_INFINITY,
    converter_for,
    date_text,
    decimal_text,
    micros_timestamp_text,
    to_pg_text,
)

MICROS_PER_DAY = 86_400_000_000
EPOCH = dt.datetime(1970, 1, 1)


def ft(semantic: str | None, connect_type: str = "int64", **params: str) -> FieldType:
    return FieldType(connect_type, semantic, True, None, tuple(params.items()))


def array_of(item: FieldType) -> FieldType:
    return FieldType("array", None, True, item)


def days(y: int, m: int, d: int) -> int:
    return pgtext._days_from_civil(y, m, d)


def micros(y: int, m: int, d: int, hh: int = 0, mm: int = 0, ss: int = 0, us: int = 0) -> int:
    return days(y, m, d) * MICROS_PER_DAY + ((hh * 60 + mm) * 60 + ss) * 1_000_000 + us


MICRO_TS = ft("io.debezium.time.MicroTimestamp")
MILLI_TS = ft("io.debezium.time.Timestamp")
CONNECT_TS = ft("org.apache.kafka.connect.data.Timestamp")
NANO_TS = ft("io.debezium.time.NanoTimestamp")
DATE = ft("io.debezium.time.Date", "int32")
CONNECT_DATE = ft("org.apache.kafka.connect.data.Date", "int32")
MICRO_TIME = ft("io.debezium.time.MicroTime")
MILLI_TIME = ft("io.debezium.time.Time", "int32")
NANO_TIME = ft("io.debezium.time.NanoTime")
DURATION = ft("io.debezium.time.MicroDuration")
DECIMAL2 = ft(
    "org.apache.kafka.connect.data.Decimal",
    "bytes",
    scale="2",
    **{"connect.decimal.precision": "10"},
)
TEXT = FieldType("string")
TEXT_ARRAY = array_of(TEXT)


# ------------------------------------------------------------------------------------------------
# Scalars
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "ftype", "expected"),
    [
        # None is NULL whatever the type
        (None, MICRO_TS, None),
        (None, FieldType("struct", "some.Unsupported"), None),
        # integers and booleans
        (0, FieldType("int16"), "0"),
        (-32768, FieldType("int16"), "-32768"),
        (9223372036854775807, FieldType("int64"), "9223372036854775807"),
        (True, FieldType("int32"), "1"),
        (2024, ft("io.debezium.time.Year", "int32"), "2024"),
        (True, FieldType("boolean"), "t"),
        (False, FieldType("boolean"), "f"),
        # floats
        (0.1, FieldType("float64"), "0.1"),
        (1e300, FieldType("float64"), "1e+300"),
        (-0.0, FieldType("float64"), "-0.0"),
        (3, FieldType("float64"), "3.0"),
        (math.nan, FieldType("float64"), "NaN"),
        (math.inf, FieldType("float64"), "Infinity"),
        (-math.inf, FieldType("float64"), "-Infinity"),
        (struct.unpack("<f", struct.pack("<f", 0.1))[0], FieldType("float32"), "0.1"),
        (16777216.0, FieldType("float32"), "16777216"),
        (math.nan, FieldType("float32"), "NaN"),
        (-math.inf, FieldType("float32"), "-Infinity"),
        # strings, as is
        ("héllo, 'wörld'\t\n\\", TEXT, "héllo, 'wörld'\t\n\\"),
        ("", TEXT, ""),
        ('{"a": [1, null]}', ft("io.debezium.data.Json", "string"), '{"a": [1, null]}'),
        ("8e3d9b2c-1f4a-4e0b-9a55-7d1c2e3f4a5b", ft("io.debezium.data.Uuid", "string"), "8e3d9b2c-1f4a-4e0b-9a55-7d1c2e3f4a5b"),
        ("happy", ft("io.debezium.data.Enum", "string", allowed="sad,ok,happy"), "happy"),
        ("<a>x</a>", ft("io.debezium.data.Xml", "string"), "<a>x</a>"),
        ("Top.Science", ft("io.debezium.data.Ltree", "string"), "Top.Science"),
        ("2024-10-27T00:30:00.000000Z", ft("io.debezium.time.ZonedTimestamp", "string"), "2024-10-27T00:30:00.000000Z"),
        ("-infinity", ft("io.debezium.time.ZonedTimestamp", "string"), "-infinity"),
        ("10:15:30.5Z", ft("io.debezium.time.ZonedTime", "string"), "10:15:30.5Z"),
        ("P1Y2M3DT4H5M6.78S", ft("io.debezium.time.Interval", "string"), "P1Y2M3DT4H5M6.78S"),
        ("NAN", TEXT, "NAN"),
        ("123.456", TEXT, "123.456"),
        # bytes
        (b"\xde\xad\xbe\xef", FieldType("bytes"), "\\xdeadbeef"),
        (b"", FieldType("bytes"), "\\x"),
        (bytearray(b"\x00\n"), FieldType("bytes"), "\\x000a"),
    ],
)  # fmt: skip
def test_scalars(value: Any, ftype: FieldType, expected: str | None) -> None:
    assert to_pg_text(value, ftype) == expected
    assert converter_for(ftype)(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "1970-01-01 00:00:00.000000"),
        (-1, "1969-12-31 23:59:59.999999"),
        (1711852200123456, "2024-03-31 02:30:00.123456"),  # in the EU DST gap: no zone, exact
        (1729989000000000, "2024-10-27 00:30:00.000000"),  # the day the clocks go back
        (micros(2024, 2, 29, 12), "2024-02-29 12:00:00.000000"),  # leap day
        (micros(2000, 2, 29, 23, 59, 59, 999999), "2000-02-29 23:59:59.999999"),
        (micros(1900, 3, 1), "1900-03-01 00:00:00.000000"),  # 1900 is no leap year
        (micros(1, 1, 1), "0001-01-01 00:00:00.000000"),
        (micros(999, 12, 31, 1, 2, 3, 4), "0999-12-31 01:02:03.000004"),
        (micros(9999, 12, 31, 23, 59, 59, 999999), "9999-12-31 23:59:59.999999"),
        (micros(10000, 1, 1), "10000-01-01 00:00:00.000000"),
        (micros(0, 12, 31, 23, 59, 59, 999999), "0001-12-31 23:59:59.999999 BC"),
        (micros(-43, 3, 15, 12), "0044-03-15 12:00:00.000000 BC"),
        (micros(-4713, 11, 24), "4714-11-24 00:00:00.000000 BC"),  # PostgreSQL's minimum
        (micros(294276, 12, 31, 23, 59, 59, 999999), "294276-12-31 23:59:59.999999"),  # maximum
        (TIMESTAMP_POSITIVE_INFINITY, "infinity"),
        (TIMESTAMP_NEGATIVE_INFINITY, "-infinity"),
        (dt.datetime(2024, 1, 2, 3, 4, 5, 6), "2024-01-02 03:04:05.000006"),
        (
            dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            "2024-01-02 01:04:05.000000",
        ),
    ],
)
def test_micro_timestamp(value: Any, expected: str) -> None:
    assert to_pg_text(value, MICRO_TS) == expected


@pytest.mark.parametrize("value", [micros(-4713, 11, 23, 23, 59, 59, 999999), micros(294277, 1, 1)])
def test_timestamp_outside_postgres_range(value: int) -> None:
    with pytest.raises(DecodeError, match="range"):
        to_pg_text(value, MICRO_TS)


def test_julian_day_zero_is_postgres_minimum() -> None:
    # PostgreSQL's minimum date is Julian day 0; the Unix epoch is Julian day 2440588.
    assert days(-4713, 11, 24) == -2440588


@pytest.mark.parametrize("ftype", [MILLI_TS, CONNECT_TS])
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1711852200123, "2024-03-31 02:30:00.123000"),
        (-1, "1969-12-31 23:59:59.999000"),
        (TIMESTAMP_POSITIVE_INFINITY, "infinity"),
        (TIMESTAMP_NEGATIVE_INFINITY, "-infinity"),
        (micros(-99, 1, 1) // 1000, "0100-01-01 00:00:00.000000 BC"),
    ],
)
def test_milli_timestamp(ftype: FieldType, value: int, expected: str) -> None:
    assert to_pg_text(value, ftype) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1711852200123456000, "2024-03-31 02:30:00.123456"),
        (1711852200123456499, "2024-03-31 02:30:00.123456"),
        (1711852200123456500, "2024-03-31 02:30:00.123456"),  # half to even
        (1711852200123457500, "2024-03-31 02:30:00.123458"),  # half to even
        (1711852200123456501, "2024-03-31 02:30:00.123457"),
        (-1500, "1969-12-31 23:59:59.999998"),
        (-500, "1970-01-01 00:00:00.000000"),
        (TIMESTAMP_POSITIVE_INFINITY, "infinity"),
        (TIMESTAMP_NEGATIVE_INFINITY, "-infinity"),
    ],
)
def test_nano_timestamp_rounds_half_even(value: int, expected: str) -> None:
    assert to_pg_text(value, NANO_TS) == expected


@pytest.mark.parametrize("ftype", [DATE, CONNECT_DATE])
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "1970-01-01"),
        (19782, "2024-02-29"),
        (-1, "1969-12-31"),
        (days(2024, 3, 31), "2024-03-31"),
        (days(1, 1, 1), "0001-01-01"),
        (days(0, 12, 31), "0001-12-31 BC"),
        (days(0, 2, 29), "0001-02-29 BC"),  # 1 BC is a leap year in the proleptic calendar
        (days(9999, 12, 31), "9999-12-31"),
        (days(10000, 1, 1), "10000-01-01"),
        (days(-4713, 11, 24), "4714-11-24 BC"),
        (days(5874897, 12, 31), "5874897-12-31"),
        (dt.date(2024, 2, 29), "2024-02-29"),
    ],
)
def test_dates(ftype: FieldType, value: Any, expected: str) -> None:
    assert to_pg_text(value, ftype) == expected


@pytest.mark.parametrize("value", [days(-4713, 11, 23), days(5874898, 1, 1)])
def test_date_outside_postgres_range(value: int) -> None:
    with pytest.raises(DecodeError, match="range"):
        to_pg_text(value, DATE)


@pytest.mark.parametrize(
    ("value", "ftype", "expected"),
    [
        (0, MICRO_TIME, "00:00:00.000000"),
        (45296789012, MICRO_TIME, "12:34:56.789012"),
        (86_399_999_999, MICRO_TIME, "23:59:59.999999"),
        (86_400_000_000, MICRO_TIME, "24:00:00.000000"),
        (45296789, MILLI_TIME, "12:34:56.789000"),
        (45296789, ft("org.apache.kafka.connect.data.Time", "int32"), "12:34:56.789000"),
        (45296789012500, NANO_TIME, "12:34:56.789012"),  # half to even
        (45296789013500, NANO_TIME, "12:34:56.789014"),
        (dt.time(1, 2, 3, 4), MICRO_TIME, "01:02:03.000004"),
        (0, DURATION, "0:00:00.000000"),
        (90_061_000_001, DURATION, "25:01:01.000001"),
        (-1_500_000, DURATION, "-0:00:01.500000"),
        (366 * MICROS_PER_DAY, DURATION, "8784:00:00.000000"),
    ],
)
def test_times_and_durations(value: Any, ftype: FieldType, expected: str) -> None:
    assert to_pg_text(value, ftype) == expected


@pytest.mark.parametrize("value", [-1, 86_400_000_001])
def test_time_outside_a_day(value: int) -> None:
    with pytest.raises(DecodeError, match="24:00:00"):
        to_pg_text(value, MICRO_TIME)


@pytest.mark.parametrize(
    ("value", "ftype", "expected"),
    [
        (b"\x04\xd2", DECIMAL2, "12.34"),
        (b"\xfb\x2e", DECIMAL2, "-12.34"),
        (b"\x00", DECIMAL2, "0.00"),
        (b"\x01", DECIMAL2, "0.01"),
        (b"\xff", DECIMAL2, "-0.01"),
        (b"\x7f", ft("org.apache.kafka.connect.data.Decimal", "bytes", scale="0"), "127"),
        (b"\x05", ft("org.apache.kafka.connect.data.Decimal", "bytes", scale="-2"), "500"),
        (b"\x01", ft("org.apache.kafka.connect.data.Decimal", "bytes", scale="5"), "0.00001"),
        (
            (10**40 + 1).to_bytes(17, "big", signed=True),
            ft("org.apache.kafka.connect.data.Decimal", "bytes", scale="20"),
            "100000000000000000000.00000000000000000001",
        ),
        (decimal.Decimal("12.340"), DECIMAL2, "12.340"),
        (decimal.Decimal("1E+2"), DECIMAL2, "100"),
        (decimal.Decimal("NaN"), DECIMAL2, "NaN"),
        (decimal.Decimal("-Infinity"), DECIMAL2, "-Infinity"),
        ({"scale": 3, "value": b"\x30\x39"}, FieldType("struct", "io.debezium.data.VariableScaleDecimal"), "12.345"),
        ({"scale": 0, "value": b"\x80"}, FieldType("struct", "io.debezium.data.VariableScaleDecimal"), "-128"),
    ],
)  # fmt: skip
def test_decimals(value: Any, ftype: FieldType, expected: str) -> None:
    assert to_pg_text(value, ftype) == expected


@settings(max_examples=300)
@given(st.integers(min_value=-(10**60), max_value=10**60), st.integers(min_value=-5, max_value=40))
def test_decimal_text_is_exact(unscaled: int, scale: int) -> None:
    with decimal.localcontext(decimal.Context(prec=200)):
        assert decimal.Decimal(decimal_text(unscaled, scale)) == decimal.Decimal(unscaled).scaleb(
            -scale
        )


@pytest.mark.parametrize(
    ("bits", "length"), [("10110", 5), ("00110", 5), ("100000000001", 12), ("1", 1), ("0" * 9, 9)]
)
def test_bits(bits: str, length: int) -> None:
    # Debezium: bit i of the little-endian bytes is the i-th character from the right.
    raw = int(bits, 2).to_bytes((length + 7) // 8, "little")
    assert to_pg_text(raw, ft("io.debezium.data.Bits", "bytes", length=str(length))) == bits


def test_geometry() -> None:
    wkb = bytes.fromhex("0101000000000000000000F03F0000000000000040")
    point = FieldType("struct", "io.debezium.data.geometry.Point")
    assert to_pg_text({"x": 1.5, "y": -2.0, "wkb": wkb, "srid": None}, point) == "(1.5,-2.0)"
    geometry = FieldType("struct", "io.debezium.data.geometry.Geometry")
    assert to_pg_text({"wkb": wkb, "srid": 4326}, geometry) == "SRID=4326;" + wkb.hex().upper()
    assert to_pg_text({"wkb": wkb, "srid": None}, geometry) == wkb.hex().upper()


def test_vectors() -> None:
    vector = FieldType("array", "io.debezium.data.DoubleVector", True, FieldType("float64"))
    assert to_pg_text([1.0, 2.5, -3.0], vector) == "[1.0,2.5,-3.0]"


# ------------------------------------------------------------------------------------------------
# Arrays and maps
# ------------------------------------------------------------------------------------------------


def parse_pg_array(text: str) -> Any:
    """Reference parser of PostgreSQL array literals (text elements)."""
    pos = 0

    def parse() -> list[Any]:
        nonlocal pos
        assert text[pos] == "{", text
        pos += 1
        items: list[Any] = []
        if text[pos] == "}":
            pos += 1
            return items
        while True:
            if text[pos] == "{":
                items.append(parse())
            elif text[pos] == '"':
                pos += 1
                buf = []
                while text[pos] != '"':
                    if text[pos] == "\\":
                        pos += 1
                    buf.append(text[pos])
                    pos += 1
                pos += 1
                items.append("".join(buf))
            else:
                start = pos
                while text[pos] not in ",}":
                    pos += 1
                token = text[start:pos].strip()
                items.append(None if token.upper() == "NULL" else token)
            if text[pos] == ",":
                pos += 1
                continue
            assert text[pos] == "}", text
            pos += 1
            return items

    result = parse()
    assert pos == len(text), text
    return result


@pytest.mark.parametrize(
    ("value", "ftype", "expected"),
    [
        ([], array_of(FieldType("int32")), "{}"),
        ([1, 2, None], array_of(FieldType("int32")), '{"1","2",NULL}'),
        (['a"b', "c\\d", "NULL", "", " x ", "{}", "a,b"], TEXT_ARRAY, '{"a\\"b","c\\\\d","NULL",""," x ","{}","a,b"}'),
        ([b"\x00\xff", None], array_of(FieldType("bytes")), '{"\\\\x00ff",NULL}'),
        ([0, TIMESTAMP_POSITIVE_INFINITY], array_of(MICRO_TS), '{"1970-01-01 00:00:00.000000","infinity"}'),
        ([19782], array_of(DATE), '{"2024-02-29"}'),
        ([True, None], array_of(FieldType("boolean")), '{"t",NULL}'),
        ([b"\x04\xd2"], array_of(DECIMAL2), '{"12.34"}'),
        ([[1, 2], [3, None]], array_of(array_of(FieldType("int64"))), '{{"1","2"},{"3",NULL}}'),
        ([[], []], array_of(array_of(FieldType("int64"))), "{{},{}}"),
    ],
)  # fmt: skip
def test_arrays(value: Any, ftype: FieldType, expected: str) -> None:
    assert to_pg_text(value, ftype) == expected


def test_text_array_with_specials_parses_back() -> None:
    value = ['a"b', "c\\d", "NULL", "", " x ", "{}", "a,b", None, '\\\\""']
    assert parse_pg_array(to_pg_text(value, TEXT_ARRAY)) == value


def test_hstore_map() -> None:
    hstore = FieldType("map", None, True, FieldType("string"))
    assert (
        to_pg_text({"a": "1", 'b"': None, "c\\": "x y"}, hstore)
        == '"a"=>"1", "b\\""=>NULL, "c\\\\"=>"x y"'
    )
    assert to_pg_text({}, hstore) == ""
    entries = [{"key": "k", "value": "v"}]  # Confluent's map-as-array form
    assert to_pg_text(entries, hstore) == '"k"=>"v"'


# Text as decoded from Avro: valid UTF-8 (no lone surrogates), and no NUL (tested separately).
NUL_FREE_TEXT = st.text(
    alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))
)


@settings(max_examples=400)
@given(st.lists(st.one_of(st.none(), NUL_FREE_TEXT), max_size=12))
def test_text_arrays_parse_back(value: list[str | None]) -> None:
    assert parse_pg_array(to_pg_text(value, TEXT_ARRAY)) == value


@settings(max_examples=200)
@given(
    st.integers(min_value=1, max_value=4).flatmap(
        lambda width: st.lists(
            st.lists(st.one_of(st.none(), NUL_FREE_TEXT), min_size=width, max_size=width),
            min_size=1,
            max_size=4,
        )
    )
)
def test_nested_text_arrays_parse_back(value: list[list[str | None]]) -> None:
    assert parse_pg_array(to_pg_text(value, array_of(TEXT_ARRAY))) == value


# ------------------------------------------------------------------------------------------------
# Properties of the date/time arithmetic
# ------------------------------------------------------------------------------------------------

PY_MIN_MICROS = micros(1, 1, 1)
PY_END_MICROS = micros(10000, 1, 1)
PG_MIN_MICROS = micros(-4713, 11, 24)
PG_END_MICROS = micros(294277, 1, 1)


@settings(max_examples=1000)
@given(st.integers(min_value=PY_MIN_MICROS, max_value=PY_END_MICROS - 1))
def test_micro_timestamp_matches_python_datetime(value: int) -> None:
    expected = (EPOCH + dt.timedelta(microseconds=value)).strftime("%Y-%m-%d %H:%M:%S.%f")
    if value < micros(1000, 1, 1):  # strftime does not zero-pad years below 1000 everywhere
        d = EPOCH + dt.timedelta(microseconds=value)
        expected = f"{d.year:04d}" + expected[expected.index("-") :]
    assert to_pg_text(value, MICRO_TS) == expected
    # The integer-only path used outside Python's range agrees with datetime too.
    assert pgtext._exact_timestamp_text(value) == expected


@settings(max_examples=1000)
@given(st.integers(min_value=PG_MIN_MICROS, max_value=PG_END_MICROS - 1))
def test_micro_timestamp_round_trips_over_postgres_range(value: int) -> None:
    text = to_pg_text(value, MICRO_TS)
    if value in (TIMESTAMP_POSITIVE_INFINITY, TIMESTAMP_NEGATIVE_INFINITY):
        return
    assert text is not None
    bc = text.endswith(" BC")
    date_part, time_part = text.removesuffix(" BC").split(" ")
    y, m, d = (int(p) for p in date_part.split("-"))
    hh, mm, rest = time_part.split(":")
    ss, frac = rest.split(".")
    year = 1 - y if bc else y
    assert 1 <= m <= 12 and 1 <= d <= 31 and y >= 1
    back = micros(year, m, d, int(hh), int(mm), int(ss), int(frac))
    assert back == value


@settings(max_examples=1000)
@given(st.integers(min_value=days(1, 1, 1), max_value=days(9999, 12, 31)))
def test_dates_match_python_date(value: int) -> None:
    expected = dt.date.fromordinal(dt.date(1970, 1, 1).toordinal() + value).isoformat()
    assert date_text(value) == expected
    assert pgtext._exact_date_text(value) == expected


@settings(max_examples=500)
@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_civil_day_conversion_round_trips(value: int) -> None:
    assert days(*pgtext._civil_from_days(value)) == value


def test_timestamp_text_is_exact_not_float() -> None:
    # 2**53 + 1 µs cannot be represented by a float
    value = 2**53 + 1
    assert micros_timestamp_text(value).endswith(".740993")


# ------------------------------------------------------------------------------------------------
# Errors and caching
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "ftype", "message"),
    [
        ("a\x00b", TEXT, "NUL"),
        ('{"a": "\x00"}', ft("io.debezium.data.Json", "string"), "NUL"),
        (["ok", "bad\x00"], TEXT_ARRAY, "NUL"),
        ({"k\x00": "v"}, FieldType("map", None, True, FieldType("string")), "NUL"),
        ("5", FieldType("int32"), "int32"),
        (5, TEXT, "string"),
        (b"x", TEXT, "string"),
        ("x", FieldType("bytes"), "bytes"),
        ("3q2+7w==", FieldType("bytes"), "bytes"),
        ("x", MICRO_TS, "MicroTimestamp"),
        (1.5, FieldType("int64"), "int64"),
        ("1.5", FieldType("float64"), "float64"),
        (2, FieldType("boolean"), "boolean"),
        ("abc", TEXT_ARRAY, "array"),
        ({"a": 1}, FieldType("struct", "x.Unknown"), "x.Unknown"),
        ({"a": 1}, FieldType("struct"), "struct"),
        (1, FieldType("weird"), "weird"),
        (b"\x01", ft("org.apache.kafka.connect.data.Decimal", "bytes"), "scale"),
        ({"scale": 1}, FieldType("struct", "io.debezium.data.VariableScaleDecimal"), "VariableScaleDecimal"),
        ({"wkb": "00"}, FieldType("struct", "io.debezium.data.geometry.Geometry"), "Geometry"),
        ([1], array_of(FieldType("struct", "x.S")), "x.S"),
    ],
)  # fmt: skip
def test_unrenderable_values_raise_decode_error(value: Any, ftype: FieldType, message: str) -> None:
    with pytest.raises(DecodeError, match=message) as info:
        to_pg_text(value, ftype)
    assert info.value.kind == "terminal"


def test_bad_parameters_fail_only_for_values() -> None:
    broken = ft("org.apache.kafka.connect.data.Decimal", "bytes", scale="two")
    convert = converter_for(broken)
    assert convert(None) is None
    with pytest.raises(DecodeError, match="Decimal"):
        convert(b"\x01")


def test_converter_for_is_cached_per_field_type() -> None:
    one = FieldType("array", None, True, FieldType("int32"))
    two = FieldType("array", None, True, FieldType("int32"))
    assert converter_for(one) is converter_for(two)
    assert converter_for(one) is not converter_for(
        FieldType("array", None, False, FieldType("int32"))
    )


# ------------------------------------------------------------------------------------------------
# Against a real PostgreSQL (CROSSFADE_TEST_PG_DSN)
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg(dsn: str) -> Iterator[Any]:
    """A real PostgreSQL (tests/unit/conftest.py's ``dsn``)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn


def _one(pg: Any, sql: str, *params: Any) -> Any:
    return pg.execute(sql, params).fetchone()[0]


def test_real_pg_text_arrays(pg: Any) -> None:
    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.one_of(st.none(), NUL_FREE_TEXT), max_size=12))
    def check(value: list[str | None]) -> None:
        assert _one(pg, "SELECT %s::text[]", to_pg_text(value, TEXT_ARRAY)) == value

    check()


def test_real_pg_nested_and_typed_arrays(pg: Any) -> None:
    nested = [["a", None], ['"', "\\"]]
    assert _one(pg, "SELECT %s::text[]", to_pg_text(nested, array_of(TEXT_ARRAY))) == nested
    assert _one(
        pg, "SELECT %s::int8[]", to_pg_text([1, None, -3], array_of(FieldType("int64")))
    ) == [1, None, -3]
    assert _one(
        pg, "SELECT %s::bytea[]", to_pg_text([b"\x00\\", None], array_of(FieldType("bytes")))
    ) == [b"\x00\\", None]
    ts = to_pg_text([0, TIMESTAMP_NEGATIVE_INFINITY], array_of(MICRO_TS))
    assert _one(pg, "SELECT %s::timestamp[]::text", ts) == '{"1970-01-01 00:00:00",-infinity}'
    assert _one(pg, "SELECT %s::date[]", to_pg_text([19782, None], array_of(DATE))) == [
        dt.date(2024, 2, 29),
        None,
    ]
    assert _one(pg, "SELECT %s::numeric[]", to_pg_text([b"\xfb\x2e"], array_of(DECIMAL2))) == [
        decimal.Decimal("-12.34")
    ]


def test_real_pg_timestamps(pg: Any) -> None:
    @settings(max_examples=300, deadline=None)
    @given(st.integers(min_value=PG_MIN_MICROS, max_value=PG_END_MICROS - 1))
    def check(value: int) -> None:
        if value in (TIMESTAMP_POSITIVE_INFINITY, TIMESTAMP_NEGATIVE_INFINITY):
            return
        day, rem = divmod(value, MICROS_PER_DAY)
        same = _one(
            pg,
            "SELECT %s::timestamp = 'epoch'::timestamp + %s * interval '1 day' + %s * interval '1 microsecond'",
            to_pg_text(value, MICRO_TS),
            day,
            rem,
        )
        assert same, to_pg_text(value, MICRO_TS)

    check()
    assert _one(
        pg, "SELECT %s::timestamp = 'infinity'", to_pg_text(TIMESTAMP_POSITIVE_INFINITY, MICRO_TS)
    )
    assert _one(
        pg, "SELECT %s::timestamp = '-infinity'", to_pg_text(TIMESTAMP_NEGATIVE_INFINITY, NANO_TS)
    )


def test_real_pg_dates_and_times(pg: Any) -> None:
    @settings(max_examples=300, deadline=None)
    @given(st.integers(min_value=days(-4713, 11, 24), max_value=days(5874897, 12, 31)))
    def check_date(value: int) -> None:
        assert _one(pg, "SELECT %s::date = 'epoch'::date + %s", to_pg_text(value, DATE), value)

    @settings(max_examples=200, deadline=None)
    @given(st.integers(min_value=0, max_value=MICROS_PER_DAY - 1))
    def check_time(value: int) -> None:
        assert _one(
            pg,
            "SELECT %s::time = time '00:00' + %s * interval '1 microsecond'",
            to_pg_text(value, MICRO_TIME),
            value,
        )

    check_date()
    check_time()
    assert _one(pg, "SELECT %s::time = '24:00:00'::time", to_pg_text(MICROS_PER_DAY, MICRO_TIME))


def test_real_pg_scalars(pg: Any) -> None:
    assert (
        _one(pg, "SELECT %s::bytea", to_pg_text(b"\x00\xde\\", FieldType("bytes"))) == b"\x00\xde\\"
    )
    assert _one(pg, "SELECT %s::numeric", to_pg_text(b"\xfb\x2e", DECIMAL2)) == decimal.Decimal(
        "-12.34"
    )
    vsd = {"scale": 20, "value": (10**40 + 1).to_bytes(17, "big", signed=True)}
    assert _one(
        pg,
        "SELECT %s::numeric",
        to_pg_text(vsd, FieldType("struct", "io.debezium.data.VariableScaleDecimal")),
    ) == decimal.Decimal("100000000000000000000.00000000000000000001")
    assert _one(pg, "SELECT %s::numeric::text", "NAN") == "NaN"
    for f in (0.1, 1e300, -0.0, 5e-324, math.inf):
        assert _one(pg, "SELECT %s::float8", to_pg_text(f, FieldType("float64"))) == f
    assert math.isnan(_one(pg, "SELECT %s::float8", to_pg_text(math.nan, FieldType("float64"))))
    f32 = struct.unpack("<f", struct.pack("<f", 0.1))[0]
    for f in (f32, 16777216.0, 3.4028234663852886e38, 1e-45):
        assert _one(
            pg, "SELECT %s::float4 = %s::float4", to_pg_text(f, FieldType("float32")), repr(f)
        )
    assert _one(pg, "SELECT %s::bool", to_pg_text(False, FieldType("boolean"))) is False
    bits = ft("io.debezium.data.Bits", "bytes", length="5")
    assert _one(pg, "SELECT %s::bit(5)::text", to_pg_text(b"\x06", bits)) == "00110"
    duration = to_pg_text(-90_061_000_001, DURATION)
    assert _one(pg, "SELECT %s::interval = -90061000001 * interval '1 microsecond'", duration)
    assert _one(
        pg,
        "SELECT %s::interval = interval '1 year 2 months 3 days 4:05:06.78'",
        "P1Y2M3DT4H5M6.78S",
    )
    assert _one(
        pg, "SELECT %s::timestamptz = '2024-10-27 00:30:00+00'", "2024-10-27T00:30:00.000000Z"
    )
    assert (
        _one(
            pg,
            "SELECT %s::point::text",
            to_pg_text(
                {"x": 1.5, "y": -2.0}, FieldType("struct", "io.debezium.data.geometry.Point")
            ),
        )
        == "(1.5,-2)"
    )
    with pytest.raises(Exception, match="0x00"):
        pg.execute("SELECT %s::text", ("a\x00b",))  # why NUL is refused before COPY


def test_real_pg_copy_text_format(pg: Any) -> None:
    """The way sync writes: COPY text format through psycopg's write_row."""
    columns = {
        "ts": ("timestamp", MICRO_TS, micros(-43, 3, 15, 12, 0, 0, 1)),
        "d": ("date", DATE, 19782),
        "t": ("time", MICRO_TIME, 45296789012),
        "b": ("bytea", FieldType("bytes"), b"\x00\t\n\\"),
        "n": ("numeric", DECIMAL2, b"\x04\xd2"),
        "tarr": ("text[]", TEXT_ARRAY, ["tab\there", 'quote"', "back\\slash", None, "new\nline"]),
        "iarr": ("int4[]", array_of(FieldType("int32")), [1, None]),
        "j": ("jsonb", ft("io.debezium.data.Json", "string"), '{"a": "\\u00e9\\t"}'),
        "s": ("text", TEXT, "line1\nline2\t\\N"),
        "f": ("float8", FieldType("float64"), math.inf),
    }
    pg.execute(
        "CREATE TEMP TABLE IF NOT EXISTS cf_pgtext ("
        + ", ".join(f"{c} {t}" for c, (t, _, _) in columns.items())
        + ")"
    )
    pg.execute("TRUNCATE cf_pgtext")
    row = [to_pg_text(v, f) for _, f, v in columns.values()]
    with pg.cursor() as cur, cur.copy(f"COPY cf_pgtext ({', '.join(columns)}) FROM STDIN") as copy:
        copy.write_row(row)
        copy.write_row([None] * len(columns))
    got = pg.execute(
        f"SELECT {', '.join(c + '::text' for c in columns)} FROM cf_pgtext ORDER BY ts NULLS LAST"
    ).fetchall()
    assert got[0] == (
        "0044-03-15 12:00:00.000001 BC",
        "2024-02-29",
        "12:34:56.789012",
        "\\x00090a5c",
        "12.34",
        '{"tab\there","quote\\"","back\\\\slash",NULL,"new\nline"}',
        "{1,NULL}",
        '{"a": "é\\t"}',
        "line1\nline2\t\\N",
        "Infinity",
    )
    assert got[1] == (None,) * len(columns)


def test_date_infinity_sentinels() -> None:
    """Debezium's values for a PostgreSQL ``infinity``/``-infinity`` date (measured on the real
    stack, snapshot and stream) read back as PostgreSQL's words, not as an out-of-range error."""
    date_ft = FieldType("int32", "io.debezium.time.Date")
    for days in (-622191234, -2147472692):
        assert pgtext.date_text(days) == "infinity"
        assert pgtext.converter_for(date_ft)(days) == "infinity"
    for days in (-625821272, -2147472691):
        assert pgtext.date_text(days) == "-infinity"
    with pytest.raises(DecodeError):
        pgtext.date_text(-2147472690)
