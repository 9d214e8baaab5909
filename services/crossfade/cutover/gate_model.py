"""The go/no-go gates, defined once (DESIGN decision 8).

``crossfade cutover`` (and ``--dry-run``), the console, ``crossfade status`` and the metrics
evaluate these definitions with these queries; nothing else decides whether a gate is green.

Every gate is read from evidence recorded in the bookkeeping schema of the new database (or, for
counts and the replication slot, read now: :mod:`crossfade.cutover.gate_evidence` holds every
query), and every result says when it was evaluated, from
what evidence and how old that evidence is. Its state is one of:

``ok``       green: the evidence is there, fresh, and says yes;
``failed``   red: the evidence says no;
``stale``    the evidence said yes, but it is older than its freshness limit (or than something
             that voids it: a mapping change, a rewind, sync stopping): never green;
``unknown``  there is no evidence yet (nothing ran), or it cannot be read: never green.

The gates, in the order the cutover takes them:

``sync_alive``    capture and every sync worker send heartbeats (``<bookkeeping>.heartbeats``), the
                  replication slot streams, every partition is held by a running worker, no worker
                  holds nothing, consumer lag is not growing, no rewind replay is unfinished;
``dead_letters``  no dead letter is open without an acknowledgement (``crossfade dlq ack``), counted
                  by :func:`crossfade.target.store.ledger_counts` (the one count);
``fence``         the latest fence (``<bookkeeping>.fence_runs``: CLI, console, cutover, verify) went
                  through every partition within ``cutover.fence_fresh_s``;
``row_counts``    identity tables: as many rows on both sides; mapped tables: per source table
                  ``rows = mapped + dead-lettered + filtered + deferred`` (the ledger), per target
                  table ``rows = mapped rows of its sources - merged duplicates``;
``verify``        the latest verify covering every table passed, within ``cutover.verify_fresh_s``,
                  after the last mapping change and the last rewind (inside a cutover's freeze:
                  the verify of the keys changed since its full verify, :mod:`crossfade.verify.delta`);
``target_schema`` every identity-mapped target table carries legacy's definition: defaults,
                  sequences, identity, NOT NULL, CHECK/UNIQUE/EXCLUDE constraints, primary key,
                  indexes, foreign keys between migrated tables (:mod:`crossfade.cutover.schema`).

Optional gates, evaluated only when configured (``cutover.backup``, ``cutover.reconcile``,
``cutover.smoke``): the cutover runs them (:mod:`crossfade.cutover.checks`) and records their
evidence in ``<bookkeeping>.cutover_audit``; the model reads the newest record:

``backup``        the backup command (or SQL) succeeded, within ``cutover.backup.fresh_s``;
``reconcile``     the control totals (query pairs, legacy and new) were equal, within
                  ``cutover.verify_fresh_s`` (a dry run's totals that differed while writes went
                  on are ``unknown``: they are compared inside the freeze);
``smoke``         the smoke checks against the new system passed, within ``cutover.verify_fresh_s``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg

from crossfade import metrics
from crossfade.config import Settings
from crossfade.cutover import schema
from crossfade.cutover.alive import alive
from crossfade.cutover.gate_evidence import Context
from crossfade.db import connect
from crossfade.target.store import last_dlq_ack, mapping_fingerprint

OK, FAILED, STALE, UNKNOWN = "ok", "failed", "stale", "unknown"


@dataclass
class GateResult:
    """One gate, evaluated: its state, why, and the evidence it was read from."""

    gate: str
    title: str
    state: str
    detail: str
    evaluated_at: datetime
    evidence: dict[str, Any] = field(default_factory=dict)
    evidence_at: datetime | None = None
    """When the evidence was made (a fence's end, a verify's end, the oldest heartbeat read)."""
    age_s: float | None = None
    fresh_s: float | None = None
    """The freshness limit the evidence's age was held against (None: read now)."""
    action: str | None = None
    """What the console offers to run for it (``fence``)."""

    @property
    def ok(self) -> bool:
        return self.state == OK

    def as_dict(self) -> dict[str, Any]:
        return {
            "gate": self.gate,
            "title": self.title,
            "state": self.state,
            "detail": self.detail,
            "evaluated_at": self.evaluated_at.isoformat(),
            "evidence": self.evidence,
            "evidence_at": self.evidence_at.isoformat() if self.evidence_at else None,
            "age_s": round(self.age_s, 1) if self.age_s is not None else None,
            "fresh_s": self.fresh_s,
            "action": self.action,
        }


