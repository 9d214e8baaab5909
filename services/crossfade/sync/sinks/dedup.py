"""Deduplication in the live sync: golden records, the id crosswalk, children pointing at survivors.

A target table with a ``mapping.dedup`` entry is written by a :class:`DedupWriter` instead of the
plain guarded upsert. Every mapped row is a *member*, kept in ``<bookkeeping>.dedup_members``
with its blocking keys (:meth:`crossfade.mapping.dedup.Matcher.block_keys`) and its source
position (older changes of a member are refused, as everywhere). For each batch, in the batch
transaction and under a per-target advisory lock (members of one group arrive through different
partitions and workers; only what the changes alone make, their block keys and stored rows, is
made before it: everything below reads what another batch may be writing, and a component read
before the lock would miss the members another worker is about to commit):

1. the changed members are upserted (a delete marks the member gone);
2. the *component* around them is loaded: members sharing a blocking key with a changed member
   (old or new keys, so a member that leaves a group splits it), transitively, plus the members
   of the groups they were in;
3. :class:`~crossfade.mapping.dedup.Deduper` — the same code audit and dry-run use — regroups the
   component; :func:`~crossfade.mapping.dedup.survive` builds each golden record;
4. the target gets exactly one row per group (the golden record, under the survivor's key) and
   none for merged members, written set-based (:class:`crossfade.target.golden.GoldenWriter`);
   ``<bookkeeping>.crosswalk`` maps every member key to its survivor key with the rule and
   evidence of the merge (``crossfade dedup explain``);
5. children: a column with a ``references`` rule to this target holds the survivor's key: a
   child written later resolves its member through the crosswalk (:class:`~crossfade.sync.sinks.mapped_source.
   TargetWriter`); every member whose crosswalk entry changed here (:meth:`DedupWriter.take_moved`)
   has its children mapped again in the same transaction (:mod:`crossfade.sync.children`).

The golden record is rebuilt from the stored members on every change of any of them, so a later
change to any member updates it. Members' values are stored as JSON; values that JSON has no
type for (dates, decimals) are kept as text and PostgreSQL reads them back into the column type;
a float's NaN or infinity as PostgreSQL's ``to_jsonb`` spells it (``"NaN"``, ``"Infinity"``),
read back as the float (:meth:`DedupWriter._as_mapped`).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import psycopg
from psycopg import sql

from crossfade.catalog import POS_COLUMN, TableShape
from crossfade.config.mapping import DedupSpec
from crossfade.db import float_from_json, jsonb
from crossfade.mapping.dedup import Deduper, DupGroup, Matcher
from crossfade.mapping.engine import Mapper
from crossfade.sync.key_text import key_text
from crossfade.target.apply import ApplyResult
from crossfade.target.golden import GoldenWriter
from crossfade.target.store import (
    block_sizes,
    crosswalk_entries,
    crosswalk_group,
    forget_members_below,
    group_mates,
    grouped_in_blocks,
    live_members,
    member_positions,
    share_survivors,
    survivor_keys,
    write_crosswalk,
    write_members,
)

log = logging.getLogger(__name__)

MAX_COMPONENT = 5000
"""A component larger than this is not regrouped live (a placeholder value shared by thousands
of rows is not evidence); sync stops with a message naming the blocking key."""


_FLOAT_TYPES = ("double precision", "real")
_AS_IS = (str, int, float, bool, type(None))
_JSON_TYPES = (str, int, float, list, tuple, dict)
"""What JSON encodes itself, subclasses too (``default`` is asked about anything else)."""


def _json_row(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` as JSON gives them back (``json.loads(json.dumps(..., default=str))``): what
    JSON has no type for as text. Value by value: a JSON round trip of the whole row per member
    was ~2% of sync's CPU in a mapped load; most values come back as they are, and what JSON
    has no type for comes back as ``str(v)``."""
    out: dict[str, Any] = {}
    for k, v in values.items():
        if type(k) is not str:  # JSON spells other keys its own way: the whole row, as it was
            return json.loads(json.dumps(dict(values), default=str, ensure_ascii=False))
        if type(v) in _AS_IS:  # NaN and infinities too: stored as to_jsonb's text (_as_mapped)
            out[k] = v
        elif not isinstance(v, _JSON_TYPES):  # default=str: its text (a date, a UUID, a decimal)
            out[k] = str(v)
        else:
            out[k] = json.loads(json.dumps(v, default=str, ensure_ascii=False))
    return out


