"""The delta of deduplicated targets (crossfade.verify.dedup_delta) without a database: the
grouping of a closure over shared block keys is the grouping of all members, restricted to it
(what makes regrouping only the changed members' closure safe), the closure's bound, and which
deduplicated targets go to the full compare."""

from __future__ import annotations

import copy
import random
from collections import defaultdict
from typing import Any

import pytest

from crossfade.config.mapping import DedupSpec, MappingConfig
from crossfade.mapping.dedup import Deduper
from crossfade.mapping.engine import Mapper
from crossfade.verify.dedup_delta import closure, dedup_why
from crossfade.verify.delta import DedupBase, DeltaBase, Unsafe
from crossfade.verify.delta_plan import why_full

SPEC = DedupSpec.model_validate(
    {
        "match": [
            {"name": "same-email", "all": [{"column": "email"}]},
            {
                "name": "same-phone-similar-name",
                "all": [
                    {"column": "phone"},
                    {"column": "full_name", "method": "fuzzy", "threshold": 90},
                ],
            },
        ],
        "survivorship": {
            "recency": "updated_at",
            "survivor": "oldest",
            "default": "most_recent_non_empty",
        },
    }
)
NAMES = ["Ann Lee", "Ann Leee", "Bob Day", "Bob Dey", "Cy Po", "Dora Smith", "Dora Smyth"]


def _members(rng: random.Random, n: int) -> list[dict[str, Any]]:
    return [
        {
            "person_id": i,
            "email": None if rng.random() < 0.4 else f"e{rng.randrange(n)}@x.org",
            "phone": None if rng.random() < 0.3 else f"+1555000{rng.randrange(n // 2):04d}",
            "full_name": rng.choice(NAMES),
            "updated_at": rng.randrange(1000),
            "city": rng.choice([None, "Oslo", "Lima"]),
        }
        for i in range(n)
    ]


def _grouped(rows: list[dict[str, Any]]) -> dict[Any, tuple[Any, dict[str, Any]]]:
    """member key -> (survivor key, golden record) of every member in a group."""
    d = Deduper("app.people", SPEC, keep=["city"], key_columns=["person_id"])
    for r in rows:
        d.add((r["person_id"],), r, "public.contacts")
    return {m.key: (g.survivor.key, g.golden) for g in d.groups() for m in g.members}


@pytest.mark.parametrize("seed", range(40))
def test_a_closure_over_block_keys_groups_as_all_members_do(seed: int) -> None:
    rng = random.Random(seed)
    rows = _members(rng, 80)
    everyone = _grouped(rows)
    blocks: dict[str, set[int]] = defaultdict(set)
    keys_of: dict[int, list[str]] = {}
    matcher = Deduper("app.people", SPEC).matcher
    for r in rows:
        keys_of[r["person_id"]] = matcher.block_keys(r)
        for b in keys_of[r["person_id"]]:
            blocks[b].add(r["person_id"])

    def reach(frontier: set[int]) -> set[int]:
        return {m for i in frontier for b in keys_of[i] for m in blocks[b]}

    seeds = set(rng.sample(range(80), 3))
    closed = closure(seeds, reach, 80)
    assert seeds <= closed
    part = _grouped([r for r in rows if r["person_id"] in closed])
    # the same groups, survivors and golden records for every member of the closure
    assert part == {k: v for k, v in everyone.items() if k[0] in closed}
    # and every group that touches the closure lies in it
    for k, (survivor, _golden) in everyone.items():
        if k[0] in closed:
            assert survivor[0] in closed


def test_a_closure_past_its_bound_is_unsafe() -> None:
    def chain(frontier: set[int]) -> set[int]:
        return {i + 1 for i in frontier}

    assert closure({0}, lambda f: {i + 1 for i in f if i < 3}, 10) == {0, 1, 2, 3}
    with pytest.raises(Unsafe, match="more than 5 members to regroup"):
        closure({0}, chain, 5)