@dataclass(frozen=True)
class GateDef:
    name: str
    title: str
    how: str
    """How it is evaluated."""
    stale_when: str
    """What makes its evidence stale (empty: read anew at every evaluation)."""
    evaluate: Callable[[Context], GateResult]
    action: str | None = None
    enabled: Callable[[Settings], bool] | None = None
    """Whether the configuration asks for this gate (None: always)."""

    def on(self, settings: Settings) -> bool:
        return self.enabled is None or self.enabled(settings)


def _result(ctx: Context, d: GateDef, state: str, detail: str, **kw: Any) -> GateResult:
    return GateResult(d.name, d.title, state, detail, ctx.now, action=d.action, **kw)


# -- sync_alive ----------------------------------------------------------------------------------
def _eval_alive(ctx: Context) -> GateResult:
    d = GATES_BY_NAME["sync_alive"]
    a = alive(ctx)
    evidence = {
        "heartbeats": [
            {
                "worker": h.worker_id,
                "role": h.role,
                "age_s": round(h.age_s, 1),
                "partitions": h.partitions,
                "lag": h.lag,
            }
            for h in ctx.heartbeats
        ],
        "slot_active": (ctx.slot or {}).get("active"),
    }
    kw: dict[str, Any] = {"evidence": evidence, "fresh_s": ctx.cfg.alive_fresh_s}
    if a.oldest_s is not None:
        kw["age_s"] = a.oldest_s
        kw["evidence_at"] = datetime.fromtimestamp(ctx.now.timestamp() - a.oldest_s, UTC)
    if a.problems:
        return _result(ctx, d, FAILED, "; ".join(a.problems), **kw)
    return _result(
        ctx,
        d,
        OK,
        f"capture streams; {a.workers} sync worker(s) hold all {a.partitions} partition(s), "
        f"consumer lag {a.lag} record(s) (heartbeats at most {a.oldest_s or 0:.0f} s old)",
        **kw,
    )


# -- dead_letters --------------------------------------------------------------------------------
def _eval_dead_letters(ctx: Context) -> GateResult:
    d = GATES_BY_NAME["dead_letters"]
    c = ctx.ledger
    evidence = c.as_dict()
    last = last_dlq_ack(ctx.tgt, ctx.bk)
    if last is not None:
        evidence["last_ack"] = {
            "who": last.who,
            "at": last.at.isoformat(),
            "acknowledged": last.acknowledged,
            "note": last.note,
        }
    also = ", ".join(
        f"{n} {what}" for n, what in ((c.deferred, "deferred"), (c.filtered, "filtered")) if n
    )
    also = f" ({also})" if also else ""
    if c.unacknowledged:
        held = f" and {c.held} change(s) held behind them" if c.held else ""
        return _result(
            ctx,
            d,
            FAILED,
            f"{c.dead_letters} open dead letter(s){held}, {c.unacknowledged} not acknowledged: "
            "fix and `crossfade dlq replay` them, or `crossfade dlq ack --note WHY`" + also,
            evidence=evidence,
        )
    if c.dead_letters or c.held:
        by = f" (last by {last.who}: {last.note or 'no note'})" if last else ""
        return _result(
            ctx,
            d,
            OK,
            f"{c.dead_letters + c.held} open dead letter(s), all acknowledged{by}{also}",
            evidence=evidence,
        )
    return _result(ctx, d, OK, "no open dead letters" + also, evidence=evidence)


