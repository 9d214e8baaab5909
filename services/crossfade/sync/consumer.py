"""The sync worker's membership of its consumer group: subscription, assignment and revocation,
the broker epoch, the claim of partitions in the target, and the heartbeat's timer.

Offsets live in the target (DESIGN decision 1): on assignment the member *claims* its partitions
there (:func:`~crossfade.target.store.claim_partitions`: a new owner token per claim, the
broker epoch they belong to) and seeks to the offsets stored there; a batch commits only while the
token is still its own (:func:`crossfade.sync.commit.lock_owned`). A broker restarted empty
carries a new epoch: every owned partition is claimed again from the new log's start.

Pause/resume (``crossfade pause sync``, :mod:`crossfade.sync.pause`): :attr:`GroupMember.pause`
is read when the heartbeat is due and pauses the assignment (the member keeps polling, so it stays
in the group); a partition assigned while paused is paused in :meth:`GroupMember.on_assign`,
before anything is fetched from it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaException, TopicPartition

from crossfade import metrics
from crossfade.config import Settings
from crossfade.errors import BrokerUnavailable, CrossfadeError
from crossfade.events.kafka import Admin, current_epoch
from crossfade.sync.join_watch import (
    DELETE,
    JOIN_LOOK_S,
    MEMBER_PREFIX,
    REJOIN,
    SETTLED_STATES,
    JoinWatch,
    describe,
)
from crossfade.sync.load_order import LoadOrderHook
from crossfade.sync.pause import PauseHook

log = logging.getLogger(__name__)

TP = tuple[str, int]
Claim = Callable[[list[TP], str], tuple[str, dict[TP, int]]]
"""Claims partitions in the target under a broker epoch: (owner token, next offset of each)."""

LEADER_LEAVE_GRACE_S = 2.0
"""A stopping member that the broker names the group's leader (Tansu 0.6 only) keeps polling
this long before it looks at the group and leaves (:meth:`GroupMember.leave`): members stopped
by the same signal (the sync processes of one ``crossfade sync``, a worker's threads) send their
LeaveGroup first, so the leader sees their rebalance and completes it before it leaves."""

STATS_INTERVAL_MS = 5000
"""librdkafka's statistics of the consumer, this often: the fetch position of each assigned
partition (:attr:`GroupMember.fetched`), which the table watch reads."""

EPOCH_LOOKS_S = (0.2, 5.0, 1.0)
"""Waiting for capture's broker epoch: a look every 0.2 s for the first 5 s, then every 1 s.
Sync and capture usually start together, and sync's consumer group join, seconds of the broker's
own (Tansu: half the session timeout; Kafka: ``group.initial.rebalance.delay.ms``), begins only
once sync has seen the epoch: a look once a second added up to a second to the initial load's
start -> fence (bench ``snapshot``). Each look is a short-lived Kafka client (a connection, and
authentication on a secured cluster): at most 25 in the fast phase."""


class GroupMember:
    """One member of the sync consumer group (the worker's consumer and what it holds)."""

    def __init__(
        self,
        settings: Settings,
        worker_id: str,
        stop: threading.Event,
        topics: dict[str, str],
        claim: Claim,
    ) -> None:
        self.settings = settings
        self.kafka = settings.kafka
        self.worker_id = worker_id
        self.stop = stop
        self.topics = topics
        self._claim = claim
        self.consumer: Consumer | None = None
        self.epoch: str | None = None
        self.owner: dict[TP, str] = {}
        """Partitions held -> the owner token of their claim."""
        self.in_group = False
        """Whether this member holds a completed assignment (possibly empty) of the group."""
        self.left_in_group = False
        """Stopped without completing a pending join: the consumer was left open so that no
        LeaveGroup is sent; the process must exit without finalising it."""
        self.pending_reclaim = False
        self._admin: Admin | None = None
        self.assigned_blind = False
        """The last assignment was empty while a subscribed topic was missing on the broker."""
        self.ready = threading.Event()
        self.join_watch = JoinWatch(settings.sync.session_timeout_for(None))
        """The looks at a pending join (:meth:`look_at_join`)."""
        self._session_timeout_ms: int | None = None
        self.generation_started = time.monotonic()
        """When this member's current consumer-group generation began (its last revocation or
        subscription): what the table watch measures claims against."""
        self.next_heartbeat = 0.0
        self.pause = PauseHook(settings.sync.bookkeeping_schema)
        """``crossfade pause sync`` as this member obeys it (:mod:`crossfade.sync.pause`)."""
        self.load_order: LoadOrderHook | None = None
        """Children held back during an initial load (:mod:`crossfade.sync.load_order`)."""
        self.fetched: dict[TP, int] = {}
        """Owned partition -> the consumer's fetch position (the next offset librdkafka fetches,
        from its statistics every :data:`STATS_INTERVAL_MS`): records below it are fetched and
        wait in the consumer's local queue, behind the records of other partitions fetched
        before them (the queue is one FIFO of up to ``queued.min.messages``, 100,000 records,
        whatever their partition). Emptied on every assignment and revocation: a position of an
        earlier assignment says nothing of this one."""

    # -- epoch --------------------------------------------------------------------------------
    def current_epoch(self) -> str | None:
        """The broker's epoch, or None while it cannot be read (a restarting broker is waited
        for by the callers, never a reason to stop sync)."""
        try:
            return current_epoch(self.kafka.client_config(), self.kafka.control_topic, timeout=3)
        except BrokerUnavailable as exc:
            log.warning("broker epoch unreadable for now: %s", exc)
            return None

    def epoch_changed(self) -> bool:
        epoch = self.current_epoch()
        return epoch is not None and epoch != self.epoch

    def wait_for_epoch(self) -> str:
        warned = False
        fast, fast_for, slow = EPOCH_LOOKS_S
        t0 = time.monotonic()
        while not self.stop.is_set():
            epoch = self.current_epoch()
            if epoch:
                return epoch
            if not warned:
                log.info(
                    "waiting for capture to initialise the broker (%s has no epoch yet)",
                    self.kafka.control_topic,
                )
                warned = True
            self.stop.wait(fast if time.monotonic() - t0 < fast_for else slow)
        raise CrossfadeError("stopped before capture initialised the broker")

    # -- subscription -------------------------------------------------------------------------
    @property
    def session_timeout_ms(self) -> int:
        """``sync.session_timeout_ms`` on this broker (``auto``: 2000 on the embedded Tansu, 6000
        elsewhere: :meth:`~crossfade.config.SyncConfig.session_timeout_for`), decided once, from
        the cluster id of the broker's metadata when first needed (sync has already read the
        broker's epoch then). A broker that does not answer is taken for Apache Kafka."""
        if self._session_timeout_ms is None:
            sync = self.settings.sync
            cluster = self.admin().cluster_id() if sync.session_timeout_ms == "auto" else None
            self._session_timeout_ms = sync.session_timeout_for(cluster)
            log.debug("session timeout %d ms (cluster %s)", self._session_timeout_ms, cluster)
        return self._session_timeout_ms

    def new_consumer(self) -> Consumer:
        s = self.settings
        session_ms = self.session_timeout_ms
        return Consumer(
            {
                # topics of the subscription that appear later (capture recreating them after a
                # broker lost its log) are assigned within seconds, not after librdkafka's five
                # minutes (issue 21); kafka.extra may override it
                "topic.metadata.refresh.interval.ms": 10_000,
                **self.kafka.client_config(),
                "group.id": s.sync.group_id,
                "client.id": f"crossfade-sync-{self.worker_id}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                # never jump silently: a stored offset beyond the log end is an error we handle
                "auto.offset.reset": "error",
                "isolation.level": "read_committed",
                "max.poll.interval.ms": s.sync.max_poll_interval_ms,
                "session.timeout.ms": session_ms,
                # Kafka's rule: a heartbeat at least every third of the session timeout (librdkafka's
                # 3 s default is half of Kafka's 6 s minimum: one late beat would cost a rebalance)
                "heartbeat.interval.ms": min(3000, session_ms // 3),
                "fetch.wait.max.ms": s.sync.fetch_wait_max_ms,
                "allow.auto.create.topics": False,
                # the fetch positions the table watch reads (served inside consume())
                "statistics.interval.ms": STATS_INTERVAL_MS,
                "stats_cb": self.on_stats,
            }
        )

    def subscribe(self) -> None:
        if self.consumer is None:
            self.consumer = self.new_consumer()
        self.generation_started = time.monotonic()
        self.consumer.subscribe(
            list(self.topics),
            on_assign=self.on_assign,
            on_revoke=self.on_revoke,
            on_lost=self.on_revoke,
        )
        log.info(
            "subscribed to %d change topic(s) as %s: joining (session timeout %d ms)",
            len(self.topics),
            self.settings.sync.group_id,
            self.session_timeout_ms,
        )

    def resubscribe(self, why: str) -> bool:
        """Leave the group and join again with a new consumer, so the group assigns from fresh
        metadata (topics that appeared since: an unsubscribe/subscribe of the same consumer was
        seen joining again with its cached metadata, still without them). ``why`` starts the
        WARNING line. Not while a join is pending: a LeaveGroup then wedges Tansu's group
        (:meth:`finish_join`); the caller's next look tries again.

        Returns whether it re-subscribed. Only then may the caller drop records it consumed and
        did not apply: the new consumer's assignment starts at the offsets stored in the target.
        The old consumer, kept, goes on after them: records dropped then are lost (a 1M-row
        mapped load with two sync processes lost whole batches, issue 22).

        The other members see the same stall and re-subscribe about when this one does: the
        leader looks last, as when stopping (:meth:`_leader_grace`; it waits without polling:
        records polled then would be past what the caller applies)."""
        assert self.consumer is not None
        # one read serves the check and the hint; a second one from a new admin client when
        # the first did not answer (group_state: a client older than a broker reset never does)
        group = self.group_state() or self.group_state()
        if self.in_group and self._leader_grace(group, poll=False):
            group = self.group_state()
        if not self.in_group or (group is not None and group[0] not in SETTLED_STATES):
            log.warning(
                "%s: a consumer group rebalance is pending, not re-subscribing yet%s",
                why,
                self.rebalance_hint(group),
            )
            return False
        log.warning("%s: re-subscribing to the change topics", why)
        self._join_anew()
        return True

    def _join_anew(self) -> None:
        """Close this consumer (LeaveGroup; on_revoke forgets the partitions) and join with a
        new one: fresh metadata, a new member id."""
        assert self.consumer is not None
        metrics.resubscribed()
        self.consumer.close()
        self.consumer = self.new_consumer()
        self.subscribe()

    def look_at_epoch(self) -> None:
        """A new broker epoch (capture started again on a broker that lost its log), or change
        topics that appeared after an empty assignment, looked at every few seconds while no
        record comes.

        Owned partitions are claimed again from the new log (:attr:`pending_reclaim`). A member
        that owns nothing may hold an assignment the group made while the topics did not exist:
        its session expired with the old broker and it joined the new one before capture
        re-created them. Neither librdkafka's metadata refresh nor the broker rebalances such a
        group when the topics appear (seen on Tansu: random fault seeds 1031340223 and
        1031340224 waited until the table watch's re-subscribe, a minute later, or for ever).
        Once every subscribed topic exists, the member joins again with a fresh consumer, once
        per epoch or empty assignment taken without the topics (a member of a group with more
        workers than partitions may own nothing: it is left alone)."""
        epoch = self.current_epoch()
        new_epoch = epoch is not None and epoch != self.epoch
        if self.owner:
            self.pending_reclaim |= new_epoch
            return
        if not (new_epoch or self.assigned_blind) or not self.in_group:
            return
        if not self._topics_exist():
            return  # capture has not (re-)created the topics yet: look again
        why = f"broker epoch changed to {epoch}" if new_epoch else "the change topics appeared"
        self.resubscribe(f"{why} while this worker held no partition")
        self.epoch = epoch or self.epoch
        self.assigned_blind = False

    def admin(self) -> Admin:
        """The member's admin client: one, created when first needed and kept (like the table
        watch's), never one per call (the leave path runs during broker resets)."""
        if self._admin is None:
            self._admin = Admin(self.kafka.client_config())
        return self._admin

    def _topics_exist(self) -> bool:
        try:
            return all(self.admin().partitions(t, timeout=5) for t in self.topics)
        except BrokerUnavailable as exc:
            log.warning("broker metadata unreadable for now: %s", exc)
            return False

    # -- assignment ---------------------------------------------------------------------------
    def owned(self) -> set[TP]:
        """A snapshot of :attr:`owner`'s partitions from another thread (the watch's)."""
        for _ in range(10):
            try:
                return set(self.owner)
            except RuntimeError:  # changed size while copied: the consume loop was assigning
                continue
        return set()

    def claim(self, tps: list[TP]) -> dict[TP, int]:
        assert self.epoch is not None
        token, offsets = self._claim(tps, self.epoch)
        for tp in tps:
            self.owner[tp] = token
        return offsets

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.in_group = True
        tps = [(p.topic, p.partition) for p in partitions]
        if not tps:  # nothing, maybe because the topics do not exist (yet): look_at_epoch
            self.assigned_blind = not self.stop.is_set() and not self._topics_exist()
            return
        if self.stop.is_set():  # stopping: only completing the join (finish_join)
            return
        # a rejoin after a broker restart must not claim under the old epoch
        self.epoch = self.current_epoch() or self.epoch
        offsets = self.claim(tps)
        self.fetched = {}
        assigned = [TopicPartition(t, p, offsets[(t, p)]) for t, p in tps]
        consumer.assign(assigned)
        self.pause.on_assign(consumer, assigned)  # paused: the new partitions too, at once
        if self.load_order is not None:  # held children's partitions too
            self.load_order.on_assign(consumer, assigned)
        log.info("assigned %s", ", ".join(f"{t}[{p}]@{offsets[(t, p)]}" for t, p in tps))
        # report the new assignment before the first batch from it commits: a fence that batch
        # completes must not be read beside a heartbeat that still shows no partition
        self.next_heartbeat = 0.0
        self.ready.set()

    def on_stats(self, stats: str) -> None:
        """librdkafka's statistics: the fetch position of every owned partition
        (:attr:`fetched`). A position librdkafka does not know yet (``-1001``) is left out."""
        try:
            topics = json.loads(stats).get("topics", {})
            fetched = {
                (topic, int(p)): int(part["next_offset"])
                for topic, t in topics.items()
                for p, part in t.get("partitions", {}).items()
                if int(p) >= 0 and int(part.get("next_offset", -1)) >= 0
            }
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            log.debug("consumer statistics not read: %s", exc)
            return
        owned = set(self.owner)
        self.fetched = {tp: n for tp, n in fetched.items() if tp in owned}

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.in_group = False  # a rebalance began: until the next assignment a join is pending
        self.generation_started = time.monotonic()
        self.fetched = {}
        for p in partitions:
            self.owner.pop((p.topic, p.partition), None)
        self.next_heartbeat = 0.0
        if partitions:
            log.info("revoked %s", ", ".join(f"{p.topic}[{p.partition}]" for p in partitions))

    def reclaim_all(self) -> None:
        """The broker epoch changed under us: restart every owned partition at offset 0."""
        assert self.consumer is not None
        tps = list(self.owner)
        self.epoch = self.wait_for_epoch()
        if not tps:
            return
        offsets = self.claim(tps)
        self.fetched = {}
        self.consumer.assign([TopicPartition(t, p, offsets[(t, p)]) for t, p in tps])
        if self.load_order is not None:  # assign resumed them
            self.load_order.apply(self.consumer, self.pause.paused)
        log.warning(
            "broker epoch changed to %s: replaying %d partitions from the new log",
            self.epoch,
            len(tps),
        )

    def heartbeat_due(self) -> bool:
        """Whether the heartbeat is due now (then the next is scheduled)."""
        now = time.monotonic()
        if now < self.next_heartbeat:
            return False
        self.next_heartbeat = now + self.settings.sync.heartbeat_interval_s
        return True

    # -- leaving ------------------------------------------------------------------------------
    def leave(self) -> None:
        """Close the consumer (LeaveGroup), unless stopping mid-join left it open on purpose
        (:meth:`finish_join`; :attr:`left_in_group`).

        Tansu (0.6) must not get a LeaveGroup from the group's leader while the group is
        rebalancing: it removes the member but keeps it as the leader of the rebalance, so no
        member is ever given the assignment to compute and the group never assigns a partition
        again (every later JoinGroup names the departed leader; only the broker's restart ends
        it; random fault seed 257976342 under ``capture.initial_load: copy``). Apache Kafka
        elects a new leader. A rebalance this member has not heard of yet (another member's join
        or leave began less than a heartbeat ago: librdkafka learns of it from its next
        heartbeat) looks settled from here, so the broker is asked first: while it reports a
        rebalance, this member takes part in it (:meth:`finish_join`) and leaves the group it
        completes. A broker that cannot be asked within 3 s is left as before.

        Members stopped together (the sync processes of one ``crossfade sync`` get the same
        SIGTERM) raced that look: both saw the group settled, the other member's LeaveGroup
        landed first and began a rebalance, and the leader's then wedged it (CI, two sync
        processes: the restarted ones waited minutes for an assignment). So the leader looks
        last (:meth:`_leader_grace`)."""
        assert self.consumer is not None
        state = None
        if self.in_group:
            group = self.group_state(timeout=3.0) or self.group_state(timeout=3.0)
            if self._leader_grace(group):
                group = self.group_state(timeout=3.0)
            if group is not None and group[0] not in SETTLED_STATES:
                state = group[0]
        if state is not None:
            log.info(
                "the broker reports consumer group %s rebalancing (%s): completing the rebalance "
                "before leaving",
                self.settings.sync.group_id,
                state,
            )
            self.in_group = False  # a join is pending at the broker: the next assignment ends it
        if self.finish_join() or not self.stop.is_set():
            self.consumer.close()
        else:
            self.left_in_group = True  # the process exits without closing it (ops/cli.py)

    def _leader_grace(self, group: tuple[str, str] | None, poll: bool = True) -> bool:
        """Before a leader looks at the group again to leave it (:meth:`leave`,
        :meth:`resubscribe`; ``group``: the broker's answer just read): a member the broker
        names the group's leader (Tansu 0.6 names the leader's member id; Apache Kafka names the
        assignor, never a member, so nothing waits there) waits :data:`LEADER_LEAVE_GRACE_S`,
        unless it is alone (:meth:`_alone`). The LeaveGroups of members stopped with it land
        meanwhile: the next look sees their rebalance, which the leader completes before it
        leaves. ``poll``: it keeps polling meanwhile (records polled are dropped: offsets live
        in the target). Returns whether it waited (then the caller looks again)."""
        assert self.consumer is not None
        if group is None or group[1] != self.consumer.memberid() or self._alone():
            return False
        log.info(
            "leading consumer group %s: leaving after the other members (at most %.0f s)",
            self.settings.sync.group_id,
            LEADER_LEAVE_GRACE_S,
        )
        deadline = time.monotonic() + LEADER_LEAVE_GRACE_S
        if not poll:
            self.stop.wait(LEADER_LEAVE_GRACE_S)
            return True
        while time.monotonic() < deadline:
            try:
                self.consumer.poll(0.2)
            except KafkaException as exc:
                log.debug("poll before leaving failed: %s", exc)
                break
        return True

    def _alone(self) -> bool:
        """Whether this member holds every partition of a topic that has two or more: the
        group's assignors (range, round robin, sticky) then give every other member one, so
        there is none. False when the broker does not answer."""
        for topic in self.topics:
            try:
                n = self.admin().partitions(topic, timeout=3)
            except BrokerUnavailable:
                return False
            if n is not None and n >= 2 and sum(t == topic for t, _ in self.owner) == n:
                return True
        return False

    def look_at_join(self) -> None:
        """While this member's join is pending, a look at the group every
        :data:`~crossfade.sync.join_watch.JOIN_LOOK_S`, judged by :attr:`join_watch`
        (:mod:`crossfade.sync.join_watch`): a rebalance whose leader left during it never
        completes on Tansu 0.6 (:meth:`leave`: the broker keeps the departed member as the
        leader, every JoinGroup names it, nobody is ever assigned a partition): the group is
        deleted, and the members' next joins form it again (offsets live in the target, not in
        the group). A join that makes no progress otherwise (no leader, this member, a name no
        member has, a group settled or unknown: seen after a broker reset with two sync
        processes) is joined again with a new consumer (:meth:`rejoin_wedged`). Apache Kafka's
        own rebalances are left to it.

        The broker is asked for its metadata before the group is described: librdkafka's
        DescribeConsumerGroups can abort the process when its coordinator lookup times out
        (``rd_kafka_enq_once_del_source_return`` assertion, librdkafka issue 4605; seen with
        both sync processes at a broker reset). Looks the broker or its group coordinator does
        not answer count for nothing: a consumer closed without a coordinator can crash in
        librdkafka's LeaveGroup (librdkafka issue 5347)."""
        if self.in_group:  # what was seen before this member's last assignment is no evidence
            self.join_watch.assigned()
            return
        if self.consumer is None or not self.join_watch.due():
            return
        try:
            self.admin().partitions(next(iter(self.topics), self.kafka.control_topic), timeout=3)
        except BrokerUnavailable:
            self._admin = None  # a new client next time (group_state)
            self.join_watch.unanswered()  # the consume loop is not held up by it
            return
        group = self.group_state(timeout=3.0)
        if group is None:  # no coordinator answers: a consumer is not closed then (issue 5347)
            self.join_watch.unanswered()
            return
        me = self.consumer.memberid()
        verdict = self.join_watch.judge(group, me)
        if verdict == DELETE:
            self._delete_for_departed_leader(group)
        elif verdict == REJOIN:
            self.rejoin_wedged(group, me)

    def _delete_for_departed_leader(self, group: tuple[str, str]) -> None:
        gid = self.settings.sync.group_id
        log.warning(
            "consumer group %s has waited %.0f s for leader %s, which left during the rebalance "
            "(the broker, Tansu 0.6, never replaces it): deleting the group so that its members "
            "form it again",
            gid,
            self.join_watch.waited_s,
            group[1],
        )
        try:
            refused = self.admin().delete_group(gid)
        except BrokerUnavailable as exc:
            log.warning("%s; trying again in %.0f s", exc, JOIN_LOOK_S)
            return
        if refused:
            log.warning("consumer group %s not deleted: %s", gid, refused)

    def rejoin_wedged(self, group: tuple[str, str], me: str) -> None:
        """A pending join that made no progress for twice ``sync.session_timeout_ms`` while the
        broker answered (:data:`~crossfade.sync.join_watch.REJOIN`): delete the group (whatever
        it holds: a leader of this member's that never assigns, a stale generation), then close
        this consumer and join with a new one. The group goes first: a LeaveGroup from a
        rebalance's leader would wedge Tansu 0.6's group (:meth:`leave`); sent to a group
        deleted, it is harmless. Apache Kafka refuses to delete a group with members
        (``NON_EMPTY_GROUP``): the new consumer joins it. This member holds no partition while
        its join is pending (revoked first), so nothing it wrote is fenced off by it."""
        assert self.consumer is not None
        gid = self.settings.sync.group_id
        log.warning(
            "consumer group %s: this worker's join made no progress in %.0f s (%s): deleting "
            "the group and joining again with a new consumer",
            gid,
            self.join_watch.waited_s,
            describe(group, me),
        )
        try:
            refused = self.admin().delete_group(gid)
        except BrokerUnavailable as exc:
            log.info("consumer group %s not deleted (%s): joining again anyway", gid, exc)
            refused = None
        if refused:
            log.info("consumer group %s not deleted: %s", gid, refused)
        self._join_anew()

    def group_state(self, timeout: float = 5.0) -> tuple[str, str] | None:
        """The group's state and leader as the broker reports them
        (:meth:`crossfade.events.kafka.Admin.group_state`), None when it does not answer within
        ``timeout``. The admin client is dropped then, and the next call makes a new one: an
        admin client that saw the broker restart (Tansu on the same port, empty) times out on
        every DescribeConsumerGroups after it, while a new one is answered at once (measured);
        with the old client kept, no look at a join saw the group again after a broker reset,
        and a group wedged by a departed leader was never deleted (CI, two sync processes:
        287 s of joins)."""
        try:
            return self.admin().group_state(self.settings.sync.group_id, timeout=timeout)
        except BrokerUnavailable as exc:
            log.debug("consumer group state unknown: %s", exc)
            self._admin = None
            return None

    def rebalance_hint(self, group: tuple[str, str] | None = None) -> str:
        """For a join that lasts: the rebalance's leader as the broker names it (Tansu reports
        it; ``group``: a :meth:`group_state` just read, else read here) when it is not this
        member, and what a leader that never comes back means; "" when the broker names none or
        does not answer."""
        group = group or self.group_state()
        if group is None:
            return ""
        state, leader = group
        mine = self.consumer.memberid() if self.consumer is not None else None
        if state in SETTLED_STATES or not leader.startswith(MEMBER_PREFIX) or leader == mine:
            return ""
        return (
            f"; the broker reports the group {state} with leader {leader}, not this worker: a "
            "live leader completes the rebalance within sync.session_timeout_ms and a dead one "
            "is expired after it; if this lasts, that leader left during the rebalance and the "
            "broker (Tansu 0.6) never replaces it: sync deletes the group after twice "
            "sync.session_timeout_ms, else restart the broker (docs/operations.md)"
        )

    def finish_join(self) -> bool:
        """Stopping while this member's join is pending at the broker (a rebalance in progress):
        let the join complete before leaving the group. False when it did not complete: the
        caller must then not send LeaveGroup (:attr:`left_in_group`).

        Tansu (0.6) acknowledges a LeaveGroup sent while the member's JoinGroup is held (the
        group waits for a killed member's session to expire), then completes that join anyway
        and elects the departed member leader of the next generation: the group never leaves
        that rebalance and no worker is ever assigned a partition again. Apache Kafka handles it.
        Waiting for the assignment (at most the session timeout, then a margin) costs a stopping
        worker a few seconds; records polled meanwhile are dropped (offsets live in the target).
        If the join does not complete, the worker goes like a killed one: the broker expires it
        after the session timeout, which Tansu handles."""
        assert self.consumer is not None
        if self.in_group:
            return True
        wait_s = self.session_timeout_ms / 1000 + 5
        log.info(
            "stopping during a consumer group rebalance: completing it before leaving (at most %.0f s)",
            wait_s,
        )
        deadline = time.monotonic() + wait_s
        while not self.in_group and time.monotonic() < deadline:
            try:
                self.consumer.poll(0.2)
            except KafkaException as exc:
                log.warning("consumer group rebalance not completed (%s)", exc)
                break
        if not self.in_group:
            log.warning(
                "consumer group rebalance not completed in %.0f s: leaving without LeaveGroup "
                "(the broker expires this member after sync.session_timeout_ms)",
                wait_s,
            )
        return self.in_group
