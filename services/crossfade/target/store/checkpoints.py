"""Checkpoints (``<bookkeeping>.checkpoints``): ``crossfade checkpoint create`` records per
partition the stored offsets, the legacy database's WAL position and the time (what ``rewind``
returns to)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from crossfade.events.model import parse_lsn
from crossfade.target.store.schema import has_table


@dataclass
class Checkpoint:
    name: str
    created_at: datetime
    group_id: str
    epoch: str | None
    source_lsn: str | None
    """The legacy database's WAL position when it was taken, as PostgreSQL writes it (X/Y)."""
    offsets: list[dict[str, Any]]
    """Per partition: ``topic``, ``partition``, ``next_offset``."""
    created_by: str | None = None
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """As ``--json`` prints it: the legacy WAL position as a number (text output shows
        ``source_lsn``, PostgreSQL's ``X/Y``)."""
        return {
            "name": self.name,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "group_id": self.group_id,
            "epoch": self.epoch,
            "source_lsn": parse_lsn(self.source_lsn),
            "offsets": self.offsets,
            "note": self.note,
        }


_COLS = "name, created_at, group_id, epoch, source_lsn::text, offsets, created_by, note"


def _row(r: tuple[Any, ...]) -> Checkpoint:
    return Checkpoint(r[0], r[1], r[2], r[3], r[4], list(r[5]), r[6], r[7])


def save_checkpoint(
    conn: psycopg.Connection,
    schema: str,
    name: str,
    group_id: str,
    epoch: str | None,
    source_lsn: str | None,
    offsets: list[dict[str, Any]],
    created_by: str | None,
    note: str | None,
) -> Checkpoint | None:
    """Record a checkpoint (the database sets ``created_at``); None when a checkpoint of that
    name exists already (nothing written)."""
    row = conn.execute(
        sql.SQL(
            "INSERT INTO {}.checkpoints (name, created_by, group_id, epoch, source_lsn, offsets, "
            "note) VALUES (%s,%s,%s,%s,%s::pg_lsn,%s,%s) ON CONFLICT (name) DO NOTHING "
            "RETURNING created_at"
        ).format(sql.Identifier(schema)),
        (name, created_by, group_id, epoch, source_lsn, Jsonb(offsets), note),
    ).fetchone()
    if row is None:
        return None
    return Checkpoint(name, row[0], group_id, epoch, source_lsn, offsets, created_by, note)


def read_checkpoints(
    conn: psycopg.Connection, schema: str, group_id: str, *, newest: int | None = None
) -> list[Checkpoint]:
    """The group's checkpoints, oldest first; ``newest``: only that many, newest first. Empty
    when no checkpoint was ever taken (no table)."""
    if not has_table(conn, schema, "checkpoints"):
        return []
    order = " ORDER BY created_at" if newest is None else " ORDER BY created_at DESC LIMIT %s"
    params: tuple[Any, ...] = (group_id,) if newest is None else (group_id, newest)
    rows = conn.execute(
        sql.SQL("SELECT " + _COLS + " FROM {}.checkpoints WHERE group_id = %s" + order).format(
            sql.Identifier(schema)
        ),
        params,
    ).fetchall()
    return [_row(r) for r in rows]


def checkpoint_named(
    conn: psycopg.Connection, schema: str, group_id: str, name: str
) -> Checkpoint | None:
    """The group's checkpoint called ``name``, or None."""
    r = conn.execute(
        sql.SQL(
            "SELECT " + _COLS + " FROM {}.checkpoints WHERE name = %s AND group_id = %s"
        ).format(sql.Identifier(schema)),
        (name, group_id),
    ).fetchone()
    return _row(r) if r is not None else None


def checkpoint_at(
    conn: psycopg.Connection, schema: str, group_id: str, at: datetime
) -> Checkpoint | None:
    """The group's newest checkpoint taken at or before ``at``, or None."""
    r = conn.execute(
        sql.SQL(
            "SELECT " + _COLS + " FROM {}.checkpoints WHERE created_at <= %s AND group_id = %s "
            "ORDER BY created_at DESC LIMIT 1"
        ).format(sql.Identifier(schema)),
        (at, group_id),
    ).fetchone()
    return _row(r) if r is not None else None
