"""Change-event values (Kafka Connect representation) -> the mapping's normal form.

The mapping works on Python values as psycopg returns them from the legacy database, so audit,
dry-run and verify (which read the database) and sync (which reads Debezium events) map the same
row the same way. This module converts a :class:`~crossfade.events.model.ChangeEvent`'s values:

==============================================  ===============================================
Connect / semantic type                          Python value
==============================================  ===============================================
int*, boolean, float*, string                    int, bool, float, str
io.debezium.time.Date / Connect Date (days)      ``datetime.date``
MicroTimestamp / Timestamp / NanoTimestamp       naive ``datetime`` (``timestamp``); Debezium's
                                                 infinity sentinels -> ``'infinity'`` /
                                                 ``'-infinity'`` (psycopg cannot load them either)
io.debezium.time.ZonedTimestamp (ISO text)       aware ``datetime`` (``timestamptz``)
MicroTime / Time / NanoTime                      ``datetime.time``
ZonedTime (ISO text)                             aware ``datetime.time``
MicroDuration (µs), Interval (ISO 8601 text)     ``timedelta`` (a month is 30 days, a year 365:
                                                 what psycopg does)
Connect Decimal, VariableScaleDecimal            ``Decimal``
numeric in ``decimal.handling.mode=string``      ``Decimal`` (``NAN``, ``POSITIVE_INFINITY``...
                                                 too) when the source column type says numeric
io.debezium.data.Uuid                            ``uuid.UUID``
io.debezium.data.Json                            parsed JSON (dict, list...)
bytes                                            ``bytes``
array                                            ``list`` of converted items
==============================================  ===============================================

Text a type is not known for stays text. Values that cannot be converted raise
:class:`~crossfade.errors.DecodeError` (the record is dead-lettered by sync, like a decode failure).
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import json
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from crossfade.errors import DecodeError
from crossfade.events.model import UNAVAILABLE, ChangeEvent, FieldType, RowSchema
from crossfade.events.pgtext import TIMESTAMP_NEGATIVE_INFINITY, TIMESTAMP_POSITIVE_INFINITY

_EPOCH = dt.datetime(1970, 1, 1)
_EPOCH_DATE = dt.date(1970, 1, 1)
_NUMERIC_SPECIALS = {
    "NAN": "NaN",
    "POSITIVE_INFINITY": "Infinity",
    "NEGATIVE_INFINITY": "-Infinity",
}
_ISO_DURATION = re.compile(
    r"^(?P<sign>-)?P(?:(?P<y>-?\d+)Y)?(?:(?P<mo>-?\d+)M)?(?:(?P<w>-?\d+)W)?(?:(?P<d>-?\d+)D)?"
    r"(?:T(?:(?P<h>-?\d+)H)?(?:(?P<mi>-?\d+)M)?(?:(?P<s>-?\d+(?:\.\d+)?)S)?)?$"
)


def _ts(v: Any, per_micro: int, divide: bool) -> Any:
    if isinstance(v, dt.datetime):
        return v
    if v in (TIMESTAMP_POSITIVE_INFINITY, TIMESTAMP_NEGATIVE_INFINITY):
        return "infinity" if v == TIMESTAMP_POSITIVE_INFINITY else "-infinity"
    micros = round(v / per_micro) if divide else v * per_micro
    return _EPOCH + dt.timedelta(microseconds=micros)


def _time(v: Any, per_micro: int, divide: bool) -> dt.time:
    if isinstance(v, dt.time):
        return v
    micros = round(v / per_micro) if divide else v * per_micro
    micros = min(micros, 86_400_000_000 - 1)  # 24:00:00 has no datetime.time
    secs, frac = divmod(micros, 1_000_000)
    h, rem = divmod(secs, 3600)
    m, s = divmod(rem, 60)
    return dt.time(h, m, s, frac)


def _zoned_ts(v: Any) -> Any:
    if isinstance(v, dt.datetime):
        return v
    s = str(v)
    if s in ("infinity", "-infinity"):
        return s
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


def _zoned_time(v: Any) -> dt.time:
    return dt.time.fromisoformat(str(v).replace("Z", "+00:00"))


def interval(text: str) -> dt.timedelta:
    """ISO 8601 duration (Debezium's ``interval.handling.mode=string``) -> timedelta."""
    m = _ISO_DURATION.match(text.strip())
    if not m:
        raise DecodeError(f"{text!r} is not an ISO 8601 duration")
    g = {k: (v or "0") for k, v in m.groupdict().items() if k != "sign"}
    days = int(g["y"]) * 365 + int(g["mo"]) * 30 + int(g["w"]) * 7 + int(g["d"])
    td = dt.timedelta(
        days=days, hours=int(g["h"]), minutes=int(g["mi"]), seconds=float(decimal.Decimal(g["s"]))
    )
    return -td if m.group("sign") else td


def _decimal_bytes(v: Any, ftype: FieldType) -> decimal.Decimal:
    if isinstance(v, decimal.Decimal):
        return v
    if isinstance(v, str):
        return decimal.Decimal(_NUMERIC_SPECIALS.get(v, v))
    scale = int(ftype.param("scale") or 0)
    return decimal.Decimal(int.from_bytes(v, "big", signed=True)).scaleb(-scale)


def _vsd(v: Any) -> decimal.Decimal:
    if isinstance(v, decimal.Decimal):
        return v
    return decimal.Decimal(int.from_bytes(v["value"], "big", signed=True)).scaleb(-int(v["scale"]))


_NUMERIC_PG = re.compile(r"^(numeric|decimal)\b")


def python_value(v: Any, ftype: FieldType | None, pg_type: str | None = None) -> Any:
    """One Connect value as the mapping's normal form (see the module table).

    ``pg_type`` is the source column's type as ``format_type`` prints it; it tells a numeric
    (sent as text in string mode) from text. Raises DecodeError for a value of the wrong shape.
    """
    if v is None or ftype is None:
        return v
    try:
        return _convert(v, ftype, pg_type)
    except DecodeError:
        raise
    except (TypeError, ValueError, KeyError, ArithmeticError, OverflowError) as exc:
        what = ftype.semantic or ftype.connect_type
        raise DecodeError(f"cannot read {v!r:.80} as {what}: {exc}") from exc


_EPOCH_ORDINAL = _EPOCH_DATE.toordinal()
_MAX_ORDINAL = dt.date.max.toordinal()


def _date(v: Any, _t: FieldType) -> dt.date:
    """Days since 1970-01-01 as the date. An ``int`` in range: ``date.fromordinal`` (the same
    date, without the timedelta and its addition); anything else as before (its errors too)."""
    if type(v) is int and 0 < v + _EPOCH_ORDINAL <= _MAX_ORDINAL:
        return dt.date.fromordinal(v + _EPOCH_ORDINAL)
    return v if isinstance(v, dt.date) else _EPOCH_DATE + dt.timedelta(days=v)


_UUID_SET = object.__setattr__
_UUID_UNKNOWN = uuid.SafeUUID.unknown


def _uuid(v: Any, _t: FieldType) -> uuid.UUID:
    """``uuid.UUID(v)``: of a text, ``UUID`` drops ``urn:``, ``uuid:``, the braces at its ends
    and the hyphens, and reads the 32 characters left as a hexadecimal integer; when the text
    without its hyphens is 32 characters that ``int(..., 16)`` reads (no ``:``, no brace: the
    other rewrites changed nothing), that is the integer. The object is then built as
    ``UUID.__init__`` builds it, without its general parsing (~1.5% of sync's CPU in a mapped
    load, issue 22). Anything else, and any error, as ``UUID`` gives it."""
    if type(v) is str and len(v) == 36:
        h = v.replace("-", "")
        if len(h) == 32:
            try:
                n = int(h, 16)
            except ValueError:
                return uuid.UUID(v)  # its error, or its reading of braces and urn:
            u = object.__new__(uuid.UUID)
            _UUID_SET(u, "int", n)
            _UUID_SET(u, "is_safe", _UUID_UNKNOWN)
            return u
    return v if isinstance(v, uuid.UUID) else uuid.UUID(v)


def _json(v: Any, _t: FieldType) -> Any:
    return json.loads(v) if isinstance(v, str | bytes) else v


def _duration(v: Any, _t: FieldType) -> dt.timedelta:
    return v if isinstance(v, dt.timedelta) else dt.timedelta(microseconds=v)


_BY_SEMANTIC: dict[str, Callable[[Any, FieldType], Any]] = {
    "io.debezium.time.Date": _date,
    "org.apache.kafka.connect.data.Date": _date,
    "io.debezium.time.MicroTimestamp": lambda v, _t: _ts(v, 1, False),
    "io.debezium.time.Timestamp": lambda v, _t: _ts(v, 1000, False),
    "org.apache.kafka.connect.data.Timestamp": lambda v, _t: _ts(v, 1000, False),
    "io.debezium.time.NanoTimestamp": lambda v, _t: _ts(v, 1000, True),
    "io.debezium.time.ZonedTimestamp": lambda v, _t: _zoned_ts(v),
    "io.debezium.time.MicroTime": lambda v, _t: _time(v, 1, False),
    "io.debezium.time.Time": lambda v, _t: _time(v, 1000, False),
    "org.apache.kafka.connect.data.Time": lambda v, _t: _time(v, 1000, False),
    "io.debezium.time.NanoTime": lambda v, _t: _time(v, 1000, True),
    "io.debezium.time.ZonedTime": lambda v, _t: _zoned_time(v),
    "io.debezium.time.MicroDuration": _duration,
    "io.debezium.time.Interval": lambda v, _t: interval(v),
    "org.apache.kafka.connect.data.Decimal": _decimal_bytes,
    "io.debezium.data.VariableScaleDecimal": lambda v, _t: _vsd(v),
    "io.debezium.data.Uuid": _uuid,
    "io.debezium.data.Json": _json,
}
"""Semantic type -> its conversion: one lookup per value instead of a comparison with each name
in turn (a UUID was the 17th); the same values (tests/unit/test_row_values_fast.py)."""


def _convert(v: Any, ftype: FieldType, pg_type: str | None) -> Any:
    by_semantic = _BY_SEMANTIC.get(ftype.semantic) if ftype.semantic is not None else None
    if by_semantic is not None:
        return by_semantic(v, ftype)
    if ftype.connect_type == "array":
        item_pg = pg_type[:-2] if pg_type and pg_type.endswith("[]") else None
        return [None if x is None else python_value(x, ftype.items, item_pg) for x in v]
    if (
        ftype.connect_type == "string"
        and pg_type
        and _NUMERIC_PG.match(pg_type)
        and isinstance(v, str)
    ):
        return decimal.Decimal(_NUMERIC_SPECIALS.get(v, v))
    if ftype.connect_type == "bytes" and isinstance(v, bytearray | memoryview):
        return bytes(v)
    return v


_PLAIN, _TEXT, _CONVERT = 0, 1, 2
"""How :func:`row_values` treats a column (:func:`_kinds`): as it is; text that a numeric source
column turns into a Decimal; through :func:`python_value`."""

_KINDS: dict[int, tuple[RowSchema, dict[str, tuple[int, FieldType]]]] = {}


def _kinds(schema: RowSchema) -> dict[str, tuple[int, FieldType]]:
    """Column -> (kind, type) of ``schema``, worked out once per schema object (a row's schema
    is the decoder's, shared by every event of its Avro schema): :func:`_convert` leaves a value
    without a semantic type as it is, unless it is an array, bytes, or text that ``pg_type``
    says is numeric, so only those columns, and those with a semantic type, need it per value.
    The entry holds the schema, so its id is not reused while the entry exists."""
    hit = _KINDS.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    kinds: dict[str, tuple[int, FieldType]] = {}
    for c, t in schema.fields:
        if t.semantic is not None or t.connect_type in ("array", "bytes"):
            kinds[c] = (_CONVERT, t)
        elif t.connect_type == "string":
            kinds[c] = (_TEXT, t)
        else:
            kinds[c] = (_PLAIN, t)
    if len(_KINDS) >= 4096:  # schemas come and go with schema changes: keep it bounded
        _KINDS.clear()
    _KINDS[id(schema)] = (schema, kinds)
    return kinds


def row_values(
    values: Mapping[str, Any], schema: RowSchema | None, pg_types: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A Connect row (``after`` or ``key``) in the normal form. Without a schema: unchanged.

    The same values as :func:`python_value` of every column (tests/unit/test_row_values_fast.py),
    without its dispatch for the columns it leaves as they are."""
    if schema is None:
        return dict(values)
    kinds = _kinds(schema)
    pg = pg_types or {}
    out: dict[str, Any] = {}
    for c, v in values.items():
        k = kinds.get(c)
        if k is None or v is None:
            out[c] = v
        elif k[0] == _CONVERT or (isinstance(v, str) and k[0] == _TEXT and _numeric_pg(pg.get(c))):
            out[c] = python_value(v, k[1], pg.get(c))
        else:  # _PLAIN, or text that is not a numeric's
            out[c] = v
    return out


@functools.lru_cache(maxsize=4096)
def _numeric_pg(pg_type: str | None) -> bool:
    """Whether text of a column of this type is a numeric (``decimal.handling.mode=string``)."""
    return bool(pg_type and _NUMERIC_PG.match(pg_type))


def event_row(
    event: ChangeEvent, pg_types: Mapping[str, str] | None = None
) -> tuple[dict[str, Any], frozenset[str]]:
    """(the event's new row in the normal form, the columns Debezium did not send).

    For c/u/r events only; the unavailable columns hold None (pass them to
    :meth:`~crossfade.mapping.engine.Mapper.map_row` as ``unavailable``). Raises ValueError for a
    delete or truncate (use :meth:`~crossfade.mapping.engine.Mapper.map_key` with
    :func:`event_key`).
    """
    if event.after is None:
        raise ValueError(f"a {event.op} event of {event.table} has no row to map")
    after: Mapping[str, Any] = event.after
    placeholders = {c for c, v in after.items() if v == UNAVAILABLE}
    if event.unavailable or placeholders:
        after = {
            c: (None if c in event.unavailable or c in placeholders else v)
            for c, v in after.items()
        }
    unavailable = event.unavailable | placeholders
    return row_values(after, event.row_schema, pg_types), frozenset(unavailable)


def event_key(event: ChangeEvent, pg_types: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The event's source key in the normal form."""
    if event.key is None:
        raise ValueError(f"a {event.op} event of {event.table} has no key")
    return row_values(event.key, event.key_schema, pg_types)
