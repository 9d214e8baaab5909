"""Kafka Connect schemas to Avro, Avro back to crossfade's :class:`RowSchema`, and a codec.

capture hands this module Debezium's records as a Connect schema in the JSON converter's form
(what ``schemas.enable=true`` would embed as ``{"schema": ..., "payload": ...}``; capture reads it
beside the record, see :mod:`crossfade.capture.batch`) and the JSON payload. This module turns the
Connect schema into an
Avro schema with the conventions of Confluent's ``AvroData`` (what Kafka Connect's
``AvroConverter`` registers), so a topic written by crossfade decodes exactly like one written by
Kafka Connect + Schema Registry and vice versa:

* ``struct`` -> ``record``; the Connect name is split at its last dot into namespace and name; an
  unnamed struct becomes ``io.confluent.connect.avro.ConnectDefault`` (then ``ConnectDefault2``,
  ``ConnectDefault3``... within one schema);
* an optional schema -> the union ``["null", T]`` and the field gets ``"default": null``; when the
  optional schema has a non-null default the union is ``[T, "null"]`` and the field default is
  that value (Avro requires the default to match the first branch);
* ``int8``/``int16`` -> ``int`` with ``"connect.type"``; ``int32`` -> ``int``; ``int64`` -> ``long``;
  ``float32`` -> ``float``; ``float64`` -> ``double``; ``boolean``, ``string``, ``bytes`` as is;
  ``array`` -> ``array``; a ``map`` with non-optional string keys -> ``map``, any other map -> an
  array of ``io.confluent.connect.avro.MapEntry`` records ``{key, value}``;
* ``org.apache.kafka.connect.data.Decimal`` -> ``bytes`` with ``logicalType: decimal``, ``scale``
  and ``precision`` (``connect.decimal.precision``, default 64); Connect ``Date``/``Time``/
  ``Timestamp`` -> ``date``/``time-millis``/``timestamp-millis``;
* the Connect metadata travels in ``connect.doc``, ``connect.version``, ``connect.parameters``,
  ``connect.default``, ``connect.name`` properties of the (non-union) type;
* a named record is defined once; later occurrences (Debezium's ``before``/``after`` share
  ``<topic>.Value``) refer to it by full name.

Decoded datums keep Connect's wire representation: :class:`AvroCodec` decodes *without* Avro
logical-type conversion, so a Connect ``Decimal`` is its two's-complement ``bytes``, a ``Date`` an
``int`` of days, a ``Timestamp`` an ``int`` of milliseconds (no Python ``date`` overflow for years
outside 1..9999). :mod:`crossfade.events.pgtext` renders them with the column's :class:`FieldType`.

Errors: a schema or payload that cannot be converted raises :class:`EncodeError` (a terminal
:class:`~crossfade.errors.DecodeError`: the record goes to the dead-letter topic); bytes that do
not decode raise :class:`~crossfade.errors.DecodeError`.
"""

from __future__ import annotations

import base64
import binascii
import decimal
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
from crossfade.events.model import FieldType, RowSchema

__all__ = [
    "AVRO_NAMESPACE",
    "DEFAULT_SCHEMA_NAME",
    "AvroCodec",
    "ConnectCodec",
    "ConnectCodecCache",
    "EncodeError",
    "avro_field_type",
    "avro_field_types",
    "compile_payload_converter",
    "connect_field_type",
    "connect_row_schema",
    "connect_to_avro",
    "envelope_row_schema",
    "json_payload_to_avro_datum",
]

AVRO_NAMESPACE = "io.confluent.connect.avro"
"""Namespace Confluent's AvroData gives to records it has to name itself."""
DEFAULT_SCHEMA_NAME = "ConnectDefault"
"""Name of an unnamed Connect struct (``ConnectDefault``, ``ConnectDefault2``...)."""
_DEFAULT_FULL_NAME = f"{AVRO_NAMESPACE}.{DEFAULT_SCHEMA_NAME}"
_MAP_ENTRY = "MapEntry"
_MAP_ENTRY_FULL_NAME = f"{AVRO_NAMESPACE}.{_MAP_ENTRY}"

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
_DECIMAL_PRECISION = "connect.decimal.precision"
_DECIMAL_PRECISION_DEFAULT = 64
# Confluent's AvroData keeps parameters starting with "avro" as plain Avro properties.
_AVRO_PROP_PREFIX = "avro"
_FIELD_DEFAULT_FLAG = f"{AVRO_NAMESPACE}.field.default"