# -- fence ---------------------------------------------------------------------------------------
def _eval_fence(ctx: Context) -> GateResult:
    d = GATES_BY_NAME["fence"]
    fresh = ctx.cfg.fence_fresh_s
    done = [f for f in ctx.fences if f.finished_at is not None]
    running = [f for f in ctx.fences if f.finished_at is None and f is ctx.fences[0]]
    note = f"; fence {running[0].token[:8]} ({running[0].via}) is running" if running else ""
    if not done:
        return _result(
            ctx,
            d,
            UNKNOWN,
            "no fence recorded yet: run `crossfade fence` (or the console's) to prove lag zero"
            + note,
            fresh_s=fresh,
        )
    f = done[0]
    kw: dict[str, Any] = {
        "evidence": {
            "fence": f.token[:8],
            "via": f.via,
            "who": f.who,
            "partitions": f.partitions,
            "seconds": round(f.seconds, 3) if f.seconds is not None else None,
            "finished_at": f.finished_at.isoformat() if f.finished_at else None,
        },
        "evidence_at": f.finished_at,
        "age_s": f.age_s,
        "fresh_s": fresh,
    }
    when = f"fence {f.token[:8]} ({f.via}, {f.age_s or 0:.0f} s ago)"
    if not f.ok:
        return _result(ctx, d, FAILED, f"{when} failed: {f.detail}{note}", **kw)
    if (f.age_s or 0) > fresh:
        return _result(
            ctx,
            d,
            STALE,
            f"{when} is older than {fresh:g} s: lag was zero then, not proven now; fence again"
            + note,
            **kw,
        )
    a = alive(ctx)
    if not a.sync_running:
        return _result(
            ctx,
            d,
            STALE,
            f"{when} went through, but sync is not running now: changes since are not applied",
            **kw,
        )
    return _result(
        ctx,
        d,
        OK,
        f"{when} applied on all {f.partitions} partitions in {f.seconds or 0:.2f} s: every "
        "change committed before it is in the new database" + note,
        **kw,
    )


# -- row_counts ----------------------------------------------------------------------------------
def _eval_row_counts(ctx: Context) -> GateResult:
    d = GATES_BY_NAME["row_counts"]
    counts = ctx.counts()
    evidence = {"tables": counts}
    off: list[str] = []
    unknown: list[str] = []
    for c in counts:
        if c["match"] is None:
            unknown.append(c["table"])
        elif not c["match"]:
            if c["kind"] == "identity":
                off.append(f"{c['table']} {c['legacy_rows']} legacy / {c['new_rows']} new")
            elif c["kind"] == "source":
                off.append(
                    f"{c['table']} {c['legacy_rows']} legacy rows != {c['mapped']} mapped + "
                    f"{c['dead_lettered']} dead-lettered + {c['filtered']} filtered + "
                    f"{c['deferred']} deferred"
                )
            else:
                off.append(f"{c['table']} {c['new_rows']} rows, {c['expected']} expected")
    if off:
        return _result(
            ctx,
            d,
            FAILED,
            "differ: "
            + "; ".join(off)
            + " (while writes are in flight they differ; after a fence with writes stopped they must not)",
            evidence=evidence,
        )
    if unknown:
        return _result(
            ctx,
            d,
            UNKNOWN,
            f"not counted exactly: {', '.join(unknown)} (missing, or estimated above a million rows)",
            evidence=evidence,
        )
    n = sum(c.get("legacy_rows") or c.get("new_rows") or 0 for c in counts if c["kind"] != "target")
    return _result(
        ctx,
        d,
        OK,
        f"{len(counts)} table(s) agree ({n} legacy rows"
        + (", mapped tables by their accounting" if ctx.mapped_sources else "")
        + ")",
        evidence=evidence,
    )


# -- verify --------------------------------------------------------------------------------------
def _eval_verify(ctx: Context) -> GateResult:
    d = GATES_BY_NAME["verify"]
    fresh = ctx.cfg.verify_fresh_s
    v = ctx.latest_verify()
    if v is None:
        return _result(
            ctx,
            d,
            UNKNOWN,
            "no verify of every table recorded yet: run `crossfade verify`",
            fresh_s=fresh,
        )
    kw: dict[str, Any] = {
        "evidence": {
            "run": v["id"],
            "ok": v["ok"],
            "mismatched": v["mismatched"],
            "missing": v["missing"],
            "extra": v["extra"],
            "by": v["created_by"],
            "finished_at": v["finished_at"].isoformat(),
            "delta_of": v.get("delta_of"),
        },
        "evidence_at": v["finished_at"],
        "age_s": v["age_s"],
        "fresh_s": fresh,
    }
    when = f"verify #{v['id']} ({v['age_s']:.0f} s ago)"
    if v.get("delta_of") is not None:
        when = f"verify #{v['id']} of the rows changed since verify #{v['delta_of']} ({v['age_s']:.0f} s ago)"
    if not v["ok"]:
        return _result(
            ctx,
            d,
            FAILED,
            f"{when} found {v['missing']} missing, {v['extra']} extra and {v['mismatched']} "
            "differing row(s): fix, then verify again",
            **kw,
        )
    changed = ctx.meta.get("mapping_changed_at")
    rewind = ctx.last_rewind()
    why = None
    if v["age_s"] > fresh:
        why = f"older than {fresh:g} s"
    elif v["mapping_hash"] and v["mapping_hash"] != mapping_fingerprint(ctx.settings.mapping):
        why = "made with another mapping than the current one"
    elif changed and datetime.fromisoformat(changed) > v["started_at"]:
        why = f"older than the mapping sync runs with (changed {changed})"
    elif rewind is not None and rewind > v["started_at"]:
        why = f"older than the last rewind ({rewind.isoformat()})"
    if why:
        return _result(ctx, d, STALE, f"{when} passed but is {why}: verify again", **kw)
    return _result(ctx, d, OK, f"{when} passed: every table matches", **kw)


