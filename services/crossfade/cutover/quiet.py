"""A dry run's quiet pipeline: ``cutover --dry-run`` measures the steps the freeze runs without
a fence as the freeze will see them.

Inside a real cutover's freeze legacy takes no writes, so crossfade's own capture and sync have
nothing to do: the row counts, the control totals, the scans and comparison of the verify of
the changed keys, the schema step, the sequences and the smoke checks run on an otherwise idle
pipeline. A dry run runs them while writes flow, and on a machine where capture (a JVM), sync
and both PostgreSQL servers share the cores, beside capture and sync working too: its scans
took three times as long as the real run's (issue 20). So, with ``cutover.dry_run_quiet`` (the
default), the dry run pauses capture and sync the way ``crossfade pause`` does
(``<bookkeeping>.control``, read by every process at its heartbeat) for exactly those steps:
every step from the one after the fence up to the flip. A fence needs capture and sync running,
so the verify's first re-check fence (only a dry run re-checks, and those re-checks are left
out of the forecast anyway) resumes them; they are paused again after the verify, for the
steps after it (the sequences measured while capture and sync caught up took up to 4.4 times
the real run's, issue 20). The waits until the heartbeats show the processes hold are outside
every part of the forecast; if they do not confirm within ``2 x sync.heartbeat_interval_s + 1``
s the steps are measured anyway and the report says so. In a dry run the smoke checks see the
new system as of the pause (a second or two behind legacy, as it is while writes flow anyway).

Only components nobody paused are paused (an operator's pause stays as it was, his name and
reason with it), and only the pause this run set is lifted (:func:`~crossfade.target.store.
resume_own`): on the verify's first fence, before the flip, or when the run ends in any other
way (an error, Ctrl-C: :meth:`Quiet.release` runs in the cutover's ``finally``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

from crossfade.config import Settings
from crossfade.db import connect
from crossfade.errors import CrossfadeError
from crossfade.target.store import pause_unpaused, read_heartbeats, resume_own

log = logging.getLogger(__name__)

COMPONENTS = ["capture", "sync"]


@dataclass
class QuietReport:
    """What the quiet did (the dry run's report and its ``dry_run_quiet`` audit row); over all
    of a run's holds (a second one after the verify's re-check fences resumed the first)."""

    paused: list[str] = field(default_factory=list)
    """Components this run paused."""
    kept: list[str] = field(default_factory=list)
    """Components already paused (by an operator): left as they were."""
    holding: dict[str, str] = field(default_factory=dict)
    """Per paused component: ``2 of 2`` running processes whose heartbeats showed the hold (the
    latest hold's wait)."""
    acknowledged: bool | None = None
    """Every running process of the paused components showed every hold within the wait."""
    wait_s: float = 0.0
    """Seconds waiting for the heartbeats (outside every part of the forecast)."""
    held_s: float = 0.0
    """Seconds from each pause to its resume, summed."""
    resumed: list[str] = field(default_factory=list)
    holds: int = 0
    """How often this run paused capture and sync."""
    error: str | None = None

    def line(self) -> str:
        """One line for the audit row and the decision."""
        if self.error and not self.paused:
            return f"capture and sync were not paused for the measurement: {self.error}"
        what = " and ".join(self.paused) or "nothing"
        out = f"{what} paused {self.held_s:.1f} s for the measurement of the freeze's steps"
        if self.holds > 1:
            out += f" ({self.holds} times)"
        if self.paused and self.acknowledged is False:
            out += (
                f" (not every process showed the hold within {self.wait_s:.1f} s: "
                f"{', '.join(f'{c} {n}' for c, n in self.holding.items())}; measured anyway)"
            )
        if self.kept:
            out += f"; {' and '.join(self.kept)} left paused as an operator set it"
        if self.error:
            out += f"; {self.error}"
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "paused": self.paused,
            "kept": self.kept,
            "holding": self.holding,
            "acknowledged": self.acknowledged,
            "wait_s": round(self.wait_s, 3),
            "held_s": round(self.held_s, 3),
            "resumed": self.resumed,
            "holds": self.holds,
            "error": self.error,
        }


