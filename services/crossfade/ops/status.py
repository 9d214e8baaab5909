"""``crossfade status``: what each side holds and how far sync has come.

Per table: rows in source and target, events applied, last applied source position and time.
Per partition: the offset stored in the target (authoritative), the group's offset committed to
Kafka (display only) and the log end the broker reports (on Tansu this under-reports, see
STACK.md, so lag from it is a hint, never proof: ``crossfade fence`` is the proof).
"""

from __future__ import annotations

import uuid
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from psycopg import sql

from crossfade.capture.preflight import connect
from crossfade.config import Settings
from crossfade.events.kafka import current_epoch
from crossfade.sync.bookkeeping import stored_offsets


def _count(conn: Any, table: str) -> int | None:
    schema, name = table.split(".", 1)
    try:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(name))).fetchone()
        return int(row[0]) if row else None
    except Exception:
        conn.rollback() if not conn.autocommit else None
        return None


def collect(settings: Settings) -> dict[str, Any]:
    """Gather status as plain data (no secrets)."""
    bk = sql.Identifier(settings.sync.bookkeeping_schema)
    out: dict[str, Any] = {"tables": [], "partitions": [], "epoch": None}
    with connect(settings.source, "source") as src, connect(settings.target, "target") as tgt:
        has_bk = tgt.execute("SELECT to_regclass(%s)", (f"{settings.sync.bookkeeping_schema}.table_stats",)).fetchone()
        stats: dict[str, tuple[Any, ...]] = {}
        if has_bk and has_bk[0]:
            for r in tgt.execute(
                sql.SQL(
                    "SELECT tbl, sum(applied), sum(skipped), sum(dead_lettered), max(last_lsn), max(last_source_ts), max(last_applied_at) "
                    "FROM {}.table_stats GROUP BY tbl"
                ).format(bk)
            ).fetchall():
                stats[r[0]] = r
        for t in settings.tables:
            st = stats.get(t)
            out["tables"].append(
                {
                    "table": t,
                    "source_rows": _count(src, t),
                    "target_rows": _count(tgt, t),
                    "events_applied": int(st[1]) if st else 0,
                    "events_skipped": int(st[2]) if st else 0,
                    "dead_lettered": int(st[3]) if st else 0,
                    "last_lsn": int(st[4]) if st and st[4] is not None else None,
                    "last_source_ts": st[5].isoformat() if st and st[5] else None,
                    "last_applied_at": st[6].isoformat() if st and st[6] else None,
                }
            )
        stored = stored_offsets(tgt, settings.sync.bookkeeping_schema, settings.sync.group_id) if has_bk and has_bk[0] else []
    try:
        out["epoch"] = current_epoch(settings.kafka.client_config(), settings.kafka.control_topic, timeout=3)
    except KafkaException:
        out["epoch"] = None
    c = Consumer({**settings.kafka.client_config(), "group.id": settings.sync.group_id, "enable.auto.commit": False})
    try:
        tps = [TopicPartition(s.topic, s.partition) for s in stored]
        committed = {(p.topic, p.partition): p.offset for p in c.committed(tps, timeout=5)} if tps else {}
        for s in stored:
            try:
                _low, high = c.get_watermark_offsets(TopicPartition(s.topic, s.partition), timeout=3)
            except KafkaException:
                high = None
            k = committed.get((s.topic, s.partition))
            out["partitions"].append(
                {
                    "topic": s.topic,
                    "partition": s.partition,
                    "stored_offset": s.next_offset,
                    "kafka_committed_offset": k if k is not None and k >= 0 else None,
                    "log_end_offset_reported": high,
                    "lag_hint": max(0, high - s.next_offset) if high is not None else None,
                    "epoch_current": s.epoch == out["epoch"],
                }
            )
    except KafkaException as exc:
        out["kafka_error"] = str(exc)
    finally:
        c.close()
    return out


def probe_id() -> str:
    return uuid.uuid4().hex[:8]
