"""A sync worker's batch path on the demo CRM's mapped load, in one process: CPU µs per row.

    .venv/bin/python -m bench.mapped_batch_cpu [--rows 30000] [--batch-size 5000] [--profile N]

Where ``bench.mapped_load`` measures the whole mapped load end to end (minutes, and as noisy as
the machine), this one times what a sync worker does with each ``consume`` result of that load:
``SyncWorker._process`` (decode, the commit step: the mapped sinks' ledger, dedup, children and
target writes, offsets, stats) against a real target (an embedded PostgreSQL: its server
processes' CPU is not this process's: it is printed apart, the cluster's CPU over the timed
batches, the worker's backend included), then the idle retry of deferred rows
the worker runs every second, until nothing is deferred.

The records are the snapshot events capture's COPY streams produce for the demo CRM
(:mod:`crossfade.capture.snapshot_events`: the same SELECT, the same encoder and framing, the
position and epoch headers) of the legacy rows ``CrmWriter.populate`` writes (the generator of
``bench.mapped_load``), mapped with the demo mapping (``crm-mapping.yaml``) into the demo's
target schema. Tables are consumed parents first, as sync's load order has them during a load
(:mod:`crossfade.sync.load_order`), each batch a share of every partition of its table.

Prints the CPU per source row of the whole path (µs, and seconds in all) and of the decode alone
(``EventDecoder.decode``, same records), and the outcomes (ledger rows by outcome, target rows):
compare two commits by running each with ``PYTHONPATH=<worktree>/services`` one after the other
(the figures follow the machine's load; the outcomes must be equal). ``--profile N``: cProfile
(CPU time) of the timed batches, top N functions by own time and by cumulative time. Nothing is saved.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import os
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import yaml
from confluent_kafka import Message

from bench.mapped_load import copy_inserts
from bench.mapping_cpu import RowRecorder
from bench.run import cluster_cpu
from bench.sync_worker_cpu import EPOCH, PREFIX, ready_worker, service_gc
from crossfade.capture.snapshot_events import EventEncoder, plan_table
from crossfade.config import Settings
from crossfade.embedded import EmbeddedPostgres
from crossfade.embedded.crm import MAPPING_FILE, TABLES, CrmWriter, create_target_schema
from crossfade.events.avro_codec import ConnectCodec
from crossfade.events.decode import EPOCH_HEADER, POSITION_HEADER
from crossfade.events.framing import SchemaCache, fingerprint_bytes
from crossfade.events.model import position
from crossfade.sync.worker import SyncWorker

PARTITIONS = 4
LSN = 0x1_0000_0000
ROWS_PER_ACCOUNT = 3.7


def legacy(dsn: str, rows: int, seed: int) -> None:
    """The demo CRM at about ``rows`` rows, as bench.mapped_load generates it."""
    accounts = max(1, round(rows / ROWS_PER_ACCOUNT))
    writer = CrmWriter(dsn, seed=seed, phones=10 * rows)
    writer.seed(0)  # the schema
    rec = RowRecorder()
    writer.populate(rec, accounts)
    with psycopg.connect(dsn) as conn:
        copy_inserts(conn, rec.inserts)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ANALYZE")


def snapshot_records(dsn: str, cache: SchemaCache) -> dict[tuple[str, int], list[Message]]:
    """Every legacy row as the snapshot event a COPY stream sends, per (topic, partition)."""
    pos = str(position(LSN, snapshot=True)).encode()
    headers = [(EPOCH_HEADER, EPOCH.encode()), (POSITION_HEADER, pos)]
    out: dict[tuple[str, int], list[Message]] = {}
    with psycopg.connect(dsn) as src:
        for table in TABLES:
            plan = plan_table(src, PREFIX, table)
            assert not isinstance(plan, str), plan
            frames = {}
            for kind, schema in (("key", plan.key_schema), ("value", plan.value_schema)):
                assert schema is not None
                codec = cache.add_codec(ConnectCodec(schema).avro)
                frames[kind] = (b"\xc3\x01" + fingerprint_bytes(codec.fingerprint)).hex()
            schema_name, name = table.split(".", 1)
            enc = EventEncoder(
                {
                    "key_schema": plan.key_schema,
                    "value_schema": plan.value_schema,
                    "key_frame": frames["key"],
                    "value_frame": frames["value"],
                    "floats": list(plan.floats),
                    "source": {
                        "version": "3.6.3.Final",
                        "connector": "postgresql",
                        "name": PREFIX,
                        "db": "legacy",
                        "schema": schema_name,
                        "table": name,
                        "txId": None,
                        "lsn": LSN,
                    },
                }
            )
            enc.source = {**enc.source, "ts_ms": 1, "ts_us": 1000, "ts_ns": 1_000_000}
            enc.ts = (2, 2000, 2_000_000)  # the same bytes every run
            topic = f"{PREFIX}.{table}"
            for key_text, after_text in src.execute(plan.select(None)).fetchall():  # type: ignore[arg-type]
                key, value = enc.encode(key_text, after_text)
                assert key is not None
                part = int.from_bytes(hashlib.md5(key).digest()[:4]) % PARTITIONS  # noqa: S324
                msgs = out.setdefault((topic, part), [])
                msgs.append(
                    Message(
                        topic=topic,
                        partition=part,
                        offset=len(msgs),
                        key=key,
                        value=value,
                        headers=headers,
                    )
                )
    return out


def batches(by_tp: dict[tuple[str, int], list[Message]], size: int) -> list[list[Message]]:
    """The records in batches of about ``size``, table by table in the order of :data:`TABLES`
    (parents first, as sync's load order holds children back during a load: accounts, their
    people, the people's addresses); a batch takes a share of each of its table's partitions."""
    out: list[list[Message]] = []
    for table in TABLES:
        tps = {tp: ms for tp, ms in by_tp.items() if tp[0] == f"{PREFIX}.{table}"}
        total = sum(len(ms) for ms in tps.values())
        n = max(1, -(-total // size))
        part: list[list[Message]] = [[] for _ in range(n)]
        for ms in tps.values():
            share = -(-len(ms) // n)
            for i in range(n):
                part[i].extend(ms[i * share : (i + 1) * share])
        out.extend(b for b in part if b)
    return out


class NoProducer:
    """The dead-letter topic's producer: counts the records (their bytes are built)."""

    def __init__(self) -> None:
        self.produced = 0

    def produce(self, topic: str, **record: Any) -> None:
        self.produced += 1

    def flush(self, timeout: float = 0) -> int:
        return 0


def worker(pg: EmbeddedPostgres, cache: SchemaCache) -> SyncWorker:
    settings = Settings(
        source={"dsn": pg.dsn("legacy")},
        target={"dsn": pg.dsn("target")},
        kafka={"bootstrap_servers": "127.0.0.1:9", "topic_prefix": PREFIX},
        tables=TABLES,
        mapping=yaml.safe_load(MAPPING_FILE.read_text()),
        sync={"tag_origin": False},
    )
    return ready_worker(settings, cache, PARTITIONS, NoProducer())


STATE = (
    "app.accounts",
    "app.people",
    "app.addresses",
    "{bk}.ledger",
    "{bk}.dedup_members",
    "{bk}.dedup_blocks",
    "{bk}.crosswalk",
    "{bk}.child_refs",
    "{bk}.tombstones",
    "{bk}.offsets",
)
"""The tables whose rows are the load's outcome (their timestamps left out)."""


def outcomes(dsn: str, bk: str) -> dict[str, Any]:
    """What the load left: ledger rows by (table, outcome, rule), and per table of
    :data:`STATE` its row count and an md5 of its rows (equal outcomes, equal digests)."""
    out: dict[str, Any] = {}
    with psycopg.connect(dsn) as c:
        out["ledger"] = c.execute(
            f"SELECT source_table, outcome, coalesce(rule, ''), count(*) FROM {bk}.ledger "  # noqa: S608
            "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        ).fetchall()
        for t in STATE:
            drop = " - 'first_at' - 'at' - 'deadline' - 'updated_at'" if "{bk}" in t else ""
            t = t.format(bk=bk)
            out[t] = c.execute(
                "SELECT count(*), md5(string_agg(j::text, ',' ORDER BY j::text)) FROM "  # noqa: S608
                f"(SELECT to_jsonb(x){drop} AS j FROM {t} x) y"
            ).fetchone()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=30_000, help="legacy rows in all, about")
    ap.add_argument("--seed", type=int, default=7, help="the CRM generator's seed")
    ap.add_argument("--batch-size", type=int, default=5000, help="records per batch")
    ap.add_argument("--profile", type=int, default=0, metavar="N", help="cProfile: top N")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cf-bench-") as tmp:
        os.chmod(tmp, 0o755)  # PostgreSQL may run as another user (initdb refuses root)
        pg = EmbeddedPostgres(Path(tmp) / "pg").start()
        try:
            pg.create_database("legacy")
            pg.create_database("target")
            legacy(pg.dsn("legacy"), args.rows, args.seed)
            with psycopg.connect(pg.dsn("target"), autocommit=True) as c:
                create_target_schema(c)
            cache = SchemaCache()
            by_tp = snapshot_records(pg.dsn("legacy"), cache)
            w = worker(pg, cache)
            todo = batches(by_tp, args.batch_size)
            n = sum(len(b) for b in todo)
            decoder = w.planner.decoder
            assert decoder is not None
            service_gc()  # as the services do (crossfade.ops.cli)
            t = time.process_time()
            for b in todo:
                for m in b:
                    decoder.decode(m.key(), m.value(), w.topics[m.topic() or ""], None)
            decode_s = time.process_time() - t
            prof = cProfile.Profile(time.process_time) if args.profile else None
            per_batch = []
            assert pg.pid is not None
            pg0 = cluster_cpu(pg.pid)
            t0 = time.process_time()
            if prof is not None:
                prof.enable()
            for b in todo:
                t = time.process_time()
                w._process(b)
                per_batch.append(1e6 * (time.process_time() - t) / len(b))
            w._retry_idle()  # the worker's idle retry of deferred rows (every second)
            if prof is not None:
                prof.disable()
            whole_s = time.process_time() - t0
            # the server processes over the timed batches, the worker's backend still live
            target_s = cluster_cpu(pg.pid) - pg0
            w.conn.close()
            out = outcomes(pg.dsn("target"), w.bk)
        finally:
            pg.stop()
    print(
        f"demo CRM mapped load: {n} records in {len(todo)} batches of ~{args.batch_size}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(f"decode alone:        {1e6 * decode_s / n:6.1f} us CPU/row")
    print(f"worker batch path:   {1e6 * whole_s / n:6.1f} us CPU/row  ({whole_s:.2f} s in all)")
    print(f"target PostgreSQL:   {1e6 * target_s / n:6.1f} us CPU/row  ({target_s:.2f} s in all)")
    print("per batch:", " ".join(f"{x:.0f}" for x in per_batch))
    print("ledger:", " ".join(f"{t}/{o}/{r or '-'}={k}" for t, o, r, k in out["ledger"]))
    for t in STATE:
        t = t.format(bk=w.bk)
        print(f"{t}: {out[t][0]} rows, md5 {out[t][1]}")
    if prof is not None:
        st = pstats.Stats(prof)
        st.sort_stats("tottime").print_stats(args.profile)
        st.sort_stats("cumulative").print_stats(args.profile)


if __name__ == "__main__":
    main()
