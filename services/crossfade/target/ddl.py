"""Target tables for identity-mapped source tables, read from the source catalog.

A missing target table is created with the source's column types (``format_type``), NOT NULL
flags, primary key, defaults, sequences (with their positions), identity columns and CHECK
constraints (:mod:`crossfade.target.definition`: secondary indexes, UNIQUE constraints and
foreign keys follow after the load), and recorded as crossfade's in the bookkeeping schema's
``meta`` (``created_table:<schema.table>``). Enum types are created (and extended with new labels) in the target;
domains become their base type. Every target table gets ``_cf_pos numeric``: the source position
(:func:`crossfade.events.model.position`) of the change that last wrote the row (DESIGN
decision 2).
"""

from __future__ import annotations

import logging

import psycopg
from psycopg import sql

from crossfade.catalog import HASH_COLUMN, POS_COLUMN, TableShape, read_shape
from crossfade.errors import SchemaMismatch
from crossfade.target.definition import (
    TableDefinition,
    after_create,
    column_clause,
    read_definition,
    sequences_before,
)

log = logging.getLogger(__name__)

CREATED_KEY = "created_table:"
"""Key prefix in ``<bookkeeping>.meta`` of the target tables crossfade created."""


def _enum_labels(conn: psycopg.Connection, enum: tuple[str, str]) -> list[str] | None:
    """The enum's labels in order, or None when the type does not exist."""
    rows = conn.execute(
        "SELECT e.enumlabel FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
        "LEFT JOIN pg_enum e ON e.enumtypid = t.oid WHERE n.nspname = %s AND t.typname = %s "
        "ORDER BY e.enumsortorder",
        enum,
    ).fetchall()
    if not rows:
        return None
    return [r[0] for r in rows if r[0] is not None]


def sync_enum(
    source: psycopg.Connection, target: psycopg.Connection, enum: tuple[str, str]
) -> bool:
    """Create the enum (``(schema, name)``) in the target, or add the labels the source has
    gained since. Schema and name are quoted apart: either may hold a dot.

    Returns True when the target changed. Must run outside the batch transaction: a label added
    with ``ALTER TYPE ... ADD VALUE`` cannot be used before its transaction commits.
    """
    labels = _enum_labels(source, enum) or []
    schema, _name = enum
    ident = sql.Identifier(*enum)
    target.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    have = _enum_labels(target, enum)
    if have is None:
        target.execute(
            sql.SQL("CREATE TYPE {} AS ENUM ({})").format(
                ident, sql.SQL(", ").join(sql.Literal(x) for x in labels)
            )
        )
        return True
    changed = False
    for label in labels:
        if label not in have:
            target.execute(
                sql.SQL("ALTER TYPE {} ADD VALUE IF NOT EXISTS {}").format(
                    ident, sql.Literal(label)
                )
            )
            log.warning(
                "enum %s.%s gained the label %r at the source: added it in the target",
                *enum,
                label,
            )
            changed = True
    return changed


def ensure_target_table(
    source: psycopg.Connection,
    target: psycopg.Connection,
    source_table: str,
    target_table: str,
    create: bool,
    bookkeeping: str | None = None,
) -> TableShape:
    """Make sure ``target_table`` exists and carries ``_cf_pos``; return its shape. A table
    created here is recorded in ``<bookkeeping>.meta`` when ``bookkeeping`` is given.

    Raises :class:`SchemaMismatch` when the table is missing and ``create`` is off, or when an
    existing target lacks the source's primary key. Serialised by an advisory lock: sync workers
    and capture's COPY load may create the same table at the same moment.
    """
    target.execute("SELECT pg_advisory_lock(hashtext('crossfade.target_ddl'))")
    try:
        return _ensure_target_table(source, target, source_table, target_table, create, bookkeeping)
    finally:
        target.execute("SELECT pg_advisory_unlock(hashtext('crossfade.target_ddl'))")


