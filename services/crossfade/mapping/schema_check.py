"""Startup validation of the mapping against the legacy and the target database catalogs.

:func:`load_mapper` reads the legacy primary keys, builds the :class:`~crossfade.mapping.engine.Mapper`
and checks it; every problem is one message naming the config path, the table and the column,
with a "did you mean" where a name is close to a real one. Errors stop the command
(:class:`~crossfade.errors.PreflightError`, every error in one line); warnings are printed.

Checked against the legacy database: every source table exists and has a primary key; every
column a mapping, filter or key reads exists; every target key is computable from the source
primary key alone (so a source delete can be applied). Against the target database (when
given): every target table exists and has a primary key or unique index on the mapping's key;
every mapped column exists; NOT NULL columns without a default are filled; the mapped value's
type fits the column (``cast:`` where it does not); referenced parents exist; several sources
writing one target cannot collide on the key. The target's shape also adds rules to the mapper
(:mod:`crossfade.mapping.target_fit`): a row leaving a NOT NULL column empty, or with a value
longer than its ``varchar(n)``/``char(n)`` column or too large for its ``numeric(p,s)``, is a dead
letter, not a failed batch or a cut.

Only catalog queries: nothing is written to either database.
"""

from __future__ import annotations

import datetime as dt
import decimal
import difflib
from dataclasses import dataclass, field
from typing import Any

import psycopg

from crossfade.catalog import TableShape, read_shape
from crossfade.config.mapping import MappingConfig
from crossfade.errors import PreflightError
from crossfade.mapping import literals
from crossfade.mapping.engine import CompiledTarget, Mapper
from crossfade.mapping.target_fit import require_target
from crossfade.mapping.transforms import OUTPUT_TYPES


@dataclass
class SchemaReport:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    source: dict[str, TableShape] = field(default_factory=dict)
    target: dict[str, TableShape] = field(default_factory=dict)

    def raise_for_errors(self) -> None:
        if self.errors:
            n = len(self.errors)
            raise PreflightError(
                f"the mapping does not fit the databases ({n} problem{'s' if n > 1 else ''}): "
                + "; ".join(self.errors),
                "fix the `mapping:` section (or the schemas) and run again",
            )

    def pg_types(self, source: str) -> dict[str, str]:
        """Source column -> type text (what :func:`crossfade.mapping.values.python_value` takes)."""
        shape = self.source.get(source)
        return {c.name: c.type_sql for c in shape.columns} if shape else {}


def _near(name: str, options: list[str]) -> str:
    hit = difflib.get_close_matches(name, options, n=1)
    return f" (did you mean {hit[0]}?)" if hit else ""


def category(type_sql: str, enum: str | tuple[str, str] | None = None) -> str:
    """Coarse type family of a PostgreSQL type text: text, int, numeric, bool, date, timestamp,
    timestamptz, time, interval, uuid, json, bytea, array or other."""
    t = type_sql.lower()
    if t.endswith("[]"):
        return "array"
    if enum:
        return "text"
    for prefix, cat in (
        ("character varying", "text"),
        ("character", "text"),
        ("varchar", "text"),
        ("text", "text"),
        ("citext", "text"),
        ("name", "text"),
        ("bpchar", "text"),
        ("smallint", "int"),
        ("integer", "int"),
        ("bigint", "int"),
        ("numeric", "numeric"),
        ("decimal", "numeric"),
        ("real", "numeric"),
        ("double precision", "numeric"),
        ("money", "numeric"),
        ("boolean", "bool"),
        ("date", "date"),
        ("timestamp with time zone", "timestamptz"),
        ("timestamp", "timestamp"),
        ("time", "time"),
        ("interval", "interval"),
        ("uuid", "uuid"),
        ("json", "json"),
        ("bytea", "bytea"),
    ):
        if t.startswith(prefix):
            return cat
    return "other"


_CAST_CATEGORY = {
    "text": "text",
    "integer": "int",
    "bigint": "int",
    "smallint": "int",
    "numeric": "numeric",
    "float": "numeric",
    "boolean": "bool",
    "date": "date",
    "timestamp": "timestamp",
    "timestamptz": "timestamptz",
    "uuid": "uuid",
    "json": "json",
}

# produced -> target families that take it without a cast
_FITS = {
    "int": {"int", "numeric", "text"},
    "numeric": {"numeric", "text"},
    "date": {"date", "timestamp", "timestamptz", "text"},
    "timestamp": {"timestamp", "text"},
    "timestamptz": {"timestamptz", "text"},
    "text": {"text"},
    "bool": {"bool", "text"},
    "uuid": {"uuid", "text"},
    "json": {"json"},
    "time": {"time", "text"},
    "interval": {"interval", "text"},
    "bytea": {"bytea"},
    "array": {"array", "json"},
}


