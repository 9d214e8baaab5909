"""Unit tests of the Connect <-> Avro modules of crossfade.events: schemas, datums, FieldTypes,
AvroCodec (avro_schema, payload, row_schema, avro_codec)."""

from __future__ import annotations

import copy
import decimal
import io
import json
from typing import Any

import fastavro
import pytest

from crossfade.errors import DecodeError
from crossfade.events import avro_codec
from crossfade.events.avro_codec import AvroCodec, ConnectCodec, ConnectCodecCache
from crossfade.events.avro_schema import connect_to_avro
from crossfade.events.connect_schema import EncodeError
from crossfade.events.model import FieldType, RowSchema
from crossfade.events.payload import compile_payload_converter, json_payload_to_avro_datum
from crossfade.events.row_schema import (
    avro_field_type,
    avro_field_types,
    connect_field_type,
    connect_row_schema,
    envelope_row_schema,
)

# ------------------------------------------------------------------------------------------------
# The Debezium 3.6 example envelope (JsonConverter, schemas.enable=true)
# ------------------------------------------------------------------------------------------------

VALUE_FIELDS: list[dict[str, Any]] = [
    {"type": "int64", "optional": False, "field": "id"},
    {"type": "string", "optional": True, "field": "n"},
    {
        "type": "int64",
        "optional": True,
        "name": "io.debezium.time.MicroTimestamp",
        "version": 1,
        "field": "ts",
    },
    {
        "type": "string",
        "optional": True,
        "name": "io.debezium.time.ZonedTimestamp",
        "version": 1,
        "field": "tstz",
    },
    {
        "type": "int32",
        "optional": True,
        "name": "io.debezium.time.Date",
        "version": 1,
        "field": "d",
    },
    {
        "type": "string",
        "optional": True,
        "name": "io.debezium.data.Json",
        "version": 1,
        "field": "j",
    },
    {
        "type": "array",
        "items": {"type": "int32", "optional": True},
        "optional": True,
        "field": "arr",
    },
    {
        "type": "array",
        "items": {"type": "string", "optional": True},
        "optional": True,
        "field": "tarr",
    },
    {
        "type": "string",
        "optional": True,
        "name": "io.debezium.data.Uuid",
        "version": 1,
        "field": "u",
    },
    {"type": "bytes", "optional": True, "field": "b"},
    {
        "type": "string",
        "optional": True,
        "name": "io.debezium.time.Interval",
        "version": 1,
        "field": "iv",
    },
    {
        "type": "string",
        "optional": True,
        "name": "io.debezium.data.Enum",
        "version": 1,
        "parameters": {"allowed": "sad,ok,happy"},
        "field": "m",
    },
    {"type": "double", "optional": True, "field": "f8"},
    {"type": "boolean", "optional": True, "field": "bo"},
    {"type": "int16", "optional": True, "field": "sm"},
    {
        "type": "int64",
        "optional": True,
        "name": "io.debezium.time.MicroTime",
        "version": 1,
        "field": "t",
    },
]

SOURCE: dict[str, Any] = {
    "type": "struct",
    "optional": False,
    "name": "io.debezium.connector.postgresql.Source",
    "version": 1,
    "fields": [
        {"type": "string", "optional": False, "field": "version"},
        {"type": "string", "optional": False, "field": "connector"},
        {"type": "string", "optional": False, "field": "name"},
        {"type": "int64", "optional": False, "field": "ts_ms"},
        {
            "type": "string",
            "optional": True,
            "name": "io.debezium.data.Enum",
            "version": 1,
            "parameters": {
                "allowed": "true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"
            },
            "default": "false",
            "field": "snapshot",
        },
        {"type": "string", "optional": False, "field": "db"},
        {"type": "string", "optional": True, "field": "sequence"},
        {"type": "int64", "optional": True, "field": "ts_us"},
        {"type": "int64", "optional": True, "field": "ts_ns"},
        {"type": "string", "optional": False, "field": "schema"},
        {"type": "string", "optional": False, "field": "table"},
        {"type": "int64", "optional": True, "field": "txId"},
        {"type": "int64", "optional": True, "field": "lsn"},
        {"type": "int64", "optional": True, "field": "xmin"},
        {"type": "string", "optional": True, "field": "origin"},
        {"type": "int64", "optional": True, "field": "origin_lsn"},
    ],
}


def value_struct(field: str) -> dict[str, Any]:
    return {
        "field": field,
        "type": "struct",
        "optional": True,
        "name": "cf.public.t.Value",
        "fields": copy.deepcopy(VALUE_FIELDS),
    }


ENVELOPE: dict[str, Any] = {
    "type": "struct",
    "name": "cf.public.t.Envelope",
    "version": 2,
    "optional": False,
    "fields": [
        value_struct("before"),
        value_struct("after"),
        {**copy.deepcopy(SOURCE), "field": "source"},
        {
            "field": "transaction",
            "type": "struct",
            "optional": True,
            "name": "event.block",
            "version": 1,
            "fields": [
                {"type": "string", "optional": False, "field": "id"},
                {"type": "int64", "optional": False, "field": "total_order"},
                {"type": "int64", "optional": False, "field": "data_collection_order"},
            ],
        },
        {"type": "string", "optional": False, "field": "op"},
        {"type": "int64", "optional": True, "field": "ts_ms"},
        {"type": "int64", "optional": True, "field": "ts_us"},
        {"type": "int64", "optional": True, "field": "ts_ns"},
    ],
}

KEY: dict[str, Any] = {
    "type": "struct",
    "fields": [{"type": "int64", "optional": False, "field": "id"}],
    "optional": False,
    "name": "cf.public.t.Key",
}

