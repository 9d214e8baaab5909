"""The ``target_schema`` gate's evidence and the creation of what a created table still lacks.

Per identity-mapped table the legacy definition (:mod:`crossfade.target.definition`) is
compared with the target's. A table crossfade created (``created_table:`` in the bookkeeping
``meta``) may lack only what follows the load: its secondary indexes, UNIQUE/EXCLUDE
constraints and foreign keys, which :func:`create_missing` adds (the cutover after its fence,
``crossfade target-schema --apply`` earlier, foreign keys only in the cutover). A table crossfade
did not create is compared and never altered; its differences fail the gate unless the table is
listed in ``cutover.accept_schema_differences``. Mapped targets are the new system's own design
and are not compared.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from crossfade.config import Settings
from crossfade.target.ddl import CREATED_KEY
from crossfade.target.definition import Deferred, deferred_statements, differences, read_definition
from crossfade.target.store import meta

log = logging.getLogger(__name__)


@dataclass
class TableSchema:
    table: str
    created: bool
    """crossfade created it (it may add what the load deferred)."""
    missing_target: bool = False
    differences: list[str] = field(default_factory=list)
    pending: list[Deferred] = field(default_factory=list)
    """Created tables: objects to create (statement set) or skipped (a note)."""
    accepted: bool = False

    def blocking(self, deferred_ok: bool = False) -> list[str]:
        """The differences that fail the gate; ``deferred_ok``: not those the cutover will
        create (a dry run's view)."""
        if self.accepted:
            return []
        if not deferred_ok:
            return self.differences
        planned = [d for d in self.pending if d.statement is not None]
        return [
            line
            for line in self.differences
            if not any(f": missing {d.kind} " in line and d.name in line for d in planned)
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "created_by_crossfade": self.created,
            "missing": self.missing_target,
            "differences": self.differences,
            "to_create": [f"{d.kind} {d.name}" for d in self.pending if d.statement is not None],
            "skipped": [
                f"{d.kind} {d.name}: {d.note}" for d in self.pending if d.statement is None
            ],
            "accepted": self.accepted,
        }


def identity_tables(settings: Settings) -> list[str]:
    m = settings.mapping
    return [t for t in settings.tables if not (m is not None and t in m.tables)]


def compare(
    settings: Settings, src: psycopg.Connection, tgt: psycopg.Connection
) -> list[TableSchema]:
    """Every identity-mapped table's target against its legacy definition."""
    tables = identity_tables(settings)
    migrated = set(tables)
    created = {
        k[len(CREATED_KEY) :]
        for k in meta(tgt, settings.sync.bookkeeping_schema)
        if k.startswith(CREATED_KEY)
    }
    out: list[TableSchema] = []
    for t in tables:
        legacy = read_definition(src, t)
        target = read_definition(tgt, t)
        ts = TableSchema(t, t in created, accepted=t in settings.cutover.accept_schema_differences)
        out.append(ts)
        if legacy is None or target is None:
            ts.missing_target = target is None
            if legacy is None:
                ts.differences.append(f"{t}: the legacy table does not exist")
            continue
        ts.differences = differences(legacy, target, migrated)
        ts.pending = deferred_statements(legacy, target, migrated) if ts.created else []
    return out


def create_missing(
    settings: Settings,
    src: psycopg.Connection,
    tgt: psycopg.Connection,
    *,
    foreign_keys: bool,
) -> list[str]:
    """Create what the created tables lack (indexes and UNIQUE/EXCLUDE constraints first, then,
    with ``foreign_keys``, the foreign keys: ``NOT VALID`` then validated). Returns one line per
    object created. A statement that fails raises (nothing else is altered after it)."""
    done: list[str] = []
    report = compare(settings, src, tgt)
    todo = [d for ts in report for d in ts.pending if d.statement is not None]
    for d in sorted(todo, key=lambda d: d.kind == "foreign key"):
        assert d.statement is not None
        if d.kind == "foreign key":
            if not foreign_keys:
                continue
            schema, name = d.table.split(".", 1)
            if d.statement.as_string(tgt).endswith("NOT VALID"):  # legacy never validated it
                tgt.execute(d.statement)
                done.append(f"{d.table}: {d.kind} {d.name}")
                continue
            tgt.execute(sql.SQL("{} NOT VALID").format(d.statement))
            tgt.execute(
                sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(
                    sql.Identifier(schema, name), sql.Identifier(d.name)
                )
            )
        else:
            tgt.execute(d.statement)
        log.info("created %s %s on %s, as in legacy", d.kind, d.name, d.table)
        done.append(f"{d.table}: {d.kind} {d.name}")
    return done


def mapped_targets(settings: Settings) -> list[str]:
    m = settings.mapping
    if m is None:
        return []
    return list(dict.fromkeys(t.table for tm in m.tables.values() for t in tm.targets))


def summary(report: list[TableSchema], deferred_ok: bool = False) -> tuple[bool, str]:
    """(ok, one line) as the gate and the CLI say it; ``deferred_ok``: what the cutover will
    create does not count (see :meth:`TableSchema.blocking`)."""
    bad: list[str] = []
    notes: list[str] = []
    for ts in report:
        if ts.missing_target:
            bad.append(f"{ts.table} does not exist in the new database")
            continue
        if ts.accepted and ts.differences:
            notes.append(f"accepted differences of {ts.table}: {'; '.join(ts.differences)}")
        if ts.blocking(deferred_ok):
            bad.append("; ".join(ts.blocking(deferred_ok)))
    skipped = [
        f"{d.table} {d.kind} {d.name} {d.note}"
        for ts in report
        for d in ts.pending
        if d.statement is None
    ]
    notes += skipped
    tail = (" (" + "; ".join(notes) + ")") if notes else ""
    if bad:
        pending = any(d.statement is not None for ts in report for d in ts.pending)
        hint = (
            ": the cutover creates what crossfade's tables lack after its fence "
            "(`crossfade target-schema --apply` builds indexes and unique constraints now)"
            if pending
            else ""
        )
        return False, "differs from legacy: " + "; ".join(bad) + hint + tail
    n = len(report)
    return True, f"{n} identity-mapped table(s) defined as in legacy{tail}"
