"""Debezium JSON payload -> the Avro datum of its Connect schema.

Debezium's JsonConverter writes a payload beside its Connect schema; the Avro schema derived from
that Connect schema (:func:`crossfade.events.avro_schema.connect_to_avro`) wants a datum in
fastavro's terms: ``bytes`` for base64 text, a Connect ``Decimal`` as its unscaled
two's-complement bytes, ``float`` for floats written as integers or ``"NaN"``, schema defaults for
missing fields, ``[{"key", "value"}]`` entries for a map with non-string keys.
:func:`compile_payload_converter` compiles that conversion once per schema (capture's hot path);
:func:`json_payload_to_avro_datum` walks the schema for a one-off conversion. Both give the same
datum.

Contract: pure; a payload (or schema) that does not fit raises
:class:`~crossfade.events.connect_schema.EncodeError` (terminal: the record is dead-lettered).
"""

from __future__ import annotations

import decimal
from collections.abc import Callable, Mapping
from typing import Any

from crossfade.events.connect_schema import (
    DECIMAL,
    EncodeError,
    decimal_scale,
    decimal_to_unscaled_bytes,
    decode_base64,
    is_string_map,
)

__all__ = ["Converter", "compile_payload_converter", "json_payload_to_avro_datum"]

Converter = Callable[[Any], Any]


def _bytes_conv(v: Any) -> Any:
    if isinstance(v, str):
        return decode_base64(v)
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v)
    raise EncodeError(f"expected base64 text or bytes, got {type(v).__name__}")


def _decimal_conv(scale: int) -> Converter:
    def conv(v: Any) -> Any:
        if isinstance(v, str):
            return decode_base64(v)
        if isinstance(v, bytes | bytearray | memoryview):
            return bytes(v)
        if isinstance(v, int | float | decimal.Decimal) and not isinstance(v, bool):
            return decimal_to_unscaled_bytes(v, scale)
        raise EncodeError(f"expected a Decimal as base64 text or a number, got {v!r:.60}")

    return conv


def _float_conv(v: Any) -> Any:
    if isinstance(v, float):
        return v
    if isinstance(v, int | str | decimal.Decimal) and not isinstance(v, bool):
        return float(v)  # "NaN", "Infinity", "-Infinity" and integers written without a point
    raise EncodeError(f"expected a number, got {v!r:.60}")


def _int_conv(v: Any) -> Any:
    if type(v) is int:
        return v
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise EncodeError(f"expected an integer, got {v!r:.60}")
    as_int = int(v)
    if as_int != v and str(as_int) != v:
        raise EncodeError(f"expected an integer, got {v!r:.60}")
    return as_int


def _compile(schema: Mapping[str, Any]) -> Converter | None:
    """A converter for values of ``schema`` (None when the JSON value is already the datum)."""
    ctype = schema.get("type")
    if ctype == "struct":
        fields = []
        for f in schema.get("fields", []):
            conv = _compile(f)
            default = f.get("default")
            if default is not None and conv is not None:
                default = conv(default)
            fields.append((f["field"], conv, default))
        name = schema.get("name") or "struct"

        def struct_conv(v: Any) -> Any:
            if not isinstance(v, Mapping):
                raise EncodeError(f"expected an object for {name}, got {type(v).__name__}")
            out = {}
            for fname, conv, default in fields:
                x = v.get(fname, default)
                out[fname] = conv(x) if conv is not None and x is not None else x
            return out

        return struct_conv
    if ctype == "bytes":
        if schema.get("name") == DECIMAL:
            return _decimal_conv(decimal_scale(schema))
        return _bytes_conv
    if ctype in ("float32", "float64", "float", "double"):
        return _float_conv
    if ctype in ("int8", "int16", "int32", "int64"):
        return _int_conv
    if ctype == "array":
        item = _compile(schema["items"])
        if item is None:
            return None

        def array_conv(v: Any) -> Any:
            return [item(x) if x is not None else None for x in v]

        return array_conv
    if ctype == "map":
        keys_conv = _compile(schema["keys"])
        values_conv = _compile(schema["values"])
        if is_string_map(schema):
            if values_conv is None:
                return None

            def map_conv(v: Any) -> Any:
                return {k: values_conv(x) if x is not None else None for k, x in v.items()}

            return map_conv

        def entries_conv(v: Any) -> Any:
            # JsonConverter writes a map with non-string keys as [[k, v], ...]
            pairs = v.items() if isinstance(v, Mapping) else v
            return [
                {
                    "key": keys_conv(k) if keys_conv is not None and k is not None else k,
                    "value": values_conv(x) if values_conv is not None and x is not None else x,
                }
                for k, x in pairs
            ]

        return entries_conv
    if ctype in ("string", "boolean"):
        return None
    raise EncodeError(f"unknown Connect schema type {ctype!r}")


