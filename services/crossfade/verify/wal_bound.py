"""The WAL position a re-check may trust a snapshot to have seen up to (the mapped re-check's
bound, :meth:`crossfade.verify.run.Verifier._mapped_recheck`).

A change's position (``_cf_pos``, the ledger's) is its own WAL record's LSN, not its commit's: a
transaction open when the position is read can have changes below it that a snapshot taken
right after does not see. So the position is trusted only once the transactions writing at that
moment have ended."""

from __future__ import annotations

import logging
import time
from typing import Any

import psycopg

log = logging.getLogger(__name__)

WAIT_OPEN_S = 5.0
"""How long :func:`wal_position` waits for the legacy's writing transactions open at its read."""


_WRITING = (
    "SELECT ARRAY(SELECT backend_xid FROM pg_stat_activity WHERE backend_xid IS NOT NULL "
    "AND pid <> pg_backend_pid() {} UNION SELECT transaction FROM pg_prepared_xacts {})::text[]"
)


def wal_position(src: Any, wait_s: float = WAIT_OPEN_S) -> int:
    """The legacy database's WAL position now, once every transaction that was writing at that
    moment has ended (each read in a transaction of its own: the caller's next statement takes
    its snapshot after it). So every change below the position was committed (or rolled back)
    before that snapshot, and the snapshot sees it: a change's position is its own record's LSN,
    not its commit's, and a transaction open across the read would otherwise have changes below
    the position that the snapshot does not see. The writers are the sessions with a
    transaction id (and prepared transactions) read *after* the position: one that wrote below
    it and ended in between ended before the snapshot too. Returns 0 (no change counts as seen:
    the re-check then leaves such keys undecided, never confirms them) when they are still open
    after ``wait_s``, on a standby (the primary's writers are not visible there), or when the
    server cannot say."""
    try:
        row = src.execute(
            "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn WHERE NOT pg_is_in_recovery()"
        ).fetchone()
        src.commit()
        if not row or row[0] is None:
            return 0
        lsn = int(row[0])
        writing = _open_writers(src, None)
        deadline = time.monotonic() + wait_s
        while writing:
            if time.monotonic() > deadline:
                log.info(
                    "%d legacy transaction(s) writing since before the verify's snapshot still "
                    "open after %.0f s: the re-check counts no change as seen by it",
                    len(writing),
                    wait_s,
                )
                return 0
            time.sleep(0.02)
            writing = _open_writers(src, writing)
        return lsn
    except psycopg.Error as exc:
        src.rollback()
        log.info(
            "the legacy's writing transactions could not be read (%s): none counts as seen", exc
        )
        return 0


def _open_writers(src: Any, among: list[str] | None) -> list[str]:
    """Transaction ids of the sessions writing now (of ``among`` only, when given)."""
    params: tuple[Any, ...] = ()
    if among is None:
        q = _WRITING.format("", "")
    else:
        q = _WRITING.format("AND backend_xid::text = ANY(%s)", "WHERE transaction::text = ANY(%s)")
        params = (among, among)
    row = src.execute(q, params).fetchone()
    src.commit()  # the activity view is read once per transaction
    return list(row[0] or []) if row else []