class Quiet:
    """One dry run's pause of capture and sync: :meth:`hold` before the first quiet step,
    :meth:`release` after the last (idempotent; also the context manager's exit)."""

    def __init__(self, settings: Settings, run_id: str, who: str) -> None:
        self.settings = settings
        self.bk = settings.sync.bookkeeping_schema
        self.who = who
        self.reason = f"cutover dry run {run_id}: measuring the freeze's steps (resumed after)"
        self.report: QuietReport | None = None
        self._since: float | None = None
        self._held: list[str] | None = None
        """What the current hold paused (None: not known, the hold broke off)."""
        self.failed = False
        """A hold could not set or read the pause: the run measures without (no new try)."""

    def __enter__(self) -> Quiet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    @property
    def holding(self) -> bool:
        """A hold of this run's is set (not released yet)."""
        return self._since is not None

    def hold(self) -> float:
        """Pause what nobody paused and wait (bounded) until the running processes show the
        hold; the seconds spent (the caller keeps them out of the parts it measures). After a
        :meth:`release`, holds again (the report adds the holds up)."""
        t0 = time.monotonic()
        rep = self.report = self.report or QuietReport()
        rep.holds += 1
        try:
            with connect(self.settings.target, "target", autocommit=True) as conn:
                self._since, self._held = time.monotonic(), None
                now = pause_unpaused(conn, self.bk, COMPONENTS, self.who, self.reason)
                self._held = now
                rep.paused += [c for c in now if c not in rep.paused]
                rep.kept += [c for c in COMPONENTS if c not in now and c not in rep.kept]
                if now:
                    self._wait(conn, rep, now)
        except (psycopg.Error, CrossfadeError) as exc:
            rep.error = f"the pause could not be set or read ({_first(exc)})"
            self.failed = True
            log.warning("dry run: %s; measuring anyway", rep.error)
        wait = time.monotonic() - t0
        rep.wait_s += wait
        return wait

    def _wait(self, conn: psycopg.Connection, rep: QuietReport, paused: list[str]) -> None:
        """Until every fresh heartbeat of the ``paused`` components shows ``paused`` (a sync
        worker reads the pause between batches, capture before Debezium's next one), or the
        bound."""
        s = self.settings
        deadline = time.monotonic() + s.sync.heartbeat_interval_s * 2 + 1
        while True:
            hbs = read_heartbeats(conn, self.bk)
            ok = True
            for c in paused:
                live = [h for h in hbs if h.role == c and h.age_s <= s.cutover.alive_fresh_s]
                took = [h for h in live if h.detail.get("paused")]
                rep.holding[c] = f"{len(took)} of {len(live)}"
                ok = ok and len(took) == len(live)
            if ok or time.monotonic() >= deadline:
                rep.acknowledged = ok and rep.acknowledged is not False
                return
            time.sleep(0.1)

    def release(self) -> float:
        """Resume what :meth:`hold` paused and nobody took over since; the seconds it took
        (0 when there was nothing to resume). Never raises: a failure is logged and reported,
        and the next call tries again (``crossfade resume`` lifts the pause by hand)."""
        rep = self.report
        if rep is None or self._since is None:
            return 0.0
        t0 = time.monotonic()
        # none recorded: the hold may have broken off (Ctrl-C) with its pause set; only a pause
        # with this run's reason is lifted, so asking for all of them is safe
        which = self._held or COMPONENTS
        for attempt in (1, 2):
            try:
                with connect(self.settings.target, "target", autocommit=True) as conn:
                    resumed = resume_own(conn, self.bk, which, self.who, self.reason)
                break
            except (psycopg.Error, CrossfadeError) as exc:
                if attempt == 2 and not self._held:
                    self._since = None  # nothing of ours is known to be paused
                    return time.monotonic() - t0
                if attempt == 2:
                    rep.error = (
                        f"{' and '.join(self._held or [])} could not be resumed "
                        f"({_first(exc)}): run `crossfade resume`"
                    )
                    log.error("dry run: %s", rep.error)
                    return time.monotonic() - t0
        held = self._held or list(resumed)
        rep.paused += [c for c in held if c not in rep.paused]
        rep.resumed += [c for c in resumed if c not in rep.resumed]
        rep.held_s += t0 - self._since
        self._since = self._held = None
        if rep.error is not None and "could not be resumed" in rep.error:
            rep.error = None  # a later try went through
        # paused again by someone else meanwhile (another reason): theirs now, left as it is
        rep.kept += [c for c in held if c not in resumed and c not in rep.kept]
        return time.monotonic() - t0


def _first(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
