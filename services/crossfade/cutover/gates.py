"""``crossfade cutover``: the go/no-go gates, walked in order, each one audited.

The checks are the gate model's (:mod:`crossfade.cutover.gate_model`, the one definition the
console, ``status`` and the metrics evaluate too); the cutover adds the actions between them.
Steps (``cutover`` section of the config says how to freeze and flip):

0. ``fallback_plan`` (only with ``cutover.fallback: true``): every table's mapping can be inverted;
1. ``sync_alive``: capture and every sync worker send heartbeats, hold their partitions, keep up;
2. ``dead_letters``: no open dead letter nobody acknowledged (``crossfade dlq ack``);
3. ``backup`` (only with ``cutover.backup``): the backup command or SQL succeeds; its output (a
   snapshot id) is the evidence (with ``backup.after_freeze`` it runs right after the freeze);
4. ``verify_live``: the full verify while writes flow (:mod:`crossfade.cutover.verify_steps`):
   red on a confirmed difference; keys it cannot decide go to the verify inside the freeze;
5. ``checkpoint``: a fresh checkpoint, so the cutover can be rewound to;
6. ``freeze``: legacy writes stopped (``cutover.freeze_sql`` on the legacy database and/or
   ``cutover.freeze_command``); skipped in a dry run;
7. ``fence``: a fence goes through: every change committed before the freeze is applied;
8. ``row_counts``: legacy and new counts agree (mapped tables by their accounting); in a dry
   run, where writes go on, counts that differ are reported and the step is skipped;
9. ``reconcile`` (only with ``cutover.reconcile``): every control total (a query pair, legacy and
   new) is equal; the differing rows are named; in a dry run, totals that differ are reported
   and the step is skipped, like the counts;
10. ``verify``: inside the freeze, only what changed since ``verify_live``
    (:mod:`crossfade.verify.delta`) finds zero mismatches;
11. ``target_schema``: what the tables crossfade created still lack of legacy's definition
    (indexes, UNIQUE constraints, foreign keys: :mod:`crossfade.cutover.schema`) is created now
    that the target is complete and still; then the gate checks every identity-mapped table
    against legacy's catalog; in a dry run only what would be created is listed;
12. ``sequences``: every sequence feeding a column of a table crossfade writes is moved past the
    largest value present plus ``cutover.sequence_gap`` (:mod:`crossfade.cutover.sequences`),
    each move audited (gate ``sequence``); a dry run shows what it would set;
13. ``smoke`` (only with ``cutover.smoke``): SQL or HTTP checks of the new system pass (a test
    login, a test payment), after the flip's preparation, the last step before traffic moves;
14. ``flip``: ``cutover.flip_sql`` on the new database, ``flip_command``, ``flip_http`` (a JSON
    POST); skipped in a dry run;
15. ``fallback`` (only with ``cutover.fallback: true``): ``crossfade fallback start`` is started in
    the background (new -> legacy, :mod:`crossfade.mapping.inverse`) and the step waits until its
    sync has joined; in a dry run only the plan is checked.

Steps 1, 2, 7, 8, 10 and 11 are gates of the model: the cutover runs the fence and the verify (their
runs are recorded in the bookkeeping schema) and then evaluates the gate from what was recorded,
so its result carries the same state, evidence and age the console shows. Steps 3, 9 and 13 are
the model's optional gates: run here (:mod:`crossfade.cutover.checks`), their evidence recorded in
the audit row, which the model reads.

The write downtime forecast (``expected_downtime_seconds``, ``--dry-run``) models, part by
part, what the real run spends from the start of the freeze to the end of the flip
(:mod:`crossfade.cutover.forecast`); a real run reports the same parts as it measured them. A dry
run measures the steps from the row counts to the last before the flip with crossfade's own
capture and sync paused, as inside the freeze (``cutover.dry_run_quiet``,
:mod:`crossfade.cutover.quiet`).

The first step that fails stops the run; if writes were frozen they are unfrozen
(``unfreeze_sql`` / ``unfreeze_command``). Every step, the unfreeze and the decision are rows of
``<bookkeeping>.cutover_audit`` (run id, who, when, gate, ok, detail, seconds) and the
``crossfade_cutover_gate_ok{gate}`` metric. A successful real cutover leaves the legacy database
frozen: traffic now goes to the new system.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from crossfade import metrics
from crossfade.config import Settings
from crossfade.cutover import actions, checks, forecast, gate_model, quiet, verify_steps
from crossfade.db import connect
from crossfade.errors import CrossfadeError
from crossfade.target.store import (
    AuditLog,
    acknowledge_dead_letters,
    claimed_count,
    ensure_schema,
)
from crossfade.verify.delta import DeltaBase
from crossfade.who import operator

log = logging.getLogger(__name__)

GATES = (
    "sync_alive",
    "dead_letters",
    "verify_live",
    "checkpoint",
    "freeze",
    "fence",
    "row_counts",
    "verify",
    "target_schema",
    "sequences",
    "flip",
)
"""The steps every cutover takes (:func:`steps_for` adds the configured ones)."""
FALLBACK_GATE = "fallback"
FALLBACK_PLAN = "fallback_plan"


def steps_for(cfg: Any) -> tuple[str, ...]:
    """The steps of a cutover under ``cfg`` (``settings.cutover``), in order."""
    out: list[str] = [FALLBACK_PLAN] if cfg.fallback else []
    for g in GATES:
        if g == "verify_live" and cfg.backup is not None and not cfg.backup.after_freeze:
            out.append("backup")
        if g == "verify" and cfg.reconcile:
            out.append("reconcile")
        if g == "flip" and cfg.smoke:
            out.append("smoke")
        out.append(g)
        if g == "freeze" and cfg.backup is not None and cfg.backup.after_freeze:
            out.append("backup")
    if cfg.fallback:
        out.append(FALLBACK_GATE)
    return tuple(out)


@dataclass
class GateResult:
    """One step of a cutover run. ``model``: for a gate of the gate model, its evaluation."""

    name: str
    ok: bool
    detail: str
    seconds: float
    skipped: bool = False
    model: gate_model.GateResult | None = None
    evidence: dict[str, Any] | None = None
    """What a check step (backup, reconcile, smoke) recorded in the audit log."""

    @property
    def state(self) -> str:
        if self.skipped:
            return "skipped"
        if self.model is not None:
            return self.model.state
        return "ok" if self.ok else "failed"

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "ok": self.ok,
            "state": self.state,
            "detail": self.detail,
            "seconds": round(self.seconds, 3),
            "skipped": self.skipped,
        }
        if self.model is not None:
            m = self.model.as_dict()
            out.update(
                {k: m[k] for k in ("title", "evaluated_at", "evidence", "evidence_at", "age_s")}
            )
            out["fresh_s"] = m["fresh_s"]
        elif self.evidence is not None:
            out["evidence"] = self.evidence
        return out


@dataclass
class CutoverReport:
    run_id: str
    dry_run: bool
    who: str
    gates: list[GateResult] = field(default_factory=list)
    unfrozen: bool | None = None
    downtime_steps: dict[str, float] = field(default_factory=dict)
    """The write downtime's parts, freeze to flip (:class:`crossfade.cutover.forecast.Spans`):
    in a dry run as the model forecasts them, in a real run as measured."""
    measured_steps: dict[str, float] = field(default_factory=dict)
    """The parts as this run measured them (a dry run's, beside the writes, before the model)."""
    forecast_excludes: list[str] = field(default_factory=list)
    """What a dry run could not time (a freeze or flip command, an HTTP flip, index builds)."""
    downtime_seconds: float | None = None
    fences: dict[str, Any] | None = None
    """A dry run's two fences, the forecast's from the faster (:class:`~crossfade.cutover.
    forecast.FenceCost`)."""
    quiet: dict[str, Any] | None = None
    """A dry run's pause of capture and sync while it measured (:mod:`crossfade.cutover.quiet`)."""
    model: list[gate_model.GateResult] = field(default_factory=list)
    """The gate model evaluated at the end of the run (what the console shows for this state)."""

    expected_gates: int = len(GATES)

    @property
    def go(self) -> bool:
        return len(self.gates) == self.expected_gates and all(g.ok for g in self.gates)

    @property
    def expected_downtime_seconds(self) -> float | None:
        """Writes are frozen from the freeze to the end of the flip: the sum of the parts (None
        until the run got past the verify)."""
        if "verify" not in self.downtime_steps:
            return None
        return sum(self.downtime_steps.values())

    def downtime_parts(self) -> str:
        """``fence 0.8 s + row_counts 0.1 s + ...``: the forecast's parts."""
        return " + ".join(f"{k} {v:.1f} s" for k, v in self.downtime_steps.items())

    def as_dict(self) -> dict[str, Any]:
        exp = self.expected_downtime_seconds
        return {
            "go": self.go,
            "dry_run": self.dry_run,
            "run_id": self.run_id,
            "who": self.who,
            "gates": [g.as_dict() for g in self.gates],
            "unfrozen": self.unfrozen,
            "expected_downtime_seconds": round(exp, 3) if exp is not None else None,
            "expected_downtime_steps": {k: round(v, 3) for k, v in self.downtime_steps.items()},
            "measured_downtime_steps": {k: round(v, 3) for k, v in self.measured_steps.items()},
            "forecast_excludes": self.forecast_excludes,
            "dry_run_fences": self.fences,
            "dry_run_quiet": self.quiet,
            "downtime_seconds": round(self.downtime_seconds, 3)
            if self.downtime_seconds is not None
            else None,
            "model": [g.as_dict() for g in self.model],
        }


# -- dead letters ------------------------------------------------------------------------------
def ack_dead_letters(settings: Settings, note: str | None = None) -> tuple[int, int]:
    """``crossfade dlq ack``: acknowledge every open dead letter no acknowledgement covers yet,
    recorded with who and the note (also in the audit log). Returns (open, newly acknowledged)."""
    bk = settings.sync.bookkeeping_schema
    with connect(settings.target, "target") as tgt:
        ensure_schema(tgt, bk)
        return acknowledge_dead_letters(tgt, bk, operator(), note)


class Cutover:
    def __init__(
        self,
        settings: Settings,
        *,
        dry_run: bool = False,
        on_gate: Callable[[GateResult], None] | None = None,
        verify_options: dict[str, Any] | None = None,
        config_path: str | None = None,
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        """The config file ``crossfade fallback start`` is started with (gate 7); unset: the
        child reads ``CROSSFADE_CONFIG`` and the environment, as this process did."""
        self.fallback_process: subprocess.Popen[bytes] | None = None
        self.cfg = settings.cutover
        self.bk = settings.sync.bookkeeping_schema
        self.dry_run = dry_run
        self.on_gate = on_gate
        self.verify_options = verify_options or {}
        self.report = CutoverReport(uuid.uuid4().hex[:12], dry_run, operator())
        self.gates = steps_for(self.cfg)
        self.report.expected_gates = len(self.gates)
        self.audit = AuditLog(settings, self.report.run_id, self.report.who, dry_run)
        """The run's audit rows, on one connection (closed when :meth:`run` ends)."""
        self.frozen = False
        self._frozen_at: float | None = None
        self.verified: DeltaBase | None = None
        """The full verify before the freeze (``verify_live``): the base of the one inside it."""
        order = list(self.gates)
        self.spans = forecast.Spans(order[order.index("freeze") : order.index("flip") + 1])
        """The write downtime's parts as this run measures them."""
        self._delta: forecast.DeltaCost | None = None
        self._fences: forecast.FenceCost | None = None
        self.quiet = quiet.Quiet(settings, self.report.run_id, self.report.who)
        self._quiet_steps = (
            set(order[order.index("fence") + 1 : order.index("flip")])
            if dry_run and self.cfg.dry_run_quiet
            else set()
        )
        """The steps a dry run runs with capture and sync paused: after the fence, to the flip."""

    # -- gates ------------------------------------------------------------------------------
    def _model(self, name: str) -> gate_model.GateResult:
        (r,) = gate_model.evaluate(self.settings, [name])
        return r

    def gate_fallback_plan(self) -> tuple[bool, str]:
        from crossfade.mapping.inverse import plan

        p = plan(self.settings)
        if p.refused:
            return (
                False,
                f"cutover.fallback is on but {p.refusal().message.replace(chr(10), '; ')}",
            )
        return True, "every table goes back: " + ", ".join(
            f"{i.new} -> {i.legacy}" for i in p.inverses
        )

    def gate_sync_alive(self) -> gate_model.GateResult:
        return self._model("sync_alive")

    def gate_dead_letters(self) -> gate_model.GateResult:
        return self._model("dead_letters")

    def gate_row_counts(self) -> gate_model.GateResult:
        return self._model("row_counts")

    def gate_checkpoint(self) -> tuple[bool, str]:
        from crossfade.cutover.checkpoint import create_checkpoint

        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        cp = create_checkpoint(
            self.settings,
            name=f"cutover-{stamp}-{self.report.run_id[:6]}",
            note=f"cutover run {self.report.run_id}{' (dry run)' if self.dry_run else ''}",
        )
        return (
            True,
            f"checkpoint {cp.name} at legacy WAL {cp.source_lsn} ({len(cp.offsets)} partitions)",
        )

    def gate_freeze(self) -> tuple[bool, str]:
        if not (self.cfg.freeze_sql or self.cfg.freeze_command):
            if self.dry_run:
                return (
                    True,
                    "skipped (dry run); NOTE: no cutover.freeze_sql or freeze_command is configured",
                )
            return (
                False,
                "no cutover.freeze_sql or cutover.freeze_command is configured: legacy writes cannot be frozen",
            )
        if self.dry_run:
            self._stand_in("source", bool(self.cfg.freeze_sql))
            if self.cfg.freeze_command:
                self.report.forecast_excludes.append("freeze_command")
            return True, "skipped (dry run): legacy writes keep going"
        done = []
        self._frozen_at = time.monotonic()
        if self.cfg.freeze_sql:
            self.frozen = True  # from here on a failure unfreezes (the SQL may have half-applied)
            actions.run_sql(self.settings, "source", self.cfg.freeze_sql)
            done.append("freeze_sql ran on the legacy database")
        if self.cfg.freeze_command:
            self.frozen = True
            actions.run_command(self.cfg.freeze_command, self.cfg.command_timeout_s)
            done.append(f"freeze_command {self.cfg.freeze_command[0]} succeeded")
        return True, "; ".join(done)

    def gate_fence(self) -> gate_model.GateResult:
        """Run a fence (recorded as ``via=cutover``), then evaluate the gate from the record. A
        dry run fences twice (before its quiet): the forecast takes the faster one's time less
        its spread (:class:`~crossfade.cutover.forecast.FenceCost`)."""
        from crossfade.cutover.verify_steps import cutover_fence

        t0 = time.monotonic()
        a = cutover_fence(self.settings, "cutover")
        if self.dry_run:
            t1 = time.monotonic()
            b = cutover_fence(self.settings, "cutover")
            took = (t1 - t0, time.monotonic() - t1)
            self._fences = forecast.FenceCost(*took, a.spread, b.spread)
            self.report.fences = self._fences.as_dict()
        r = self._model("fence")
        if (f := self._fences) is not None:
            r.detail += (
                f"; dry run: fenced twice, {f.first:.2f} s then {f.second:.2f} s (first to "
                f"last partition {f.first_spread:.2f} s, {f.second_spread:.2f} s); the forecast "
                f"takes the {f.used} without its spread (the nearer to a fence with writes stopped)"
            )
        return r

    def gate_verify_live(self) -> tuple[bool, str]:
        """The full verify while writes flow (:func:`crossfade.cutover.verify_steps.verify_live`)."""
        ok, detail, self.verified = verify_steps.verify_live(self.settings, self.verify_options)
        return ok, detail

    def gate_verify(self) -> gate_model.GateResult | tuple[bool, str]:
        """Inside the freeze: what changed since ``verify_live``, then the gate evaluated from
        the record; a failed verify names its tables."""
        rep = verify_steps.verify_changes(
            self.settings,
            self.verified,
            self.frozen,
            self.verify_options,
            self.quiet.release if self._quiet_steps else None,  # a fence needs them running
        )
        self._delta = forecast.DeltaCost(
            rep.live_only_seconds,
            rep.delta_compare_seconds,
            sum(t.delta_keys or 0 for t in rep.tables),
            rep.delta_scanned_at,
        )
        note = verify_steps.mapped_note(rep)
        if rep.match:
            res = self._model("verify")
            res.detail += note
            return res
        bad = "; ".join(verify_steps.mismatch(t) for t in rep.tables if not t.match)
        return False, "mismatches: " + bad + note

    def gate_target_schema(self) -> gate_model.GateResult | tuple[bool, str]:
        """Create what crossfade's tables lack (not in a dry run), then evaluate the gate."""
        from crossfade.cutover import schema

        with (
            connect(self.settings.source, "source") as src,
            connect(self.settings.target, "target") as tgt,
        ):
            if self.dry_run:
                report = schema.compare(self.settings, src, tgt)
                ok, detail = schema.summary(report, deferred_ok=True)
                todo = [
                    f"{d.table} {d.kind} {d.name}"
                    for ts in report
                    for d in ts.pending
                    if d.statement is not None
                ]
                if todo:
                    detail = f"would create {', '.join(todo)} after the fence; {detail}"
                return ok, detail
            made = schema.create_missing(self.settings, src, tgt, foreign_keys=True)
        r = self._model("target_schema")
        if made:
            r.detail = f"created {', '.join(made)}; {r.detail}"
        return r

    def gate_sequences(self) -> tuple[bool, str]:
        """Move the sequences (not in a dry run); every move is an audit row of its own."""
        from crossfade.cutover import schema, sequences

        identity = schema.identity_tables(self.settings)
        tables = identity + [t for t in schema.mapped_targets(self.settings) if t not in identity]
        with (
            connect(self.settings.source, "source") as src,
            connect(self.settings.target, "target") as tgt,
        ):
            moves = sequences.plan(
                tgt, tables, self.cfg.sequence_gap, src, {t: t for t in identity}
            )
            if not self.dry_run:
                sequences.apply(tgt, moves)
        for m in moves:
            self.audit.write("sequence", True, m.line(), 0.0)
        return True, sequences.describe(moves, self.dry_run)

    def gate_flip(self) -> tuple[bool, str]:
        c = self.cfg
        if self.dry_run:
            self._stand_in("target", bool(c.flip_sql))
            how = {"flip_sql": c.flip_sql, "flip_command": c.flip_command, "flip_http": c.flip_http}
            what = [n for n, v in how.items() if v]
            self.report.forecast_excludes += [n for n in what if n != "flip_sql"]
            return (
                True,
                f"skipped (dry run); would run: {', '.join(what) or 'nothing configured (manual flip)'}",
            )
        done = []
        if c.flip_sql:
            actions.run_sql(self.settings, "target", c.flip_sql)
            done.append("flip_sql ran on the new database")
        if c.flip_command:
            actions.run_command(c.flip_command, c.command_timeout_s)
            done.append(f"flip_command {c.flip_command[0]} succeeded")
        if c.flip_http:
            status = actions.post(
                c.flip_http.get_secret_value(),
                {
                    "event": "crossfade.cutover.flip",
                    "run_id": self.report.run_id,
                    "who": self.report.who,
                },
                c.command_timeout_s,
            )
            done.append(f"flip_http answered HTTP {status}")
        if self._frozen_at is not None:
            self.report.downtime_seconds = time.monotonic() - self._frozen_at
        if not done:
            return (
                True,
                "no flip action configured: route traffic to the new system now (the legacy database stays frozen)",
            )
        return True, "; ".join(done) + " (the legacy database stays frozen)"

    def _stand_in(self, which: str, configured: bool) -> None:
        """A dry run's stand-in for the freeze's or flip's SQL (its part of the forecast): a
        transaction on the same database."""
        if configured:
            actions.run_sql(self.settings, which, "SELECT 1")

    def gate_fallback(self) -> tuple[bool, str]:
        from crossfade.mapping.inverse import reversed_for

        rev, p = reversed_for(self.settings)
        how = ", ".join(f"{i.new} -> {i.legacy}" for i in p.inverses)
        if self.dry_run:
            return True, f"skipped (dry run); would start crossfade fallback start for {how}"
        state = Path(rev.capture.state_dir)
        state.mkdir(parents=True, exist_ok=True)
        log_path = state / "fallback.log"
        argv = [sys.executable, "-m", "crossfade.ops.cli", "fallback", "start"]
        if self.config_path:
            argv += ["-c", str(self.config_path)]
        with open(log_path, "ab") as fh:
            self.fallback_process = subprocess.Popen(
                argv, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
            )
        # proof it runs: its sync group claimed partitions in legacy (capture made topics and epoch)
        deadline = time.monotonic() + self.cfg.fence_timeout_s
        with connect(self.settings.source, "source") as legacy:
            while True:
                rc = self.fallback_process.poll()
                if rc is not None:
                    tail = log_path.read_text(errors="replace").strip().splitlines()
                    raise CrossfadeError(
                        f"crossfade fallback start exited with {rc}"
                        + (f": {tail[-1]}" if tail else ""),
                        f"see {log_path}",
                    )
                if claimed_count(legacy, rev.sync.bookkeeping_schema, rev.sync.group_id):
                    break
                if time.monotonic() > deadline:
                    raise CrossfadeError(
                        f"crossfade fallback start (pid {self.fallback_process.pid}) did not join within "
                        f"{self.cfg.fence_timeout_s:.0f} s",
                        f"see {log_path}",
                    )
                time.sleep(0.5)
        return (
            True,
            f"crossfade fallback start runs (pid {self.fallback_process.pid}, log {log_path}): {how}",
        )

    def unfreeze(self) -> None:
        t0 = time.monotonic()
        done, errors = [], []
        if self.cfg.unfreeze_command:
            try:
                actions.run_command(self.cfg.unfreeze_command, self.cfg.command_timeout_s)
                done.append("unfreeze_command succeeded")
            except CrossfadeError as exc:
                errors.append(str(exc))
        if self.cfg.unfreeze_sql:
            try:
                actions.run_sql(self.settings, "source", self.cfg.unfreeze_sql)
                done.append("unfreeze_sql ran on the legacy database")
            except (psycopg.Error, CrossfadeError) as exc:
                errors.append(f"unfreeze_sql failed: {exc}")
        if not (self.cfg.unfreeze_sql or self.cfg.unfreeze_command):
            errors.append(
                "no cutover.unfreeze_sql or unfreeze_command is configured: UNFREEZE LEGACY WRITES BY HAND"
            )
        ok = not errors
        self.report.unfrozen = ok
        detail = "; ".join(done + errors)
        self.audit.write("unfreeze", ok, detail, time.monotonic() - t0)
        if self.on_gate:
            self.on_gate(GateResult("unfreeze", ok, detail, time.monotonic() - t0))
        if ok:
            self.frozen = False

    # -- run ----------------------------------------------------------------------------------
    def _downtime_parts(self) -> None:
        """The write downtime's parts: measured (a real run), modelled from them (a dry run)."""
        self.report.measured_steps = dict(self.spans.parts)
        if any(g.name == "target_schema" and "would create" in g.detail for g in self.report.gates):
            self.report.forecast_excludes.append("target_schema builds (see its step)")
        self.report.downtime_steps = forecast.parts(
            self.spans, self.dry_run, self._delta, self.report.forecast_excludes, self._fences
        )

    def _quiet_audit(self) -> None:
        """A dry run's pause of capture and sync while it measured: in the report, an audit row
        of its own (``dry_run_quiet``) and a line of the run's output."""
        q = self.quiet.report
        if q is None:
            return
        self.report.quiet = q.as_dict()
        ok = not (q.error and q.paused and not q.resumed)  # red: a pause of ours still set
        self.audit.write("dry_run_quiet", ok, q.line(), q.held_s, q.as_dict())
        if self.on_gate:
            self.on_gate(GateResult("dry_run_quiet", ok, q.line(), q.held_s))

    def _quiet_before(self, name: str) -> None:
        """A dry run: capture and sync paused before each step after the fence (again after
        the verify when its re-check fences resumed them), resumed before the flip; the time
        that takes is in no part of the forecast."""
        if name in self._quiet_steps:
            if not self.quiet.holding and not self.quiet.failed:
                self.spans.skip(self.quiet.hold())
        elif self.quiet.holding:
            self.spans.skip(self.quiet.release())

    def _step(self, name: str, fn: Callable[[], Any]) -> GateResult:
        """Run one step: any failure is a red step (audited; the run then unfreezes)."""
        t0 = time.monotonic()
        model = None
        evidence = None
        try:
            out = fn()
            if isinstance(out, gate_model.GateResult):
                model = out
                ok, detail = out.ok, out.detail
            elif isinstance(out, checks.Check):
                ok, detail, evidence = out.ok, out.detail, out.evidence
            else:
                ok, detail = out
        except CrossfadeError as exc:
            ok, detail = False, str(exc)
        except Exception as exc:  # noqa: BLE001 - any failure is a red gate, audited, and unfreezes
            text = str(exc).strip().splitlines()
            ok, detail = False, f"{type(exc).__name__}: {text[0] if text else ''}"
        skipped = self.dry_run and name in ("freeze", "flip")
        if self.dry_run and name in ("row_counts", "reconcile") and not ok:
            # writes go on in a dry run: counts and totals move; compared after the real freeze
            skipped, ok = True, True
            what = "counts" if name == "row_counts" else "totals"
            detail = f"skipped (dry run: writes are not frozen, {what} compared after the freeze): {detail}"
            evidence = {**(evidence or {}), "skipped": True} if name == "reconcile" else evidence
        if name in ("backup", "reconcile", "smoke") and evidence is None:
            evidence = {"error": detail}  # the check itself could not run (a database down)
        res = GateResult(name, ok, detail, time.monotonic() - t0, skipped=skipped, model=model)
        res.evidence = evidence
        return res

    def run(self) -> CutoverReport:
        try:
            return self._run()
        finally:
            self.audit.close()

    def _run(self) -> CutoverReport:
        with connect(self.settings.target, "target") as tgt:
            ensure_schema(tgt, self.bk)
        steps: dict[str, Callable[[], Any]] = {
            FALLBACK_PLAN: self.gate_fallback_plan,
            "sync_alive": self.gate_sync_alive,
            "dead_letters": self.gate_dead_letters,
            "backup": lambda: checks.run_backup(self.settings, self.cfg.backup),
            "verify_live": self.gate_verify_live,
            "checkpoint": self.gate_checkpoint,
            "freeze": self.gate_freeze,
            "reconcile": lambda: checks.run_reconcile(self.settings, self.cfg.reconcile),
            "smoke": lambda: checks.run_smoke(self.settings, self.cfg.smoke),
            "fence": self.gate_fence,
            "row_counts": self.gate_row_counts,
            "verify": self.gate_verify,
            "target_schema": self.gate_target_schema,
            "sequences": self.gate_sequences,
            "flip": self.gate_flip,
            FALLBACK_GATE: self.gate_fallback,
        }
        try:
            for name in self.gates:
                self._quiet_before(name)
                self.spans.start(name)
                res = self._step(name, steps[name])
                if name == "flip":
                    self.spans.end(name)
                self.report.gates.append(res)
                if res.model is None or res.skipped:
                    metrics.set_gate(name, res.ok)
                self.audit.write(name, res.ok, res.detail, res.seconds, res.evidence)
                if self.on_gate:
                    self.on_gate(res)
                if not res.ok:
                    break
            self._downtime_parts()
        finally:
            self.quiet.release()  # also on an error or Ctrl-C
            # after the flip traffic is on the new system: a later red gate (fallback) must not
            # let the legacy application write again
            flipped = any(g.name == "flip" and g.ok and not g.skipped for g in self.report.gates)
            if self.frozen and not self.report.go and not flipped:
                self.unfreeze()
            self._quiet_audit()
        failed = next((g.name for g in self.report.gates if not g.ok), None)
        # the model as it stands after the run (what the console shows for this state)
        with contextlib.suppress(psycopg.Error, CrossfadeError):
            self.report.model = gate_model.evaluate(self.settings)
        decision = ("GO" if self.report.go else f"NO GO at {failed or 'an interrupted run'}") + (
            " (dry run)" if self.dry_run else ""
        )
        exp = self.report.expected_downtime_seconds
        if exp is not None:
            decision += f"; expected write downtime {exp:.1f} s ({self.report.downtime_parts()})"
        r = self.report
        evidence = forecast.evidence(exp, r.downtime_steps, r.forecast_excludes, self._fences)
        if evidence is not None and r.quiet is not None:
            evidence["dry_run_quiet"] = r.quiet
        self.audit.write("decision", self.report.go, decision, 0.0, evidence)
        return self.report


def cutover(settings: Settings, *, dry_run: bool = False, **kw: Any) -> CutoverReport:
    return Cutover(settings, dry_run=dry_run, **kw).run()
