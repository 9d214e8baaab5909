"""Snapshot progress on a terminal: one rich progress bar per table while Debezium snapshots.

Totals are PostgreSQL's row estimates (``pg_class.reltuples``), so a bar can end a little short
of or past 100 %; the count is exact. Only shown when stderr is a terminal; never raises into
capture (progress is a courtesy, not part of the data path).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Any

log = logging.getLogger(__name__)


class SnapshotProgress:
    def __init__(
        self, estimates: dict[str, int], topic_of: dict[str, str], *, console: Any = None
    ) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(
            TextColumn("snapshot {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console or Console(stderr=True),
            transient=False,
        )
        self._tasks = {
            topic_of[t]: self._progress.add_task(t, total=max(n, 1))
            for t, n in estimates.items()
            if t in topic_of
        }
        self._started = False
        self._done = False

    def update(self, produced_snapshot: dict[str, int]) -> None:
        """Called after each batch with the snapshot rows produced so far per topic."""
        if self._done:
            return
        try:
            if not self._started:
                self._progress.start()
                self._started = True
            for topic, n in produced_snapshot.items():
                task = self._tasks.get(topic)
                if task is not None:
                    self._progress.update(task, completed=n)
        except Exception as exc:  # noqa: BLE001 - never let the display break capture
            log.debug("snapshot progress: %s", exc)

    def finish(self) -> None:
        if self._started and not self._done:
            self._done = True
            with contextlib.suppress(Exception):  # a courtesy display
                self._progress.stop()


def for_terminal(conn: Any, tables: list[str], topic_of: dict[str, str]) -> SnapshotProgress | None:
    """A progress display when stderr is a terminal, else None."""
    if not sys.stderr.isatty():
        return None
    estimates = {}
    for t in tables:
        row = conn.execute(
            "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = %s::regclass", (t,)
        ).fetchone()
        estimates[t] = int(row[0]) if row else 0
    return SnapshotProgress(estimates, topic_of)
