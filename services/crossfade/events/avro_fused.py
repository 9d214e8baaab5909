"""One generated function per Connect schema: a Debezium JSON payload straight to Avro bytes.

capture's Python per record was mostly :meth:`crossfade.events.avro_codec.ConnectCodec.encode`:
the payload converted to a datum (a new dict per struct, a converter call per field,
:mod:`crossfade.events.payload`) and the datum written by nested writer closures (a call per
field and per union, :mod:`crossfade.events.avro_writer`): ~24 µs of a pgbench_accounts UPDATE's
~40 µs in capture's handler thread. :func:`compile_fused_encoder` generates, once per schema,
straight-line Python source that reads each field from the payload and appends its Avro encoding
(a function per named record, varints and strings inline), with no intermediate datum.

Contract: the fused encoder returns exactly the bytes ``ConnectCodec``'s two-step path returns
for the same payload, or raises (:class:`Fallback` or any other exception) and the caller takes
the two-step path, whose bytes and errors stand. It writes only what needs no conversion —
``int`` (not ``bool``) for int8..int64 within 64 bits, ``str`` for string, ``bool``, ``float``
for float64 (and float32 but NaN), ``dict`` for a struct, a missing field's schema default as
the converter gives it — and ``["null", T]``/``[T, "null"]`` unions as Connect -> Avro makes
them; any other field (bytes, Decimal, arrays, maps) is converted and written by the two-step
path's own compiled functions for that field alone. A schema of any other shape gets None (the
two-step path only).

Issue 22 cut it further (~8 -> ~5.5 µs per pgbench envelope): fields read by subscript (a
payload missing one is encoded by the same code reading ``.get(name, default)``), an int's bits
above 14 kept per schema (timestamps, LSNs and ids change there seldom), the 64-bit range checked
only where it can fail, records referred to once written in place, strings not kept encoded
without the generic writer's buffer.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any

from crossfade.events.avro_writer import compile_fast_writer
from crossfade.events.payload import compile_payload_converter

__all__ = ["Fallback", "FusedEncoder", "compile_fused_encoder"]

FusedEncoder = Callable[[Any], bytes]


class Fallback(Exception):
    """The fused encoder does not take this payload: the two-step path encodes it."""


_INTS = frozenset({"int8", "int16", "int32", "int64"})
_INT_LOGICAL = frozenset(
    {None, "date", "time-millis", "timestamp-millis", "time-micros", "timestamp-micros"}
)

_VARINT = """\
{p}n = {x} << 1 if {x} >= 0 else ({x} << 1) ^ ({x} >> 63)
{p}if n < 128:
{p}    a(n)
{p}elif n < 16384:
{p}    a((n & 127) | 128)
{p}    a(n >> 7)
{p}else:
{p}    e = HG(n >> 14)
{p}    if e is None:
{p}        e = HE(n)
{p}    buf += T[n & 16383]
{p}    buf += e
"""
"""Avro's zig-zag varint of the int in ``{x}``. From 14 bits on (timestamps, LSNs, ids) the low
14 bits are a table lookup and the rest, which changes seldom from one record to the next, is
kept (:func:`_high_encoder`, which also checks the 64-bit range: an int beyond it either way
zig-zags to 2**64 or more, so the short branches need no check)."""
_PAIRS = [bytes(((i & 127) | 128, (i >> 7) | 128)) for i in range(1 << 14)]
"""Two varint bytes, both continued, of every 14-bit group: a long varint takes half the steps."""
_STRINGS_CACHED, _STRING_CACHED_LEN = 256, 32
"""Per schema, the encodings of up to this many short strings are kept (Debezium's ``source``
block repeats the same few in every record: version, connector, database, schema, table)."""


_HIGH_CACHED = 4096
"""Per schema, the encodings of up to this many high parts (bits 14 and up) of ints."""


def _varint(n: int) -> bytes:
    """Avro's varint of ``n`` >= 0 (already zig-zagged)."""
    out = bytearray()
    while n > 16383:
        out += _PAIRS[n & 16383]
        n >>= 14
    if n > 127:
        out.append((n & 127) | 128)
        n >>= 7
    out.append(n)
    return bytes(out)


def _high_encoder(cache: dict[int, bytes]) -> Callable[[int], bytes]:
    """The varint of a zig-zagged int's bits 14 and up (``n >> 14``, not 0), kept in ``cache``
    (emptied when full: a timestamp's high part moves on and never comes back). Raises
    :class:`Fallback` for an int beyond 64 bits (``n`` >= 2**64; never kept)."""

    def encode(n: int) -> bytes:
        if n >> 64:
            raise Fallback
        e = _varint(n >> 14)
        if len(cache) >= _HIGH_CACHED:
            cache.clear()
        cache[n >> 14] = e
        return e

    return encode


