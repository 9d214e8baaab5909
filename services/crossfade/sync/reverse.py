"""The reverse sync worker of fallback (new -> legacy): a :class:`SyncWorker` composed with three
changes.

* Its tables (:class:`LegacyTables`) are the legacy tables of the plan
  (:mod:`crossfade.mapping.inverse`), never created or altered: each must exist with every column
  the inverse mapping writes, and a legacy column the mapping does not cover must be nullable
  (rows created in the new system leave it NULL; a NOT NULL one refuses to start). They are
  written through the :class:`crossfade.target.apply.SideTable` guard (positions beside the
  legacy tables, not in them).
* Events are renamed on decode from new-database columns to legacy columns (and a column with no
  legacy counterpart is dropped), so the rest of the worker, the guard included, is the forward
  worker's.
* Its session must carry a replication origin (``require_origin``): untagged, its writes would
  come back through the forward capture. It also turns ``default_transaction_read_only`` off
  for itself, as the fence does: a frozen legacy database still takes fallback's writes.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import psycopg

from crossfade.catalog import TableShape, read_shape
from crossfade.config import Settings
from crossfade.errors import SchemaMismatch
from crossfade.events.model import ChangeEvent, RowSchema
from crossfade.mapping.inverse import FallbackPlan, TableInverse
from crossfade.sync.sinks.identity import IdentityTables
from crossfade.sync.worker import SyncWorker
from crossfade.target.apply import SideTable, TableApplier, ensure_side_schema

log = logging.getLogger(__name__)


class LegacyTables(IdentityTables):
    """The legacy tables fallback writes: checked, never altered; the side-table guard."""

    def __init__(self, settings: Settings, fallback_plan: FallbackPlan) -> None:
        super().__init__(settings)
        self.inverses: dict[str, TableInverse] = fallback_plan.by_new()
        self.renames: dict[str, dict[str, str]] = {}  # new table -> new column -> legacy column
        self.dropped: dict[str, frozenset[str]] = {}  # new table -> columns legacy has no place for

    source_label = "new"

    def setup(self, src: psycopg.Connection, conn: psycopg.Connection, tables: list[str]) -> None:
        """Check each legacy table (in ``conn``) against its table in the new database
        (``src``, this direction's source)."""
        ensure_side_schema(conn, self.bk)
        for table in tables:
            self._check(src, conn, table)

    def _check(self, new: psycopg.Connection, conn: psycopg.Connection, table: str) -> None:
        inv = self.inverses[table]
        new_shape = read_shape(new, table)
        legacy_shape = read_shape(conn, inv.legacy)
        if new_shape is None:
            raise SchemaMismatch(
                f"{table} does not exist in the new database", "fix the mapping or tables:"
            )
        if legacy_shape is None:
            raise SchemaMismatch(
                f"legacy table {inv.legacy} does not exist",
                "recreate it, or leave it out of fallback.tables",
            )
        renames = {
            c.name: lc for c in new_shape.columns if (lc := inv.legacy_column(c.name)) is not None
        }
        legacy_cols = {c.name for c in legacy_shape.columns}
        unknown = sorted(lc for lc in renames.values() if lc not in legacy_cols)
        if unknown:
            raise SchemaMismatch(
                f"{table} maps back to column(s) {', '.join(unknown)} that legacy {inv.legacy} does not have",
                "add them to the legacy table, or leave the table out of fallback.tables",
            )
        covered = set(renames.values())
        uncovered = [c for c in legacy_shape.columns if c.name not in covered]
        strict = [c.name for c in uncovered if c.not_null]
        if strict:
            raise SchemaMismatch(
                f"legacy {inv.legacy} column(s) {', '.join(strict)} are NOT NULL but nothing in {table} maps to them",
                "map them in the forward mapping, or leave the table out of fallback.tables",
            )
        if uncovered:
            log.warning(
                "legacy %s column(s) %s get nothing from %s (NULL in rows created there)",
                inv.legacy,
                ", ".join(c.name for c in uncovered),
                table,
            )
        if [renames.get(c) for c in new_shape.pk] != list(legacy_shape.pk):
            raise SchemaMismatch(
                f"the key of {table} ({', '.join(new_shape.pk)}) does not map to the primary key of "
                f"legacy {inv.legacy} ({', '.join(legacy_shape.pk)})",
                "the key must be a rename of the legacy primary key",
            )
        self.renames[table] = renames
        self.dropped[table] = frozenset(c.name for c in new_shape.columns if c.name not in renames)
        # the applier writes only the covered columns: an uncovered one keeps its value
        shape = replace(
            legacy_shape, columns=tuple(c for c in legacy_shape.columns if c.name in covered)
        )
        self.appliers[table] = self.applier(conn, table, shape)
        log.info(
            "fallback: %s -> legacy %s%s",
            table,
            inv.legacy,
            "" if inv.identity else " (inverse mapping)",
        )

    def applier(self, conn: psycopg.Connection, table: str, shape: TableShape) -> TableApplier:
        return TableApplier(shape, self.bk, guard=SideTable())

    def add_uncarried(self, conn: psycopg.Connection, table: str) -> bool:
        """Fallback does not follow schema changes: legacy keeps the columns it has (a column
        added in the new database stops it when a change carries one, :meth:`refresh`)."""
        return False

    def refresh(
        self, conn: psycopg.Connection, table: str, new_columns: list[str], since: int
    ) -> None:
        raise SchemaMismatch(
            f"change events of {table} carry column(s) {', '.join(new_columns)} that legacy "
            f"{self.inverses[table].legacy} does not have (added in the new database during fallback?)",
            "add them to the legacy table too, then restart fallback",
        )

    def rename(self, e: ChangeEvent) -> ChangeEvent:
        """``e`` with legacy column names (identity: unchanged; a column unknown to legacy then
        stays and stops sync, :meth:`refresh`)."""
        renames = self.renames.get(e.table)
        if renames is None:
            return e
        drop = self.dropped[e.table]
        if not drop and all(k == v for k, v in renames.items()):
            return e
        return renamed(e, renames, drop)


def writable(conn: psycopg.Connection) -> None:
    # a cutover may have frozen legacy with default_transaction_read_only (docs/cutover.md):
    # fallback is the one writer that must still get through (any role may turn the default off)
    conn.execute("SET default_transaction_read_only = off")


def ReverseSyncWorker(  # noqa: N802 - was a class; callers construct it by this name
    settings: Settings, fallback_plan: FallbackPlan, **kw: Any
) -> SyncWorker:
    """One member of the fallback sync group; ``settings`` are the reversed ones."""
    tables = LegacyTables(settings, fallback_plan)
    return SyncWorker(
        settings,
        tables=tables,
        rename=tables.rename,
        on_connect=writable,
        require_origin=True,
        **kw,
    )


_SCHEMAS: dict[Any, RowSchema] = {}


def _rename_schema(
    rs: RowSchema | None, renames: dict[str, str], drop: frozenset[str]
) -> RowSchema | None:
    if rs is None:
        return None
    hit = _SCHEMAS.get((id(renames), rs))
    if hit is None:
        hit = RowSchema(
            rs.name, tuple((renames.get(n, n), t) for n, t in rs.fields if n not in drop)
        )
        _SCHEMAS[(id(renames), rs)] = hit
    return hit


def renamed(e: ChangeEvent, renames: dict[str, str], drop: frozenset[str]) -> ChangeEvent:
    """The event with legacy column names. A column the inverse mapping leaves out is dropped;
    one unknown at setup (added since) keeps its name, so sync stops on it instead of losing it."""

    def row(d: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if d is None else {renames.get(k, k): v for k, v in d.items() if k not in drop}

    return replace(
        e,
        key=row(e.key),
        after=row(e.after),
        row_schema=_rename_schema(e.row_schema, renames, drop),
        key_schema=_rename_schema(e.key_schema, renames, drop),
        unavailable=frozenset(renames.get(c, c) for c in e.unavailable if c not in drop),
    )
