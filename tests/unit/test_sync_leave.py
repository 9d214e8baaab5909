"""A worker stopping mid-rebalance completes its join before leaving, or leaves without
LeaveGroup (GroupMember.finish_join, crossfade.sync.consumer; Tansu elects a member that left mid-join as leader)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from crossfade.config import Settings
from crossfade.errors import BrokerUnavailable
from crossfade.sync import consumer as consumer_mod
from crossfade.sync.join_watch import JOIN_LOOK_S
from crossfade.sync.worker import SyncWorker


def _worker() -> SyncWorker:
    settings = Settings(
        source={"dsn": "postgresql://u@127.0.0.1:1/legacy"},
        target={"dsn": "postgresql://u@127.0.0.1:1/target"},
        kafka={"bootstrap_servers": "127.0.0.1:1"},
        tables=["public.t"],
        sync={"session_timeout_ms": 6000},
    )
    return SyncWorker(settings)


class _Consumer:
    """Polls until the group assigns after ``assign_after`` polls (never when None)."""

    def __init__(self, w: SyncWorker, assign_after: int | None) -> None:
        self.w, self.assign_after, self.polls = w, assign_after, 0

    def poll(self, timeout: float) -> Any:
        self.polls += 1
        if self.polls == self.assign_after:
            self.w.group.on_assign(self, [])  # type: ignore[arg-type]
        return None


def test_in_group_leaves_at_once() -> None:
    w = _worker()
    w.group.on_assign(_Consumer(w, None), [])  # type: ignore[arg-type]
    w.group.consumer = _Consumer(w, None)  # type: ignore[assignment]
    assert w.group.finish_join() is True
    assert w.group.consumer.polls == 0  # type: ignore[attr-defined]


def test_pending_join_is_completed_before_leaving() -> None:
    w = _worker()
    w.group.on_revoke(_Consumer(w, None), [])  # type: ignore[arg-type]  # a rebalance began
    w.stop.set()
    w.group.consumer = _Consumer(w, assign_after=3)  # type: ignore[assignment]
    assert w.group.finish_join() is True
    assert w.group.consumer.polls == 3  # type: ignore[attr-defined]


def test_join_that_never_completes_is_given_up_after_the_session_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [0.0]

    def monotonic() -> float:
        clock[0] += 0.2
        return clock[0]

    monkeypatch.setattr(consumer_mod.time, "monotonic", monotonic)
    w = _worker()
    w.stop.set()
    w.group.consumer = _Consumer(w, assign_after=None)  # type: ignore[assignment]
    assert w.group.finish_join() is False
    assert 10 <= clock[0] <= 12  # session timeout (6 s) + 5 s, then given up


class _Watch:
    """A table watch that asks for a re-subscribe."""

    def __init__(self) -> None:
        import threading

        self.resubscribe = threading.Event()
        self.resubscribe.set()
        self.stalled = {"public.t": "no progress"}


class _Batch:
    """A consumer that hands out one batch of records, then stops the worker."""

    def __init__(self, msgs: list[Any], stop: Any = None) -> None:
        self.msgs, self.closed, self.stop = msgs, False, stop

    def consume(self, n: int, timeout: float) -> list[Any]:
        out, self.msgs = self.msgs, []
        if not out and self.stop is not None:
            self.stop.set()
        return out

    def close(self) -> None:
        self.closed = True

    def memberid(self) -> str:
        return "this-worker"


def test_records_consumed_while_a_rebalance_is_pending_are_applied_not_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stall's re-subscribe that waits for a pending rebalance keeps the consumer, which is
    past the records it just handed out: they must be applied. Dropping them lost whole batches
    of a 1M-row mapped load with two sync processes (the offsets stored after the next batch
    skipped them)."""
    w = _worker()
    w.group.on_revoke(_Batch([]), [])  # type: ignore[arg-type]  # a rebalance began
    batch = ["record-1", "record-2"]
    consumer = _Batch(list(batch), w.stop)
    w.group.consumer = consumer  # type: ignore[assignment]
    w.watch = _Watch()  # type: ignore[assignment]
    monkeypatch.setattr(w.group, "group_state", lambda timeout=5.0: ("PreparingRebalance", "x"))
    monkeypatch.setattr(w.group, "leave", lambda: None)
    monkeypatch.setattr(w, "_pauses", lambda: None)
    monkeypatch.setattr(w.meter, "poll", lambda *a, **k: None)
    applied: list[list[Any]] = []

    def process(msgs: list[Any]) -> None:
        applied.append(msgs)
        w.stop.set()

    monkeypatch.setattr(w, "_process", process)
    w._next_epoch_check = float("inf")
    w._consume_loop()
    assert not consumer.closed  # not re-subscribed: the rebalance was pending
    assert applied == [batch]


