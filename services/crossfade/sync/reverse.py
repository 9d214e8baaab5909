"""The reverse sync worker of fallback (new -> legacy): a :class:`SyncWorker` with three changes.

* Its target tables are the legacy tables of the plan (:mod:`crossfade.mapping.inverse`), never
  created or altered: each must exist with every column the inverse mapping writes, and a legacy
  column the mapping does not cover must be nullable (rows created in the new system leave it
  NULL; a NOT NULL one refuses to start).
* Events are renamed on decode from new-database columns to legacy columns (and a column with no
  legacy counterpart is dropped), so the rest of the worker, the guard included, is the forward
  worker's, applied by :class:`crossfade.target.apply.SideTable` guard (positions beside the
  legacy tables, not in them).
* Its session must carry a replication origin (``require_origin``): untagged, its writes would
  come back through the forward capture. It also turns ``default_transaction_read_only`` off
  for itself, as the fence does: a frozen legacy database still takes fallback's writes.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from confluent_kafka import Message

from crossfade.catalog import read_shape
from crossfade.config import Settings
from crossfade.db import connect
from crossfade.errors import SchemaMismatch
from crossfade.events.kafka import ControlRecord
from crossfade.events.model import ChangeEvent, RowSchema
from crossfade.mapping.inverse import FallbackPlan, TableInverse
from crossfade.sync.worker import DeadLetter, SyncWorker
from crossfade.target.apply import SideTable, TableApplier, ensure_side_schema
from crossfade.target.store import ensure_schema

log = logging.getLogger(__name__)


class ReverseSyncWorker(SyncWorker):
    """One member of the fallback sync group; ``settings`` are the reversed ones."""

    def __init__(self, settings: Settings, fallback_plan: FallbackPlan, **kw: Any) -> None:
        super().__init__(settings, **kw)
        self.require_origin = True
        self.inverses: dict[str, TableInverse] = fallback_plan.by_new()
        self._renames: dict[str, dict[str, str]] = {}  # new table -> new column -> legacy column
        self._dropped: dict[
            str, frozenset[str]
        ] = {}  # new table -> columns legacy has no place for

    def _connect_target(self) -> Any:
        conn = super()._connect_target()
        # a cutover may have frozen legacy with default_transaction_read_only (docs/cutover.md): fallback
        # is the one writer that must still get through (any role may turn the default off)
        conn.execute("SET default_transaction_read_only = off")
        return conn

    def _setup_tables(self) -> None:
        assert self.conn is not None
        ensure_schema(self.conn, self.bk)
        ensure_side_schema(self.conn, self.bk)
        with connect(self.settings.source, "new") as new:
            for table in self.settings.tables:
                inv = self.inverses[table]
                new_shape = read_shape(new, table)
                legacy_shape = read_shape(self.conn, inv.legacy)
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
                    c.name: lc
                    for c in new_shape.columns
                    if (lc := inv.legacy_column(c.name)) is not None
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
                self._renames[table] = renames
                self._dropped[table] = frozenset(
                    c.name for c in new_shape.columns if c.name not in renames
                )
                # the applier writes only the covered columns: an uncovered one keeps its value
                shape = replace(
                    legacy_shape,
                    columns=tuple(c for c in legacy_shape.columns if c.name in covered),
                )
                self.appliers[table] = self._applier(table, shape)
                log.info(
                    "fallback: %s -> legacy %s%s",
                    table,
                    inv.legacy,
                    "" if inv.identity else " (inverse mapping)",
                )

    def _applier(self, table: str, shape: Any) -> TableApplier:
        return TableApplier(shape, self.bk, guard=SideTable())

    def _add_uncarried_columns(self, table: str, applier: TableApplier) -> bool:
        """Fallback does not follow schema changes: legacy keeps the columns it has (a column
        added in the new database stops it when a change carries one, _refresh_table)."""
        return False

    def _refresh_table(self, table: str, new_columns: list[str], since: int = 0) -> None:
        raise SchemaMismatch(
            f"change events of {table} carry column(s) {', '.join(new_columns)} that legacy "
            f"{self.inverses[table].legacy} does not have (added in the new database during fallback?)",
            "add them to the legacy table too, then restart fallback",
        )

    def _decode(self, m: Message) -> ChangeEvent | ControlRecord | DeadLetter | None:
        d = super()._decode(m)
        if not isinstance(d, ChangeEvent):
            return d
        renames = self._renames.get(d.table)
        if renames is None:
            return d
        drop = self._dropped[d.table]
        if not drop and all(k == v for k, v in renames.items()):
            return d  # identity: a column unknown to legacy stays and stops sync (_refresh_table)
        return _renamed(d, renames, drop)


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


def _renamed(e: ChangeEvent, renames: dict[str, str], drop: frozenset[str]) -> ChangeEvent:
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
