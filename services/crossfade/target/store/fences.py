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


@dataclass(frozen=True)
class AppliedFence:
    """The newest fence sync applied (``<bookkeeping>.fences``), over all its partitions."""

    token: str
    partitions: int
    source_ts: datetime | None
    """Its commit in the legacy database."""
    applied_at: datetime
    """When sync applied it on its last partition."""
    lag_s: float | None
    """End-to-end lag: legacy commit -> applied on the last partition."""
    age_s: float | None
    """Seconds since then (lag zero is proven only as of then)."""


def last_applied_fence(conn: psycopg.Connection, schema: str) -> AppliedFence | None:
    """The fence sync applied last (None: none yet, or no schema)."""
    if not has_table(conn, schema, "fences"):
        return None
    r = conn.execute(
        sql.SQL(
            "SELECT token, count(*), min(source_ts), max(applied_at), "
            "EXTRACT(EPOCH FROM max(applied_at) - min(source_ts))::float8, "
            "EXTRACT(EPOCH FROM now() - max(applied_at))::float8 "
            "FROM {}.fences GROUP BY token ORDER BY max(applied_at) DESC LIMIT 1"
        ).format(sql.Identifier(schema))
    ).fetchone()
    return AppliedFence(r[0], int(r[1]), r[2], r[3], r[4], r[5]) if r else None


def fence_applied_on(conn: psycopg.Connection, schema: str, token: str) -> int:
    """On how many partitions sync has applied the fence ``token``."""
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {}.fences WHERE token = %s").format(sql.Identifier(schema)),
        (token,),
    ).fetchone()
    return int(row[0]) if row else 0


def fence_spread(conn: psycopg.Connection, schema: str, token: str) -> float | None:
    """Seconds from the first partition's record of the fence ``token`` to the last one's
    (None: not applied)."""
    row = conn.execute(
        sql.SQL(
            "SELECT EXTRACT(EPOCH FROM max(applied_at) - min(applied_at))::float8 "
            "FROM {}.fences WHERE token = %s"
        ).format(sql.Identifier(schema)),
        (token,),
    ).fetchone()
    return float(row[0]) if row and row[0] is not None else None


def fence_position(conn: psycopg.Connection, schema: str, token: str) -> int | None:
    """The lowest source position sync recorded for the fence ``token`` (None: not applied)."""
    row = conn.execute(
        sql.SQL("SELECT min(lsn) FROM {}.fences WHERE token = %s").format(sql.Identifier(schema)),
        (token,),
    ).fetchone()
    return int(row[0]) if row and row[0] is not None else None


def record_fence(
    conn: psycopg.Connection,
    schema: str,
    token: str,
    tp: tuple[str, int],
    lsn: int,
    source_ts_ms: int,
) -> None:
    """Sync applied the fence marker ``token`` on partition ``tp`` (decision 4)."""
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.fences (token, topic, partition, lsn, source_ts) "
            "VALUES (%s,%s,%s,%s, to_timestamp(%s/1000.0)) ON CONFLICT DO NOTHING"
        ).format(sql.Identifier(schema)),
        (token, tp[0], tp[1], lsn, source_ts_ms),
    )
