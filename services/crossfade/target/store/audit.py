"""The cutover's audit log in the new database (``<bookkeeping>.cutover_audit``, created by
:func:`crossfade.target.store.schema.ensure_schema`): writing a run's rows (:class:`AuditLog`) and
what the gate model reads of it."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from crossfade.config import Settings
from crossfade.db import connect, jsonb
from crossfade.errors import CrossfadeError
from crossfade.redact import redact
from crossfade.target.store.schema import has_table

log = logging.getLogger(__name__)


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


def _latest(
    conn: psycopg.Connection, schema: str, where: str, params: tuple[Any, ...] = ()
) -> AuditRow | None:
    """The newest audit row matching ``where`` (SQL text over ``cutover_audit``'s columns), or
    None (none yet, or no audit log)."""
    if not has_table(conn, schema, "cutover_audit"):
        return None
    row = conn.execute(
        sql.SQL(
            "SELECT run_id, at, who, dry_run, gate, ok, detail, seconds, evidence, "
            "EXTRACT(EPOCH FROM clock_timestamp() - at)::float8 FROM {}.cutover_audit "
            "WHERE {} ORDER BY id DESC LIMIT 1"
        ).format(sql.Identifier(schema), sql.SQL(where)),
        params,
    ).fetchone()
    return AuditRow(*row) if row else None


def latest_audit(conn: psycopg.Connection, schema: str, gate: str) -> AuditRow | None:
    """The newest audit row of ``gate`` (a dry run's too), or None (none yet, or no schema)."""
    return _latest(conn, schema, "gate = %s", (gate,))


def latest_forecast(conn: psycopg.Connection, schema: str) -> AuditRow | None:
    """The newest cutover decision that carries a write downtime forecast (its evidence holds
    ``expected_downtime_seconds`` and the parts), a dry run's or a real run's; None when there
    is none (or no audit log yet)."""
    return _latest(conn, schema, "gate = 'decision' AND evidence ? 'expected_downtime_parts'")


class AuditLog:
    """The audit rows of one run (one ``run_id``) on one connection to the new database, opened
    at the first row and opened again when it broke: the steps inside a write freeze do not each
    pay a new connection (tens of ms each). Writing a row never raises: a failure is logged, the
    audit must not hide the step's result. :meth:`close` when the run ends."""

    def __init__(self, settings: Settings, run_id: str, who: str, dry_run: bool) -> None:
        self.settings, self.run_id, self.who, self.dry_run = settings, run_id, who, dry_run
        self._conn: psycopg.Connection | None = None

    def write(
        self,
        gate: str,
        ok: bool,
        detail: str,
        seconds: float,
        evidence: dict[str, Any] | None = None,
    ) -> None:
        """One row (the detail and the evidence, JSON, redacted); tried on a new connection
        once when the one held broke."""
        ev = jsonb(json.loads(redact(json.dumps(evidence, default=str)))) if evidence else None
        entry = AuditEntry(
            self.run_id, self.who, self.dry_run, gate, ok, redact(detail)[:4000], seconds
        )
        for attempt in (1, 2):
            try:
                if self._conn is None or self._conn.closed or self._conn.broken:
                    self._conn = connect(self.settings.target, "target", autocommit=True)
                insert_audit_row(self._conn, self.settings.sync.bookkeeping_schema, entry, ev)
                return
            except (psycopg.Error, CrossfadeError) as exc:
                self.close()
                if attempt == 2 or not isinstance(exc, psycopg.OperationalError):
                    log.error("cutover audit row for %s not written: %s", gate, exc)
                    return

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class AuditEntry:
    """What a row of the audit log says (written as given: redact before)."""

    run_id: str
    who: str
    dry_run: bool
    gate: str
    ok: bool
    detail: str | None
    seconds: float


def insert_audit_row(
    conn: psycopg.Connection, schema: str, entry: AuditEntry, evidence: Jsonb | None = None
) -> None:
    """Append one row to ``<schema>.cutover_audit`` (raises what the database raises)."""
    e = entry
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.cutover_audit (run_id, who, dry_run, gate, ok, detail, "
            "seconds, evidence) VALUES (%s,%s,%s,%s,%s,%s,%s,%s)"
        ).format(sql.Identifier(schema)),
        (e.run_id, e.who, e.dry_run, e.gate, e.ok, e.detail, e.seconds, evidence),
    )


def last_flip_age_s(conn: psycopg.Connection, schema: str) -> float | None:
    """Seconds since the last real, successful flip of a cutover (None: none recorded). The
    caller checks the audit log exists (:func:`has_table`)."""
    row = conn.execute(
        sql.SQL(
            "SELECT EXTRACT(EPOCH FROM clock_timestamp() - max(at))::float8 FROM {}.cutover_audit "
            "WHERE gate = 'flip' AND ok AND NOT dry_run AND coalesce(detail, '') NOT LIKE 'skipped%%'"
        ).format(sql.Identifier(schema))
    ).fetchone()
    return row[0] if row else None