AFTER_PAYLOAD: dict[str, Any] = {
    "id": 42,
    "n": 'héllo "wörld"',
    "ts": 1711852200123456,
    "tstz": "2024-10-27T00:30:00.000000Z",
    "d": 19782,
    "j": '{"a": [1, 2]}',
    "arr": [1, 2, None],
    "tarr": ["a", None, "c,d"],
    "u": "8e3d9b2c-1f4a-4e0b-9a55-7d1c2e3f4a5b",
    "b": "3q2+7w==",
    "iv": "P1Y2M3DT4H5M6.78S",
    "m": "happy",
    "f8": 1.5,
    "bo": True,
    "sm": -7,
    "t": 45296789012,
}

PAYLOAD: dict[str, Any] = {
    "before": None,
    "after": AFTER_PAYLOAD,
    "source": {
        "version": "3.6.3.Final",
        "connector": "postgresql",
        "name": "cf",
        "ts_ms": 1711852200123,
        "snapshot": "false",
        "db": "crm",
        "sequence": '["24023128","24023128"]',
        "ts_us": 1711852200123456,
        "ts_ns": 1711852200123456000,
        "schema": "public",
        "table": "t",
        "txId": 780,
        "lsn": 24023128,
        "xmin": None,
        "origin": None,
        "origin_lsn": None,
    },
    "transaction": None,
    "op": "c",
    "ts_ms": 1711852200200,
    "ts_us": 1711852200200123,
    "ts_ns": 1711852200200123456,
}


def field_of(record: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in record["fields"] if f["name"] == name)


# ------------------------------------------------------------------------------------------------
# connect_to_avro: the envelope
# ------------------------------------------------------------------------------------------------


def test_envelope_record_and_shared_value_record() -> None:
    schema = connect_to_avro(ENVELOPE)
    assert schema["type"] == "record"
    assert (schema["namespace"], schema["name"]) == ("cf.public.t", "Envelope")
    assert schema["connect.name"] == "cf.public.t.Envelope"
    assert schema["connect.version"] == 2

    before = field_of(schema, "before")
    assert before["default"] is None
    assert before["type"][0] == "null"
    value = before["type"][1]
    assert (value["type"], value["namespace"], value["name"]) == ("record", "cf.public.t", "Value")
    assert value["connect.name"] == "cf.public.t.Value"
    # The second occurrence refers to the record by name instead of redefining it.
    assert field_of(schema, "after") == {
        "name": "after",
        "type": ["null", "cf.public.t.Value"],
        "default": None,
    }
    assert json.dumps(schema).count('"name": "Value"') == 1


def test_envelope_value_fields_follow_avrodata() -> None:
    value = field_of(connect_to_avro(ENVELOPE), "before")["type"][1]
    assert field_of(value, "id") == {"name": "id", "type": "long"}
    assert field_of(value, "n") == {"name": "n", "type": ["null", "string"], "default": None}
    assert field_of(value, "ts")["type"] == [
        "null",
        {"type": "long", "connect.version": 1, "connect.name": "io.debezium.time.MicroTimestamp"},
    ]
    assert field_of(value, "d")["type"][1] == {
        "type": "int",
        "connect.version": 1,
        "connect.name": "io.debezium.time.Date",
    }
    assert field_of(value, "arr")["type"] == ["null", {"type": "array", "items": ["null", "int"]}]
    assert field_of(value, "b")["type"] == ["null", "bytes"]
    assert field_of(value, "m")["type"][1] == {
        "type": "string",
        "connect.version": 1,
        "connect.parameters": {"allowed": "sad,ok,happy"},
        "connect.name": "io.debezium.data.Enum",
    }
    assert field_of(value, "f8")["type"] == ["null", "double"]
    assert field_of(value, "sm")["type"] == ["null", {"type": "int", "connect.type": "int16"}]


def test_envelope_source_and_transaction() -> None:
    schema = connect_to_avro(ENVELOPE)
    source = field_of(schema, "source")["type"]
    assert (source["namespace"], source["name"]) == ("io.debezium.connector.postgresql", "Source")
    assert source["connect.version"] == 1
    assert "default" not in field_of(schema, "source")
    snapshot = field_of(source, "snapshot")
    # An optional schema with a non-null default: [T, "null"], the field default is the value.
    assert snapshot["default"] == "false"
    assert snapshot["type"][1] == "null"
    assert snapshot["type"][0]["connect.default"] == "false"
    assert snapshot["type"][0]["connect.name"] == "io.debezium.data.Enum"
    assert list(snapshot["type"][0]) == [
        "type",
        "connect.version",
        "connect.parameters",
        "connect.default",
        "connect.name",
    ]
    tx = field_of(schema, "transaction")
    assert tx["default"] is None
    assert (tx["type"][1]["namespace"], tx["type"][1]["name"]) == ("event", "block")
    assert field_of(schema, "op") == {"name": "op", "type": "string"}
    assert field_of(schema, "ts_ms") == {"name": "ts_ms", "type": ["null", "long"], "default": None}


def test_connect_to_avro_does_not_modify_its_input() -> None:
    before = copy.deepcopy(ENVELOPE)
    connect_to_avro(ENVELOPE)
    assert before == ENVELOPE


