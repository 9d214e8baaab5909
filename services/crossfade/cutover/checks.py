"""The seeds' last gates, run by ``crossfade cutover``: ``backup``, ``reconcile`` and ``smoke``.

Each is optional (configured under ``cutover.``, :class:`crossfade.config.BackupGate`,
:class:`~crossfade.config.Reconciliation`, :class:`~crossfade.config.SmokeCheck`) and returns a
:class:`Check`: whether it passed, one line saying why, and the evidence the cutover records in
its audit log (``cutover_audit.evidence``), which the gate model then reads
(:mod:`crossfade.cutover.gate_model`). Every text that leaves here is redacted
(:func:`crossfade.redact.redact`): a command line or a URL may carry a password or a token.

Failure behaviour: a check never raises for what it checks (a command that fails, a query that
errs, totals that differ, an HTTP error are a failed :class:`Check`); it raises only for a
database crossfade itself cannot reach (:class:`~crossfade.errors.CrossfadeError`), which the
cutover also turns into a red step.
"""

from __future__ import annotations

import decimal
import json
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import psycopg

from crossfade.config import BackupGate, Reconciliation, Settings, SmokeCheck, redact_arg
from crossfade.db import connect
from crossfade.redact import redact

EVIDENCE_CHARS = 200
"""What is kept of a command's output, a query's value or an error."""
DIFF_ROWS = 10
"""Differing rows of a reconciliation shown in the detail and kept in the evidence."""


@dataclass
class Check:
    """One gate's run: ``ok``, one line ``detail`` and JSON-able ``evidence`` (all redacted)."""

    ok: bool
    detail: str
    evidence: dict[str, Any] = field(default_factory=dict)


def _trim(text: str, n: int = EVIDENCE_CHARS) -> str:
    text = redact(" ".join(str(text).split()))
    return text if len(text) <= n else text[: n - 3] + "..."


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return _trim(lines[0] if lines else type(exc).__name__)


def shown_command(argv: list[str]) -> str:
    """A command line as it may be shown: every argument redacted (a DSN's password, a token)."""
    return _trim(" ".join(redact_arg(a) for a in argv), 400)


# -- backup --------------------------------------------------------------------------------------
def run_backup(settings: Settings, cfg: BackupGate | None) -> Check:
    """Run the backup command (or SQL); ok on exit 0 (a true first value); the evidence is the
    last line of its output (or that value), trimmed and redacted. ``cfg`` None: failed."""
    if cfg is None:
        return Check(False, "no cutover.backup is configured")
    if cfg.command:
        return _backup_command(cfg.command, cfg.timeout_s)
    assert cfg.sql is not None
    which = "source" if cfg.database == "legacy" else "target"
    db = settings.source if which == "source" else settings.target
    ev: dict[str, Any] = {"sql_on": cfg.database}
    try:
        with connect(db, which) as conn:
            conn.execute(
                "SELECT set_config('statement_timeout', %s, false)", (f"{cfg.timeout_s}s",)
            )
            row = conn.execute(cfg.sql).fetchone()
    except psycopg.Error as exc:
        ev["error"] = _first_line(exc)
        return Check(False, f"backup SQL on the {cfg.database} database failed: {ev['error']}", ev)
    value = row[0] if row else None
    if value is None or value is False:
        ev["value"] = None if value is None else False
        return Check(
            False,
            f"backup SQL on the {cfg.database} database returned "
            + ("no row" if row is None else repr(value))
            + ": no backup proven",
            ev,
        )
    ev["value"] = _trim(str(value))
    return Check(True, f"backup proven by SQL on the {cfg.database} database: {ev['value']}", ev)


def _backup_command(argv: list[str], timeout: float) -> Check:
    ev: dict[str, Any] = {"command": shown_command(argv)}
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        return Check(False, f"backup command {argv[0]!r} not found", ev)
    except subprocess.TimeoutExpired:
        return Check(False, f"backup command {argv[0]!r} ran longer than {timeout:g} s", ev)
    ev["exit"] = p.returncode
    out = (p.stdout or "").strip().splitlines()
    err = (p.stderr or "").strip().splitlines()
    if p.returncode != 0:
        last = (err or out or [""])[-1]
        ev["error"] = _trim(last)
        return Check(
            False,
            f"backup command {argv[0]!r} exited with {p.returncode}"
            + (f": {ev['error']}" if last else ""),
            ev,
        )
    ev["output"] = _trim(out[-1]) if out else ""
    return Check(
        True,
        f"backup command {argv[0]!r} succeeded"
        + (f": {ev['output']}" if ev["output"] else " (printed nothing)"),
        ev,
    )


# -- reconcile -----------------------------------------------------------------------------------
def plain(v: Any) -> Any:
    """A value as compared and recorded: numbers equal across types (``count`` is bigint on one
    side, ``numeric`` on the other: 3 == 3.0), the rest as text."""
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, int | float | decimal.Decimal):
        d = decimal.Decimal(str(v)).normalize()
        return int(d) if d == d.to_integral_value() else str(d)
    return str(v)


