"""Connect/Avro column values -> PostgreSQL text literals, for COPY into typed staging tables.

Sync writes rows with ``COPY ... FROM STDIN`` (text format, through psycopg's ``write_row``),
passing a ``str`` or ``None`` per column; psycopg escapes for the COPY stream, so each string here
is just the *input literal* PostgreSQL parses into the column's type. :func:`converter_for`
returns, per :class:`~crossfade.events.model.FieldType`, a function ``value -> str | None``:

=============================================  ==================================================
Connect / semantic type                         Text
=============================================  ==================================================
None (any type)                                 None (SQL NULL)
int8/int16/int32/int64, io.debezium.time.Year   decimal digits
boolean                                         ``t`` / ``f``
float32/float64                                 shortest round-trip repr (float32: shortest that
                                                reads back as the same float32), ``NaN``,
                                                ``Infinity``, ``-Infinity``
string and string semantics (Json, Uuid, Enum,  as is; a NUL character raises DecodeError (text
EnumSet, Xml, Ltree, ZonedTimestamp, ZonedTime, cannot hold it)
Interval, numerics in string mode...)
bytes                                           bytea hex: ``\\x`` followed by lowercase hex
io.debezium.time.Date, Connect Date (days)      ``YYYY-MM-DD`` (``YYYY-MM-DD BC`` before year 1)
io.debezium.time.MicroTimestamp (micros),       ``YYYY-MM-DD HH:MM:SS.ffffff`` (``... BC``),
io.debezium.time.Timestamp / Connect Timestamp  computed in integers (exact); Debezium's
(millis), io.debezium.time.NanoTimestamp        infinity sentinels 9223372036825200000 and
(nanos, rounded half-even to micros)            -9223372036832400000 -> ``infinity``/``-infinity``
io.debezium.time.MicroTime (micros),            ``HH:MM:SS.ffffff``, 0 to ``24:00:00.000000``
io.debezium.time.Time / Connect Time (millis),
io.debezium.time.NanoTime (nanos, half-even)
io.debezium.time.MicroDuration (micros)         ``[-]H:MM:SS.ffffff`` (interval)
Connect Decimal (unscaled bytes + scale param)  exact decimal string
io.debezium.data.VariableScaleDecimal struct    exact decimal string
io.debezium.data.Bits (little-endian bytes)     bit string, left-padded to the ``length`` param
io.debezium.data.geometry.Point struct          ``(x,y)`` (PostgreSQL ``point``)
io.debezium.data.geometry.Geometry/Geography    ``SRID=n;<hex WKB>`` or ``<hex WKB>`` (PostGIS
                                                only: native box/path/polygon are not rebuilt)
io.debezium.data.DoubleVector / FloatVector     ``[x,y,...]`` (pgvector)
array                                           ``{...}`` array literal, elements converted with
                                                the item type, NULL unquoted, every other element
                                                double-quoted with ``"`` and ``\\`` escaped; an
                                                array of arrays nests braces unquoted
map (hstore.handling.mode=map)                  hstore literal ``"k"=>"v", "k2"=>NULL``
=============================================  ==================================================

Values decoded *with* Avro logical types (``decimal.Decimal``, ``datetime.date``/``datetime``/
``time``) are accepted too. Timestamps and dates outside PostgreSQL's range raise DecodeError
(better one dead-lettered record than a failed COPY batch).

Every failure — a value of the wrong Python type, a NUL in text, an out-of-range date, a struct
with no PostgreSQL form — raises :class:`~crossfade.errors.DecodeError` naming the type.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import struct
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

from crossfade.errors import DecodeError
from crossfade.events.model import FieldType

__all__ = [
    "DATE_NEGATIVE_INFINITY",
    "DATE_POSITIVE_INFINITY",
    "TIMESTAMP_NEGATIVE_INFINITY",
    "TIMESTAMP_POSITIVE_INFINITY",
    "PgTextConverter",
    "converter_for",
    "date_text",
    "decimal_text",
    "micros_timestamp_text",
    "time_of_day_text",
    "to_pg_text",
]

PgTextConverter = Callable[[Any], str | None]

TIMESTAMP_POSITIVE_INFINITY = 9223372036825200000
"""Debezium's value for a PostgreSQL ``infinity`` timestamp (whatever the unit)."""
TIMESTAMP_NEGATIVE_INFINITY = -9223372036832400000
"""Debezium's value for a PostgreSQL ``-infinity`` timestamp (whatever the unit)."""

