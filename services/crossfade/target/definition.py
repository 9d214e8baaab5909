"""The whole definition of a legacy table, read from its catalog, carried to the target table
crossfade creates for it, and compared with the target's (DESIGN decision 7).

:func:`read_definition` reads what an application relies on besides the column types:
column defaults (``pg_get_expr``), identity columns (``attidentity``), the sequences feeding
columns (owned by them, as ``serial``/``bigserial`` and identity make them, or named by a
default's ``nextval``) with their current position, CHECK, UNIQUE, EXCLUDE, primary key and
foreign key constraints (``pg_get_constraintdef``) and the secondary indexes
(``pg_get_indexdef``).

Two moments:

* **with the table** (:func:`creation_statements`, run by
  :func:`crossfade.target.ddl.ensure_target_table`): sequences (same name, options and
  position), defaults, identity, NOT NULL, CHECK constraints and the primary key. Sync writes
  every column explicitly, so none of these changes what it writes.
* **after the load** (:func:`deferred_statements`): secondary indexes, UNIQUE and EXCLUDE
  constraints and foreign keys between migrated tables. Building them after the rows are in is
  faster, and while sync applies changes they could refuse what is only a passing state of the
  target (a foreign key's child applied before its parent from another partition, two keys
  swapping a unique value across batches). The cutover creates the missing ones after its fence
  (``target_schema`` step), ``crossfade target-schema --apply`` earlier. A foreign key to a table
  crossfade does not migrate is skipped, with a message.

:func:`differences` compares a legacy definition with a target's; the ``target_schema`` gate
(:mod:`crossfade.cutover.gate_model`) reports them. A target table crossfade did not create (the
new system's own) is compared, never altered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

Statement = sql.SQL | sql.Composed
"""One statement, ready for ``Connection.execute``."""

CF_COLUMNS = ("_cf_pos", "_cf_hash")
"""crossfade's own columns: left out of every definition and comparison."""


@dataclass(frozen=True, slots=True)
class Sequence:
    """A sequence feeding a column."""

    schema: str
    name: str
    column: str
    owned: bool
    """Owned by the column (``serial``, ``bigserial``, ``OWNED BY``, identity)."""
    identity: bool
    type_sql: str
    start: int
    increment: int
    min: int
    max: int
    cache: int
    cycle: bool
    last_value: int | None
    """Its position (None: unreadable, the user may not SELECT it)."""
    is_called: bool

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    def options(self, with_type: bool = True) -> sql.Composable:
        """The options of ``CREATE SEQUENCE`` / ``GENERATED ... AS IDENTITY (...)`` (an
        identity's type is its column's)."""
        return sql.SQL(
            "{}INCREMENT BY {} MINVALUE {} MAXVALUE {} START WITH {} CACHE {} {}"
        ).format(
            sql.SQL(f"AS {self.type_sql} " if with_type else ""),
            sql.Literal(self.increment),
            sql.Literal(self.min),
            sql.Literal(self.max),
            sql.Literal(self.start),
            sql.Literal(self.cache),
            sql.SQL("CYCLE" if self.cycle else "NO CYCLE"),
        )


@dataclass(frozen=True, slots=True)
class Constraint:
    name: str
    kind: str
    """``p`` primary key, ``c`` check, ``u`` unique, ``x`` exclude, ``f`` foreign key."""
    definition: str
    """``pg_get_constraintdef``: ``CHECK ((qty > 0))``, ``FOREIGN KEY (a) REFERENCES t(id)``."""
    references: str | None = None
    """A foreign key's referenced table, schema.table."""


@dataclass(frozen=True, slots=True)
class Index:
    name: str
    definition: str
    """``pg_get_indexdef``: ``CREATE INDEX name ON schema.table USING btree (col)``."""

    @property
    def shape(self) -> str:
        """The definition without the index's name (names may differ in an existing target)."""
        return re.sub(r"^(CREATE (?:UNIQUE )?INDEX )\S+ ON ", r"\1ON ", self.definition)


