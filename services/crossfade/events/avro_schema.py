"""Kafka Connect schema -> Avro schema, with the conventions of Confluent's ``AvroData``.

capture hands this module the Connect schema of Debezium's records in the JSON converter's form
(what ``schemas.enable=true`` would embed as ``{"schema": ..., "payload": ...}``; capture reads it
beside the record, see :mod:`crossfade.capture.batch`). :func:`connect_to_avro` turns it into an
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

Contract: pure; the input is not modified. A schema that cannot be converted raises
:class:`~crossfade.events.connect_schema.EncodeError` (a terminal
:class:`~crossfade.errors.DecodeError`: the record goes to the dead-letter topic).
The inverse (an Avro schema back to crossfade's :class:`RowSchema`) is
:mod:`crossfade.events.row_schema`; the payload that goes with the schema is converted by
:mod:`crossfade.events.payload`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from crossfade.events.connect_schema import (
    AVRO_NAMESPACE,
    CONNECT_DATE,
    CONNECT_DEFAULT,
    CONNECT_DOC,
    CONNECT_INTERNAL_TYPE,
    CONNECT_NAME,
    CONNECT_PARAMETERS,
    CONNECT_TIME,
    CONNECT_TIMESTAMP,
    CONNECT_TYPE,
    CONNECT_VERSION,
    DECIMAL,
    DECIMAL_PRECISION,
    DECIMAL_PRECISION_DEFAULT,
    DEFAULT_FULL_NAME,
    DEFAULT_SCHEMA_NAME,
    MAP_ENTRY,
    EncodeError,
    connect_params,
    decimal_scale,
    decimal_to_unscaled_bytes,
    decode_base64,
    is_string_map,
)

__all__ = ["connect_to_avro"]

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
_LOGICAL_FOR_CONNECT = {
    CONNECT_DATE: "date",
    CONNECT_TIME: "time-millis",
    CONNECT_TIMESTAMP: "timestamp-millis",
}


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


def _default_to_avro(schema: Mapping[str, Any], value: Any) -> Any:
    """A Connect JSON default value -> the JSON form Avro expects for a default of that type."""
    if value is None:
        return None
    ctype = schema.get("type")
    if ctype == "bytes":
        if schema.get("name") == DECIMAL and not isinstance(value, str):
            raw = decimal_to_unscaled_bytes(value, decimal_scale(schema))
        elif isinstance(value, str):
            raw = decode_base64(value)
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
        if is_string_map(schema):
            return {k: _default_to_avro(values, v) for k, v in value.items()}
        pairs = value.items() if isinstance(value, Mapping) else value
        return [[_default_to_avro(keys, k), _default_to_avro(values, v)] for k, v in pairs]
    if ctype == "struct":
        return {
            f["field"]: _default_to_avro(f, value.get(f["field"])) for f in schema.get("fields", [])
        }
    return value


def _connect_props(schema: Mapping[str, Any], connect_type: str | None) -> dict[str, Any]:
    """Confluent's ``connect.*`` properties of a (non-union) type, in AvroData's order."""
    props: dict[str, Any] = {}
    if schema.get("doc") is not None:
        props[CONNECT_DOC] = schema["doc"]
    if schema.get("version") is not None:
        props[CONNECT_VERSION] = int(schema["version"])
    params = {k: v for k, v in connect_params(schema).items() if k != _FIELD_DEFAULT_FLAG}
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

    if ctype == "struct":
        record = _record_from_connect(schema, ctx)
        # An optional struct is always ["null", record] in AvroData, whatever its default.
        return ["null", record] if optional else record

    base: Any
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
        if is_string_map(schema):
            base = {"type": "map", "values": _from_connect(schema["values"], ctx)}
        else:
            base = _map_entries_from_connect(schema, ctx)
    else:
        raise EncodeError(f"unknown Connect schema type {ctype!r}")

    props = _type_props(schema, connect_type)
    if props:
        base = {"type": base, **props} if isinstance(base, str) else {**base, **props}

    if not optional:
        return base
    return [base, "null"] if schema.get("default") is not None else ["null", base]


def _map_entries_from_connect(schema: Mapping[str, Any], ctx: _FromConnect) -> dict[str, Any]:
    """A map without string keys: an Avro array of ``{key, value}`` entry records."""
    name = schema.get("name")
    entry_ns, entry_name = (AVRO_NAMESPACE, MAP_ENTRY) if name is None else _split_name(name)
    entry: dict[str, Any] = {"type": "record", "name": entry_name, "namespace": entry_ns}
    entry["fields"] = [
        _avro_field("key", schema["keys"], ctx),
        _avro_field("value", schema["values"], ctx),
    ]
    if name is not None:
        entry[CONNECT_INTERNAL_TYPE] = MAP_ENTRY
    full = f"{entry_ns}.{entry_name}"
    identity = _struct_identity({"keys": schema["keys"], "values": schema["values"]})
    seen = ctx.records.get(full)
    if seen is None:
        ctx.records[full] = identity
        return {"type": "array", "items": entry}
    if seen == identity:
        return {"type": "array", "items": full}
    raise EncodeError(
        f"two maps with different key/value types both need the Avro record {full}; "
        "Avro cannot define a name twice (name the Connect map schemas)"
    )


def _type_props(schema: Mapping[str, Any], connect_type: str | None) -> dict[str, Any]:
    """The properties of a (non-record) type: a Decimal's scale/precision, the ``connect.*``
    metadata, the logical type, and parameters that AvroData keeps as plain Avro properties."""
    ctype = schema["type"]
    name = schema.get("name")
    props: dict[str, Any] = {}
    if ctype == "bytes" and name == DECIMAL:
        params = connect_params(schema)
        scale = int(params.get("scale", "0"))
        precision = int(params.get(DECIMAL_PRECISION, DECIMAL_PRECISION_DEFAULT))
        props["scale"] = scale
        props["precision"] = precision

    props.update(_connect_props(schema, connect_type))
    if name == DECIMAL and ctype == "bytes":
        props["logicalType"] = "decimal"
    elif name in _LOGICAL_FOR_CONNECT:
        props["logicalType"] = _LOGICAL_FOR_CONNECT[name]
    for key, value in connect_params(schema).items():
        if key.startswith(_AVRO_PROP_PREFIX):
            props[key] = value
    return props


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
            if existing_identity == identity and existing.startswith(DEFAULT_FULL_NAME):
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