class _Leaving:
    """A consumer in the group that records what the leave does, in order."""

    def __init__(self, events: list[str]) -> None:
        self.events = events

    def poll(self, timeout: float) -> Any:
        self.events.append("poll")
        return None

    def close(self) -> None:
        self.events.append("close")

    def memberid(self) -> str:
        return "crossfade-sync-me-1"


def _leaving(
    monkeypatch: pytest.MonkeyPatch, leader: str, alone: bool
) -> tuple[SyncWorker, list[str]]:
    clock = [0.0]

    def monotonic() -> float:
        clock[0] += 0.2
        return clock[0]

    monkeypatch.setattr(consumer_mod.time, "monotonic", monotonic)
    w = _worker()
    events: list[str] = []
    w.group.consumer = _Leaving(events)  # type: ignore[assignment]
    w.group.in_group = True
    w.stop.set()

    def group_state(timeout: float = 5.0) -> tuple[str, str]:
        events.append("look")
        return "STABLE", leader

    monkeypatch.setattr(w.group, "group_state", group_state)
    monkeypatch.setattr(w.group, "_alone", lambda: alone)
    return w, events


def test_a_leader_with_other_members_polls_before_it_looks_and_leaves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Tansu names the leader: it leaves after the members stopped with it (their rebalance is
    then what its look sees), not before them."""
    w, events = _leaving(monkeypatch, "crossfade-sync-me-1", alone=False)
    w.group.leave()
    assert events[0] == "look" and events[-2:] == ["look", "close"]
    polls = events[1:-2]
    assert polls and set(polls) == {"poll"}
    assert len(polls) * 0.2 * 2 >= consumer_mod.LEADER_LEAVE_GRACE_S  # two clock reads a poll


@pytest.mark.parametrize(
    ("leader", "alone"),
    [
        ("crossfade-sync-other-2", False),  # another member leads
        ("range", False),  # Apache Kafka names the assignor
        ("crossfade-sync-me-1", True),  # the leader holds every partition: no other member
    ],
)
def test_others_look_and_leave_at_once(
    monkeypatch: pytest.MonkeyPatch, leader: str, alone: bool
) -> None:
    w, events = _leaving(monkeypatch, leader, alone)
    w.group.leave()
    assert events == ["look", "close"]


class _Admin:
    """The member's admin client: metadata answers unless ``down``; deletions recorded in
    ``events`` too (their order against the consumer's close)."""

    def __init__(self, events: list[str]) -> None:
        self.deleted: list[str] = []
        self.events = events
        self.down = False

    def partitions(self, topic: str, timeout: float = 10.0) -> int:
        if self.down:
            raise BrokerUnavailable(f"cannot read metadata of {topic}")
        return 2

    def delete_group(self, group: str, timeout: float = 5.0) -> str | None:
        self.deleted.append(group)
        self.events.append("delete")
        return None


def _joining(
    monkeypatch: pytest.MonkeyPatch, state: str, leader: str, described: bool = True
) -> tuple[SyncWorker, _Admin, list[float]]:
    """A member whose join is pending; the broker reports the group as (state, leader), or
    does not describe it (``described`` False)."""
    clock = [100.0]
    monkeypatch.setattr(consumer_mod.time, "monotonic", lambda: clock[0])
    w = _worker()
    events: list[str] = []
    w.group.consumer = _Leaving(events)  # type: ignore[assignment]
    admin = _Admin(events)
    monkeypatch.setattr(w.group, "admin", lambda: admin)
    group = (state, leader) if described else None
    monkeypatch.setattr(w.group, "group_state", lambda timeout=5.0: group)
    monkeypatch.setattr(w.group, "new_consumer", lambda: _Leaving(events))
    monkeypatch.setattr(w.group, "subscribe", lambda: events.append("subscribe"))
    return w, admin, clock


def _look_for(w: SyncWorker, clock: list[float], seconds: int) -> None:
    for _ in range(seconds):  # a look each second: every JOIN_LOOK_S (2 s) one reaches the broker
        w.group.look_at_join()
        clock[0] += 1.0


def test_a_join_waiting_for_the_same_foreign_leader_deletes_the_group_after_two_sessions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w, admin, clock = _joining(monkeypatch, "UNKNOWN", "crossfade-sync-gone-7")
    deleted_at = None
    for _ in range(20):
        w.group.look_at_join()
        if admin.deleted and deleted_at is None:
            deleted_at = clock[0] - 100.0
        clock[0] += 1.0
    assert admin.deleted == [w.settings.sync.group_id]  # once, not on every look after
    assert deleted_at is not None and 12 < deleted_at <= 12 + 2 * JOIN_LOOK_S
    assert "close" not in admin.events  # the departed leader's wedge: the group only


@pytest.mark.parametrize(
    ("state", "leader", "in_group"),
    [
        ("PREPARING_REBALANCING", "", False),  # Apache Kafka's rebalance: Kafka expires members
        ("COMPLETING_REBALANCING", "range", False),  # Kafka names the assignor, never a member
        ("UNKNOWN", "crossfade-sync-gone-7", True),  # this member holds its assignment
        ("UNKNOWN", "crossfade-sync-me-1", True),
        ("", "", False),  # the group coordinator does not answer (metadata does): not counted
    ],
)
def test_nothing_is_deleted_or_joined_again_otherwise(
    monkeypatch: pytest.MonkeyPatch, state: str, leader: str, in_group: bool
) -> None:
    w, admin, clock = _joining(monkeypatch, state, leader, described=bool(state))
    w.group.in_group = in_group
    _look_for(w, clock, 60)
    assert admin.deleted == [] and admin.events == []


@pytest.mark.parametrize(
    ("state", "leader", "described"),
    [
        ("UNKNOWN", "crossfade-sync-me-1", True),  # this member leads, and never assigns
        ("UNKNOWN", "", True),  # no leader named
        ("UNKNOWN", "consumer-1-0f3a", True),  # a name no sync worker has
        ("STABLE", "crossfade-sync-gone-7", True),  # settled without this member's join
        ("EMPTY", "", True),  # seen: librdkafka sent no JoinGroup for 15 s after a reset
    ],
)
def test_a_join_without_progress_deletes_the_group_and_joins_with_a_new_consumer(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    state: str,
    leader: str,
    described: bool,
) -> None:
    """After a broker reset, two sync processes joined for 287 s (CI, sync.processes auto): no
    foreign leader named, so the departed-leader deletion never fired. Twice the session
    timeout without progress, whatever the broker names: the group goes first (a LeaveGroup
    from a rebalance's leader wedges Tansu 0.6), then the consumer is replaced."""
    w, admin, clock = _joining(monkeypatch, state, leader, described)
    old = w.group.consumer
    caplog.set_level(logging.WARNING, logger=consumer_mod.__name__)
    rejoined_at = None
    for _ in range(20):
        w.group.look_at_join()
        if admin.events and rejoined_at is None:
            rejoined_at = clock[0] - 100.0
        clock[0] += 1.0
    assert admin.events == ["delete", "close", "subscribe"]  # once, in this order
    assert rejoined_at is not None and 12 < rejoined_at <= 12 + 2 * JOIN_LOOK_S
    assert w.group.consumer is not old
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "made no progress" in warnings[0], warnings


def test_a_group_whose_answer_moves_on_is_progressing_not_wedged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Seen after a broker reset (two sync processes, Tansu): a join took 28 s and completed
    while the broker's answer moved on (this member named leader of a settled group, then
    another member leading a rebalance, then the group settled under it). No rejoin then: the
    clock starts again at each new answer, and only an answer that stays the same counts."""
    w, admin, clock = _joining(monkeypatch, "STABLE", "crossfade-sync-me-1")
    answers = (
        [("STABLE", "crossfade-sync-me-1")] * 5
        + [("UNKNOWN", "crossfade-sync-live-3")] * 5
        + [("STABLE", "crossfade-sync-live-3")] * 5
    )
    monkeypatch.setattr(w.group, "group_state", lambda timeout=5.0: answers.pop(0))
    _look_for(w, clock, 30)  # 15 looks, 10 s of each answer: 30 s without an assignment
    assert not answers and admin.events == []


def test_looks_the_broker_does_not_answer_neither_count_nor_describe_the_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broker away is waited for: its looks do not count towards the wedge (the clock starts
    again when it answers), no consumer is closed meanwhile, and the group is not described
    while its metadata does not answer (librdkafka's DescribeConsumerGroups aborted both sync
    processes at a broker reset: the coordinator lookup timed out)."""
    w, admin, clock = _joining(monkeypatch, "UNKNOWN", "crossfade-sync-me-1")
    described: list[float] = []
    monkeypatch.setattr(
        w.group,
        "group_state",
        lambda timeout=5.0: described.append(clock[0]) or ("UNKNOWN", "crossfade-sync-me-1"),
    )
    _look_for(w, clock, 6)  # the join is pending, the broker answers
    admin.down = True
    _look_for(w, clock, 40)
    assert admin.events == [] and len(described) == 3  # at 0, 2 and 4 s, none while away
    admin.down = False
    _look_for(w, clock, 12)  # answered looks again, for less than two session timeouts
    assert admin.events == []
    _look_for(w, clock, 6)
    assert admin.events == ["delete", "close", "subscribe"]