# -- target_schema -------------------------------------------------------------------------------
def _eval_target_schema(ctx: Context) -> GateResult:
    d = GATES_BY_NAME["target_schema"]
    if ctx.src is None:
        return _result(ctx, d, UNKNOWN, "the legacy database does not answer: nothing to compare")
    report = schema.compare(ctx.settings, ctx.src, ctx.tgt)
    ok, detail = schema.summary(report)
    evidence = {"tables": [t.as_dict() for t in report]}
    return _result(ctx, d, OK if ok else FAILED, detail, evidence=evidence)


# -- backup, reconcile, smoke: run and recorded by the cutover ------------------------------------
def _eval_recorded(ctx: Context, name: str, fresh: float, never: str) -> GateResult:
    """A gate whose evidence is the newest ``cutover_audit`` row of the step of that name."""
    d = GATES_BY_NAME[name]
    a = ctx.audit(name)
    if a is None:
        return _result(ctx, d, UNKNOWN, never, fresh_s=fresh)
    kw: dict[str, Any] = {
        "evidence": {
            "run": a.run_id,
            "who": a.who,
            "dry_run": a.dry_run,
            "seconds": round(a.seconds, 3) if a.seconds is not None else None,
            **(a.evidence or {}),
        },
        "evidence_at": a.at,
        "age_s": a.age_s,
        "fresh_s": fresh,
    }
    when = f"cutover run {a.run_id}{' (dry run)' if a.dry_run else ''}, {a.age_s:.0f} s ago"
    if (a.evidence or {}).get("skipped"):
        return _result(ctx, d, UNKNOWN, f"not decided in {when}: {a.detail}", **kw)
    if not a.ok:
        return _result(ctx, d, FAILED, f"{when}: {a.detail}", **kw)
    if a.age_s > fresh:
        return _result(
            ctx, d, STALE, f"{when} passed but is older than {fresh:g} s: {a.detail}", **kw
        )
    return _result(ctx, d, OK, f"{when}: {a.detail}", **kw)


def _eval_backup(ctx: Context) -> GateResult:
    b = ctx.cfg.backup
    return _eval_recorded(
        ctx,
        "backup",
        b.fresh_s if b is not None else 0.0,
        "no backup recorded yet: `crossfade cutover` (or --dry-run) runs cutover.backup",
    )


def _eval_reconcile(ctx: Context) -> GateResult:
    return _eval_recorded(
        ctx,
        "reconcile",
        ctx.cfg.verify_fresh_s,
        "control totals not compared yet: `crossfade cutover` (or --dry-run) runs cutover.reconcile",
    )


def _eval_smoke(ctx: Context) -> GateResult:
    return _eval_recorded(
        ctx,
        "smoke",
        ctx.cfg.verify_fresh_s,
        "no smoke check run yet: `crossfade cutover` (or --dry-run) runs cutover.smoke",
    )


