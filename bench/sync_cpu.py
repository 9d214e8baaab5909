"""Sync's CPU path per event, in one process, without Kafka or PostgreSQL.

    .venv/bin/python -m bench.sync_cpu [--events 10000] [--repeat 8]

Encodes ``--events`` pgbench_accounts UPDATE envelopes the way capture does (Debezium 3.6's
envelope and source block, single-object framing), then times what a sync worker does with each
batch after ``consume``: decode (:class:`EventDecoder`), collapse per key, render the staging row
and format it for COPY (psycopg's text formatter). Prints µs of CPU per event, best of
``--repeat`` batches, and as the baseline of the same run the same records decoded alone (the
floor any consumer of these topics pays): the end-to-end ``bench.run sync`` figures move by tens
of percent with the load of a shared machine, this one much less. Writes
``bench/results/sync_cpu.json`` and a history row (``--no-save``: print only).
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from typing import Any

from psycopg._copy_base import TextFormatter
from psycopg.adapt import Transformer

from bench import history
from crossfade.catalog import Column, TableShape
from crossfade.config import KafkaConfig
from crossfade.events.avro_codec import ConnectCodec
from crossfade.events.decode import EventDecoder
from crossfade.events.framing import SchemaCache, frame_single_object
from crossfade.target.apply import TableApplier, collapse


def field_schema(t: str, field: str, optional: bool = True, **kw: Any) -> dict[str, Any]:
    return {"type": t, "optional": optional, "field": field, **kw}


def row_schema(name: str) -> dict[str, Any]:
    return {
        "type": "struct",
        "optional": True,
        "name": name,
        "fields": [
            field_schema("int32", "aid", False),
            field_schema("int32", "bid"),
            field_schema("int32", "abalance"),
            field_schema("string", "filler"),
        ],
    }


SOURCE = {
    "type": "struct",
    "optional": False,
    "name": "io.debezium.connector.postgresql.Source",
    "version": 1,
    "field": "source",
    "fields": [
        field_schema("string", "version", False),
        field_schema("string", "connector", False),
        field_schema("string", "name", False),
        field_schema("int64", "ts_ms", False),
        field_schema(
            "string",
            "snapshot",
            name="io.debezium.data.Enum",
            version=1,
            default="false",
            parameters={
                "allowed": "true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"
            },
        ),
        field_schema("string", "db", False),
        field_schema("string", "sequence"),
        field_schema("int64", "ts_us"),
        field_schema("int64", "ts_ns"),
        field_schema("string", "schema", False),
        field_schema("string", "table", False),
        field_schema("int64", "txId"),
        field_schema("int64", "lsn"),
        field_schema("int64", "xmin"),
    ],
}
ENVELOPE = {
    "type": "struct",
    "optional": False,
    "name": "cf.public.pgbench_accounts.Envelope",
    "version": 2,
    "fields": [
        {**row_schema("cf.public.pgbench_accounts.Value"), "field": "before"},
        {**row_schema("cf.public.pgbench_accounts.Value"), "field": "after"},
        SOURCE,
        {
            "type": "struct",
            "optional": True,
            "name": "event.block",
            "version": 1,
            "field": "transaction",
            "fields": [
                field_schema("string", "id", False),
                field_schema("int64", "total_order", False),
                field_schema("int64", "data_collection_order", False),
            ],
        },
        field_schema("string", "op", False),
        field_schema("int64", "ts_ms"),
        field_schema("int64", "ts_us"),
        field_schema("int64", "ts_ns"),
    ],
}
KEY = {
    "type": "struct",
    "optional": False,
    "name": "cf.public.pgbench_accounts.Key",
    "fields": [field_schema("int32", "aid", False)],
}


def account_payload(i: int) -> dict[str, Any]:
    return {
        "before": None,
        "after": {
            "aid": i,
            "bid": 1 + i // 100_000,
            "abalance": i % 5000 - 1234,
            "filler": " " * 84,
        },
        "source": {
            "version": "3.6.3.Final",
            "connector": "postgresql",
            "name": "cf",
            "ts_ms": 1_763_820_000_000 + i,
            "snapshot": "false",
            "db": "legacy",
            "sequence": '["12345678","12345700"]',
            "ts_us": 1_763_820_000_000_000 + i,
            "ts_ns": 1_763_820_000_000_000_000 + i,
            "schema": "public",
            "table": "pgbench_accounts",
            "txId": 1000 + i,
            "lsn": 23_456_789 + 100 * i,
            "xmin": None,
        },
        "transaction": None,
        "op": "u",
        "ts_ms": 1_763_820_000_100 + i,
        "ts_us": 1_763_820_000_100_000 + i,
        "ts_ns": 1_763_820_000_100_000_000 + i,
    }


def best_us(
    batch: Callable[[], Any], repeat: int, n: int, before: Callable[[], Any] | None = None
) -> float:
    """µs of this process's CPU (every thread) per item of ``batch()``'s ``n``: the best of
    ``repeat`` timed calls after one untimed; ``before()``, untimed, before each timed one."""
    batch()
    times = []
    for _ in range(repeat):
        if before is not None:
            before()
        t = time.process_time()
        batch()
        times.append(time.process_time() - t)
    return 1e6 * min(times) / n


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=10_000, help="events per batch")
    ap.add_argument("--repeat", type=int, default=8, help="batches timed (the best counts)")
    ap.add_argument(
        "--no-save", action="store_true", help="print only (no result file, no history row)"
    )
    args = ap.parse_args()
    vcc, kcc = ConnectCodec(ENVELOPE), ConnectCodec(KEY)
    records = [
        (
            frame_single_object(kcc.avro.fingerprint, kcc.encode({"aid": i})),
            frame_single_object(vcc.avro.fingerprint, vcc.encode(account_payload(i))),
        )
        for i in range(args.events)
    ]
    cache = SchemaCache()
    cache.add_codec(vcc.avro)
    cache.add_codec(kcc.avro)
    # no broker: the schemas are in the cache already
    decoder = EventDecoder(KafkaConfig(bootstrap_servers="127.0.0.1:1"), resolver=cache)
    shape = TableShape(
        "public",
        "pgbench_accounts",
        (
            Column("aid", "integer", True),
            Column("bid", "integer", False),
            Column("abalance", "integer", False),
            Column("filler", "character(84)", False),
        ),
        ("aid",),
    )
    applier = TableApplier(shape, "crossfade")
    fmt = TextFormatter(Transformer())

    def batch() -> None:
        events = [decoder.decode(k, v, "public.pgbench_accounts", None) for k, v in records]
        for e in collapse(events):
            fmt.write_row(applier.staging_row(e))

    def decode_alone() -> None:
        for k, v in records:
            decoder.decode(k, v, "public.pgbench_accounts", None)

    gc.freeze()  # as the sync service does (crossfade.ops.cli)
    gc.set_threshold(50_000, *gc.get_threshold()[1:])
    print(f"{len(records[0][1])}-byte envelopes, {args.events} per batch, best of {args.repeat}")
    path_us = best_us(batch, args.repeat, args.events)
    decode_us = best_us(decode_alone, args.repeat, args.events)
    print(f"sync path (decode, collapse, staging row, COPY text): {path_us:6.1f} us CPU/event")
    print(f"decode alone (EventDecoder.decode), the baseline:     {decode_us:6.1f} us CPU/event")
    history.record(
        "sync_cpu",
        args,
        {"path_us_per_event": path_us, "decode_us_per_event": decode_us},
        "pgbench_accounts UPDATE, CPU us/event best: sync path / decode alone",
        f"{path_us:.1f}",
        f"{decode_us:.1f}",
        not args.no_save,
    )


if __name__ == "__main__":
    main()