class DedupWriter:
    """Writes one deduplicated target table (module docstring). Same interface as
    :class:`crossfade.sync.sinks.mapped_source.TargetWriter`."""

    def __init__(
        self,
        shape: TableShape,
        key: tuple[str, ...],
        produced: tuple[str, ...],
        spec: DedupSpec,
        mapper: Mapper,
        bookkeeping_schema: str,
    ) -> None:
        self.shape = shape
        self.key = key
        self.spec = spec
        self.mapper = mapper
        self.bk_name = bookkeeping_schema
        names = [c.name for c in shape.columns]
        self.cols = [c for c in names if c in set(produced) | set(key)]
        self.golden = GoldenWriter(shape, key, self.cols)
        """The target's rows, written set-based (crossfade.target.golden)."""
        self.target = sql.SQL("{}.{}").format(
            sql.Identifier(shape.schema), sql.Identifier(shape.name)
        )
        self.matcher = Matcher(spec, mapper.registry)
        """The compiled match rules (pure): block keys and which blocks are compared, per batch."""
        self.matcher_cols = self.matcher.columns
        self._moved: set[str] = set()
        self.floats = [c.name for c in shape.columns if c.type_sql in _FLOAT_TYPES]
        """Columns whose stored NaN and infinities are read back as floats (:meth:`_as_mapped`)."""
        self.float_key = [i for i, k in enumerate(key) if k in self.floats]

    def take_moved(self) -> list[str]:
        """Member keys (text) whose crosswalk entry changed since the last call: added, removed
        or pointing at another survivor. Their children are mapped again (sync.children)."""
        out, self._moved = sorted(self._moved), set()
        return out

    @property
    def table(self) -> str:
        return self.shape.qualified

    def _deduper(self) -> Deduper:
        return Deduper(
            self.table, self.spec, self.mapper.registry, keep=self.cols, key_columns=list(self.key)
        )

    # -- apply --------------------------------------------------------------------------------
    def apply(
        self, conn: psycopg.Connection, changes: list[Any], *, replay: bool = False
    ) -> ApplyResult:
        res = ApplyResult()
        if not changes:
            return res
        best: dict[str, Any] = {}
        for ch in changes:
            k = key_text(ch.key)
            if k not in best or ch.position >= best[k].position:
                best[k] = ch
        res.skipped = len(changes) - len(best)
        # what the changes alone make (block keys, the members' rows as stored) is made before
        # the lock: it reads nothing, and the lock orders what is read and written after it
        made = {k: self._member_row(k, ch) for k, ch in best.items()}
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"crossfade.dedup:{self.table}",)
        )
        old = member_positions(conn, self.bk_name, self.table, list(best))
        seed_blocks: set[str] = set()
        upserts: list[tuple[Any, ...]] = []
        deletes: list[tuple[Any, ...]] = []
        for k, ch in best.items():
            have = old.get(k)
            if have is not None and (
                ch.position < have[0] or (ch.position == have[0] and not replay)
            ):
                res.skipped += 1
                continue
            if have is not None:
                seed_blocks.update(have[1])
            if ch.values is None:
                deletes.append(made[k])
                res.deleted += 1
            else:
                if ch.unavailable:
                    raise_unavailable(self.table, k, ch.unavailable)
                seed_blocks.update(made[k][2])
                upserts.append(made[k])
                res.applied += 1
        if not upserts and not deletes:
            return res
        write_members(conn, self.bk_name, self.table, upserts, deletes)
        changed = {u[0] for u in upserts} | {d[0] for d in deletes}
        self._regroup(conn, changed, seed_blocks)
        return res

    def _member_row(self, k: str, ch: Any) -> tuple[Any, ...]:
        """``ch`` as :func:`~crossfade.target.store.write_members` stores it: (member key, key,
        block keys, row, position), or (member key, key, position) for a delete."""
        key = jsonb([_jv(v) for v in ch.key])
        if ch.values is None:
            return (k, key, ch.position)
        vals = {c: ch.values.get(c) for c in self.cols}
        return (k, key, self.matcher.block_keys(vals), jsonb(_json_row(vals)), ch.position)

    def _regroup(self, conn: psycopg.Connection, changed: set[str], blocks: set[str]) -> None:
        members, skipped = self._component(conn, changed, blocks)
        d = self._deduper()
        pos_of: dict[tuple[Any, ...], int] = {}
        for _mk, (key, row, pos, bks) in sorted(members.items()):
            k = tuple(key)
            # a block too large to compare gives no match: only part of it is loaded here
            d.add(k, row, self.table, block_keys=[b for b in bks if b not in skipped])
            pos_of[k] = pos
        groups = d.groups()
        in_group: dict[tuple[Any, ...], DupGroup] = {}
        for g in groups:
            for m in g.members:
                in_group[m.key] = g
        # target rows: a golden row per group, a member's own row when alone, none when merged
        rows_out: list[tuple[tuple[Any, ...], dict[str, Any], int]] = []
        gone: list[tuple[Any, ...]] = []
        for _mk, (key, row, _pos, _b) in members.items():
            k = tuple(key)
            grp = in_group.get(k)
            if grp is None:
                rows_out.append((k, row, pos_of[k]))
            elif grp.survivor.key == k:
                rows_out.append((k, grp.golden, max(pos_of[m.key] for m in grp.members)))
            else:
                gone.append(k)
        deleted_members = [mk for mk in changed if mk not in members]
        self.golden.write(
            conn,
            [(vals, pos) for _k, vals, pos in rows_out],
            [*gone, *(json.loads(mk) for mk in deleted_members)],
        )
        self._write_crosswalk(conn, members, in_group, deleted_members)

    def _component(
        self, conn: psycopg.Connection, changed: set[str], blocks: set[str]
    ) -> tuple[dict[str, tuple[list[Any], dict[str, Any], int, list[str]]], set[str]]:
        """The members to regroup around ``changed`` (whose blocks, old and new, are ``blocks``),
        and the block keys among theirs too large to compare (``Matcher.skips``).

        The changed members, the groups they were in (a member leaving splits its group), and
        transitively every member sharing a block key with one loaded. A block too large to
        compare pairwise (a switchboard's phone number under a "same phone, similar name" rule)
        gives no match, so it is not followed: only its members the crosswalk holds in a group
        are loaded (with their groups), as their group may have rested on it while it was
        smaller. An exact rule's block is followed whole: its members all match."""
        matcher = self.matcher
        members: dict[str, tuple[list[Any], dict[str, Any], int, list[str]]] = {}
        want_keys = set(changed) | group_mates(conn, self.bk_name, self.table, list(changed))
        seen_blocks: set[str] = set()
        skipped: set[str] = set()
        todo_blocks = set(blocks)
        while want_keys or todo_blocks:
            seen_blocks |= todo_blocks
            pairwise = [b for b in todo_blocks if matcher.compares_pairwise(b)]
            sizes = block_sizes(conn, self.bk_name, self.table, pairwise)
            big = {b for b in pairwise if matcher.skips(b, sizes.get(b, 0))}
            skipped |= big
            if big:
                grouped = grouped_in_blocks(conn, self.bk_name, self.table, sorted(big))
                grouped |= group_mates(conn, self.bk_name, self.table, sorted(grouped))
                want_keys |= grouped - set(members)
            rows = live_members(
                conn, self.bk_name, self.table, list(want_keys), list(todo_blocks - big)
            )
            want_keys, todo_blocks = set(), set()
            for mk, key, row, pos, bks in rows:
                if mk in members:
                    continue
                members[mk] = (*self._as_mapped(key, row), int(pos), list(bks or []))
                todo_blocks.update(b for b in bks or [] if b not in seen_blocks)
            if len(members) > MAX_COMPONENT and _linked(members) > MAX_COMPONENT:
                from crossfade.errors import SchemaMismatch

                raise SchemaMismatch(
                    f"deduplication of {self.table}: more than {MAX_COMPONENT} records share matching keys "
                    f"(e.g. {sorted(todo_blocks)[:1]})",
                    "make the match rules stricter (a placeholder value is not evidence), then restart sync",
                )
        return members, skipped

    def _as_mapped(self, key: list[Any], row: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """A member's stored key and row as the mapper gave them: a float column's NaN or
        infinity, stored as the text ``to_jsonb`` writes (crossfade.db.jsonb_dumps), read back
        as the float, so matching and survivorship see what a batch :class:`Deduper` of the
        mapped rows (audit, dry-run, verify) sees: ``float('nan')`` is not the text ``'NaN'``
        to an exact match, nor as long to ``longest``."""
        for c in self.floats:
            if type(row.get(c)) is str:
                row[c] = float_from_json(row[c])
        if self.float_key:
            key = [float_from_json(v) if i in self.float_key else v for i, v in enumerate(key)]
        return key, row

    def _write_crosswalk(
        self,
        conn: psycopg.Connection,
        members: dict[str, tuple[list[Any], dict[str, Any], int, list[str]]],
        in_group: dict[tuple[Any, ...], DupGroup],
        deleted_members: list[str],
    ) -> None:
        before = survivor_keys(conn, self.bk_name, self.table, [*members, *deleted_members])
        params = []
        for mk, (key, _row, _pos, _b) in members.items():
            g = in_group.get(tuple(key))
            survivor = list(g.survivor.key) if g else key
            sk = key_text(survivor)
            rule = evidence = None
            if g is not None and g.survivor.key != tuple(key):
                ev = [e.as_dict() for e in g.evidence]
                rule = next(
                    (
                        e["rule"]
                        for e in ev
                        if tuple(e["a"]) == tuple(key) or tuple(e["b"]) == tuple(key)
                    ),
                    ev[0]["rule"] if ev else None,
                )
                evidence = ev
            params.append(
                (
                    self.table,
                    mk,
                    sk,
                    jsonb(survivor),
                    rule,
                    jsonb(evidence) if evidence is not None else None,
                )
            )
            if before.get(mk) != sk:  # new, or another survivor: its children follow
                self._moved.add(mk)
        self._moved.update(mk for mk in deleted_members if mk in before)
        write_crosswalk(conn, self.bk_name, self.table, params, deleted_members)
        # children are not updated here: the worker maps the children of every moved member
        # again, from their own change and through the crosswalk just written (sync.children)

    def truncate(self, conn: psycopg.Connection, pos: int, reason: str) -> int:
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"crossfade.dedup:{self.table}",)
        )
        n = conn.execute(
            sql.SQL("DELETE FROM {} WHERE {} < %s OR {} IS NULL").format(
                self.target, sql.Identifier(POS_COLUMN), sql.Identifier(POS_COLUMN)
            ),
            (pos,),
        ).rowcount
        forget_members_below(conn, self.bk_name, self.table, pos)
        return n


