"""A compiled Avro binary writer for the schema shapes Connect -> Avro produces.

fastavro's generic writer resolves every ``["null", T]`` union by validating the datum;
:func:`compile_fast_writer` compiles a schema (records, ``null`` unions, arrays, maps, primitives
with or without logical types) once into nested writers that encode 5-10x faster.

Contract: the compiled writer produces fastavro's bytes or none at all. It takes only datums of
the exact Python types fastavro writes without conversion or union guessing; for anything else
it raises :class:`NoFastPath` (or ``UnicodeEncodeError``/``OverflowError``/``struct.error``/
``RecursionError``), and the caller (:class:`crossfade.events.avro_codec.AvroCodec`) writes the
whole datum with fastavro, so bytes and errors are fastavro's either way. The writer appends to
the buffer it is given; after a failure that buffer holds a partial datum and must be dropped.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["FastWriter", "NoFastPath", "compile_fast_writer"]


class NoFastPath(Exception):
    """The compiled writer cannot encode this datum exactly as fastavro would: use fastavro."""


_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1
_PACK_DOUBLE = struct.Struct("<d").pack
_PACK_FLOAT = struct.Struct("<f").pack
FastWriter = Callable[[bytearray, Any], None]
"""A compiled writer: appends the Avro binary encoding of a datum to the buffer."""


def _varint(buf: bytearray, n: int) -> None:
    """Append Avro's zig-zag varint of ``n`` (caller checked it is a 64-bit int)."""
    n = (n << 1) ^ (n >> 63)
    while n > 0x7F:
        buf.append((n & 0x7F) | 0x80)
        n >>= 7
    buf.append(n)


def _w_long(buf: bytearray, v: Any) -> None:
    if type(v) is not int or not _LONG_MIN <= v <= _LONG_MAX:
        raise NoFastPath
    if -64 <= v <= 63:
        buf.append((v << 1) ^ (v >> 63))
        return
    _varint(buf, v)


def _w_string(buf: bytearray, v: Any) -> None:
    if type(v) is not str:
        raise NoFastPath
    b = v.encode()  # lone surrogates raise: fastavro then reports the error
    n = len(b)
    if n < 64:
        buf.append(n << 1)
    else:
        _varint(buf, n)
    buf += b


def _w_bytes(buf: bytearray, v: Any) -> None:
    if type(v) is not bytes:
        raise NoFastPath
    _varint(buf, len(v))
    buf += v


def _w_double(buf: bytearray, v: Any) -> None:
    if type(v) is not float:
        raise NoFastPath
    buf += _PACK_DOUBLE(v)


def _w_float(buf: bytearray, v: Any) -> None:
    if type(v) is not float or v != v:  # NaN payloads: leave their float32 rounding to fastavro
        raise NoFastPath
    buf += _PACK_FLOAT(v)  # OverflowError (a double beyond float32): fastavro decides


def _w_boolean(buf: bytearray, v: Any) -> None:
    if type(v) is not bool:
        raise NoFastPath
    buf.append(1 if v else 0)


def _w_null(buf: bytearray, v: Any) -> None:
    if v is not None:
        raise NoFastPath


_PRIMITIVE_WRITERS: dict[str, FastWriter] = {
    "null": _w_null,
    "boolean": _w_boolean,
    "int": _w_long,
    "long": _w_long,
    "float": _w_float,
    "double": _w_double,
    "bytes": _w_bytes,
    "string": _w_string,
}


def compile_fast_writer(schema: Any) -> FastWriter | None:
    """A writer for the schema shapes Connect -> Avro produces (records, ``null`` unions, arrays,
    maps, primitives with or without logical types), or None (fastavro writes it).

    ``schema`` is fastavro's parsed schema. A compiled writer only takes datums of the exact
    Python types fastavro writes without any conversion or union guessing (``int`` for int/long
    and their logical types, ``str``, ``bytes``, ``float``, ``bool``, ``dict`` with every record
    field, ``list``); anything else raises :class:`NoFastPath` and the whole datum is written by
    fastavro, so the bytes (and errors) are fastavro's either way. A schema of an unexpected
    shape may raise ``KeyError``/``TypeError``/``ValueError``/``AttributeError``: the caller then
    writes with fastavro alone.
    """
    return _writer(schema, {})


