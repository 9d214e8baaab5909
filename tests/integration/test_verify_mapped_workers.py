"""verify of mapped tables with the rows mapped in worker processes
(:mod:`crossfade.verify.mapped_pool`) says exactly what one process says.

test_audit's messy CRM (duplicates merged into golden records, dead letters, filtered members,
notes of merged members redirected to survivors) synced through its mapping, then differences
planted in the target: a person missing, one extra, one changed, an extra note, and a dead letter
forgotten by the ledger (an account that does not close). Batches are made small, so each table
spans many of them, taken by two workers in any order.
"""

from __future__ import annotations

from typing import Any

import pytest

from crossfade.verify import mapped, mapped_pool
from crossfade.verify.mapped import MappedRun, Want, run_mapped
from crossfade.verify.run import Verifier
from tests.conftest import Stack
from tests.integration.test_verify_mapped_live import _synced_crm

pytestmark = pytest.mark.integration

SOURCES = ["public.members", "public.notes"]


def digest(r: MappedRun) -> dict[str, Any]:
    """Everything a run found, but its timing."""
    return {
        "targets": {
            t: (
                x.expected_rows,
                x.target_rows,
                x.n_missing,
                x.n_extra,
                x.n_different,
                x.merged,
                sorted(map(repr, x.differing.items())),
                x.examples,
            )
            for t, x in r.targets.items()
        },
        "accounts": {
            s: (a.as_dict(), sorted(a.rejected), sorted(a.filtered), a.problem())
            for s, a in r.accounts.items()
        },
        "expected": r.expected,
        "outcomes": r.outcomes,
        "producers": r.producers,
        "dedup": r.dedup,
    }


def report(stack: Stack, workers: int) -> list[dict[str, Any]]:
    rep = Verifier(stack.settings, fence_recheck=False, workers=workers).run(record=False)
    drop = {"seconds"}
    return [{k: v for k, v in t.as_dict().items() if k not in drop} for t in rep.tables]


def test_workers_map_to_the_same_report_as_one_process(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    members, notes, _sync = _synced_crm(stack)
    bk = stack.settings.sync.bookkeeping_schema
    with stack.tgt() as t:
        people = [r[0] for r in t.execute("SELECT legacy_id FROM crm.people ORDER BY 1")]
        assert len(people) > 20, people
        t.execute("DELETE FROM crm.people WHERE legacy_id = %s", (people[3],))
        t.execute("UPDATE crm.people SET full_name = 'Planted' WHERE legacy_id = %s", (people[7],))
        t.execute(
            "INSERT INTO crm.people (legacy_id, full_name, email) VALUES (999999, 'x', 'x@y.z')"
        )
        t.execute("DELETE FROM crm.notes WHERE legacy_id = (SELECT max(legacy_id) FROM crm.notes)")
        t.execute(
            f"DELETE FROM {bk}.ledger WHERE ctid = (SELECT min(ctid) FROM {bk}.ledger "
            "WHERE source_table = 'public.members' AND outcome = 'dead_letter')"
        )
    monkeypatch.setattr(mapped_pool, "BATCH_ROWS", 7)
    pooled: list[tuple[str, int]] = []
    real = mapped.mapped_rows

    def spy(legacy: Any, run: Any, source: str, workers: int) -> Any:
        rows = 0
        for row in real(legacy, run, source, workers):
            rows += 1
            yield row
        pooled.append((source, rows))

    monkeypatch.setattr(mapped, "mapped_rows", spy)
    want = Want({"crm.people": [(people[0],), (people[3],)]}, {"public.members": {"[1]", "[2]"}})
    one = digest(run_mapped(stack.settings, SOURCES, want=want, workers=1))
    assert pooled == []
    two = digest(run_mapped(stack.settings, SOURCES, want=want, workers=2))
    # both tables went through the workers, every row of them
    assert sorted(pooled) == sorted(
        [("public.members", len(members)), ("public.notes", len(notes))]
    )
    assert two == one
    people_res, notes_res = one["targets"]["crm.people"], one["targets"]["crm.notes"]
    assert people_res[2:5] == (1, 1, 1), people_res  # missing, extra, different: as planted
    assert notes_res[2:5] == (1, 0, 0), notes_res
    assert one["accounts"]["public.members"][3] is not None  # the dead letter forgotten
    assert report(stack, 2) == report(stack, 1)