def test_envelope_round_trip_through_fastavro() -> None:
    avro_schema = connect_to_avro(ENVELOPE)
    parsed = fastavro.parse_schema(copy.deepcopy(avro_schema))
    datum = json_payload_to_avro_datum(ENVELOPE, PAYLOAD)
    assert datum["after"]["b"] == b"\xde\xad\xbe\xef"

    out = io.BytesIO()
    fastavro.schemaless_writer(out, parsed, datum)
    decoded = fastavro.schemaless_reader(io.BytesIO(out.getvalue()), parsed, None)
    assert decoded == datum

    codec = AvroCodec(avro_schema)
    body = codec.encode(datum)
    assert body == out.getvalue()
    back = codec.decode(body)
    assert back == datum
    assert back["after"]["tarr"] == ["a", None, "c,d"]
    assert back["after"]["n"] == 'héllo "wörld"'
    assert back["source"]["snapshot"] == "false"

    delete = {**PAYLOAD, "op": "d", "before": AFTER_PAYLOAD, "after": None}
    assert codec.decode(codec.encode(json_payload_to_avro_datum(ENVELOPE, delete)))["after"] is None


def test_key_schema_round_trip() -> None:
    key_avro = connect_to_avro(KEY)
    assert key_avro == {
        "type": "record",
        "name": "Key",
        "namespace": "cf.public.t",
        "fields": [{"name": "id", "type": "long"}],
        "connect.name": "cf.public.t.Key",
    }
    codec = AvroCodec(key_avro)
    assert codec.decode(codec.encode({"id": 7})) == {"id": 7}
    assert avro_field_types(key_avro) == RowSchema(
        "cf.public.t.Key", (("id", FieldType("int64", optional=False)),)
    )


# ------------------------------------------------------------------------------------------------
# connect_to_avro: every type
# ------------------------------------------------------------------------------------------------


def struct(*fields: dict[str, Any], name: str | None = "x.y.R") -> dict[str, Any]:
    out: dict[str, Any] = {"type": "struct", "optional": False, "fields": list(fields)}
    if name is not None:
        out["name"] = name
    return out


def single_field_type(field: dict[str, Any]) -> Any:
    return connect_to_avro(struct({**field, "field": "c"}))["fields"][0]["type"]


@pytest.mark.parametrize(
    ("connect", "expected"),
    [
        ({"type": "int8"}, {"type": "int", "connect.type": "int8"}),
        ({"type": "int16"}, {"type": "int", "connect.type": "int16"}),
        ({"type": "int32"}, "int"),
        ({"type": "int64"}, "long"),
        ({"type": "float"}, "float"),
        ({"type": "float32"}, "float"),
        ({"type": "double"}, "double"),
        ({"type": "float64"}, "double"),
        ({"type": "boolean"}, "boolean"),
        ({"type": "string"}, "string"),
        ({"type": "bytes"}, "bytes"),
        (
            {
                "type": "bytes",
                "name": "org.apache.kafka.connect.data.Decimal",
                "version": 1,
                "parameters": {"scale": "2", "connect.decimal.precision": "10"},
            },
            {
                "type": "bytes",
                "scale": 2,
                "precision": 10,
                "connect.version": 1,
                "connect.parameters": {"scale": "2", "connect.decimal.precision": "10"},
                "connect.name": "org.apache.kafka.connect.data.Decimal",
                "logicalType": "decimal",
            },
        ),
        (
            {
                "type": "bytes",
                "name": "org.apache.kafka.connect.data.Decimal",
                "parameters": {"scale": "3"},
            },
            {
                "type": "bytes",
                "scale": 3,
                "precision": 64,
                "connect.parameters": {"scale": "3"},
                "connect.name": "org.apache.kafka.connect.data.Decimal",
                "logicalType": "decimal",
            },
        ),
        (
            {"type": "int32", "name": "org.apache.kafka.connect.data.Date", "version": 1},
            {
                "type": "int",
                "connect.version": 1,
                "connect.name": "org.apache.kafka.connect.data.Date",
                "logicalType": "date",
            },
        ),
        (
            {"type": "int32", "name": "org.apache.kafka.connect.data.Time", "version": 1},
            {
                "type": "int",
                "connect.version": 1,
                "connect.name": "org.apache.kafka.connect.data.Time",
                "logicalType": "time-millis",
            },
        ),
        (
            {"type": "int64", "name": "org.apache.kafka.connect.data.Timestamp", "version": 1},
            {
                "type": "long",
                "connect.version": 1,
                "connect.name": "org.apache.kafka.connect.data.Timestamp",
                "logicalType": "timestamp-millis",
            },
        ),
        (
            {"type": "int64", "name": "io.debezium.time.NanoTimestamp", "version": 1},
            {
                "type": "long",
                "connect.version": 1,
                "connect.name": "io.debezium.time.NanoTimestamp",
            },
        ),
        (
            {"type": "string", "name": "io.debezium.time.ZonedTime", "version": 1},
            {"type": "string", "connect.version": 1, "connect.name": "io.debezium.time.ZonedTime"},
        ),
        (
            {
                "type": "bytes",
                "name": "io.debezium.data.Bits",
                "version": 1,
                "parameters": {"length": "5"},
            },
            {
                "type": "bytes",
                "connect.version": 1,
                "connect.parameters": {"length": "5"},
                "connect.name": "io.debezium.data.Bits",
            },
        ),
        ({"type": "string", "doc": "a doc"}, {"type": "string", "connect.doc": "a doc"}),
        (
            {"type": "array", "items": {"type": "int16"}},
            {"type": "array", "items": {"type": "int", "connect.type": "int16"}},
        ),
        (
            {
                "type": "map",
                "keys": {"type": "string"},
                "values": {"type": "string", "optional": True},
            },
            {"type": "map", "values": ["null", "string"]},
        ),
        (
            {"type": "map", "keys": {"type": "int32"}, "values": {"type": "string"}},
            {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "MapEntry",
                    "namespace": "io.confluent.connect.avro",
                    "fields": [{"name": "key", "type": "int"}, {"name": "value", "type": "string"}],
                },
            },
        ),
        ({"type": "string", "optional": True}, ["null", "string"]),
        (
            {"type": "int32", "optional": True, "default": 5},
            [{"type": "int", "connect.default": 5}, "null"],
        ),
    ],
)
def test_connect_type_mapping(connect: dict[str, Any], expected: Any) -> None:
    assert single_field_type(connect) == expected