def _writer(schema: Any, named: dict[str, FastWriter]) -> FastWriter | None:
    """The writer of one type; ``named`` holds the records compiled so far, by name."""
    if isinstance(schema, str):
        if schema in _PRIMITIVE_WRITERS:
            return _PRIMITIVE_WRITERS[schema]
        if schema in named:
            return lambda buf, v: named[schema](buf, v)  # late-bound: the record may be in progress
        return None
    if isinstance(schema, list):
        return _union_writer(schema, named)
    if not isinstance(schema, Mapping):
        return None
    t = schema.get("type")
    if t == "record":
        return _record_writer(schema, named)
    if t == "array":
        return _array_writer(schema, named)
    if t == "map":
        return _map_writer(schema, named)
    if t in _PRIMITIVE_WRITERS:
        return _logical_writer(schema, t)
    return None


def _union_writer(schema: list[Any], named: dict[str, FastWriter]) -> FastWriter | None:
    """``["null", T]`` or ``[T, "null"]``; any other union goes to fastavro."""
    if len(schema) != 2 or "null" not in schema:
        return None
    null_at = schema.index("null")
    other = _writer(schema[1 - null_at], named)
    if other is None:
        return None
    null_byte, other_byte = (0, 2) if null_at == 0 else (2, 0)  # zig-zag of the branch index

    def w_union(buf: bytearray, v: Any) -> None:
        if v is None:
            buf.append(null_byte)
            return
        if type(v) is dict and "-type" in v:  # fastavro's explicit-branch notation
            raise NoFastPath
        buf.append(other_byte)
        other(buf, v)

    return w_union


def _record_writer(schema: Mapping[str, Any], named: dict[str, FastWriter]) -> FastWriter | None:
    fields: list[tuple[str, FastWriter]] = []

    def w_record(buf: bytearray, v: Any) -> None:
        if type(v) is not dict:
            raise NoFastPath
        try:
            for fname, fw in fields:
                fw(buf, v[fname])
        except KeyError:  # a missing field takes its default in fastavro
            raise NoFastPath from None

    named[str(schema["name"])] = w_record  # before its fields: they may refer to it
    for f in schema.get("fields", []):
        fw = _writer(f["type"], named)
        if fw is None:
            return None
        fields.append((f["name"], fw))
    return w_record


def _array_writer(schema: Mapping[str, Any], named: dict[str, FastWriter]) -> FastWriter | None:
    item = _writer(schema["items"], named)
    if item is None:
        return None

    def w_array(buf: bytearray, v: Any) -> None:
        if type(v) is not list:
            raise NoFastPath
        if v:
            _varint(buf, len(v))
            for x in v:
                item(buf, x)
        buf.append(0)

    return w_array


def _map_writer(schema: Mapping[str, Any], named: dict[str, FastWriter]) -> FastWriter | None:
    value = _writer(schema["values"], named)
    if value is None:
        return None

    def w_map(buf: bytearray, v: Any) -> None:
        if type(v) is not dict:
            raise NoFastPath
        if v:
            _varint(buf, len(v))
            for k, x in v.items():
                _w_string(buf, k)
                value(buf, x)
        buf.append(0)

    return w_map


def _logical_writer(schema: Mapping[str, Any], t: str) -> FastWriter | None:
    """A primitive written as a dict, perhaps with a logical type fastavro writes raw."""
    logical = schema.get("logicalType")
    if logical is not None and logical not in (
        "decimal",
        "date",
        "time-millis",
        "timestamp-millis",
        "time-micros",
        "timestamp-micros",
    ):
        return None
    if logical == "decimal" and t != "bytes":
        return None
    # a logical type's raw value (int, bytes) is written as is by fastavro too; a Decimal or
    # datetime is not of the writer's exact type and goes to fastavro
    return _PRIMITIVE_WRITERS[t]