CRM: dict[str, Any] = {
    "tables": {
        "public.members": {
            "targets": [{"table": "crm.people", "columns": {"legacy_id": "id", "email": "email"}}]
        },
        "public.notes": {
            "targets": [
                {
                    "table": "crm.notes",
                    "columns": {"legacy_id": "id", "person_id": "member_id"},
                    "rules": {"person_id": {"references": "crm.people.legacy_id"}},
                }
            ]
        },
    },
    "dedup": {"crm.people": {"match": [{"name": "e", "all": [{"column": "email"}]}]}},
}
KEYS = {"public.members": ["id"], "public.notes": ["id"]}
TARGETS = ["crm.people", "crm.notes"]


def _mapper(cfg: dict[str, Any]) -> Mapper:
    return Mapper(MappingConfig.model_validate(cfg), list(KEYS), KEYS)


def test_deduplicated_targets_and_their_children_are_computed_by_delta_from_a_base() -> None:
    m = _mapper(CRM)
    assert why_full(m, "crm.people") is None and why_full(m, "crm.notes") is None
    base = DeltaBase(1, {"source": "1:1:", "target": "1:1:"})
    assert "left no duplicate groups" in (dedup_why(m, base, "crm.people", TARGETS) or "")
    assert dedup_why(m, base, "crm.notes", TARGETS) is None  # not deduplicated: follows its parent
    base.dedup["crm.people"] = DedupBase(oversized=2)
    assert "2 block(s) too large" in (dedup_why(m, base, "crm.people", TARGETS) or "")
    base.dedup["crm.people"] = DedupBase()
    assert dedup_why(m, base, "crm.people", TARGETS) is None
    # a child verified without its deduplicated parent: its survivors are not known
    assert "not verified with it" in (dedup_why(m, base, "crm.notes", ["crm.notes"]) or "")


def test_a_deduplicated_target_referring_to_a_deduplicated_one_goes_to_the_full_compare() -> None:
    cfg = copy.deepcopy(CRM)
    cfg["dedup"]["crm.notes"] = {"match": [{"name": "p", "all": [{"column": "person_id"}]}]}
    assert "deduplicated and refers to deduplicated crm.people" in (
        why_full(_mapper(cfg), "crm.notes") or ""
    )


def test_the_full_verify_keeps_its_groups_and_the_members_whose_stored_block_keys_differ() -> None:
    from crossfade.sync.key_text import key_text
    from crossfade.verify.golden import dedup_base, golden_rows

    rows = [
        {"person_id": 1, "email": "a@x.org", "phone": None, "full_name": "Ann", "updated_at": 1},
        {"person_id": 2, "email": "a@x.org", "phone": None, "full_name": "Ann", "updated_at": 2},
        {"person_id": 3, "email": "c@x.org", "phone": None, "full_name": "Cy", "updated_at": 3},
        {"person_id": 4, "email": "d@x.org", "phone": None, "full_name": "Di", "updated_at": 4},
    ]
    d = Deduper("app.people", SPEC, key_columns=["person_id"])
    for r in rows:
        d.add((r["person_id"],), r, "public.contacts")
    groups = d.groups()
    stored = {key_text([r["person_id"]]): d.matcher.block_keys(r) for r in rows}
    stored[key_text([3])] = ['["same-email", "old@x.org"]']  # stale: a change sync lost
    del stored[key_text([4])]  # a member sync never stored
    stored[key_text([9])] = ['["same-email", "gone@x.org"]']  # one legacy no longer has
    base = dedup_base(d, groups, stored)
    assert base.groups == {(1,): (1,), (2,): (1,)} and base.merged == 1
    assert base.stale == {(3,), (4,), (9,)} and base.oversized == 0
    got, cw = golden_rows(d, groups)
    # a golden record for the group (the oldest's key, the newest's values), the others alone
    assert cw == {(1,): (1,), (2,): (1,)}
    assert sorted(r["person_id"] for r in got) == [1, 3, 4]
    assert next(r for r in got if r["person_id"] == 1)["updated_at"] == 2