def test_every_mapping_parses_in_fastavro() -> None:
    """All the shapes above together form one valid Avro schema."""
    fields = [
        {"type": "int8", "field": "a"},
        {
            "type": "bytes",
            "name": "org.apache.kafka.connect.data.Decimal",
            "parameters": {"scale": "2"},
            "field": "b",
        },
        {"type": "map", "keys": {"type": "int32"}, "values": {"type": "string"}, "field": "c"},
        {"type": "map", "keys": {"type": "int32"}, "values": {"type": "string"}, "field": "c2"},
        {"type": "int64", "name": "org.apache.kafka.connect.data.Timestamp", "field": "d"},
    ]
    schema = connect_to_avro(struct(*fields))
    fastavro.parse_schema(schema)
    # The second map of the same shape reuses the MapEntry record...
    assert field_of(schema, "c2")["type"] == {
        "type": "array",
        "items": "io.confluent.connect.avro.MapEntry",
    }
    # ...while a map of another shape cannot (Avro cannot define MapEntry twice).
    fields[3] = {
        "type": "map",
        "keys": {"type": "int64"},
        "values": {"type": "string"},
        "field": "c2",
    }
    with pytest.raises(EncodeError, match="MapEntry"):
        connect_to_avro(struct(*fields))


def test_field_defaults() -> None:
    schema = connect_to_avro(
        struct(
            {"type": "int64", "optional": False, "default": 7, "field": "a"},
            {"type": "string", "optional": True, "default": "x", "field": "b"},
            {"type": "bytes", "optional": False, "default": "3q0=", "field": "c"},
            {"type": "boolean", "optional": True, "field": "d"},
            {"type": "double", "optional": False, "default": 1, "field": "e"},
        )
    )
    assert field_of(schema, "a") == {
        "name": "a",
        "type": {"type": "long", "connect.default": 7},
        "default": 7,
    }
    assert field_of(schema, "b")["type"][1] == "null"
    assert field_of(schema, "b")["default"] == "x"
    # bytes defaults are one char per byte in Avro's JSON form
    assert field_of(schema, "c")["default"] == "\xde\xad"
    assert field_of(schema, "d")["default"] is None
    assert field_of(schema, "e")["default"] == 1.0
    codec = AvroCodec(schema)
    # fastavro accepts every default
    assert codec.decode(codec.encode({"a": 1, "b": None, "c": b"", "d": None, "e": 2.0}))["a"] == 1


def test_unnamed_structs_get_connect_default_names() -> None:
    inner1 = {"type": "struct", "optional": False, "fields": [{"type": "int32", "field": "x"}]}
    inner2 = {"type": "struct", "optional": True, "fields": [{"type": "string", "field": "y"}]}
    schema = connect_to_avro(
        struct(
            {**inner1, "field": "p"},
            {**inner2, "field": "q"},
            {**inner1, "field": "r"},
            name=None,
        )
    )
    assert (schema["namespace"], schema["name"]) == ("io.confluent.connect.avro", "ConnectDefault")
    p, q, r = (field_of(schema, n)["type"] for n in "pqr")
    assert p["name"] == "ConnectDefault2"
    assert q[1]["name"] == "ConnectDefault3"
    assert r == "io.confluent.connect.avro.ConnectDefault2"  # an equal struct is reused
    assert "connect.name" not in schema
    fastavro.parse_schema(schema)
    assert avro_field_types(schema).name == ""
    assert avro_field_types(schema).type_of("p") == FieldType("struct", optional=False)


def test_named_struct_reused_across_columns_and_optionality() -> None:
    vsd = {
        "type": "struct",
        "name": "io.debezium.data.VariableScaleDecimal",
        "version": 1,
        "doc": "Variable scaled decimal",
        "fields": [
            {"type": "int32", "optional": False, "field": "scale"},
            {"type": "bytes", "optional": False, "field": "value"},
        ],
    }
    schema = connect_to_avro(
        struct({**vsd, "optional": True, "field": "a"}, {**vsd, "optional": False, "field": "b"})
    )
    a, b = field_of(schema, "a"), field_of(schema, "b")
    assert a["type"][1]["name"] == "VariableScaleDecimal"
    assert a["type"][1]["connect.doc"] == "Variable scaled decimal"
    assert b["type"] == "io.debezium.data.VariableScaleDecimal"
    codec = AvroCodec(schema)
    datum = {"a": None, "b": {"scale": 2, "value": b"\x04\xd2"}}
    assert codec.decode(codec.encode(datum)) == datum


def test_conflicting_struct_names_are_refused() -> None:
    one = {"type": "struct", "name": "a.S", "fields": [{"type": "int32", "field": "x"}]}
    two = {"type": "struct", "name": "a.S", "fields": [{"type": "string", "field": "x"}]}
    with pytest.raises(EncodeError, match="a.S"):
        connect_to_avro(struct({**one, "field": "p"}, {**two, "field": "q"}))


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "uint32"},
        {"fields": []},
        {"type": "array"},
        {"type": "map", "keys": {"type": "string"}},
        {"type": "struct", "name": "s"},
    ],
)
def test_bad_connect_schemas_raise_encode_error(bad: dict[str, Any]) -> None:
    with pytest.raises(EncodeError):
        connect_to_avro(struct({**bad, "field": "c"}))
    assert issubclass(EncodeError, DecodeError)


# ------------------------------------------------------------------------------------------------
# JSON payload -> datum
# ------------------------------------------------------------------------------------------------