def _jv(v: Any) -> Any:
    return v if v is None or isinstance(v, str | bool | int | float) else str(v)


def raise_unavailable(table: str, key: str, cols: Iterable[str]) -> None:
    from crossfade.errors import SchemaMismatch

    raise SchemaMismatch(
        f"an update of {table} key {key} left TOASTed column(s) {', '.join(sorted(cols))} unsent; "
        "a deduplicated table needs every value to rebuild its golden record",
        "set REPLICA IDENTITY FULL on the source table",
    )


def resolve(
    conn: psycopg.Connection, bookkeeping_schema: str, table: str, values: list[Any]
) -> dict[str, list[Any]]:
    """member key text -> survivor key, for the given single-column key values of ``table``.

    The crosswalk rows read are share-locked until the caller commits: a regroup that would move
    one of these members to another survivor waits, then maps this child again."""
    if not values:
        return {}
    return share_survivors(conn, bookkeeping_schema, table, [key_text([v]) for v in values])


def explain(
    conn: psycopg.Connection, bookkeeping_schema: str, table: str | None, key: str
) -> list[dict[str, Any]]:
    """Why a legacy key ended where it did: its survivor, the group's members, the rules and the
    evidence of each merge. ``key``: the key value (one column) or a JSON array."""
    try:
        parsed = json.loads(key)
    except ValueError:
        parsed = key
    candidates = {
        key_text(parsed) if isinstance(parsed, list) else key_text([parsed]),
        key_text([key]),
    }
    rows = crosswalk_entries(conn, bookkeeping_schema, list(candidates), table)
    out = []
    for t, mk, sk in rows:
        group = crosswalk_group(conn, bookkeeping_schema, t, sk)
        evidence: list[Any] = next((g[2] for g in group if g[2]), []) or []
        out.append(
            {
                "table": t,
                "key": json.loads(mk),
                "survivor": json.loads(sk),
                "merged": len(group) > 1,
                "members": [{"key": json.loads(g[0]), "rule": g[1], "row": g[3]} for g in group],
                "evidence": evidence,
            }
        )
    return out


def dedup_targets(mapper: Mapper) -> dict[str, DedupSpec]:
    return dict(mapper.config.dedup)


def _linked(members: Mapping[str, tuple[Any, Any, int, list[str]]]) -> int:
    """How many of ``members`` share a block key with another: the records matching keys tie
    together. A batch's own changes that share nothing (a full batch of a load: thousands of
    people, most with no duplicate) are not a component, however many."""
    uses = Counter(b for _k, _r, _p, bks in members.values() for b in set(bks))
    return sum(1 for _k, _r, _p, bks in members.values() if any(uses[b] > 1 for b in bks))
