"""Duplicate matching, survivorship and the id crosswalk.

Matching runs on *mapped* rows of one target table (values already cleansed: a normalised email,
an E.164 phone). A match rule holds for two records when every one of its conditions holds:
``exact`` conditions compare values after the rule's ``normalise`` transforms (blank never
matches), ``fuzzy`` ones compare with rapidfuzz (``token_sort_ratio`` by default) against a
threshold. The exact conditions of a rule form its *blocking key*: only records sharing it are
compared, so matching is linear in the rows plus the pairs inside each block. Groups are the
connected components of "some rule matched" (union-find), and every merge keeps the rule and the
scores that made it, so it can be explained.

Survivorship builds the golden record of a group from its members, ordered by the ``recency``
column (then key): per column ``most_recent_non_empty`` (default), ``oldest_non_empty``,
``survivor`` (the survivor's own value), ``preferred_source`` (first non-empty value from the
most trusted source table, then most recent), ``longest``. The survivor — whose key the golden
record keeps — is the ``oldest`` member, the ``most_recent`` or the ``lowest_key``.

Crosswalk (design for the sync integration)
-------------------------------------------
Every legacy key resolves to the key of the record that represents it in the new database::

    CREATE TABLE <bookkeeping>.crosswalk (
        target_table text NOT NULL,
        legacy_key   text NOT NULL,     -- json array of the mapped key values of the member
        source_table text NOT NULL,
        survivor_key text NOT NULL,     -- json array of the golden record's key
        rule         text,              -- the match rule that merged it (NULL: its own survivor)
        evidence     jsonb,             -- conditions and scores (``crossfade dedup explain``)
        position     numeric NOT NULL,  -- source position of the change that last touched it
        PRIMARY KEY (target_table, legacy_key)
    );
    CREATE TABLE <bookkeeping>.dedup_members (   -- the mapped row of each member, for survivorship
        target_table text, legacy_key text, source_table text, block_keys text[], row jsonb,
        PRIMARY KEY (target_table, legacy_key));
    CREATE TABLE <bookkeeping>.dedup_blocks (    -- one row per block key of each live member
        target_table text, block_key text, member_key text,
        PRIMARY KEY (target_table, block_key, member_key));   -- how members sharing one are found

On each mapped upsert of a deduplicated target, in the batch transaction: compute
:meth:`Matcher.block_keys` of the row, load the members sharing any of them, run
:meth:`Matcher.match` against each, union the groups (a member may join two groups: they merge),
choose the survivor and recompute the golden record with :func:`survive` from the members' stored
rows, upsert it under the survivor key, write every member's crosswalk row, and delete a golden
row whose key stopped being a survivor. A delete of a member removes it and recomputes its group.
Children resolve their reference columns through the crosswalk (legacy key -> survivor key) before
their own upsert, so they point at the golden record. Audit and dry-run use the batch
:class:`Deduper` below, which does the same with everything in memory.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from crossfade.mapping.transforms import Registry, Transform, chain

if TYPE_CHECKING:
    from crossfade.config.mapping import DedupSpec, MatchRule

MAX_FUZZY_BLOCK = 500
"""A block larger than this is not compared pairwise (a placeholder value like 0000000 shared
by thousands of records is not evidence): it is reported instead."""


@dataclass(frozen=True, slots=True)
class Member:
    """One record of a deduplicated target: its key, where it came from, the values matching
    and survivorship need."""

    key: tuple[Any, ...]
    source_table: str
    source_key: tuple[Any, ...] | None
    values: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Evidence:
    """Why two members were merged."""

    a: tuple[Any, ...]
    b: tuple[Any, ...]
    rule: str
    details: tuple[tuple[str, str, Any], ...]  # (column, method, score or the shared value)

    def explain(self) -> str:
        parts = []
        for col, method, x in self.details:
            parts.append(
                f"{col} equal ({x!r})" if method == "exact" else f"{col} similar ({x:.0f}/100)"
            )
        return f"rule {self.rule}: " + ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {"a": _j(self.a), "b": _j(self.b), "rule": self.rule, "explanation": self.explain()}


def _j(v: Any) -> Any:
    return json.loads(json.dumps(v, default=str))


@dataclass
class DupGroup:
    target: str
    members: list[Member]
    survivor: Member
    golden: dict[str, Any]
    evidence: list[Evidence]

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "survivor": _j(self.survivor.key),
            "members": [
                {
                    "key": _j(m.key),
                    "source_table": m.source_table,
                    "source_key": _j(m.source_key),
                    "values": _j(m.values),
                }
                for m in self.members
            ],
            "golden": _j(self.golden),
            "evidence": [e.as_dict() for e in self.evidence],
        }


@dataclass
class _Cond:
    column: str
    method: str
    threshold: float
    scorer: Any
    norm: Transform


_encode_str = json.encoder.encode_basestring


def _block_text(parts: list[Any]) -> str:
    """``json.dumps(parts, default=str, ensure_ascii=False)``: a blocking key's text. Parts that
    are all strings (normalised values, nearly always) are spelled here, the same text without
    the encoder's set-up per key (sync computes the keys of every member of a regrouped
    component, issue 22)."""
    for p in parts:
        if type(p) is not str:
            return json.dumps(parts, default=str, ensure_ascii=False)
    return "[" + ", ".join(map(_encode_str, parts)) + "]"


class Matcher:
    """The compiled match rules of one target table (pure)."""

    def __init__(self, spec: DedupSpec, registry: Registry | None = None) -> None:
        from rapidfuzz import fuzz

        reg = registry or Registry()
        self.spec = spec
        self.rules: list[tuple[MatchRule, list[_Cond]]] = []
        for r in spec.match:
            conds = [
                _Cond(
                    c.column,
                    c.method,
                    c.threshold,
                    getattr(fuzz, c.scorer),
                    chain([reg.build(s)[1] for s in c.normalise]),
                )
                for c in r.all
            ]
            self.rules.append((r, conds))
        self._pairwise = {r.name: any(c.method == "fuzzy" for c in cs) for r, cs in self.rules}

    def compares_pairwise(self, block_key: str) -> bool:
        """Whether the members of this block are compared pair by pair (its rule has a fuzzy
        condition); an exact rule's block holds members that all match one another."""
        return self._pairwise.get(json.loads(block_key)[0], False)

    def skips(self, block_key: str, size: int) -> bool:
        """Whether a block of ``size`` members is too large to compare pairwise: it gives no
        match (:data:`MAX_FUZZY_BLOCK`), in a batch and in the live sync alike."""
        return size > MAX_FUZZY_BLOCK and self.compares_pairwise(block_key)

    @property
    def columns(self) -> list[str]:
        s = self.spec.survivorship
        cols = [c.column for r in self.spec.match for c in r.all]
        if s.recency:
            cols.append(s.recency)
        cols.extend(s.columns)
        return list(dict.fromkeys(cols))

    @staticmethod
    def _norm(cond: _Cond, v: Any) -> Any:
        if v is None:
            return None
        try:
            n = cond.norm(v)
        except ValueError:
            return None
        if n is None or (isinstance(n, str) and not n.strip()):
            return None
        return n

    def block_keys(self, values: Mapping[str, Any]) -> list[str]:
        """One blocking key per rule whose exact conditions all have a value."""
        out = []
        for r, conds in self.rules:
            parts = []
            for c in conds:
                if c.method != "exact":
                    continue
                n = self._norm(c, values.get(c.column))
                if n is None:
                    break
                parts.append(n)
            else:
                out.append(_block_text([r.name, *parts]))
        return out

    def match(
        self, a: Mapping[str, Any], b: Mapping[str, Any], rule_name: str | None = None
    ) -> tuple[str, tuple[tuple[str, str, Any], ...]] | None:
        """(rule, details) of the first rule under which ``a`` and ``b`` are the same, else None."""
        for r, conds in self.rules:
            if rule_name is not None and r.name != rule_name:
                continue
            details = []
            for c in conds:
                x, y = self._norm(c, a.get(c.column)), self._norm(c, b.get(c.column))
                if x is None or y is None:
                    break
                if c.method == "exact":
                    if x != y:
                        break
                    details.append((c.column, "exact", x))
                else:
                    score = float(c.scorer(str(x), str(y)))
                    if score < c.threshold:
                        break
                    details.append((c.column, "fuzzy", score))
            else:
                return r.name, tuple(details)
        return None


