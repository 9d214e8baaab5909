"""A child whose parent left under ``on_parent_left: keep`` (:mod:`crossfade.verify.mapped`):
the mapping rejects it (its parent is gone), sync kept it as it was; its ledger entry decides."""

from __future__ import annotations

from typing import Any

from psycopg import sql

from crossfade.catalog import TableShape
from crossfade.mapping.engine import Rejected, TargetRow
from crossfade.target.store import entry_outcome


def kept(out: Rejected) -> bool:
    """Only missing parents failed, all under ``on_parent_left: keep``."""
    return all(f.kind == "references" and f.on_parent_left == "keep" for f in out.failures)


def kept_rows(
    tgt: Any,
    bk: str,
    source: str,
    entry: str,
    out: Rejected,
    shapes: dict[str, TableShape | None],
    tkeys: dict[str, tuple[str, ...]],
) -> list[TargetRow] | None:
    """The rows sync kept for a child whose parent left (the ledger says ``mapped``), with the
    reference columns as the target holds them; None when sync did not keep it (or never ran)."""
    if entry_outcome(tgt, bk, source, entry) not in ("mapped", "replayed"):
        return None
    stale = {(f.target, f.column) for f in out.failures}
    rows = []
    for tr in out.rows:
        cols = [c for t, c in stale if t == tr.table and c is not None]
        shape = shapes.get(tr.table)
        values = dict(tr.values)
        key_cols = tkeys.get(tr.table)
        if cols and shape is not None and tr.key is not None and key_cols:
            got = tgt.execute(
                sql.SQL("SELECT {} FROM {}.{} WHERE {}").format(
                    sql.SQL(", ").join(map(sql.Identifier, cols)),
                    sql.Identifier(shape.schema),
                    sql.Identifier(shape.name),
                    sql.SQL(" AND ").join(
                        sql.SQL("{} = %s").format(sql.Identifier(k)) for k in key_cols
                    ),
                ),
                list(tr.key),
            ).fetchone()
            if got is not None:
                values.update(zip(cols, got, strict=True))
        rows.append(TargetRow(tr.table, values, tr.key, tr.unavailable))
    return rows
