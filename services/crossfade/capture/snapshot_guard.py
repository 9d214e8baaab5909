"""One snapshot per fallback: the reverse capture (new database -> legacy) refuses to snapshot the
new database a second time unless told to.

Fallback's first snapshot is taken while legacy is frozen: its end-of-snapshot sweep makes legacy
what the new database holds, which is right then. Once the business writes to legacy again (after
going back), a second snapshot would rewrite every legacy row with the new database's older value.
Debezium snapshots again whenever it starts without offsets (``snapshot.mode: initial``): the
reverse capture's state directory was removed, or the broker lost its log (a new epoch, a fresh
offsets file). So:

* when the first snapshot completes, the reverse capture records it in legacy's fallback
  bookkeeping (``<fallback.bookkeeping_schema>.meta``, :func:`crossfade.target.store.note_snapshot_done`);
* a start that would snapshot (no offsets for this broker epoch) after such a record refuses with
  one line, unless ``crossfade fallback start --resnapshot`` says legacy took no writes since
  (logged as a warning and written to the cutover audit log, gate ``fallback_resnapshot``), or a
  cutover flipped after that snapshot (legacy froze again: a new fallback starts from scratch);
* a start with its offsets resumes where it stopped: no snapshot, nothing to guard (Debezium
  finishes an interrupted snapshot from its offsets, as before).
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

from crossfade.capture.service import CaptureService
from crossfade.config import Settings
from crossfade.db import connect
from crossfade.errors import CrossfadeError
from crossfade.events.model import format_lsn
from crossfade.target.store import (
    AuditLog,
    has_table,
    last_flip_age_s,
    note_snapshot_done,
    snapshot_done,
)
from crossfade.who import operator

log = logging.getLogger(__name__)

AUDIT_GATE = "fallback_resnapshot"
"""The cutover audit row an overridden second snapshot writes (in the new database)."""


class SecondSnapshot(CrossfadeError):
    """The reverse capture would snapshot the new database into legacy again."""


class SnapshotGuard:
    """Decides whether the reverse capture may snapshot, and records that it did.

    ``rev``: the reversed settings (source: the new database, target: legacy);
    ``forward``: the forward ones (the flip and the audit log are in the new database's
    bookkeeping); ``resnapshot``: the operator's override."""

    def __init__(self, rev: Settings, forward: Settings, *, resnapshot: bool = False) -> None:
        self.rev, self.forward, self.resnapshot = rev, forward, resnapshot

    def check(self, offsets: Path, epoch: str | None) -> None:
        """Raise :class:`SecondSnapshot` when starting without ``offsets`` would snapshot again
        and nothing allows it; return otherwise."""
        if offsets.exists():
            if self.resnapshot:
                log.warning(
                    "--resnapshot ignored: the reverse capture resumes from %s (no snapshot)",
                    offsets,
                )
            return
        schema = self.rev.sync.bookkeeping_schema
        with connect(self.rev.target, "legacy") as legacy:
            done = snapshot_done(legacy, schema)
        if done is None:
            return  # the first snapshot (or one that never completed)
        at, age = done
        flip_age = self._flip_age_s()
        if flip_age is not None and flip_age < age:
            log.info("a cutover flipped after the last reverse snapshot (%s): snapshotting", at)
            return
        what = (
            f"the reverse capture already snapshotted the new database into legacy (completed "
            f"{at:%Y-%m-%d %H:%M:%S %Z}) and has no offsets for broker epoch {epoch} in "
            f"{offsets.parent} (state dir removed or the broker lost its log)"
        )
        if not self.resnapshot:
            raise SecondSnapshot(
                f"{what}; a new snapshot would overwrite what legacy took since with older values",
                "restore the state dir, or stop fallback; only if legacy took no writes since, "
                "run crossfade fallback start --resnapshot",
            )
        log.warning("%s; --resnapshot: snapshotting the new database into legacy again", what)
        with AuditLog(self.forward, uuid.uuid4().hex[:12], operator(), False) as audit:
            audit.write(AUDIT_GATE, True, f"{what}; re-snapshot by --resnapshot", 0.0)

    def describe(self) -> dict[str, object]:
        """The recorded reverse snapshot as ``fallback status`` shows it: when it completed and
        what a start without its offsets would do (``next``)."""
        with connect(self.rev.target, "legacy") as legacy:
            done = snapshot_done(legacy, self.rev.sync.bookkeeping_schema)
        if done is None:
            return {
                "completed_at": None,
                "next": "none recorded: the first fallback start snapshots the new database into legacy",
            }
        at, age = done
        flip_age = self._flip_age_s()
        if flip_age is not None and flip_age < age:
            nxt = "a cutover flipped since: the next fallback start snapshots afresh"
        else:
            nxt = (
                "a start with its offsets resumes; one without them (state dir removed, broker "
                "lost its log) refuses to snapshot again unless --resnapshot"
            )
        return {"completed_at": at.isoformat(), "age_s": round(age, 1), "next": nxt}

    def _flip_age_s(self) -> float | None:
        schema = self.forward.sync.bookkeeping_schema
        with connect(self.forward.target, "new") as new:
            if not has_table(new, schema, "cutover_audit"):
                return None
            return last_flip_age_s(new, schema)

    def note(self, lsn: int) -> None:
        """The snapshot completed (its sweep markers are sent): record it in legacy."""
        with connect(self.rev.target, "legacy") as legacy:
            note_snapshot_done(legacy, self.rev.sync.bookkeeping_schema)
        log.info("reverse snapshot at LSN %s recorded in legacy", format_lsn(lsn))


class GuardedCaptureService(CaptureService):
    """The reverse capture of ``crossfade fallback start``: :class:`CaptureService` with the
    :class:`SnapshotGuard` checked before Debezium starts and told when the snapshot ends."""

    def __init__(self, settings: Settings, guard: SnapshotGuard) -> None:
        super().__init__(settings)
        self.guard = guard

    def prepare(self) -> Path:
        offsets = super().prepare()
        self.guard.check(offsets, self.epoch)
        assert self.producer is not None  # prepare() sets it
        self.producer.on_snapshot_done = self.guard.note
        return offsets
