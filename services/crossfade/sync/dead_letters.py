"""The dead-letter topic: records sync could not apply, with their original bytes and why.

Both kinds are produced *before* the batch's transaction commits, and :meth:`DeadLetterTopic`
waits for Kafka's acknowledgement (a crash after the commit must not lose them): an undecodable
record (rule ``decode``) and a change the mapping rejected (its rule and reason, kept in the
ledger too for ``crossfade dlq``).

A producer that gets no acknowledgement is replaced before the batch is retried: an idempotent
producer whose broker lost its log (a broker restarted empty) keeps sending the old sequence
numbers and is never acknowledged again, while a new one is at once (measured on Tansu).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import KafkaException, Producer

from crossfade import metrics
from crossfade.errors import BrokerUnavailable
from crossfade.events.kafka import record_place
from crossfade.sync.planner import DeadLetter
from crossfade.sync.progress_log import RejectLog
from crossfade.target.store.ledger import Held

log = logging.getLogger(__name__)

Count = Callable[[str], None]
"""Counts one dead letter of a table (the batch's pending stats)."""


class DeadLetterTopic:
    def __init__(
        self,
        producer: Producer,
        topic: str,
        rejects: RejectLog,
        renew: Callable[[], Producer] | None = None,
        ack_timeout: float = 30.0,
    ) -> None:
        """``renew``: makes a new producer when this one is not acknowledged (see above);
        ``ack_timeout``: how long to wait for the acknowledgement, in seconds."""
        self.producer = producer
        self.ack_timeout = ack_timeout
        self.epoch: str | None = None
        self.topic = topic
        self.rejects = rejects
        self.renew = renew

    def undecodable(self, dead: Iterable[DeadLetter], count: Count) -> None:
        """Produce records that could not be decoded; wait for Kafka's acknowledgement."""
        for d in dead:
            m = d.msg
            topic, partition, offset = record_place(m)
            count(d.table)
            metrics.dead_lettered(d.table, "decode")
            # not expected: the first few of each table at ERROR, summed up each minute
            self.rejects.undecodable(d.table, topic, partition, offset, d.reason)
            self._produce(
                key=m.key(),
                value=m.value(),
                headers=[
                    ("crossfade.dlq.reason", d.reason.encode()),
                    ("crossfade.dlq.rule", b"decode"),
                    ("crossfade.dlq.table", d.table.encode()),
                    ("crossfade.dlq.topic", topic.encode()),
                    ("crossfade.dlq.partition", str(partition).encode()),
                    ("crossfade.dlq.offset", str(offset).encode()),
                    ("crossfade.dlq.ts", str(int(time.time() * 1000)).encode()),
                ],
            )
        self._flush()

    def rejected(self, dead: Iterable[tuple[Held, str]], count: Count) -> None:
        """Produce the mapping's dead letters (original bytes, rule, reason) of (ledger row,
        source table) pairs; wait for Kafka's acknowledgement."""
        for h, table in dead:
            o = h.origin
            count(table)
            metrics.dead_lettered(table, h.rule or "mapping")
            # an expected reject (the mapping's rules say so): INFO, summed up each minute
            self.rejects.note(table, h.rule or "mapping", h.entry, h.reason)
            headers: list[tuple[str, str | bytes | None]] = [
                ("crossfade.dlq.reason", (h.reason or "").encode()),
                ("crossfade.dlq.rule", (h.rule or "mapping").encode()),
                ("crossfade.dlq.table", table.encode()),
                ("crossfade.dlq.source_key", h.entry.encode()),
                ("crossfade.dlq.position", str(h.position).encode()),
                ("crossfade.dlq.ts", str(int(time.time() * 1000)).encode()),
            ]
            if o is not None:
                headers += [
                    ("crossfade.dlq.topic", o.topic.encode()),
                    ("crossfade.dlq.partition", str(o.partition).encode()),
                    ("crossfade.dlq.offset", str(o.offset).encode()),
                    *((k, v.encode()) for k, v in o.headers.items()),
                ]
            self._produce(
                key=o.key if o else None,
                value=o.value if o else None,
                headers=headers,
            )
        self._flush()

    def _produce(self, **record: Any) -> None:
        try:
            self.producer.produce(self.topic, **record)
        except KafkaException as exc:  # a fatal producer error, or its queue is full
            self._give_up(f"the dead-letter producer refused a record ({exc})")

    def _flush(self) -> None:
        # durable before the batch commits: a crash after the commit must not lose them
        if self.producer.flush(self.ack_timeout):
            self._give_up(
                f"dead-letter records not acknowledged by Kafka within {self.ack_timeout:g} s"
            )

    def _give_up(self, why: str) -> None:
        """Drop what this producer still holds and raise: the batch (not committed) is retried
        and produces its dead letters again, with a new producer where one can be made."""
        self._replace(f"{why}: replacing the dead-letter producer before the retry")
        raise BrokerUnavailable(why)

    def _replace(self, warning: str) -> None:
        """Drop what the producer holds; with a ``renew`` factory, make a new one (WARNING)."""
        with contextlib.suppress(KafkaException):  # a producer in a fatal state may refuse
            self.producer.purge()
        if self.renew is not None:
            log.warning("%s", warning)
            self.producer = self.renew()

    def on_epoch(self, epoch: str | None) -> None:
        """The broker epoch sync reads from: a new one (the broker lost its log) gets a new
        producer at once, not after a batch waited ``ack_timeout`` for it."""
        if epoch is None or epoch == self.epoch:
            return
        if self.epoch is not None and self.renew is not None:
            self._replace("broker epoch changed: replacing the dead-letter producer")
        self.epoch = epoch

    def close(self, timeout: float = 10) -> None:
        self.producer.flush(timeout)