DATE_POSITIVE_INFINITY = frozenset({-622191234, -2147472692})
"""Debezium's ``io.debezium.time.Date`` values for a PostgreSQL ``infinity`` date, measured on the
real stack: from the snapshot (pgjdbc's infinity timestamp pushed through a day conversion and 32
bits) and from the stream (PostgreSQL's ``DATEVAL_NOEND``, INT_MAX days since 2000, moved to 1970
with a 32-bit wrap). All lie before 4713 BC: none is a date PostgreSQL can hold."""
DATE_NEGATIVE_INFINITY = frozenset({-625821272, -2147472691})
"""The same for ``-infinity`` (the stream's is ``DATEVAL_NOBEGIN``, INT_MIN days since 2000)."""

MICROS_PER_DAY = 86_400_000_000
_UNIX_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
_UNIX_EPOCH = dt.datetime(1970, 1, 1)


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (astronomical year: 0 = 1 BC)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _civil_from_days(z: int) -> tuple[int, int, int]:
    """Inverse of :func:`_days_from_civil` (H. Hinnant's algorithm; exact for any int)."""
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (m <= 2), m, d


# PostgreSQL's ranges: date 4714-11-24 BC .. 5874897-12-31, timestamp 4714-11-24 BC .. 294276 AD.
_PG_MIN_DAYS = _days_from_civil(-4713, 11, 24)
_PG_MAX_DATE_DAYS = _days_from_civil(5874897, 12, 31)
_PG_MIN_MICROS = _PG_MIN_DAYS * MICROS_PER_DAY
_PG_END_MICROS = _days_from_civil(294277, 1, 1) * MICROS_PER_DAY  # exclusive
# Days/micros Python's datetime handles (years 1..9999): the C fast path.
_FAST_MIN_DAYS = _days_from_civil(1, 1, 1)
_FAST_MAX_DAYS = _days_from_civil(9999, 12, 31)
_FAST_MIN_MICROS = _FAST_MIN_DAYS * MICROS_PER_DAY
_FAST_END_MICROS = (_FAST_MAX_DAYS + 1) * MICROS_PER_DAY


def _ymd_text(y: int, m: int, d: int) -> tuple[str, str]:
    """(date text, era suffix) for an astronomical year."""
    if y <= 0:
        return f"{1 - y:04d}-{m:02d}-{d:02d}", " BC"
    return f"{y:04d}-{m:02d}-{d:02d}", ""


def date_text(days: int) -> str:
    """``YYYY-MM-DD`` (or ``YYYY-MM-DD BC``) of a day count since 1970-01-01.

    Raises DecodeError outside PostgreSQL's date range.
    """
    if _FAST_MIN_DAYS <= days <= _FAST_MAX_DAYS:
        return dt.date.fromordinal(days + _UNIX_EPOCH_ORDINAL).isoformat()
    if days in DATE_POSITIVE_INFINITY:
        return "infinity"
    if days in DATE_NEGATIVE_INFINITY:
        return "-infinity"
    if not _PG_MIN_DAYS <= days <= _PG_MAX_DATE_DAYS:
        raise DecodeError(f"date {days} days from 1970-01-01 is outside PostgreSQL's date range")
    return _exact_date_text(days)


def _exact_date_text(days: int) -> str:
    """:func:`date_text` in integer arithmetic only, for any day count (no range check)."""
    text, era = _ymd_text(*_civil_from_days(days))
    return text + era


