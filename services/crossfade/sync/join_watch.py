"""What a sync member's pending join waits for, judged every :data:`JOIN_LOOK_S` from the broker's
answer (:meth:`crossfade.sync.consumer.GroupMember.look_at_join`), and when it waits for nothing.

Two wedges end in a verdict, both after twice ``sync.session_timeout_ms`` without an assignment
(a live leader completes a rebalance within half of it on Tansu; a dead member is expired after
one, which replaces it), and never before twice Kafka's minimum, 12 s, whatever a shorter session
timeout (2 s on the embedded broker): the verdicts were measured at 6 s and up, and some wedges'
answers last for seconds of librdkafka's own (15 s ``EMPTY`` after a broker reset, below):

- :data:`DELETE`: the broker names the same *other* member as the rebalance's leader in every
  look. Tansu 0.6 keeps a leader that left during the rebalance for good (it never replaces it);
  deleting the group lets the members' next joins form it again.
- :data:`REJOIN`: no such leader, and the broker's answer the same in every look: it names no
  leader, or this member, or a name that is no member's, or reports the group settled while
  this member's join is still pending. Seen after a reset of the broker (Tansu, in memory) with
  two sync processes: a member joined 15 s while the broker reported the group ``EMPTY``
  (librdkafka sent no JoinGroup). The member deletes the group and joins again with a new
  consumer (:meth:`GroupMember.rejoin_wedged`). An answer that changes (a new leader, a state
  that moves on) is the group progressing: the clock starts again from it (a join after a
  broker reset was seen to take 28 s through three such answers, and complete).

Neither fires while Apache Kafka rebalances (``PREPARING_REBALANCING``,
``COMPLETING_REBALANCING``: Kafka expires a member that does not rejoin within the rebalance
timeout itself, and a slow member's rejoin may legitimately take that long), nor counts looks
the broker or its group coordinator did not answer (a broker away is waited for: the clock starts
again when it answers, and a consumer is never closed then: librdkafka's LeaveGroup without a
coordinator can crash, librdkafka issue 5347).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from crossfade.config.sync_config import KAFKA_SESSION_TIMEOUT_MS

JOIN_LOOK_S = 2.0
"""While its join is pending, a member reads the group's state from the broker this often."""

UNANSWERED_LOOK_S = 5 * JOIN_LOOK_S
"""The next look after one the broker did not answer: each may hold the consume loop up for
seconds."""

SETTLED_STATES = frozenset({"STABLE", "EMPTY", "DEAD"})
"""Group states (:meth:`crossfade.events.kafka.Admin.group_state`) with no rebalance in progress."""

KAFKA_REBALANCING = frozenset({"PREPARING_REBALANCING", "COMPLETING_REBALANCING"})
"""Apache Kafka's rebalance states (Tansu 0.6 reports ``UNKNOWN`` for its own)."""

MEMBER_PREFIX = "crossfade-sync-"
"""Member ids of sync workers start so (their ``client.id``; Tansu prefixes the member id)."""

WAIT, DELETE, REJOIN = "wait", "delete", "rejoin"

_NOTHING = object()


class JoinWatch:
    """The looks of one member at its pending join: :meth:`due`, then :meth:`judge`."""

    def __init__(self, session_timeout_ms: int, clock: Callable[[], float] | None = None):
        """``clock``: seconds, monotonic (``time.monotonic``, looked up at each call)."""
        self.limit_s = 2 * max(session_timeout_ms, KAFKA_SESSION_TIMEOUT_MS) / 1000
        self._clock = clock or (lambda: time.monotonic())
        self._next_look = 0.0
        self.leader_named: tuple[str, float] | None = None
        """A rebalance's leader the broker named, not this member, and since when."""
        self.pending_since: float | None = None
        """The first answered look of this join that saw the broker's current answer (None:
        none yet)."""
        self.waited_s = 0.0
        """How long the wedge of the last verdict lasted."""
        self._seen: object = _NOTHING
        """The broker's answer in the last answered look (``_NOTHING``: none yet)."""

    def assigned(self) -> None:
        """The member holds an assignment: what the looks saw before is no evidence after it."""
        self.leader_named = None
        self.pending_since = None
        self._seen = _NOTHING

    def due(self) -> bool:
        """Whether a look is due now (then the next one is scheduled)."""
        now = self._clock()
        if now < self._next_look:
            return False
        self._next_look = now + JOIN_LOOK_S
        return True

    def unanswered(self) -> None:
        """The broker did not answer the look: later, and the no-progress clock starts again."""
        self._next_look = self._clock() + UNANSWERED_LOOK_S
        self.pending_since = None
        self._seen = _NOTHING

    def waited(self) -> float:
        """Seconds since the first answered look of this join (0 before it)."""
        return 0.0 if self.pending_since is None else self._clock() - self.pending_since

    def judge(self, group: tuple[str, str], me: str) -> str:
        """The verdict on one answered look: ``group`` is the broker's (state, leader), ``me``
        this member's id. After a verdict other than :data:`WAIT` the clocks start again
        (:attr:`waited_s`: how long that one waited)."""
        now = self._clock()
        if self.pending_since is None or group != self._seen:
            self.pending_since = now  # the group moved on: no wedge so far
        self._seen = group
        state, leader = group
        if state in KAFKA_REBALANCING:
            self.leader_named = None
            self.pending_since = now
            return WAIT
        foreign = state not in SETTLED_STATES and leader.startswith(MEMBER_PREFIX) and leader != me
        if foreign:
            if self.leader_named is None or self.leader_named[0] != leader:
                self.leader_named = (leader, now)
                return WAIT
            since, verdict = self.leader_named[1], DELETE
        else:
            self.leader_named = None
            since, verdict = self.pending_since, REJOIN
        if now - since <= self.limit_s:
            return WAIT
        self.waited_s = now - since
        self.leader_named = None
        self.pending_since = now
        return verdict


def describe(group: tuple[str, str], me: str) -> str:
    """What the broker reported of a wedged join, for its WARNING line."""
    state, leader = group
    if state in SETTLED_STATES:
        return f"the broker reports the group {state} without this worker's join"
    if not leader:
        return f"the broker reports the group {state} with no leader"
    if leader == me:
        return f"the broker names this worker the leader of a {state} group that never assigns"
    return f"the broker names leader {leader} of a {state} group, not a sync worker"