def diff_rows(legacy: list[tuple[Any, ...]], new: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """The row positions (1-based) whose values differ, both sides shown (None: no such row)."""
    out = []
    for i in range(max(len(legacy), len(new))):
        a = legacy[i] if i < len(legacy) else None
        b = new[i] if i < len(new) else None
        if a != b:
            out.append({"row": i + 1, "legacy": a, "new": b})
    return out


def _rows(settings: Settings, which: str, q: str) -> list[tuple[Any, ...]]:
    db = settings.source if which == "source" else settings.target
    with connect(db, which) as conn:
        return [tuple(plain(v) for v in r) for r in conn.execute(q).fetchall()]


def reconcile_one(settings: Settings, r: Reconciliation) -> dict[str, Any]:
    """Run one pair; ``{"name", "ok", "legacy_rows", "new_rows", "differ": [...], "error"}``.
    ``differ``: up to :data:`DIFF_ROWS` row positions whose values differ, both sides shown."""
    out: dict[str, Any] = {"name": r.name, "ok": False}
    try:
        legacy = _rows(settings, "source", r.legacy_sql)
    except psycopg.Error as exc:
        out["error"] = f"legacy query failed: {_first_line(exc)}"
        return out
    try:
        new = _rows(settings, "target", r.new_sql)
    except psycopg.Error as exc:
        out["error"] = f"new query failed: {_first_line(exc)}"
        return out
    out["legacy_rows"], out["new_rows"] = len(legacy), len(new)
    differ = diff_rows(legacy, new)
    out["ok"] = not differ
    out["differing_rows"] = len(differ)
    out["differ"] = [
        {k: _trim(json.dumps(v, default=str)) if k != "row" else v for k, v in d.items()}
        for d in differ[:DIFF_ROWS]
    ]
    if not differ:
        out["totals"] = _trim(json.dumps(legacy, default=str), 400)
    return out


def run_reconcile(settings: Settings, pairs: list[Reconciliation]) -> Check:
    """Every pair; ok when each pair's results are equal. The detail names each failing pair and
    its first differing rows (legacy vs new)."""
    results = [reconcile_one(settings, r) for r in pairs]
    bad = []
    for res in results:
        if res.get("error"):
            bad.append(f"{res['name']}: {res['error']}")
        elif not res["ok"]:
            rows = "; ".join(
                f"row {d['row']} legacy {d['legacy']} / new {d['new']}" for d in res["differ"][:3]
            )
            more = res["differing_rows"] - min(3, len(res["differ"]))
            bad.append(
                f"{res['name']}: {res['differing_rows']} row(s) differ ({rows}"
                + (f"; {more} more" if more > 0 else "")
                + ")"
            )
    ev = {"totals": results}
    if bad:
        return Check(False, "control totals differ: " + " | ".join(bad), ev)
    return Check(
        True,
        f"{len(results)} control total(s) equal: "
        + ", ".join(f"{r['name']} ({r['legacy_rows']} row(s))" for r in results),
        ev,
    )


# -- smoke ---------------------------------------------------------------------------------------
def smoke_one(settings: Settings, c: SmokeCheck) -> dict[str, Any]:
    """Run one smoke check: ``{"name", "ok", "kind", "detail"}`` (redacted)."""
    if c.sql is not None:
        return _smoke_sql(settings, c)
    return _smoke_http(c)


def _smoke_sql(settings: Settings, c: SmokeCheck) -> dict[str, Any]:
    out: dict[str, Any] = {"name": c.name, "kind": "sql", "ok": False}
    assert c.sql is not None
    try:
        with connect(settings.target, "target", autocommit=False) as conn:
            conn.execute("SELECT set_config('statement_timeout', %s, true)", (f"{c.timeout_s}s",))
            cur = conn.execute(c.sql)
            row = cur.fetchone() if cur.description else None
            if c.commit:
                conn.commit()
            else:
                conn.rollback()
    except psycopg.Error as exc:
        out["detail"] = f"failed: {_first_line(exc)}"
        return out
    value = row[0] if row else None
    if row is not None and (value is None or value is False):
        out["detail"] = f"returned {value!r}"
        return out
    out["ok"] = True
    out["detail"] = "ran" + (f", returned {_trim(str(value), 80)}" if row is not None else "")
    out["detail"] += "" if c.commit else " (rolled back)"
    return out


def _smoke_http(c: SmokeCheck) -> dict[str, Any]:
    assert c.http is not None
    url = c.http.get_secret_value()
    out: dict[str, Any] = {"name": c.name, "kind": "http", "ok": False, "url": _trim(url)}
    data = json.dumps(c.body).encode() if c.method == "POST" and c.body is not None else None
    req = urllib.request.Request(
        url, data=data, method=c.method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=c.timeout_s) as resp:  # noqa: S310 - http(s) only (validated)
            status = int(resp.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        out["detail"] = f"not reachable ({_trim(str(getattr(exc, 'reason', exc)), 120)})"
        return out
    out["status"] = status
    out["ok"] = status in c.expect_status
    out["detail"] = f"{c.method} answered HTTP {status}" + (
        "" if out["ok"] else f", expected {'/'.join(map(str, c.expect_status))}"
    )
    return out


def run_smoke(settings: Settings, checks: list[SmokeCheck]) -> Check:
    """Every smoke check, in order (all run, so the detail names every failure)."""
    results = [smoke_one(settings, c) for c in checks]
    bad = [f"{r['name']}: {r['detail']}" for r in results if not r["ok"]]
    ev = {"checks": results}
    if bad:
        return Check(False, "smoke check(s) failed against the new system: " + "; ".join(bad), ev)
    return Check(
        True,
        f"{len(results)} smoke check(s) passed: "
        + ", ".join(f"{r['name']} ({r['detail']})" for r in results),
        ev,
    )
