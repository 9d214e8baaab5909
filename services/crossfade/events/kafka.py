"""Kafka plumbing shared by capture and sync: topics, the broker epoch, control records.

The broker epoch
    The first record (offset 0) of the one-partition control topic names the *epoch* of the
    broker's log: a random id written when crossfade first finds the topic empty. Capture keys its
    Debezium offsets by epoch and sync stores it beside its offsets. A broker that lost its data
    (the embedded, in-memory one does when it stops) has no control record, so a new epoch starts:
    capture re-snapshots into it and sync replays it from offset 0, sweeping rows the new snapshot
    no longer holds. Offset 0 of a topic is read, never the log end: Tansu's ListOffsets(latest)
    under-reports (STACK.md), so nothing here depends on it.

Control records
    Records with the header ``crossfade.control`` are not change events: ``fence`` (DESIGN
    decision 4: broadcast to every partition, applied in order with the data) and ``sweep`` (end
    of a snapshot: rows older than the snapshot position were deleted at the source meanwhile).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from crossfade.errors import BrokerUnavailable, CrossfadeError

log = logging.getLogger(__name__)

Headers = dict[str, str | bytes | None] | list[tuple[str, str | bytes | None]]
"""A record's headers as confluent-kafka gives and takes them."""

CONTROL_HEADER = "crossfade.control"


