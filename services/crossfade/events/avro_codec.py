"""The Avro codec: one schema parsed once, its fingerprint, encode and decode of datums.

:class:`AvroCodec` encodes with the compiled writer of :mod:`crossfade.events.avro_writer`
(fastavro for what it does not take) and decodes with cavro (fastavro for a schema cavro does not
take). :class:`ConnectCodec` is what capture compiles per Connect schema: the Avro schema from
:mod:`crossfade.events.avro_schema`, its codec, and the payload converter of
:mod:`crossfade.events.payload`; :class:`ConnectCodecCache` keeps them.

Decoded datums keep Connect's wire representation: :class:`AvroCodec` decodes *without* Avro
logical-type conversion, so a Connect ``Decimal`` is its two's-complement ``bytes``, a ``Date`` an
``int`` of days, a ``Timestamp`` an ``int`` of milliseconds (no Python ``date`` overflow for years
outside 1..9999). :mod:`crossfade.events.pgtext` renders them with the column's :class:`FieldType`.

Errors: a datum or payload that cannot be encoded raises
:class:`~crossfade.events.connect_schema.EncodeError` (a terminal
:class:`~crossfade.errors.DecodeError`: the record goes to the dead-letter topic); an invalid
schema or bytes that do not decode raise :class:`~crossfade.errors.DecodeError`.
"""

from __future__ import annotations

import contextlib
import io
import json
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from crossfade.errors import DecodeError
from crossfade.events.avro_fused import FusedEncoder, compile_fused_encoder
from crossfade.events.avro_schema import connect_to_avro
from crossfade.events.avro_writer import FastWriter, NoFastPath, compile_fast_writer
from crossfade.events.connect_schema import EncodeError
from crossfade.events.model import RowSchema
from crossfade.events.payload import Converter, compile_payload_converter
from crossfade.events.row_schema import avro_field_types, envelope_row_schema, load_avro_schema

__all__ = ["AvroCodec", "ConnectCodec", "ConnectCodecCache"]


