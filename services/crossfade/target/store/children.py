"""Children of ``references`` rules (``<bookkeeping>.child_refs``, with the ``ledger`` rows it
points at): what sync's parent/child bookkeeping (crossfade.sync.children) reads and writes in
its batch transaction. The caller owns the transaction."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from crossfade.catalog import uncut
from crossfade.target.store.schema import has_table


def replace_child_refs(
    conn: psycopg.Connection,
    schema: str,
    source: str,
    entries: list[str],
    refs: list[tuple[str, str, str, str, str]],
) -> None:
    """Replace the child_refs of ``entries`` (child rows of ``source``) by ``refs``: (entry,
    child target, child column, parent table, parent value text) rows."""
    bk = sql.Identifier(schema)
    conn.execute(
        sql.SQL(
            "DELETE FROM {}.child_refs WHERE child_source = %s AND child_entry = ANY(%b::text[])"
        ).format(bk),
        (source, entries),
    )
    if refs:
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.child_refs (child_source, child_entry, child_target, child_column, parent_table, "
                "parent_value) SELECT %s, e, t, c, p, v FROM unnest(%b::text[], %b::text[], %b::text[], "
                "%b::text[], %b::text[]) AS x(e, t, c, p, v) ON CONFLICT DO NOTHING"
            ).format(bk),
            (
                source,
                [r[0] for r in refs],
                [r[1] for r in refs],
                [r[2] for r in refs],
                [r[3] for r in refs],
                [r[4] for r in refs],
            ),
        )


def share_ledger_states(
    conn: psycopg.Connection, schema: str, sources: list[str], entries: list[str]
) -> list[tuple[str, str, str, str | None]]:
    """(source table, entry, outcome, rule) of the ledger rows of the (``sources[i]``,
    ``entries[i]``) pairs, share-locked until the caller commits."""
    return conn.execute(
        sql.SQL(
            "SELECT l.source_table, l.entry, l.outcome, l.rule FROM {}.ledger l "
            "JOIN unnest(%b::text[], %b::text[]) AS w(s, e) ON l.source_table = w.s AND l.entry = w.e "
            "ORDER BY l.source_table, l.entry FOR SHARE OF l"
        ).format(sql.Identifier(schema)),
        (sources, entries),
    ).fetchall()


def children_ledger_rows(
    conn: psycopg.Connection, schema: str, tables: list[str], values: list[str]
) -> list[tuple[Any, ...]]:
    """Ledger rows (source_table, entry, topic, partition, offset, key, value, headers, expired)
    of the children of the parents (``tables[i]``, ``values[i]``) that must be mapped again:
    those in the target, those waiting (deferred, ``parent_left``) and dead letters whose only
    failures are references; locked ``FOR UPDATE`` until the caller commits."""
    return conn.execute(
        sql.SQL(
            'SELECT l.source_table, l.entry, l.topic, l.partition, l."offset", l.key, l.value, l.headers, '
            "l.outcome = 'deferred' AND now() >= l.deadline "
            "FROM {bk}.ledger l WHERE (l.source_table, l.entry) IN (SELECT DISTINCT r.child_source, r.child_entry "
            "FROM {bk}.child_refs r JOIN unnest(%b::text[], %b::text[]) AS w(t, v) "
            "ON r.parent_table = w.t AND r.parent_value = w.v) AND l.value IS NOT NULL "
            "AND (l.outcome IN ('mapped', 'replayed', 'deferred', 'parent_left') OR (l.outcome = 'dead_letter' "
            "AND l.failures IS NOT NULL AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(l.failures) f "
            "WHERE f->>'kind' <> 'references'))) ORDER BY l.source_table, l.entry FOR UPDATE OF l"
        ).format(bk=sql.Identifier(schema)),
        (tables, values),
    ).fetchall()


def orphaned_parent_values(
    conn: psycopg.Connection,
    schema: str,
    parent: str,
    column: str,
    type_sql: str,
    *,
    dedup: bool,
) -> list[str]:
    """Parent values of ``parent`` (schema.table) children refer to that the target no longer
    holds: for a deduplicated parent, member keys not in the crosswalk; otherwise values of
    ``column`` (of type ``type_sql``) no row of ``parent`` has."""
    bk = sql.Identifier(schema)
    if dedup:
        gone = sql.SQL(
            "NOT EXISTS (SELECT 1 FROM {}.crosswalk c WHERE c.target_table = r.parent_table "
            "AND c.member_key = r.parent_value)"
        ).format(bk)
    else:
        p_schema, name = parent.split(".", 1)
        gone = sql.SQL(
            "NOT EXISTS (SELECT 1 FROM {}.{} p WHERE p.{} = CAST(r.parent_value::jsonb->>0 AS {}))"
        ).format(
            sql.Identifier(p_schema),
            sql.Identifier(name),
            sql.Identifier(column),
            sql.SQL(uncut(type_sql)),  # a value cut to the column's length is another parent's
        )
    rows = conn.execute(
        sql.SQL(
            "SELECT DISTINCT r.parent_value FROM {}.child_refs r WHERE r.parent_table = %s AND "
        ).format(bk)
        + gone,
        (parent,),
    ).fetchall()
    return [r[0] for r in rows]


def children_of_values(
    conn: psycopg.Connection, schema: str, parent: str, values: list[str]
) -> list[tuple[str, str]]:
    """(child source table, child entry) of the child rows sync recorded as referring to these
    values (``key_text([value])``) of target table ``parent``'s referenced column."""
    if not values or not has_table(conn, schema, "child_refs"):
        return []
    return [
        (str(r[0]), str(r[1]))
        for r in conn.execute(
            sql.SQL(
                "SELECT DISTINCT child_source, child_entry FROM {}.child_refs "
                "WHERE parent_table = %s AND parent_value = ANY(%s)"
            ).format(sql.Identifier(schema)),
            (parent, values),
        ).fetchall()
    ]