_LENGTHS = [_varint(n << 1) for n in range(8192)]
"""A string's length below 8192 as Avro writes it (one or two bytes)."""


def _string_encoder(cache: dict[Any, bytes]) -> Callable[[Any], bytes]:
    """A string's Avro encoding (length and UTF-8, as the two-step path's string writer
    :func:`crossfade.events.avro_writer.compile_fast_writer` writes it), kept in ``cache`` when
    it is short."""

    def encode(x: Any) -> bytes:
        if type(x) is not str:
            raise Fallback  # the two-step path converts it, or reports it
        b = x.encode()  # lone surrogates raise: the two-step path reports them
        n = len(b)
        e = _LENGTHS[n] + b if n < 8192 else _varint(n << 1) + b
        if n <= _STRING_CACHED_LEN and len(cache) < _STRINGS_CACHED:
            cache[x] = e
        return e

    return encode


class _Gen:
    def __init__(self, strict: bool, referenced: set[str]) -> None:
        self.strict = strict
        self.referenced = referenced
        """Names of records referred to again: written by a function; any other inline."""
        self.inlined: list[str] = []
        """Read each field as ``v[name]`` (a missing one raises KeyError) rather than with
        ``v.get(name, default)``: Debezium's JSON converter writes every field of a struct, and
        a subscript costs less than a call."""
        self.ns: dict[str, Any] = {
            "F": Fallback,
            "PD": struct.Struct("<d").pack,
            "PF": struct.Struct("<f").pack,
            "T": _PAIRS,
        }
        strings: dict[Any, bytes] = {}
        self.ns["SG"], self.ns["SE"] = strings.get, _string_encoder(strings)
        highs: dict[int, bytes] = {}
        self.ns["HG"], self.ns["HE"] = highs.get, _high_encoder(highs)
        self.funcs: list[str] = []
        self.records: dict[str, str] = {}  # Avro full name -> generated function name
        self.avro_named: dict[str, Any] = {}

    def const(self, value: Any) -> str:
        name = f"K{len(self.ns)}"
        self.ns[name] = value
        return name

    def value(self, conn: Mapping[str, Any], avro: Any, x: str, p: str) -> str | None:
        """Code appending the encoding of the value in variable ``x``, or None (no fused path)."""
        if isinstance(avro, list):
            if len(avro) != 2 or "null" not in avro:
                return None
            null_at = avro.index("null")
            inner = self.primitive_or_record(conn, avro[1 - null_at], x, p + "    ")
            if inner is None:
                return None
            null_byte, other_byte = (0, 2) if null_at == 0 else (2, 0)
            return f"{p}if {x} is None:\n{p}    a({null_byte})\n{p}else:\n{p}    a({other_byte})\n{inner}"
        return self.primitive_or_record(conn, avro, x, p)

    def primitive_or_record(self, conn: Mapping[str, Any], avro: Any, x: str, p: str) -> str | None:
        if isinstance(avro, str) and avro in self.records:
            return f"{p}{self.records[avro]}({x}, a, buf)\n"
        t, logical = avro, None
        if isinstance(avro, Mapping):
            t, logical = avro.get("type"), avro.get("logicalType")
            if t == "record":
                if str(avro.get("name")) not in self.referenced:
                    return self.inline(conn, avro, x, p)
                fn = self.record(conn, avro)
                return None if fn is None else f"{p}{fn}({x}, a, buf)\n"
        ctype = conn.get("type")
        if t in ("int", "long") and ctype in _INTS and logical in _INT_LOGICAL:
            return f"{p}if type({x}) is not int:\n{p}    raise F\n" + _VARINT.format(p=p, x=x)
        if t == "string" and ctype == "string" and logical is None:
            return f"{p}buf += SG({x}) or SE({x})\n"  # an encoding is never empty
        if t == "boolean" and ctype == "boolean" and logical is None:
            return f"{p}if type({x}) is not bool:\n{p}    raise F\n{p}a(1 if {x} else 0)\n"
        if t == "double" and ctype == "float64" and logical is None:
            return f"{p}if type({x}) is not float:\n{p}    raise F\n{p}buf += PD({x})\n"
        if t == "float" and ctype == "float32" and logical is None:
            return (
                f"{p}if type({x}) is not float or {x} != {x}:\n{p}    raise F\n{p}buf += PF({x})\n"
            )
        return None

    def generic(self, conn: Mapping[str, Any], avro: Any, x: str, p: str) -> str | None:
        """The two-step path's own converter and writer, for this field alone."""
        writer = compile_fast_writer(avro)
        if writer is None:
            return None
        conv = self.const(compile_payload_converter(conn))
        return f"{p}{self.const(writer)}(buf, {conv}({x}))\n"

    def record(self, conn: Mapping[str, Any], avro: Mapping[str, Any]) -> str | None:
        """A function ``r<n>(v, a, buf)`` writing the record (one referred to by name)."""
        fn = f"r{len(self.records)}"
        self.records[str(avro["name"])] = fn  # before its fields: they may refer to it
        body = self.fields(conn, avro, "v", "    ")
        if body is None:
            return None
        self.funcs.append(f"def {fn}(v, a, buf):\n{body}")
        return fn

    def fields(
        self, conn: Mapping[str, Any], avro: Mapping[str, Any], v: str, p: str
    ) -> str | None:
        """Code writing the record in variable ``v``, field by field."""
        fields, afields = conn.get("fields") or [], avro.get("fields") or []
        if conn.get("type") != "struct" or [f.get("field") for f in fields] != [
            f.get("name") for f in afields
        ]:
            return None
        body = [f"{p}if type({v}) is not dict:\n{p}    raise F\n"]
        for f, af in zip(fields, afields, strict=True):
            default = f.get("default")
            if default is not None:  # as the converter's struct does: the default converted
                default = compile_payload_converter(f)(default)
            get = (
                f"{p}x = {v}[{f['field']!r}]\n"
                if self.strict
                else f"{p}x = {v}.get({f['field']!r}, {self.const(default)})\n"
            )
            code = self.value(f, af["type"], "x", p)
            if code is None:
                code = self.generic(f, af["type"], "x", p)
                if code is None:
                    return None
            body.append(get + code)
        return "".join(body)

    def inline(
        self, conn: Mapping[str, Any], avro: Mapping[str, Any], x: str, p: str
    ) -> str | None:
        """Code writing the record in ``x`` in place (one never referred to by name: no call)."""
        v = f"v{len(self.inlined)}"
        self.inlined.append(v)
        body = self.fields(conn, avro, v, p)
        return None if body is None else f"{p}{v} = {x}\n{body}"


