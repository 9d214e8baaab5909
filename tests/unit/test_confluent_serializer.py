"""The Kafka Connect path's wire format: bytes from Confluent's own serializer, decoded by sync.

Kafka Connect (Debezium + ``AvroConverter`` + Schema Registry) writes Confluent-framed Avro
(``00`` + 4-byte registry id + Avro body) under the subjects ``<topic>-key`` / ``<topic>-value``.
Here confluent-kafka's ``AvroSerializer`` produces those bytes against a registry client, and
sync's decoder (:class:`crossfade.events.decode.EventDecoder`, resolving ids through
:class:`crossfade.events.framing.RegistryResolver`) must turn them into the same
:class:`ChangeEvent` and the same PostgreSQL literals as crossfade's own framing, for every
column type crossfade supports.

The registry is confluent-kafka's in-memory ``mock://`` client (no server). The Avro schemas are
what Kafka Connect's AvroData registers for Debezium's Connect schemas
(:func:`crossfade.events.avro_schema.connect_to_avro` follows it; tests/unit/test_avro.py checks that
shape); the Avro datums are written by hand in Connect's representation (Decimal as unscaled
two's-complement bytes, MicroTimestamp as an int of microseconds...), not derived by crossfade.
"""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import pytest

from crossfade.config import KafkaConfig
from crossfade.errors import DecodeError
from crossfade.events.avro_codec import AvroCodec
from crossfade.events.avro_schema import connect_to_avro
from crossfade.events.decode import EventDecoder
from crossfade.events.framing import (
    RegistryResolver,
    detect_framing,
    frame_confluent,
    parse_confluent,
)
from crossfade.events.pgtext import to_pg_text

sr = pytest.importorskip(
    "confluent_kafka.schema_registry",
    reason="confluent-kafka's Schema Registry client needs the `registry` extra (pip install -e '.[registry]')",
)
avro_sr = pytest.importorskip(
    "confluent_kafka.schema_registry.avro",
    reason="confluent-kafka's AvroSerializer needs the `registry` extra (fastavro, requests)",
)
from confluent_kafka.serialization import MessageField, SerializationContext  # noqa: E402

TOPIC = "crm.public.everything"
TABLE = "public.everything"
_registry_names = itertools.count()


def col(
    field: str, connect_type: str, name: str | None = None, optional: bool = True, **extra: Any
) -> dict[str, Any]:
    d: dict[str, Any] = {"type": connect_type, "optional": optional, "field": field}
    if name:
        d["name"] = name
        d["version"] = 1
    d.update(extra)
    return d


