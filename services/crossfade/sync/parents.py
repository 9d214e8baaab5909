"""The parents a mapped child refers to, looked up in the target inside the batch transaction
(:class:`TargetParents`, the :class:`~crossfade.mapping.engine.ParentKeys` of a batch)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import sql

from crossfade.catalog import TableShape
from crossfade.sync import children
from crossfade.sync.key_text import key_text
from crossfade.target.store import share_member


class TargetParents:
    """:class:`~crossfade.mapping.engine.ParentKeys` over the target database, inside the batch
    transaction (so a parent applied earlier in the same batch counts). Found keys are cached for
    the batch (:meth:`forget` drops parents that changed); a missing one is asked again (it may
    arrive later in the batch).

    A parent found is locked until the batch commits (``FOR KEY SHARE`` on its row, ``FOR SHARE``
    on a member's crosswalk row): a worker removing that parent, or moving that member to another
    survivor, waits for this batch, then finds this child among the parent's children and maps it
    again (:mod:`crossfade.sync.children`). A parent not found is waited for once, in case a
    worker is bringing it in at this moment (:func:`~crossfade.sync.children.wait_for_parent`).
    Without these a child could be written beside a parent that another worker changes at the
    same moment, and nobody would look at it again."""

    def __init__(
        self,
        conn: psycopg.Connection,
        shapes: Mapping[str, TableShape],
        dedup: Mapping[str, tuple[str, ...]] | None = None,
        bookkeeping_schema: str = "crossfade",
    ) -> None:
        self.conn = conn
        self.shapes = shapes
        self.dedup = dict(dedup or {})
        """Deduplicated target -> its key: a merged member has no row but resolves in the crosswalk."""
        self.bk_name = bookkeeping_schema
        self._found: set[tuple[str, str, str]] = set()
        self._waited: set[tuple[str, str, str]] = set()

    def forget(self, changes: children.ParentChanges) -> None:
        """Drop cached answers for parents whose state changed in this transaction."""
        for table, values in changes.values.items():
            self._found = {k for k in self._found if not (k[0] == table and k[2] in values)}
            self._waited = {k for k in self._waited if not (k[0] == table and k[2] in values)}

    def __call__(self, table: str, column: str, value: Any) -> bool | None:
        shape = self.shapes.get(table)
        if shape is None:
            return None
        k = (table, column, key_text([value]))
        if k in self._found:
            return True
        if self._exists(shape, k, value):
            return True
        if k in self._waited:
            return False
        # missing: wait for a transaction bringing this parent in right now (it holds the
        # parent's lock, children.lock_parents), then look again; one that takes the lock after
        # us waits for this batch and finds this child among the parent's children
        self._waited.add(k)
        children.wait_for_parent(self.conn, table, k[2])
        return self._exists(shape, k, value)

    def _exists(self, shape: TableShape, k: tuple[str, str, str], value: Any) -> bool:
        table, column, vt = k
        if self.dedup.get(table) == (column,) and share_member(self.conn, self.bk_name, table, vt):
            self._found.add(k)
            return True
        typ = shape.column(column).type_sql
        row = self.conn.execute(
            sql.SQL("SELECT 1 FROM {}.{} WHERE {} = CAST(%s AS {}) LIMIT 1 FOR KEY SHARE").format(
                sql.Identifier(shape.schema),
                sql.Identifier(shape.name),
                sql.Identifier(column),
                sql.SQL(typ),
            ),
            (value if not isinstance(value, dict | list) else json.dumps(value),),
        ).fetchone()
        ok = row is not None
        if ok:
            self._found.add(k)
        return ok


def make_parents(
    conn: psycopg.Connection,
    shapes: Mapping[str, TableShape],
    writers: Mapping[str, Any],
    bookkeeping_schema: str,
) -> TargetParents:
    """The :class:`TargetParents` of a batch (deduplicated targets answer through the crosswalk)."""
    from crossfade.sync.sinks.dedup import DedupWriter

    dedup = {t: w.key for t, w in writers.items() if isinstance(w, DedupWriter)}
    return TargetParents(conn, shapes, dedup, bookkeeping_schema)
