"""How many worker processes verify maps legacy rows with, and which tables they may map
(:mod:`crossfade.verify.mapped_pool`)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from crossfade.verify.mapped_pool import cpu_quota, parallel_safe, usable_cpus


def test_cpu_quota_reads_a_cgroup_limit_and_none_without_one(tmp_path: Path) -> None:
    f = tmp_path / "cpu.max"
    f.write_text("150000 100000\n")
    assert cpu_quota(f) == 1.5
    f.write_text("max 100000\n")
    assert cpu_quota(f) is None
    assert cpu_quota(tmp_path / "absent") is None


def test_usable_cpus_is_the_affinity_capped_by_the_quota_rounded_up() -> None:
    mine = len(os.sched_getaffinity(0))
    assert usable_cpus(quota=float(mine + 8)) == mine
    assert usable_cpus(quota=0.5) == 1
    if mine >= 2:
        assert usable_cpus(quota=1.2) == 2


def mapper(refs: dict[str, list[str]]) -> Any:
    """A stand-in of a Mapper: source -> the tables its one target's references point at."""

    def table(source: str) -> Any:
        rules = {
            f"c{i}": SimpleNamespace(reference=SimpleNamespace(table=t))
            for i, t in enumerate(refs[source])
        }
        rules["plain"] = SimpleNamespace(reference=None)
        return SimpleNamespace(
            targets=[SimpleNamespace(table=f"new.{source}", spec=SimpleNamespace(rules=rules))]
        )

    return SimpleNamespace(table=table)


def test_a_table_whose_rules_check_its_own_target_is_not_mapped_apart() -> None:
    m = mapper({"parents": [], "children": ["new.parents"], "tree": ["new.tree"]})
    assert parallel_safe(m, "parents")
    assert parallel_safe(m, "children")
    assert not parallel_safe(m, "tree")