def compile_payload_converter(connect_schema: Mapping[str, Any]) -> Converter:
    """Build a fast function turning Debezium JSON payloads of ``connect_schema`` into datums.

    The datum is what :class:`AvroCodec` (fastavro) writes for ``connect_to_avro(connect_schema)``:
    base64 text of ``bytes`` fields becomes ``bytes``; a Connect ``Decimal`` (base64 or, with
    ``decimal.format=NUMERIC``, a number) becomes its unscaled two's-complement bytes; floats
    given as integers or as ``"NaN"``/``"Infinity"`` become ``float``; a field missing from the
    payload takes its schema default (else None); maps with non-string keys become
    ``[{"key", "value"}]`` entry lists. Other values pass through unchanged (a datum may share
    lists/strings with the payload). The returned function raises :class:`EncodeError` for a
    payload that does not fit the schema.
    """
    try:
        conv = _compile(connect_schema)
    except EncodeError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise EncodeError(f"cannot compile Connect schema: {exc!r}") from exc
    if conv is None:
        return _identity
    inner = conv

    def convert(payload: Any) -> Any:
        if payload is None:
            return None
        try:
            return inner(payload)
        except EncodeError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, decimal.InvalidOperation) as exc:
            raise EncodeError(f"Debezium payload does not fit its Connect schema: {exc!r}") from exc

    return convert


def _identity(v: Any) -> Any:
    return v


def _to_datum(schema: Mapping[str, Any], v: Any) -> Any:
    """Interpreted twin of :func:`_compile` for one-off conversions (no compile step)."""
    if v is None:
        return None
    ctype = schema["type"]
    if ctype == "struct":
        if not isinstance(v, Mapping):
            name = schema.get("name") or "struct"
            raise EncodeError(f"expected an object for {name}, got {type(v).__name__}")
        out = {}
        for f in schema["fields"]:
            fname = f["field"]
            out[fname] = _to_datum(f, v[fname] if fname in v else f.get("default"))
        return out
    if ctype in ("string", "boolean"):
        return v
    if ctype in ("int8", "int16", "int32", "int64"):
        return _int_conv(v)
    if ctype in ("float32", "float64", "float", "double"):
        return _float_conv(v)
    if ctype == "bytes":
        if schema.get("name") == DECIMAL:
            return _decimal_conv(decimal_scale(schema))(v)
        return _bytes_conv(v)
    if ctype == "array":
        items = schema["items"]
        return [_to_datum(items, x) for x in v]
    if ctype == "map":
        keys, values = schema["keys"], schema["values"]
        if is_string_map(schema):
            return {k: _to_datum(values, x) for k, x in v.items()}
        pairs = v.items() if isinstance(v, Mapping) else v
        return [{"key": _to_datum(keys, k), "value": _to_datum(values, x)} for k, x in pairs]
    raise EncodeError(f"unknown Connect schema type {ctype!r}")


def json_payload_to_avro_datum(connect_schema: Mapping[str, Any], payload: Any) -> Any:
    """Convert one Debezium JSON payload to the datum fastavro writes.

    Same result as ``compile_payload_converter(connect_schema)(payload)`` (see there for the
    conversions), but walks the schema directly instead of compiling it, so it costs nothing
    extra for a schema seen once; for many records of one schema the compiled converter (or
    :class:`ConnectCodec`) is faster. Raises :class:`EncodeError` when the payload does not fit
    the schema.
    """
    try:
        return _to_datum(connect_schema, payload)
    except EncodeError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, decimal.InvalidOperation) as exc:
        raise EncodeError(f"Debezium payload does not fit its Connect schema: {exc!r}") from exc