def _const_category(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float | decimal.Decimal):
        return "numeric"
    if isinstance(v, dt.datetime):
        return "timestamptz" if v.tzinfo else "timestamp"
    if isinstance(v, dt.date):
        return "date"
    if isinstance(v, str):
        return "text"
    if isinstance(v, dict | list):
        return "json"
    return None


def _source_pks(
    conn: psycopg.Connection, tables: list[str], report: SchemaReport
) -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for t in tables:
        shape = read_shape(conn, t)
        if shape is None:
            report.errors.append(f"source table {t} does not exist in the legacy database")
            continue
        report.source[t] = shape
        if not shape.pk:
            report.errors.append(
                f"source table {t} has no primary key (rows cannot be keyed, deletes not applied)"
            )
            continue
        keys[t] = list(shape.pk)
    return keys


def load_mapper(
    mapping: MappingConfig | None,
    tables: list[str],
    source: psycopg.Connection,
    target: psycopg.Connection | None,
    append_only: list[str] | tuple[str, ...] = (),
) -> tuple[Mapper, SchemaReport]:
    """Build the mapper with the legacy primary keys and check it against both catalogs.

    Returns the mapper and the report; the caller decides what to do with errors (usually
    :meth:`SchemaReport.raise_for_errors`). ``target`` None skips the target checks.
    ``append_only``: tables without a primary key that sync copies as they are
    (``sync.append_only_tables``): they are left out of the mapper (nothing to key them by).
    """
    report = SchemaReport()
    cfg = mapping or MappingConfig()
    skip = set(append_only)
    for t in sorted(skip & set(cfg.tables)):
        report.errors.append(
            f"mapping.tables.{t}: {t} is append-only (sync.append_only_tables) and is copied as "
            "it is; remove its mapping, or give the table a primary key"
        )
    tables = [t for t in tables if t not in skip]
    keys = _source_pks(
        source, list(dict.fromkeys([*tables, *(t for t in cfg.tables if t not in skip)])), report
    )
    mapper = Mapper(cfg, tables, keys, skip=skip)
    _check_source(mapper, report)
    if target is not None:
        for t in mapper.target_tables():
            shape = read_shape(target, t)
            if shape is not None:
                report.target[t] = shape
        _check_target(mapper, target, report)
        check_unique_keys(mapper, target, report)
        for shape in report.target.values():
            require_target(mapper, shape)  # a row the target cannot take as it is: a dead letter
    return mapper, report


def _check_source(mapper: Mapper, report: SchemaReport) -> None:
    for src, ct in mapper.tables.items():
        shape = report.source.get(src)
        if shape is None:
            continue
        cols = [c.name for c in shape.columns]
        have = set(cols)
        where = f"mapping.tables.{src}"
        for i, f in enumerate(ct.filters):
            for j, (cond, fn) in enumerate(f.conditions):
                if cond.column not in have:
                    report.errors.append(
                        f"{where}.filters[{i}] ({f.spec.name}): source column {src}.{cond.column} does not exist{_near(cond.column, cols)}"
                    )
                    continue
                sc = shape.column(cond.column)
                cat = _filtered_category(category(sc.type_sql, sc.enum), cond.transforms)
                if cat is None:
                    continue
                w = f"{where}.filters[{i}] ({f.spec.name}).when[{j}]"
                fixed = literals.check_condition(
                    cond, cat, f"{src}.{cond.column}", sc.type_sql, w, report
                )
                if fixed is not cond:
                    f.conditions[j] = (fixed, fn)
        for i, t in enumerate(ct.targets):
            tw = f"{where}.targets[{i}]" if not ct.identity else f"tables: {src}"
            for col in t.columns:
                for s in col.sources:
                    if s not in have:
                        report.errors.append(
                            f"{tw}.columns.{col.name}: source column {src}.{s} does not exist{_near(s, cols)}"
                        )
            if t.key is None:
                report.errors.append(
                    f"{tw}: the key of {t.table} is not known; set `key:` or map the source key "
                    f"({', '.join(shape.pk) or 'none'}) to a column by name"
                )
                continue
            pk = set(shape.pk)
            for k in t.key:
                kcol = next((c for c in t.columns if c.name == k), None)
                srcs = set(kcol.sources) if kcol is not None else {k}
                if kcol is not None and kcol.spec.is_const:
                    continue
                if not srcs <= pk:
                    report.errors.append(
                        f"{tw}.key: {t.table}.{k} is computed from {', '.join(sorted(srcs - pk))}, not only from the "
                        f"primary key of {src} ({', '.join(shape.pk)}): a delete at the source could not be applied"
                    )