# (Connect column schema, Avro datum in Connect's representation, PostgreSQL literal sync writes)
COLUMNS: list[tuple[dict[str, Any], Any, str | None]] = [
    (col("id", "int64", optional=False), 42, "42"),
    (col("sm", "int16"), -32768, "-32768"),
    (col("i4", "int32"), 2147483647, "2147483647"),
    (col("i8", "int64"), -9223372036854775808, "-9223372036854775808"),
    (col("bo", "boolean"), True, "t"),
    (col("f4", "float"), 1.5, "1.5"),
    (col("f8", "double"), 0.1, "0.1"),
    (col("f8_nan", "double"), math.nan, "NaN"),
    (col("f8_inf", "double"), -math.inf, "-Infinity"),
    # numeric with decimal.handling.mode=string (crossfade's connector setting): exact text
    (col("num", "string"), "12345678901234567890.123456789", "12345678901234567890.123456789"),
    (col("num_nan", "string"), "NaN", "NaN"),
    # numeric with decimal.handling.mode=precise: Connect Decimal, and Debezium's variable scale
    (
        col("dec", "bytes", "org.apache.kafka.connect.data.Decimal",
            parameters={"scale": "2", "connect.decimal.precision": "10"}),
        (12345).to_bytes(2, "big", signed=True),
        "123.45",
    ),
    (
        col("dec_neg", "bytes", "org.apache.kafka.connect.data.Decimal", parameters={"scale": "2"}),
        (-1).to_bytes(1, "big", signed=True),
        "-0.01",
    ),
    (
        {
            "type": "struct", "optional": True, "field": "vsd",
            "name": "io.debezium.data.VariableScaleDecimal", "version": 1,
            "doc": "Variable scaled decimal",
            "fields": [
                {"type": "int32", "optional": False, "field": "scale"},
                {"type": "bytes", "optional": False, "field": "value"},
            ],
        },
        {"scale": 3, "value": (-1234).to_bytes(2, "big", signed=True)},
        "-1.234",
    ),
    (col("txt", "string"), "héllo \"wörld\"\t\n\\", "héllo \"wörld\"\t\n\\"),
    (col("txt_null", "string"), None, None),
    (col("by", "bytes"), b"\xde\xad\x00\xef", "\\xdead00ef"),
    (col("d", "int32", "io.debezium.time.Date"), 19782, "2024-02-29"),
    (col("d_bc", "int32", "io.debezium.time.Date"), -719163, "0001-12-31 BC"),
    (col("ts", "int64", "io.debezium.time.MicroTimestamp"), 1711852200123456, "2024-03-31 02:30:00.123456"),
    (col("ts_inf", "int64", "io.debezium.time.MicroTimestamp"), 9223372036825200000, "infinity"),
    (col("ts_ms", "int64", "io.debezium.time.Timestamp"), 1711852200123, "2024-03-31 02:30:00.123000"),
    (col("tstz", "string", "io.debezium.time.ZonedTimestamp"), "2024-10-27T00:30:00.000000Z", "2024-10-27T00:30:00.000000Z"),
    (col("t", "int64", "io.debezium.time.MicroTime"), 45296789012, "12:34:56.789012"),
    (col("ttz", "string", "io.debezium.time.ZonedTime"), "10:15:30.5Z", "10:15:30.5Z"),
    (col("iv", "string", "io.debezium.time.Interval"), "P1Y2M3DT4H5M6.78S", "P1Y2M3DT4H5M6.78S"),
    (col("yr", "int32", "io.debezium.time.Year"), 2024, "2024"),
    (col("u", "string", "io.debezium.data.Uuid"), "8e3d9b2c-1f4a-4e0b-9a55-7d1c2e3f4a5b", "8e3d9b2c-1f4a-4e0b-9a55-7d1c2e3f4a5b"),
    (col("j", "string", "io.debezium.data.Json"), '{"a": [1, null]}', '{"a": [1, null]}'),
    (col("x", "string", "io.debezium.data.Xml"), "<a>x</a>", "<a>x</a>"),
    (col("lt", "string", "io.debezium.data.Ltree"), "Top.Science", "Top.Science"),
    (col("e", "string", "io.debezium.data.Enum", parameters={"allowed": "sad,ok,happy"}), "happy", "happy"),
    (col("es", "string", "io.debezium.data.EnumSet", parameters={"allowed": "a,b,c"}), "a,c", "a,c"),
    (col("bits", "bytes", "io.debezium.data.Bits", parameters={"length": "10"}), b"\x05\x01", "0100000101"),
    (col("arr", "array", items={"type": "int32", "optional": True}), [1, None, 3], None),
    (col("tarr", "array", items={"type": "string", "optional": True}), ["a", None, 'c,"d'], None),
    (col("hs", "map", keys={"type": "string", "optional": False}, values={"type": "string", "optional": True}),
     {"k": "v", "n": None}, None),
    (
        {
            "type": "struct", "optional": True, "field": "pt",
            "name": "io.debezium.data.geometry.Point", "version": 1,
            "fields": [
                {"type": "double", "optional": False, "field": "x"},
                {"type": "double", "optional": False, "field": "y"},
                {"type": "bytes", "optional": True, "field": "wkb"},
                {"type": "int32", "optional": True, "field": "srid"},
            ],
        },
        {"x": 1.5, "y": -2.0, "wkb": None, "srid": None},
        "(1.5,-2.0)",
    ),
]  # fmt: skip
# Arrays and hstore: the literal's exact quoting is pgtext's business (tests/unit/test_pgtext.py);
# here it must only agree with what the same value gives through crossfade's own framing.
EXPECTED_LITERALS = {
    c["field"]: lit for c, _, lit in COLUMNS if lit is not None or c["field"] == "txt_null"
}

