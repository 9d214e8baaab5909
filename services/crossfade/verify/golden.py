"""What a :class:`~crossfade.mapping.dedup.Deduper` leaves for verify: the target rows of its
members (golden records) and the crosswalk, as the full pass (:mod:`crossfade.verify.mapped`)
and the verify of the changes (:mod:`crossfade.verify.dedup_delta`) both expect them, and what
the full pass keeps of its groups for the latter (:class:`~crossfade.verify.delta.DedupBase`)."""

from __future__ import annotations

import json
from typing import Any

from crossfade.mapping.dedup import Deduper, DupGroup
from crossfade.sync.key_text import key_text
from crossfade.verify.delta import DedupBase

Key = tuple[Any, ...]


def golden_rows(d: Deduper, groups: list[DupGroup]) -> tuple[list[dict[str, Any]], dict[Key, Key]]:
    """The target rows of ``d``'s members (its ``groups``): a golden record per group under its
    survivor's key, a member's own row when alone, none for a merged member; and the crosswalk
    (member key -> survivor key) of the members of groups."""
    cw: dict[Key, Key] = {}
    rows: list[dict[str, Any]] = []
    for g in groups:
        rows.append({**g.survivor.values, **g.golden})
        cw.update((m.key, g.survivor.key) for m in g.members)
    rows += [m.values for m in d.members if m.key not in cw]
    return rows, cw


def dedup_base(d: Deduper, groups: list[DupGroup], stored: dict[str, list[str]]) -> DedupBase:
    """What a full verify's :class:`Deduper` ``d`` (every member read, ``groups`` its groups)
    leaves for the delta, ``stored``: sync's block keys per member key (``dedup_members``)."""
    out = DedupBase(oversized=len(d.oversized))
    for g in groups:
        out.merged += len(g.members) - 1
        for m in g.members:
            out.groups[m.key] = g.survivor.key
    seen = set()
    for m, blocks in zip(d.members, d.member_blocks, strict=True):
        mk = key_text(m.key)
        seen.add(mk)
        if set(stored.get(mk, ["<none>"])) != set(blocks):
            out.stale.add(m.key)
    out.stale |= {tuple(json.loads(mk)) for mk in stored if mk not in seen}
    return out