@dataclass(frozen=True)
class TableDefinition:
    table: str
    defaults: dict[str, str] = field(default_factory=dict)
    identity: dict[str, str] = field(default_factory=dict)
    """Column -> ``a`` (ALWAYS) or ``d`` (BY DEFAULT)."""
    not_null: frozenset[str] = frozenset()
    sequences: tuple[Sequence, ...] = ()
    constraints: tuple[Constraint, ...] = ()
    indexes: tuple[Index, ...] = ()

    def constraint_kinds(self, kinds: str) -> list[Constraint]:
        return [c for c in self.constraints if c.kind in kinds]


_COLUMNS_SQL = """
SELECT a.attname, pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attnotnull
FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = %(t)s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
"""

_SEQUENCES_SQL = """
WITH feeding AS (
    SELECT d.objid AS seq, d.refobjsubid AS attnum, true AS owned, d.deptype = 'i' AS identity
    FROM pg_depend d
    WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
      AND d.refobjid = %(t)s AND d.refobjsubid > 0 AND d.deptype IN ('a', 'i')
    UNION ALL
    SELECT d.refobjid, ad.adnum, false, false
    FROM pg_attrdef ad
    JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid
         AND d.refclassid = 'pg_class'::regclass
    WHERE ad.adrelid = %(t)s
)
SELECT n.nspname, s.relname, a.attname, bool_or(f.owned), bool_or(f.identity),
       format_type(q.seqtypid, NULL), q.seqstart, q.seqincrement, q.seqmin, q.seqmax, q.seqcache,
       q.seqcycle
FROM feeding f
JOIN pg_class s ON s.oid = f.seq AND s.relkind = 'S'
JOIN pg_namespace n ON n.oid = s.relnamespace
JOIN pg_sequence q ON q.seqrelid = s.oid
JOIN pg_attribute a ON a.attrelid = %(t)s AND a.attnum = f.attnum
GROUP BY 1, 2, 3, 6, 7, 8, 9, 10, 11, 12 ORDER BY 3, 1, 2
"""

_CONSTRAINTS_SQL = """
SELECT con.conname, con.contype, pg_get_constraintdef(con.oid),
       CASE WHEN con.contype = 'f' THEN rn.nspname || '.' || r.relname END
FROM pg_constraint con
LEFT JOIN pg_class r ON r.oid = con.confrelid LEFT JOIN pg_namespace rn ON rn.oid = r.relnamespace
WHERE con.conrelid = %(t)s AND con.contype IN ('p', 'c', 'u', 'x', 'f')
ORDER BY con.contype, con.conname
"""

_INDEXES_SQL = """
SELECT ic.relname, pg_get_indexdef(i.indexrelid)
FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
WHERE i.indrelid = %(t)s AND NOT EXISTS (
    SELECT 1 FROM pg_constraint con
    WHERE con.conindid = i.indexrelid AND con.conrelid = i.indrelid AND con.contype IN ('p', 'u', 'x'))
ORDER BY ic.relname
"""


def _mentions_cf(text: str) -> bool:
    return any(re.search(rf"\b{c}\b", text) for c in CF_COLUMNS)


def sequence_position(conn: psycopg.Connection, schema: str, name: str) -> tuple[int | None, bool]:
    """``(last_value, is_called)`` of a sequence; ``(None, False)`` when the user may not read
    it (SELECT or USAGE on it)."""
    q = sql.SQL("SELECT last_value, is_called FROM {}").format(sql.Identifier(schema, name))
    try:
        with conn.transaction():
            row = conn.execute(q).fetchone()
    except psycopg.errors.InsufficientPrivilege:
        return None, False
    assert row is not None
    return int(row[0]), bool(row[1])