def test_a_leader_re_subscribing_waits_before_its_look_without_polling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The other members see the same stall: the leader looks last, and polls nothing
    meanwhile (records polled then would be past what the caller applies)."""
    w, events = _leaving(monkeypatch, "crossfade-sync-me-1", alone=False)
    w.stop.clear()
    waits: list[float] = []
    monkeypatch.setattr(w.stop, "wait", lambda t=None: bool(waits.append(t or 0)))  # type: ignore[func-returns-value]
    monkeypatch.setattr(w.group, "new_consumer", lambda: _Leaving(events))
    monkeypatch.setattr(w.group, "subscribe", lambda: events.append("subscribe"))
    assert w.group.resubscribe("stalled table(s) public.t")
    assert events == ["look", "look", "close", "subscribe"]
    assert waits == [consumer_mod.LEADER_LEAVE_GRACE_S]


def test_a_broker_that_does_not_answer_is_asked_less_often(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each look may wait 3 s for the broker inside the consume loop: not every 2 s then."""
    w, admin, clock = _joining(monkeypatch, "UNKNOWN", "crossfade-sync-gone-7")
    asked: list[float] = []

    def partitions(topic: str, timeout: float = 10.0) -> int:
        asked.append(clock[0])
        raise BrokerUnavailable("cannot read metadata")

    monkeypatch.setattr(admin, "partitions", partitions)
    _look_for(w, clock, 30)
    assert asked == [100.0, 110.0, 120.0]


