"""crossfade's :class:`RowSchema` / :class:`FieldType` from a Connect schema or an Avro schema.

Capture derives the row of a Connect struct (:func:`connect_row_schema`); sync derives it from the
Avro schema a record was written with (:func:`avro_field_types`, :func:`envelope_row_schema`),
whether crossfade wrote it (:mod:`crossfade.events.avro_schema`) or Kafka Connect's
``AvroConverter`` did: the ``connect.*`` properties are read back, and for a schema without
them the Avro logical types are mapped to Connect's/Debezium's semantic types.

Contract: pure functions. A malformed Connect schema raises
:class:`~crossfade.events.connect_schema.EncodeError`; an Avro schema crossfade cannot map (or
that is not JSON, not a record, not a Debezium envelope where one is required) raises
:class:`~crossfade.errors.DecodeError`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from crossfade.errors import DecodeError
from crossfade.events.connect_schema import (
    CONNECT_DATE,
    CONNECT_INTERNAL_TYPE,
    CONNECT_NAME,
    CONNECT_PARAMETERS,
    CONNECT_TIME,
    CONNECT_TIMESTAMP,
    CONNECT_TYPE,
    DECIMAL,
    DECIMAL_PRECISION,
    DECIMAL_PRECISION_DEFAULT,
    DEFAULT_FULL_NAME,
    MAP_ENTRY,
    MAP_ENTRY_FULL_NAME,
    EncodeError,
    connect_params,
)
from crossfade.events.model import FieldType, RowSchema

__all__ = [
    "avro_field_type",
    "avro_field_types",
    "connect_field_type",
    "connect_row_schema",
    "envelope_row_schema",
    "load_avro_schema",
]

# JsonConverter spells Connect's FLOAT32/FLOAT64 "float"/"double": FieldType uses Connect's names.
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
            parameters=tuple(connect_params(schema).items()),
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
            if semantic is None and not full.startswith(DEFAULT_FULL_NAME):
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
                                DECIMAL_PRECISION,
                                str(t.get("precision", DECIMAL_PRECISION_DEFAULT)),
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
        if full == MAP_ENTRY_FULL_NAME or record.get(CONNECT_INTERNAL_TYPE) == MAP_ENTRY:
            return record
        return None


def load_avro_schema(avro_schema: Mapping[str, Any] | str) -> Any:
    """An Avro schema as a dict/list: JSON text is parsed, anything else returned as is.

    Raises :class:`~crossfade.errors.DecodeError` when the text is not valid JSON.
    """
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
    loaded = load_avro_schema(avro_schema)
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
    name = record.get(CONNECT_NAME) or ("" if full.startswith(DEFAULT_FULL_NAME) else full)
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
    loaded = load_avro_schema(avro_envelope)
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