def _ensure_target_table(
    source: psycopg.Connection,
    target: psycopg.Connection,
    source_table: str,
    target_table: str,
    create: bool,
    bookkeeping: str | None = None,
) -> TableShape:
    src = read_shape(source, source_table)
    if src is None:
        raise SchemaMismatch(
            f"source table {source_table} does not exist", "fix `tables:` in the config"
        )
    shape = read_shape(target, target_table)
    if shape is None:
        if not create:
            raise SchemaMismatch(
                f"target table {target_table} does not exist",
                "create it, or set sync.create_tables: true to create it from the source",
            )
        for col in src.columns:
            if col.enum:
                sync_enum(source, target, col.enum)
        try:
            _create_table(source, target, source_table, target_table, src, bookkeeping)
        except psycopg.errors.ProgrammingError as exc:
            # a default or CHECK naming a function or type the new database lacks: the table
            # is created without legacy's extras, and the target_schema gate names them
            first = str(exc).strip().splitlines()
            log.warning(
                "target table %s cannot carry legacy's definition (%s): created with its columns "
                "and primary key only; `crossfade target-schema` lists what it lacks",
                target_table,
                first[0] if first else type(exc).__name__,
            )
            _create_table(source, target, source_table, target_table, src, bookkeeping, full=False)
    elif not _has_column(target, target_table, POS_COLUMN):
        # only when missing: ADD COLUMN IF NOT EXISTS takes its ACCESS EXCLUSIVE lock before it
        # looks, so a sync starting beside the COPY load waited for the table's whole COPY (and
        # the load's next chunks queued behind that wait), joining its group only after the load
        schema, name = target_table.split(".", 1)
        target.execute(
            sql.SQL("ALTER TABLE {}.{} ADD COLUMN IF NOT EXISTS {} numeric").format(
                sql.Identifier(schema), sql.Identifier(name), sql.Identifier(POS_COLUMN)
            )
        )
    shape = read_shape(target, target_table)
    assert shape is not None
    if not shape.pk and src.pk:
        raise SchemaMismatch(
            f"target table {target_table} has no primary key", f"add the primary key {src.pk} to it"
        )
    return shape


def _has_column(conn: psycopg.Connection, table: str, column: str) -> bool:
    """Whether ``table`` has ``column``, from the catalog alone (no lock on the table)."""
    schema, name = table.split(".", 1)
    return (
        conn.execute(
            "SELECT 1 FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s AND a.attname = %s AND NOT a.attisdropped",
            (schema, name, column),
        ).fetchone()
        is not None
    )


def _create_table(
    source: psycopg.Connection,
    target: psycopg.Connection,
    source_table: str,
    target_table: str,
    src: TableShape,
    bookkeeping: str | None,
    full: bool = True,
) -> None:
    """CREATE TABLE with legacy's definition (see the module docstring), in one transaction;
    ``full`` off: the column types, NOT NULL and the primary key only."""
    definition = read_definition(source, source_table)
    assert definition is not None
    if not full:
        definition = TableDefinition(
            definition.table, constraints=tuple(definition.constraint_kinds("p"))
        )
    pk = definition.constraint_kinds("p")
    schema, name = target_table.split(".", 1)
    with target.transaction():
        target.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        for stmt in sequences_before(definition):
            target.execute(stmt)
        cols = [
            sql.SQL("{} {}{}{}").format(
                sql.Identifier(c.name),
                sql.SQL(c.type_sql),
                column_clause(definition, c.name),
                sql.SQL(" NOT NULL" if c.not_null else ""),
            )
            for c in src.columns
        ]
        cols.append(sql.SQL("{} numeric").format(sql.Identifier(POS_COLUMN)))
        if src.pk:
            cols.append(
                sql.SQL("{}PRIMARY KEY ({})").format(
                    sql.SQL("CONSTRAINT {} ").format(sql.Identifier(pk[0].name))
                    if pk
                    else sql.SQL(""),
                    sql.SQL(", ").join(map(sql.Identifier, src.pk)),
                )
            )
        else:  # append-only: a row is its source position plus its content
            cols.append(sql.SQL("{} text NOT NULL").format(sql.Identifier(HASH_COLUMN)))
            cols.append(
                sql.SQL("UNIQUE ({}, {})").format(
                    sql.Identifier(POS_COLUMN), sql.Identifier(HASH_COLUMN)
                )
            )
        target.execute(
            sql.SQL("CREATE TABLE {}.{} ({})").format(
                sql.Identifier(schema), sql.Identifier(name), sql.SQL(", ").join(cols)
            )
        )
        for stmt in after_create(definition, target_table):
            target.execute(stmt)
        if bookkeeping is not None:
            target.execute(
                sql.SQL(
                    "INSERT INTO {}.meta (key, value) VALUES (%s, now()::text) "
                    "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
                ).format(sql.Identifier(bookkeeping)),
                (f"{CREATED_KEY}{target_table}",),
            )
    log.info(
        "created target table %s from %s%s",
        target_table,
        source_table,
        " (defaults, sequences, identity, CHECK constraints and primary key as in legacy; "
        "indexes, UNIQUE constraints and foreign keys follow after the load)"
        if full
        else "",
    )


