"""The fence: lag zero, proven end to end (DESIGN decision 4).

A fence row is committed in the legacy database (``crossfade.fence``). Capture turns its change
event into a ``fence`` marker produced to *every partition of every change topic*, after all the
events produced before it; sync records each marker in ``crossfade.fences`` in the same
transaction as the data before it. When every partition has recorded the token, every change
committed in the legacy database before the fence row is applied in the target.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from psycopg import sql

from crossfade.capture.preflight import connect
from crossfade.config import Settings
from crossfade.errors import CrossfadeError
from crossfade.events.kafka import Admin


@dataclass(frozen=True)
class FenceResult:
    token: str
    partitions: int
    seconds: float


def expected_partitions(settings: Settings) -> int:
    admin = Admin(settings.kafka.client_config())
    total = 0
    for t in settings.tables:
        n = admin.partitions(settings.kafka.table_topic(t))
        if n is None:
            raise CrossfadeError(
                f"topic {settings.kafka.table_topic(t)} does not exist",
                "start capture before asking for a fence",
            )
        total += n
    return total


def fence(settings: Settings, timeout: float = 120.0, poll: float = 0.1) -> FenceResult:
    """Write a fence row and wait until every partition applied it; raise on timeout."""
    if not settings.capture.fence_table:
        raise CrossfadeError(
            "capture.fence_table is off, so there is no fence", "set capture.fence_table: true"
        )
    n = expected_partitions(settings)
    token = uuid.uuid4().hex
    t0 = time.monotonic()
    with connect(settings.source, "source") as src:
        # a cutover may freeze the legacy database with default_transaction_read_only: the fence
        # must still be written (any role may turn the default off for itself)
        src.execute("SET default_transaction_read_only = off")
        src.execute("INSERT INTO crossfade.fence (token) VALUES (%s)", (token,))
    q = sql.SQL("SELECT count(*) FROM {}.fences WHERE token = %s").format(
        sql.Identifier(settings.sync.bookkeeping_schema)
    )
    with connect(settings.target, "target") as tgt:
        while True:
            row = tgt.execute(q, (token,)).fetchone()
            done = int(row[0]) if row else 0
            if done >= n:
                return FenceResult(token, n, time.monotonic() - t0)
            if time.monotonic() - t0 > timeout:
                raise CrossfadeError(
                    f"fence {token[:8]} reached {done} of {n} partitions within {timeout:.0f} s",
                    "check that capture and sync are running (crossfade status) and retry with a longer --timeout",
                )
            time.sleep(poll)
