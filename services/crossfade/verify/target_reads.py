"""The mapped re-check's reads of the target (:meth:`crossfade.verify.run.Verifier._mapped_recheck`):
the rows of the differing keys and the position of the newest change that wrote each, read in
one snapshot of the target, then raised to what sync's ledger says of the legacy rows that make
them. A position too low would let the re-check confirm a row in flight as a difference; one
too high only leaves a key for the next round."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from psycopg import sql

from crossfade.catalog import POS_COLUMN, TableShape
from crossfade.events.model import SHIFT
from crossfade.sync.key_text import key_text
from crossfade.target.store.dedup import group_positions
from crossfade.target.store.ledger import ledger_positions
from crossfade.verify.expected import Key, rows_of


def target_rows(
    conn: Any,
    relation: sql.Composable,
    shape: TableShape,
    key: tuple[str, ...],
    cols: list[str],
    keys: list[Key],
    bookkeeping: tuple[str, str] | None = None,
) -> tuple[dict[Key, tuple[Any, ...] | None], dict[Key, int]]:
    """The target rows of ``keys`` (:func:`rows_of`) and the source LSN of the newest change
    that wrote each (``_cf_pos``'s primary part; none for a row without one, or when the table
    has no ``_cf_pos`` column: sync did not write it), read in ONE snapshot of the target (its
    connection in autocommit). Read apart, sync could apply a change in between: a row deleted
    there would have no position, as if written before any snapshot, and the re-check would
    confirm a row in flight as a difference.

    ``bookkeeping`` (schema, target table), for a deduplicated target: a key's position is also
    the newest of the members of the group sync holds it in (:func:`group_positions`): a
    member's row removed by a newcomer merged with it (a change no snapshot of the legacy may
    have seen: added and deleted in between) is not a row nobody wrote."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        has = conn.execute(
            "SELECT 1 FROM pg_attribute WHERE attrelid = %s::regclass AND attname = %s "
            "AND NOT attisdropped",
            (relation.as_string(conn), POS_COLUMN),
        ).fetchone()
        if not has:
            return rows_of(conn, relation, shape, key, cols, keys), {}
        both = rows_of(conn, relation, shape, key, [*cols, POS_COLUMN], keys)
        groups = (
            group_positions(conn, bookkeeping[0], bookkeeping[1], [key_text(k) for k in keys])
            if bookkeeping is not None and keys
            else {}
        )
    rows = {k: None if r is None else r[:-1] for k, r in both.items()}
    pos = {k: int(r[-1]) >> SHIFT for k, r in both.items() if r is not None and r[-1] is not None}
    for k in keys:
        g = groups.get(key_text(k))
        if g is not None:
            pos[k] = max(pos.get(k, 0), g >> SHIFT)
    return rows, pos


def newest_writes(
    conn: Any, bookkeeping_schema: str, written: dict[Key, int], producers: dict[Key, set[Any]]
) -> dict[Key, int]:
    """``written`` (target row positions, :func:`target_rows`) raised to the newest position
    sync's ledger holds for the legacy rows that make each key (:attr:`MappedRun.producers`):
    a row the target lacks was also written, by the change that removed it."""
    out = dict(written)
    by_source: dict[str, set[str]] = defaultdict(set)
    for pairs in producers.values():
        for source, entry in pairs:
            by_source[source].add(entry)
    pos = {
        (source, e): int(p[0]) >> SHIFT
        for source, es in by_source.items()
        for e, p in ledger_positions(conn, bookkeeping_schema, source, sorted(es)).items()
    }
    for k, pairs in producers.items():
        out[k] = max([out.get(k, 0), *(pos.get(pair, 0) for pair in pairs)])
    return out