DATUM_SCHEMA = struct(
    {"type": "bytes", "optional": True, "field": "b"},
    {
        "type": "bytes",
        "optional": True,
        "name": "org.apache.kafka.connect.data.Decimal",
        "parameters": {"scale": "2", "connect.decimal.precision": "10"},
        "field": "dec",
    },
    {"type": "double", "optional": True, "field": "f"},
    {"type": "float", "optional": True, "field": "f4"},
    {"type": "int64", "optional": True, "field": "i"},
    {
        "type": "map",
        "keys": {"type": "int32"},
        "values": {"type": "string", "optional": True},
        "optional": True,
        "field": "m",
    },
    {
        "type": "map",
        "keys": {"type": "string"},
        "values": {"type": "bytes", "optional": True},
        "optional": True,
        "field": "hm",
    },
    {
        "type": "array",
        "items": {"type": "bytes", "optional": True},
        "optional": True,
        "field": "ab",
    },
    {"type": "string", "optional": True, "default": "dflt", "field": "s"},
)


def test_payload_conversions() -> None:
    payload = {
        "b": "AAEC",
        "dec": "BNI=",  # 1234 -> 12.34
        "f": "NaN",
        "f4": 3,
        "i": 9223372036854775807,
        "m": [[1, "one"], [2, None]],
        "hm": {"k": "/w==", "n": None},
        "ab": ["AA==", None],
    }
    datum = json_payload_to_avro_datum(DATUM_SCHEMA, payload)
    assert datum["b"] == b"\x00\x01\x02"
    assert datum["dec"] == b"\x04\xd2"
    assert datum["f"] != datum["f"]  # NaN
    assert datum["f4"] == 3.0 and isinstance(datum["f4"], float)
    assert datum["m"] == [{"key": 1, "value": "one"}, {"key": 2, "value": None}]
    assert datum["hm"] == {"k": b"\xff", "n": None}
    assert datum["ab"] == [b"\x00", None]
    assert datum["s"] == "dflt"  # missing field takes the schema default
    codec = ConnectCodec(DATUM_SCHEMA)
    assert codec.to_datum(payload)["dec"] == datum["dec"]
    back = codec.avro.decode(codec.encode(payload))
    assert back["dec"] == b"\x04\xd2"  # raw: no logical-type conversion on decode
    assert back["m"] == datum["m"]


@pytest.mark.parametrize(
    ("number", "expected"),
    [(12.34, b"\x04\xd2"), (decimal.Decimal("-0.01"), b"\xff"), (0, b"\x00"), (1.5, b"\x00\x96")],
)
def test_numeric_decimal_format(number: Any, expected: bytes) -> None:
    datum = json_payload_to_avro_datum(DATUM_SCHEMA, {"dec": number})
    assert datum["dec"] == expected
    assert compile_payload_converter(DATUM_SCHEMA)({"dec": number})["dec"] == expected


@pytest.mark.parametrize(
    "payload",
    [
        {"b": "not base64!"},
        {"b": 5},
        {"dec": 1.234},  # more fractional digits than the scale
        {"i": "x"},
        {"i": 1.5},
        {"f": [1]},
        "not an object",
    ],
)
def test_bad_payloads_raise_encode_error(payload: Any) -> None:
    with pytest.raises(EncodeError):
        json_payload_to_avro_datum(DATUM_SCHEMA, payload)
    with pytest.raises(EncodeError):
        compile_payload_converter(DATUM_SCHEMA)(payload)


def test_compiled_and_interpreted_conversions_agree() -> None:
    convert = compile_payload_converter(ENVELOPE)
    for payload in (PAYLOAD, {**PAYLOAD, "before": AFTER_PAYLOAD, "after": None, "op": "d"}):
        assert convert(payload) == json_payload_to_avro_datum(ENVELOPE, payload)
    assert convert(None) is None


def test_encode_rejects_datum_not_fitting_schema() -> None:
    codec = ConnectCodec(ENVELOPE)
    with pytest.raises(EncodeError, match="Envelope"):
        codec.avro.encode({"op": 5})
    with pytest.raises(EncodeError):
        codec.encode({**PAYLOAD, "after": {**AFTER_PAYLOAD, "id": None}})


# ------------------------------------------------------------------------------------------------
# Avro -> FieldType / RowSchema
# ------------------------------------------------------------------------------------------------

