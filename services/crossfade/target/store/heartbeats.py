"""Heartbeats (``<bookkeeping>.heartbeats``): what each capture process and sync worker last
reported about itself (the "alive" evidence).
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from crossfade.target.store.schema import has_table


@dataclass
class Heartbeat:
    """What a capture process or sync worker reports about itself (:func:`write_heartbeat`)."""

    worker_id: str
    role: str  # capture | sync
    partitions: list[str] | None = None
    """``topic[partition]`` held by a sync worker."""
    lag: int | None = None
    lag_low: int | None = None
    lag_low_at: datetime | None = None
    """The lowest lag since the lag last fell (and when): a lag far above it for long is growing."""
    unassigned_tables: list[str] | None = None
    """Configured tables this worker found with no partition assigned to any worker (the stall
    watchdog fills it; empty or None when it has nothing to report)."""
    detail: dict[str, Any] = field(default_factory=dict)
    age_s: float = 0.0
    """Seconds since it was written (set when read)."""
    started_at: datetime | None = None
    host: str | None = None
    pid: int | None = None


def write_heartbeat(conn: psycopg.Connection, schema: str, hb: Heartbeat) -> None:
    """Upsert this process's heartbeat (autocommit connection: a statement of its own)."""
    conn.execute(
        sql.SQL(
            """INSERT INTO {}.heartbeats AS h (worker_id, role, host, pid, at, partitions, lag,
                   lag_low, lag_low_at, unassigned_tables, detail)
               VALUES (%s, %s, %s, %s, clock_timestamp(), %s, %s, %s, %s, %s, %s)
               ON CONFLICT (worker_id) DO UPDATE SET at = clock_timestamp(), role = EXCLUDED.role,
                   partitions = EXCLUDED.partitions, lag = EXCLUDED.lag, lag_low = EXCLUDED.lag_low,
                   lag_low_at = EXCLUDED.lag_low_at, unassigned_tables = EXCLUDED.unassigned_tables,
                   detail = EXCLUDED.detail"""
        ).format(sql.Identifier(schema)),
        (
            hb.worker_id,
            hb.role,
            socket.gethostname(),
            os.getpid(),
            json.dumps(hb.partitions) if hb.partitions is not None else None,
            hb.lag,
            hb.lag_low,
            hb.lag_low_at,
            json.dumps(hb.unassigned_tables) if hb.unassigned_tables is not None else None,
            json.dumps(hb.detail, default=str),
        ),
    )


def drop_heartbeat(conn: psycopg.Connection, schema: str, worker_id: str) -> None:
    """A process that stops cleanly takes its heartbeat away (it is not a stalled worker)."""
    conn.execute(
        sql.SQL("DELETE FROM {}.heartbeats WHERE worker_id = %s").format(sql.Identifier(schema)),
        (worker_id,),
    )


def read_heartbeats(conn: psycopg.Connection, schema: str) -> list[Heartbeat]:
    """Every heartbeat row with its age (by the target database's clock, as it was written)."""
    if not has_table(conn, schema, "heartbeats"):
        return []
    rows = conn.execute(
        sql.SQL(
            "SELECT worker_id, role, partitions, lag, lag_low, lag_low_at, unassigned_tables, "
            "detail, EXTRACT(EPOCH FROM clock_timestamp() - at)::float8, started_at, host, pid "
            "FROM {}.heartbeats ORDER BY role, worker_id"
        ).format(sql.Identifier(schema))
    ).fetchall()
    return [
        Heartbeat(
            r[0],
            r[1],
            list(r[2]) if r[2] is not None else None,
            r[3],
            r[4],
            r[5],
            list(r[6]) if r[6] is not None else None,
            dict(r[7] or {}),
            float(r[8]),
            r[9],
            r[10],
            r[11],
        )
        for r in rows
    ]
