"""``<bookkeeping>.control``: whether an operator paused capture or sync (``crossfade pause``).

One row per component (``capture``, ``sync``): paused or not, who set it, when, and why. Every
process reads it where it already reports (capture and the sync workers at heartbeat time), the
console, ``status`` and the cutover gate read it on demand: the state lives with the data, so
every worker and every reader sees the same one, and it survives restarts (a worker started
while sync is paused starts paused).

Its DDL is with every other bookkeeping table in :mod:`.schema`; ``crossfade pause`` creates the
schema if it is missing, and a reader that finds no table reads "nothing paused".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from crossfade.target.store.schema import ensure_schema, has_table

COMPONENTS = ("capture", "sync")


@dataclass(frozen=True)
class Control:
    """One component's state (not paused when never set)."""

    component: str
    paused: bool = False
    by: str | None = None
    reason: str | None = None
    changed_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "paused": self.paused,
            "by": self.by,
            "reason": self.reason,
            "changed_at": self.changed_at.isoformat() if self.changed_at else None,
        }

    def line(self) -> str:
        """``sync PAUSED by alice at 2026-12-04 08:40 UTC (maintenance)`` / ``sync runs``."""
        if not self.paused:
            return f"{self.component} not paused"
        at = f" at {self.changed_at:%Y-%m-%d %H:%M %Z}" if self.changed_at else ""
        why = f" ({self.reason})" if self.reason else ""
        return f"{self.component} PAUSED by {self.by}{at}{why}"


def set_paused(
    conn: psycopg.Connection,
    schema: str,
    components: list[str],
    paused: bool,
    by: str,
    reason: str | None,
) -> list[Control]:
    """Record ``paused`` for ``components`` (creating the table if needed); the new states."""
    ensure_schema(conn, schema)
    with conn.transaction():
        for c in components:
            conn.execute(
                sql.SQL(
                    "INSERT INTO {}.control (component, paused, by_whom, reason) "
                    "VALUES (%s, %s, %s, %s) ON CONFLICT (component) DO UPDATE SET "
                    "paused = EXCLUDED.paused, by_whom = EXCLUDED.by_whom, "
                    "reason = EXCLUDED.reason, changed_at = now()"
                ).format(sql.Identifier(schema)),
                (c, paused, by, reason),
            )
    states = read_control(conn, schema)
    return [states[c] for c in components]


def read_control(conn: psycopg.Connection, schema: str) -> dict[str, Control]:
    """Every component's state; all not paused when the table does not exist (yet). Raises
    psycopg errors of the connection (callers at heartbeat time keep their last state)."""
    out = {c: Control(c) for c in COMPONENTS}
    if not has_table(conn, schema, "control"):
        return out
    for comp, paused, by, reason, at in conn.execute(
        sql.SQL("SELECT component, paused, by_whom, reason, changed_at FROM {}.control").format(
            sql.Identifier(schema)
        )
    ).fetchall():
        out[comp] = Control(comp, bool(paused), by, reason, at)
    return out


def paused_components(conn: psycopg.Connection, schema: str) -> list[Control]:
    """The components paused now (none when the table does not exist)."""
    return [c for c in read_control(conn, schema).values() if c.paused]


def pause_unpaused(
    conn: psycopg.Connection, schema: str, components: list[str], by: str, reason: str
) -> list[str]:
    """Pause those of ``components`` nobody paused (an operator's pause is left as it is, his
    name and reason with it); the ones this paused. One statement per component: a pause set
    meanwhile by someone else is never overwritten."""
    ensure_schema(conn, schema)
    done = []
    with conn.transaction():
        for c in components:
            row = conn.execute(
                sql.SQL(
                    "INSERT INTO {0}.control AS c (component, paused, by_whom, reason) "
                    "VALUES (%s, true, %s, %s) ON CONFLICT (component) DO UPDATE SET "
                    "paused = true, by_whom = EXCLUDED.by_whom, reason = EXCLUDED.reason, "
                    "changed_at = now() WHERE NOT c.paused RETURNING component"
                ).format(sql.Identifier(schema)),
                (c, by, reason),
            ).fetchone()
            if row is not None:
                done.append(c)
    return done


def resume_own(
    conn: psycopg.Connection, schema: str, components: list[str], by: str, reason: str
) -> list[str]:
    """Resume those of ``components`` still paused with ``reason`` (the pause
    :func:`pause_unpaused` set; one an operator set or took over since stays); the ones
    resumed."""
    with conn.transaction():
        rows = conn.execute(
            sql.SQL(
                "UPDATE {}.control SET paused = false, by_whom = %s, changed_at = now() "
                "WHERE component = ANY(%s) AND paused AND reason = %s RETURNING component"
            ).format(sql.Identifier(schema)),
            (by, list(components), reason),
        ).fetchall()
    return sorted(r[0] for r in rows)