def _filtered_category(cat: str | None, transforms: list[Any]) -> str | None:
    """The type family a filter's transforms make of a ``cat`` column; None when unknown."""
    for spec in transforms:
        name = spec if isinstance(spec, str) else next(iter(spec), "")
        if name == "cast" and isinstance(spec, dict):
            cat = _CAST_CATEGORY.get(str(spec["cast"]))
        elif name in OUTPUT_TYPES:
            cat = _CAST_CATEGORY.get(OUTPUT_TYPES[name])
        elif name not in ("trim", "null_if", "default"):
            cat = None  # a transform whose output type is not known: checked per row instead
    return cat


def _check_target(mapper: Mapper, conn: psycopg.Connection, report: SchemaReport) -> None:
    writers: dict[str, list[tuple[str, CompiledTarget]]] = {}
    for src, ct in mapper.tables.items():
        for i, t in enumerate(ct.targets):
            tw = f"mapping.tables.{src}.targets[{i}]" if not ct.identity else f"tables: {src}"
            writers.setdefault(t.table, []).append((src, t))
            shape = report.target.get(t.table)
            if shape is None:
                if ct.identity:
                    continue  # sync creates identity-mapped tables from the source's shape
                report.errors.append(
                    f"{tw}: target table {t.table} does not exist in the target database"
                )
                continue
            _check_target_table(src, t, tw, shape, report)
    for table, ws in writers.items():
        if len(ws) < 2 or table in mapper.config.dedup:
            continue
        if all(t.spec.keys_disjoint for _, t in ws):
            continue

        # a per-source constant inside the key keeps the sources apart
        def const_in_key(t: CompiledTarget) -> Any:
            for c in t.columns:
                if t.key and c.name in t.key and c.spec.is_const:
                    return (c.name, repr(c.spec.const))
            return None

        consts = [const_in_key(t) for _, t in ws]
        if all(consts) and len(set(consts)) == len(consts):
            continue
        report.errors.append(
            f"{', '.join(s for s, _ in ws)} all map into {table}, whose key could collide across them: add a key "
            "column with a per-source constant (e.g. source_system), dedup that target, or set keys_disjoint: true"
        )
    for table in mapper.config.dedup:
        if table not in writers:
            report.errors.append(f"mapping.dedup.{table}: no source table maps into {table}")
            continue
        shape = report.target.get(table)
        produced = {c.name for _, t in writers[table] for c in t.columns}
        copies = any(t.copy_columns for _, t in writers[table])
        spec = mapper.config.dedup[table]
        cols = [c.column for r in spec.match for c in r.all] + (
            [spec.survivorship.recency] if spec.survivorship.recency else []
        )
        for c in cols:
            if c not in produced and not copies:
                report.errors.append(
                    f"mapping.dedup.{table}: column {c} is not produced by the mapping into {table}"
                )
    for src, ct in mapper.tables.items():
        for i, t in enumerate(ct.targets):
            for col, r in t.spec.rules.items():
                ref = r.reference
                if ref is None:
                    continue
                where = f"mapping.tables.{src}.targets[{i}].rules.{col}.references"
                pshape = report.target.get(ref.table) or read_shape(conn, ref.table)
                if ref.table not in writers:
                    report.warnings.append(
                        f"{where}: no source table maps into {ref.table}; audit cannot find orphans for it"
                    )
                if pshape is None:
                    report.errors.append(
                        f"{where}: parent table {ref.table} does not exist in the target database"
                    )
                elif ref.column not in {c.name for c in pshape.columns}:
                    report.errors.append(
                        f"{where}: parent column {ref.table}.{ref.column} does not exist{_near(ref.column, [c.name for c in pshape.columns])}"
                    )


def _unique_keys(conn: psycopg.Connection, table: str) -> list[set[str]]:
    schema, name = table.split(".", 1)
    rows = conn.execute(
        "SELECT array_agg(a.attname) FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE n.nspname = %s AND c.relname = %s AND i.indisunique AND i.indpred IS NULL GROUP BY i.indexrelid",
        (schema, name),
    ).fetchall()
    return [set(r[0]) for r in rows]


