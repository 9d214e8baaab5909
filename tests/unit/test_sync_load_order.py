"""Parents first during an initial load (crossfade.sync.load_order): which tables' partitions sync
holds back, given the tables' load states and the references graph, and when it lets them go."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pytest

from crossfade.sync.load_order import LoadOrder, LoadOrderHook, TableLoad, waits_for

A, C, D = "public.accounts", "public.contacts", "public.addresses"
CRM = {A: set(), C: {A}, D: {C}}
"""The demo CRM: contacts reference accounts, addresses reference contacts."""


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def states(done: set[str] = frozenset(), progress: dict[str, int] | None = None) -> dict:  # type: ignore[assignment]
    progress = progress or {}
    return {t: TableLoad(t in done, progress.get(t, 0)) for t in (A, C, D)}


def test_waits_for_drops_self_references_cycles_and_tables_not_loaded() -> None:
    assert waits_for(CRM) == {C: frozenset({A}), D: frozenset({C})}
    # a self-reference is no ordering
    assert waits_for({A: {A}, C: {A, C}}) == {C: frozenset({A})}
    # a cycle of tables gets no ordering, a table outside it still waits for it
    cyc = {A: {C}, C: {A}, D: {C}}
    assert waits_for(cyc) == {D: frozenset({C})}
    assert waits_for({A: {D}, C: {A}, D: {C}}) == {}  # a three-table cycle
    # a parent that is not part of this load (not a mapped table here) is not waited for
    assert waits_for({C: {A, "public.elsewhere"}, A: set()}) == {C: frozenset({A})}


def test_children_held_until_their_parents_finish_in_order() -> None:
    clock = Clock()
    order = LoadOrder(waits_for(CRM), 20.0, clock)
    assert order.decide(states(progress={A: 0}), loading=True) == {
        C: frozenset({A}),
        D: frozenset({C}),
    }
    clock.t += 5
    assert set(order.decide(states(progress={A: 500}), loading=True)) == {C, D}
    clock.t += 5
    # accounts passed its sweep markers: contacts go, addresses wait for contacts
    held = order.decide(states({A}, {A: 900}), loading=True)
    assert held == {D: frozenset({C})}
    assert C in order.released
    # contacts held for long was not idle: addresses were not released by the bound meanwhile
    clock.t += 5
    assert order.decide(states({A}, {A: 900, C: 100}), loading=False) == {D: frozenset({C})}
    assert order.decide(states({A, C}, {A: 900, C: 400}), loading=False) == {}
    assert order.settled


def test_nothing_held_outside_a_load() -> None:
    order = LoadOrder(waits_for(CRM), 20.0, Clock())
    # capture reports no load: streaming, nothing held (not released either: a load may start)
    assert order.decide(states(progress={A: 7}), loading=False) == {}
    assert not order.settled
    # every child's own snapshot finished before (streaming after a load): released for good
    order = LoadOrder(waits_for(CRM), 20.0, Clock())
    assert order.decide(states({A, C, D}), loading=False) == {}
    assert order.settled
    assert order.decide(states(), loading=True) == {}  # a later load: no ordering, never stalls


def test_released_after_the_bound_when_a_parent_makes_no_progress(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    order = LoadOrder(waits_for(CRM), 20.0, clock)
    caplog.set_level(logging.INFO, "crossfade.sync.load_order")
    order.decide(states(progress={A: 10}), loading=True)
    clock.t += 15
    assert C in order.decide(states(progress={A: 10}), loading=True)
    clock.t += 6  # 21 s without accounts moving
    held = order.decide(states(progress={A: 10}), loading=True)
    assert C not in held
    assert "made no progress for 20 s" in order.released[C]
    assert any(
        "public.contacts no longer held back" in r.message and "no progress" in r.message
        for r in caplog.records
    )
    # a parent that progresses keeps its children held past the bound, and a parent held back
    # itself (contacts, waiting for accounts) is not idle: its children (addresses) wait too
    clock2 = Clock()
    order2 = LoadOrder(waits_for(CRM), 20.0, clock2)
    for step in range(10):
        held = order2.decide(states(progress={A: step * 100}), loading=True)
        assert set(held) == {C, D}
        clock2.t += 10


def test_released_after_the_longest_hold_even_while_the_parent_progresses() -> None:
    clock = Clock()
    order = LoadOrder(waits_for(CRM), 1.0, clock)  # the longest hold: 30 s
    for step in range(29):
        assert C in order.decide(states(progress={A: step}), loading=True)
        clock.t += 1
    clock.t += 1
    assert C not in order.decide(states(progress={A: 99}), loading=True)
    assert order.released[C].startswith("held for 30 s")


def test_sync_paused_is_not_a_parent_without_progress() -> None:
    clock = Clock()
    order = LoadOrder(waits_for(CRM), 20.0, clock)
    order.decide(states(progress={A: 10}), loading=True)
    for _ in range(5):
        clock.t += 10
        assert C in order.decide(states(progress={A: 10}), loading=True, paused=True)


@dataclass
class TP:
    topic: str
    partition: int


@dataclass
class FakeConsumer:
    assigned: list[TP]
    paused: set[tuple[str, int]] = field(default_factory=set)

    def assignment(self) -> list[TP]:
        return list(self.assigned)

    def pause(self, tps: list[TP]) -> None:
        self.paused |= {(t.topic, t.partition) for t in tps}

    def resume(self, tps: list[TP]) -> None:
        self.paused -= {(t.topic, t.partition) for t in tps}


def test_hook_pauses_held_partitions_and_resumes_them_on_release() -> None:
    clock = Clock()
    order = LoadOrder(waits_for(CRM), 20.0, clock)
    topics = {"cf.accounts": A, "cf.contacts": C, "cf.addresses": D}
    hook = LoadOrderHook(order, topics, "crossfade", "g")
    consumer = FakeConsumer([TP(t, p) for t in topics for p in (0, 1)])
    order.decide(states(), loading=True)
    hook.apply(consumer, sync_paused=False)
    assert consumer.paused == {(t, p) for t in ("cf.contacts", "cf.addresses") for p in (0, 1)}
    # a rebalance: a new assignment's held partitions are paused at once
    fresh = FakeConsumer([TP("cf.contacts", 2), TP("cf.accounts", 2)])
    hook.on_assign(fresh, fresh.assigned)
    assert fresh.paused == {("cf.contacts", 2)}
    order.decide(states({A}), loading=True)
    hook.apply(consumer, sync_paused=False)
    assert consumer.paused == {("cf.addresses", 0), ("cf.addresses", 1)}
    # released while `crossfade pause sync` holds everything: not resumed by this hook
    order.decide(states({A, C}), loading=True)
    hook.apply(consumer, sync_paused=True)
    assert consumer.paused == {("cf.addresses", 0), ("cf.addresses", 1)}


def test_a_load_is_a_snapshot_capture_has_in_the_topics(monkeypatch: pytest.MonkeyPatch) -> None:
    """From a fresh capture heartbeat: a load by snapshot events (snapshot_done from its start)
    or Debezium's snapshot once complete; not Debezium's snapshot under way (its sweep markers
    come after its last table), nor a capture streaming without a snapshot, nor an old beat."""
    from crossfade.sync import load_order
    from crossfade.target.store import Heartbeat

    def beats(*hbs: Heartbeat) -> None:
        monkeypatch.setattr(load_order, "read_heartbeats", lambda _c, _s: list(hbs))

    def cap(age: float = 1.0, **detail: object) -> Heartbeat:
        return Heartbeat("c1", "capture", detail=dict(detail), age_s=age)

    loading = load_order._capture_loading  # noqa: SLF001 - the decision's input
    beats(cap(load={"by": "copy"}, snapshot_done=True))
    assert loading(None, "crossfade")  # type: ignore[arg-type]
    beats(cap(load={"by": "debezium"}, snapshot_done=False))
    assert not loading(None, "crossfade")  # type: ignore[arg-type]
    beats(cap(load=None, snapshot_done=True))
    assert loading(None, "crossfade")  # type: ignore[arg-type]
    beats(
        cap(load=None, snapshot_done=False), Heartbeat("s1", "sync", detail={"snapshot_done": True})
    )
    assert not loading(None, "crossfade")  # type: ignore[arg-type]
    beats(cap(age=120.0, snapshot_done=True))
    assert not loading(None, "crossfade")  # type: ignore[arg-type]
