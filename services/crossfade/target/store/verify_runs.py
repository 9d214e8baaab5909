"""Verify runs (``<bookkeeping>.verify_runs``): one row per ``crossfade verify`` with its JSON
report; the gates read the newest that covered every table, the console the newest report."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from crossfade.db import jsonb
from crossfade.target.store.schema import has_table


@dataclass(frozen=True)
class VerifyRun:
    """What a verify records (:func:`record_verify_run`); ``report`` is its JSON report."""

    started_at: datetime
    ok: bool
    tables: int
    source_rows: int
    target_rows: int
    mismatched: int
    missing: int
    extra: int
    rechecked_after_fence: bool
    seconds: float
    created_by: str | None
    report: dict[str, Any]
    mapping_hash: str


def record_verify_run(conn: psycopg.Connection, schema: str, run: VerifyRun) -> int | None:
    """Insert the run; returns its id. The report's values that JSON cannot hold (keys of mapped
    targets may be uuids, dates...) are written as text, as the CLI prints them."""
    row = conn.execute(
        sql.SQL(
            "INSERT INTO {}.verify_runs (started_at, ok, tables, source_rows, target_rows, "
            "mismatched, missing, extra, rechecked_after_fence, seconds, created_by, report, "
            "mapping_hash) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) RETURNING id"
        ).format(sql.Identifier(schema)),
        (
            run.started_at,
            run.ok,
            run.tables,
            run.source_rows,
            run.target_rows,
            run.mismatched,
            run.missing,
            run.extra,
            run.rechecked_after_fence,
            run.seconds,
            run.created_by,
            jsonb(json.loads(json.dumps(run.report, default=str))),
            run.mapping_hash,
        ),
    ).fetchone()
    return int(row[0]) if row else None


RECENT_KEYS = [
    "id",
    "started_at",
    "finished_at",
    "ok",
    "mismatched",
    "missing",
    "extra",
    "age_s",
    "mapping_hash",
    "tables",
    "created_by",
    "delta_of",
]
"""The keys of each run :func:`recent_verify_runs` returns (``tables``: the names it covered;
``delta_of``: the run it verified the changes since, None for a full verify)."""


def recent_verify_runs(
    conn: psycopg.Connection, schema: str, limit: int = 20
) -> list[dict[str, Any]]:
    """The newest runs, newest first, without their reports (keys: :data:`RECENT_KEYS`)."""
    if not has_table(conn, schema, "verify_runs"):
        return []
    rows = conn.execute(
        sql.SQL(
            "SELECT id, started_at, finished_at, ok, mismatched, missing, extra, "
            "EXTRACT(EPOCH FROM clock_timestamp() - finished_at)::float8, mapping_hash, "
            "(SELECT array_agg(t->>'name') FROM jsonb_array_elements(report->'tables') t), "
            "created_by, (report->>'delta_of')::bigint "
            "FROM {}.verify_runs ORDER BY id DESC LIMIT %s"
        ).format(sql.Identifier(schema)),
        (limit,),
    ).fetchall()
    return [dict(zip(RECENT_KEYS, r, strict=True)) for r in rows]


@dataclass(frozen=True)
class VerifyReport:
    """The newest run with its whole report (the console's verify table)."""

    id: int
    started_at: datetime
    finished_at: datetime
    ok: bool
    seconds: float | None
    created_by: str | None
    rechecked_after_fence: bool | None
    report: dict[str, Any]


def latest_verify_report(conn: psycopg.Connection, schema: str) -> VerifyReport | None:
    """The newest verify run and its report (None: none yet, or no schema)."""
    if not has_table(conn, schema, "verify_runs"):
        return None
    r = conn.execute(
        sql.SQL(
            "SELECT id, started_at, finished_at, ok, seconds, created_by, rechecked_after_fence, "
            "report FROM {}.verify_runs ORDER BY id DESC LIMIT 1"
        ).format(sql.Identifier(schema))
    ).fetchone()
    return VerifyReport(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7] or {}) if r else None