# JsonConverter spells Connect's FLOAT32/FLOAT64 "float"/"double"; accept both spellings.
_PRIMITIVE_TO_AVRO = {
    "int8": "int",
    "int16": "int",
    "int32": "int",
    "int64": "long",
    "float32": "float",
    "float64": "double",
    "float": "float",
    "double": "double",
    "boolean": "boolean",
    "string": "string",
    "bytes": "bytes",
}
_CONNECT_TYPE_ALIASES = {"float": "float32", "double": "float64"}
_AVRO_TO_CONNECT = {
    "int": "int32",
    "long": "int64",
    "float": "float32",
    "double": "float64",
    "boolean": "boolean",
    "string": "string",
    "bytes": "bytes",
}
_LOGICAL_FOR_CONNECT = {
    CONNECT_DATE: "date",
    CONNECT_TIME: "time-millis",
    CONNECT_TIMESTAMP: "timestamp-millis",
}
# Avro logical types without connect.name (a schema written by some other producer) -> semantic.
_SEMANTIC_FOR_LOGICAL = {
    "date": CONNECT_DATE,
    "time-millis": CONNECT_TIME,
    "timestamp-millis": CONNECT_TIMESTAMP,
    "time-micros": "io.debezium.time.MicroTime",
    "timestamp-micros": "io.debezium.time.MicroTimestamp",
    "local-timestamp-micros": "io.debezium.time.MicroTimestamp",
    "local-timestamp-millis": "io.debezium.time.Timestamp",
    "uuid": "io.debezium.data.Uuid",
}


class EncodeError(DecodeError):
    """A Connect schema or payload cannot be turned into Avro (terminal: dead-letter the record).

    A subclass of :class:`~crossfade.errors.DecodeError` so callers that route undecodable
    records to the dead-letter topic handle it the same way.
    """


# --------------------------------------------------------------------------------------------
# Connect schema -> Avro schema
# --------------------------------------------------------------------------------------------


class _FromConnect:
    """State of one :func:`connect_to_avro` conversion: the records defined so far."""

    def __init__(self) -> None:
        self.records: dict[str, str] = {}  # Avro full name -> identity key of its Connect struct
        self.default_index = 0

    def default_name(self) -> tuple[str, str]:
        self.default_index += 1
        suffix = str(self.default_index) if self.default_index > 1 else ""
        return AVRO_NAMESPACE, DEFAULT_SCHEMA_NAME + suffix


def _split_name(full: str) -> tuple[str, str]:
    ns, _, name = full.rpartition(".")
    return ns, name


def _struct_identity(schema: Mapping[str, Any]) -> str:
    """A key equal for two Connect structs Confluent would map to the same Avro record.

    Confluent's AvroData reuses the Avro schema of an *equal* non-optional Connect schema; the
    field name a schema sits under and its optionality are not part of that equality.
    """
    ident = {k: v for k, v in schema.items() if k not in ("field", "optional")}
    return json.dumps(ident, sort_keys=True, separators=(",", ":"), default=str)


def _params(schema: Mapping[str, Any]) -> dict[str, str]:
    params = schema.get("parameters")
    if not params:
        return {}
    if not isinstance(params, Mapping):
        raise EncodeError(f"Connect schema parameters must be an object, got {params!r}")
    return {str(k): str(v) for k, v in params.items()}