SOURCE: dict[str, Any] = {
    "type": "struct", "optional": False, "field": "source",
    "name": "io.debezium.connector.postgresql.Source", "version": 1,
    "fields": [
        col("version", "string", optional=False),
        col("connector", "string", optional=False),
        col("name", "string", optional=False),
        col("ts_ms", "int64", optional=False),
        col("snapshot", "string", "io.debezium.data.Enum",
            parameters={"allowed": "true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"},
            default="false"),
        col("db", "string", optional=False),
        col("sequence", "string"),
        col("schema", "string", optional=False),
        col("table", "string", optional=False),
        col("txId", "int64"),
        col("lsn", "int64"),
        col("xmin", "int64"),
    ],
}  # fmt: skip


def _value_struct(field: str) -> dict[str, Any]:
    return {
        "type": "struct",
        "optional": True,
        "field": field,
        "name": f"{TOPIC}.Value",
        "fields": [c for c, _, _ in COLUMNS],
    }


ENVELOPE: dict[str, Any] = {
    "type": "struct", "optional": False, "name": f"{TOPIC}.Envelope", "version": 2,
    "fields": [
        _value_struct("before"),
        _value_struct("after"),
        SOURCE,
        col("op", "string", optional=False),
        col("ts_ms", "int64"),
    ],
}  # fmt: skip
KEY: dict[str, Any] = {
    "type": "struct", "optional": False, "name": f"{TOPIC}.Key",
    "fields": [col("id", "int64", optional=False)],
}  # fmt: skip

ROW: dict[str, Any] = {c["field"]: v for c, v, _ in COLUMNS}


def source(lsn: int, snapshot: str = "false") -> dict[str, Any]:
    return {
        "version": "3.6.3.Final", "connector": "postgresql", "name": "crm", "ts_ms": 1711852200123,
        "snapshot": snapshot, "db": "crm", "sequence": f'["{lsn - 8}","{lsn}"]', "schema": "public",
        "table": "everything", "txId": 780, "lsn": lsn, "xmin": None,
    }  # fmt: skip


class Registry:
    """confluent-kafka's mock registry with the serializers Kafka Connect's converter stands for."""

    def __init__(self) -> None:
        self.client = sr.SchemaRegistryClient.new_client(
            {"url": f"mock://crossfade-{next(_registry_names)}"}
        )
        self.value_schema = json.dumps(connect_to_avro(ENVELOPE))
        self.key_schema = json.dumps(connect_to_avro(KEY))
        self._value = avro_sr.AvroSerializer(self.client, self.value_schema)
        self._key = avro_sr.AvroSerializer(self.client, self.key_schema)

    def value(self, datum: dict[str, Any]) -> bytes:
        out = self._value(datum, SerializationContext(TOPIC, MessageField.VALUE))
        assert out is not None
        return out

    def key(self, datum: dict[str, Any]) -> bytes:
        out = self._key(datum, SerializationContext(TOPIC, MessageField.KEY))
        assert out is not None
        return out


@pytest.fixture
def registry() -> Registry:
    return Registry()


@pytest.fixture
def decoder(registry: Registry) -> EventDecoder:
    return EventDecoder(
        KafkaConfig(bootstrap_servers="unused:9092"), resolver=RegistryResolver(registry.client)
    )


def envelope(
    op: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    lsn: int,
    snapshot: str = "false",
) -> dict[str, Any]:
    return {
        "before": before,
        "after": after,
        "source": source(lsn, snapshot),
        "op": op,
        "ts_ms": 1711852200200,
    }