def micros_timestamp_text(micros: int) -> str:
    """``YYYY-MM-DD HH:MM:SS.ffffff`` of microseconds since 1970-01-01 00:00 (no time zone).

    Integer arithmetic only (exact). Debezium's infinity sentinels give ``infinity`` /
    ``-infinity``. Years before 1 get the `` BC`` suffix PostgreSQL uses. Raises DecodeError
    outside PostgreSQL's timestamp range.
    """
    if _FAST_MIN_MICROS <= micros < _FAST_END_MICROS:
        return (_UNIX_EPOCH + dt.timedelta(microseconds=micros)).isoformat(" ", "microseconds")
    if micros == TIMESTAMP_POSITIVE_INFINITY:
        return "infinity"
    if micros == TIMESTAMP_NEGATIVE_INFINITY:
        return "-infinity"
    if not _PG_MIN_MICROS <= micros < _PG_END_MICROS:
        raise DecodeError(
            f"timestamp {micros} µs from 1970-01-01 is outside PostgreSQL's timestamp range"
        )
    return _exact_timestamp_text(micros)


def _exact_timestamp_text(micros: int) -> str:
    """:func:`micros_timestamp_text` in integer arithmetic only (no sentinels, no range check)."""
    days, rem = divmod(micros, MICROS_PER_DAY)
    text, era = _ymd_text(*_civil_from_days(days))
    return f"{text} {time_of_day_text(rem)}{era}"


def time_of_day_text(micros: int) -> str:
    """``HH:MM:SS.ffffff`` of microseconds since midnight, 0 through 24:00:00 inclusive.

    Raises DecodeError outside that range.
    """
    if not 0 <= micros <= MICROS_PER_DAY:
        raise DecodeError(f"time of day {micros} µs is outside 00:00:00..24:00:00")
    secs, frac = divmod(micros, 1_000_000)
    hours, rem = divmod(secs, 3600)
    minutes, seconds = divmod(rem, 60)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}.{frac:06d}"


def _round_half_even(n: int, div: int) -> int:
    q, r = divmod(n, div)
    twice = 2 * r
    if twice > div or (twice == div and q % 2):
        q += 1
    return q


def decimal_text(unscaled: int, scale: int) -> str:
    """Exact decimal string of ``unscaled * 10**-scale`` (a negative scale appends zeros)."""
    sign = "-" if unscaled < 0 else ""
    digits = str(abs(unscaled))
    if scale <= 0:
        return sign + digits + "0" * -scale if unscaled else "0"
    if len(digits) <= scale:
        digits = "0" * (scale - len(digits) + 1) + digits
    return f"{sign}{digits[:-scale]}.{digits[-scale:]}"


def _decimal_object_text(value: decimal.Decimal) -> str:
    if value.is_nan():
        return "NaN"
    if value.is_infinite():
        return "-Infinity" if value < 0 else "Infinity"
    return format(value, "f")


# --------------------------------------------------------------------------------------------
# Scalar converters (value is never None here; wrong types raise TypeError/ValueError)
# --------------------------------------------------------------------------------------------


def _int_text(v: Any) -> str:
    if isinstance(v, int):
        return str(int(v))  # int() first: a bool renders "1"/"0", not "True"
    raise TypeError(f"expected an integer, got {type(v).__name__}")


def _bool_text(v: Any) -> str:
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, int) and v in (0, 1):
        return "t" if v else "f"
    raise TypeError(f"expected a boolean, got {type(v).__name__}")


def _special_float(v: float) -> str | None:
    if v != v:
        return "NaN"
    if v == math.inf:
        return "Infinity"
    if v == -math.inf:
        return "-Infinity"
    return None


def _float64_text(v: Any) -> str:
    if isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    if not isinstance(v, float):
        raise TypeError(f"expected a float, got {type(v).__name__}")
    return _special_float(v) or repr(v)


_F32 = struct.Struct("<f")