def _referenced(schema: Any, out: set[str]) -> set[str]:
    """The names ``schema`` (fastavro's parsed form) refers to (a named type used again)."""
    if isinstance(schema, str):
        out.add(schema)
    elif isinstance(schema, list):
        for s in schema:
            _referenced(s, out)
    elif isinstance(schema, Mapping):
        for f in schema.get("fields") or []:
            _referenced(f.get("type"), out)
        for k in ("items", "values"):
            if k in schema:
                _referenced(schema[k], out)
    return out


def compile_fused_encoder(
    connect_schema: Mapping[str, Any], avro_parsed: Any
) -> FusedEncoder | None:
    """The fused encoder of ``connect_schema`` whose Avro schema (fastavro's parsed form of
    ``connect_to_avro(connect_schema)``) is ``avro_parsed``; None for a schema it does not take.
    May raise on a schema of an unexpected shape (the caller then uses the two-step path)."""
    if connect_schema.get("type") != "struct":
        return None
    lenient = _generate(connect_schema, avro_parsed, strict=False, missing=None)
    if lenient is None:
        return None
    # the strict encoder reads fields by subscript; a payload missing one (not Debezium's) is
    # encoded by the lenient one, which gives a missing field its default
    return _generate(connect_schema, avro_parsed, strict=True, missing=lenient)


def _generate(
    connect_schema: Mapping[str, Any], avro_parsed: Any, strict: bool, missing: Any
) -> FusedEncoder | None:
    gen = _Gen(strict, _referenced(avro_parsed, set()))
    top = gen.value(connect_schema, avro_parsed, "p", "        " if strict else "    ")
    if top is None:
        return None
    head = "def encode(p):\n    if p is None:\n        raise F\n"
    head += "    buf = bytearray()\n    a = buf.append\n"
    if strict:
        gen.ns["MISSING"] = missing
        body = f"    try:\n{top}    except KeyError:\n        return MISSING(p)\n"
    else:
        body = top
    src = "".join(gen.funcs) + head + body + "    return bytes(buf)\n"
    exec(compile(src, f"<fused {avro_parsed.get('name', '')}>", "exec"), gen.ns)  # noqa: S102 - our own source
    encode: FusedEncoder = gen.ns["encode"]
    return encode
