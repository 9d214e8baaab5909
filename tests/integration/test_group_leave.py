"""A sync worker leaving its consumer group while the broker rebalances it must not wedge the group
(GroupMember.leave, crossfade.sync.consumer).

On Tansu 0.6 a LeaveGroup from the group's leader while the group is rebalancing removes the member
but keeps it as the rebalance's leader: every later JoinGroup names the departed leader, nobody
computes the assignment, and the group never assigns a partition again. A worker stopped less than
a heartbeat after another worker left (random-fault seed 257976342: a second worker leaves, then
the first is restarted) did exactly that. Real members on the real broker (or on
``CROSSFADE_TEST_BOOTSTRAP``'s Kafka, which must pass too), no database: the claim is a stand-in.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

import pytest

from crossfade.config import Settings
from crossfade.events.kafka import Admin
from crossfade.sync.consumer import TP, GroupMember
from tests.conftest import wait_for

pytestmark = pytest.mark.integration


class _Member(GroupMember):
    """A group member whose claim and broker epoch need no database and no capture."""

    def current_epoch(self) -> str | None:
        return "e"

    def poll_until(self, pred: object, timeout: float, what: str) -> None:
        def step() -> bool:
            assert self.consumer is not None
            self.consumer.poll(0.1)
            return bool(pred() if callable(pred) else pred)

        wait_for(step, timeout, what, interval=0)


def _claim(tps: list[TP], epoch: str) -> tuple[str, dict[TP, int]]:
    return "token", {tp: 0 for tp in tps}


def _members(bootstrap: str, n: int) -> tuple[Settings, list[_Member]]:
    settings = Settings(
        source={"dsn": "postgresql://u@127.0.0.1:1/legacy"},
        target={"dsn": "postgresql://u@127.0.0.1:1/target"},
        kafka={
            "bootstrap_servers": bootstrap,
            "topic_prefix": f"leave_{os.getpid()}_{uuid.uuid4().hex[:6]}",
            "partitions": 2,
        },
        tables=["public.t"],
        sync={"session_timeout_ms": 6000, "group_id": f"leave-{uuid.uuid4().hex[:8]}"},
    )
    topic = settings.kafka.table_topic("public.t")
    Admin(settings.kafka.client_config()).ensure_topics([topic], 2, 1)
    members = [
        _Member(settings, f"w{i}", threading.Event(), {topic: "public.t"}, _claim) for i in range(n)
    ]
    return settings, members


def _share(first: _Member, second: _Member) -> None:
    """``first`` joins alone, then ``second``: both end in the group, the partitions split."""
    first.subscribe()
    first.poll_until(lambda: first.in_group, 60, "the first member's assignment")
    assigned = len(first.owner)
    second.subscribe()
    # both poll: the second's join rebalances the group and the first rejoins
    wait_for(
        lambda: (
            first.consumer.poll(0.05) is None  # type: ignore[union-attr]
            and second.consumer.poll(0.05) is None  # type: ignore[union-attr]
            and first.in_group
            and second.in_group
            and len(first.owner) < assigned
        ),
        60,
        "the group to share the partitions between two members",
        interval=0,
    )


def _close(members: list[_Member]) -> None:
    for m in members:
        if m.consumer is not None and not m.left_in_group:
            m.consumer.close()


def test_leader_leaving_as_a_rebalance_begins_leaves_the_group_working(bootstrap: str) -> None:
    _, (first, second, third) = _members(bootstrap, 3)
    try:
        _share(first, second)
        # the second leaves: the broker begins a rebalance the first hears of only at its next
        # heartbeat; the first (the leader: it joined first) is stopped at once
        second.stop.set()
        second.leave()
        first.stop.set()
        t0 = time.monotonic()
        first.leave()
        assert not first.left_in_group, "the first member should have completed the rebalance"
        assert time.monotonic() - t0 < 6 + 5 + 2
        # a member joining afterwards is assigned every partition (Tansu answers a join after
        # about half the session timeout; a departed leader would keep it waiting for good)
        third.subscribe()
        third.poll_until(
            lambda: third.in_group and len(third.owner) == 2,
            30,
            "a new member's assignment after the others left",
        )
    finally:
        _close([first, second, third])


def test_a_group_wedged_by_a_departed_leader_is_named(bootstrap: str) -> None:
    """What the watchdog's stall report adds when the group is wedged anyway (a LeaveGroup that
    raced the start of a rebalance, or another client): the departed leader, and what to do."""
    if os.environ.get("CROSSFADE_TEST_BOOTSTRAP"):
        pytest.skip("a defect of Tansu 0.6: Apache Kafka elects a new leader, nothing wedges")
    _, (first, second, third) = _members(bootstrap, 3)
    try:
        _share(first, second)
        leader = first.consumer.memberid()  # type: ignore[union-attr]
        second.stop.set()
        second.leave()
        first.consumer.close()  # type: ignore[union-attr]  # LeaveGroup at once: the wedge
        first.consumer = None
        third.subscribe()
        deadline = time.monotonic() + 12  # two session timeouts: a dead leader would be expired
        while time.monotonic() < deadline:
            third.consumer.poll(0.2)  # type: ignore[union-attr]
        assert not third.in_group, "Tansu assigned after all: is the defect fixed?"
        hint = third.rebalance_hint()
        assert f"with leader {leader}, not this worker" in hint, hint
        assert "restart the broker" in hint, hint
    finally:
        _close([first, second, third])


def test_members_stopped_together_leave_the_group_working(bootstrap: str) -> None:
    """Two members stopped by one signal (the sync processes of one ``crossfade sync``): the
    other member's LeaveGroup lands right after the leader's first look at the group. That look
    saw the group settled, so the leader left too, into the rebalance the other's leave began:
    the group was wedged (CI, ``sync.processes: 2``: the restarted members waited minutes). The
    leader looks last (GroupMember._leader_grace): it completes that rebalance, then leaves."""
    _, (first, second, third) = _members(bootstrap, 3)
    try:
        _share(first, second)
        assert first.group_state() == (  # Tansu names the leader; Kafka names the assignor
            "STABLE",
            first.consumer.memberid(),  # type: ignore[union-attr]
        ) or os.environ.get("CROSSFADE_TEST_BOOTSTRAP")
        real_look = first.group_state
        looks: list[tuple[str, str] | None] = []

        def look_then_the_other_leaves(timeout: float = 5.0) -> tuple[str, str] | None:
            group = real_look(timeout)
            looks.append(group)
            if len(looks) == 1:  # the other member's LeaveGroup lands right after the look
                second.stop.set()
                second.leave()
            return group

        first.group_state = look_then_the_other_leaves  # type: ignore[method-assign]
        first.stop.set()
        first.leave()
        assert not first.left_in_group
        third.subscribe()
        # a departed leader would keep it waiting for good; the group's deletion after two
        # session timeouts (look_at_join) is not called here
        third.poll_until(
            lambda: third.in_group and len(third.owner) == 2,
            12,
            "a new member's assignment after the two members left together",
        )
    finally:
        _close([first, second, third])


def test_a_group_wedged_by_a_departed_leader_is_deleted_and_forms_again(bootstrap: str) -> None:
    """The wedge anyway (a LeaveGroup that raced the start of a rebalance some other way): a
    member whose join waits for a departed leader deletes the group after two session timeouts
    (GroupMember.look_at_join), and the members' next joins form it again."""
    if os.environ.get("CROSSFADE_TEST_BOOTSTRAP"):
        pytest.skip("a defect of Tansu 0.6: Apache Kafka elects a new leader, nothing wedges")
    _, (first, second, third) = _members(bootstrap, 3)
    try:
        _share(first, second)
        second.stop.set()
        second.leave()
        first.consumer.close()  # type: ignore[union-attr]  # LeaveGroup at once: the wedge
        first.consumer = None
        third.subscribe()

        def joined() -> bool:
            third.look_at_join()
            return third.in_group and len(third.owner) == 2

        # two session timeouts (6 s) of the same leader, a look every 2 s, then a join (~3 s)
        third.poll_until(joined, 30, "the assignment after the wedged group's deletion")
    finally:
        _close([first, second, third])


def test_a_member_joining_again_after_no_progress_leaves_the_group_working(
    bootstrap: str,
) -> None:
    """A join without progress is joined again with a new consumer (GroupMember.rejoin_wedged):
    the group is deleted before the old consumer's LeaveGroup, which, from the leader of a
    rebalance just begun, would wedge Tansu 0.6's group for good (the departed-leader deletion,
    look_at_join, is not called here: the rejoin alone must leave the group working)."""
    _, (first, second) = _members(bootstrap, 2)
    try:
        _share(first, second)
        # the second leaves: a rebalance begins that its leader, the first, has not heard of
        second.stop.set()
        second.leave()
        first.in_group = False
        assert first.consumer is not None
        first.rejoin_wedged(first.group_state(), first.consumer.memberid())
        first.poll_until(
            lambda: first.in_group and len(first.owner) == 2,
            30,
            "the new consumer's assignment of every partition",
        )
    finally:
        _close([first, second])
