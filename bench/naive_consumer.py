"""The straightforward consumer: the baseline of benchmark 4 ("sync worker alone").

What one writes first: consume a batch, decode each record with crossfade's own decoder, turn
values into text with crossfade's own converters, then per table one ``executemany`` of
``INSERT ... ON CONFLICT DO UPDATE`` (and of ``DELETE``), commit per batch. No position guard, no
collapse, no staging: it is only here to show what the set-based COPY design is worth.

    python -m bench.naive_consumer CONFIG TARGET_DSN GROUP

reads every change topic of CONFIG from the beginning, stops after 3 s without a record, and
prints one JSON line: events, wall seconds (first record to last commit), CPU seconds.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from psycopg import sql

from crossfade.config import load_settings
from crossfade.events.decode import EventDecoder, header
from crossfade.events.kafka import CONTROL_HEADER
from crossfade.events.pgtext import converter_for


def main() -> None:
    config, target_dsn, group = sys.argv[1:4]
    s = load_settings(config)
    topics = {s.kafka.table_topic(t): t for t in s.tables}
    append_only = set(s.sync.append_only_tables)
    decoder = EventDecoder(s.kafka)
    consumer = Consumer(
        {
            **s.kafka.client_config(),
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    # every partition from the beginning, no group join (Tansu answers JoinGroup slowly)
    meta = consumer.list_topics(timeout=30)
    consumer.assign(
        [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in meta.topics[t].partitions]
    )
    conn = psycopg.connect(target_dsn)
    pks: dict[str, list[str]] = {}
    convs: dict[Any, list[Any]] = {}
    cols_of: dict[str, list[str]] = {}
    n = 0
    first = last = None
    cpu0 = 0.0
    idle_since = time.monotonic() + 60  # up to a minute for the first record
    while time.monotonic() - idle_since < 3:
        msgs = consumer.consume(5000, 0.2)
        if not msgs:
            continue
        if first is None:
            first, cpu0 = time.monotonic(), time.process_time()
        idle_since = time.monotonic()
        upserts: dict[str, list[tuple[Any, ...]]] = {}
        deletes: dict[str, list[tuple[Any, ...]]] = {}
        for m in msgs:
            if m.error() or m.value() is None or header(m, CONTROL_HEADER):
                continue
            table = topics[m.topic()]
            e = decoder.decode(m.key(), m.value(), table)
            if e.op == "t":
                continue
            if table not in pks:
                pks[table] = list(e.key_schema.columns) if e.key_schema else []
            n += 1
            if e.op == "d":
                assert e.key is not None and e.key_schema is not None
                deletes.setdefault(table, []).append(
                    tuple(converter_for(e.key_schema.type_of(c))(e.key[c]) for c in pks[table])
                )
                continue
            assert e.after is not None and e.row_schema is not None
            cs = convs.get(e.row_schema)
            if cs is None:
                cs = convs[e.row_schema] = [
                    (c, converter_for(e.row_schema.type_of(c))) for c in e.row_schema.columns
                ]
            cols_of[table] = [c for c, _ in cs]
            upserts.setdefault(table, []).append(tuple(conv(e.after.get(c)) for c, conv in cs))
        with conn.cursor() as cur:
            for table, rows in upserts.items():
                schema, name = table.split(".", 1)
                cols = cols_of[table]
                target = sql.Identifier(schema, name)
                ins = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                    target,
                    sql.SQL(", ").join(map(sql.Identifier, cols)),
                    sql.SQL(", ").join(sql.Placeholder() * len(cols)),
                )
                if table not in append_only:
                    pk = pks[table]
                    sets = [
                        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c))
                        for c in cols
                        if c not in pk
                    ]
                    ins = sql.SQL("{} ON CONFLICT ({}) DO UPDATE SET {}").format(
                        ins, sql.SQL(", ").join(map(sql.Identifier, pk)), sql.SQL(", ").join(sets)
                    )
                cur.executemany(ins, rows)
            for table, keys in deletes.items():
                schema, name = table.split(".", 1)
                where = sql.SQL(" AND ").join(
                    sql.SQL("{} = %s").format(sql.Identifier(c)) for c in pks[table]
                )
                cur.executemany(
                    sql.SQL("DELETE FROM {} WHERE {}").format(sql.Identifier(schema, name), where),
                    keys,
                )
        conn.commit()
        last = time.monotonic()
    cpu = time.process_time() - cpu0
    consumer.close()
    conn.close()
    print(json.dumps({"events": n, "seconds": (last or 0) - (first or 0), "cpu_seconds": cpu}))


if __name__ == "__main__":
    main()
