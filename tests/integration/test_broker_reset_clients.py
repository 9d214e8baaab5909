"""Sync's own Kafka clients after the broker lost its log (FAULTS: broker restarted empty).

Sync's worker lives through such a reset (it re-reads the new epoch), and so do the clients it
keeps:

* its dead-letter producer: an idempotent producer that outlives its broker's log keeps the old
  sequence numbers and is never acknowledged again, so it must be replaced, or every batch
  holding a dead letter retries for ever (random fault seed 216136845 stalled so);
* its reader of the schemas topic: the new topic is shorter than the reader's position and
  Tansu reports no out-of-range, so the schemas capture publishes again must be read from the
  start, or valid changes are dead-lettered as "unknown schema fingerprint" (fresh seed
  244489834 did so).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from crossfade.config import Settings
from crossfade.embedded import EmbeddedBroker
from crossfade.errors import BrokerUnavailable
from crossfade.events.kafka import Admin, ensure_epoch
from crossfade.events.schema_store import SchemaPublisher, TopicSchemaResolver
from crossfade.sync.consumer import GroupMember
from crossfade.sync.dead_letters import DeadLetterTopic
from crossfade.sync.planner import DeadLetter
from crossfade.sync.progress_log import RejectLog

pytestmark = pytest.mark.integration

DLQ = "cf.__dlq"
SCHEMAS = "cf.__schemas"


@dataclass
class _Msg:
    n: int

    def topic(self) -> str:
        return "cf.public.t"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self.n

    def key(self) -> bytes:
        return b"k%d" % self.n

    def value(self) -> bytes:
        return b"not avro %d" % self.n


def _create_topic(bootstrap: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = [NewTopic(DLQ, 1, 1), NewTopic(SCHEMAS, 1, 1, config={"cleanup.policy": "compact"})]
    for f in admin.create_topics(new).values():
        f.result(30)


def _dead(n: int) -> list[DeadLetter]:
    return [DeadLetter(_Msg(n), "undecodable", "public.t")]


def _values(bootstrap: str) -> list[bytes]:
    c = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "dlq-check", "auto.offset.reset": "earliest"}
    )
    c.subscribe([DLQ])
    got: list[bytes] = []
    try:
        for _ in range(30):
            got += [m.value() for m in c.consume(10, 1.0) if m.error() is None]
            if len(got) >= 1:
                break
    finally:
        c.close()
    return got


@dataclass
class _Stack:
    broker: EmbeddedBroker
    dlq: DeadLetterTopic

    def reset(self) -> None:
        """The broker killed and started empty (its log and the producer's state gone)."""
        self.broker.kill()
        self.broker.start(timeout=30)
        _create_topic(self.broker.bootstrap_servers)


@pytest.fixture
def stack(work_root: Path) -> Iterator[_Stack]:
    broker = EmbeddedBroker(log_to=work_root / f"tansu-dlq-{time.monotonic_ns()}.log").start()
    try:
        conf = {
            "bootstrap.servers": broker.bootstrap_servers,
            "enable.idempotence": True,
            "acks": "all",
        }
        _create_topic(broker.bootstrap_servers)
        dlq = DeadLetterTopic(Producer(conf), DLQ, RejectLog(), lambda: Producer(conf), 5)
        yield _Stack(broker, dlq)
    finally:
        broker.stop()


@pytest.mark.timeout(180)
def test_dead_letters_after_the_broker_lost_its_log(stack: _Stack) -> None:
    dlq = stack.dlq
    dlq.undecodable(_dead(1), lambda _t: None)  # acknowledged: the producer has sequences
    stack.reset()

    # the first try after the reset is not acknowledged: the batch is retried
    before = dlq.producer
    with pytest.raises(BrokerUnavailable, match="not acknowledged"):
        dlq.undecodable(_dead(2), lambda _t: None)
    # the same producer, kept, stays unacknowledged or turns fatal (UNKNOWN_PRODUCER_ID),
    # depending on timing: the retry gets a new one
    dlq.undecodable(_dead(2), lambda _t: None)
    assert dlq.producer is not before
    assert _values(stack.broker.bootstrap_servers) == [b"not avro 2"]


@pytest.mark.timeout(180)
def test_a_new_broker_epoch_replaces_the_producer_before_any_batch_waits(stack: _Stack) -> None:
    dlq = stack.dlq
    dlq.on_epoch("e1")
    first = dlq.producer
    dlq.undecodable(_dead(1), lambda _t: None)
    dlq.on_epoch("e1")
    assert dlq.producer is first  # the same epoch keeps its producer
    stack.reset()

    dlq.on_epoch("e2")  # sync read the new epoch (capture wrote it)
    assert dlq.producer is not first
    dlq.undecodable(_dead(2), lambda _t: None)  # acknowledged at the first try
    assert _values(stack.broker.bootstrap_servers) == [b"not avro 2"]


def _schema(name: str) -> dict[str, object]:
    return {"type": "record", "name": name, "fields": [{"name": "id", "type": "long"}]}


@pytest.mark.timeout(180)
def test_schemas_published_again_after_the_broker_lost_its_log_are_found(stack: _Stack) -> None:
    conf = {"bootstrap.servers": stack.broker.bootstrap_servers}
    before = SchemaPublisher(conf, SCHEMAS)
    for n in ("A", "B", "C", "D"):  # the reader's position ends past these four
        before.publish(_schema(n))
    resolver = TopicSchemaResolver(conf, SCHEMAS, None, wait_s=5)
    resolver.resolve_single_object(before.publish(_schema("D")).fingerprint)
    stack.reset()

    # capture, restarted, publishes what it uses again: one schema, at offset 0 of the new topic
    new = SchemaPublisher(conf, SCHEMAS).publish(_schema("E"))
    assert resolver.resolve_single_object(new.fingerprint).fingerprint == new.fingerprint


# -- the group member: joined the new broker before capture re-created the topics ----------------

TOPIC = "cf.public.t"


def _capture_starts(bootstrap: str, settings: Settings) -> str:
    """What capture does on a broker that lost its log: a new epoch, then the change topics."""
    conf = settings.kafka.client_config()
    admin = Admin(conf)
    epoch, created = ensure_epoch(admin, conf, settings.kafka.control_topic, 1)
    assert created
    assert admin.ensure_topics([TOPIC], 3, 1) == [TOPIC]
    return epoch


def _spin(member: GroupMember, until: Callable[[], bool], seconds: float, look: bool) -> bool:
    """The worker's consume loop, reduced to what membership needs: poll, and look at the
    epoch every second while no record comes (the worker looks every 10 s)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert member.consumer is not None
        member.consumer.consume(100, 0.5)
        if look:
            member.look_at_epoch()
        if member.pending_reclaim:
            member.pending_reclaim = False
            member.reclaim_all()
        if until():
            return True
    return False


@pytest.mark.timeout(240)
def test_a_member_that_rejoined_before_the_topics_existed_is_assigned_once_they_do(
    work_root: Path,
) -> None:
    """Random fault seeds 1031340223 and 1031340224: the broker lost its log, sync's session
    expired, it joined the new broker's group before capture re-created the topics and got an
    empty assignment; neither the broker nor librdkafka's metadata refresh rebalanced when the
    topics appeared, and the fence reached 0 partitions (in CI not even the table watch's
    re-subscribe, a minute later, came)."""
    broker = EmbeddedBroker(log_to=work_root / f"tansu-rejoin-{time.monotonic_ns()}.log").start()
    try:
        bootstrap = broker.bootstrap_servers
        settings = Settings(
            source={"dsn": "postgresql://u@127.0.0.1:1/legacy"},
            target={"dsn": "postgresql://u@127.0.0.1:1/target"},
            kafka={"bootstrap_servers": bootstrap, "topic_prefix": "cf"},
            sync={"session_timeout_ms": 6000},
            tables=["public.t"],
        )
        assert settings.kafka.table_topic("public.t") == TOPIC
        claims: list[tuple[list[tuple[str, int]], str]] = []

        def claim(tps: list[tuple[str, int]], epoch: str) -> tuple[str, dict[Any, int]]:
            claims.append((tps, epoch))
            return f"token-{len(claims)}", dict.fromkeys(tps, 0)

        first = _capture_starts(bootstrap, settings)
        member = GroupMember(settings, "w1", threading.Event(), {TOPIC: "public.t"}, claim)
        member.epoch = first
        member.subscribe()
        assert _spin(member, lambda: len(member.owner) == 3, 60, look=True), "never assigned"

        broker.kill()
        broker.start(timeout=30)  # empty: no epoch, no topics
        # the session expires, the partitions are revoked and the member joins the new group
        # while no change topic exists: an empty assignment
        assert _spin(member, lambda: not member.owner and member.in_group, 90, look=True)
        assert member.assigned_blind

        second = _capture_starts(bootstrap, settings)
        assert _spin(member, lambda: len(member.owner) == 3, 40, look=True), (
            "not assigned after the topics were re-created"
        )
        assert (sorted(claims[-1][0]), claims[-1][1]) == (sorted(member.owner), second)
        member.consumer.close()  # type: ignore[union-attr]
    finally:
        broker.stop()
