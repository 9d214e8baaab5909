"""capture.converter: jvm — the JVM side of :class:`crossfade.capture.jvm_avro.JvmAvroReader`
(the bulk columns), in a child process with capture's JVM: the key and value bytes are the ones
Confluent's ``AvroConverter`` writes for the same Connect records (its frame aside), and the
``source`` column carries the fields capture's decisions read, nulls and an absent field
included. The every-type round trip (tests/integration) runs the whole path against Debezium."""

from __future__ import annotations

import shutil

import pytest

from tests.jvm_child import jvm_child

_CHILD = r"""
import base64, json
import jpype
from crossfade.capture.batch import start_jvm
from crossfade.capture.jvm_avro import JvmAvroReader, source_block
from crossfade.config.settings import DEFAULT_JVM_OPTIONS

start_jvm(list(DEFAULT_JVM_OPTIONS))
J = jpype.JClass
hash_map, array_list = J("java.util.HashMap"), J("java.util.ArrayList")
with_schemas = J("org.apache.kafka.connect.json.JsonConverter")()
with_schemas.configure(hash_map({"schemas.enable": "true"}), False)

def f(t, fld, optional=True, **kw):
    return {"type": t, "optional": optional, "field": fld, **kw}

ROW = {"type": "struct", "optional": True, "name": "cf.public.t.Value", "fields": [
    f("int32", "id", False), f("string", "name"), f("boolean", "ok"),
    f("int64", "at", name="io.debezium.time.MicroTimestamp", version=1),
    f("bytes", "amount", name="org.apache.kafka.connect.data.Decimal", version=1,
      parameters={"scale": "2"}),
]}
def source(with_origin):
    fields = [f("string", "version", False), f("int64", "ts_ms", False), f("string", "snapshot"),
              f("int64", "lsn")]
    if with_origin:
        fields.append(f("string", "origin"))
    return {**f("struct", "source", False), "name": "io.debezium.connector.postgresql.Source",
            "fields": fields}
def envelope(with_origin):
    return {"type": "struct", "optional": False, "name": "cf.public.t.Envelope", "fields": [
        {**ROW, "field": "before"}, {**ROW, "field": "after"}, source(with_origin),
        f("string", "op", False), f("int64", "ts_ms")]}
KEY = {"type": "struct", "optional": False, "name": "cf.public.t.Key",
       "fields": [f("int32", "id", False)]}

def struct(schema, payload):
    return with_schemas.toConnectData(
        "t", json.dumps({"schema": schema, "payload": payload}).encode())

def change(i, src, with_origin=True, key=True):
    after = {"id": i, "name": "n\u00e9" * i, "ok": i % 2 == 0, "at": 1_700_000_000_000_000 + i,
             "amount": base64.b64encode((1234 * i).to_bytes(4, "big", signed=True)).decode()}
    return struct(envelope(with_origin), {
        "before": None, "after": after, "op": "u", "ts_ms": 5,
        "source": {"version": "3.6", "ts_ms": 1000 + i, **src}}), struct(KEY, {"id": i}) if key else None

rows = [
    change(1, {"snapshot": "false", "lsn": 42, "origin": None}),
    change(2, {"snapshot": "last", "lsn": 43, "origin": "crossfade_sync\u0001x"}),
    change(3, {"snapshot": None, "lsn": None}, with_origin=False),
    change(4, {"snapshot": "incremental", "lsn": None, "origin": "other"}, key=False),
]
records = array_list()
ctor = J("io.debezium.embedded.EmbeddedEngineChangeEvent").class_.getDeclaredConstructors()[0]
ctor.setAccessible(True)
source_record = J("org.apache.kafka.connect.source.SourceRecord")
def add(value, key):
    rec = source_record(hash_map(), hash_map(), "cf.public.t", None,
                        None if key is None else key.schema(), None if key is None else key.value(),
                        None if value is None else value.schema(),
                        None if value is None else value.value())
    records.add(ctor.newInstance(rec, rec, array_list(), rec))
for value, key in rows:
    add(value, key)
add(None, rows[0][1])  # a tombstone

confluent = {}
registry = J("io.confluent.kafka.schemaregistry.client.MockSchemaRegistryClient")()
for side in ("key", "value"):
    conv = J("io.confluent.connect.avro.AvroConverter")(registry)
    conv.configure(hash_map({"schema.registry.url": "mock://t"}), side == "key")
    confluent[side] = conv

reader = JvmAvroReader()
out = []
for n, (dest, key, value, ks, vs) in enumerate(reader.read(records)):
    rec = records.get(n).record()
    row = {"dest": dest, "source": None, "op": None}
    for side, got in (("key", key), ("value", value)):
        schema = rec.keySchema() if side == "key" else rec.valueSchema()
        obj = rec.key() if side == "key" else rec.value()
        want = confluent[side].fromConnectData("t", schema, obj)
        want = None if want is None else bytes(want)
        theirs = None if schema is None else json.loads(reader.avro_schemas[str(ks if side == "key" else vs)])
        row[side] = [None if got is None else got[0].hex(), None if want is None else want.hex(),
                     None if theirs is None else theirs == json.loads(str(
                         registry.getSchemaById(int.from_bytes(want[1:5], "big")).canonicalString()))]
    if value is not None:
        row["source"] = None if value[1] is None else source_block(value[1])
        row["op"] = value[2]
    out.append(row)
print("ROWS " + json.dumps(out))
"""


@pytest.mark.skipif(shutil.which("java") is None, reason="no java on PATH")
def test_jvm_columns_match_confluent_converter_and_carry_the_source_fields() -> None:
    rows = jvm_child(_CHILD, "ROWS")
    assert len(rows) == 5
    for row in rows:
        for side in ("key", "value"):
            got, want, same_schema = row[side]
            if want is None:
                assert got is None
                continue
            # Avro's single-object header (C3 01 + 8 bytes) where Confluent writes 00 + id
            assert got[:4] == "c301" and got[20:] == want[10:], (side, row)
            assert same_schema, (side, row)
    assert rows[3]["key"] == [None, None, None]
    assert rows[4]["value"] == [None, None, None] and rows[4]["source"] is None
    assert [r["op"] for r in rows[:4]] == ["u"] * 4
    assert [r["source"] for r in rows[:4]] == [
        {"lsn": 42, "snapshot": "false", "ts_ms": 1001, "origin": None},
        {"lsn": 43, "snapshot": "last", "ts_ms": 1002, "origin": "crossfade_sync\x01x"},
        {"lsn": None, "snapshot": None, "ts_ms": 1003, "origin": None},  # no origin field
        {"lsn": None, "snapshot": "incremental", "ts_ms": 1004, "origin": "other"},
    ]
