"""Verify of deduplicated targets (golden records) inside the write freeze, by their changes.

The duplicate groups of a target are the connected components of "a match rule holds", pairs
being compared only inside a block (members sharing a blocking key,
:meth:`crossfade.mapping.dedup.Matcher.block_keys`), and a golden record is a function of its
group's members (:func:`crossfade.mapping.dedup.survive`). So the groups of a set of members that
holds, with each member, every member sharing a block key with it (*closed over block keys*)
are the same whether :class:`~crossfade.mapping.dedup.Deduper` groups them alone or with every
other member: each block is whole in it (its size, which decides whether a fuzzy block is
compared at all, too), and a component never leaves it. Sync's dedup sink regroups the same
closure on every change.

A member whose group or golden record may differ from the full verify's is in the closure of
the *changed* members (:class:`~crossfade.verify.mapped_delta.Delta`'s affected keys of the
target: legacy rows written since, target rows written since, ledger entries written since,
keys left open) over the block keys they have now (from the mapping of their legacy row) and
had (stored in ``dedup_members``), and over the full verify's groups
(:attr:`crossfade.verify.delta.DedupBase.groups`: a member that left takes its old group with
it). Block mates are found through ``dedup_members``' block keys: the full verify checked them
against the mapping of every legacy row (the members that disagreed then, and those whose
``dedup_members`` row was written since, are regrouped whatever their ``xmin``), so a member
whose legacy row did not change since is found by the block keys its row has.

:class:`DedupDelta` extends the delta by that closure (and the members the affected children
refer to), regroups exactly those members from their legacy rows at the delta's snapshot with
the full pass's code (:func:`crossfade.verify.golden.golden_rows`), and leaves on the delta the
expected rows of their keys (a golden record, a member alone, or none for a merged member: a
golden row that should be gone is then extra), the crosswalk the children's references go
through, and the merged count the row counts check. Its children: every child of a regrouped
member is affected (through the delta's closure of a parent's children).

A deduplicated target is compared in full when the full verify left nothing of its groups (or
had blocks too large to compare), it refers to a deduplicated target itself, a block of the
closure is too large, or the closure passes the delta's limit of keys.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable
from typing import Any, TypeVar

from crossfade.catalog import written_since
from crossfade.mapping.audit import key_columns
from crossfade.mapping.dedup import Deduper
from crossfade.mapping.engine import Mapped, Mapper, TargetRow
from crossfade.sync.key_text import key_text
from crossfade.target.store.dedup import members_by_blocks, members_written_since, stored_blocks
from crossfade.verify.delta import DeltaBase, Unsafe, norm_key
from crossfade.verify.golden import golden_rows

Key = tuple[Any, ...]
K = TypeVar("K", bound=Hashable)


def closure(seeds: Iterable[K], reach: Callable[[set[K]], set[K]], limit: int) -> set[K]:
    """``seeds`` and every member ``reach`` leads to from them, transitively (``reach`` gets
    each new frontier once); Unsafe past ``limit`` members."""
    out = set(seeds)
    frontier = set(out)
    while frontier:
        if len(out) > limit:
            raise Unsafe(f"more than {limit} members to regroup")
        frontier = reach(frontier) - out
        out |= frontier
    if len(out) > limit:
        raise Unsafe(f"more than {limit} members to regroup")
    return out


def dedup_why(mapper: Mapper, base: DeltaBase, target: str, targets: list[str]) -> str | None:
    """Why ``target``'s delta (one of ``targets``) cannot start from ``base`` as to
    deduplication (None: it can): a deduplicated target needs the full verify's groups, a child
    of one needs it regrouped in the same delta (its survivors)."""
    for s in mapper.sources_of(target):
        for ct in mapper.table(s).targets:
            for _col, r, _checks in ct.rules if ct.table == target else []:
                parent = r.reference.table if r is not None and r.reference else None
                if parent in mapper.config.dedup and parent not in targets:
                    return f"refers to deduplicated {parent}, not verified with it"
    if target not in mapper.config.dedup:
        return None
    got = base.dedup.get(target)
    if got is None:
        return "deduplicated, and the full verify left no duplicate groups of it"
    if got.oversized:
        return f"deduplicated, with {got.oversized} block(s) too large to compare pairwise"
    return None


class DedupDelta:
    """The deduplicated targets of one delta ``d`` (a :class:`crossfade.verify.mapped_delta.
    Delta`): their closure and regrouping (module docstring)."""

    def __init__(self, d: Any, base: DeltaBase) -> None:
        self.d, self.base = d, base
        self.targets = [t for t in d.targets if t in d.mapper.config.dedup]
        self.dedupers = {t: self.deduper(t) for t in self.targets}
        self.mates: dict[str, dict[Key, list[Key]]] = {}
        """Per target: survivor -> members of its group in the full verify."""
        self.survivor: dict[str, dict[Key, Key]] = {}
        """Per target: member -> survivor in the full verify (keys by their text)."""
        for t in self.targets:
            self.mates[t], self.survivor[t] = defaultdict(list), {}
            for m, sk in base.dedup[t].groups.items():
                self.mates[t][norm_key(sk)].append(m)
                self.survivor[t][norm_key(m)] = norm_key(sk)
        self.asked_keys: dict[str, set[Key]] = defaultdict(set)
        self.asked_blocks: dict[str, set[str]] = defaultdict(set)

    def deduper(self, t: str) -> Deduper:
        """A :class:`Deduper` of ``t`` as the full pass makes it."""
        keep = self.d.columns(t, self.d.tgt_shapes[t])
        spec = self.d.mapper.config.dedup[t]
        return Deduper(
            t, spec, self.d.mapper.registry, keep=keep, key_columns=key_columns(self.d.mapper, t)
        )

    def seed(self) -> None:
        """The members the full verify found stale in ``dedup_members`` and those whose row
        there was written since: regrouped whatever their legacy ``xmin``."""
        since = written_since(self.base.snapshots["target"])
        for t in self.targets:
            for k in self.base.dedup[t].stale:
                self.d.add_key(t, tuple(k))
            for mk in members_written_since(self.d.tgt, self.d.bk, t, since):
                self.d.add_key(t, tuple(json.loads(mk)))

    def current(self, t: str) -> dict[Key, tuple[str, str, TargetRow]]:
        """Affected members of ``t`` with a mapped legacy row: key -> (source, entry, row)."""
        out = {}
        for s in self.d.mapper.sources_of(t):
            for e in self.d.rows[s]:
                got = self.d.outcomes.get((s, e))
                if not isinstance(got, Mapped):
                    continue
                for tr in got.rows:
                    if tr.table == t and tr.key is not None:
                        n = norm_key(tr.key)
                        if n in self.d.affected[t]:
                            out[n] = (s, e, tr)
        return out

    def reach(self, t: str, frontier: set[Key]) -> dict[Key, Key]:
        """Members sharing a block key (now or stored) with one of ``frontier`` (their legacy
        rows read), or in the full verify's group of one: by key, their key values."""
        d, now = self.d, self.current(t)
        texts = {
            n: key_text(now[n][2].key or () if n in now else d.affected[t][n]) for n in frontier
        }
        stored = stored_blocks(d.tgt, d.bk, t, sorted(set(texts.values())))
        matcher = self.dedupers[t].matcher
        blocks: set[str] = set()
        out: dict[Key, Key] = {}
        for n in frontier:
            blocks.update(stored.get(texts[n], []))
            if n in now:
                blocks.update(matcher.block_keys(now[n][2].values))
            if n in self.survivor[t]:
                out.update((norm_key(m), m) for m in self.mates[t][self.survivor[t][n]])
        blocks -= self.asked_blocks[t]
        self.asked_blocks[t] |= blocks
        for mk in members_by_blocks(d.tgt, d.bk, t, sorted(blocks)):
            k = tuple(json.loads(mk))
            out[norm_key(k)] = k
        return out

    def grow(self, t: str, limit: dict[str, int]) -> bool:
        """Add to the delta the closure of ``t``'s affected members over shared block keys and
        the full verify's groups (each frontier's legacy rows read before it is expanded)."""
        d = self.d
        before = set(d.affected[t])

        def reach(frontier: set[Key]) -> set[Key]:
            d.close(limit)  # the frontier's legacy rows (and their children's)
            if t in d.unsafe:
                raise Unsafe(d.unsafe[t])
            self.asked_keys[t] |= frontier
            found = self.reach(t, frontier)
            fresh = {n: k for n, k in found.items() if n not in self.asked_keys[t]}
            for k in fresh.values():
                d.add_key(t, k)
            return set(fresh)

        closure({n for n in before if n not in self.asked_keys[t]}, reach, limit[t])
        return set(d.affected[t]) != before

    def referred(self) -> bool:
        """Add the members the affected child rows refer to (their survivor is then known)."""
        d, grew = self.d, False
        for p in self.targets:
            if p in d.unsafe or len(d.keys[p]) != 1:
                continue
            for child, cs, col, pcol in d.children.get(p, []):
                if pcol != d.keys[p][0]:
                    continue
                for e in list(d.rows[cs]):
                    got = d.outcomes.get((cs, e))
                    for tr in got.rows if isinstance(got, Mapped) else []:
                        v = tr.values.get(col)
                        if tr.table != child or v is None or tr.key is None:
                            continue
                        if (
                            norm_key(tr.key) in d.affected[child]
                            and norm_key([v]) not in d.affected[p]
                        ):
                            d.add_key(p, (v,))
                            grew = True
        return grew

    def settle(self, limit: dict[str, int]) -> None:
        """Close the delta (its own closure, block mates, the members children refer to) until
        nothing new comes, then regroup each deduplicated target's members."""
        d = self.d
        while True:
            d.close(limit)
            grew = False
            for t in self.targets:
                if t in d.unsafe:
                    continue
                try:
                    grew = self.grow(t, limit) or grew
                except Unsafe as exc:
                    d.unsafe[t] = str(exc)
            grew = self.referred() or grew
            if not grew:
                break
        for t in self.targets:
            if t not in d.unsafe:
                self.regroup(t)

    def regroup(self, t: str) -> None:
        """The groups of ``t``'s affected members, from their legacy rows: their expected rows,
        the crosswalk and the merged count on the delta."""
        d, dd, base = self.d, self.deduper(t), self.base.dedup[t]
        for _n, (s, e, tr) in sorted(self.current(t).items(), key=lambda kv: str(kv[0])):
            assert tr.key is not None
            dd.add(tr.key, tr.values, s, (e,))
        groups = dd.groups()
        if dd.oversized:
            d.unsafe[t] = f"a block of {max(dd.oversized.values())} members to regroup"
            return
        rows, cw = golden_rows(dd, groups)
        d.golden[t] = rows
        d.crosswalk[t] = {k[0]: v[0] for k, v in cw.items() if len(k) == 1}
        merged_then = sum(1 for n in d.affected[t] if self.survivor[t].get(n, n) != n)
        merged_now = sum(len(g.members) - 1 for g in groups)
        d.merged[t] = base.merged - merged_then + merged_now


def rows_problem(d: Any, t: str, res: Any) -> str | None:
    """Why deduplicated ``t``'s row count does not add up once compared (``res``): its rows
    must be the ledger's mapped members less the merged ones (:meth:`DedupDelta.regroup`; a
    lost delete or a row deleted by hand leaves only this trace), give or take the missing and
    extra rows found among the keys compared. None: it adds up."""
    want = d.expected_rows[t] - res.n_missing + res.n_extra
    if res.target_rows != want:
        return (
            f"{t} has {res.target_rows} rows, {want} expected from sync's ledger, its merged "
            "members and the differences found"
        )
    return None
