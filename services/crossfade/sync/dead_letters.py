"""The dead-letter topic: records sync could not apply, with their original bytes and why.

Both kinds are produced *before* the batch's transaction commits, and :meth:`DeadLetterTopic`
waits for Kafka's acknowledgement (a crash after the commit must not lose them): an undecodable
record (rule ``decode``) and a change the mapping rejected (its rule and reason, kept in the
ledger too for ``crossfade dlq``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from confluent_kafka import Producer

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
    def __init__(self, producer: Producer, topic: str, rejects: RejectLog) -> None:
        self.producer = producer
        self.topic = topic
        self.rejects = rejects

    def undecodable(self, dead: Iterable[DeadLetter], count: Count) -> None:
        """Produce records that could not be decoded; wait for Kafka's acknowledgement."""
        for d in dead:
            m = d.msg
            topic, partition, offset = record_place(m)
            count(d.table)
            metrics.dead_lettered(d.table, "decode")
            log.error("dead-lettered %s[%d]@%d: %s", topic, partition, offset, d.reason)
            self.producer.produce(
                self.topic,
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
            self.producer.produce(
                self.topic,
                key=o.key if o else None,
                value=o.value if o else None,
                headers=headers,
            )
        self._flush()

    def _flush(self) -> None:
        # durable before the batch commits: a crash after the commit must not lose them
        if self.producer.flush(30):
            raise BrokerUnavailable("dead-letter records not acknowledged by Kafka")
