"""``crossfade audit``: profile the legacy tables under the mapping, writing nothing.

One read-only, repeatable-read transaction on the legacy database (a consistent view; PostgreSQL
refuses any write in it). Each table is streamed through a server-side cursor, so memory holds
one batch of rows plus what the findings need: counters, a few examples per finding, the parent
key sets referential rules check against, and the match values of deduplicated targets.

Tables are read parents first (the tables whose targets other tables reference), so a child's
references are checked against every parent row that would be migrated: a parent that is itself
rejected or filtered makes its children orphans, as it would in the new database.

What the report holds, per source table: row count and the accounting (mapped + rejected +
filtered = rows); completeness of every source column and of every mapped target column; every
rule that failed with its count and examples; orphans; filtered rows (counted, keys listed up to
``list_limit``); the distribution of value formats of text columns whose transforms depend on a
format (phone, date, email, country...); then the duplicate groups of every deduplicated target
with the rule and scores behind each merge.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from crossfade.config import Settings, redact_dsn
from crossfade.db import connect
from crossfade.mapping.dedup import Deduper, DupGroup
from crossfade.mapping.engine import Failure, Filtered, KeySets, Mapped, Mapper, Rejected, jsonable
from crossfade.mapping.schema_check import SchemaReport, load_mapper

FORMAT_TRANSFORMS = frozenset(
    {
        "phone",
        "date",
        "datetime",
        "email",
        "country",
        "cast:date",
        "cast:timestamp",
        "cast:timestamptz",
        "cast:integer",
        "cast:bigint",
        "cast:numeric",
        "cast:boolean",
    }
)
"""Transforms whose input format matters: their source columns get a format distribution."""

MAX_DISTINCT = 10_000
MAX_FORMATS = 200


def value_format(v: Any) -> str:
    """The shape of a text value: digits -> 9, letters -> A/a, the rest kept; runs of the
    same class longer than 4 shortened (``john.doe@example.com`` -> ``aaaa+.aaa@aaaa+.aaa``)."""
    if not isinstance(v, str):
        return type(v).__name__
    out = []
    for ch in v:
        if ch.isdigit():
            out.append("9")
        elif ch.isalpha():
            out.append("A" if ch.isupper() else "a")
        else:
            out.append(ch)
    s = "".join(out)
    return re.sub(r"([9Aa])\1{4,}", r"\1\1\1\1+", s)


@dataclass
class ColumnProfile:
    name: str
    type: str
    nulls: int = 0
    blanks: int = 0
    distinct: set[Any] = field(default_factory=set)
    distinct_capped: bool = False
    formats: Counter[str] | None = None

    def add(self, v: Any) -> None:
        if v is None:
            self.nulls += 1
            return
        if isinstance(v, str) and not v.strip():
            self.blanks += 1
        if not self.distinct_capped:
            try:
                self.distinct.add(v)
            except TypeError:
                self.distinct.add(repr(v))
            if len(self.distinct) > MAX_DISTINCT:
                self.distinct_capped = True
                self.distinct.clear()
        if self.formats is not None and (
            len(self.formats) < MAX_FORMATS or value_format(v) in self.formats
        ):
            self.formats[value_format(v)] += 1

    def as_dict(self, rows: int) -> dict[str, Any]:
        filled = rows - self.nulls - self.blanks
        d: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "nulls": self.nulls,
            "blanks": self.blanks,
            "filled": filled,
            "completeness": round(filled / rows, 4) if rows else None,
            "distinct": None if self.distinct_capped else len(self.distinct),
        }
        if self.formats is not None:
            d["formats"] = [{"format": f, "count": n} for f, n in self.formats.most_common(10)]
            d["format_count"] = len(self.formats)
        return d


@dataclass
class Finding:
    """One rule (or filter) and the rows it caught."""

    rule: str
    kind: str
    severity: str
    target: str | None
    column: str | None
    count: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "kind": self.kind,
            "severity": self.severity,
            "target": self.target,
            "column": self.column,
            "count": self.count,
            "examples": self.examples,
        }


@dataclass
class TableAudit:
    source: str
    targets: list[str]
    columns: dict[str, ColumnProfile]
    rows: int = 0
    mapped: int = 0
    rejected: int = 0
    filtered: int = 0
    warned: int = 0
    rules: dict[str, Finding] = field(default_factory=dict)
    filters: dict[str, Finding] = field(default_factory=dict)
    filtered_keys: list[Any] = field(default_factory=list)
    target_fill: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "targets": self.targets,
            "rows": self.rows,
            "mapped": self.mapped,
            "rejected": self.rejected,
            "filtered": self.filtered,
            "warned": self.warned,
            "accounting_closes": self.rows == self.mapped + self.rejected + self.filtered,
            "columns": [c.as_dict(self.rows) for c in self.columns.values()],
            "target_columns": {
                t: [
                    {
                        "name": c,
                        "filled": n,
                        "completeness": round(n / self.mapped, 4) if self.mapped else None,
                    }
                    for c, n in cols.items()
                ]
                for t, cols in self.target_fill.items()
            },
            "rules": [
                f.as_dict() for f in sorted(self.rules.values(), key=lambda f: (-f.count, f.rule))
            ],
            "orphans": [f.as_dict() for f in self.rules.values() if f.kind == "references"],
            "filters": [f.as_dict() for f in self.filters.values()],
            "filtered_keys": self.filtered_keys,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class AuditReport:
    generated_at: str
    source: str
    tables: list[TableAudit]
    duplicates: dict[str, list[DupGroup]]
    oversized_blocks: dict[str, dict[str, int]]
    warnings: list[str]

    def summary(self) -> dict[str, Any]:
        rows = sum(t.rows for t in self.tables)
        return {
            "tables": len(self.tables),
            "rows": rows,
            "mapped": sum(t.mapped for t in self.tables),
            "rejected": sum(t.rejected for t in self.tables),
            "filtered": sum(t.filtered for t in self.tables),
            "duplicate_groups": sum(len(g) for g in self.duplicates.values()),
            "duplicate_records": sum(len(x.members) for g in self.duplicates.values() for x in g),
            "orphans": sum(
                f.count for t in self.tables for f in t.rules.values() if f.kind == "references"
            ),
        }

    def findings(self) -> list[str]:
        """The headline list, worst first, in plain words."""
        out = []
        for t in self.tables:
            if t.rejected:
                pct = 100 * t.rejected / t.rows if t.rows else 0
                out.append(
                    f"{t.source}: {t.rejected} of {t.rows} rows ({pct:.1f}%) would be rejected"
                )
            for f in sorted(t.rules.values(), key=lambda f: -f.count):
                out.append(f"{t.source}: {f.count} × {describe_finding(f)}")
            for f in t.filters.values():
                out.append(
                    f"{t.source}: {f.count} rows filtered out by {f.rule.rsplit(':', 1)[-1]} (listed, not migrated)"
                )
        for target, groups in self.duplicates.items():
            if groups:
                n = sum(len(g.members) for g in groups)
                out.append(
                    f"{target}: {len(groups)} duplicate groups ({n} records would merge into {len(groups)})"
                )
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "generated_at": self.generated_at,
            "source": self.source,
            "summary": self.summary(),
            "findings": self.findings(),
            "warnings": self.warnings,
            "tables": [t.as_dict() for t in self.tables],
            "duplicates": {t: [g.as_dict() for g in gs] for t, gs in self.duplicates.items()},
            "oversized_blocks": self.oversized_blocks,
        }


_KIND_WORDS = {
    "required": "missing required {col}",
    "not_null": "missing {col} (NOT NULL in the target)",
    "pattern": "{col} not matching its pattern",
    "range": "{col} out of range",
    "enum": "{col} not an allowed value",
    "length": "{col} of the wrong length",
    "too_long": "{col} longer than its target column",
    "too_large": "{col} too large for its target column",
    "references": "orphaned {col} (parent missing)",
    "transform": "{col} that cannot be cleansed ({how})",
    "cast": "{col} that cannot be converted ({how})",
    "source": "{col} without a source value",
    "row": "rows failing {how}",
}


def describe_finding(f: Finding) -> str:
    how = f.rule.rsplit(":", 1)[-1]
    col = f"{f.target}.{f.column}" if f.column else (f.target or "")
    text = _KIND_WORDS.get(f.kind, "{col} failing {how}").format(col=col, how=how)
    if f.severity == "warn":
        text += " (warning only)"
    return text


# ---------------------------------------------------------------------------------------------


def stream_rows(
    conn: psycopg.Connection, table: str, name: str, itersize: int = 2000
) -> Iterator[dict[str, Any]]:
    """Every row of ``table`` as a dict, through a server-side cursor (bounded memory)."""
    schema, rel = table.split(".", 1)
    q = sql.SQL("SELECT * FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(rel))
    with conn.cursor(name=name) as cur:
        cur.itersize = itersize
        cur.execute(q)
        cols = [d.name for d in cur.description or []]
        for rec in cur:
            yield dict(zip(cols, rec, strict=True))


def estimate_rows(conn: psycopg.Connection, table: str) -> int | None:
    schema, rel = table.split(".", 1)
    row = conn.execute(
        "SELECT c.reltuples::bigint FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s",
        (schema, rel),
    ).fetchone()
    return int(row[0]) if row and row[0] is not None and row[0] >= 0 else None


def read_only(settings: Settings) -> psycopg.Connection:
    """A legacy connection whose transactions are read-only and repeatable-read."""
    conn = connect(settings.source, "source", autocommit=False)
    conn.read_only = True
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    return conn


def prepare(
    settings: Settings, src: psycopg.Connection, check_target: bool
) -> tuple[Mapper, SchemaReport]:
    """Build and check the mapper (legacy catalog always, target catalog with ``check_target``)."""
    append_only = settings.sync.append_only_tables
    if check_target:
        with connect(settings.target, "target") as tgt:
            mapper, report = load_mapper(settings.mapping, settings.tables, src, tgt, append_only)
    else:
        mapper, report = load_mapper(settings.mapping, settings.tables, src, None, append_only)
    report.raise_for_errors()
    return mapper, report


def source_parents(mapper: Mapper) -> dict[str, set[str]]:
    """Each mapped source table -> the source tables of the targets its ``references`` rules
    check (its parents; a self-reference left out)."""
    deps: dict[str, set[str]] = {s: set() for s in mapper.tables}
    for s, ct in mapper.tables.items():
        for t in ct.targets:
            for r in t.spec.rules.values():
                ref = r.reference
                if ref is not None:
                    deps[s] |= {p for p in mapper.sources_of(ref.table) if p != s}
    return deps


def parents_first(mapper: Mapper) -> list[str]:
    """Source tables ordered so that the sources of a referenced target come before the sources
    referencing it (cycles keep the configured order)."""
    deps = source_parents(mapper)
    out: list[str] = []
    visiting: set[str] = set()

    def visit(s: str) -> None:
        if s in out or s in visiting:
            return
        visiting.add(s)
        for p in sorted(deps[s]):
            visit(p)
        visiting.discard(s)
        out.append(s)

    for s in mapper.tables:
        visit(s)
    return out


def with_parents(mapper: Mapper, targets: Iterable[str]) -> set[str]:
    """``targets`` and, transitively, the targets their sources' ``references`` rules check:
    verifying a child alone must still know its parents' keys, or every child row is rejected."""
    need, todo = set(targets), list(targets)
    while todo:
        for s in mapper.sources_of(todo.pop()):
            for ct in mapper.table(s).targets:
                for r in ct.spec.rules.values():
                    ref = r.reference
                    if ref is not None and ref.table not in need:
                        need.add(ref.table)
                        todo.append(ref.table)
    return need


