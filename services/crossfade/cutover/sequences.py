"""Sequences at the flip: the first key the application draws after it must not collide.

Rows crossfade copied carry the keys legacy drew; a sequence in the new database knows nothing of
them. Before the flip (the cutover's ``sequences`` step) every sequence feeding a column of a
table crossfade writes (a default's ``nextval``, ``serial``/``bigserial``, identity; read from
the catalog: :func:`crossfade.target.definition.read_definition`) is moved to

    max(largest value in the column, the other side's sequence position) + ``cutover.sequence_gap``

when it stands below that (a sequence is never moved back). The other side's position counts
for tables of the same name and column (identity-mapped): keys legacy drew for rows deleted
since must not come back either. A descending sequence is moved below the smallest value the
same way. On fall-back (``crossfade fallback sequences``) the same runs on legacy, for the tables
the reverse sync writes, against the new database's positions.

Every move is returned with the old and the new value (the caller records them in the audit
log); a dry run returns them without setting anything.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from crossfade.config import Settings
from crossfade.db import connect
from crossfade.target.definition import Sequence, read_definition
from crossfade.who import operator

_INTEGER_TYPES = ("smallint", "integer", "bigint")


@dataclass
class SequenceMove:
    sequence: str
    table: str
    column: str
    current: int | None
    """The last value it handed out (None: never used)."""
    largest: int | None
    """The largest value in the column (the smallest for a descending sequence)."""
    other_side: int | None
    """The other database's sequence for the same table and column (its last value)."""
    new: int | None
    """The value set (``setval(seq, new, true)``: the next one drawn is past it); None: left."""
    note: str = ""

    def line(self) -> str:
        where = f"{self.sequence} ({self.table}.{self.column})"
        if self.new is None:
            return f"{where}: left at {self.current} ({self.note})"
        return (
            f"{where}: {self.current} -> {self.new} (largest value {self.largest}"
            + (f", other side at {self.other_side}" if self.other_side is not None else "")
            + ")"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "sequence": self.sequence,
            "table": self.table,
            "column": self.column,
            "current": self.current,
            "largest": self.largest,
            "other_side": self.other_side,
            "new": self.new,
            "note": self.note,
        }


def _extreme(conn: psycopg.Connection, table: str, column: str, down: bool) -> int | None:
    schema, name = table.split(".", 1)
    q = sql.SQL("SELECT {}({}) FROM {}").format(
        sql.SQL("min" if down else "max"), sql.Identifier(column), sql.Identifier(schema, name)
    )
    row = conn.execute(q).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def _column_type(conn: psycopg.Connection, table: str, column: str) -> str | None:
    schema, name = table.split(".", 1)
    row = conn.execute(
        "SELECT format_type(atttypid, NULL) FROM pg_attribute WHERE attrelid = to_regclass(%s) "
        "AND attname = %s",
        (sql.Identifier(schema, name).as_string(conn), column),
    ).fetchone()
    return row[0] if row else None


def plan_move(
    conn: psycopg.Connection, seq: Sequence, table: str, other: int | None, gap: int
) -> SequenceMove:
    """Where ``seq`` must go (see the module docstring); reads only."""
    down = seq.increment < 0
    current = seq.last_value if seq.is_called else None
    move = SequenceMove(seq.qualified, table, seq.column, current, None, other, None)
    if seq.last_value is None:
        move.note = "its position cannot be read: grant SELECT on it"
        return move
    if _column_type(conn, table, seq.column) not in _INTEGER_TYPES:
        move.note = "the column is not an integer: its values are not compared"
        values = [v for v in (other,) if v is not None]
    else:
        move.largest = _extreme(conn, table, seq.column, down)
        values = [v for v in (move.largest, other) if v is not None]
    move.new = target_value(seq, values, gap)
    if move.new is None:
        move.note = move.note or ("no value to pass" if not values else "already past every value")
    return move


def target_value(seq: Sequence, values: list[int], gap: int) -> int | None:
    """Where ``seq`` must be set to pass every one of ``values`` by ``gap`` (the smallest, less
    ``gap``, for a descending one), kept within its bounds; None when it already stands there or
    there is nothing to pass. Pure."""
    if not values or seq.last_value is None:
        return None
    down = seq.increment < 0
    want = min(values) - gap if down else max(values) + gap
    want = max(seq.min, min(seq.max, want))
    # the value it last handed out (before its first nextval: one step before its start)
    stands = seq.last_value if seq.is_called else seq.last_value - seq.increment
    if (stands <= want) if down else (stands >= want):
        return None
    return want


def plan(
    conn: psycopg.Connection,
    tables: list[str],
    gap: int,
    other: psycopg.Connection | None = None,
    other_tables: dict[str, str] | None = None,
) -> list[SequenceMove]:
    """The moves for every sequence feeding a column of ``tables`` on ``conn``. ``other``: the
    other database; ``other_tables`` maps a table here to its same-shaped counterpart there
    (identity-mapped), whose sequence for the same column sets a floor."""
    out: list[SequenceMove] = []
    for table in tables:
        d = read_definition(conn, table)
        if d is None:
            continue
        floors: dict[str, int] = {}
        there = (other_tables or {}).get(table)
        if other is not None and there is not None:
            od = read_definition(other, there)
            for s in od.sequences if od is not None else ():
                if s.last_value is not None and s.is_called:
                    floors[s.column] = s.last_value
        for seq in d.sequences:
            out.append(plan_move(conn, seq, table, floors.get(seq.column), gap))
    return out


def apply(conn: psycopg.Connection, moves: list[SequenceMove]) -> None:
    """``setval`` every planned move. Runs before the flip: nothing else draws from them then."""
    for m in moves:
        if m.new is not None:
            schema, name = m.sequence.split(".", 1)
            conn.execute(
                "SELECT setval(%s::regclass, %s, true)",
                (sql.Identifier(schema, name).as_string(conn), m.new),
            )


def describe(moves: list[SequenceMove], dry_run: bool) -> str:
    """One line for the audit log and the cutover's output."""
    moved = [m for m in moves if m.new is not None]
    verb = "would move" if dry_run else "moved"
    if not moves:
        return "no sequence feeds a column of the migrated tables"
    head = f"{verb} {len(moved)} of {len(moves)} sequence(s)"
    return head + ": " + "; ".join(m.line() for m in moves)


def fallback(settings: Settings, *, dry_run: bool = False) -> list[SequenceMove]:
    """``crossfade fallback sequences``: the legacy side's sequences of every table that falls
    back, moved past the values the reverse sync wrote (and, for identity-mapped tables, past the
    new database's own positions). Each move is audited in the new database's audit log (gate
    ``fallback_sequence``), under one run id."""
    from crossfade.mapping.inverse import plan as fallback_plan
    from crossfade.target.store import AuditLog

    p = fallback_plan(settings)
    same = {i.legacy: i.new for i in p.inverses if i.identity}
    with (
        connect(settings.source, "source") as legacy,
        connect(settings.target, "target") as new,
    ):
        moves = plan(
            legacy, [i.legacy for i in p.inverses], settings.cutover.sequence_gap, new, same
        )
        if not dry_run:
            apply(legacy, moves)
    with AuditLog(settings, uuid.uuid4().hex[:12], operator(), dry_run) as audit:
        for m in moves:
            audit.write("fallback_sequence", True, m.line(), 0.0)
        audit.write("fallback_sequences", True, describe(moves, dry_run), 0.0)
    return moves
