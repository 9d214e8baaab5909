"""Records of a dead broker epoch inside a log that is still this worker's epoch.

A broker that restarts empty loses capture's epoch record and topics. The capture that was
running (epoch A) finds out within seconds (:mod:`crossfade.capture.epoch_watch`, or a refused
delivery) and stops; its restart writes a new epoch B and loads the source again, as at start.
In those seconds its producer may already have written records, stamped A, into the new log: a
broker that auto-creates topics takes them (Tansu does). They sit at the start of B's log, below
B's own records.

A worker that meets a record of another epoch replays its partitions from the new log
(:meth:`crossfade.sync.consumer.GroupMember.reclaim_all`). When the broker's epoch is the one the
worker already holds, the log did not change: the record is such a leftover, and replaying would
meet it again, for ever (seen under broker resets with pgbench load: test_fault_35, sync never
caught up). Its change is not lost by passing over it: epoch B's load and stream carry every row
of the source again. So the leftover is applied as nothing, like a tombstone, keeping its offset
in the batch, so that sync's stored offsets still pass it (the cutover's lag gate reads them).
"""

from __future__ import annotations

import logging
from collections import Counter

from confluent_kafka import Message

from crossfade.events.decode import EPOCH_HEADER, header_in

log = logging.getLogger(__name__)


def pass_over(msgs: list[Message], epoch: str) -> list[Message]:
    """``msgs`` with each record stamped with an epoch other than ``epoch`` (the broker's and
    the worker's) replaced by an empty record at its place; a WARNING per partition and epoch."""
    out: list[Message] = []
    skipped: Counter[tuple[str, int, str]] = Counter()
    for m in msgs:
        ep = header_in(m.headers(), EPOCH_HEADER)
        if ep is None or ep == epoch:
            out.append(m)
            continue
        topic, partition, offset = m.topic(), m.partition(), m.offset()
        out.append(Message(topic=topic, partition=partition, offset=offset, key=None, value=None))
        skipped[(topic or "", partition or 0, ep)] += 1
    for (topic, partition, ep), n in sorted(skipped.items()):
        log.warning(
            "%d record(s) of the dead broker epoch %s on %s[%d] passed over: a capture wrote them "
            "to this log (epoch %s) before it noticed the broker had lost its own; this epoch's "
            "load carries their rows again",
            n,
            ep,
            topic,
            partition,
            epoch,
        )
    return out
