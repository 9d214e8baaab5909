"""The write downtime ``cutover --dry-run`` announces: a model of what the real run will spend
between the freeze and the end of the flip, built from what the dry run measured.

The real run's write downtime is the span from the start of the freeze to the end of the flip:
the freeze itself, every step between (fence, row counts, control totals, the verify of the
changes, the schema step, the sequences, smoke checks) and the bookkeeping between the steps
(each step's audit row). Both runs measure it the same way, in parts (:class:`Spans`): a step's
part runs from its start to the start of the next step, so the parts add up to the span.

A dry run cannot run the freeze or the flip and runs every step beside the write load, so its
parts are not the real run's parts as they stand. The model (:func:`forecast`) takes from each
what the real run will do:

* ``freeze`` / ``flip``: in their place the dry run runs a transaction on the database their
  SQL would run on (``SELECT 1``: connect, run, commit), which is what ``freeze_sql`` /
  ``flip_sql`` cost (a GRANT or REVOKE takes no lock that waits), so their parts are measured
  like the others. A command or an HTTP call is not run in a dry run and is not in the
  forecast (named in :attr:`Forecast.excluded`).
* ``verify``: the dry run's verify of the changes re-reads what is in flight around fences
  (re-check rounds, a keyless table's fence and second read): a frozen, fenced run does none of
  it (:attr:`DeltaCost.live_only`, left out). The rest is one scan per table (keys and row
  headers: its cost follows the table's size, the same in both runs) and the comparison of the
  keys written since the full verify's snapshots. Those keys are written while writes flow: in
  the real run from the snapshots to the freeze, in the dry run up to its scan, later. So the
  comparison's cost is scaled by the keys the real run will find, at the write rate the dry run
  measured (:func:`verify_seconds`).
* ``fence``: the real run's fence waits for sync to apply what the application committed
  before the freeze, with nothing more committed meanwhile; the dry run's fences beside the
  writes that go on, which capture, sync and both databases keep working on (at scale 10 under
  pgbench: 0.65 s against the real run's 0.36 s, issue 20). A fence's time is its fixed cost
  plus whatever the pipeline is busy with beside it, and that varies from one fence to the next
  (0.3-1.1 s at scale 10 under load, measured; a second fence right after the first was not
  the faster in 9 of 12: the writes go on). So a dry run fences twice in its fence step and the
  forecast takes the faster of the two (:class:`FenceCost`): the nearer to a fence with the
  writes stopped. The part keeps the step's bookkeeping and leaves the slower fence's time out.
  Of the fence taken it leaves out the spread: the time from the first partition's record of
  the marker to the last one's. Capture puts the markers in every partition at once; with the
  writes stopped nothing follows them and sync takes the rest right after the first, while
  beside the writes it first applies what was committed after the fence row on the partitions
  it polls before the last marker. Measured at scale 10 under pgbench -R 200 (load ~6): from the
  fence row to the first partition's record 0.16-0.33 s in the dry runs, 0.14-0.33 s in the
  real ones, to the last 0.38-0.77 s against 0.22-0.60 s; spread 0.22-0.49 s against 0.05-0.08
  s (0.28 s in a pair where the machine's load had grown). So the fence's forecast errs low by
  the frozen run's own spread.
* every other part: as measured (the same queries).

The steps after the fence up to the flip (row counts, control totals, the verify of the
changes but its re-check fences, the schema step, the sequences, the smoke checks) the dry run
measures with crossfade's own capture and sync paused, as they are idle inside the freeze
(``cutover.dry_run_quiet``, :mod:`crossfade.cutover.quiet`); the waits for them to hold and the
resume before the flip are in no part (:meth:`Spans.skip`). The cutover's fences look every
0.02 s whether the marker arrived (:data:`crossfade.verify.fence.CUTOVER_POLL_S`), so a fence's
part is not rounded up to the next 0.1 s in either run.

Not in it: indexes and foreign keys the schema step will build (listed by the dry run; build
them before with ``crossfade target-schema --apply``), and whatever runs slower or faster for
reasons outside crossfade (the machine's other load). ``bench/cutover_downtime.py`` measures
the forecast against the real run, per part.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class DeltaCost:
    """What the verify of the changes measured (:class:`crossfade.verify.run.VerifyReport`)."""

    live_only: float = 0.0
    """Seconds spent only because writes flowed (re-checks around fences)."""
    compare: float = 0.0
    """Seconds comparing the changed keys' rows (both sides)."""
    keys: int = 0
    """Keys compared."""
    scanned_at: float | None = None
    """``time.monotonic()`` when the scans for the changed keys began."""


@dataclass
class FenceCost:
    """A dry run's two fences in its fence step (see the module's docstring)."""

    first: float
    """Seconds of the step's first fence (the call: the topics' partitions, row, wait)."""
    second: float
    """Seconds of the fence right after it."""
    first_spread: float = 0.0
    """Seconds from the first fence's first partition record to its last one's."""
    second_spread: float = 0.0
    """The same of the second fence."""

    @property
    def firsts(self) -> tuple[float, float]:
        """Each fence up to its first partition's record and after its last one's."""
        return self.first - self.first_spread, self.second - self.second_spread

    @property
    def used(self) -> str:
        """The fence the forecast takes: the faster without its spread."""
        a, b = self.firsts
        return "first" if a <= b else "second"

    def as_dict(self) -> dict[str, Any]:
        return {
            "first_s": round(self.first, 3),
            "second_s": round(self.second, 3),
            "first_spread_s": round(self.first_spread, 3),
            "second_spread_s": round(self.second_spread, 3),
            "forecast_from": self.used,
        }


