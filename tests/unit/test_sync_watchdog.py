"""The sync worker's table watch (crossfade.sync.watchdog) decides from what it reads: the
broker's topics and log ends, the offsets the group stored in the target, and this worker's
assignment. Here those reads are given; the stack tests (FAULTS 35) read them for real."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from crossfade.sync.watchdog import TableWatch, WorkerView
from tests.conftest import offline_settings

TOPICS = {"p.public.a": "public.a", "p.public.b": "public.b"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.gen = 1000.0  # the worker's generation began (its last rebalance)
        self.owned: set[tuple[str, int]] = set()


def _watch(clock: Clock, stall_after_s: float = 10) -> TableWatch:
    return TableWatch(
        topics=TOPICS,
        group_id="g",
        bookkeeping_schema="crossfade",
        client_conf={},
        target_conninfo="",
        connect_timeout_s=1,
        view=WorkerView(owned=lambda: set(clock.owned), generation_started=lambda: clock.gen),
        stall_after_s=stall_after_s,
    )


def _reads(
    w: TableWatch,
    monkeypatch: pytest.MonkeyPatch,
    *,
    parts: dict[str, int] | None = None,
    rows: dict[tuple[str, int], tuple[int, float]] | None = None,
    ends: dict[tuple[str, int], int] | None = None,
    broker_err: str | None = None,
    db_err: str | None = None,
) -> None:
    monkeypatch.setattr(
        w, "_partitions", lambda: (None, broker_err) if broker_err else (parts, None)
    )
    monkeypatch.setattr(w, "_stored", lambda: (None, db_err) if db_err else (rows or {}, None))
    monkeypatch.setattr(w, "_ends", lambda _p: dict(ends or {}))


def _at(w: TableWatch, clock: Clock, t: float) -> dict[str, str]:
    clock.now = t
    return w.check(now=t)


ALL = {"p.public.a": 2, "p.public.b": 2}


def test_a_table_nobody_claimed_since_the_rebalance_is_stalled_after_the_limit(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    clock.owned = {("p.public.a", 0), ("p.public.a", 1)}
    w = _watch(clock)
    # b's rows were last touched 30 s before this generation began: assigned to nobody now
    old = {("p.public.b", 0): (5, 35.0), ("p.public.b", 1): (5, 35.0)}
    _reads(w, monkeypatch, parts=ALL, rows=old)
    assert _at(w, clock, 1000) == {}  # seen first: a rebalance may take a while
    assert _at(w, clock, 1005) == {}
    assert not w.resubscribe.is_set()
    with caplog.at_level(logging.WARNING):
        stalled = _at(w, clock, 1011)
    assert list(stalled) == ["public.b"] and "no partition of p.public.b" in stalled["public.b"]
    assert "table public.b is stalled" in caplog.text
    assert w.resubscribe.is_set()
    # re-subscribing at most once per stall_after_s
    w.resubscribe.clear()
    _at(w, clock, 1015)
    assert not w.resubscribe.is_set()
    _at(w, clock, 1022)
    assert w.resubscribe.is_set()


def test_a_claim_waiting_for_a_lock_is_named_in_the_stalled_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    waiting: list[str] = []
    w = _watch(clock)
    w.view = WorkerView(
        owned=lambda: set(clock.owned),
        generation_started=lambda: clock.gen,
        lock_wait=lambda: waiting[-1] if waiting else None,
    )
    _reads(w, monkeypatch, parts=ALL, rows={})
    _at(w, clock, 1000)
    assert "waited" not in _at(w, clock, 1011)["public.a"]
    waiting.append("the claim of p.public.a[0] has waited 9 s for a lock held by pid 42 (idle)")
    stalled = _at(w, clock, 1012)
    assert stalled["public.a"].endswith("; " + waiting[0]), stalled


def test_a_table_another_worker_claimed_in_this_generation_is_assigned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    w = _watch(clock)
    # every partition claimed 2 s after this worker's rebalance began (by other members)
    rows = {(t, p): (0, 100.0 - 2.0) for t in ALL for p in range(2)}
    _reads(w, monkeypatch, parts=ALL, rows=rows)
    assert _at(w, clock, 1100) == {}
    assert not w.resubscribe.is_set()


def test_a_missing_topic_is_reported_without_a_resubscribe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    clock.owned = {("p.public.a", 0), ("p.public.a", 1)}
    w = _watch(clock)
    _reads(w, monkeypatch, parts={"p.public.a": 2, "p.public.b": 0})
    _at(w, clock, 1000)
    stalled = _at(w, clock, 1010)
    assert "does not exist on the broker" in stalled["public.b"]
    assert not w.resubscribe.is_set()  # re-subscribing cannot create a topic


def test_no_progress_while_the_log_grows_is_stalled_and_progress_clears_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    clock.owned = {(t, p) for t in ALL for p in range(2)}
    w = _watch(clock)
    rows: dict[tuple[str, int], tuple[int, float]] = {
        (t, p): (10, 1.0) for t in ALL for p in range(2)
    }
    ends = {tp: 10 for tp in rows}
    ends[("p.public.a", 1)] = 50  # records wait in a[1]
    _reads(w, monkeypatch, parts=ALL, rows=rows, ends=ends)
    assert _at(w, clock, 1000) == {}
    assert _at(w, clock, 1009) == {}
    stalled = _at(w, clock, 1011)
    assert list(stalled) == ["public.a"] and "no progress on p.public.a[1]" in stalled["public.a"]
    assert w.resubscribe.is_set()
    rows[("p.public.a", 1)] = (20, 0.5)  # it moved
    with caplog.at_level(logging.INFO):
        assert _at(w, clock, 1012) == {}
    assert "table public.a is no longer stalled" in caplog.text


def test_a_partition_caught_up_is_not_stalled_however_long_it_is_idle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    clock.owned = {(t, p) for t in ALL for p in range(2)}
    w = _watch(clock)
    rows = {(t, p): (10, 500.0) for t in ALL for p in range(2)}
    _reads(w, monkeypatch, parts=ALL, rows=rows, ends={tp: 10 for tp in rows})
    for t in range(1000, 2000, 100):
        assert _at(w, clock, t) == {}


def test_broker_or_target_not_answering_stalls_every_table_without_resubscribing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    w = _watch(clock)
    _reads(w, monkeypatch, broker_err="KafkaException: timed out")
    _at(w, clock, 1000)
    stalled = _at(w, clock, 1010)
    assert set(stalled) == {"public.a", "public.b"}
    assert all("broker does not answer" in r for r in stalled.values())
    assert not w.resubscribe.is_set()
    _reads(w, monkeypatch, parts=ALL, db_err="OperationalError: gone")
    assert "target database does not answer" in _at(w, clock, 1011)["public.a"]


def test_worker_exposes_what_its_watch_sees() -> None:
    from crossfade.sync.worker import SyncWorker

    w = SyncWorker(offline_settings())
    assert w.stalled_tables == {}  # before run() started a watch
    clock = Clock()
    w.watch = _watch(clock)
    w.watch.stalled = {"public.t": "why"}
    got: Any = w.stalled_tables
    assert got == {"public.t": "why"} and got is not w.watch.stalled


def _busy_watch(clock: Clock, fetched: dict[tuple[str, int], int], ago: list[float]) -> TableWatch:
    w = _watch(clock)
    w.view = WorkerView(
        owned=lambda: set(clock.owned),
        generation_started=lambda: clock.gen,
        fetched=lambda: dict(fetched),
        progressed_s_ago=lambda: ago[-1],
    )
    return w


def test_a_partition_fetched_while_the_worker_commits_elsewhere_is_busy_not_stalled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A partition grown by a fence's markers only, whose records the consumer fetched and
    queued behind other partitions' (a load's big batches): no stall while the worker commits
    batches; a stall once it commits none, and at once when the partition is not fetched."""
    clock = Clock()
    clock.owned = {(t, p) for t in ALL for p in range(2)}
    rows = {(t, p): (10, 1.0) for t in ALL for p in range(2)}
    ends = {tp: 10 for tp in rows}
    ends[("p.public.a", 1)] = 12  # a fence's two markers
    fetched = {tp: 10 for tp in rows}
    fetched[("p.public.a", 1)] = 12  # fetched: in the consumer's queue
    ago = [2.0]  # the worker committed a batch 2 s ago (of other partitions)
    w = _busy_watch(clock, fetched, ago)
    _reads(w, monkeypatch, parts=ALL, rows=rows, ends=ends)
    for t in range(1000, 1060, 5):
        assert _at(w, clock, t) == {}
    assert not w.resubscribe.is_set()
    ago.append(11.0)  # the worker committed nothing for stall_after_s: stalled at once
    stalled = _at(w, clock, 1061)
    assert "no progress on p.public.a[1] for 61 s" in stalled["public.a"], stalled
    assert w.resubscribe.is_set()
    # committing again, but the partition is not fetched (its position at the stored offset)
    w.resubscribe.clear()
    ago.append(1.0)
    fetched[("p.public.a", 1)] = 10
    assert "no progress on p.public.a[1]" in _at(w, clock, 1062)["public.a"]


