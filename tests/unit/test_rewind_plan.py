"""cutover.checkpoint.plan_rewind: each partition's replay range from a checkpoint and the stored
offsets, without a database or a broker."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from crossfade.cutover.checkpoint import RewindResult, plan_rewind
from crossfade.errors import CrossfadeError
from crossfade.target.store import Checkpoint, StoredOffset


def _cp(*offsets: tuple[str, int, int]) -> Checkpoint:
    rows = [{"topic": t, "partition": p, "next_offset": n} for t, p, n in offsets]
    return Checkpoint("cp", datetime.now(UTC), "g", "e1", None, rows)


def test_ranges_run_to_the_furthest_of_sync_and_an_unfinished_replay() -> None:
    r = RewindResult(_cp(("t.a", 0, 3), ("t.a", 1, 5)), "rid")
    stored = [
        StoredOffset("t.a", 0, 10, "e1", "o"),
        StoredOffset("t.a", 1, 5, "e1", "o"),
        StoredOffset("t.b", 0, 2, "e1", "o"),
    ]
    plan_rewind(r, stored, {("t.a", 0): 14})
    assert [(p["partition"], p["from_offset"], p["until_offset"]) for p in r.partitions] == [
        (0, 3, 14),
        (1, 5, 5),
    ]
    assert r.records == 11 and r.skipped == ["t.b[0]"]


@pytest.mark.parametrize(
    ("stored", "says"),
    [
        ([StoredOffset("t.a", 0, 2, "e1", "o")], "ahead of sync"),
        ([StoredOffset("t.a", 0, 9, "e2", "o")], "no stored offset of epoch e1"),
        ([], "no stored offset of epoch e1"),
    ],
)
def test_refuses_a_checkpoint_ahead_of_sync_or_of_another_epoch(
    stored: list[StoredOffset], says: str
) -> None:
    with pytest.raises(CrossfadeError, match=says):
        plan_rewind(RewindResult(_cp(("t.a", 0, 3)), "rid"), stored, {})