def add_column_from_source(
    source: psycopg.Connection,
    target: psycopg.Connection,
    source_table: str,
    target_table: str,
    column: str,
) -> str | None:
    """ADD COLUMN mid-stream: give the target the source column's type (nullable).

    Returns the value (as text) the rows that existed before ADD COLUMN hold, None for NULL."""
    src = read_shape(source, source_table)
    if src is None:
        raise SchemaMismatch(f"source table {source_table} disappeared")
    try:
        col = src.column(column)
    except KeyError:
        raise SchemaMismatch(
            f"a change event of {source_table} has column {column!r} the source table no longer has",
            "the column was renamed or dropped again; map it explicitly in the config",
        ) from None
    if col.enum:
        sync_enum(source, target, col.enum)
    schema, name = target_table.split(".", 1)
    # Rows that existed before ADD COLUMN ... DEFAULT hold the default without any change event
    # saying so: PostgreSQL keeps it as the column's "missing value". Give the target the same.
    sschema, sname = source_table.split(".", 1)
    row = source.execute(
        "SELECT a.atthasmissing, (a.attmissingval::text::text[])[1], d.adbin IS NOT NULL "
        "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        "WHERE n.nspname = %s AND c.relname = %s AND a.attname = %s",
        (sschema, sname, col.name),
    ).fetchone()
    has_missing, missing, has_default = row if row else (False, None, False)
    ident = (sql.Identifier(schema), sql.Identifier(name), sql.Identifier(col.name))
    if has_missing and missing is not None:
        target.execute(
            sql.SQL("ALTER TABLE {}.{} ADD COLUMN IF NOT EXISTS {} {} DEFAULT {}").format(
                *ident,
                sql.SQL(col.type_sql),
                sql.SQL("{}::{}").format(sql.Literal(missing), sql.SQL(col.type_sql)),
            )
        )
        # the value stays in the rows that existed; sync writes every later value explicitly
        target.execute(sql.SQL("ALTER TABLE {}.{} ALTER COLUMN {} DROP DEFAULT").format(*ident))
    else:
        target.execute(
            sql.SQL("ALTER TABLE {}.{} ADD COLUMN IF NOT EXISTS {} {}").format(
                *ident, sql.SQL(col.type_sql)
            )
        )
        if has_default:
            log.warning(
                "column %s.%s has a default the source evaluated per row (volatile) or set after adding it: rows "
                "that existed before may differ in it; check with `crossfade verify --table %s` (--repair fixes)",
                source_table,
                col.name,
                source_table,
            )
    log.warning(
        "added column %s.%s (%s) to the target, as in the source",
        target_table,
        col.name,
        col.type_sql,
    )
    return missing if has_missing else None
