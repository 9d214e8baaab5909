"""Deduplication's bookkeeping (``<bookkeeping>.dedup_members``, its index by block key
``dedup_blocks`` and ``crosswalk``): what sync's dedup sink (crossfade.sync.sinks.dedup) reads
and writes in its batch transaction, what children resolve through the crosswalk, ``crossfade
dedup explain``'s reads, and what the status and the console count of it. The caller owns the
transaction; every function here that writes or removes members keeps ``dedup_blocks`` in it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from crossfade.target.store.schema import has_table
from crossfade.target.store.staging import stage_and_merge, text_array


def merged_members(conn: psycopg.Connection, schema: str) -> dict[str, int]:
    """Per deduplicated target table: live members that are merged into another's golden
    record (they have no row of their own)."""
    if not (has_table(conn, schema, "dedup_members") and has_table(conn, schema, "crosswalk")):
        return {}
    return {
        t: int(n)
        for t, n in conn.execute(
            sql.SQL(
                "SELECT m.target_table, count(*) FROM {s}.dedup_members m JOIN {s}.crosswalk c "
                "USING (target_table, member_key) WHERE NOT m.deleted AND c.survivor_key <> c.member_key "
                "GROUP BY 1"
            ).format(s=sql.Identifier(schema))
        ).fetchall()
    }


def member_positions(
    conn: psycopg.Connection, schema: str, table: str, member_keys: list[str]
) -> dict[str, tuple[int, list[str]]]:
    """Members of deduplicated ``table`` among ``member_keys``: key -> (position, block keys)."""
    return {
        r[0]: (int(r[1]), list(r[2] or []))
        for r in conn.execute(
            sql.SQL(
                "SELECT member_key, position, block_keys FROM {}.dedup_members WHERE target_table = %s "
                "AND member_key = ANY(%b::text[])"
            ).format(sql.Identifier(schema)),
            (table, member_keys),
        ).fetchall()
    }


def write_members(
    conn: psycopg.Connection,
    schema: str,
    table: str,
    upserts: list[tuple[Any, ...]],
    deletes: list[tuple[Any, ...]],
) -> None:
    """Upsert members of deduplicated ``table``: (member key, key, block keys, row, position)
    rows, and mark deleted ones: (member key, key, position) rows (a key in both: the delete
    comes second, as if the rows were written one by one, upserts first).

    Set-based (issue 22): the rows are COPYed into a staging table and merged by member key in
    one statement for the upserts, then one for the deletes, each locking its rows in member
    key order. A deleted member keeps the key it had (its upsert's, when the batch has one)."""
    if not upserts and not deletes:
        return
    staged: dict[str, tuple[Any, ...]] = {}
    for mk, key, blocks, row, pos in upserts:
        staged[mk] = (mk, key, text_array(conn, blocks), row, pos, False, False)
    for mk, key, pos in deletes:
        had = staged.get(mk)
        # upserted (or deleted) earlier in the batch: that row's key stays, as it would have
        staged[mk] = (mk, had[1] if had else key, "{}", None, pos, True, had is None or had[6])
    bk = sql.Identifier(schema)

    def merge(stage: sql.Identifier) -> list[tuple[sql.Composed, Sequence[Any]]]:
        q = sql.SQL(
            "INSERT INTO {bk}.dedup_members AS m (target_table, member_key, key, source_table, "
            "block_keys, row, position, deleted) SELECT %s, member_key, key, NULL, block_keys, row, "
            "position, deleted FROM {stage} WHERE keep_key = %s ORDER BY member_key "
            "ON CONFLICT (target_table, member_key) DO UPDATE SET {sets}"
        )
        upsert = sql.SQL(
            "key = EXCLUDED.key, block_keys = EXCLUDED.block_keys, row = EXCLUDED.row, "
            "position = EXCLUDED.position, deleted = EXCLUDED.deleted"
        )
        delete = sql.SQL(  # keeps the key the member had
            "block_keys = '{}', row = NULL, position = EXCLUDED.position, deleted = true"
        )
        return [
            (q.format(bk=bk, stage=stage, sets=upsert), (table, False)),
            (q.format(bk=bk, stage=stage, sets=delete), (table, True)),
            *_rewrite_blocks(bk, stage, table),
        ]

    stage_and_merge(
        conn,
        sql.SQL("{}.dedup_members").format(bk),
        ["member_key", "key", "block_keys", "row", "position", "deleted"],
        staged.values(),
        merge,
        extra=[("keep_key", "boolean")],
    )


def _rewrite_blocks(
    bk: sql.Identifier, stage: sql.Identifier, table: str
) -> list[tuple[sql.Composed, Sequence[Any]]]:
    """The statements that make ``dedup_blocks`` of the staged members what their
    ``dedup_members`` rows (just merged from the same stage) say: a staged row's block keys and
    deleted flag are those its member row now holds (a delete's: ``{}`` and true). Read from
    the stage in the merge's pipeline, not looked up again in ``dedup_members`` by the batch's
    member keys sent once more as an array (a round trip, the array's dump, and an index probe
    per member on the target, issue 22). Rows that stay are left alone (a member rewritten with
    the blocks it had, the common case, deletes and inserts nothing)."""
    return [
        (
            sql.SQL(
                "DELETE FROM {bk}.dedup_blocks d USING {stage} s WHERE d.target_table = %s "
                "AND d.member_key = s.member_key AND (s.deleted OR d.block_key <> ALL(s.block_keys))"
            ).format(bk=bk, stage=stage),
            (table,),
        ),
        (
            sql.SQL(
                "INSERT INTO {bk}.dedup_blocks (target_table, block_key, member_key) "
                "SELECT %s, b, s.member_key FROM {stage} s, unnest(s.block_keys) b "
                "WHERE NOT s.deleted ON CONFLICT DO NOTHING"
            ).format(bk=bk, stage=stage),
            (table,),
        ),
    ]


def group_mates(
    conn: psycopg.Connection, schema: str, table: str, member_keys: list[str]
) -> set[str]:
    """Member keys of ``table`` in the crosswalk groups (same survivor) of ``member_keys``."""
    return {
        r[0]
        for r in conn.execute(
            sql.SQL(
                "SELECT c2.member_key FROM {bk}.crosswalk c1 JOIN {bk}.crosswalk c2 ON c2.target_table = c1.target_table "
                "AND c2.survivor_key = c1.survivor_key WHERE c1.target_table = %s AND c1.member_key = ANY(%b::text[])"
            ).format(bk=sql.Identifier(schema)),
            (table, member_keys),
        ).fetchall()
    }


def block_sizes(
    conn: psycopg.Connection, schema: str, table: str, blocks: list[str]
) -> dict[str, int]:
    """Live members of ``table`` per block key among ``blocks`` (a block with none is absent)."""
    if not blocks:
        return {}
    rows = conn.execute(
        sql.SQL(
            "SELECT block_key, count(*) FROM {bk}.dedup_blocks WHERE target_table = %s "
            "AND block_key = ANY(%b::text[]) GROUP BY block_key"
        ).format(bk=sql.Identifier(schema)),
        (table, blocks),
    ).fetchall()
    return {b: int(n) for b, n in rows}


def grouped_in_blocks(
    conn: psycopg.Connection, schema: str, table: str, blocks: list[str]
) -> set[str]:
    """Live members of ``table`` sharing one of ``blocks`` that the crosswalk holds in a group
    of two or more (merged into a survivor, or a survivor of others)."""
    if not blocks:
        return set()
    return {
        r[0]
        for r in conn.execute(
            sql.SQL(
                "SELECT DISTINCT b.member_key FROM {bk}.dedup_blocks b JOIN {bk}.crosswalk c "
                "ON c.target_table = b.target_table AND c.member_key = b.member_key "
                "WHERE b.target_table = %s AND b.block_key = ANY(%b::text[]) "
                "AND (c.survivor_key <> c.member_key OR EXISTS (SELECT 1 FROM {bk}.crosswalk o "
                "WHERE o.target_table = c.target_table AND o.survivor_key = c.member_key "
                "AND o.member_key <> c.member_key))"
            ).format(bk=sql.Identifier(schema)),
            (table, blocks),
        ).fetchall()
    }


def live_members(
    conn: psycopg.Connection, schema: str, table: str, member_keys: list[str], blocks: list[str]
) -> list[tuple[str, list[Any], dict[str, Any], Any, list[str] | None]]:
    """Live (not deleted) members of ``table`` among ``member_keys`` or sharing one of
    ``blocks``: (member key, key, row, position, block keys) rows.

    The members sharing a block are found in ``dedup_blocks`` (one row per member and block key,
    a btree on the block key), not in ``dedup_members``' arrays: a sync batch's regroup sends
    ~5,000 keys and ~8,600 blocks, for which the planner scans the table whatever the operator
    (``block_keys && blocks`` with a GIN index: 13-35 s per call over 40k members; ``unnest(...)
    = ANY``: a scan of every member on each call, 45% of a mapped load's sampled target
    sessions, issue 22), and the regroup's later calls with a few blocks each scanned it too."""
    return conn.execute(
        sql.SQL(
            "SELECT member_key, key, row, position, block_keys FROM {bk}.dedup_members "
            "WHERE target_table = %s AND NOT deleted AND member_key IN ("
            "SELECT unnest(%b::text[]) UNION SELECT member_key FROM {bk}.dedup_blocks "
            "WHERE target_table = %s AND block_key = ANY(%b::text[]))"
        ).format(bk=sql.Identifier(schema)),
        (table, member_keys, table, blocks),
    ).fetchall()


def group_positions(
    conn: psycopg.Connection, schema: str, table: str, member_keys: list[str]
) -> dict[str, int]:
    """Per member key of deduplicated ``table`` (among ``member_keys``): the newest position of
    the members of the group sync holds it in (every member of its crosswalk survivor's group,
    itself included, deleted or not): no later change than that wrote or removed its row."""
    if not member_keys or not has_table(conn, schema, "crosswalk"):
        return {}
    rows = conn.execute(
        sql.SQL(
            "SELECT k, max(p) FROM ("
            "SELECT c1.member_key AS k, m.position AS p FROM {bk}.crosswalk c1 "
            "JOIN {bk}.crosswalk c2 ON c2.target_table = c1.target_table "
            "AND c2.survivor_key = c1.survivor_key "
            "JOIN {bk}.dedup_members m ON m.target_table = c2.target_table "
            "AND m.member_key = c2.member_key "
            "WHERE c1.target_table = %s AND c1.member_key = ANY(%b::text[]) "
            "UNION ALL SELECT member_key, position FROM {bk}.dedup_members "
            "WHERE target_table = %s AND member_key = ANY(%b::text[])) g GROUP BY k"
        ).format(bk=sql.Identifier(schema)),
        (table, member_keys, table, member_keys),
    ).fetchall()
    return {r[0]: int(r[1]) for r in rows}


def survivor_keys(
    conn: psycopg.Connection, schema: str, table: str, member_keys: list[str]
) -> dict[str, str]:
    """Crosswalk of ``table``: member key -> survivor key, for those of ``member_keys`` in it."""
    return dict(
        conn.execute(
            sql.SQL(
                "SELECT member_key, survivor_key FROM {}.crosswalk WHERE target_table = %s AND member_key = ANY(%b::text[])"
            ).format(sql.Identifier(schema)),
            (table, member_keys),
        ).fetchall()
    )


def write_crosswalk(
    conn: psycopg.Connection,
    schema: str,
    table: str,
    entries: list[tuple[Any, ...]],
    dropped: list[str],
) -> None:
    """Upsert crosswalk entries of ``table``: (target table, member key, survivor key, survivor,
    rule, evidence) rows (an entry given twice: the last one), then delete the entries of the
    ``dropped`` member keys.

    Set-based (issue 22): the entries are COPYed into a staging table and merged in one
    statement, which locks their rows in (target table, member key) order."""
    bk = sql.Identifier(schema)
    cols = ["target_table", "member_key", "survivor_key", "survivor", "rule", "evidence"]
    if entries:
        stage_and_merge(
            conn,
            sql.SQL("{}.crosswalk").format(bk),
            cols,
            {(e[0], e[1]): e for e in entries}.values(),
            lambda stage: [
                (
                    sql.SQL(
                        "INSERT INTO {bk}.crosswalk ({cols}) SELECT {cols} FROM {stage} "
                        "ORDER BY target_table, member_key ON CONFLICT (target_table, member_key) "
                        "DO UPDATE SET survivor_key = EXCLUDED.survivor_key, survivor = EXCLUDED.survivor, "
                        "rule = EXCLUDED.rule, evidence = EXCLUDED.evidence, updated_at = now()"
                    ).format(
                        bk=bk, cols=sql.SQL(", ").join(map(sql.Identifier, cols)), stage=stage
                    ),
                    (),
                )
            ],
        )
    if dropped:
        conn.execute(
            sql.SQL(
                "DELETE FROM {}.crosswalk WHERE target_table = %s AND member_key = ANY(%b::text[])"
            ).format(bk),
            (table, dropped),
        )


def forget_members_below(conn: psycopg.Connection, schema: str, table: str, pos: int) -> None:
    """A TRUNCATE (or a re-snapshot's sweep) of ``table`` at ``pos``: drop its members older than
    ``pos`` and the crosswalk entries of members no longer there."""
    bk = sql.Identifier(schema)
    conn.execute(
        sql.SQL(
            "WITH gone AS (DELETE FROM {bk}.dedup_members WHERE target_table = %s AND position < %s "
            "RETURNING member_key) DELETE FROM {bk}.dedup_blocks WHERE target_table = %s "
            "AND member_key IN (SELECT member_key FROM gone)"
        ).format(bk=bk),
        (table, pos, table),
    )
    conn.execute(
        sql.SQL(
            "DELETE FROM {}.crosswalk c WHERE target_table = %s AND NOT EXISTS (SELECT 1 FROM {}.dedup_members m "
            "WHERE m.target_table = c.target_table AND m.member_key = c.member_key)"
        ).format(bk, bk),
        (table,),
    )


def share_survivors(
    conn: psycopg.Connection, schema: str, table: str, member_keys: list[str]
) -> dict[str, list[Any]]:
    """member key -> survivor key (JSON array) of ``table``, the crosswalk rows read
    share-locked until the caller commits."""
    rows = conn.execute(
        sql.SQL(
            "SELECT member_key, survivor FROM {}.crosswalk WHERE target_table = %s AND member_key = ANY(%b::text[]) "
            "ORDER BY member_key FOR SHARE"
        ).format(sql.Identifier(schema)),
        (table, member_keys),
    ).fetchall()
    return {r[0]: list(r[1]) for r in rows}


def share_member(conn: psycopg.Connection, schema: str, table: str, member_key: str) -> bool:
    """Whether ``member_key`` of ``table`` is in the crosswalk (its row share-locked until the
    caller commits)."""
    row = conn.execute(
        sql.SQL(
            "SELECT 1 FROM {}.crosswalk WHERE target_table = %s AND member_key = %s FOR SHARE"
        ).format(sql.Identifier(schema)),
        (table, member_key),
    ).fetchone()
    return row is not None


def crosswalk_entries(
    conn: psycopg.Connection, schema: str, member_keys: list[str], table: str | None
) -> list[tuple[str, str, str]]:
    """(target table, member key, survivor key) of the crosswalk entries of ``member_keys``, in
    ``table`` or in any deduplicated table."""
    cond = sql.SQL("member_key = ANY(%s)") + (
        sql.SQL(" AND target_table = %s") if table else sql.SQL("")
    )
    return conn.execute(
        sql.SQL("SELECT target_table, member_key, survivor_key FROM {}.crosswalk WHERE ").format(
            sql.Identifier(schema)
        )
        + cond,
        [member_keys, *([table] if table else [])],
    ).fetchall()


def crosswalk_group(
    conn: psycopg.Connection, schema: str, table: str, survivor_key: str
) -> list[tuple[str, str | None, Any, Any]]:
    """The members of ``survivor_key``'s group in ``table``: (member key, rule, evidence, row),
    by member key."""
    return conn.execute(
        sql.SQL(
            "SELECT c.member_key, c.rule, c.evidence, m.row FROM {bk}.crosswalk c LEFT JOIN {bk}.dedup_members m "
            "ON m.target_table = c.target_table AND m.member_key = c.member_key "
            "WHERE c.target_table = %s AND c.survivor_key = %s ORDER BY c.member_key"
        ).format(bk=sql.Identifier(schema)),
        (table, survivor_key),
    ).fetchall()


def member_block_keys(conn: psycopg.Connection, schema: str, table: str) -> dict[str, list[str]]:
    """Live members of deduplicated ``table``: member key -> its stored block keys (the full
    verify checks them against the mapping of the legacy rows: the index the delta trusts)."""
    if not has_table(conn, schema, "dedup_members"):
        return {}
    return {
        r[0]: list(r[1] or [])
        for r in conn.execute(
            sql.SQL(
                "SELECT member_key, block_keys FROM {}.dedup_members WHERE target_table = %s AND NOT deleted"
            ).format(sql.Identifier(schema)),
            (table,),
        ).fetchall()
    }


def members_by_blocks(
    conn: psycopg.Connection, schema: str, table: str, blocks: list[str]
) -> dict[str, list[str]]:
    """Live members of ``table`` sharing one of ``blocks`` (found in ``dedup_blocks``, as
    :func:`live_members` does): member key -> stored block keys."""
    if not blocks:
        return {}
    return {
        r[0]: list(r[1] or [])
        for r in conn.execute(
            sql.SQL(
                "SELECT member_key, block_keys FROM {bk}.dedup_members WHERE target_table = %s "
                "AND NOT deleted AND member_key IN (SELECT member_key FROM {bk}.dedup_blocks "
                "WHERE target_table = %s AND block_key = ANY(%b::text[]))"
            ).format(bk=sql.Identifier(schema)),
            (table, table, blocks),
        ).fetchall()
    }


def stored_blocks(
    conn: psycopg.Connection, schema: str, table: str, member_keys: list[str]
) -> dict[str, list[str]]:
    """Stored block keys of ``member_keys`` of ``table`` (deleted members: none)."""
    return {
        r[0]: list(r[1] or [])
        for r in conn.execute(
            sql.SQL(
                "SELECT member_key, block_keys FROM {}.dedup_members WHERE target_table = %s "
                "AND member_key = ANY(%b::text[])"
            ).format(sql.Identifier(schema)),
            (table, member_keys),
        ).fetchall()
    }


def members_written_since(
    conn: psycopg.Connection, schema: str, table: str, since: sql.Composable
) -> list[str]:
    """Member keys of ``table`` whose ``dedup_members`` row matches ``since`` (a
    :func:`crossfade.catalog.written_since` predicate on alias ``r``)."""
    if not has_table(conn, schema, "dedup_members"):
        return []
    return [
        r[0]
        for r in conn.execute(
            sql.SQL(
                "SELECT r.member_key FROM {}.dedup_members r WHERE r.target_table = %s AND {}"
            ).format(sql.Identifier(schema), since),
            (table,),
        ).fetchall()
    ]