def _order_key(m: Member, recency: str | None) -> tuple[Any, ...]:
    r = m.values.get(recency) if recency else None
    return (r is not None, _sortable(r), _sortable(m.key))


def _sortable(v: Any) -> Any:
    if isinstance(v, dt.datetime) and v.tzinfo is None:
        return v.replace(tzinfo=dt.UTC)
    if isinstance(v, dt.date) and not isinstance(v, dt.datetime):
        return dt.datetime(v.year, v.month, v.day, tzinfo=dt.UTC)
    if isinstance(v, tuple):
        return tuple(str(x) for x in v)
    return v


def _empty(v: Any) -> bool:
    return v is None or (isinstance(v, str) and not v.strip())


def survive(
    spec: DedupSpec, members: list[Member], key_columns: Iterable[str] = ()
) -> tuple[Member, dict[str, Any]]:
    """(survivor, golden values) of one group; pure. Members need not be sorted. The golden
    record keeps the survivor's ``key_columns`` whatever the column rules say."""
    s = spec.survivorship
    try:
        ordered = sorted(members, key=lambda m: _order_key(m, s.recency))
    except TypeError:  # incomparable recency values: key order
        ordered = sorted(members, key=lambda m: _sortable(m.key))
    # oldest first; members without a recency value count as oldest
    if s.survivor == "oldest":
        survivor = ordered[0]
    elif s.survivor == "most_recent":
        survivor = ordered[-1]
    else:
        survivor = min(members, key=lambda m: _sortable(m.key))
    columns = list(dict.fromkeys(c for m in members for c in m.values))
    golden: dict[str, Any] = {}
    for col in columns:
        rule_spec = s.columns.get(col, s.default)
        rule = rule_spec if isinstance(rule_spec, str) else rule_spec.rule
        sources = [] if isinstance(rule_spec, str) else rule_spec.sources
        vals = [(m, m.values.get(col)) for m in ordered]
        filled = [(m, v) for m, v in vals if not _empty(v)]
        if rule == "survivor" or not filled:
            golden[col] = survivor.values.get(col)
        elif rule == "most_recent_non_empty":
            golden[col] = filled[-1][1]
        elif rule == "oldest_non_empty":
            golden[col] = filled[0][1]
        elif rule == "longest":
            golden[col] = max(filled, key=lambda mv: len(str(mv[1])))[1]
        else:  # preferred_source
            rank = {t: i for i, t in enumerate(sources)}
            golden[col] = min(
                enumerate(filled),
                key=lambda iv: (rank.get(iv[1][0].source_table, len(rank)), -iv[0]),
            )[1][1]
    for k in key_columns:
        golden[k] = survivor.values.get(k)
    return survivor, golden


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        self.parent[max(ra, rb)] = min(ra, rb)
        return True