def tracked_references(mapper: Mapper) -> KeySets:
    keys = KeySets()
    for ct in mapper.tables.values():
        for t in ct.targets:
            for r in t.spec.rules.values():
                ref = r.reference
                if ref is not None and mapper.sources_of(ref.table):
                    keys.track(ref.table, ref.column)
    return keys


class AuditProgress:
    """rich progress on a terminal (stderr), nothing otherwise."""

    def __init__(self, enabled: bool | None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._p: Any = None

    def __enter__(self) -> AuditProgress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._p = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._p.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._p is not None:
            self._p.__exit__(*exc)

    def task(self, what: str, total: int | None) -> Any:
        return self._p.add_task(what, total=total) if self._p is not None else None

    def advance(self, task: Any, n: int) -> None:
        if self._p is not None and task is not None:
            self._p.advance(task, n)

    def done(self, task: Any, total: int) -> None:
        if self._p is not None and task is not None:
            self._p.update(task, total=total, completed=total)


def _source_key(mapper: Mapper, table: str, row: dict[str, Any]) -> Any:
    k = mapper.source_key(table, row)
    if k is None:
        return None
    return jsonable(k[0] if len(k) == 1 else list(k))


def _format_columns(mapper: Mapper, table: str) -> set[str]:
    cols: set[str] = set()
    for t in mapper.table(table).targets:
        for c in t.columns:
            if any(name in FORMAT_TRANSFORMS for name, _ in c.steps):
                cols.update(c.sources)
    return cols


def _record(findings: dict[str, Finding], f: Failure, key: Any, examples: int) -> None:
    fd = findings.get(f.rule)
    if fd is None:
        fd = findings[f.rule] = Finding(
            f.rule,
            f.kind if not f.rule.endswith(":not_null") else "not_null",
            f.severity,
            f.target,
            f.column,
        )
    fd.count += 1
    if len(fd.examples) < examples:
        fd.examples.append({"key": key, "value": jsonable(f.value), "message": f.message})


def run_audit(
    settings: Settings,
    *,
    progress: bool | None = None,
    examples: int = 5,
    list_limit: int = 1000,
    check_target: bool = True,
) -> AuditReport:
    """Profile every configured source table under the mapping; see the module docstring.

    Raises :class:`~crossfade.errors.PreflightError` when a database cannot be reached or the
    mapping does not fit the schemas (before any row is read).
    """
    started = dt.datetime.now(dt.UTC)
    with read_only(settings) as src:
        mapper, schema = prepare(settings, src, check_target)
        keys = tracked_references(mapper)
        dedupers = {
            t: Deduper(
                t,
                spec,
                mapper.registry,
                keep=display_columns(mapper, t),
                key_columns=key_columns(mapper, t),
            )
            for t, spec in mapper.config.dedup.items()
        }
        audits: list[TableAudit] = []
        with AuditProgress(progress) as prog:
            for n, table in enumerate(parents_first(mapper)):
                audits.append(
                    _audit_table(
                        src, mapper, schema, table, keys, dedupers, prog, examples, list_limit, n
                    )
                )
        src.rollback()
    duplicates = {t: d.groups() for t, d in dedupers.items()}
    oversized = {t: dict(d.oversized) for t, d in dedupers.items() if d.oversized}
    return AuditReport(
        started.isoformat(timespec="seconds"),
        redact_dsn(settings.source.dsn),
        audits,
        duplicates,
        oversized,
        list(schema.warnings),
    )


def display_columns(mapper: Mapper, target: str) -> list[str]:
    """A few columns shown beside the match values of a duplicate group."""
    cols: list[str] = []
    for s in mapper.sources_of(target):
        for t in mapper.table(s).targets:
            if t.table == target:
                cols.extend(c.name for c in t.columns[:4])
    return list(dict.fromkeys(cols))[:4]


def key_columns(mapper: Mapper, target: str) -> list[str]:
    for s in mapper.sources_of(target):
        for t in mapper.table(s).targets:
            if t.table == target and t.key is not None:
                return list(t.key)
    return []


def _audit_table(
    src: psycopg.Connection,
    mapper: Mapper,
    schema: SchemaReport,
    table: str,
    keys: KeySets,
    dedupers: dict[str, Deduper],
    prog: AuditProgress,
    examples: int,
    list_limit: int,
    n: int,
) -> TableAudit:
    t0 = time.monotonic()
    shape = schema.source[table]
    fmt_cols = _format_columns(mapper, table)
    audit = TableAudit(
        table,
        [t.table for t in mapper.table(table).targets],
        {
            c.name: ColumnProfile(
                c.name, c.type_sql, formats=Counter() if c.name in fmt_cols else None
            )
            for c in shape.columns
        },
    )
    tracked = [(tt, col) for (tt, col) in keys.sets if tt in audit.targets]
    task = prog.task(table, estimate_rows(src, table))
    pending = 0
    for row in stream_rows(src, table, f"cf_audit_{n}"):
        audit.rows += 1
        for c, v in row.items():
            prof = audit.columns.get(c)
            if prof is not None:
                prof.add(v)
        outcome = mapper.map_row(table, row, parents=keys)
        skey = _source_key(mapper, table, row)
        if isinstance(outcome, Mapped):
            audit.mapped += 1
            if outcome.warnings:
                audit.warned += 1
                for f in outcome.warnings:
                    _record(audit.rules, f, skey, examples)
            for trow in outcome.rows:
                fill = audit.target_fill.setdefault(trow.table, {c: 0 for c in trow.values})
                for c, v in trow.values.items():
                    if v is not None and not (isinstance(v, str) and not v.strip()):
                        fill[c] = fill.get(c, 0) + 1
                for tt, col in tracked:
                    if tt == trow.table:
                        keys.add(tt, col, trow.values.get(col))
                d = dedupers.get(trow.table)
                if d is not None and trow.key is not None:
                    d.add(trow.key, trow.values, table, outcome.source_key)
        elif isinstance(outcome, Rejected):
            audit.rejected += 1
            for f in outcome.failures:
                _record(audit.rules, f, skey, examples)
        elif isinstance(outcome, Filtered):
            audit.filtered += 1
            fd = audit.filters.setdefault(
                outcome.filter, Finding(outcome.filter, "filter", "filter", None, None)
            )
            fd.count += 1
            if len(fd.examples) < examples:
                fd.examples.append({"key": skey, "value": None, "message": outcome.reason})
            if len(audit.filtered_keys) < list_limit:
                audit.filtered_keys.append(skey)
        pending += 1
        if pending >= 500:
            prog.advance(task, pending)
            pending = 0
    prog.done(task, audit.rows)
    audit.seconds = time.monotonic() - t0
    return audit
