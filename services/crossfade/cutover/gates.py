"""``crossfade cutover``: the go/no-go gates, walked in order, each one audited.

Gates (``cutover`` section of the config says how to freeze and flip):

1. ``sync_healthy``: no rewind replay unfinished, no dead letters nobody acknowledged
   (``crossfade dlq ack``), and a fence goes through (capture and sync move changes end to end);
2. ``checkpoint``: a fresh checkpoint, so the cutover can be rewound to;
3. ``freeze``: legacy writes stopped (``cutover.freeze_sql`` on the legacy database and/or
   ``cutover.freeze_command``); skipped in a dry run;
4. ``fence``: every change committed before the freeze is applied in the target;
5. ``verify``: the full verify finds zero mismatches;
6. ``flip``: ``cutover.flip_sql`` on the new database, ``flip_command``, ``flip_http`` (a JSON
   POST); skipped in a dry run;
7. ``fallback`` (only with ``cutover.fallback: true``): ``crossfade fallback start`` is started in
   the background (new -> legacy, :mod:`crossfade.cutover.fallback`) and the gate waits until its
   sync has joined; in a dry run only the plan is checked. With the option on, gate 1 also
   refuses a plan with a table that cannot be inverted, before anything is frozen.

The first gate that fails stops the run; if writes were frozen they are unfrozen
(``unfreeze_sql`` / ``unfreeze_command``). Every gate, the unfreeze and the decision are rows of
``<bookkeeping>.cutover_audit`` (run id, who, when, gate, ok, detail, seconds) and the
``crossfade_cutover_gate_ok{gate}`` metric. A successful real cutover leaves the legacy database
frozen: traffic now goes to the new system.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from crossfade.capture.preflight import connect
from crossfade.config import Settings
from crossfade.errors import CrossfadeError
from crossfade.ops import metrics
from crossfade.ops.logs import redact
from crossfade.ops.who import operator
from crossfade.sync.bookkeeping import ensure_schema

log = logging.getLogger(__name__)

GATES = ("sync_healthy", "checkpoint", "freeze", "fence", "verify", "flip")
FALLBACK_GATE = "fallback"


@dataclass
class GateResult:
    name: str
    ok: bool
    detail: str
    seconds: float
    skipped: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "detail": self.detail,
            "seconds": round(self.seconds, 3),
            "skipped": self.skipped,
        }


@dataclass
class CutoverReport:
    run_id: str
    dry_run: bool
    who: str
    gates: list[GateResult] = field(default_factory=list)
    unfrozen: bool | None = None
    fence_seconds: float | None = None
    verify_seconds: float | None = None
    downtime_seconds: float | None = None

    expected_gates: int = len(GATES)

    @property
    def go(self) -> bool:
        return len(self.gates) == self.expected_gates and all(g.ok for g in self.gates)

    @property
    def expected_downtime_seconds(self) -> float | None:
        """Writes are frozen from the freeze to the flip: a fence plus a verify, measured."""
        if self.fence_seconds is None or self.verify_seconds is None:
            return None
        return self.fence_seconds + self.verify_seconds

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
            "downtime_seconds": round(self.downtime_seconds, 3)
            if self.downtime_seconds is not None
            else None,
        }


# -- dead letters ------------------------------------------------------------------------------
def dead_letter_counts(conn: psycopg.Connection, bk: str) -> tuple[int, int]:
    """(dead letters counted by sync, of which acknowledged by ``crossfade dlq ack`` or resolved).

    A dead letter a replay applied, a newer change superseded or the operator dropped is no
    longer open in the ledger: when none is open (and no change waits behind one), all count as
    resolved."""
    s = sql.Identifier(bk)
    row = conn.execute(
        sql.SQL("SELECT coalesce(sum(dead_lettered), 0) FROM {}.table_stats").format(s)
    ).fetchone()
    total = int(row[0]) if row else 0
    row = conn.execute(sql.SQL("SELECT max(dead_lettered) FROM {}.dlq_acks").format(s)).fetchone()
    acked = int(row[0]) if row and row[0] is not None else 0
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {}.ledger WHERE outcome IN ('dead_letter', 'held')").format(s)
    ).fetchone()
    if row is not None and int(row[0]) == 0:
        return total, total
    return total, min(acked, total)


def ack_dead_letters(settings: Settings, note: str | None = None) -> tuple[int, int]:
    """Acknowledge every dead letter counted so far; returns (total, newly acknowledged)."""
    bk = settings.sync.bookkeeping_schema
    with connect(settings.target, "target") as tgt:
        ensure_schema(tgt, bk)
        total, acked = dead_letter_counts(tgt, bk)
        tgt.execute(
            sql.SQL("INSERT INTO {}.dlq_acks (who, dead_lettered, note) VALUES (%s,%s,%s)").format(
                sql.Identifier(bk)
            ),
            (operator(), total, note),
        )
    return total, total - acked


# -- actions -----------------------------------------------------------------------------------
def _run_sql(settings: Settings, which: str, statement: str) -> None:
    db = settings.source if which == "source" else settings.target
    with connect(db, which) as conn, conn.transaction():
        conn.execute(statement)


def _run_command(argv: list[str], timeout: float) -> str:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise CrossfadeError(f"command {argv[0]!r} not found") from None
    except subprocess.TimeoutExpired:
        raise CrossfadeError(f"command {argv[0]!r} ran longer than {timeout:g} s") from None
    if p.returncode != 0:
        last = (p.stderr or p.stdout).strip().splitlines()
        raise CrossfadeError(
            f"command {argv[0]!r} exited with {p.returncode}" + (f": {last[-1]}" if last else "")
        )
    return argv[0]


def _post(url: str, body: dict[str, Any], timeout: float) -> int:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        raise CrossfadeError(f"flip_http answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise CrossfadeError(
            f"flip_http is not reachable ({getattr(exc, 'reason', exc)})"
        ) from None


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
        self.gates = (*GATES, FALLBACK_GATE) if self.cfg.fallback else GATES
        self.report.expected_gates = len(self.gates)
        self.frozen = False
        self._frozen_at: float | None = None

    # -- bookkeeping --------------------------------------------------------------------------
    def _audit(self, gate: str, ok: bool, detail: str, seconds: float) -> None:
        try:
            with connect(self.settings.target, "target") as tgt:
                tgt.execute(
                    sql.SQL(
                        "INSERT INTO {}.cutover_audit (run_id, who, dry_run, gate, ok, detail, seconds) "
                        "VALUES (%s,%s,%s,%s,%s,%s,%s)"
                    ).format(sql.Identifier(self.bk)),
                    (
                        self.report.run_id,
                        self.report.who,
                        self.dry_run,
                        gate,
                        ok,
                        redact(detail)[:4000],
                        seconds,
                    ),
                )
        except (
            psycopg.Error,
            CrossfadeError,
        ) as exc:  # the audit must not hide the gate's own result
            log.error("cutover audit row for %s not written: %s", gate, exc)

    # -- gates --------------------------------------------------------------------------------
    def gate_sync_healthy(self) -> tuple[bool, str]:
        if self.cfg.fallback:
            from crossfade.cutover.fallback import plan

            p = plan(self.settings)
            if p.refused:
                return (
                    False,
                    f"cutover.fallback is on but {p.refusal().message.replace(chr(10), '; ')}",
                )
        with connect(self.settings.target, "target") as tgt:
            s = sql.Identifier(self.bk)
            row = tgt.execute(
                sql.SQL(
                    "SELECT count(*) FROM {}.replay WHERE group_id = %s AND finished_at IS NULL"
                ).format(s),
                (self.settings.sync.group_id,),
            ).fetchone()
            if row and row[0]:
                return (
                    False,
                    f"a rewind's replay is still running on {row[0]} partition(s): let sync finish it",
                )
            total, acked = dead_letter_counts(tgt, self.bk)
        if total > acked:
            return False, (
                f"{total - acked} dead letter(s) not acknowledged ({self.settings.kafka.dlq_topic}): "
                "fix and replay them, then crossfade dlq ack"
            )
        from crossfade.cutover.fence import fence

        r = fence(self.settings, timeout=self.cfg.fence_timeout_s)
        self.report.fence_seconds = r.seconds
        acked_note = f", {acked} dead letter(s) acknowledged" if acked else ", no dead letters"
        return (
            True,
            f"capture and sync move changes: a fence went through {r.partitions} partitions in {r.seconds:.2f} s{acked_note}",
        )

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
            return True, "skipped (dry run): legacy writes keep going"
        done = []
        self._frozen_at = time.monotonic()
        if self.cfg.freeze_sql:
            self.frozen = True  # from here on a failure unfreezes (the SQL may have half-applied)
            _run_sql(self.settings, "source", self.cfg.freeze_sql)
            done.append("freeze_sql ran on the legacy database")
        if self.cfg.freeze_command:
            self.frozen = True
            _run_command(self.cfg.freeze_command, self.cfg.command_timeout_s)
            done.append(f"freeze_command {self.cfg.freeze_command[0]} succeeded")
        return True, "; ".join(done)

    def gate_fence(self) -> tuple[bool, str]:
        from crossfade.cutover.fence import fence

        r = fence(self.settings, timeout=self.cfg.fence_timeout_s)
        self.report.fence_seconds = r.seconds
        return True, (
            f"fence {r.token[:8]} applied on {r.partitions} partitions in {r.seconds:.2f} s: "
            "every change committed before it is in the new database"
        )

    def gate_verify(self) -> tuple[bool, str]:
        from crossfade.verify.run import Verifier

        t0 = time.monotonic()
        rep = Verifier(
            self.settings, fence_timeout=self.cfg.fence_timeout_s, **self.verify_options
        ).run()
        self.report.verify_seconds = time.monotonic() - t0
        rows = sum(t.source_rows for t in rep.tables)
        if rep.match:
            return (
                True,
                f"{len(rep.tables)} table(s), {rows} rows: zero mismatches ({rep.seconds:.1f} s)",
            )
        bad = [
            f"{t.name}: {t.missing} missing, {t.extra} extra, {t.different} different"
            + (f", {t.unsettled} unsettled" if t.unsettled else "")
            + (f" ({t.error})" if t.error else "")
            for t in rep.tables
            if not t.match
        ]
        return False, "mismatches: " + "; ".join(bad)

    def gate_flip(self) -> tuple[bool, str]:
        c = self.cfg
        if self.dry_run:
            what = [
                n
                for n, v in (
                    ("flip_sql", c.flip_sql),
                    ("flip_command", c.flip_command),
                    ("flip_http", c.flip_http),
                )
                if v
            ]
            return (
                True,
                f"skipped (dry run); would run: {', '.join(what) or 'nothing configured (manual flip)'}",
            )
        done = []
        if c.flip_sql:
            _run_sql(self.settings, "target", c.flip_sql)
            done.append("flip_sql ran on the new database")
        if c.flip_command:
            _run_command(c.flip_command, c.command_timeout_s)
            done.append(f"flip_command {c.flip_command[0]} succeeded")
        if c.flip_http:
            status = _post(
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

    def gate_fallback(self) -> tuple[bool, str]:
        from crossfade.cutover.fallback import reversed_for

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
        q = sql.SQL("SELECT count(*) FROM {}.offsets WHERE group_id = %s").format(
            sql.Identifier(rev.sync.bookkeeping_schema)
        )
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
                try:
                    row = legacy.execute(q, (rev.sync.group_id,)).fetchone()
                except psycopg.errors.UndefinedTable:
                    row = None
                if row and row[0]:
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
                _run_command(self.cfg.unfreeze_command, self.cfg.command_timeout_s)
                done.append("unfreeze_command succeeded")
            except CrossfadeError as exc:
                errors.append(str(exc))
        if self.cfg.unfreeze_sql:
            try:
                _run_sql(self.settings, "source", self.cfg.unfreeze_sql)
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
        self._audit("unfreeze", ok, detail, time.monotonic() - t0)
        if self.on_gate:
            self.on_gate(GateResult("unfreeze", ok, detail, time.monotonic() - t0))
        if ok:
            self.frozen = False

    # -- run ----------------------------------------------------------------------------------
    def run(self) -> CutoverReport:
        with connect(self.settings.target, "target") as tgt:
            ensure_schema(tgt, self.bk)
        for g in self.gates:
            metrics.set_gate(g, None)
        steps: dict[str, Callable[[], tuple[bool, str]]] = {
            "sync_healthy": self.gate_sync_healthy,
            "checkpoint": self.gate_checkpoint,
            "freeze": self.gate_freeze,
            "fence": self.gate_fence,
            "verify": self.gate_verify,
            "flip": self.gate_flip,
            FALLBACK_GATE: self.gate_fallback,
        }
        try:
            for name in self.gates:
                t0 = time.monotonic()
                try:
                    ok, detail = steps[name]()
                except CrossfadeError as exc:
                    ok, detail = False, str(exc)
                except Exception as exc:  # noqa: BLE001 - any failure is a red gate, audited, and unfreezes
                    text = str(exc).strip().splitlines()
                    ok, detail = False, f"{type(exc).__name__}: {text[0] if text else ''}"
                res = GateResult(
                    name,
                    ok,
                    detail,
                    time.monotonic() - t0,
                    skipped=self.dry_run and name in ("freeze", "flip"),
                )
                self.report.gates.append(res)
                metrics.set_gate(name, ok)
                self._audit(name, ok, detail, res.seconds)
                if self.on_gate:
                    self.on_gate(res)
                if not ok:
                    break
        finally:
            # after the flip traffic is on the new system: a later red gate (fallback) must not
            # let the legacy application write again
            flipped = any(g.name == "flip" and g.ok and not g.skipped for g in self.report.gates)
            if self.frozen and not self.report.go and not flipped:
                self.unfreeze()
        failed = next((g.name for g in self.report.gates if not g.ok), None)
        decision = ("GO" if self.report.go else f"NO GO at {failed or 'an interrupted run'}") + (
            " (dry run)" if self.dry_run else ""
        )
        exp = self.report.expected_downtime_seconds
        if exp is not None:
            decision += f"; expected write downtime {exp:.1f} s (fence + verify)"
        self._audit("decision", self.report.go, decision, 0.0)
        return self.report


def cutover(settings: Settings, *, dry_run: bool = False, **kw: Any) -> CutoverReport:
    return Cutover(settings, dry_run=dry_run, **kw).run()