def _defaults(conn: psycopg.Connection, table: str) -> set[str]:
    schema, name = table.split(".", 1)
    rows = conn.execute(
        "SELECT a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped "
        "AND (a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '')",
        (schema, name),
    ).fetchall()
    return {r[0] for r in rows}


def _check_target_table(
    src: str, t: CompiledTarget, where: str, shape: TableShape, report: SchemaReport
) -> None:
    tcols = {c.name: c for c in shape.columns}
    names = list(tcols)
    produced: dict[str, str | None] = {}
    sshape = report.source.get(src)
    scols = {c.name: c for c in sshape.columns} if sshape else {}
    for col in t.columns:
        if col.name not in tcols:
            report.errors.append(
                f"{where}.columns.{col.name}: target column {t.table}.{col.name} does not exist{_near(col.name, names)}"
            )
            continue
        cat: str | None
        if col.produced_type == "source":
            sc = scols.get(col.sources[0]) if len(col.sources) == 1 else None
            cat = category(sc.type_sql, sc.enum) if sc else None
        elif col.produced_type == "const":
            cat = _const_category(col.spec.const)
        elif col.produced_type in _CAST_CATEGORY:
            cat = _CAST_CATEGORY[col.produced_type]
        else:
            cat = col.produced_type
        produced[col.name] = cat
        target_cat = category(tcols[col.name].type_sql, tcols[col.name].enum)
        if (
            cat
            and target_cat != "other"
            and cat != "other"
            and target_cat not in _FITS.get(cat, {cat})
        ):
            what = (
                f"source {src}.{col.sources[0]}"
                if col.produced_type == "source"
                else f"a {cat} value"
            )
            report.errors.append(
                f"{where}.columns.{col.name}: {what} ({cat}) does not fit {t.table}.{col.name} "
                f"({tcols[col.name].type_sql}); add `cast: {_suggest_cast(target_cat)}` or a transform that produces it"
            )
    if t.copy_columns:
        for sc in scols.values():
            if sc.name in t.consumed or sc.name in produced:
                continue
            if sc.name not in tcols:
                report.errors.append(
                    f"{where}: include_unmapped copies {src}.{sc.name}, but {t.table} has no column {sc.name}{_near(sc.name, names)}"
                )
            produced[sc.name] = category(sc.type_sql, sc.enum)
    for rcol, rules in t.spec.rules.items():
        tc = tcols.get(rcol)
        rcat = produced.get(rcol) or (category(tc.type_sql, tc.enum) if tc is not None else None)
        if rcat is not None:
            literals.check_rules(
                rules,
                rcat,
                f"{t.table}.{rcol}",
                tc.type_sql if tc else rcat,
                f"{where}.rules.{rcol}",
                report,
            )
    if t.key is not None:
        for k in t.key:
            if k not in tcols:
                report.errors.append(
                    f"{where}.key: target column {t.table}.{k} does not exist{_near(k, names)}"
                )
        if set(shape.pk) != set(t.key):
            report.warnings.append(
                f"{where}.key: {t.table}'s primary key is ({', '.join(shape.pk) or 'none'}), the mapping upserts on "
                f"({', '.join(t.key)}); a unique index on it is needed"
            )
    return None


def check_unique_keys(mapper: Mapper, conn: psycopg.Connection, report: SchemaReport) -> None:
    """Every mapped target key has a primary key or unique index, and NOT NULL columns without
    a default are filled (needs the target connection: run after :func:`load_mapper`)."""
    for src, ct in mapper.tables.items():
        for i, t in enumerate(ct.targets):
            shape = report.target.get(t.table)
            if shape is None or t.key is None:
                continue
            where = f"mapping.tables.{src}.targets[{i}]" if not ct.identity else f"tables: {src}"
            if set(t.key) != set(shape.pk) and set(t.key) not in _unique_keys(conn, t.table):
                report.errors.append(
                    f"{where}.key: {t.table} has no primary key or unique index on ({', '.join(t.key)}): upserts need one"
                )
            filled = {c.name for c in t.columns}
            if t.copy_columns and src in report.source:
                filled |= {c.name for c in report.source[src].columns if c.name not in t.consumed}
            defaults = _defaults(conn, t.table)
            for c in shape.columns:
                if c.not_null and c.name not in filled and c.name not in defaults:
                    report.errors.append(
                        f"{where}: {t.table}.{c.name} is NOT NULL without a default and the mapping does not fill it"
                    )


def _suggest_cast(target_cat: str) -> str:
    return {"int": "bigint", "bool": "boolean", "json": "json", "numeric": "numeric"}.get(
        target_cat, target_cat
    )
