"""Checks on the legacy database before anything is written.

Each failure is a :class:`PreflightError` whose message names the problem and the fix.
"""

from __future__ import annotations

import logging

import psycopg

from crossfade.capture.connector import FENCE_TABLE, SIGNAL_TABLE
from crossfade.capture.source_prep import FENCE_DDL, SIGNAL_DDL, Missing, missing, wal_headroom
from crossfade.config import Settings
from crossfade.db import connect
from crossfade.errors import PreflightError

log = logging.getLogger(__name__)


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


def privilege_error(problems: list[Missing], user: str) -> PreflightError:
    """One error naming every missing privilege or object, one line each with its fix."""
    lines = "".join(f"\n  - {p.line()}" for p in problems)
    return PreflightError(
        f"the source database role {user} lacks what capture needs "
        f"({', '.join(p.short for p in problems)}); run each fix below as a superuser or the "
        "tables' owner, or the whole least-privilege setup `crossfade prepare-source -c FILE "
        f"--print-sql` prints{lines}"
    )


def check_source(settings: Settings, *, create: bool = True) -> dict[str, list[str]]:
    """Run every source check; return each table's primary-key columns.

    Checks: the DSN connects; ``wal_level`` is ``logical``; every table exists and has a primary
    key; every privilege and object capture needs (:func:`crossfade.capture.source_prep.missing`:
    all of them in one error, each with the SQL that fixes it). With ``create`` (capture's start)
    the missing fence and signal tables are then created.
    """
    with connect(settings.source, "source") as conn:
        wal_level = conn.execute("SHOW wal_level").fetchone()
        if not wal_level or wal_level[0] != "logical":
            raise PreflightError(
                f"the source database has wal_level={wal_level[0] if wal_level else '?'}, Debezium needs logical",
                "set wal_level = logical in postgresql.conf and restart PostgreSQL",
            )
        pks = {
            t: table_exists_and_pk(conn, t, t in settings.sync.append_only_tables)
            for t in settings.tables
        }
        _types_debezium_reads(conn, settings.tables)
        problems = missing(conn, settings)
        if problems:
            user = conn.execute("SELECT current_user").fetchone()
            raise privilege_error(problems, str(user[0]) if user else "?")
        if create:
            create_own_tables(conn, settings)
            # how long capture may stop: for the coordinator, before the slot starts holding WAL
            log.info("WAL headroom: %s", wal_headroom(conn, settings.capture.slot_name).describe())
        return pks


def create_own_tables(conn: psycopg.Connection, settings: Settings) -> None:
    """Create the fence and signal tables that do not exist yet (only those: ``CREATE ... IF NOT
    EXISTS`` checks the CREATE privilege even when the table is there, and a DBA may have made
    them for a role without it)."""
    for enabled, ddl, table, setting in (
        (settings.capture.fence_table, FENCE_DDL, FENCE_TABLE, "capture.fence_table"),
        (settings.capture.signal_table, SIGNAL_DDL, SIGNAL_TABLE, "capture.signal_table"),
    ):
        if not enabled:
            continue
        schema, name = table.split(".", 1)
        if conn.execute(
            "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s",
            (schema, name),
        ).fetchone():
            continue
        have_schema = conn.execute(
            "SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)
        ).fetchone()
        try:
            for stmt in (s for s in ddl.split(";") if s.strip()):
                # CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when it exists
                if not (have_schema and stmt.strip().startswith("CREATE SCHEMA")):
                    conn.execute(stmt)  # our own constant DDL
        except psycopg.Error as exc:
            raise PreflightError(
                f"cannot create {table} in the source database ({exc.diag.message_primary or exc})",
                f"grant CREATE on the database to the capture user, or set {setting}: false",
            ) from None