def test_a_leader_seen_before_an_assignment_does_not_count_after_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Seen in a fault case: a member saw leader X in its join, was assigned (X completed that
    rebalance) and held the assignment 28 s; at the next rebalance X led again and the group was
    deleted at once ("has waited 30 s"). The wait counts from the first look after the last
    assignment."""
    w, admin, clock = _joining(monkeypatch, "UNKNOWN", "crossfade-sync-live-3")
    w.group.look_at_join()  # X named during the join
    w.group.in_group = True  # assigned: X completed the rebalance
    _look_for(w, clock, 30)
    w.group.in_group = False  # the next rebalance, led by X again
    _look_for(w, clock, 10)
    assert admin.deleted == [] and admin.events == []


def test_an_admin_client_that_cannot_describe_the_group_is_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An admin client that saw the broker restart empty on the same port times out on every
    DescribeConsumerGroups after it (a new one is answered at once): kept, it hid a group
    wedged by a departed leader from every look after a broker reset (CI, two sync processes,
    287 s of joins). A look it cannot answer drops it; the next look makes a new one."""
    made: list[Any] = []

    class _Stale:
        def __init__(self, conf: Any) -> None:
            made.append(self)

        def partitions(self, topic: str, timeout: float = 10.0) -> int:
            return 2

        def group_state(self, group: str, timeout: float = 5.0) -> tuple[str, str]:
            if len(made) == 1:  # the client made before the broker restarted
                raise BrokerUnavailable(f"cannot describe consumer group {group}")
            return "UNKNOWN", "crossfade-sync-gone-7"

    monkeypatch.setattr(consumer_mod, "Admin", _Stale)
    w = _worker()
    assert w.group.group_state() is None
    assert w.group.group_state() == ("UNKNOWN", "crossfade-sync-gone-7")
    assert len(made) == 2


