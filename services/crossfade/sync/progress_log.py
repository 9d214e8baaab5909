"""What a sync worker says in its log while it waits and while rows are rejected.

* :class:`JoinProgress`: joining the consumer group can take a while (Tansu answers JoinGroup only
  after about half the session timeout; a rebalance waits for every member): the worker says it is
  joining, then every few seconds that it still is, then how long the join took.
* :class:`RejectLog`: a row failing a mapping rule is an *expected* reject (the mapping says so):
  the first few per table and rule in each period are logged at INFO with their key and reason,
  the others at DEBUG (``-v`` shows every one), then a summary per table and rule (WARNING: they
  are dead letters until replayed or acknowledged) closes the period. Undecodable records are not
  expected: the first few per table in each period at ERROR with their place, the others at
  DEBUG, and a summary per table at ERROR. The dead-letter metrics and ``crossfade dlq list``
  hold every one; a log line each flooded the log (16 MB in a 1M-row load).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

log = logging.getLogger("crossfade.sync.worker")


class JoinProgress:
    """Logs the wait for a partition assignment. ``tick(joined)`` from the consume loop."""

    def __init__(
        self,
        group: str,
        topics: int,
        every_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        since: float | None = None,
    ) -> None:
        """``since``: when a join already under way began (its start was logged)."""
        self.group = group
        self.topics = topics
        self.every_s = every_s
        self._clock = clock
        self._since: float | None = since
        self._next = 0.0 if since is None else since + every_s
        self._joins = 0 if since is None else 1

    def tick(self, joined: bool) -> None:
        now = self._clock()
        if joined:
            if self._since is not None:
                log.info(
                    "joined consumer group %s in %.1f s", self.group, max(now - self._since, 0.0)
                )
                self._since = None
            return
        if self._since is None:
            self._since, self._next = now, now + self.every_s
            self._joins += 1
            log.info(
                "%s consumer group %s for %d topic(s): waiting for the broker's partition "
                "assignment",
                "joining" if self._joins == 1 else "rebalancing: rejoining",
                self.group,
                self.topics,
            )
        elif now >= self._next:
            self._next = now + self.every_s
            log.info(
                "still joining consumer group %s (%.0f s): the broker assigns partitions once "
                "every member has joined",
                self.group,
                now - self._since,
            )


class RejectLog:
    """Dead letters: ``note`` each expected reject, ``undecodable`` each record that could not be
    decoded, ``flush`` from the consume loop (and at the end)."""

    def __init__(
        self,
        period_s: float = 60.0,
        first: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.period_s = period_s
        self.first = first
        self._clock = clock
        self._counts: Counter[tuple[str, str]] = Counter()
        self._undecodable: Counter[str] = Counter()
        self._started = clock()

    def note(self, table: str, rule: str, key: str, reason: str | None) -> None:
        n = self._counts[(table, rule)] = self._counts[(table, rule)] + 1
        level = logging.INFO if n <= self.first else logging.DEBUG
        more = " (further ones of this rule are summed up each minute)" if n == self.first else ""
        log.log(level, "dead-lettered %s key %s (rule %s): %s%s", table, key, rule, reason, more)

    def undecodable(self, table: str, topic: str, partition: int, offset: int, reason: str) -> None:
        n = self._undecodable[table] = self._undecodable[table] + 1
        level = logging.ERROR if n <= self.first else logging.DEBUG
        more = " (further ones of this table are summed up each minute)" if n == self.first else ""
        log.log(level, "dead-lettered %s[%d]@%d: %s%s", topic, partition, offset, reason, more)

    def flush(self, force: bool = False) -> None:
        now = self._clock()
        if not force and now - self._started < self.period_s:
            return
        for table, n in sorted(self._undecodable.items()):
            log.error(
                "%d undecodable record(s) of %s dead-lettered in the last %.0f s "
                "(crossfade dlq list shows them; fix the producer or schema and replay)",
                n,
                table,
                now - self._started,
            )
        for (table, rule), n in sorted(self._counts.items()):
            log.warning(
                "%d row(s) of %s dead-lettered by rule %s in the last %.0f s "
                "(crossfade dlq list shows them; fix and replay, or dlq ack)",
                n,
                table,
                rule,
                now - self._started,
            )
        self._counts.clear()
        self._undecodable.clear()
        self._started = now


__all__ = ["JoinProgress", "RejectLog"]