def _same(a: Any, b: Any) -> bool:
    """Equality that holds NaN equal to NaN (the f8_nan column)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def test_serializer_bytes_are_confluent_framed_and_byte_identical(registry: Registry) -> None:
    data = registry.value(envelope("c", None, ROW, 24023128))
    assert detect_framing(data) == "confluent"
    schema_id, _ = parse_confluent(data)
    # the id is the registry's for subject <topic>-value, as Kafka Connect's converter registers
    assert registry.client.get_latest_version(f"{TOPIC}-value").schema_id == schema_id
    # the Avro body is byte for byte what crossfade's codec writes for the same datum
    assert data == frame_confluent(
        schema_id, AvroCodec(registry.value_schema).encode(envelope("c", None, ROW, 24023128))
    )
    key = registry.key({"id": 42})
    assert registry.client.get_latest_version(f"{TOPIC}-key").schema_id == parse_confluent(key)[0]


def test_every_column_type_decodes_from_serializer_bytes(
    registry: Registry, decoder: EventDecoder
) -> None:
    ev = decoder.decode(
        registry.key({"id": 42}), registry.value(envelope("c", None, ROW, 24023128)), TABLE
    )
    assert (ev.op, ev.table, ev.key, ev.lsn, ev.tx_id, ev.source_ts_ms) == (
        "c",
        TABLE,
        {"id": 42},
        24023128,
        780,
        1711852200123,
    )
    assert ev.after is not None and ev.row_schema is not None
    assert list(ev.after) == [c["field"] for c, _, _ in COLUMNS]
    for column, value in ROW.items():
        assert _same(ev.after[column], value), f"{column}: {ev.after[column]!r} != {value!r}"
    # every column renders to the PostgreSQL literal sync will COPY
    for column, literal in EXPECTED_LITERALS.items():
        assert to_pg_text(ev.after[column], ev.row_schema.type_of(column)) == literal, column
    assert ev.row_schema.type_of("dec").semantic == "org.apache.kafka.connect.data.Decimal"
    assert ev.row_schema.type_of("ts").semantic == "io.debezium.time.MicroTimestamp"
    assert ev.key_schema is not None and ev.key_schema.columns == ("id",)


def test_confluent_and_single_object_framings_decode_alike(
    registry: Registry, decoder: EventDecoder
) -> None:
    """The same change from Kafka Connect (registry) and from crossfade's capture (fingerprint):
    same event, same literal for every column, arrays and hstore included."""
    from crossfade.events.framing import SchemaCache, frame_single_object

    value = envelope("u", ROW, {**ROW, "txt": "changed"}, 24023200)
    via_registry = decoder.decode(registry.key({"id": 42}), registry.value(value), TABLE)

    cache = SchemaCache()
    vcodec, kcodec = cache.add(registry.value_schema), cache.add(registry.key_schema)
    own = EventDecoder(KafkaConfig(bootstrap_servers="unused:9092"), resolver=cache).decode(
        frame_single_object(kcodec.fingerprint, kcodec.encode({"id": 42})),
        frame_single_object(vcodec.fingerprint, vcodec.encode(value)),
        TABLE,
    )
    assert via_registry.after is not None and own.after is not None and own.row_schema is not None
    assert (via_registry.op, via_registry.key, via_registry.position) == (
        own.op,
        own.key,
        own.position,
    )
    for column in ROW:
        ftype = own.row_schema.type_of(column)
        assert to_pg_text(via_registry.after[column], ftype) == to_pg_text(
            own.after[column], ftype
        ), column
    assert via_registry.after["txt"] == "changed"


def test_delete_snapshot_and_truncate(registry: Registry, decoder: EventDecoder) -> None:
    key = registry.key({"id": 42})
    d = decoder.decode(key, registry.value(envelope("d", ROW, None, 24023300)), TABLE)
    assert (d.op, d.after, d.key) == ("d", None, {"id": 42})

    r = decoder.decode(
        key, registry.value(envelope("r", None, ROW, 24000000, snapshot="true")), TABLE
    )
    assert r.op == "r" and r.snapshot == "true"
    streamed = decoder.decode(key, registry.value(envelope("u", ROW, ROW, 24000000)), TABLE)
    assert streamed.position > r.position  # a streamed change beats the snapshot row at one LSN

    t = decoder.decode(None, registry.value(envelope("t", None, None, 24023400)), TABLE)
    assert (t.op, t.key, t.after) == ("t", None, None)


def test_unknown_registry_id_is_a_dead_letter(registry: Registry, decoder: EventDecoder) -> None:
    data = registry.value(envelope("c", None, ROW, 24023128))
    schema_id, body = parse_confluent(data)
    with pytest.raises(DecodeError, match="unknown schema"):
        decoder.decode(registry.key({"id": 42}), frame_confluent(schema_id + 1000, body), TABLE)
