"""The new database's sessions as PostgreSQL reports them (``pg_stat_activity``): who holds the
lock another session waits for (no bookkeeping table; here so every query sync runs on the new
database has one owner)."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg


@dataclass(frozen=True, slots=True)
class LockHolder:
    """A session blocking another one's lock request (``pg_blocking_pids``)."""

    pid: int
    state: str | None
    """``idle in transaction`` for a client that stopped between two statements."""
    xact_age_s: float | None
    """Seconds since its transaction began."""
    application: str
    query: str
    """Its last statement (the first 160 characters)."""

    def describe(self) -> str:
        age = f"{self.xact_age_s:.0f} s" if self.xact_age_s is not None else "no"
        app = f", {self.application}" if self.application else ""
        return (
            f"pid {self.pid} ({self.state or 'unknown state'}, transaction {age} old{app}, "
            f"last statement: {self.query or '-'})"
        )


def lock_holders(conn: psycopg.Connection, pid: int) -> list[LockHolder]:
    """The sessions blocking session ``pid`` now (empty when it does not wait for a lock)."""
    rows = conn.execute(
        "SELECT b.pid, b.state, extract(epoch FROM clock_timestamp() - b.xact_start)::float8, "
        "coalesce(b.application_name, ''), left(regexp_replace(coalesce(b.query, ''), '\\s+', ' ', 'g'), 160) "
        "FROM unnest(pg_blocking_pids(%s)) AS bp(pid) JOIN pg_stat_activity b ON b.pid = bp.pid "
        "ORDER BY b.xact_start NULLS LAST",
        (pid,),
    ).fetchall()
    return [
        LockHolder(int(p), st, float(age) if age is not None else None, app, q)
        for p, st, age, app, q in rows
    ]
