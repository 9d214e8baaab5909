"""A sync worker's whole batch path on the pgbench mix, in one process: CPU µs per event.

    .venv/bin/python -m bench.sync_worker_cpu [--scale 10] [--batches 12] [--batch-size 10000]

Issue 22's figure: worker CPU per event on the pgbench mix (target: 25 µs). Where
``bench.sync_cpu`` times the decode-collapse-COPY-format core of one table, this one runs what a
worker does with each ``consume`` result, from the records to the COMMIT:
``SyncWorker._process`` (error and epoch checks, the commit step of :mod:`crossfade.sync.commit`:
fencing, the planner, the sinks' staging COPY and guarded upserts, offsets and stats, the
metrics of the batch) against a real target (an embedded PostgreSQL; its server processes'
CPU is not this process's and is not counted). Records are real ``confluent_kafka.Message``
objects built the way capture frames them (Avro single-object, Debezium 3.6's envelope, the
epoch and position headers), TPC-B-like: per transaction an UPDATE of pgbench_accounts,
pgbench_tellers and pgbench_branches and an INSERT into the keyless pgbench_history
(``sync.append_only_tables``), spread over the topics' partitions by key.

Only ``consume`` (librdkafka's fetch and its Python ``Message`` objects) is left out: ``bench.run
sync`` measures it all, on the embedded stack, in minutes and with the machine's noise.

Printed in the same run: the mean and best CPU per event of the worker's batches, and the same
records decoded alone (``EventDecoder.decode``: the floor any consumer of these topics pays);
written to ``bench/results/sync_worker_cpu.json`` and a row of bench/README.md's history table
(``--no-save``: print only). Compare code changes by running it on both, one after the other:
the figures move with the machine's load (the spread of the per-batch figures shows how much).
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Message

from bench import history
from bench.sync_cpu import ENVELOPE
from crossfade.config import Settings
from crossfade.embedded import EmbeddedPostgres
from crossfade.events.avro_codec import ConnectCodec
from crossfade.events.decode import EPOCH_HEADER, POSITION_HEADER, EventDecoder
from crossfade.events.framing import SchemaCache, frame_single_object
from crossfade.events.model import position
from crossfade.sync.commit import BatchCommit
from crossfade.sync.dead_letters import DeadLetterTopic
from crossfade.sync.worker import SyncWorker
from crossfade.target.store import claim_partitions

PREFIX = "cf"
EPOCH = "bench-epoch"
PARTITIONS = 4
MICRO_TS = "io.debezium.time.MicroTimestamp"

# pgbench's tables: (column, Connect type, semantic name, SQL type, primary key)
TABLES: dict[str, list[tuple[str, str, str | None, str, bool]]] = {
    "pgbench_accounts": [
        ("aid", "int32", None, "integer NOT NULL", True),
        ("bid", "int32", None, "integer", False),
        ("abalance", "int32", None, "integer", False),
        ("filler", "string", None, "character(84)", False),
    ],
    "pgbench_tellers": [
        ("tid", "int32", None, "integer NOT NULL", True),
        ("bid", "int32", None, "integer", False),
        ("tbalance", "int32", None, "integer", False),
        ("filler", "string", None, "character(84)", False),
    ],
    "pgbench_branches": [
        ("bid", "int32", None, "integer NOT NULL", True),
        ("bbalance", "int32", None, "integer", False),
        ("filler", "string", None, "character(88)", False),
    ],
    "pgbench_history": [
        ("tid", "int32", None, "integer", False),
        ("bid", "int32", None, "integer", False),
        ("aid", "int32", None, "integer", False),
        ("delta", "int32", None, "integer", False),
        ("mtime", "int64", MICRO_TS, "timestamp without time zone", False),
        ("filler", "string", None, "character(22)", False),
    ],
}


def _f(t: str, field: str, optional: bool = True, **kw: Any) -> dict[str, Any]:
    return {"type": t, "optional": optional, "field": field, **kw}


def envelope_schema(table: str) -> dict[str, Any]:
    """Debezium's Connect envelope schema of ``public.<table>``."""
    name = f"{PREFIX}.public.{table}"
    fields = [
        _f(t, c, not pk, **({"name": sem, "version": 1} if sem else {}))
        for c, t, sem, _sql, pk in TABLES[table]
    ]
    row = {"type": "struct", "optional": True, "name": f"{name}.Value", "fields": fields}
    # the rest (source block, transaction, op, timestamps) as bench.sync_cpu's envelope has it
    rest = [f for f in ENVELOPE["fields"] if f["field"] not in ("before", "after")]
    return {
        **ENVELOPE,
        "name": f"{name}.Envelope",
        "fields": [{**row, "field": "before"}, {**row, "field": "after"}, *rest],
    }


def key_schema(table: str) -> dict[str, Any] | None:
    pk = [(c, t) for c, t, _s, _q, is_pk in TABLES[table] if is_pk]
    if not pk:
        return None
    return {
        "type": "struct",
        "optional": False,
        "name": f"{PREFIX}.public.{table}.Key",
        "fields": [_f(t, c, False) for c, t in pk],
    }


