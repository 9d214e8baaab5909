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


def test_a_checkpoint_before_the_copy_load_ended_is_refused_naming_debezium() -> None:
    """``capture.initial_load: copy``: the copied rows are not in the topics, so a rewind to a
    checkpoint older than the load's end could not replay them (it would leave them silently as
    they are); a later checkpoint, or an epoch loaded by Debezium, rewinds."""
    from datetime import timedelta

    from crossfade.cutover.checkpoint import check_not_before_copy_load
    from crossfade.target.store import CopyLoadMark

    cp = _cp(("t.a", 0, 3))
    check_not_before_copy_load(cp, None)  # the epoch was loaded by Debezium
    check_not_before_copy_load(cp, CopyLoadMark("e1", cp.created_at - timedelta(seconds=1)))
    for mark, says in [
        (CopyLoadMark("e1", cp.created_at + timedelta(seconds=1)), "ended at"),
        (CopyLoadMark("e1", None), "has not ended"),
    ]:
        with pytest.raises(CrossfadeError) as exc:
            check_not_before_copy_load(cp, mark)
        msg = str(exc.value)
        assert "\n" not in msg and says in msg, msg
        assert "before the initial COPY load of broker epoch e1" in msg, msg
        assert "capture.initial_load: debezium" in msg and "capture.state_dir" in msg, msg
