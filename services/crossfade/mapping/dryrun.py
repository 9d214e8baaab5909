"""``crossfade dry-run``: the mapping applied to a sample of legacy rows, writing nothing.

Per source table, a reproducible sample (``--seed``) of ``n`` rows: PostgreSQL's ``TABLESAMPLE
BERNOULLI ... REPEATABLE`` over large tables, then reservoir sampling, so memory holds ``n`` rows.
Each sampled row is mapped exactly as sync will map it, and shown as its target rows, its
rejection (every rule it fails) or its filter. Referential rules are checked against the parent
keys of the legacy database (every parent row's mapped key). For deduplicated targets the whole
source is matched (bounded by the match values kept per row) and the groups that contain a
sampled row are shown with the reason for each merge.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from crossfade.config import Settings
from crossfade.mapping.audit import (
    AuditProgress,
    display_columns,
    estimate_rows,
    key_columns,
    prepare,
    read_only,
    stream_rows,
)
from crossfade.mapping.dedup import Deduper, DupGroup
from crossfade.mapping.engine import KeySets, Mapped, Mapper, Outcome, Rejected, jsonable


@dataclass
class TableSample:
    source: str
    rows: list[tuple[dict[str, Any], Outcome]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "source": self.source,
            "sampled": len(self.rows),
            "mapped": [],
            "rejected": [],
            "filtered": [],
        }
        for row, o in self.rows:
            key = jsonable(
                o.source_key[0] if o.source_key and len(o.source_key) == 1 else o.source_key
            )
            if isinstance(o, Mapped):
                out["mapped"].append(
                    {
                        "key": key,
                        "targets": [
                            {"table": r.table, "values": jsonable(r.values)} for r in o.rows
                        ],
                        "warnings": [f.as_dict() for f in o.warnings],
                    }
                )
            elif isinstance(o, Rejected):
                out["rejected"].append(
                    {
                        "key": key,
                        "rule": o.rule,
                        "failures": [f.as_dict() for f in o.failures],
                        "source_row": jsonable(row),
                    }
                )
            else:
                out["filtered"].append({"key": key, "filter": o.filter, "reason": o.reason})
        return out


@dataclass
class DryRunReport:
    tables: list[TableSample]
    merges: dict[str, list[DupGroup]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "tables": [t.as_dict() for t in self.tables],
            "merges": {t: [g.as_dict() for g in gs] for t, gs in self.merges.items()},
        }


def sample_rows(
    conn: psycopg.Connection, table: str, n: int, seed: int, name: str
) -> list[dict[str, Any]]:
    """A reproducible sample of ``n`` rows (all of them when the table has fewer)."""
    schema, rel = table.split(".", 1)
    ident = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(rel))
    est = estimate_rows(conn, table)
    if est and est > 20 * n:
        pct = min(100.0, 100.0 * 4 * n / est)
        q = sql.SQL("SELECT * FROM {} TABLESAMPLE BERNOULLI ({}) REPEATABLE ({})").format(
            ident, sql.Literal(pct), sql.Literal(seed)
        )
    else:
        q = sql.SQL("SELECT * FROM {}").format(ident)
    rng = random.Random(seed)
    picked: list[dict[str, Any]] = []
    with conn.cursor(name=name) as cur:
        cur.itersize = 2000
        cur.execute(q)
        cols = [d.name for d in cur.description or []]
        for i, rec in enumerate(cur):
            row = dict(zip(cols, rec, strict=True))
            if len(picked) < n:
                picked.append(row)
            else:
                j = rng.randint(0, i)
                if j < n:
                    picked[j] = row
    return picked


def _parent_keys(conn: psycopg.Connection, mapper: Mapper) -> KeySets:
    """Mapped keys of every parent a referential rule names, from the legacy primary keys."""
    keys = KeySets()
    wanted: set[tuple[str, str]] = set()
    for ct in mapper.tables.values():
        for t in ct.targets:
            for r in t.spec.rules.values():
                if r.reference is not None:
                    wanted.add((r.reference.table, r.reference.column))
    for i, (ptable, pcol) in enumerate(sorted(wanted)):
        for src in mapper.sources_of(ptable):
            target = next(t for t in mapper.table(src).targets if t.table == ptable)
            pk = mapper.source_keys.get(src)
            if not pk or target.key is None or pcol not in target.key:
                continue  # not answerable from keys alone: the rule is skipped in the dry run
            keys.track(ptable, pcol)
            schema, rel = src.split(".", 1)
            q = sql.SQL("SELECT {} FROM {}.{}").format(
                sql.SQL(", ").join(map(sql.Identifier, pk)),
                sql.Identifier(schema),
                sql.Identifier(rel),
            )
            with conn.cursor(name=f"cf_dry_keys_{i}") as cur:
                cur.itersize = 5000
                cur.execute(q)
                for rec in cur:
                    for tt, kv in mapper.map_key(src, dict(zip(pk, rec, strict=True))):
                        if tt == ptable:
                            keys.add(ptable, pcol, kv[target.key.index(pcol)])
    return keys


def run_dry_run(
    settings: Settings,
    *,
    sample: int = 20,
    seed: int = 1,
    merges: bool = True,
    progress: bool | None = None,
    check_target: bool = True,
) -> DryRunReport:
    """Map a sample of every configured source table; see the module docstring. Writes nothing."""
    with read_only(settings) as src:
        mapper, _schema = prepare(settings, src, check_target)
        parents = _parent_keys(src, mapper)
        tables = []
        sampled_keys: dict[str, set[tuple[Any, ...]]] = {}
        for n, table in enumerate(mapper.tables):
            ts = TableSample(table)
            for row in sample_rows(src, table, sample, seed, f"cf_dry_{n}"):
                o = mapper.map_row(table, row, parents=parents)
                ts.rows.append((row, o))
                if isinstance(o, Mapped):
                    for r in o.rows:
                        if r.key is not None:
                            sampled_keys.setdefault(r.table, set()).add(r.key)
            tables.append(ts)
        groups: dict[str, list[DupGroup]] = {}
        if merges and mapper.config.dedup:
            with AuditProgress(progress) as prog:
                for target, spec in mapper.config.dedup.items():
                    d = Deduper(
                        target,
                        spec,
                        mapper.registry,
                        keep=display_columns(mapper, target),
                        key_columns=key_columns(mapper, target),
                    )
                    for k, source in enumerate(mapper.sources_of(target)):
                        task = prog.task(f"matching {source}", estimate_rows(src, source))
                        for i, row in enumerate(stream_rows(src, source, f"cf_dry_dedup_{k}")):
                            o = mapper.map_row(source, row)
                            if isinstance(o, Mapped):
                                for r in o.rows:
                                    if r.table == target and r.key is not None:
                                        d.add(r.key, r.values, source, o.source_key)
                            if i % 500 == 499:
                                prog.advance(task, 500)
                    mine = sampled_keys.get(target, set())
                    groups[target] = [
                        g for g in d.groups() if any(m.key in mine for m in g.members)
                    ]
        src.rollback()
    return DryRunReport(tables, groups)