@dataclass
class Deduper:
    """Batch deduplication of one target table (audit, dry-run): ``add`` every mapped row, then
    ``groups``. Keeps only the columns matching and survivorship need (plus ``keep``)."""

    target: str
    spec: DedupSpec
    registry: Registry | None = None
    keep: list[str] = field(default_factory=list)
    key_columns: list[str] = field(default_factory=list)
    members: list[Member] = field(default_factory=list)
    blocks: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    oversized: dict[str, int] = field(default_factory=dict)
    member_blocks: list[list[str]] = field(default_factory=list)
    """The blocking keys of each of ``members`` (same order)."""

    def __post_init__(self) -> None:
        self.matcher = Matcher(self.spec, self.registry)
        self._cols = list(dict.fromkeys([*self.key_columns, *self.matcher.columns, *self.keep]))

    def add(
        self,
        key: tuple[Any, ...],
        values: Mapping[str, Any],
        source_table: str,
        source_key: tuple[Any, ...] | None = None,
        block_keys: list[str] | None = None,
    ) -> None:
        """``block_keys``: the matcher's :meth:`Matcher.block_keys` of ``values``, when known."""
        m = Member(key, source_table, source_key, {c: values.get(c) for c in self._cols})
        i = len(self.members)
        self.members.append(m)
        keys = self.matcher.block_keys(m.values) if block_keys is None else block_keys
        self.member_blocks.append(keys)
        for bk in keys:
            self.blocks[bk].append(i)

    def groups(self) -> list[DupGroup]:
        uf = _UnionFind()
        pairs: list[tuple[int, int, Evidence]] = []
        for bk, idx in self.blocks.items():
            if len(idx) < 2:
                continue
            rule_name = json.loads(bk)[0]
            fuzzy = self.matcher.compares_pairwise(bk)
            if self.matcher.skips(bk, len(idx)):
                self.oversized[bk] = len(idx)
                continue
            if not fuzzy:  # everyone in the block shares the exact key: a chain suffices
                for a, b in zip(idx, idx[1:], strict=False):
                    got = self.matcher.match(
                        self.members[a].values, self.members[b].values, rule_name
                    )
                    if got is not None:
                        pairs.append(
                            (a, b, Evidence(self.members[a].key, self.members[b].key, *got))
                        )
                continue
            for x in range(len(idx)):
                for y in range(x + 1, len(idx)):
                    a, b = idx[x], idx[y]
                    got = self.matcher.match(
                        self.members[a].values, self.members[b].values, rule_name
                    )
                    if got is not None:
                        pairs.append(
                            (a, b, Evidence(self.members[a].key, self.members[b].key, *got))
                        )
        for a, b, _ev in pairs:
            uf.union(a, b)
        comps: dict[int, list[int]] = defaultdict(list)
        for i in uf.parent:
            comps[uf.find(i)].append(i)
        ev_by_root: dict[int, list[Evidence]] = defaultdict(list)
        for a, _b, ev in pairs:
            ev_by_root[uf.find(a)].append(ev)
        out = []
        for root, idx in comps.items():
            if len(idx) < 2:
                continue
            members = [self.members[i] for i in sorted(idx)]
            survivor, golden = survive(self.spec, members, self.key_columns)
            out.append(DupGroup(self.target, members, survivor, golden, ev_by_root[root]))
        out.sort(key=lambda g: _sortable(g.survivor.key))
        return out


def crosswalk(groups: Iterable[DupGroup]) -> dict[tuple[str, tuple[Any, ...]], tuple[Any, ...]]:
    """(target table, member key) -> survivor key, for every member of every group (a key not
    listed is its own survivor)."""
    out: dict[tuple[str, tuple[Any, ...]], tuple[Any, ...]] = {}
    for g in groups:
        for m in g.members:
            out[(g.target, m.key)] = g.survivor.key
    return out
