"""The cutover's audit log in the new database (``<bookkeeping>.cutover_audit``, created by
:func:`crossfade.target.bookkeeping.ensure_schema`): what the gate model reads of it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from crossfade.target.bookkeeping import has_table


@dataclass
class AuditRow:
    """One row of ``cutover_audit`` (a step of a cutover run), with its age."""

    run_id: str
    at: datetime
    who: str
    dry_run: bool
    gate: str
    ok: bool
    detail: str | None
    seconds: float | None
    evidence: dict[str, Any] | None
    age_s: float


def latest_audit(conn: psycopg.Connection, schema: str, gate: str) -> AuditRow | None:
    """The newest audit row of ``gate`` (a dry run's too), or None (none yet, or no schema)."""
    if not has_table(conn, schema, "cutover_audit"):
        return None
    row = conn.execute(
        sql.SQL(
            "SELECT run_id, at, who, dry_run, gate, ok, detail, seconds, evidence, "
            "EXTRACT(EPOCH FROM clock_timestamp() - at)::float8 FROM {}.cutover_audit "
            "WHERE gate = %s ORDER BY id DESC LIMIT 1"
        ).format(sql.Identifier(schema)),
        (gate,),
    ).fetchone()
    return AuditRow(*row) if row else None
