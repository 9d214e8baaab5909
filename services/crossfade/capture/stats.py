"""capture's counters, kept by :class:`~crossfade.capture.service.ChangeProducer`."""

from __future__ import annotations

import time


class CaptureStats:
    """Counters read by status output and metrics (thread-safe enough: single writer)."""

    def __init__(self) -> None:
        self.produced: dict[str, int] = {}
        self.snapshot_done = False
        self.last_source_ts_ms = 0
        self.heartbeats = 0
        self.fences = 0
        self.echoes_skipped = 0
        """Changes written by a crossfade sync (replication origin ``crossfade_*``), not produced."""
        self.started_at = time.time()
        self.last_batch_at = 0.0
        """time.time() when the last Debezium batch (heartbeats included) was acknowledged."""