# What Kafka Connect's AvroConverter registers for a Debezium table (hand-written, Confluent style:
# namespace before name, connect.* properties, name references).
CONFLUENT_ENVELOPE = json.dumps(
    {
        "type": "record",
        "name": "Envelope",
        "namespace": "dbserver1.inventory.orders",
        "fields": [
            {
                "name": "before",
                "type": [
                    "null",
                    {
                        "type": "record",
                        "name": "Value",
                        "fields": [
                            {
                                "name": "id",
                                "type": {"type": "int", "connect.default": 0},
                                "default": 0,
                            },
                            {"name": "qty", "type": {"type": "int", "connect.type": "int16"}},
                            {
                                "name": "tiny",
                                "type": ["null", {"type": "int", "connect.type": "int8"}],
                                "default": None,
                            },
                            {
                                "name": "price",
                                "type": {
                                    "type": "bytes",
                                    "scale": 2,
                                    "precision": 10,
                                    "connect.version": 1,
                                    "connect.parameters": {
                                        "scale": "2",
                                        "connect.decimal.precision": "10",
                                    },
                                    "connect.name": "org.apache.kafka.connect.data.Decimal",
                                    "logicalType": "decimal",
                                },
                            },
                            {
                                "name": "amount",
                                "type": [
                                    "null",
                                    {
                                        "type": "record",
                                        "name": "VariableScaleDecimal",
                                        "namespace": "io.debezium.data",
                                        "fields": [
                                            {"name": "scale", "type": "int"},
                                            {"name": "value", "type": "bytes"},
                                        ],
                                        "connect.doc": "Variable scaled decimal",
                                        "connect.version": 1,
                                        "connect.name": "io.debezium.data.VariableScaleDecimal",
                                    },
                                ],
                                "default": None,
                            },
                            {
                                "name": "amount2",
                                "type": ["null", "io.debezium.data.VariableScaleDecimal"],
                                "default": None,
                            },
                            {
                                "name": "created",
                                "type": {
                                    "type": "long",
                                    "connect.version": 1,
                                    "connect.name": "io.debezium.time.MicroTimestamp",
                                },
                            },
                            {
                                "name": "mood",
                                "type": [
                                    "null",
                                    {
                                        "type": "string",
                                        "connect.version": 1,
                                        "connect.parameters": {"allowed": "sad,ok"},
                                        "connect.name": "io.debezium.data.Enum",
                                    },
                                ],
                                "default": None,
                            },
                            {
                                "name": "tags",
                                "type": ["null", {"type": "array", "items": ["null", "string"]}],
                                "default": None,
                            },
                            {"name": "ratio", "type": ["null", "float"], "default": None},
                            {
                                "name": "attrs",
                                "type": ["null", {"type": "map", "values": ["null", "string"]}],
                                "default": None,
                            },
                            {
                                "name": "due",
                                "type": {
                                    "type": "int",
                                    "connect.version": 1,
                                    "connect.name": "org.apache.kafka.connect.data.Date",
                                    "logicalType": "date",
                                },
                            },
                        ],
                        "connect.name": "dbserver1.inventory.orders.Value",
                    },
                ],
                "default": None,
            },
            {"name": "after", "type": ["null", "Value"], "default": None},
            {"name": "op", "type": "string"},
        ],
        "connect.version": 1,
        "connect.name": "dbserver1.inventory.orders.Envelope",
    }
)

VSD = FieldType("struct", "io.debezium.data.VariableScaleDecimal", True)


def test_avro_field_types_on_confluent_style_schema() -> None:
    rows = envelope_row_schema(CONFLUENT_ENVELOPE)
    assert rows.name == "dbserver1.inventory.orders.Value"
    assert rows.columns == (
        "id", "qty", "tiny", "price", "amount", "amount2", "created", "mood", "tags", "ratio",
        "attrs", "due",
    )  # fmt: skip
    assert rows.type_of("id") == FieldType("int32", optional=False)
    assert rows.type_of("qty") == FieldType("int16", optional=False)
    assert rows.type_of("tiny") == FieldType("int8", optional=True)
    price = rows.type_of("price")
    assert price.semantic == "org.apache.kafka.connect.data.Decimal"
    assert price.param("scale") == "2" and price.param("connect.decimal.precision") == "10"
    assert rows.type_of("amount") == VSD
    assert rows.type_of("amount2") == VSD  # resolved through the name reference
    assert rows.type_of("created") == FieldType("int64", "io.debezium.time.MicroTimestamp", False)
    assert rows.type_of("mood") == FieldType(
        "string", "io.debezium.data.Enum", True, parameters=(("allowed", "sad,ok"),)
    )
    assert rows.type_of("tags") == FieldType("array", None, True, FieldType("string"))
    assert rows.type_of("ratio") == FieldType("float32")
    assert rows.type_of("attrs") == FieldType("map", None, True, FieldType("string"))
    assert rows.type_of("due").semantic == "org.apache.kafka.connect.data.Date"

    # The codec finds the same row schema, and the Value record alone gives it too.
    assert AvroCodec(CONFLUENT_ENVELOPE).row_schema == rows
    value_record = json.loads(CONFLUENT_ENVELOPE)["fields"][0]["type"][1]
    value_record["namespace"] = "dbserver1.inventory.orders"
    assert avro_field_types(value_record) == rows


def test_avro_field_types_inverts_connect_to_avro() -> None:
    every = struct(
        *copy.deepcopy(VALUE_FIELDS),
        {"type": "int8", "optional": True, "field": "i8"},
        {"type": "float", "optional": False, "field": "f4"},
        {"type": "bytes", "name": "org.apache.kafka.connect.data.Decimal", "version": 1,
         "parameters": {"scale": "2", "connect.decimal.precision": "10"}, "optional": True, "field": "dec"},
        {"type": "int64", "name": "io.debezium.time.Timestamp", "version": 1, "field": "tsm"},
        {"type": "int64", "name": "io.debezium.time.NanoTimestamp", "version": 1, "field": "tsn"},
        {"type": "int32", "name": "org.apache.kafka.connect.data.Date", "version": 1, "field": "cd"},
        {"type": "string", "name": "io.debezium.data.Xml", "version": 1, "optional": True, "field": "x"},
        {"type": "bytes", "name": "io.debezium.data.Bits", "version": 1, "parameters": {"length": "3"}, "field": "bits"},
        {"type": "struct", "name": "io.debezium.data.geometry.Point", "version": 1, "optional": True, "field": "pt",
         "fields": [{"type": "double", "field": "x"}, {"type": "double", "field": "y"},
                    {"type": "bytes", "optional": True, "field": "wkb"}, {"type": "int32", "optional": True, "field": "srid"}]},
        {"type": "map", "keys": {"type": "string"}, "values": {"type": "string", "optional": True}, "optional": True, "field": "h"},
        {"type": "map", "keys": {"type": "int32"}, "values": {"type": "string"}, "optional": True, "field": "mi"},
        {"type": "array", "items": {"type": "array", "items": {"type": "int64", "optional": True}, "optional": True}, "field": "aa"},
        name="cf.public.every.Value",
    )  # fmt: skip
    expected = connect_row_schema(every)
    assert avro_field_types(connect_to_avro(every)) == expected
    assert expected.type_of("f8") == FieldType("float64")
    assert expected.type_of("f4") == FieldType("float32", optional=False)
    assert expected.type_of("mi") == FieldType(
        "map", None, True, FieldType("string", optional=False)
    )
    env = connect_to_avro(ENVELOPE)
    assert envelope_row_schema(env) == connect_row_schema(value_struct("after"))
    assert AvroCodec(env).row_schema == envelope_row_schema(env)


