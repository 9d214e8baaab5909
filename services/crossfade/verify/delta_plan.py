"""What the verify of changes (:mod:`crossfade.verify.mapped_delta`) may compare by delta, and
how it finds the legacy rows of a target key.

A target's delta needs the mapping's inverse to be a lookup: its key and its ``references``
columns plain copies of source columns (:func:`plain_column`), a reference to its parent's key,
no ``on_parent_left: keep``, no cycle (:func:`why_full` says why not). A target sharing a legacy
table with one compared in full is compared in full too, and so are the parents and children
of one (:func:`spread`). :func:`cast_in` and :func:`rel` build the lookups' SQL.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from crossfade.catalog import TableShape
from crossfade.mapping.engine import CompiledTarget, Mapper


def hashable(v: Any) -> bool:
    """A value a parent lookup can be keyed by (not None, a list or a dict)."""
    return v is not None and not isinstance(v, list | dict)


def plain_column(ct: CompiledTarget, col: str) -> str | None:
    """The source column target column ``col`` of ``ct`` copies unchanged (no transform, cast,
    default or constant), or None: then no lookup finds the legacy rows that give a value."""
    c = next((c for c in ct.columns if c.name == col), None)
    if c is None:
        return col if ct.copy_columns and col not in ct.consumed else None
    spec = c.spec
    if spec.is_const or len(c.sources) != 1 or c.steps or isinstance(spec.from_, list):
        return None
    if spec.default is not None:
        return None
    return c.sources[0]


def target_of(mapper: Mapper, source: str, target: str) -> CompiledTarget:
    return next(t for t in mapper.table(source).targets if t.table == target)


def references_of(mapper: Mapper, target: str) -> list[tuple[str, str, str, str, Any]]:
    """(source, column, parent target, parent column, reference) of every ``references`` rule of
    ``target`` whose parent is mapped (the others are not evaluated: no key set tracks them)."""
    out = []
    for s in mapper.sources_of(target):
        for col, r, _checks in target_of(mapper, s, target).rules:
            ref = r.reference if r is not None else None
            if ref is not None and mapper.sources_of(ref.table):
                out.append((s, col, ref.table, ref.column, ref))
    return out


def why_full(mapper: Mapper, target: str, seen: frozenset[str] = frozenset()) -> str | None:
    """Why ``target``'s delta cannot be computed (None: it can): see
    :mod:`crossfade.verify.mapped_delta`'s docstring."""
    for s in mapper.sources_of(target):
        if mapper.table(s).identity:
            return f"{s} is copied as it is into it (not through the mapping)"
        ct = target_of(mapper, s, target)
        if ct.key is None:
            return f"no target key known from {s}"
        for k in ct.key:
            if plain_column(ct, k) is None:
                return f"key column {k} is computed from {s} (no lookup by key)"
    for s, col, parent, pcol, ref in references_of(mapper, target):
        if parent in mapper.config.dedup and target in mapper.config.dedup:
            return f"deduplicated and refers to deduplicated {parent}"
        left = ref.on_parent_left or mapper.config.defaults.on_parent_left
        if left == "keep":
            return f"{col} refers to {parent} under on_parent_left: keep"
        if plain_column(target_of(mapper, s, target), col) is None:
            return f"reference column {col} is computed from {s}"
        if parent == target or parent in seen:
            return f"references form a cycle through {parent}"
        for ps in mapper.sources_of(parent):
            pt = target_of(mapper, ps, parent)
            if plain_column(pt, pcol) is None:
                return f"{parent}.{pcol} (referred to by {col}) is computed from {ps}"
            if pcol not in (pt.key or ()):
                # a parent gone from both sides leaves its key (ledger), not its other values:
                # its children could not be found
                return f"{col} refers to {parent}.{pcol}, not its key"
        up = why_full(mapper, parent, seen | {target})
        if up is not None and up.startswith("references form a cycle"):
            return up
    return None


def cast_in(shape: TableShape, cols: tuple[str, ...]) -> tuple[sql.Composable, sql.Composable]:
    """``unnest(%s::text[]::t1[], ...) AS w(c1, ...)`` and ``(r.c1, ...)`` for a lookup."""
    arrays = sql.SQL(", ").join(
        sql.SQL("%s::text[]::{}[]").format(sql.SQL(shape.column(c).type_sql)) for c in cols
    )
    names = sql.SQL(", ").join(map(sql.Identifier, cols))
    unnest = sql.SQL("unnest({}) AS w({})").format(arrays, names)
    row = sql.SQL(", ").join(sql.SQL("r.{}").format(sql.Identifier(c)) for c in cols)
    return unnest, row


def rel(table: str) -> sql.Composable:
    return sql.SQL("{}.{}").format(*map(sql.Identifier, table.split(".", 1)))


def spread(mapper: Mapper, targets: list[str], full: dict[str, str]) -> dict[str, str]:
    """``full`` and every target sharing a legacy table with one of them (the full pass compares
    every target of the tables it reads), the parents their ``references`` rules name (the
    full pass sees a parent's keys only when it maps the parent's tables) and their children."""
    out = dict(full)
    grew = True
    while grew:
        grew = False
        for t in targets:
            if t in out:
                continue
            for s in mapper.sources_of(t):
                other = next((u for u in out if s in mapper.sources_of(u)), None)
                if other is not None:
                    out[t] = f"shares {s} with {other}, compared in full"
                    grew = True
                    break
        for child in targets:
            for _s, _col, parent, _pcol, _ref in references_of(mapper, child):
                if child in out and parent in targets and parent not in out:
                    out[parent] = f"parent of {child}, compared in full with it"
                    grew = True
                elif parent in out and child not in out:
                    # a parent's lost delete shows only in its counts: its children's rows
                    # follow it without an xmin of their own
                    out[child] = f"child of {parent}, compared in full with it"
                    grew = True
    return out