def _b64(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EncodeError(f"invalid base64 in a bytes value: {value[:40]!r}") from exc


def _decimal_to_unscaled_bytes(value: Any, scale: int) -> bytes:
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


def _decimal_scale(schema: Mapping[str, Any]) -> int:
    try:
        return int(_params(schema).get("scale", "0"))
    except ValueError as exc:
        raise EncodeError(f"Decimal scale is not an integer: {schema.get('parameters')!r}") from exc


def _default_to_avro(schema: Mapping[str, Any], value: Any) -> Any:
    """A Connect JSON default value -> the JSON form Avro expects for a default of that type."""
    if value is None:
        return None
    ctype = schema.get("type")
    if ctype == "bytes":
        if schema.get("name") == DECIMAL and not isinstance(value, str):
            raw = _decimal_to_unscaled_bytes(value, _decimal_scale(schema))
        elif isinstance(value, str):
            raw = _b64(value)
        else:
            raw = bytes(value)
        return raw.decode("latin-1")  # Avro's JSON form of bytes: one char per byte
    if ctype in ("int8", "int16", "int32", "int64"):
        return int(value)
    if ctype in ("float32", "float64", "float", "double"):
        return float(value)
    if ctype == "array":
        return [_default_to_avro(schema["items"], v) for v in value]
    if ctype == "map":
        keys, values = schema["keys"], schema["values"]
        if _is_string_map(schema):
            return {k: _default_to_avro(values, v) for k, v in value.items()}
        pairs = value.items() if isinstance(value, Mapping) else value
        return [[_default_to_avro(keys, k), _default_to_avro(values, v)] for k, v in pairs]
    if ctype == "struct":
        return {
            f["field"]: _default_to_avro(f, value.get(f["field"])) for f in schema.get("fields", [])
        }
    return value


def _is_string_map(schema: Mapping[str, Any]) -> bool:
    keys = schema.get("keys") or {}
    return keys.get("type") == "string" and not keys.get("optional", False)


def _connect_props(schema: Mapping[str, Any], connect_type: str | None) -> dict[str, Any]:
    """Confluent's ``connect.*`` properties of a (non-union) type, in AvroData's order."""
    props: dict[str, Any] = {}
    if schema.get("doc") is not None:
        props[CONNECT_DOC] = schema["doc"]
    if schema.get("version") is not None:
        props[CONNECT_VERSION] = int(schema["version"])
    params = {k: v for k, v in _params(schema).items() if k != _FIELD_DEFAULT_FLAG}
    if params:
        props[CONNECT_PARAMETERS] = params
    if schema.get("default") is not None:
        props[CONNECT_DEFAULT] = _default_to_avro(schema, schema["default"])
    if schema.get("name") is not None:
        props[CONNECT_NAME] = schema["name"]
    if connect_type is not None:
        props[CONNECT_TYPE] = connect_type
    return props


def _from_connect(schema: Mapping[str, Any], ctx: _FromConnect) -> Any:
    if not isinstance(schema, Mapping) or "type" not in schema:
        raise EncodeError(f"not a Connect schema: {schema!r:.200}")
    ctype = schema["type"]
    optional = bool(schema.get("optional", False))
    name = schema.get("name")

    if ctype == "struct":
        record = _record_from_connect(schema, ctx)
        # An optional struct is always ["null", record] in AvroData, whatever its default.
        return ["null", record] if optional else record

    base: Any
    props: dict[str, Any] = {}
    connect_type: str | None = None
    if ctype in ("int8", "int16"):
        base = "int"
        connect_type = ctype
    elif ctype in _PRIMITIVE_TO_AVRO:
        base = _PRIMITIVE_TO_AVRO[ctype]
    elif ctype == "array":
        if "items" not in schema:
            raise EncodeError(f"Connect array schema without items: {schema!r:.200}")
        base = {"type": "array", "items": _from_connect(schema["items"], ctx)}
    elif ctype == "map":
        if "keys" not in schema or "values" not in schema:
            raise EncodeError(f"Connect map schema without keys/values: {schema!r:.200}")
        if _is_string_map(schema):
            base = {"type": "map", "values": _from_connect(schema["values"], ctx)}
        else:
            entry_ns, entry_name = (
                (AVRO_NAMESPACE, _MAP_ENTRY) if name is None else _split_name(name)
            )
            entry: dict[str, Any] = {"type": "record", "name": entry_name, "namespace": entry_ns}
            entry["fields"] = [
                _avro_field("key", schema["keys"], ctx),
                _avro_field("value", schema["values"], ctx),
            ]
            if name is not None:
                entry[CONNECT_INTERNAL_TYPE] = _MAP_ENTRY
            full = f"{entry_ns}.{entry_name}"
            identity = _struct_identity({"keys": schema["keys"], "values": schema["values"]})
            seen = ctx.records.get(full)
            if seen is None:
                ctx.records[full] = identity
                base = {"type": "array", "items": entry}
            elif seen == identity:
                base = {"type": "array", "items": full}
            else:
                raise EncodeError(
                    f"two maps with different key/value types both need the Avro record {full}; "
                    "Avro cannot define a name twice (name the Connect map schemas)"
                )
    else:
        raise EncodeError(f"unknown Connect schema type {ctype!r}")

    if ctype == "bytes" and name == DECIMAL:
        params = _params(schema)
        scale = int(params.get("scale", "0"))
        precision = int(params.get(_DECIMAL_PRECISION, _DECIMAL_PRECISION_DEFAULT))
        props["scale"] = scale
        props["precision"] = precision

    props.update(_connect_props(schema, connect_type))
    if name == DECIMAL and ctype == "bytes":
        props["logicalType"] = "decimal"
    elif name in _LOGICAL_FOR_CONNECT:
        props["logicalType"] = _LOGICAL_FOR_CONNECT[name]
    for key, value in _params(schema).items():
        if key.startswith(_AVRO_PROP_PREFIX):
            props[key] = value

    if props:
        base = {"type": base, **props} if isinstance(base, str) else {**base, **props}

    if not optional:
        return base
    return [base, "null"] if schema.get("default") is not None else ["null", base]


def _record_from_connect(schema: Mapping[str, Any], ctx: _FromConnect) -> Any:
    name = schema.get("name")
    identity = _struct_identity(schema)
    if name is not None:
        ns, short = _split_name(name)
        full = name
        seen = ctx.records.get(full)
        if seen is not None:
            if seen != identity:
                raise EncodeError(
                    f"two different Connect structs are both named {name!r}; Avro cannot define "
                    "a name twice"
                )
            return full
    else:
        ns, short = ctx.default_name()
        full = f"{ns}.{short}"
        # Equal unnamed structs share one record, like AvroData's schema map.
        for existing, existing_identity in ctx.records.items():
            if existing_identity == identity and existing.startswith(_DEFAULT_FULL_NAME):
                ctx.default_index -= 1
                return existing
    ctx.records[full] = identity
    record: dict[str, Any] = {"type": "record", "name": short, "namespace": ns}
    fields = schema.get("fields")
    if not isinstance(fields, list):
        raise EncodeError(f"Connect struct {name or '(unnamed)'} has no field list")
    record["fields"] = [_avro_field(f.get("field"), f, ctx) for f in fields]
    record.update(_connect_props(schema, None))
    return record


def _avro_field(fname: Any, schema: Mapping[str, Any], ctx: _FromConnect) -> dict[str, Any]:
    if not isinstance(fname, str) or not fname:
        raise EncodeError(f"Connect struct field without a name: {schema!r:.200}")
    avro_type = _from_connect(schema, ctx)
    field: dict[str, Any] = {"name": fname, "type": avro_type}
    default = schema.get("default")
    if default is not None:
        if schema.get("type") == "struct" and schema.get("optional"):
            pass  # ["null", record] cannot take a struct default; AvroData drops it too
        else:
            field["default"] = _default_to_avro(schema, default)
    elif schema.get("optional"):
        field["default"] = None
    return field


def connect_to_avro(connect_schema: Mapping[str, Any]) -> dict[str, Any]:
    """Convert a Kafka Connect schema (its JsonConverter JSON form) to an Avro schema.

    Follows Confluent's ``AvroData`` conventions (see the module docstring). The top-level schema
    is returned as a dict (for a struct: the record; a top-level optional schema stays a union, so
    the return value may then be a ``list`` at runtime). The input is not modified.

    Raises :class:`EncodeError` for anything that is not a Connect schema, an unknown Connect
    type, or two different structs with the same name.
    """
    try:
        return _from_connect(connect_schema, _FromConnect())
    except EncodeError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise EncodeError(f"cannot convert Connect schema to Avro: {exc!r}") from exc


# --------------------------------------------------------------------------------------------
# FieldType / RowSchema from a Connect schema or an Avro schema
# --------------------------------------------------------------------------------------------


def connect_field_type(schema: Mapping[str, Any]) -> FieldType:
    """The :class:`FieldType` of one Connect schema (a struct field, an array item...).

    ``items`` is the element type of an array and, for a map, the type of its *values*.
    Parameters keep their order. Raises :class:`EncodeError` on a malformed schema.
    """
    try:
        ctype = schema["type"]
        ctype = _CONNECT_TYPE_ALIASES.get(ctype, ctype)
        items: FieldType | None = None
        if ctype == "array":
            items = connect_field_type(schema["items"])
        elif ctype == "map":
            items = connect_field_type(schema["values"])
        return FieldType(
            connect_type=ctype,
            semantic=schema.get("name"),
            optional=bool(schema.get("optional", False)),
            items=items,
            parameters=tuple(_params(schema).items()),
        )
    except EncodeError:
        raise
    except (KeyError, TypeError, AttributeError) as exc:
        raise EncodeError(f"malformed Connect schema {schema!r:.200}: {exc!r}") from exc


def connect_row_schema(struct_schema: Mapping[str, Any]) -> RowSchema:
    """The :class:`RowSchema` of a Connect struct (a Debezium ``Value`` or ``Key``).

    For a Debezium envelope pass its ``after`` field schema (the envelope itself gives the
    envelope's own fields). ``RowSchema.name`` is the struct's name ("" when unnamed). Raises
    :class:`EncodeError` if the schema is not a struct or is malformed.
    """
    if struct_schema.get("type") != "struct":
        raise EncodeError(f"not a Connect struct: {struct_schema!r:.200}")
    try:
        fields = tuple((f["field"], connect_field_type(f)) for f in struct_schema["fields"])
    except (KeyError, TypeError) as exc:
        raise EncodeError(f"malformed Connect struct {struct_schema!r:.200}: {exc!r}") from exc
    return RowSchema(name=struct_schema.get("name") or "", fields=fields)


def _fullname(name: str, namespace: str | None) -> str:
    if "." in name or not namespace:
        return name
    return f"{namespace}.{name}"


_AVRO_PRIMITIVES = frozenset(
    ("null", "boolean", "int", "long", "float", "double", "bytes", "string")
)


def _collect_named(schema: Any, namespace: str | None, out: dict[str, dict[str, Any]]) -> None:
    """Register every named type (record/enum/fixed) defined in ``schema`` under its full name."""
    if isinstance(schema, list):
        for member in schema:
            _collect_named(member, namespace, out)
        return
    if not isinstance(schema, Mapping):
        return
    atype = schema.get("type")
    if atype in ("record", "error", "enum", "fixed"):
        ns = schema.get("namespace", namespace)
        full = _fullname(schema["name"], ns)
        out.setdefault(full, dict(schema))
        inner_ns = full.rpartition(".")[0] or None
        for f in schema.get("fields", ()) if atype != "enum" else ():
            _collect_named(f.get("type"), inner_ns, out)
    elif atype == "array":
        _collect_named(schema.get("items"), namespace, out)
    elif atype == "map":
        _collect_named(schema.get("values"), namespace, out)
    elif isinstance(atype, list | dict):
        _collect_named(atype, namespace, out)


def _param_tuple(props: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    params = props.get(CONNECT_PARAMETERS)
    if not isinstance(params, Mapping):
        return ()
    return tuple((str(k), str(v)) for k, v in params.items())


class _ToFieldType:
    def __init__(self, named: dict[str, dict[str, Any]]) -> None:
        self.named = named

    def lookup(self, name: str, namespace: str | None) -> tuple[dict[str, Any], str]:
        for candidate in (_fullname(name, namespace), name):
            if candidate in self.named:
                return self.named[candidate], candidate
        raise DecodeError(f"Avro schema refers to unknown type {name!r}")

    def convert(self, t: Any, namespace: str | None, optional: bool = False) -> FieldType:
        if isinstance(t, list):
            members = [m for m in t if m != "null"]
            if len(members) == 1 and len(t) == 2:
                return self.convert(members[0], namespace, optional=True)
            if len(members) == 1 and len(t) == 1:
                return self.convert(members[0], namespace, optional)
            raise DecodeError(
                f"Avro union {json.dumps(t)[:200]} has no Connect equivalent crossfade supports "
                '(only ["null", T])'
            )
        if isinstance(t, str):
            if t in _AVRO_PRIMITIVES:
                if t == "null":
                    raise DecodeError("a bare Avro null type has no column type")
                return FieldType(_AVRO_TO_CONNECT[t], optional=optional)
            named, full = self.lookup(t, namespace)
            return self.convert_mapping(named, full.rpartition(".")[0] or None, optional)
        if isinstance(t, Mapping):
            return self.convert_mapping(t, namespace, optional)
        raise DecodeError(f"not an Avro schema: {t!r:.200}")

    def convert_mapping(
        self, t: Mapping[str, Any], namespace: str | None, optional: bool
    ) -> FieldType:
        atype = t.get("type")
        if isinstance(atype, list | dict):
            return self.convert(atype, namespace, optional)
        semantic = t.get(CONNECT_NAME)
        params = _param_tuple(t)
        if atype in ("record", "error"):
            full = _fullname(t["name"], t.get("namespace", namespace))
            if semantic is None and not full.startswith(_DEFAULT_FULL_NAME):
                semantic = full
            return FieldType("struct", semantic, optional, None, params)
        if atype == "array":
            items = t.get("items")
            entry = self._map_entry(items, namespace)
            if entry is not None:
                value_type = next(f["type"] for f in entry["fields"] if f["name"] == "value")
                entry_ns = _fullname(entry["name"], entry.get("namespace", namespace))
                values = self.convert(value_type, entry_ns.rpartition(".")[0] or None)
                return FieldType("map", semantic, optional, values, params)
            return FieldType("array", semantic, optional, self.convert(items, namespace), params)
        if atype == "map":
            return FieldType(
                "map", semantic, optional, self.convert(t["values"], namespace), params
            )
        if atype == "enum":
            return FieldType("string", semantic, optional, None, params)
        if atype == "fixed":
            return FieldType("bytes", semantic, optional, None, params)
        if atype in _AVRO_TO_CONNECT:
            connect_type = _AVRO_TO_CONNECT[atype]
            if atype == "int" and t.get(CONNECT_TYPE) in ("int8", "int16"):
                connect_type = t[CONNECT_TYPE]
            logical = t.get("logicalType")
            if semantic is None and logical is not None:
                if logical == "decimal" and atype == "bytes":
                    semantic = DECIMAL
                    if not params:
                        params = (
                            ("scale", str(t.get("scale", 0))),
                            (
                                _DECIMAL_PRECISION,
                                str(t.get("precision", _DECIMAL_PRECISION_DEFAULT)),
                            ),
                        )
                else:
                    semantic = _SEMANTIC_FOR_LOGICAL.get(logical)
            return FieldType(connect_type, semantic, optional, None, params)
        raise DecodeError(f"unsupported Avro type {atype!r}")

    def _map_entry(self, items: Any, namespace: str | None) -> Mapping[str, Any] | None:
        """The MapEntry record of Confluent's map-as-array encoding, or None."""
        record: Mapping[str, Any] | None = None
        full = ""
        if isinstance(items, str) and items not in _AVRO_PRIMITIVES:
            record, full = self.lookup(items, namespace)
        elif isinstance(items, Mapping) and items.get("type") == "record":
            record = items
            full = _fullname(items["name"], items.get("namespace", namespace))
        if record is None or record.get("type") != "record":
            return None
        if full == _MAP_ENTRY_FULL_NAME or record.get(CONNECT_INTERNAL_TYPE) == _MAP_ENTRY:
            return record
        return None


def _load(avro_schema: Mapping[str, Any] | str) -> Any:
    if isinstance(avro_schema, str):
        try:
            return json.loads(avro_schema)
        except json.JSONDecodeError as exc:
            raise DecodeError(f"Avro schema is not valid JSON: {exc}") from exc
    return avro_schema


def avro_field_type(
    avro_type: Any, named: Mapping[str, Mapping[str, Any]] | None = None
) -> FieldType:
    """The :class:`FieldType` of one Avro type (the inverse of :func:`connect_to_avro` per field).

    ``avro_type`` is a type as it appears in a schema (a primitive or named-type name such as
    ``"long"``, a union list, a dict), not JSON text.

    ``named`` maps full names to named types a bare name may refer to. Semantic types come from
    ``connect.name``; for schemas without Connect metadata the Avro logical types are mapped
    (``decimal`` -> Connect Decimal, ``date``/``time-millis``/``timestamp-millis`` -> Connect's,
    ``timestamp-micros``/``time-micros`` -> Debezium's Micro types, ``uuid`` -> Debezium Uuid).
    Raises :class:`~crossfade.errors.DecodeError` for a type with no Connect equivalent.
    """
    collected: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (named or {}).items()}
    _collect_named(avro_type, None, collected)
    return _ToFieldType(collected).convert(avro_type, None)


def avro_field_types(avro_schema: Mapping[str, Any] | str) -> RowSchema:
    """The :class:`RowSchema` of an Avro *record* schema (ours or one written by AvroConverter).

    Columns are the record's fields in order; each :class:`FieldType` is recovered from the Avro
    type and its ``connect.*`` properties (``connect.type`` int8/int16, ``connect.name``,
    ``connect.parameters``), optional when the type is a union with null. ``RowSchema.name`` is
    the record's ``connect.name`` or full name (empty for an AvroData default name). For a
    Debezium envelope use :func:`envelope_row_schema`. Raises
    :class:`~crossfade.errors.DecodeError` if the schema is not a record or holds a type crossfade
    cannot map.
    """
    loaded = _load(avro_schema)
    named: dict[str, dict[str, Any]] = {}
    _collect_named(loaded, None, named)
    return _row_schema(loaded, None, named)


def _row_schema(record: Any, namespace: str | None, named: dict[str, dict[str, Any]]) -> RowSchema:
    conv = _ToFieldType(named)
    if isinstance(record, str):
        record, full = conv.lookup(record, namespace)
        namespace = full.rpartition(".")[0] or None
    if not isinstance(record, Mapping) or record.get("type") not in ("record", "error"):
        raise DecodeError(f"not an Avro record schema: {json.dumps(record, default=str)[:200]}")
    full = _fullname(record["name"], record.get("namespace", namespace))
    inner_ns = full.rpartition(".")[0] or None
    name = record.get(CONNECT_NAME) or ("" if full.startswith(_DEFAULT_FULL_NAME) else full)
    try:
        fields = tuple((f["name"], conv.convert(f["type"], inner_ns)) for f in record["fields"])
    except (KeyError, TypeError) as exc:
        raise DecodeError(f"malformed Avro record {full}: {exc!r}") from exc
    return RowSchema(name=name, fields=fields)


def envelope_row_schema(avro_envelope: Mapping[str, Any] | str) -> RowSchema:
    """The row :class:`RowSchema` (Debezium's ``<topic>.Value``) of a Debezium envelope schema.

    Takes the record type of the envelope's ``after`` field (or ``before`` when ``after`` is
    absent), resolving a by-name reference. Raises :class:`~crossfade.errors.DecodeError` when the
    schema is not a Debezium envelope.
    """
    loaded = _load(avro_envelope)
    if not isinstance(loaded, Mapping) or loaded.get("type") != "record":
        raise DecodeError("not a Debezium envelope: the Avro schema is not a record")
    named: dict[str, dict[str, Any]] = {}
    _collect_named(loaded, None, named)
    ns = _fullname(loaded["name"], loaded.get("namespace")).rpartition(".")[0] or None
    by_name = {f["name"]: f["type"] for f in loaded.get("fields", [])}
    row_type = by_name.get("after", by_name.get("before"))
    if row_type is None:
        raise DecodeError(
            f"not a Debezium envelope: record {loaded.get('name')!r} has no before/after field"
        )
    if isinstance(row_type, list):
        members = [m for m in row_type if m != "null"]
        if len(members) != 1:
            raise DecodeError("Debezium envelope's after field is not an optional record")
        row_type = members[0]
    return _row_schema(row_type, ns, named)


# --------------------------------------------------------------------------------------------
# Debezium JSON payload -> Avro datum
# --------------------------------------------------------------------------------------------

Converter = Callable[[Any], Any]


def _bytes_conv(v: Any) -> Any:
    if isinstance(v, str):
        return _b64(v)
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v)
    raise EncodeError(f"expected base64 text or bytes, got {type(v).__name__}")