def test_connect_field_type() -> None:
    assert connect_field_type(VALUE_FIELDS[11]) == FieldType(
        "string", "io.debezium.data.Enum", True, parameters=(("allowed", "sad,ok,happy"),)
    )
    assert connect_field_type(VALUE_FIELDS[6]) == FieldType("array", None, True, FieldType("int32"))
    with pytest.raises(EncodeError):
        connect_field_type({"no": "type"})


@pytest.mark.parametrize(
    ("avro", "expected"),
    [
        ({"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 3},
         FieldType("bytes", "org.apache.kafka.connect.data.Decimal", False,
                   parameters=(("scale", "3"), ("connect.decimal.precision", "9")))),
        ({"type": "int", "logicalType": "date"}, FieldType("int32", "org.apache.kafka.connect.data.Date", False)),
        ({"type": "long", "logicalType": "timestamp-micros"}, FieldType("int64", "io.debezium.time.MicroTimestamp", False)),
        ({"type": "long", "logicalType": "time-micros"}, FieldType("int64", "io.debezium.time.MicroTime", False)),
        ({"type": "long", "logicalType": "timestamp-millis"}, FieldType("int64", "org.apache.kafka.connect.data.Timestamp", False)),
        ({"type": "string", "logicalType": "uuid"}, FieldType("string", "io.debezium.data.Uuid", False)),
        ({"type": "enum", "name": "E", "symbols": ["A"]}, FieldType("string", None, False)),
        ({"type": "fixed", "name": "F", "size": 4}, FieldType("bytes", None, False)),
        (["null", "long"], FieldType("int64", None, True)),
        (["long", "null"], FieldType("int64", None, True)),
        ("double", FieldType("float64", None, False)),
    ],
)  # fmt: skip
def test_avro_field_type_without_connect_metadata(avro: Any, expected: FieldType) -> None:
    assert avro_field_type(avro) == expected


@pytest.mark.parametrize(
    "bad",
    [
        ["null", "int", "string"],
        "null",
        "some.Unknown",
        {"type": "record", "name": "r", "fields": [{"name": "u", "type": ["int", "string"]}]},
    ],
)
def test_unsupported_avro_types_raise_decode_error(bad: Any) -> None:
    with pytest.raises(DecodeError):
        if isinstance(bad, dict):
            avro_field_types(bad)
        else:
            avro_field_type(bad)


def test_avro_field_types_needs_a_record() -> None:
    with pytest.raises(DecodeError):
        avro_field_types('"string"')
    with pytest.raises(DecodeError):
        avro_field_types("{not json")
    with pytest.raises(DecodeError):
        envelope_row_schema(connect_to_avro(KEY))


# ------------------------------------------------------------------------------------------------
# AvroCodec
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "fingerprint"),
    [
        # Test vectors of the Avro specification (share/test/data/schema-tests.txt), as Java longs.
        ('"int"', 8247732601305521295),
        ('"string"', -8142146995180207161),
        (
            '{"type":"record","name":"foo","fields":[{"name":"f1","type":"boolean"}]}',
            7843277075252814651,
        ),
    ],
)
def test_fingerprint_matches_avro_spec_vectors(schema: str, fingerprint: int) -> None:
    codec = AvroCodec(schema)
    assert codec.fingerprint == fingerprint % (1 << 64)
    assert codec.fingerprint_hex == f"{fingerprint % (1 << 64):016x}"
    assert codec.fingerprint_bytes == (fingerprint % (1 << 64)).to_bytes(8, "little")
    assert codec.fingerprint_bytes.hex() == fastavro.schema.fingerprint(
        codec.canonical_form, "CRC-64-AVRO"
    )


def test_fingerprint_ignores_connect_properties() -> None:
    plain = AvroCodec({"type": "record", "name": "a.R", "fields": [{"name": "x", "type": "long"}]})
    annotated = AvroCodec(
        {
            "type": "record",
            "name": "R",
            "namespace": "a",
            "fields": [
                {
                    "name": "x",
                    "type": {"type": "long", "connect.name": "io.debezium.time.MicroTimestamp"},
                }
            ],
            "connect.name": "a.R",
        }
    )
    assert plain.fingerprint == annotated.fingerprint
    assert plain == annotated


def test_codec_decodes_raw_values_without_logical_conversion() -> None:
    schema = connect_to_avro(
        struct(
            {"type": "int32", "name": "org.apache.kafka.connect.data.Date", "field": "d"},
            {"type": "int64", "name": "org.apache.kafka.connect.data.Timestamp", "field": "ts"},
            {
                "type": "bytes",
                "name": "org.apache.kafka.connect.data.Decimal",
                "parameters": {"scale": "1"},
                "field": "n",
            },
        )
    )
    codec = AvroCodec(json.dumps(schema))
    # Year 12000 and year -500 would overflow Python's date/datetime: raw ints survive.
    datum = {"d": 3_660_000, "ts": -78_000_000_000_000, "n": b"\x7f"}
    assert codec.decode(codec.encode(datum)) == datum