class Mix:
    """Generates the TPC-B-like stream, record by record, as capture would produce it."""

    def __init__(self, scale: int, cache: SchemaCache) -> None:
        self.scale = scale
        self.rng = random.Random(42)
        self.codecs: dict[str, tuple[ConnectCodec, ConnectCodec | None]] = {}
        for t in TABLES:
            ks = key_schema(t)
            vc, kc = ConnectCodec(envelope_schema(t)), ConnectCodec(ks) if ks else None
            cache.add_codec(vc.avro)
            if kc is not None:
                cache.add_codec(kc.avro)
            self.codecs[t] = (vc, kc)
        self.offsets: dict[tuple[str, int], int] = {}
        self.lsn = 100_000_000
        self.tx = 10_000
        self.epoch_header = (EPOCH_HEADER, EPOCH.encode())

    def _record(self, table: str, key: dict[str, Any] | None, after: dict[str, Any]) -> Message:
        vc, kc = self.codecs[table]
        self.lsn += 120
        src = {
            "version": "3.6.3.Final",
            "connector": "postgresql",
            "name": PREFIX,
            "ts_ms": 1_763_820_000_000 + self.tx,
            "snapshot": "false",
            "db": "legacy",
            "sequence": f'["{self.lsn - 500}","{self.lsn}"]',
            "ts_us": 1_763_820_000_000_000 + self.tx,
            "ts_ns": 1_763_820_000_000_000_000 + self.tx,
            "schema": "public",
            "table": table,
            "txId": self.tx,
            "lsn": self.lsn,
            "xmin": None,
        }
        op = "c" if table == "pgbench_history" else "u"
        env = {
            "before": None,
            "after": after,
            "source": src,
            "transaction": None,
            "op": op,
            "ts_ms": 1_763_820_000_100 + self.tx,
            "ts_us": 1_763_820_000_100_000 + self.tx,
            "ts_ns": 1_763_820_000_100_000_000 + self.tx,
        }
        topic = f"{PREFIX}.public.{table}"
        k = frame_single_object(kc.avro.fingerprint, kc.encode(key)) if kc and key else None
        part = hash(tuple(key.values())) % PARTITIONS if key else self.rng.randrange(PARTITIONS)
        off = self.offsets.get((topic, part), 0)
        self.offsets[(topic, part)] = off + 1
        pos = position(self.lsn, snapshot=False)
        return Message(
            topic=topic,
            partition=part,
            offset=off,
            key=k,
            value=frame_single_object(vc.avro.fingerprint, vc.encode(env)),
            headers=[self.epoch_header, (POSITION_HEADER, str(pos).encode())],
        )

    def batch(self, n: int) -> list[Message]:
        """``n`` records (``n // 4`` transactions), grouped per partition as ``consume`` hands
        them over (a fetch returns a partition's records together)."""
        by_tp: dict[tuple[str, int], list[Message]] = {}
        for _ in range(n // 4):
            self.tx += 1
            r = self.rng
            aid = r.randint(1, 100_000 * self.scale)
            bid = r.randint(1, self.scale)
            tid = r.randint(1, 10 * self.scale)
            delta = r.randint(-5000, 5000)
            recs = [
                self._record(
                    "pgbench_accounts",
                    {"aid": aid},
                    {
                        "aid": aid,
                        "bid": 1 + (aid - 1) // 100_000,
                        "abalance": delta,
                        "filler": " " * 84,
                    },
                ),
                self._record(
                    "pgbench_tellers",
                    {"tid": tid},
                    {"tid": tid, "bid": 1 + (tid - 1) // 10, "tbalance": delta, "filler": None},
                ),
                self._record(
                    "pgbench_branches",
                    {"bid": bid},
                    {"bid": bid, "bbalance": delta, "filler": None},
                ),
                self._record(
                    "pgbench_history",
                    None,
                    {
                        "tid": tid,
                        "bid": bid,
                        "aid": aid,
                        "delta": delta,
                        "mtime": 1_763_820_000_000_000 + self.tx,
                        "filler": None,
                    },
                ),
            ]
            for m in recs:
                by_tp.setdefault((m.topic() or "", m.partition() or 0), []).append(m)
        return [m for ms in by_tp.values() for m in ms]


def legacy_ddl() -> str:
    out = []
    for t, cols in TABLES.items():
        body = ", ".join(f"{c} {q}" for c, _t, _s, q, _pk in cols)
        pk = [c for c, *_r, is_pk in cols if is_pk]
        if pk:
            body += f", PRIMARY KEY ({', '.join(pk)})"
        out.append(f"CREATE TABLE public.{t} ({body})")
    return ";\n".join(out)


def worker(pg: EmbeddedPostgres, cache: SchemaCache) -> SyncWorker:
    settings = Settings(
        source={"dsn": pg.dsn("legacy")},
        target={"dsn": pg.dsn("target")},
        kafka={"bootstrap_servers": "127.0.0.1:9", "topic_prefix": PREFIX},
        tables=[f"public.{t}" for t in TABLES],
        sync={"append_only_tables": ["public.pgbench_history"], "tag_origin": False},
    )
    return ready_worker(settings, cache, PARTITIONS)


def service_gc() -> None:
    """The garbage collector as the services tune it (crossfade.ops.cli.tune_gc); a tree from
    before tune_gc (PYTHONPATH=<older worktree>/services) gets what its services did."""
    try:
        from crossfade.ops.cli import tune_gc
    except ImportError:
        gc.freeze()
        gc.set_threshold(50_000, *gc.get_threshold()[1:])
    else:
        tune_gc()


def ready_worker(
    settings: Settings, cache: SchemaCache, partitions: int, producer: Any = None
) -> SyncWorker:
    """A sync worker connected to its target, its tables set up, every partition of its topics
    claimed at :data:`EPOCH`, decoding with ``cache`` (no broker: batches are handed to its
    ``_process``); ``producer``: the dead-letter topic's (None: nothing is dead-lettered)."""
    w = SyncWorker(settings, worker_id="bench")
    w.conn = w._connect_target()
    w._setup_tables()
    w.group.epoch = EPOCH
    decoder = EventDecoder(settings.kafka, resolver=cache)
    w.planner.decoder = w.mapped.decoder = decoder
    w._commit = BatchCommit(
        bookkeeping_schema=w.bk,
        group_id=settings.sync.group_id,
        planner=w.planner,
        sinks=w._sink,
        mapped=w.mapped,
        dead_letters=DeadLetterTopic(producer, settings.kafka.dlq_topic, w.rejects),
        meter=w.meter,
    )
    tps = [(t, p) for t in w.topics for p in range(partitions)]
    stored = claim_partitions(w.conn, w.bk, settings.sync.group_id, tps, EPOCH, "bench:owner")
    for tp in tps:
        w.planner.floors[tp] = stored[tp].snapshot_floor
        w.group.owner[tp] = "bench:owner"
    return w


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--scale", type=int, default=10, help="pgbench scale (100,000 accounts each)")
    ap.add_argument("--batches", type=int, default=12, help="batches timed (after one untimed)")
    ap.add_argument("--batch-size", type=int, default=10_000, help="records per batch")
    ap.add_argument(
        "--no-save", action="store_true", help="print only (no result file, no history row)"
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cf-bench-") as tmp:
        os.chmod(tmp, 0o755)  # PostgreSQL may run as another user (initdb refuses root)
        pg = EmbeddedPostgres(Path(tmp) / "pg").start()
        try:
            pg.create_database("legacy")
            pg.create_database("target")
            with psycopg.connect(pg.dsn("legacy"), autocommit=True) as c:
                c.execute(legacy_ddl())  # type: ignore[arg-type]
            cache = SchemaCache()
            mix = Mix(args.scale, cache)
            w = worker(pg, cache)
            batches = [mix.batch(args.batch_size) for _ in range(args.batches + 1)]
            decoder = w.planner.decoder
            assert decoder is not None
            service_gc()  # as the services do (crossfade.ops.cli)
            decode_us = []
            for i, b in enumerate(batches):
                t = time.process_time()
                for m in b:
                    decoder.decode(m.key(), m.value(), w.topics[m.topic() or ""], None)
                if i:  # the first batch builds the Avro readers
                    decode_us.append(1e6 * (time.process_time() - t) / len(b))
            whole_us = []
            for i, b in enumerate(batches):
                t = time.process_time()
                w._process(b)
                if i:  # the first batch creates the staging tables and fills the caches
                    whole_us.append(1e6 * (time.process_time() - t) / len(b))
            applied = sum(w.stats.applied.values())
            w.conn.close()
        finally:
            pg.stop()
    mean_w, best_w = statistics.mean(whole_us), min(whole_us)
    mean_d, best_d = statistics.mean(decode_us), min(decode_us)
    print(
        f"pgbench mix, scale {args.scale}: {args.batches} batches of {args.batch_size} records "
        f"({applied} rows applied after collapsing per key), load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"decode alone (EventDecoder.decode):      mean {mean_d:5.1f}  best {best_d:5.1f} us CPU/event"
    )
    print(
        f"worker batch path (SyncWorker._process): mean {mean_w:5.1f}  best {best_w:5.1f} us CPU/event"
        "   (issue 22's target: 25)"
    )
    print("per batch:", " ".join(f"{x:.1f}" for x in whole_us))
    history.record(
        "sync_worker_cpu",
        args,
        {
            "worker_us_per_event": whole_us,
            "worker_us_per_event_mean": mean_w,
            "decode_us_per_event": decode_us,
            "decode_us_per_event_mean": mean_d,
            "rows_applied": applied,
        },
        # the worker's batch path / the decode alone, same records, same run
        "pgbench mix, CPU us/event mean (best): worker batch path / decode alone",
        f"{mean_w:.1f} ({best_w:.1f})",
        f"{mean_d:.1f} ({best_d:.1f})",
        not args.no_save,
    )


if __name__ == "__main__":
    main()
