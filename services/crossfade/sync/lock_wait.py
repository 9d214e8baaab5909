"""Nothing stalls silently (DESIGN decision 9), lock waits included: a call on the worker's
target session that may wait for another session's lock (the claim of partitions waits for the
offset rows a batch of their previous owner still holds) is watched from a thread of its own.

Once the call has waited ``warn_s``, and every ``warn_s`` after that, the thread reads on its own
connection which sessions block the waiting one (``pg_blocking_pids``:
:func:`~crossfade.target.store.lock_holders`) and logs a WARNING naming the waiting call and each
holder (pid, state, transaction age, last statement); :attr:`LockWait.current` keeps the last one
for the stall watch (:mod:`crossfade.sync.watchdog`), until the call returns. A holder idle in its
transaction is a client frozen mid-batch: ``sync.idle_in_transaction_timeout_s`` has the server
end its session, and the wait ends with it.

The server does not always: PostgreSQL arms that timer only when it tells the client it is ready
for the next statement, and a flush request arriving after that (psycopg sends one after the Sync
that ends a pipeline, and every applier's statements end in one) disarms it for good. So a holder
still idle in its transaction ``_GRACE_S`` past the timeout is ended here
(:func:`~crossfade.target.store.end_idle_in_transaction`: ``pg_terminate_backend``, checked
atomically against its idle time), with a WARNING; the same user's sessions may be ended without
further privileges.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator

import psycopg

from crossfade.sync.watchdog import DB_TIMEOUTS
from crossfade.target.store import LockHolder, end_idle_in_transaction, lock_holders

log = logging.getLogger(__name__)

_GRACE_S = 2.0
"""The server's own timeout goes first; a holder idle this much longer is ended here."""


class LockWait:
    """Watches calls of one worker's target session that may wait for a lock."""

    def __init__(
        self,
        conninfo: str,
        connect_timeout_s: int,
        *,
        warn_s: float,
        idle_timeout_s: float,
    ) -> None:
        self._conninfo = conninfo
        self._connect_timeout_s = connect_timeout_s
        self.warn_s = warn_s
        self.idle_timeout_s = idle_timeout_s
        self.current: str | None = None
        """What the watched call waits for, once it waited ``warn_s`` (None otherwise)."""

    @contextlib.contextmanager
    def watching(self, what: str, pid: int) -> Iterator[None]:
        """Watch the block's call, ``what`` (e.g. "the claim of t[0], t[1]") on session ``pid``."""
        done = threading.Event()
        started = time.monotonic()
        warned: list[bool] = []
        thread = threading.Thread(
            target=self._watch, args=(what, pid, done, warned), name="sync-lock-wait", daemon=True
        )
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join(timeout=1.0)  # its last words (a session it ended) come before ours
            self.current = None
            if warned:
                log.info("%s went through after %.0f s", what, time.monotonic() - started)

    def _watch(self, what: str, pid: int, done: threading.Event, warned: list[bool]) -> None:
        started = time.monotonic()
        conn: psycopg.Connection | None = None
        try:
            while not done.wait(self.warn_s):
                holders: list[LockHolder] = []
                error = ""
                try:
                    if conn is None or conn.closed or conn.broken:
                        conn = psycopg.connect(
                            self._conninfo,
                            autocommit=True,
                            connect_timeout=self._connect_timeout_s,
                            **DB_TIMEOUTS,
                        )
                    holders = lock_holders(conn, pid)
                    self._end_frozen(conn, holders)
                except psycopg.Error as exc:
                    lines = str(exc).strip().splitlines()
                    error = f"{type(exc).__name__}: {lines[0] if lines else ''}"
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            conn.close()
                    conn = None
                if done.is_set():
                    return
                text = self._describe(what, time.monotonic() - started, holders, error)
                self.current = text
                warned.append(True)
                log.warning("%s", text)
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()

    def _end_frozen(self, conn: psycopg.Connection, holders: list[LockHolder]) -> None:
        """End the holders idle in their transaction past the timeout (see the module doc)."""
        if self.idle_timeout_s <= 0:
            return
        for h in holders:
            if not h.idle_in_transaction or (h.state_age_s or 0) < self.idle_timeout_s + _GRACE_S:
                continue
            try:
                ended = end_idle_in_transaction(conn, h.pid, self.idle_timeout_s + _GRACE_S)
            except psycopg.Error as exc:
                lines = str(exc).strip().splitlines()
                log.warning(
                    "session %d, idle in its transaction for %.0f s, holds a lock a claim waits for "
                    "and could not be ended (%s): end it with SELECT pg_terminate_backend(%d)",
                    h.pid,
                    h.state_age_s or 0,
                    lines[0] if lines else type(exc).__name__,
                    h.pid,
                )
                if conn.broken:
                    raise
                continue
            if ended:
                log.warning(
                    "ended session %d, idle in its transaction for %.0f s (past "
                    "sync.idle_in_transaction_timeout_s, %g s, which the server did not apply: "
                    "its last request was a flush): %s",
                    h.pid,
                    h.state_age_s or 0,
                    self.idle_timeout_s,
                    h.describe(),
                )

    def _describe(self, what: str, waited: float, holders: list[LockHolder], error: str) -> str:
        if error:
            return f"{what} has waited {waited:.0f} s (its lock holders not read: {error})"
        if not holders:
            return f"{what} has run for {waited:.0f} s without waiting for a lock (a slow statement or network)"
        text = f"{what} has waited {waited:.0f} s for a lock held by " + "; ".join(
            h.describe() for h in holders
        )
        if any((h.state or "").startswith("idle in transaction") for h in holders):
            if self.idle_timeout_s > 0:
                text += (
                    f": a client stopped inside its transaction; the server ends its session after "
                    f"sync.idle_in_transaction_timeout_s ({self.idle_timeout_s:g} s)"
                )
            else:
                text += (
                    ": a client stopped inside its transaction and sync.idle_in_transaction_timeout_s "
                    "is 0: end it with SELECT pg_terminate_backend(<pid>) if it does not wake"
                )
        return text