def _strip_logical_types(schema: Any) -> Any:
    """A copy of ``schema`` without ``logicalType``: same binary encoding, raw values on read."""
    if isinstance(schema, list):
        return [_strip_logical_types(s) for s in schema]
    if isinstance(schema, Mapping):
        return {k: _strip_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    return schema


_ENVELOPE_SOURCE_READ = frozenset({"snapshot", "lsn", "ts_ms", "txId"})
"""The ``source`` fields a change event is made of (:func:`crossfade.events.decode.event_from_envelope`)."""
_ENVELOPE_READ = frozenset({"before", "after", "source", "op"})


def _defines_name(schema: Any) -> bool:
    """Whether ``schema`` defines a named type (a record, enum or fixed) anywhere inside."""
    if isinstance(schema, list):
        return any(_defines_name(s) for s in schema)
    if isinstance(schema, Mapping):
        return schema.get("type") in ("record", "enum", "fixed", "error") or any(
            _defines_name(v)
            for k, v in schema.items()
            if k in ("type", "fields", "items", "values")
        )
    return False


def envelope_projection(schema: Any) -> Any | None:
    """The reader schema of a Debezium envelope without the fields a change event is not made of
    (``source``'s version, connector, names, sequence...; the envelope's own timestamps): a reader
    resolved against the writer skips their bytes instead of building Python values of them.
    None when ``schema`` is not an envelope or nothing would be left out. Fields whose type
    defines a named type stay (a later field may refer to it by name)."""
    if not isinstance(schema, Mapping) or schema.get("type") != "record":
        return None
    fields = schema.get("fields") or []
    if not _ENVELOPE_READ - {"before"} <= {f.get("name") for f in fields}:
        return None
    out, dropped = [], False
    for f in fields:
        t = f.get("type")
        if f.get("name") == "source" and isinstance(t, Mapping) and t.get("type") == "record":
            sub = [
                g
                for g in t.get("fields") or []
                if g.get("name") in _ENVELOPE_SOURCE_READ or _defines_name(g.get("type"))
            ]
            if len(sub) < len(t.get("fields") or []):
                f, dropped = {**f, "type": {**t, "fields": sub}}, True
        elif f.get("name") not in _ENVELOPE_READ and not _defines_name(t):
            dropped = True
            continue
        out.append(f)
    return {**schema, "fields": out} if dropped else None


_UNBUILT: Any = object()
_END = b"\xa5" + bytes(15)
"""Appended to a body read by cavro: no proper prefix of it is also a suffix, so bytes left after
the datum shift it and show, unless they themselves start with these 16 bytes."""


def _framed(schema: Any) -> dict[str, Any]:
    return {
        "type": "record",
        "name": "crossfade_framed_datum",
        "fields": [
            {"name": "d", "type": _strip_logical_types(schema)},
            {
                "name": "e",
                "type": {"type": "fixed", "name": "crossfade_end_marker", "size": len(_END)},
            },
        ],
    }


def preload_reader() -> None:
    """Import cavro, and numpy with it (0.1-0.2 s), now rather than in the first decode: sync calls
    this while its consumer group join waits on the broker, so its first batch does not wait."""
    with contextlib.suppress(ImportError):
        import cavro  # noqa: F401


def _cavro_reader(schema: Any, reader_schema: Any = None) -> Any:
    """cavro's reader of ``{"d": schema, "e": fixed(16)}`` (raw values, records as dicts), or
    None when cavro is not installed or does not take the schema (fastavro reads it then).
    ``reader_schema``: read the datum as that projection of ``schema`` (fields left out are
    skipped). Imported on first use: it loads numpy, which capture (encode only) does not need."""
    try:
        import cavro

        writer = cavro.Schema(_framed(schema), parse_json=False, record_decodes_to_dict=True)
        if reader_schema is None:
            return writer
        return cavro.Schema(
            _framed(reader_schema), parse_json=False, record_decodes_to_dict=True
        ).reader_for_writer(writer)
    except Exception:  # ImportError, cavro's schema errors (stricter name rules than fastavro's)
        return None


class AvroCodec:
    """One Avro schema, parsed once, with its CRC-64-AVRO fingerprint; encodes and decodes datums.

    ``fingerprint`` is the unsigned 64-bit Rabin fingerprint of the schema's Parsing Canonical
    Form (what Java's ``SchemaNormalization.parsingFingerprint64`` returns, as unsigned);
    ``fingerprint_hex`` is that number as 16 hex digits (``f"{fingerprint:016x}"``, the key of
    the schema topic); ``fingerprint_bytes`` are the 8 bytes as written, little-endian, in Avro's
    single-object encoding (their ``.hex()`` is what ``fastavro.schema.fingerprint(canonical,
    "CRC-64-AVRO")`` returns: the byte-reversed ``fingerprint_hex``).

    Instances are immutable and thread-safe. :meth:`decode` returns raw values (no logical-type
    conversion, see the module docstring).
    """

    def __init__(self, schema: Mapping[str, Any] | list[Any] | str) -> None:
        """Parse ``schema`` (a dict/list or its JSON text).

        Raises :class:`~crossfade.errors.DecodeError` if it is not a valid Avro schema.
        """
        if isinstance(schema, str):
            schema_json = schema
            loaded = load_avro_schema(schema)
        else:
            loaded = schema
            schema_json = json.dumps(schema, separators=(",", ":"))
        try:
            parsed = parse_schema(loaded)
            read_parsed = parse_schema(_strip_logical_types(loaded))
            canonical = to_parsing_canonical_form(parsed)
        except Exception as exc:  # fastavro raises several unrelated types for bad schemas
            raise DecodeError(f"invalid Avro schema: {exc}") from exc
        self.schema: Any = loaded
        self.schema_json: str = schema_json
        self.parsed: Any = parsed
        self._read_parsed: Any = read_parsed
        self.canonical_form: str = canonical
        self.fingerprint_bytes: bytes = bytes.fromhex(
            _fastavro_fingerprint(canonical, "CRC-64-AVRO")
        )
        self.fingerprint: int = int.from_bytes(self.fingerprint_bytes, "little")
        self.fingerprint_hex: str = f"{self.fingerprint:016x}"
        try:
            self._fast: FastWriter | None = compile_fast_writer(parsed)
        except (KeyError, TypeError, ValueError, AttributeError):
            self._fast = None
        self._reader: Any = _UNBUILT  # cavro's reader of this schema, built on first decode
        self._change_reader: Any = _UNBUILT  # the same, of an envelope's projection

    @property
    def name(self) -> str:
        """Full name of the top-level named type, or the type name for an unnamed schema."""
        schema = self.parsed
        if isinstance(schema, Mapping):
            return str(schema.get("name") or schema.get("type"))
        return str(schema)

    @cached_property
    def row_schema(self) -> RowSchema:
        """The row this schema carries: the ``Value`` record of a Debezium envelope, otherwise
        the record's own fields (a key). Raises DecodeError for a non-record schema."""
        schema = self.schema
        if isinstance(schema, Mapping) and schema.get("type") == "record":
            names = {f.get("name") for f in schema.get("fields", [])}
            if {"after", "op"} <= names:
                return envelope_row_schema(schema)
        return avro_field_types(schema)

    def encode(self, datum: Any) -> bytes:
        """Avro binary encoding of ``datum`` (no framing). Raises :class:`EncodeError` when the
        datum does not fit the schema.

        A writer compiled from the schema encodes the datums it can (5-10x faster than fastavro's
        generic writer, which resolves every ``["null", T]`` union by validating the datum); it
        hands anything it is not certain about to fastavro, so the bytes are fastavro's."""
        fast = self._fast
        if fast is not None:
            buf = bytearray()
            try:
                fast(buf, datum)
                return bytes(buf)
            except (NoFastPath, UnicodeEncodeError, OverflowError, struct.error, RecursionError):
                pass
        out = io.BytesIO()
        try:
            schemaless_writer(out, self.parsed, datum)
        except Exception as exc:  # fastavro: ValueError, TypeError, KeyError, struct.error...
            raise EncodeError(f"datum does not fit Avro schema {self.name}: {exc!r:.300}") from exc
        return out.getvalue()

    def decode(self, data: bytes | bytearray | memoryview, offset: int = 0) -> Any:
        """Decode one datum from ``data[offset:]``, which must hold exactly that datum.

        Raises :class:`~crossfade.errors.DecodeError` if the bytes are truncated, corrupt, or
        followed by trailing bytes.

        cavro (Cython) reads the datum, 2-3x faster than fastavro's generic reader on Debezium
        envelopes (the most CPU sync spends per event); a schema cavro does not take is read by
        fastavro. Both return the same raw values (logical types stripped from the read schema).
        """
        reader = self._reader
        if reader is _UNBUILT:
            reader = self._reader = _cavro_reader(self.schema)
        return self._decode(reader, data, offset)

    def decode_change(self, data: bytes | bytearray | memoryview, offset: int = 0) -> Any:
        """:meth:`decode` of a Debezium envelope, without the values a change event is not made of
        (:func:`envelope_projection`: their bytes are skipped, not read into Python values);
        the whole datum for any other schema. Same errors as :meth:`decode`, except that a
        skipped string is not checked to be UTF-8."""
        reader = self._change_reader
        if reader is _UNBUILT:
            projection = envelope_projection(self.schema)
            reader = _cavro_reader(self.schema, projection) if projection is not None else None
            if reader is None:  # not an envelope, or cavro does not take it: the whole datum
                if self._reader is _UNBUILT:
                    self._reader = _cavro_reader(self.schema)
                reader = self._reader
            self._change_reader = reader
        return self._decode(reader, data, offset)

    def _decode(self, reader: Any, data: bytes | bytearray | memoryview, offset: int) -> Any:
        if reader is not None:
            # read as a record {datum, end marker}: the marker must come right after the datum,
            # so trailing bytes (and a truncated datum) show without an exception per record
            try:
                framed = reader.binary_decode(
                    data[offset:] + _END  # bytes from Kafka: two copies, cheaper than a join
                    if type(data) is bytes
                    else b"".join((memoryview(data)[offset:], _END))
                )
            except Exception as exc:  # EOFError, ValueError, UnicodeDecodeError, CavroException...
                raise DecodeError(
                    f"corrupt Avro body for schema {self.name} "
                    f"(fingerprint {self.fingerprint_hex}): {exc!r:.200}"
                ) from exc
            if framed["e"] == _END:
                return framed["d"]
            raise DecodeError(
                f"Avro body for schema {self.name} (fingerprint {self.fingerprint_hex}) has "
                "trailing bytes (or is truncated): wrong schema or corrupt record"
            )
        stream = io.BytesIO(data)
        if offset:
            stream.seek(offset)
        try:
            datum = schemaless_reader(stream, self._read_parsed, None)
        except Exception as exc:  # EOFError, UnicodeDecodeError, IndexError, ValueError...
            raise DecodeError(
                f"corrupt Avro body for schema {self.name} "
                f"(fingerprint {self.fingerprint_hex}): {exc!r:.200}"
            ) from exc
        end = stream.tell()
        if end != len(data):
            raise DecodeError(
                f"Avro body for schema {self.name} (fingerprint {self.fingerprint_hex}) has "
                f"{len(data) - end} trailing bytes: wrong schema or corrupt record"
            )
        return datum

    def __repr__(self) -> str:
        return f"AvroCodec({self.name}, fingerprint={self.fingerprint_hex})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AvroCodec) and other.canonical_form == self.canonical_form

    def __hash__(self) -> int:
        return hash(self.fingerprint)


class ConnectCodec:
    """A Connect schema compiled for capture: its Avro :class:`AvroCodec` and payload converter."""

    __slots__ = ("connect_schema", "avro", "to_datum", "_fused")

    def __init__(self, connect_schema: Mapping[str, Any]) -> None:
        """Raises :class:`EncodeError` if the Connect schema cannot be converted."""
        self.connect_schema = connect_schema
        self.avro = AvroCodec(connect_to_avro(connect_schema))
        self.to_datum: Converter = compile_payload_converter(connect_schema)
        try:
            self._fused: FusedEncoder | None = compile_fused_encoder(
                connect_schema, self.avro.parsed
            )
        except Exception:  # noqa: BLE001 - a shape it does not expect: the two-step path only
            self._fused = None

    def encode(self, payload: Any) -> bytes:
        """Avro binary body of a Debezium JSON ``payload``. Raises :class:`EncodeError`.

        The schema's fused encoder (:mod:`crossfade.events.avro_fused`) writes what it takes;
        anything else, and every error, is the two-step path's: the datum, then its bytes."""
        fused = self._fused
        if fused is not None:
            try:
                return fused(payload)
            except Exception:  # noqa: BLE001, S110 - Fallback or a surprise: the exact path decides
                pass
        return self.avro.encode(self.to_datum(payload))

    def framed(self, frame: Callable[[bytes], bytes]) -> Callable[[Any], bytes]:
        """``frame(self.encode(payload))`` as one function (capture's per-record call)."""
        fused, avro, to_datum = self._fused, self.avro, self.to_datum
        if fused is None:
            return lambda payload: frame(avro.encode(to_datum(payload)))

        def encode(payload: Any) -> bytes:
            try:
                return frame(fused(payload))
            except Exception:  # noqa: BLE001 - Fallback or a surprise: the exact path decides
                return frame(avro.encode(to_datum(payload)))

        return encode


class ConnectCodecCache:
    """LRU cache of :class:`ConnectCodec` keyed by the Connect schema's content (thread-safe)."""

    def __init__(self, maxsize: int = 512) -> None:
        self._maxsize = maxsize
        self._items: OrderedDict[str | bytes, ConnectCodec] = OrderedDict()
        self._lock = threading.Lock()

    def get(
        self, connect_schema: Mapping[str, Any], key: str | bytes | None = None
    ) -> ConnectCodec:
        """The codec of ``connect_schema``, built on first use. Raises :class:`EncodeError`.

        ``key`` identifies the schema's content; by default it is the schema re-serialised as
        JSON, which for a Debezium envelope costs about as much as encoding a record: a caller
        holding the schema's original JSON text should pass that text instead.
        """
        if key is None:
            # Key order is not normalised (sort_keys costs more still): the same schema
            # serialised in another key order just gets a second, identical entry.
            key = json.dumps(connect_schema, separators=(",", ":"), default=str)
        with self._lock:
            codec = self._items.get(key)
            if codec is not None:
                self._items.move_to_end(key)
                return codec
        codec = ConnectCodec(connect_schema)
        with self._lock:
            self._items[key] = codec
            while len(self._items) > self._maxsize:
                self._items.popitem(last=False)
        return codec

    def __len__(self) -> int:
        return len(self._items)
