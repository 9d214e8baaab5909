"""The new database's sessions as PostgreSQL reports them (``pg_stat_activity``): who holds the
lock another session waits for, and ending one left idle in its transaction (no bookkeeping
table; here so every query sync runs on the new database has one owner)."""

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
    wait: str = ""
    """What it waits for itself (``Client:ClientRead``: for its client's next statement)."""
    state_age_s: float | None = None
    """Seconds in its present state (idle in its transaction: since its last statement ended)."""

    @property
    def idle_in_transaction(self) -> bool:
        return (self.state or "").startswith("idle in transaction")

    def describe(self) -> str:
        age = f"{self.xact_age_s:.0f} s" if self.xact_age_s is not None else "no"
        app = f", {self.application}" if self.application else ""
        wait = f", waiting for {self.wait}" if self.wait else ""
        return (
            f"pid {self.pid} ({self.state or 'unknown state'}, transaction {age} old{app}{wait}, "
            f"last statement: {self.query or '-'})"
        )


def lock_holders(conn: psycopg.Connection, pid: int) -> list[LockHolder]:
    """The sessions blocking session ``pid`` now (empty when it does not wait for a lock)."""
    rows = conn.execute(
        "SELECT b.pid, b.state, extract(epoch FROM clock_timestamp() - b.xact_start)::float8, "
        "coalesce(b.application_name, ''), "
        "left(regexp_replace(coalesce(b.query, ''), '\\s+', ' ', 'g'), 160), "
        "coalesce(b.wait_event_type || ':' || b.wait_event, ''), "
        "extract(epoch FROM clock_timestamp() - b.state_change)::float8 "
        "FROM unnest(pg_blocking_pids(%s)) AS bp(pid) JOIN pg_stat_activity b ON b.pid = bp.pid "
        "ORDER BY b.xact_start NULLS LAST",
        (pid,),
    ).fetchall()
    return [
        LockHolder(int(p), st, _f(age), app, q, w, _f(idle)) for p, st, age, app, q, w, idle in rows
    ]


def end_idle_in_transaction(conn: psycopg.Connection, pid: int, idle_s: float) -> bool:
    """End session ``pid`` (``pg_terminate_backend``) if it is still idle in its transaction and
    has been for ``idle_s`` seconds or more; whether it was. Raises when the user may not end it
    (another role's session, without ``pg_signal_backend``)."""
    row = conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = %s "
        "AND state LIKE 'idle in transaction%%' "
        "AND clock_timestamp() - state_change >= make_interval(secs => %s)",
        (pid, idle_s),
    ).fetchone()
    return bool(row and row[0])


def _f(v: object) -> float | None:
    return float(v) if v is not None else None  # type: ignore[arg-type]