def _decimal_conv(scale: int) -> Converter:
    def conv(v: Any) -> Any:
        if isinstance(v, str):
            return _b64(v)
        if isinstance(v, bytes | bytearray | memoryview):
            return bytes(v)
        if isinstance(v, int | float | decimal.Decimal) and not isinstance(v, bool):
            return _decimal_to_unscaled_bytes(v, scale)
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
            return _decimal_conv(_decimal_scale(schema))
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
        if _is_string_map(schema):
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
            return _decimal_conv(_decimal_scale(schema))(v)
        return _bytes_conv(v)
    if ctype == "array":
        items = schema["items"]
        return [_to_datum(items, x) for x in v]
    if ctype == "map":
        keys, values = schema["keys"], schema["values"]
        if _is_string_map(schema):
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


# --------------------------------------------------------------------------------------------
# Codec
# --------------------------------------------------------------------------------------------


def _strip_logical_types(schema: Any) -> Any:
    """A copy of ``schema`` without ``logicalType``: same binary encoding, raw values on read."""
    if isinstance(schema, list):
        return [_strip_logical_types(s) for s in schema]
    if isinstance(schema, Mapping):
        return {k: _strip_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    return schema


_UNBUILT: Any = object()
_END = b"\xa5" + bytes(15)
"""Appended to a body read by cavro: no proper prefix of it is also a suffix, so bytes left after
the datum shift it and show, unless they themselves start with these 16 bytes."""


def _cavro_reader(schema: Any) -> Any:
    """cavro's reader of ``{"d": schema, "e": fixed(16)}`` (raw values, records as dicts), or
    None when cavro is not installed or does not take the schema (fastavro reads it then).
    Imported on first use: it loads numpy, which capture (encode only) does not need."""
    try:
        import cavro

        framed = {
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
        return cavro.Schema(framed, parse_json=False, record_decodes_to_dict=True)
    except Exception:  # ImportError, cavro's schema errors (stricter name rules than fastavro's)
        return None


class _NoFastPath(Exception):
    """The compiled writer cannot encode this datum exactly as fastavro would: use fastavro."""


_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1
_PACK_DOUBLE = struct.Struct("<d").pack
_PACK_FLOAT = struct.Struct("<f").pack
_FastWriter = Callable[[bytearray, Any], None]


def _varint(buf: bytearray, n: int) -> None:
    """Append Avro's zig-zag varint of ``n`` (caller checked it is a 64-bit int)."""
    n = (n << 1) ^ (n >> 63)
    while n > 0x7F:
        buf.append((n & 0x7F) | 0x80)
        n >>= 7
    buf.append(n)


def _w_long(buf: bytearray, v: Any) -> None:
    if type(v) is not int or not _LONG_MIN <= v <= _LONG_MAX:
        raise _NoFastPath
    if -64 <= v <= 63:
        buf.append((v << 1) ^ (v >> 63))
        return
    _varint(buf, v)


def _w_string(buf: bytearray, v: Any) -> None:
    if type(v) is not str:
        raise _NoFastPath
    b = v.encode()  # lone surrogates raise: fastavro then reports the error
    n = len(b)
    if n < 64:
        buf.append(n << 1)
    else:
        _varint(buf, n)
    buf += b


def _w_bytes(buf: bytearray, v: Any) -> None:
    if type(v) is not bytes:
        raise _NoFastPath
    _varint(buf, len(v))
    buf += v


def _w_double(buf: bytearray, v: Any) -> None:
    if type(v) is not float:
        raise _NoFastPath
    buf += _PACK_DOUBLE(v)


def _w_float(buf: bytearray, v: Any) -> None:
    if type(v) is not float or v != v:  # NaN payloads: leave their float32 rounding to fastavro
        raise _NoFastPath
    buf += _PACK_FLOAT(v)  # OverflowError (a double beyond float32): fastavro decides


def _w_boolean(buf: bytearray, v: Any) -> None:
    if type(v) is not bool:
        raise _NoFastPath
    buf.append(1 if v else 0)


def _w_null(buf: bytearray, v: Any) -> None:
    if v is not None:
        raise _NoFastPath


_PRIMITIVE_WRITERS: dict[str, _FastWriter] = {
    "null": _w_null,
    "boolean": _w_boolean,
    "int": _w_long,
    "long": _w_long,
    "float": _w_float,
    "double": _w_double,
    "bytes": _w_bytes,
    "string": _w_string,
}


def _fast_writer(schema: Any, named: dict[str, _FastWriter]) -> _FastWriter | None:
    """A writer for the schema shapes Connect -> Avro produces (records, ``null`` unions, arrays,
    maps, primitives with or without logical types), or None (fastavro writes it).

    A compiled writer only takes datums of the exact Python types fastavro writes without any
    conversion or union guessing (``int`` for int/long and their logical types, ``str``, ``bytes``,
    ``float``, ``bool``, ``dict`` with every record field, ``list``); anything else raises
    :class:`_NoFastPath` and the whole datum is written by fastavro, so the bytes (and errors)
    are fastavro's either way.
    """
    if isinstance(schema, str):
        if schema in _PRIMITIVE_WRITERS:
            return _PRIMITIVE_WRITERS[schema]
        if schema in named:
            return lambda buf, v: named[schema](buf, v)  # late-bound: the record may be in progress
        return None
    if isinstance(schema, list):
        if len(schema) != 2 or "null" not in schema:
            return None
        null_at = schema.index("null")
        other = _fast_writer(schema[1 - null_at], named)
        if other is None:
            return None
        null_byte, other_byte = (0, 2) if null_at == 0 else (2, 0)  # zig-zag of the branch index

        def w_union(buf: bytearray, v: Any) -> None:
            if v is None:
                buf.append(null_byte)
                return
            if type(v) is dict and "-type" in v:  # fastavro's explicit-branch notation
                raise _NoFastPath
            buf.append(other_byte)
            other(buf, v)

        return w_union
    if not isinstance(schema, Mapping):
        return None
    t = schema.get("type")
    if t == "record":
        fields: list[tuple[str, _FastWriter]] = []

        def w_record(buf: bytearray, v: Any) -> None:
            if type(v) is not dict:
                raise _NoFastPath
            try:
                for fname, fw in fields:
                    fw(buf, v[fname])
            except KeyError:  # a missing field takes its default in fastavro
                raise _NoFastPath from None

        named[str(schema["name"])] = w_record
        for f in schema.get("fields", []):
            fw = _fast_writer(f["type"], named)
            if fw is None:
                return None
            fields.append((f["name"], fw))
        return w_record
    if t == "array":
        item = _fast_writer(schema["items"], named)
        if item is None:
            return None

        def w_array(buf: bytearray, v: Any) -> None:
            if type(v) is not list:
                raise _NoFastPath
            if v:
                _varint(buf, len(v))
                for x in v:
                    item(buf, x)
            buf.append(0)

        return w_array
    if t == "map":
        value = _fast_writer(schema["values"], named)
        if value is None:
            return None

        def w_map(buf: bytearray, v: Any) -> None:
            if type(v) is not dict:
                raise _NoFastPath
            if v:
                _varint(buf, len(v))
                for k, x in v.items():
                    _w_string(buf, k)
                    value(buf, x)
            buf.append(0)

        return w_map
    if t in _PRIMITIVE_WRITERS:
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
            loaded = _load(schema)
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
            self._fast: _FastWriter | None = _fast_writer(parsed, {})
        except (KeyError, TypeError, ValueError, AttributeError):
            self._fast = None
        self._reader: Any = _UNBUILT  # cavro's reader of this schema, built on first decode

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
            except (_NoFastPath, UnicodeEncodeError, OverflowError, struct.error, RecursionError):
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
        if reader is not None:
            # read as a record {datum, end marker}: the marker must come right after the datum,
            # so trailing bytes (and a truncated datum) show without an exception per record
            try:
                framed = reader.binary_decode(b"".join((memoryview(data)[offset:], _END)))
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

    __slots__ = ("connect_schema", "avro", "to_datum")

    def __init__(self, connect_schema: Mapping[str, Any]) -> None:
        """Raises :class:`EncodeError` if the Connect schema cannot be converted."""
        self.connect_schema = connect_schema
        self.avro = AvroCodec(connect_to_avro(connect_schema))
        self.to_datum: Converter = compile_payload_converter(connect_schema)

    def encode(self, payload: Any) -> bytes:
        """Avro binary body of a Debezium JSON ``payload``. Raises :class:`EncodeError`."""
        return self.avro.encode(self.to_datum(payload))


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