GATE_DEFS: tuple[GateDef, ...] = (
    GateDef(
        "sync_alive",
        "Capture and sync running",
        "heartbeats of capture and of every sync worker, the replication slot, the partitions "
        "each worker holds, its consumer lag, unfinished rewind replays",
        "a heartbeat older than cutover.alive_fresh_s is a stopped process",
        _eval_alive,
    ),
    GateDef(
        "dead_letters",
        "No unacknowledged dead letters",
        "open dead letters and held changes in the ledger against crossfade dlq ack",
        "",
        _eval_dead_letters,
    ),
    GateDef(
        "fence",
        "Lag proven zero (fence)",
        "the latest fence run (CLI, console, cutover, verify) went through every partition",
        "older than cutover.fence_fresh_s, or sync not running since",
        _eval_fence,
        action="fence",
    ),
    GateDef(
        "row_counts",
        "Row counts match",
        "legacy and new row counts; mapped tables by their accounting (mapped + dead-lettered + "
        "filtered + deferred per source, mapped - merged per target)",
        "",
        _eval_row_counts,
    ),
    GateDef(
        "verify",
        "Verify passed",
        "the latest verify that covered every table",
        "older than cutover.verify_fresh_s, the last mapping change or the last rewind",
        _eval_verify,
    ),
    GateDef(
        "target_schema",
        "Target tables defined as in legacy",
        "each identity-mapped table's catalog on both sides: defaults, sequences, identity, "
        "constraints, indexes, foreign keys between migrated tables",
        "",
        _eval_target_schema,
    ),
    GateDef(
        "backup",
        "Backup taken",
        "the backup command (or SQL) of cutover.backup, run by the cutover before the freeze; "
        "its output (a snapshot id) is the evidence",
        "older than cutover.backup.fresh_s",
        _eval_backup,
        enabled=lambda s: s.cutover.backup is not None,
    ),
    GateDef(
        "reconcile",
        "Control totals reconciled",
        "each query pair of cutover.reconcile (legacy, new) returned equal rows, inside the freeze",
        "older than cutover.verify_fresh_s",
        _eval_reconcile,
        enabled=lambda s: bool(s.cutover.reconcile),
    ),
    GateDef(
        "smoke",
        "Smoke checks of the new system",
        "each SQL or HTTP check of cutover.smoke passed, the last step before the flip",
        "older than cutover.verify_fresh_s",
        _eval_smoke,
        enabled=lambda s: bool(s.cutover.smoke),
    ),
)
GATES_BY_NAME = {g.name: g for g in GATE_DEFS}
GATE_NAMES = tuple(GATES_BY_NAME)


def evaluate_in(
    ctx: Context, names: tuple[str, ...] | list[str] | None = None, *, publish: bool = True
) -> list[GateResult]:
    """Evaluate the gates (all, in order, or ``names``) from ``ctx``'s evidence. A gate whose
    evidence cannot be read is ``unknown`` with the reason. ``publish``: set the metrics."""
    out = []
    for name in names or enabled_gates(ctx.settings):
        d = GATES_BY_NAME[name]
        try:
            r = d.evaluate(ctx)
        except psycopg.Error as exc:
            msg = str(exc).strip().splitlines()
            r = _result(ctx, d, UNKNOWN, f"cannot read its evidence: {msg[0] if msg else exc}")
            with contextlib.suppress(psycopg.Error):
                if not ctx.tgt.autocommit:
                    ctx.tgt.rollback()
        out.append(r)
        if publish:
            metrics.set_gate_state(r.gate, r.state, r.age_s)
    if publish:
        with contextlib.suppress(psycopg.Error):
            metrics.set_ledger_counts(ctx.ledger)
    return out


def enabled_gates(settings: Settings) -> tuple[str, ...]:
    """The gates this configuration asks for, in order (the optional ones only when configured)."""
    return tuple(d.name for d in GATE_DEFS if d.on(settings))


def unreadable(
    reason: str, *, publish: bool = True, settings: Settings | None = None
) -> list[GateResult]:
    """Every gate ``unknown`` because its evidence cannot be read at all (the new database does
    not answer): zero counted from nothing is not "none". ``settings``: only the gates it asks
    for (None: the gates every configuration has)."""
    now = datetime.now(UTC)
    out = [
        GateResult(
            d.name, d.title, UNKNOWN, f"cannot read its evidence: {reason}", now, action=d.action
        )
        for d in GATE_DEFS
        if (d.on(settings) if settings is not None else d.enabled is None)
    ]
    if publish:
        for r in out:
            metrics.set_gate_state(r.gate, r.state, None)
    return out


@contextlib.contextmanager
def context(settings: Settings, **kw: Any) -> Iterator[Context]:
    """A :class:`Context` on fresh autocommit connections to both databases."""
    with (
        connect(settings.source, "source") as src,
        connect(settings.target, "target") as tgt,
    ):
        yield Context(settings, src, tgt, **kw)


def evaluate(
    settings: Settings, names: tuple[str, ...] | list[str] | None = None, **kw: Any
) -> list[GateResult]:
    """Open connections, evaluate, close (the cutover's and status's way in)."""
    with context(settings, **kw) as ctx:
        return evaluate_in(ctx, names)
