"""Checks on the legacy database before anything is written.

Each failure is a :class:`PreflightError` whose message names the problem and the fix.
"""

from __future__ import annotations

import psycopg

from crossfade.config import Settings
from crossfade.db import connect
from crossfade.errors import PreflightError

FENCE_DDL = """
CREATE SCHEMA IF NOT EXISTS crossfade;
CREATE TABLE IF NOT EXISTS crossfade.fence (
    id bigserial PRIMARY KEY,
    token text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
"""

SIGNAL_DDL = """
CREATE SCHEMA IF NOT EXISTS crossfade;
CREATE TABLE IF NOT EXISTS crossfade.debezium_signal (
    id varchar(64) PRIMARY KEY,
    type varchar(32) NOT NULL,
    data text
);
"""
"""Debezium's signal table (its documented shape; ``data`` as text: a repair's key filter can be long)."""


def table_exists_and_pk(
    conn: psycopg.Connection, table: str, append_only: bool = False
) -> list[str]:
    """Return the primary-key columns of ``table``; raise if it is missing, or has no PK and is
    not configured append-only (then ``[]`` is returned)."""
    schema, name = table.split(".", 1)
    row = conn.execute(
        "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
        (schema, name),
    ).fetchone()
    if row is None:
        raise PreflightError(
            f"table {table} does not exist in the source database",
            "fix the name under `tables:` or create the table",
        )
    pk = conn.execute(
        "SELECT a.attname FROM pg_index i "
        "JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
        "WHERE i.indrelid = %s AND i.indisprimary ORDER BY k.ord",
        (row[0],),
    ).fetchall()
    if not pk and not append_only:
        raise PreflightError(
            f"table {table} has no primary key, so its changes cannot be keyed and guarded",
            f"add a primary key to {table}, list it under sync.append_only_tables if it only "
            "ever receives INSERTs, or remove it from `tables:`",
        )
    return [r[0] for r in pk]


def _types_debezium_reads(conn: psycopg.Connection, tables: list[str]) -> None:
    """Refuse columns whose type's schema or name holds a dot: Debezium's type registry cannot
    resolve such a name and leaves the column out of every change event (seen with
    ``"odd.schema"."mood.v2"``), which sync would then stop on mid-stream."""
    rows = conn.execute(
        "SELECT n.nspname || '.' || c.relname, a.attname, format_type(a.atttypid, a.atttypmod) "
        "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_type t ON t.oid = a.atttypid "
        "JOIN pg_namespace tn ON tn.oid = t.typnamespace "
        "LEFT JOIN pg_type et ON et.oid = t.typelem AND t.typcategory = 'A' "
        "LEFT JOIN pg_namespace etn ON etn.oid = et.typnamespace "
        "WHERE n.nspname || '.' || c.relname = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped "
        "AND (tn.nspname || t.typname || coalesce(etn.nspname || et.typname, '')) LIKE '%%.%%'",
        (list(tables),),
    ).fetchall()
    if rows:
        table, column, type_ = rows[0]
        raise PreflightError(
            f"column {table}.{column} has type {type_}, whose schema or name holds a dot: Debezium "
            "cannot read it and would leave the column out of every change event",
            "rename the type or its schema (ALTER TYPE ... RENAME TO / SET SCHEMA), or leave the "
            "table out of `tables:`",
        )


def check_source(settings: Settings) -> dict[str, list[str]]:
    """Run every source check; return each table's primary-key columns.

    Checks: the DSN connects; ``wal_level`` is ``logical``; the role may replicate; every table
    exists and has a primary key. With ``capture.fence_table`` the fence table is created.
    """
    with connect(settings.source, "source") as conn:
        wal_level = conn.execute("SHOW wal_level").fetchone()
        if not wal_level or wal_level[0] != "logical":
            raise PreflightError(
                f"the source database has wal_level={wal_level[0] if wal_level else '?'}, Debezium needs logical",
                "set wal_level = logical in postgresql.conf and restart PostgreSQL",
            )
        role = conn.execute(
            "SELECT rolsuper, rolreplication FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        if role is None or not (role[0] or role[1]):
            raise PreflightError(
                "the source database user has no REPLICATION privilege",
                "ALTER ROLE <user> WITH REPLICATION (or use a role that has it)",
            )
        pks = {
            t: table_exists_and_pk(conn, t, t in settings.sync.append_only_tables)
            for t in settings.tables
        }
        _types_debezium_reads(conn, settings.tables)
        for enabled, ddl, table, setting in (
            (settings.capture.fence_table, FENCE_DDL, "crossfade.fence", "capture.fence_table"),
            (
                settings.capture.signal_table,
                SIGNAL_DDL,
                "crossfade.debezium_signal",
                "capture.signal_table",
            ),
        ):
            if not enabled:
                continue
            try:
                conn.execute(ddl)
            except psycopg.Error as exc:
                raise PreflightError(
                    f"cannot create {table} in the source database ({exc.diag.message_primary or exc})",
                    f"grant CREATE on the database to the capture user, or set {setting}: false",
                ) from None
        return pks
