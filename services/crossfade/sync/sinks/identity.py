"""Identity-mapped tables: a source table lands in the same-named target table, whose shape
follows the source's (ADD COLUMN mid-stream, enum labels), through the guarded set-based applier
of :mod:`crossfade.target.apply`.

:class:`IdentityTables` owns the appliers of a worker; the reverse sync's legacy tables are a
subclass that writes through the side-table guard and never alters legacy
(:mod:`crossfade.sync.reverse`)."""

from __future__ import annotations

import logging

import psycopg

from crossfade.catalog import TableShape, read_shape
from crossfade.config import Settings
from crossfade.db import connect
from crossfade.events.kafka import ControlRecord
from crossfade.events.model import ChangeEvent, RowSchema, position
from crossfade.sync.planner import PartitionPlan, Run
from crossfade.sync.sinks import Tx
from crossfade.target.append_only import AppendOnlyApplier
from crossfade.target.apply import ApplyResult, TableApplier
from crossfade.target.ddl import add_column_from_source, ensure_target_table, sync_enum
from crossfade.target.store import (
    added_columns,
    mapping_fingerprint,
    note_added_column,
    note_mapping,
)

log = logging.getLogger(__name__)


class IdentityTables:
    """The identity-mapped tables of one worker: table -> its applier."""

    source_label = "source"
    """How errors name the database this direction reads."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.bk = settings.sync.bookkeeping_schema
        self.appliers: dict[str, TableApplier] = {}

    def setup(self, src: psycopg.Connection, conn: psycopg.Connection, tables: list[str]) -> None:
        """Create (or check) the target tables of ``tables`` from the source's shapes."""
        note_mapping(conn, self.bk, mapping_fingerprint(self.settings.mapping))
        for table in tables:
            shape = ensure_target_table(
                src, conn, table, table, self.settings.sync.create_tables, self.bk
            )
            self.appliers[table] = self.applier(conn, table, shape)

    def applier(self, conn: psycopg.Connection, table: str, shape: TableShape) -> TableApplier:
        added = added_columns(conn, self.bk, table)
        if table in self.settings.sync.append_only_tables:
            return AppendOnlyApplier(shape, self.bk, added=added)
        return TableApplier(shape, self.bk, added=added)

    def refresh(
        self, conn: psycopg.Connection, table: str, new_columns: list[str], since: int
    ) -> None:
        """ADD COLUMN at the source, seen first in a change at position ``since``: add it to the
        target and record when it appeared (inside the batch transaction)."""
        with connect(self.settings.source, "source") as src:
            for col in new_columns:
                fill = add_column_from_source(src, conn, table, table, col)
                note_added_column(conn, self.bk, table, col, since, fill)
            shape = ensure_target_table(src, conn, table, table, False)
        self.appliers[table] = self.applier(conn, table, shape)

    def add_uncarried(self, conn: psycopg.Connection, table: str) -> bool:
        """Add to the target the source's columns it lacks; True when there were any. They are
        recorded as appearing at the source's current WAL position, which is after the ADD
        COLUMN: older changes without them are filled, newer ones would mean a drop."""
        applier = self.appliers[table]
        with connect(self.settings.source, "source") as src:
            shape = read_shape(src, table)
            row = src.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
        extra = (
            [c.name for c in shape.columns if c.name not in applier.cols]
            if shape is not None
            else []
        )
        if not extra or row is None:
            return False
        lsn = int(row[0])
        self.refresh(conn, table, extra, position(lsn, snapshot=False, floor=lsn))
        return True

    def sync_enums(self, conn: psycopg.Connection) -> bool:
        """Add to the target's enums the labels the source's gained; True when any was."""
        changed = False
        with connect(self.settings.source, "source") as src:
            for applier in self.appliers.values():
                for col in applier.shape.columns:
                    if col.enum:
                        changed |= sync_enum(src, conn, col.enum)
        return changed

    def sink(self, table: str) -> IdentitySink:
        return IdentitySink(self, table)


class IdentitySink:
    """:class:`~crossfade.sync.sinks.TableSink` of one identity-mapped table."""

    def __init__(self, tables: IdentityTables, table: str) -> None:
        self.tables = tables
        self.table = table
        self.applier = tables.appliers[table]
        self.watermark = -1

    def begin(self, tx: Tx, parts: list[PartitionPlan]) -> None:
        """Follow the source's columns, then read the table's watermark (share-locked)."""
        table = self.table
        schemas, fenced = _schemas_and_fence(parts)
        # ADD COLUMN mid-stream: the target follows the source. A batch holds a handful of row
        # schemas, so each is checked once, not once per event
        for rs in schemas.values():
            extra = [c for c in rs.columns if c not in self.tables.appliers[table].cols]
            if extra:
                since = min(
                    e.position
                    for pp in parts
                    for e in pp.items
                    if isinstance(e, ChangeEvent) and e.row_schema == rs
                )
                self.tables.refresh(tx.conn, table, extra, since)
        # a fence proves the target caught up: a column added at the source that no change has
        # carried since (no row written after the ADD COLUMN) is added here, or the target
        # would lack it for good
        if fenced:
            self.tables.add_uncarried(tx.conn, table)
        self.applier = self.tables.appliers[table]
        self.watermark = self.applier.prepare(tx.conn)

    def apply(self, tx: Tx, run: Run) -> ApplyResult:
        return self.applier.apply(tx.conn, run.events, self.watermark, replay=run.replay)

    def truncate(self, tx: Tx, pos: int, reason: str) -> int:
        n = self.applier.truncate(tx.conn, pos, reason)
        self.watermark = max(self.watermark, pos)
        return n


def _schemas_and_fence(parts: list[PartitionPlan]) -> tuple[dict[int, RowSchema], bool]:
    """The row schemas of the partitions' change events (by identity: hashing a RowSchema's
    nested tuples for every event is not free) and whether a fence is among their items, in
    one pass over the items (this runs over every event of the batch)."""
    schemas: dict[int, RowSchema] = {}
    fenced = False
    last: object = None
    for pp in parts:
        for x in pp.items:
            if type(x) is ChangeEvent or isinstance(x, ChangeEvent):
                rs = x.row_schema
                if rs is not last:  # runs of one schema: most events
                    last = rs
                    if rs:
                        schemas[id(rs)] = rs
            elif isinstance(x, ControlRecord) and x.kind == "fence":
                fenced = True
    return schemas, fenced
