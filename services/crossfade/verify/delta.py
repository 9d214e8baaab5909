"""Verify only what changed since a full verify: the cutover's check inside the write freeze.

A full verify (``crossfade verify``, or the cutover's ``verify_live`` step, while writes still
flow) takes, before it reads anything, a snapshot of each database (``pg_current_snapshot()``).
Every row it then judged equal and that nobody wrote since on either side is still equal. So,
inside the freeze, after the fence, the cutover compares only:

* the rows written since on either side: their ``xmin`` is a transaction at or above the
  snapshot's ``xmin`` (:meth:`crossfade.verify.chunked.TableComparer.changed_keys`: sync's
  upserts, and anything else that wrote to the new database, a planted difference included);
* the keys the full verify could not decide (*unsettled*: changing in every re-check round);
* the counts of both sides (the cutover's ``row_counts`` step, before it): a row deleted on one
  side since leaves no ``xmin`` behind, so a lost delete shows as counts that differ (unless a
  lost insert hides it, and a lost insert's key is written in legacy, so it is compared).

The cost is one scan of each table's keys and row headers plus a comparison of the changed rows:
it grows with the writes of the last minutes, not with the tables' size as the checksums of
every row do. Tables compared in full even then, as before: mapped tables (a golden record or a
child depends on rows of several tables; verified through the mapping, whole) and tables without
a primary key (append-only, compared as multisets). A server older than PostgreSQL 13 (no
``pg_current_snapshot``) gets no snapshot: its tables are verified in full.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

from crossfade.verify.chunked import Key

MIN_SERVER = 130000
"""``pg_current_snapshot()`` and ``pg_visible_in_snapshot()`` came with PostgreSQL 13."""


@dataclass
class DeltaBase:
    """What a verify of the changes needs from the full verify before it."""

    run_id: int | None
    """The full verify's ``verify_runs.id`` (the evidence chain: shown with the delta's)."""
    snapshots: dict[str, str]
    """``source``/``target`` -> ``pg_current_snapshot()`` taken before it read anything."""
    unsettled: dict[str, set[Key]] = field(default_factory=dict)
    """Keys per table the full verify could not decide: compared again whatever their xmin."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "snapshots": self.snapshots,
            "unsettled": {t: len(k) for t, k in self.unsettled.items()},
        }


def snapshot_of(conn: psycopg.Connection) -> str | None:
    """The connection's server's current snapshot as text, or None before PostgreSQL 13."""
    if conn.info.server_version < MIN_SERVER:
        return None
    row = conn.execute("SELECT pg_current_snapshot()::text").fetchone()
    return str(row[0]) if row else None