def test_codec_decode_errors() -> None:
    codec = AvroCodec(connect_to_avro(ENVELOPE))
    body = codec.encode(json_payload_to_avro_datum(ENVELOPE, PAYLOAD))
    with pytest.raises(DecodeError, match="corrupt Avro body"):
        codec.decode(body[: len(body) // 2])
    with pytest.raises(DecodeError, match="trailing bytes"):
        codec.decode(body + b"\x00\x00")
    with pytest.raises(DecodeError):
        codec.decode(b"")
    assert codec.decode(b"xx" + body, 2) == codec.decode(body)


@pytest.mark.parametrize(
    "bad",
    [
        "{not json",
        '{"type": "nope"}',
        '{"type": "record", "name": "r", "fields": [{"name": "a", "type": "Missing"}]}',
        '{"type": "array"}',
        '{"type": "enum", "name": "e", "symbols": ["a", "a"]}',
        "42",
    ],
)
def test_invalid_schema_raises_decode_error(bad: str) -> None:
    with pytest.raises(DecodeError, match="Avro schema"):
        AvroCodec(bad)


def test_decode_reuses_the_parsed_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    codec = AvroCodec(connect_to_avro(ENVELOPE))
    body = codec.encode(json_payload_to_avro_datum(ENVELOPE, PAYLOAD))
    built: list[Any] = []
    real_build = avro_codec._cavro_reader

    def build_spy(schema: Any) -> Any:
        built.append(schema)
        return real_build(schema)

    monkeypatch.setattr(avro_codec, "_cavro_reader", build_spy)
    for _ in range(3):
        codec.decode(body)
    assert len(built) == 1  # cavro's reader is built once per codec

    # the fastavro path (a schema cavro does not take) reuses fastavro's parsed schema
    fallback = AvroCodec(connect_to_avro(ENVELOPE))
    fallback._reader = None
    seen: list[int] = []
    real_reader = avro_codec.schemaless_reader

    def spy(stream: Any, writer_schema: Any, reader_schema: Any) -> Any:
        assert "__fastavro_parsed" in writer_schema  # never the raw schema
        seen.append(id(writer_schema))
        return real_reader(stream, writer_schema, reader_schema)

    monkeypatch.setattr(avro_codec, "schemaless_reader", spy)
    for _ in range(3):
        assert fallback.decode(body) == codec.decode(body)
    assert len(seen) == 3 and len(set(seen)) == 1


@pytest.mark.parametrize("reader", ["cavro", "fastavro"])
def test_both_readers_decode_alike_and_refuse_the_same_bytes(reader: str) -> None:
    schema = {
        "type": "record",
        "name": "r",
        "namespace": "n",
        "fields": [
            {"name": "f", "type": "float"},
            {"name": "d", "type": "double"},
            {"name": "b", "type": "boolean"},
            {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B"]}},
            {"name": "fx", "type": {"type": "fixed", "name": "F", "size": 3}},
            {"name": "m", "type": {"type": "map", "values": ["null", "long"]}},
            {
                "name": "dec",
                "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2},
            },
            {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "dt", "type": {"type": "int", "logicalType": "date"}},
            {"name": "arr", "type": {"type": "array", "items": "E"}},
            {"name": "s", "type": ["null", "string"], "default": None},
            {"name": "nested", "type": ["null", "r"], "default": None},
        ],
    }
    datum = {
        "f": 1.5,
        "d": 2.25,
        "b": True,
        "e": "B",
        "fx": b"abc",
        "m": {"k": None, "j": -5},
        "dec": b"\x01\x02",
        "ts": 1_700_000_000_000,
        "dt": 19_000,
        "arr": ["A", "B"],
        "s": "\u00e9t\u00e9",
        "nested": None,
    }
    codec = AvroCodec(schema)
    if reader == "fastavro":
        codec._reader = None
    body = codec.encode(datum)
    assert codec.decode(body) == datum  # raw values: logical types are not applied
    assert codec.decode(b"\x00\x00" + body, 2) == datum
    with pytest.raises(DecodeError, match="trailing bytes"):
        codec.decode(body + b"\x00")
    with pytest.raises(DecodeError, match="corrupt"):
        codec.decode(body[:-1])
    with pytest.raises(DecodeError, match="corrupt"):
        codec.decode(b"")


def test_connect_codec_cache() -> None:
    cache = ConnectCodecCache(maxsize=2)
    first = cache.get(ENVELOPE)
    assert cache.get(copy.deepcopy(ENVELOPE)) is first
    assert cache.get(ENVELOPE, key="k") is not first  # a caller-chosen key is its own entry
    cache.get(KEY)
    assert len(cache) == 2
    assert cache.get(ENVELOPE) is not first  # evicted (least recently used)
    assert first.avro == cache.get(ENVELOPE).avro


def test_numeric_decimal_beyond_default_context_precision() -> None:
    big = decimal.Decimal("123456789012345678901234567890123456789.25")
    datum = json_payload_to_avro_datum(DATUM_SCHEMA, {"dec": big})
    assert (
        int.from_bytes(datum["dec"], "big", signed=True)
        == 12345678901234567890123456789012345678925
    )


def test_a_negative_union_branch_is_corrupt() -> None:
    """fastavro's reader takes union index -1 as the last branch (Python indexing), so a corrupt
    byte could decode as another value; cavro, which sync uses, refuses it: a dead letter."""
    codec = AvroCodec(
        {"type": "record", "name": "r", "fields": [{"name": "u", "type": ["null", "string"]}]}
    )
    assert codec.decode(b"\x02\x04ab") == {"u": "ab"}
    with pytest.raises(DecodeError, match="corrupt"):
        codec.decode(b"\x01\x04ab")  # zigzag 1 = -1