def fence_seconds(part: float, cost: FenceCost) -> float:
    """The real run's fence part, from the dry run's (``part``: both fences and the step's
    bookkeeping): the step's bookkeeping and the fence taken without its spread."""
    return max(0.0, part - cost.first - cost.second + min(cost.firsts))


@dataclass
class Spans:
    """Each step's part of the write downtime, from its start to the start of the next step (the
    end of its own for the flip): measured alike in a dry run and a real one."""

    order: list[str]
    """The steps from the freeze to the flip, in order."""
    starts: dict[str, float] = field(default_factory=dict)
    parts: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, float] = field(default_factory=dict)
    """Seconds inside a part that are not the run's (:meth:`skip`)."""
    _open: str | None = None

    def skip(self, seconds: float) -> None:
        """``seconds`` just spent that the real run does not spend (a dry run waiting for
        capture and sync to hold, :mod:`crossfade.cutover.quiet`): the open part leaves them
        out."""
        if self._open is not None:
            self.skipped[self._open] = self.skipped.get(self._open, 0.0) + seconds

    def _close(self, name: str, now: float) -> None:
        self.parts[name] = now - self.starts[name] - self.skipped.get(name, 0.0)
        self._open = None

    def start(self, name: str, now: float | None = None) -> None:
        """Step ``name`` starts: the open part (the step before, its bookkeeping) ends."""
        now = time.monotonic() if now is None else now
        self.starts[name] = now
        if self._open is not None:
            self._close(self._open, now)
        if name in self.order:
            self._open = name

    def end(self, name: str, now: float | None = None) -> None:
        """The last step (the flip) ended: its part ends with it."""
        now = time.monotonic() if now is None else now
        if self._open == name:
            self._close(name, now)


@dataclass
class Forecast:
    steps: dict[str, float]
    """Seconds per part, as the real run is expected to spend them."""
    excluded: list[str] = field(default_factory=list)
    """What a dry run cannot time and the forecast leaves out."""

    @property
    def seconds(self) -> float:
        return sum(self.steps.values())


def verify_seconds(
    part: float, cost: DeltaCost, live_verify_started: float | None, freeze_at: float | None
) -> float:
    """The real run's verify of the changes, from the dry run's part (``part`` seconds): without
    the live-only re-checks, and with the comparison scaled from the keys written from the full
    verify's snapshots up to the dry run's scan to those written up to the freeze (the write
    rate taken as steady between them)."""
    compare = cost.compare
    if (
        live_verify_started is not None
        and freeze_at is not None
        and cost.scanned_at is not None
        and cost.scanned_at > live_verify_started
    ):
        share = (freeze_at - live_verify_started) / (cost.scanned_at - live_verify_started)
        compare = cost.compare * min(1.0, max(0.0, share))
    return max(0.0, part - cost.live_only - cost.compare + compare)


def forecast(
    spans: Spans,
    *,
    delta: DeltaCost | None,
    excluded: list[str],
    fence: FenceCost | None = None,
) -> Forecast:
    """The model (see the module's docstring) over a dry run's ``spans``; ``delta``: what its
    verify of the changes measured; ``fence``: its two fences (None: one, taken as measured)."""
    out: dict[str, float] = {}
    for name in spans.order:
        if name not in spans.parts:
            continue
        part = spans.parts[name]
        if name == "verify" and delta is not None:
            part = verify_seconds(
                part, delta, spans.starts.get("verify_live"), spans.starts.get("freeze")
            )
        if name == "fence" and fence is not None:
            part = fence_seconds(part, fence)
        out[name] = max(0.0, part)
    return Forecast(out, list(excluded))


def parts(
    spans: Spans,
    dry_run: bool,
    delta: DeltaCost | None,
    excluded: list[str],
    fence: FenceCost | None = None,
) -> dict[str, float]:
    """A run's write downtime parts: a real run's as measured, a dry run's as :func:`forecast`
    models them; none until the run got past the verify."""
    if "verify" not in spans.parts:
        return {}
    if not dry_run:
        return dict(spans.parts)
    return forecast(spans, delta=delta, excluded=excluded, fence=fence).steps


def evidence(
    expected: float | None,
    parts: dict[str, float],
    excludes: list[str],
    fence: FenceCost | None = None,
) -> dict[str, Any] | None:
    """The forecast as the decision row of the audit log keeps it (the console announces the
    latest one from there), or None without one. The parts are pairs: a jsonb object does not
    keep its keys' order. ``fence``: a dry run's two fences (``dry_run_fences``)."""
    if expected is None:
        return None
    out: dict[str, Any] = {
        "expected_downtime_seconds": round(expected, 3),
        "expected_downtime_parts": [[k, round(v, 3)] for k, v in parts.items()],
        "forecast_excludes": list(excludes),
    }
    if fence is not None:
        out["dry_run_fences"] = fence.as_dict()
    return out