def read_definition(conn: psycopg.Connection, table: str) -> TableDefinition | None:
    """The definition of ``table`` (schema.table) beyond its column types, or None if it does
    not exist. crossfade's own columns, and constraints or indexes on them, are left out."""
    schema, name = table.split(".", 1)
    row = conn.execute(
        "SELECT to_regclass(%s)::oid", (sql.Identifier(schema, name).as_string(conn),)
    ).fetchone()
    if row is None or row[0] is None:
        return None
    t = {"t": row[0]}
    defaults: dict[str, str] = {}
    identity: dict[str, str] = {}
    not_null: set[str] = set()
    for col, default, ident, nn in conn.execute(_COLUMNS_SQL, t).fetchall():
        if col in CF_COLUMNS:
            continue
        if default is not None:
            defaults[col] = default
        if ident:
            identity[col] = ident
        if nn:
            not_null.add(col)
    seqs = []
    for r in conn.execute(_SEQUENCES_SQL, t).fetchall():
        last, called = sequence_position(conn, r[0], r[1])
        start, increment, lo, hi, cache = (int(x) for x in r[6:11])
        seqs.append(
            Sequence(
                r[0],
                r[1],
                r[2],
                bool(r[3]),
                bool(r[4]),
                r[5],
                start,
                increment,
                lo,
                hi,
                cache,
                bool(r[11]),
                last,
                called,
            )
        )
    cons = tuple(
        Constraint(r[0], r[1], r[2], r[3])
        for r in conn.execute(_CONSTRAINTS_SQL, t).fetchall()
        if not _mentions_cf(r[2])
    )
    idx = tuple(
        Index(r[0], r[1])
        for r in conn.execute(_INDEXES_SQL, t).fetchall()
        if not _mentions_cf(r[1])
    )
    return TableDefinition(table, defaults, identity, frozenset(not_null), tuple(seqs), cons, idx)


# -- creating ------------------------------------------------------------------------------------
def column_clause(d: TableDefinition, column: str) -> sql.Composable:
    """What follows a column's type in ``CREATE TABLE``: identity or default (not NOT NULL)."""
    ident = d.identity.get(column)
    if ident:
        seq = next((s for s in d.sequences if s.column == column and s.identity), None)
        kind = sql.SQL("ALWAYS" if ident == "a" else "BY DEFAULT")
        if seq is None:
            return sql.SQL(" GENERATED {} AS IDENTITY").format(kind)
        return sql.SQL(" GENERATED {} AS IDENTITY (SEQUENCE NAME {} {})").format(
            kind, sql.Identifier(seq.schema, seq.name), seq.options(with_type=False)
        )
    if column in d.defaults:
        return sql.SQL(" DEFAULT {}").format(sql.SQL(d.defaults[column]))
    return sql.SQL("")


def sequences_before(d: TableDefinition) -> list[Statement]:
    """The sequences the table's defaults name, created (if missing) before the table."""
    out: list[Statement] = []
    for s in d.sequences:
        if s.identity:
            continue
        out.append(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(s.schema)))
        out.append(
            sql.SQL("CREATE SEQUENCE IF NOT EXISTS {} {}").format(
                sql.Identifier(s.schema, s.name), s.options()
            )
        )
    return out


def after_create(d: TableDefinition, target_table: str) -> list[Statement]:
    """After ``CREATE TABLE``: the CHECK constraints, sequence ownership and every sequence's
    position as legacy had it when the table was created."""
    schema, name = target_table.split(".", 1)
    tbl = sql.Identifier(schema, name)
    out: list[Statement] = [
        sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
            tbl, sql.Identifier(c.name), sql.SQL(c.definition)
        )
        for c in d.constraint_kinds("c")
    ]
    for s in d.sequences:
        if s.owned and not s.identity:
            out.append(
                sql.SQL("ALTER SEQUENCE {} OWNED BY {}.{}").format(
                    sql.Identifier(s.schema, s.name), tbl, sql.Identifier(s.column)
                )
            )
        if s.last_value is not None:
            out.append(
                sql.SQL("SELECT setval({}::regclass, {}, {})").format(
                    sql.Literal(_regclass_text(s)),
                    sql.Literal(s.last_value),
                    sql.Literal(s.is_called),
                )
            )
    return out


