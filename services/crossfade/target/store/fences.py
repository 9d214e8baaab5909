"""Fence runs (``<bookkeeping>.fence_runs``): who fenced, when it started and finished, and how."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from crossfade.target.store.schema import has_table


@dataclass(frozen=True)
class FenceRun:
    token: str
    via: str
    who: str | None
    started_at: datetime
    finished_at: datetime | None
    ok: bool | None
    partitions: int | None
    seconds: float | None
    detail: str | None
    age_s: float | None
    """Seconds since it finished (None while it runs)."""


def fence_started(conn: psycopg.Connection, schema: str, token: str, via: str, who: str) -> None:
    conn.execute(
        sql.SQL("INSERT INTO {}.fence_runs (token, via, who) VALUES (%s, %s, %s)").format(
            sql.Identifier(schema)
        ),
        (token, via, who),
    )


def fence_finished(
    conn: psycopg.Connection,
    schema: str,
    token: str,
    *,
    ok: bool,
    partitions: int,
    seconds: float,
    detail: str | None = None,
) -> None:
    conn.execute(
        sql.SQL(
            "UPDATE {}.fence_runs SET finished_at = clock_timestamp(), ok = %s, partitions = %s, "
            "seconds = %s, detail = %s WHERE token = %s"
        ).format(sql.Identifier(schema)),
        (ok, partitions, seconds, detail, token),
    )


def latest_fences(conn: psycopg.Connection, schema: str, limit: int = 1) -> list[FenceRun]:
    """The newest fence runs, newest first (running ones included)."""
    if not has_table(conn, schema, "fence_runs"):
        return []
    rows = conn.execute(
        sql.SQL(
            "SELECT token, via, who, started_at, finished_at, ok, partitions, seconds, detail, "
            "EXTRACT(EPOCH FROM clock_timestamp() - finished_at)::float8 FROM {}.fence_runs "
            "ORDER BY started_at DESC LIMIT %s"
        ).format(sql.Identifier(schema)),
        (limit,),
    ).fetchall()
    return [FenceRun(*r) for r in rows]