def _float32_text(v: Any) -> str:
    if isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    if not isinstance(v, float):
        raise TypeError(f"expected a float, got {type(v).__name__}")
    special = _special_float(v)
    if special is not None:
        return special
    target = _F32.pack(v)
    for digits in range(6, 10):
        text = f"{v:.{digits}g}"
        if _F32.pack(float(text)) == target:
            return text
    return repr(v)


def _text(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError(f"expected text, got {type(v).__name__}")
    if "\x00" in v:
        raise DecodeError(
            f"text value contains a NUL character, which PostgreSQL text cannot store: {v[:60]!r}"
        )
    return v


def _bytes_text(v: Any) -> str:
    if isinstance(v, bytes | bytearray | memoryview):
        return "\\x" + bytes(v).hex()
    raise TypeError(f"expected bytes, got {type(v).__name__}")


def _date_days_text(v: Any) -> str:
    if type(v) is int:
        return date_text(v)
    if isinstance(v, dt.datetime):
        return v.date().isoformat()
    if isinstance(v, dt.date):
        return v.isoformat()
    return date_text(_as_int(v))


def _as_int(v: Any) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    raise TypeError(f"expected an integer, got {type(v).__name__}")


def _datetime_text(v: dt.datetime) -> str:
    if v.tzinfo is not None:
        v = v.astimezone(dt.UTC).replace(tzinfo=None)
    return v.isoformat(" ", "microseconds")


def _timestamp_converter(unit_per_micro: int, per_micro: bool) -> Callable[[Any], str]:
    """Converter of an integer timestamp in millis (×1000) or nanos (÷1000) or micros."""

    def conv(v: Any) -> str:
        if type(v) is not int:
            if isinstance(v, dt.datetime):
                return _datetime_text(v)
            v = _as_int(v)
        if v == TIMESTAMP_POSITIVE_INFINITY:
            return "infinity"
        if v == TIMESTAMP_NEGATIVE_INFINITY:
            return "-infinity"
        micros = _round_half_even(v, unit_per_micro) if per_micro else v * unit_per_micro
        return micros_timestamp_text(micros)

    return conv


def _micro_timestamp_text(v: Any) -> str:
    if type(v) is int:
        return micros_timestamp_text(v)
    if isinstance(v, dt.datetime):
        return _datetime_text(v)
    return micros_timestamp_text(_as_int(v))


def _time_converter(factor: int, divide: bool) -> Callable[[Any], str]:
    def conv(v: Any) -> str:
        if type(v) is not int:
            if isinstance(v, dt.time):
                return v.replace(tzinfo=None).isoformat("microseconds")
            v = _as_int(v)
        micros = _round_half_even(v, factor) if divide else v * factor
        return time_of_day_text(micros)

    return conv


def _duration_text(v: Any) -> str:
    micros = _as_int(v)
    sign = "-" if micros < 0 else ""
    secs, frac = divmod(abs(micros), 1_000_000)
    hours, rem = divmod(secs, 3600)
    minutes, seconds = divmod(rem, 60)
    return f"{sign}{hours}:{minutes:02d}:{seconds:02d}.{frac:06d}"


def _decimal_converter(ftype: FieldType) -> Callable[[Any], str]:
    scale_text = ftype.param("scale")
    scale = int(scale_text) if scale_text is not None else None

    def conv(v: Any) -> str:
        if isinstance(v, bytes | bytearray | memoryview):
            if scale is None:
                raise DecodeError("Connect Decimal without a scale parameter")
            return decimal_text(int.from_bytes(v, "big", signed=True), scale)
        if isinstance(v, decimal.Decimal):
            return _decimal_object_text(v)
        if isinstance(v, str):  # a decimal that already is text
            return _text(v)
        raise TypeError(f"expected Decimal bytes, got {type(v).__name__}")

    return conv


def _variable_scale_decimal_text(v: Any) -> str:
    if isinstance(v, decimal.Decimal):
        return _decimal_object_text(v)
    if not isinstance(v, Mapping):
        raise TypeError(f"expected a VariableScaleDecimal struct, got {type(v).__name__}")
    value = v["value"]
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError("VariableScaleDecimal value is not bytes")
    return decimal_text(int.from_bytes(value, "big", signed=True), _as_int(v["scale"]))


def _bits_converter(ftype: FieldType) -> Callable[[Any], str]:
    length_text = ftype.param("length")
    length = int(length_text) if length_text is not None else 0

    def conv(v: Any) -> str:
        if isinstance(v, bool):
            return "1" if v else "0"
        if not isinstance(v, bytes | bytearray | memoryview):
            raise TypeError(f"expected Bits bytes, got {type(v).__name__}")
        n = int.from_bytes(v, "little")
        return format(n, f"0{length}b") if length else format(n, "b")

    return conv


def _point_text(v: Any) -> str:
    if not isinstance(v, Mapping):
        raise TypeError(f"expected a Point struct, got {type(v).__name__}")
    return f"({_float64_text(v['x'])},{_float64_text(v['y'])})"


def _geometry_text(v: Any) -> str:
    if not isinstance(v, Mapping):
        raise TypeError(f"expected a Geometry struct, got {type(v).__name__}")
    wkb = v["wkb"]
    if not isinstance(wkb, bytes | bytearray | memoryview):
        raise TypeError("Geometry wkb is not bytes")
    hexed = bytes(wkb).hex().upper()
    srid = v.get("srid")
    return hexed if srid is None else f"SRID={_as_int(srid)};{hexed}"


def _vector_converter(item: Callable[[Any], str]) -> Callable[[Any], str]:
    def conv(v: Any) -> str:
        return "[" + ",".join(item(x) for x in v) + "]"

    return conv


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _array_converter(item_type: FieldType | None) -> Callable[[Any], str]:
    if item_type is None:
        raise DecodeError("array type without an item type")
    item = _build(item_type)
    nested = item_type.connect_type == "array" and item_type.semantic not in _VECTOR_SEMANTICS

    def conv(v: Any) -> str:
        if isinstance(v, str | bytes | Mapping):
            raise TypeError(f"expected a list, got {type(v).__name__}")
        parts = []
        for element in v:
            if element is None:
                parts.append("NULL")
            elif nested:
                parts.append(item(element))
            else:
                parts.append(_quote(item(element)))
        return "{" + ",".join(parts) + "}"

    return conv


def _hstore_converter(value_type: FieldType | None) -> Callable[[Any], str]:
    value_conv = _build(value_type) if value_type is not None else _text

    def conv(v: Any) -> str:
        pairs = v.items() if isinstance(v, Mapping) else ((e["key"], e["value"]) for e in v)
        return ", ".join(
            f"{_quote(_text(k))}=>{'NULL' if x is None else _quote(value_conv(x))}"
            for k, x in pairs
        )

    return conv


def _unsupported(ftype: FieldType) -> Callable[[Any], str]:
    what = ftype.semantic or ftype.connect_type

    def conv(v: Any) -> str:
        raise DecodeError(f"no PostgreSQL text form for a {what} value")

    return conv


# --------------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------------

_DATE_SEMANTICS = frozenset(("io.debezium.time.Date", "org.apache.kafka.connect.data.Date"))
_VECTOR_SEMANTICS = frozenset(("io.debezium.data.DoubleVector", "io.debezium.data.FloatVector"))
_GEOMETRY_SEMANTICS = frozenset(
    ("io.debezium.data.geometry.Geometry", "io.debezium.data.geometry.Geography")
)

_BY_SEMANTIC: dict[str, Callable[[Any], str]] = {
    "io.debezium.time.MicroTimestamp": _micro_timestamp_text,
    "io.debezium.time.Timestamp": _timestamp_converter(1000, per_micro=False),
    "org.apache.kafka.connect.data.Timestamp": _timestamp_converter(1000, per_micro=False),
    "io.debezium.time.NanoTimestamp": _timestamp_converter(1000, per_micro=True),
    "io.debezium.time.MicroTime": _time_converter(1, divide=False),
    "io.debezium.time.Time": _time_converter(1000, divide=False),
    "org.apache.kafka.connect.data.Time": _time_converter(1000, divide=False),
    "io.debezium.time.NanoTime": _time_converter(1000, divide=True),
    "io.debezium.time.MicroDuration": _duration_text,
    "io.debezium.data.VariableScaleDecimal": _variable_scale_decimal_text,
    "io.debezium.data.geometry.Point": _point_text,
}
for _name in _DATE_SEMANTICS:
    _BY_SEMANTIC[_name] = _date_days_text
for _name in _GEOMETRY_SEMANTICS:
    _BY_SEMANTIC[_name] = _geometry_text

_BY_TYPE: dict[str, Callable[[Any], str]] = {
    "int8": _int_text,
    "int16": _int_text,
    "int32": _int_text,
    "int64": _int_text,
    "boolean": _bool_text,
    "float32": _float32_text,
    "float": _float32_text,
    "float64": _float64_text,
    "double": _float64_text,
    "string": _text,
    "bytes": _bytes_text,
}


def _build(ftype: FieldType) -> Callable[[Any], str]:
    """The unguarded converter of a non-None value of ``ftype``."""
    semantic = ftype.semantic
    if semantic is not None:
        fixed = _BY_SEMANTIC.get(semantic)
        if fixed is not None:
            return fixed
        if semantic == "org.apache.kafka.connect.data.Decimal":
            return _decimal_converter(ftype)
        if semantic == "io.debezium.data.Bits":
            return _bits_converter(ftype)
        if semantic in _VECTOR_SEMANTICS:
            if ftype.items is None:
                raise DecodeError(f"{semantic} without an item type")
            return _vector_converter(_build(ftype.items))
    ctype = ftype.connect_type
    simple = _BY_TYPE.get(ctype)
    if simple is not None:
        return simple
    if ctype == "array":
        return _array_converter(ftype.items)
    if ctype == "map":
        return _hstore_converter(ftype.items)
    return _unsupported(ftype)


def _describe(ftype: FieldType) -> str:
    if ftype.semantic:
        return f"{ftype.semantic} ({ftype.connect_type})"
    if ftype.connect_type == "array" and ftype.items is not None:
        return f"array of {_describe(ftype.items)}"
    return ftype.connect_type


@lru_cache(maxsize=4096)
def converter_for(ftype: FieldType) -> PgTextConverter:
    """The function turning values of ``ftype`` into PostgreSQL input text (None -> None).

    Cached per :class:`FieldType`. The returned function raises
    :class:`~crossfade.errors.DecodeError` (naming the type and value) for a value it cannot
    render; a type with no PostgreSQL form only fails once a non-None value arrives.
    """
    try:
        inner = _build(ftype)
    except (DecodeError, ValueError) as exc:
        message = str(exc)
        return _failing(f"cannot render {_describe(ftype)}: {message}")
    description = _describe(ftype)

    def convert(value: Any) -> str | None:
        if value is None:
            return None
        try:
            return inner(value)
        except DecodeError:
            raise
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
            raise DecodeError(f"cannot render {value!r:.80} as {description}: {exc}") from exc

    # the commonest columns, one call per value instead of two (sync renders every column of
    # every event): what the general path returns for them, anything else goes through it
    if inner is _int_text:

        def convert_int(value: Any) -> str | None:
            return str(value) if type(value) is int else convert(value)

        return convert_int
    if inner is _text:

        def convert_text(value: Any) -> str | None:
            return value if type(value) is str and "\x00" not in value else convert(value)

        return convert_text
    return convert


def _failing(message: str) -> PgTextConverter:
    def convert(value: Any) -> str | None:
        if value is None:
            return None
        raise DecodeError(message)

    return convert


def to_pg_text(value: Any, ftype: FieldType) -> str | None:
    """PostgreSQL input text of ``value`` of ``ftype`` (see the module table); None for None.

    Raises :class:`~crossfade.errors.DecodeError` when the value cannot be rendered.
    """
    return converter_for(ftype)(value)