@dataclass(frozen=True, slots=True)
class ControlRecord:
    """A fence or sweep marker travelling in a change topic."""

    kind: str  # "fence" | "sweep"
    table: str  # source schema.table
    lsn: int
    token: str = ""
    source_ts_ms: int = 0
    partitions: int = 0
    """A sweep's: to how many partitions of the topic capture sent it (sync applies the sweep
    once every one of them has passed its marker); 0 when not said (older markers)."""

    def encode(self) -> bytes:
        return json.dumps(
            {
                "kind": self.kind,
                "table": self.table,
                "lsn": self.lsn,
                "token": self.token,
                "source_ts_ms": self.source_ts_ms,
                "partitions": self.partitions,
            }
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> ControlRecord:
        d = json.loads(data)
        return cls(
            d["kind"],
            d["table"],
            int(d["lsn"]),
            d.get("token", ""),
            d.get("source_ts_ms", 0),
            int(d.get("partitions") or 0),
        )


def record_place(m: Message) -> tuple[str, int, int]:
    """Topic, partition and offset of a record read from Kafka (not an error event).

    confluent-kafka types all three optional because an error event may lack them; a consumed
    record always has them, so a missing one is a client defect: raises :class:`CrossfadeError`.
    """
    topic, partition, offset = m.topic(), m.partition(), m.offset()
    if topic is None or partition is None or offset is None:
        raise CrossfadeError(
            f"Kafka handed over a record without its place ({topic}[{partition}]@{offset})",
            "report it with the confluent-kafka and broker versions; restart sync to re-read",
        )
    return topic, partition, offset


def record_headers(m: Message) -> list[tuple[str, str | bytes | None]]:
    """A record's headers as a list of (name, value); empty when it has none."""
    hs = m.headers()
    if not hs:
        return []
    return list(hs.items()) if isinstance(hs, dict) else hs


def control_kind(headers: Headers | None) -> str | None:
    """Return the control kind named by a record's headers, or None for a change event."""
    if not headers:
        return None
    for k, v in headers.items() if isinstance(headers, dict) else headers:
        if k == CONTROL_HEADER:
            return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
    return None


class Admin:
    """Topic administration with errors a person can act on."""

    def __init__(self, client_conf: dict[str, Any]) -> None:
        self._conf = client_conf
        self._admin = AdminClient(client_conf)

    @property
    def bootstrap(self) -> str:
        return str(self._conf.get("bootstrap.servers"))

    def ping(self, timeout: float = 10.0) -> None:
        """Raise :class:`BrokerUnavailable` unless the cluster answers a metadata request."""
        try:
            md = self._admin.list_topics(timeout=timeout)
        except KafkaException as exc:
            raise BrokerUnavailable(
                f"cannot reach Kafka at {self.bootstrap} ({exc.args[0].str() if exc.args else exc})",
                "check kafka.bootstrap_servers and that the broker is running",
            ) from None
        if not md.brokers:
            raise BrokerUnavailable(
                f"Kafka at {self.bootstrap} reports no brokers", "check the cluster"
            )

    def cluster_id(self, timeout: float = 5.0) -> str | None:
        """The cluster id the broker's metadata reports (None: the broker did not answer, or
        reports none)."""
        try:
            md = self._admin.list_topics(timeout=timeout)
        except KafkaException:
            return None
        return md.cluster_id or None

    def partitions(self, topic: str, timeout: float = 10.0) -> int | None:
        """Number of partitions of ``topic``, None if it does not exist.

        Reads the metadata of *all* topics: asking for one topic by name makes brokers with
        ``auto.create.topics.enable`` (Tansu always) create it, with the wrong partition count.
        """
        try:
            md = self._admin.list_topics(timeout=timeout)
        except KafkaException as exc:
            raise BrokerUnavailable(f"cannot read metadata of {topic}: {exc}") from None
        t = md.topics.get(topic)
        if t is None or t.error is not None or not t.partitions:
            return None
        return len(t.partitions)

    def topics(self, timeout: float = 10.0) -> list[str]:
        """Every topic the cluster lists (internal ones included)."""
        try:
            md = self._admin.list_topics(timeout=timeout)
        except KafkaException as exc:
            raise BrokerUnavailable(f"cannot read the topic list: {exc}") from None
        return sorted(md.topics)

    def group_state(self, group: str, timeout: float = 5.0) -> tuple[str, str]:
        """Consumer group ``group`` as the broker reports it: its state's name (``STABLE``,
        ``EMPTY``, ``PREPARING_REBALANCING``, ``COMPLETING_REBALANCING``, ``DEAD``; ``UNKNOWN``
        for anything else: Tansu 0.6 reports a rebalance that has a leader so) and its
        ``partition_assignor`` (Kafka: the assignor's name; Tansu 0.6: the group leader's member
        id, "" while it has none). Raise :class:`BrokerUnavailable` when the broker does not
        answer."""
        try:
            fut = self._admin.describe_consumer_groups([group], request_timeout=timeout)[group]
            desc = fut.result()
        except KafkaException as exc:
            raise BrokerUnavailable(
                f"cannot describe consumer group {group} ({exc.args[0].str() if exc.args else exc})"
            ) from None
        state = getattr(desc.state, "name", str(desc.state))
        return state, str(desc.partition_assignor or "")

    def delete_group(self, group: str, timeout: float = 5.0) -> str | None:
        """Delete consumer group ``group``: None when deleted (or already gone), else the
        broker's reason (Apache Kafka refuses a group that has members: ``NON_EMPTY_GROUP``).
        Raise :class:`BrokerUnavailable` when the broker does not answer."""
        try:
            fut = self._admin.delete_consumer_groups([group], request_timeout=timeout)[group]
            fut.result()
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if not isinstance(err, KafkaError):
                raise BrokerUnavailable(f"cannot delete consumer group {group} ({exc})") from None
            if err.code() == KafkaError.GROUP_ID_NOT_FOUND:
                return None
            if err.code() in (KafkaError._TIMED_OUT, KafkaError._TRANSPORT):
                raise BrokerUnavailable(
                    f"cannot delete consumer group {group} ({err.str()})"
                ) from None
            return err.str()
        return None

    def delete_topics(self, topics: list[str], timeout: float = 30.0) -> dict[str, str | None]:
        """Delete ``topics``; per topic None (deleted, or already gone) or the broker's reason."""
        if not topics:
            return {}
        out: dict[str, str | None] = {}
        for topic, fut in self._admin.delete_topics(topics, request_timeout=timeout).items():
            try:
                fut.result()
                out[topic] = None
            except KafkaException as exc:
                err = exc.args[0]
                gone = err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
                out[topic] = None if gone else err.str()
        return out

    def ensure_topics(
        self,
        topics: Iterable[str],
        partitions: int,
        replication_factor: int,
        config: dict[str, str] | None = None,
    ) -> list[str]:
        """Create the topics that do not exist yet; return the names created.

        An existing topic is left as it is (its partition count is never changed: that would move
        keys between partitions and break per-key ordering).
        """
        missing = [t for t in topics if self.partitions(t) is None]
        if not missing:
            return []
        futures = self._admin.create_topics(
            [
                NewTopic(
                    t,
                    num_partitions=partitions,
                    replication_factor=replication_factor,
                    config=config or {},
                )
                for t in missing
            ],
            request_timeout=30,
        )
        for topic, fut in futures.items():
            try:
                fut.result()
            except KafkaException as exc:
                err = exc.args[0]
                if err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise CrossfadeError(f"cannot create topic {topic}: {err.str()}") from None
        # wait until metadata shows them: produce/consume right after creation otherwise races
        deadline = time.monotonic() + 15
        for t in missing:
            while self.partitions(t) is None:
                if time.monotonic() > deadline:
                    raise BrokerUnavailable(f"topic {t} was created but does not show in metadata")
                time.sleep(0.1)
        return missing


def read_first_record(
    client_conf: dict[str, Any], topic: str, timeout: float = 5.0, *, strict: bool = False
) -> tuple[bytes | None, bytes | None] | None:
    """Read the record at offset 0 of partition 0 of ``topic``; None if there is none.

    A missing topic is not fetched (fetching would auto-create it on some brokers). ``strict``:
    a partition that gave neither a record nor its end within ``timeout`` (no leader during a
    broker's restart, a slow broker) raises :class:`BrokerUnavailable` instead of reading as
    empty: only a partition seen empty, or a topic seen missing, is "no record".
    """
    if Admin(client_conf).partitions(topic, timeout=timeout) is None:
        return None
    c = Consumer(
        {
            **client_conf,
            "group.id": f"crossfade-probe-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "allow.auto.create.topics": False,
            # an empty partition answers at once instead of after the whole timeout, and the broker
            # does not hold the fetch of an empty partition for 500 ms (librdkafka's default)
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 20,
        }
    )
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None:
                continue
            err = m.error()
            if err is not None:
                if err.code() in (KafkaError._PARTITION_EOF,):
                    return None
                if err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    return None
                continue
            return (m.key(), m.value())
        if strict:
            raise BrokerUnavailable(
                f"{topic}[0] gave neither a record nor its end in {timeout:g} s"
            )
        return None
    finally:
        c.close()


def ensure_epoch(
    admin: Admin, client_conf: dict[str, Any], control_topic: str, replication_factor: int
) -> tuple[str, bool]:
    """Return ``(epoch, created)``: the broker log's epoch, creating it on a fresh broker.

    Only capture calls this (it is the writer of the log); sync calls :func:`current_epoch`.
    """
    admin.ensure_topics([control_topic], 1, replication_factor, {"cleanup.policy": "compact"})
    rec = read_first_record(client_conf, control_topic)
    if rec is not None and rec[1]:
        return json.loads(rec[1])["epoch"], False
    epoch = uuid.uuid4().hex
    # not idempotent (its producer-id request costs ~0.5 s on Tansu): a retry that writes the
    # record twice is harmless, offset 0 decides
    p = Producer({**client_conf, "acks": "all"})
    errors: list[Any] = []
    p.produce(
        control_topic,
        key=b"epoch",
        value=json.dumps({"epoch": epoch, "created_at": time.time()}).encode(),
        partition=0,
        on_delivery=lambda err, _m: errors.append(err) if err else None,
    )
    p.flush(30)
    if errors:
        raise BrokerUnavailable(f"cannot write the epoch record to {control_topic}: {errors[0]}")
    # another capture may have raced us; offset 0 decides
    rec = read_first_record(client_conf, control_topic, timeout=10)
    if rec is None or not rec[1]:
        raise BrokerUnavailable(
            f"wrote the epoch record to {control_topic} but cannot read it back"
        )
    return json.loads(rec[1])["epoch"], True


def current_epoch(
    client_conf: dict[str, Any], control_topic: str, timeout: float = 5.0, *, strict: bool = False
) -> str | None:
    """The epoch of the broker's log, or None when capture has not started on this broker yet.
    ``strict``: a control topic that cannot be read in ``timeout`` raises
    :class:`BrokerUnavailable` (see :func:`read_first_record`) instead of reading as no epoch."""
    rec = read_first_record(client_conf, control_topic, timeout=timeout, strict=strict)
    if rec is None or not rec[1]:
        return None
    return str(json.loads(rec[1])["epoch"])


def broadcast_control(
    client_conf: dict[str, Any],
    records: Iterable[tuple[str, int, ControlRecord]],
    epoch: str | None,
    timeout: float = 30.0,
) -> int:
    """Produce each ``(topic, partitions, record)`` to every partition of its topic, stamped with
    the broker epoch, and wait for the acknowledgements; return how many went out. Raises
    :class:`BrokerUnavailable` when the broker refuses or does not acknowledge them."""
    from crossfade.events.decode import EPOCH_HEADER

    p = Producer({**client_conf, "acks": "all", "linger.ms": 0})
    errors: list[str] = []
    n = 0
    extra = [(EPOCH_HEADER, epoch.encode())] if epoch else []
    for topic, partitions, rec in records:
        for part in range(partitions):
            p.produce(
                topic,
                key=None,
                value=rec.encode(),
                partition=part,
                headers=[(CONTROL_HEADER, rec.kind.encode()), *extra],
                on_delivery=lambda err, _m: errors.append(err.str()) if err else None,
            )
            n += 1
    left = p.flush(timeout)
    if left or errors:
        raise BrokerUnavailable(
            f"{rec.kind} markers not acknowledged by Kafka"
            + (f": {errors[0]}" if errors else f" within {timeout:g} s")
        )
    return n