def _regclass_text(s: Sequence) -> str:
    def q(x: str) -> str:
        return '"' + x.replace('"', '""') + '"'

    return f"{q(s.schema)}.{q(s.name)}"


@dataclass(frozen=True, slots=True)
class Deferred:
    """A missing object of a created table, and the statement creating it (None: skipped)."""

    table: str
    kind: str
    name: str
    statement: Statement | None
    note: str = ""


def deferred_statements(
    legacy: TableDefinition, target: TableDefinition, migrated: set[str]
) -> list[Deferred]:
    """What ``target`` lacks of legacy's secondary indexes, UNIQUE/EXCLUDE constraints and
    foreign keys, each with its statement; a foreign key to a table not in ``migrated`` is
    returned without one (skipped, with the reason)."""
    schema, name = target.table.split(".", 1)
    tbl = sql.Identifier(schema, name)
    have_idx = {i.shape for i in target.indexes}
    have_con = {(c.kind, c.definition) for c in target.constraints}
    out: list[Deferred] = []
    for i in legacy.indexes:
        if i.shape not in have_idx:
            out.append(Deferred(target.table, "index", i.name, sql.SQL(i.definition)))
    for c in legacy.constraint_kinds("uxf"):
        if (c.kind, c.definition) in have_con:
            continue
        kind = {"u": "unique", "x": "exclude", "f": "foreign key"}[c.kind]
        if c.kind == "f" and c.references not in migrated:
            out.append(
                Deferred(
                    target.table,
                    kind,
                    c.name,
                    None,
                    f"skipped: it references {c.references}, which crossfade does not migrate",
                )
            )
            continue
        out.append(
            Deferred(
                target.table,
                kind,
                c.name,
                sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                    tbl, sql.Identifier(c.name), sql.SQL(c.definition)
                ),
            )
        )
    return out


def differences(legacy: TableDefinition, target: TableDefinition, migrated: set[str]) -> list[str]:
    """Every way ``target`` differs from ``legacy``'s definition, one line each (empty: the
    same). Names of indexes and constraints may differ; their definitions may not. Foreign keys
    to tables not in ``migrated`` are not expected."""
    out: list[str] = []
    t = target.table
    for col in sorted(set(legacy.defaults) | set(target.defaults)):
        a, b = legacy.defaults.get(col), target.defaults.get(col)
        if a != b:
            out.append(f"{t}.{col}: default {b or 'none'} (legacy: {a or 'none'})")
    for col in sorted(set(legacy.identity) | set(target.identity)):
        a, b = legacy.identity.get(col), target.identity.get(col)
        if a != b:
            word = {"a": "ALWAYS", "d": "BY DEFAULT", None: "none"}
            out.append(f"{t}.{col}: identity {word[b]} (legacy: {word[a]})")
    for col in sorted(legacy.not_null - target.not_null):
        out.append(f"{t}.{col}: nullable (legacy: NOT NULL)")
    for col in sorted(target.not_null - legacy.not_null):
        out.append(f"{t}.{col}: NOT NULL (legacy: nullable)")
    have = {(c.kind, c.definition) for c in target.constraints}
    want = {(c.kind, c.definition) for c in legacy.constraints}
    kinds = {"p": "primary key", "c": "check", "u": "unique", "x": "exclude", "f": "foreign key"}
    for c in legacy.constraints:
        if (c.kind, c.definition) in have:
            continue
        if c.kind == "f" and c.references not in migrated:
            continue
        out.append(f"{t}: missing {kinds[c.kind]} {c.name} {c.definition}")
    for c in target.constraints:
        if (c.kind, c.definition) not in want:
            out.append(f"{t}: {kinds[c.kind]} {c.name} {c.definition} is not in legacy")
    have_idx = {i.shape for i in target.indexes}
    want_idx = {i.shape for i in legacy.indexes}
    for i in legacy.indexes:
        if i.shape not in have_idx:
            out.append(f"{t}: missing index {i.definition}")
    for i in target.indexes:
        if i.shape not in want_idx:
            out.append(f"{t}: index {i.definition} is not in legacy")
    return out
