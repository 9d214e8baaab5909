"""Capture's look for its broker epoch, with or without deliveries outstanding.

A broker that restarts empty (the embedded, in-memory one always does) loses the epoch record and
the change topics capture writes. :meth:`crossfade.capture.service.ChangeProducer.flush` notices
while deliveries wait for acknowledgement; with nothing outstanding (no change flowing, or a reset
right after capture created its epoch and before it produced anything that waits) nothing else
would: capture stayed alive and silent while sync waited for topics nobody re-created (seen in
test_fault_35). :class:`EpochWatch` reads the epoch every :data:`EVERY_S` seconds from a daemon
thread and, when the broker holds another or no epoch on two looks in a row (one slow read is
not a lost log), stops capture with :class:`BrokerDataLost`: the restart starts a new epoch and
re-loads the source, as at start.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from crossfade.config import KafkaConfig
from crossfade.errors import BrokerDataLost, BrokerUnavailable
from crossfade.events.kafka import current_epoch

log = logging.getLogger(__name__)

EVERY_S = 5.0
"""Seconds between two looks for the epoch: one metadata request and a read of one record (about
2 ms of CPU and 7 ms on an idle local Tansu)."""

LOST_HINT = "restart capture: it starts a new epoch and re-snapshots the source"


def log_replaced(kafka: KafkaConfig, epoch: str | None, timeout: float = 3) -> str | None:
    """Why the broker's log is not the one capture writes under ``epoch`` (another or no epoch),
    or None (the same epoch, no epoch of ours yet, or the broker does not answer: wait)."""
    if epoch is None:
        return None
    try:
        # strict: a control topic without a leader for a while (a broker's rolling restart) is
        # a broker not answering, not a lost log: that would re-snapshot the whole source
        now = current_epoch(
            kafka.client_config(), kafka.control_topic, timeout=timeout, strict=True
        )
    except BrokerUnavailable:
        return None
    if now == epoch:
        return None
    return f"its epoch is {now} now, not {epoch}" if now else "it holds no epoch now"


class EpochWatch:
    """Looks for capture's epoch every ``every`` seconds until ``stopping``; on a lost log sets
    :attr:`error` and calls ``on_lost`` (which ends Debezium's run: capture then raises it)."""

    def __init__(
        self,
        kafka: KafkaConfig,
        epoch: str | None,
        stopping: threading.Event,
        on_lost: Callable[[], None],
        every: float = EVERY_S,
    ) -> None:
        self.kafka = kafka
        self.epoch = epoch
        self.stopping = stopping
        self.on_lost = on_lost
        self.every = every
        self.error: BrokerDataLost | None = None
        self._thread = threading.Thread(target=self._run, name="capture-epoch-watch", daemon=True)

    def start(self) -> EpochWatch:
        self._thread.start()
        return self

    def look(self, seen: str | None) -> str | None:
        """One look: the reason the log is lost, confirmed when ``seen`` (the previous look's
        reason) was one too; sets :attr:`error` then. Returns this look's reason."""
        # a read that times out finds no epoch: the watch, in no hurry, gives it longer
        why = log_replaced(self.kafka, self.epoch, timeout=10)
        if why is not None and seen is not None and not self.stopping.is_set():
            self.error = BrokerDataLost(
                f"the broker lost its log while capture ran ({why})", LOST_HINT
            )
        return why

    def _run(self) -> None:
        seen: str | None = None
        while not self.stopping.wait(self.every):
            try:
                seen = self.look(seen)
            except Exception as exc:  # noqa: BLE001 - a look that fails is retried, never fatal
                log.debug("broker epoch not read: %s", exc)
                seen = None
            if self.error is not None:
                log.warning("capture's broker epoch is gone: stopping Debezium")
                self.on_lost()
                return
