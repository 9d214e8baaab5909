"""The batch planner (crossfade.sync.planner) without a broker or a database: framed Avro records
in simple message objects, through decode, poison holds, per-table steps and positions."""

from __future__ import annotations

import json

from crossfade.events.kafka import CONTROL_HEADER
from crossfade.events.model import ChangeEvent
from crossfade.sync.planner import Marker, Run, Truncate
from tests.sync_records import TOPIC, Batch, Msg


def _keys(run: Run) -> list[int]:
    return [e.key["id"] for e in run.events if e.key is not None]


def test_runs_are_cut_at_truncates_and_markers_and_positions_follow_the_last_record() -> None:
    b = Batch()
    msgs = [
        b.change(1, 10),
        b.change(2, 11),
        b.control("fence", 12),
        b.change(3, 13),
        b.change(0, 14, op="t"),
        b.change(4, 15),
        Msg(TOPIC, 0, b._next(0), b"k", None),  # a tombstone: nothing to apply, offset counts
    ]
    p = b.planner()
    plan = p.decode({(TOPIC, 0): msgs})
    plan.settle([], p)
    assert not plan.dead and not plan.held and not plan.suspects
    [(table, [pp])] = plan.tables(["public.other", "public.t"])
    assert table == "public.t" and pp.next_offset == 7 and not pp.replay_done
    steps = pp.steps()
    assert [type(s) for s in steps] == [Run, Marker, Run, Truncate, Run]
    assert [_keys(s) for s in steps if isinstance(s, Run)] == [[1, 2], [3], [4]]
    assert all(not s.replay for s in steps if isinstance(s, Run))
    marker = steps[1]
    assert isinstance(marker, Marker) and marker.record.kind == "fence"
    assert plan.origins == {}  # identity table: nothing kept to re-run


def test_a_run_never_spans_the_end_of_a_replay() -> None:
    b = Batch()
    msgs = [b.change(k, 10 + k) for k in range(5)]
    p = b.planner()
    p.replay_until[(TOPIC, 0)] = 3  # offsets 0..2 were applied once: the replay guard
    plan = p.decode({(TOPIC, 0): msgs})
    plan.settle([], p)
    pp = plan.partitions[(TOPIC, 0)]
    assert pp.replayed == 3 and pp.replay_done
    runs = pp.steps()
    assert [(_keys(r), r.replay) for r in runs if isinstance(r, Run)] == [
        ([0, 1, 2], True),
        ([3, 4], False),
    ]


def test_an_undecodable_record_is_a_dead_letter_and_holds_its_keys_later_changes() -> None:
    b = Batch()
    msgs = [b.change(1, 10), b.broken(1), b.change(1, 12), b.change(2, 13)]
    p = b.planner(mapped=True)
    plan = p.decode({(TOPIC, 0): msgs})
    plan.settle([], p)  # poisoned in this batch: held without asking the target
    [dead] = plan.dead
    assert dead.entry == f"@{TOPIC}/0/1" and dead.key_id == json.dumps({"id": 1})
    row = dead.ledger_row()
    assert (row.outcome, row.rule, row.source_key) == ("dead_letter", "decode", {"id": 1})
    assert row.origin is not None and row.origin.offset == 1
    [held] = plan.held
    assert held.outcome == "held" and held.entry == f"@{TOPIC}/0/2"
    assert f"@{TOPIC}/0/1" in (held.reason or "")
    pp = plan.partitions[(TOPIC, 0)]
    assert [e.key for e in pp.items if isinstance(e, ChangeEvent)] == [{"id": 1}, {"id": 2}]
    assert len(plan.origins) == 2  # mapped table: both changes keep where they were read
    assert plan.dead_in((TOPIC, 0), []) == 1 and pp.next_offset == 4
    assert p.poisoned == {("public.t", json.dumps({"id": 1})): f"@{TOPIC}/0/1"}


def test_a_key_poisoned_earlier_waits_while_the_target_says_its_dead_letter_is_open() -> None:
    b = Batch()
    kid = json.dumps({"id": 7})
    msgs = [b.change(7, 20), b.change(8, 21)]
    for still_open, held in (([f"@{TOPIC}/0/99"], 1), ([], 0)):
        p = b.planner()
        p.poisoned[("public.t", kid)] = f"@{TOPIC}/0/99"
        plan = p.decode({(TOPIC, 0): msgs})
        assert plan.suspects == {("public.t", kid): f"@{TOPIC}/0/99"}
        plan.settle(still_open, p)
        assert len(plan.held) == held
        assert len(plan.partitions[(TOPIC, 0)].items) == 2 - held
        # released (a dlq replay resolved it): the key is no longer poisoned
        assert (("public.t", kid) in p.poisoned) == bool(held)


def test_a_key_released_and_poisoned_again_in_the_same_batch_stays_poisoned() -> None:
    b = Batch()
    kid = json.dumps({"id": 7})
    msgs = [b.change(7, 20), b.broken(7), b.change(7, 22)]
    p = b.planner()
    p.poisoned[("public.t", kid)] = "@old"
    plan = p.decode({(TOPIC, 0): msgs})
    plan.settle([], p)  # the old dead letter was resolved; the new one holds offset 2
    assert [h.entry for h in plan.held] == [f"@{TOPIC}/0/2"]
    assert len(plan.partitions[(TOPIC, 0)].items) == 1
    assert p.poisoned[("public.t", kid)] == f"@{TOPIC}/0/1"


def test_a_corrupt_control_record_is_a_dead_letter_and_partitions_stay_apart() -> None:
    b = Batch()
    bad = Msg(TOPIC, 1, b._next(1), None, b"not json", [(CONTROL_HEADER, b"fence")])
    p = b.planner()
    plan = p.decode({(TOPIC, 0): [b.change(1, 10)], (TOPIC, 1): [bad, b.control("sweep", 11, 1)]})
    plan.settle([], p)
    [dead] = plan.dead
    assert dead.reason.startswith("corrupt control record") and dead.key_id is None
    assert plan.dead_in((TOPIC, 1), []) == 1 and plan.dead_in((TOPIC, 0), []) == 0
    [(_t, pps)] = plan.tables(["public.t"])
    assert [pp.tp for pp in pps] == [(TOPIC, 0), (TOPIC, 1)]
    steps = plan.partitions[(TOPIC, 1)].steps()
    assert len(steps) == 1 and isinstance(steps[0], Marker) and steps[0].record.kind == "sweep"
