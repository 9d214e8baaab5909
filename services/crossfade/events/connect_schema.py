"""What the Connect <-> Avro modules share about a Kafka Connect schema.

The names and property keys of Confluent's ``AvroData`` conventions (``connect.*`` properties,
the ``io.confluent.connect.avro`` namespace of records it names itself), the names of Connect's
logical types, :class:`EncodeError`, and small readers of one Connect schema in its JsonConverter
JSON form (its parameters, a Decimal's scale, base64 bytes, whether a map has string keys).

Contract: pure functions and constants, no state; every reader raises :class:`EncodeError` on a
malformed value. This module imports nothing of crossfade's but the errors: the schema
derivation (:mod:`~crossfade.events.avro_schema`, :mod:`~crossfade.events.row_schema`) and the
payload conversion (:mod:`~crossfade.events.payload`) build on it.
"""

from __future__ import annotations

import base64
import binascii
import decimal
from collections.abc import Mapping
from typing import Any

from crossfade.errors import DecodeError

__all__ = [
    "AVRO_NAMESPACE",
    "CONNECT_DATE",
    "CONNECT_DEFAULT",
    "CONNECT_DOC",
    "CONNECT_INTERNAL_TYPE",
    "CONNECT_NAME",
    "CONNECT_PARAMETERS",
    "CONNECT_TIME",
    "CONNECT_TIMESTAMP",
    "CONNECT_TYPE",
    "CONNECT_VERSION",
    "DECIMAL",
    "DECIMAL_PRECISION",
    "DECIMAL_PRECISION_DEFAULT",
    "DEFAULT_FULL_NAME",
    "DEFAULT_SCHEMA_NAME",
    "MAP_ENTRY",
    "MAP_ENTRY_FULL_NAME",
    "EncodeError",
    "connect_params",
    "decimal_scale",
    "decimal_to_unscaled_bytes",
    "decode_base64",
    "is_string_map",
]

AVRO_NAMESPACE = "io.confluent.connect.avro"
"""Namespace Confluent's AvroData gives to records it has to name itself."""
DEFAULT_SCHEMA_NAME = "ConnectDefault"
"""Name of an unnamed Connect struct (``ConnectDefault``, ``ConnectDefault2``...)."""
DEFAULT_FULL_NAME = f"{AVRO_NAMESPACE}.{DEFAULT_SCHEMA_NAME}"
MAP_ENTRY = "MapEntry"
"""Name of the ``{key, value}`` record of a map without string keys (an array of entries)."""
MAP_ENTRY_FULL_NAME = f"{AVRO_NAMESPACE}.{MAP_ENTRY}"

CONNECT_NAME = "connect.name"
CONNECT_DOC = "connect.doc"
CONNECT_VERSION = "connect.version"
CONNECT_DEFAULT = "connect.default"
CONNECT_PARAMETERS = "connect.parameters"
CONNECT_TYPE = "connect.type"
CONNECT_INTERNAL_TYPE = "connect.internal.type"

DECIMAL = "org.apache.kafka.connect.data.Decimal"
CONNECT_DATE = "org.apache.kafka.connect.data.Date"
CONNECT_TIME = "org.apache.kafka.connect.data.Time"
CONNECT_TIMESTAMP = "org.apache.kafka.connect.data.Timestamp"
DECIMAL_PRECISION = "connect.decimal.precision"
DECIMAL_PRECISION_DEFAULT = 64


class EncodeError(DecodeError):
    """A Connect schema or payload cannot be turned into Avro (terminal: dead-letter the record).

    A subclass of :class:`~crossfade.errors.DecodeError` so callers that route undecodable
    records to the dead-letter topic handle it the same way.
    """


def connect_params(schema: Mapping[str, Any]) -> dict[str, str]:
    """The schema's ``parameters`` as strings, in their order ({} when it has none)."""
    params = schema.get("parameters")
    if not params:
        return {}
    if not isinstance(params, Mapping):
        raise EncodeError(f"Connect schema parameters must be an object, got {params!r}")
    return {str(k): str(v) for k, v in params.items()}


def decode_base64(value: str) -> bytes:
    """The bytes of JsonConverter's base64 text of a ``bytes`` value (strict: no stray chars)."""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EncodeError(f"invalid base64 in a bytes value: {value[:40]!r}") from exc


def decimal_to_unscaled_bytes(value: Any, scale: int) -> bytes:
    """A JSON number (``decimal.format=NUMERIC``) -> Connect Decimal's unscaled big-endian bytes."""
    d = value if isinstance(value, decimal.Decimal) else decimal.Decimal(str(value))
    if not d.is_finite():
        raise EncodeError(f"a Connect Decimal cannot hold {value!r}")
    sign, digits, exponent = d.as_tuple()
    coefficient = int("".join(map(str, digits)) or "0")
    shift = int(exponent) + scale  # exact integer arithmetic: no decimal context rounding
    if shift >= 0:
        n = coefficient * 10**shift
    else:
        n, rest = divmod(coefficient, 10**-shift)
        if rest:
            raise EncodeError(f"decimal {value!r} has more than {scale} fractional digits")
    if sign:
        n = -n
    length = max(1, (n + (n < 0)).bit_length() // 8 + 1)
    return n.to_bytes(length, "big", signed=True)


def decimal_scale(schema: Mapping[str, Any]) -> int:
    """The ``scale`` parameter of a Connect ``Decimal`` schema (0 when absent)."""
    try:
        return int(connect_params(schema).get("scale", "0"))
    except ValueError as exc:
        raise EncodeError(f"Decimal scale is not an integer: {schema.get('parameters')!r}") from exc


def is_string_map(schema: Mapping[str, Any]) -> bool:
    """Whether a Connect ``map`` has non-optional string keys (an Avro ``map``, not entries)."""
    keys = schema.get("keys") or {}
    return keys.get("type") == "string" and not keys.get("optional", False)
