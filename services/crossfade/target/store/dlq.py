"""Acknowledging dead letters (``<bookkeeping>.dlq_acks`` and ``dlq_acked``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from crossfade.target.store.audit import AuditEntry, insert_audit_row
from crossfade.target.store.ledger import ledger_counts
from crossfade.target.store.schema import has_table


def acknowledge_dead_letters(
    conn: psycopg.Connection, schema: str, who: str, note: str | None
) -> tuple[int, int]:
    """``crossfade dlq ack``: the open dead letters (and held changes) no acknowledgement covers
    yet are acknowledged by ``who``, with ``note``; the acknowledgement is also a row of the
    audit log (``cutover_audit``, gate ``dlq_ack``). Returns (open now, newly acknowledged).

    A key dead-lettered again later (a newer position) is not covered: it is open anew."""
    s = sql.Identifier(schema)
    with conn.transaction():
        counts = ledger_counts(conn, schema)
        row = conn.execute(
            sql.SQL(
                "INSERT INTO {}.dlq_acks (who, dead_lettered, note) VALUES (%s, %s, %s) RETURNING id"
            ).format(s),
            (who, counts.unacknowledged, note),
        ).fetchone()
        assert row is not None
        ack_id = int(row[0])
        new = 0
        if has_table(conn, schema, "ledger"):
            new = conn.execute(
                sql.SQL(
                    "INSERT INTO {s}.dlq_acked (source_table, entry, position, ack_id) "
                    "SELECT source_table, entry, position, %s FROM {s}.ledger "
                    "WHERE outcome IN ('dead_letter', 'held') ON CONFLICT DO NOTHING"
                ).format(s=s),
                (ack_id,),
            ).rowcount
        open_now = counts.dead_letters + counts.held
        conn.execute(
            sql.SQL("UPDATE {}.dlq_acks SET dead_lettered = %s WHERE id = %s").format(s),
            (max(new, 0), ack_id),
        )
        insert_audit_row(
            conn,
            schema,
            AuditEntry(
                f"dlq-ack-{ack_id}",
                who,
                False,
                "dlq_ack",
                True,
                f"acknowledged {new} dead letter(s) ({open_now} open)"
                + (f": {note}" if note else ""),
                0,
            ),
        )
    return open_now, max(new, 0)


@dataclass(frozen=True)
class DlqAck:
    """One ``crossfade dlq ack``."""

    who: str
    at: datetime
    acknowledged: int
    note: str | None


def last_dlq_ack(conn: psycopg.Connection, schema: str) -> DlqAck | None:
    """The newest acknowledgement (None: none yet, or no schema)."""
    if not has_table(conn, schema, "dlq_acks"):
        return None
    row = conn.execute(
        sql.SQL(
            "SELECT who, at, dead_lettered, note FROM {}.dlq_acks ORDER BY id DESC LIMIT 1"
        ).format(sql.Identifier(schema))
    ).fetchone()
    return DlqAck(row[0], row[1], int(row[2]), row[3]) if row else None