def test_progress_of_another_workers_partition_is_left_to_its_watch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only the owner's consumer knows whether a partition's records are fetched: a partition
    this worker does not hold is not judged by its progress (it is still judged assigned)."""
    clock = Clock()
    clock.owned = {("p.public.b", 0), ("p.public.b", 1)}
    clock.gen = 900.0
    w = _watch(clock)
    # a's partitions, claimed by another worker in this generation, do not move while they grow
    rows = {(t, p): (10, 10.0) for t in ALL for p in range(2)}
    ends = {tp: 10 for tp in rows}
    ends[("p.public.a", 0)] = 50
    _reads(w, monkeypatch, parts=ALL, rows=rows, ends=ends)
    for t in range(1000, 1100, 5):
        assert _at(w, clock, t) == {}
    assert not w.resubscribe.is_set()
    clock.owned.add(("p.public.a", 0))  # assigned to this worker now: judged from then on
    assert _at(w, clock, 1100) == {}
    assert "no progress on p.public.a[0]" in _at(w, clock, 1111)["public.a"]


def test_the_consumer_statistics_give_the_fetch_positions_of_owned_partitions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """librdkafka's statistics (``stats_cb``) -> :attr:`GroupMember.fetched`, what the watch
    reads: owned partitions only, positions not known yet (-1001) and the internal partition
    (-1) left out, cleared when a rebalance revokes them."""
    import json

    from crossfade.sync.worker import SyncWorker

    w = SyncWorker(offline_settings())
    g = w.group
    g.owner = {("t", 0): "tok", ("t", 1): "tok"}
    stats = {
        "topics": {
            "t": {
                "partitions": {
                    "0": {"next_offset": 120, "app_offset": 40},
                    "1": {"next_offset": -1001},
                    "2": {"next_offset": 7},  # another worker's
                    "-1": {"next_offset": -1001},
                }
            }
        }
    }
    g.on_stats(json.dumps(stats))
    assert g.fetched == {("t", 0): 120}
    g.on_stats("not json")  # kept as it was
    assert g.fetched == {("t", 0): 120}
    g.on_revoke(None, [])  # type: ignore[arg-type]
    assert g.fetched == {}
    from crossfade.sync import consumer as consumer_mod

    confs: list[dict[str, Any]] = []
    monkeypatch.setattr(consumer_mod, "Consumer", lambda conf: confs.append(conf))
    g.new_consumer()  # the statistics are asked for, and handed to on_stats
    assert confs[0]["statistics.interval.ms"] > 0 and confs[0]["stats_cb"] == g.on_stats