def test_a_leader_re_subscribing_asks_again_when_the_first_look_is_not_answered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both sync processes re-subscribed 150 ms apart at a new broker epoch; the leader's look
    was not answered (its admin client predated the broker reset), so it left at once, and its
    LeaveGroup wedged the group (Tansu keeps a departed leader). A look not answered is asked
    again, from a new admin client: the leader then waits for the others before it leaves."""
    w, events = _leaving(monkeypatch, "crossfade-sync-me-1", alone=False)
    w.stop.clear()
    answers: list[tuple[str, str] | None] = [None]

    def group_state(timeout: float = 5.0) -> tuple[str, str] | None:
        events.append("look")
        return answers.pop(0) if answers else ("STABLE", "crossfade-sync-me-1")

    monkeypatch.setattr(w.group, "group_state", group_state)
    waits: list[float] = []
    monkeypatch.setattr(w.stop, "wait", lambda t=None: bool(waits.append(t or 0)))  # type: ignore[func-returns-value]
    monkeypatch.setattr(w.group, "new_consumer", lambda: _Leaving(events))
    monkeypatch.setattr(w.group, "subscribe", lambda: events.append("subscribe"))
    assert w.group.resubscribe("broker epoch changed")
    assert waits == [consumer_mod.LEADER_LEAVE_GRACE_S]
    assert events == ["look", "look", "look", "close", "subscribe"]


def test_a_leave_asks_again_when_the_first_look_is_not_answered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The look before a LeaveGroup (GroupMember.leave) from an admin client that predates a
    broker reset is never answered; taken as "settled", the member left at once while the
    group was rebalancing, and Tansu kept it as the rebalance's leader: the group never
    assigned again. A look not answered is asked again (a new admin client, group_state):
    the rebalance it reports is completed before the member leaves."""
    w, events = _leaving(monkeypatch, "crossfade-sync-other-2", alone=False)
    answers: list[tuple[str, str] | None] = [None, ("PreparingRebalance", "crossfade-sync-other-2")]

    def group_state(timeout: float = 5.0) -> tuple[str, str] | None:
        events.append("look")
        return answers.pop(0) if answers else ("STABLE", "crossfade-sync-other-2")

    monkeypatch.setattr(w.group, "group_state", group_state)
    consumer = w.group.consumer

    def poll(timeout: float) -> Any:
        events.append("poll")
        if events.count("poll") == 3:
            w.group.on_assign(consumer, [])  # type: ignore[arg-type]  # the rebalance completed
        return None

    monkeypatch.setattr(consumer, "poll", poll)
    w.group.leave()
    assert events == ["look", "look", "poll", "poll", "poll", "close"], events
    assert not w.group.left_in_group
