"""The optional gates' pure parts: config, steps, reconciliation, the model's judgement of the
recorded evidence, redaction (the integration tests in tests/integration/test_cutover_checks.py
run them for real)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from crossfade.config import Settings, public_view, secret_values
from crossfade.cutover import checks, gate_model
from crossfade.cutover.gates import steps_for
from crossfade.target.store import AuditRow
from tests.unit.test_gate_model import _ctx, _settings


def test_values_compare_across_types_and_rows_are_named() -> None:
    assert checks.plain(3) == checks.plain(Decimal("3.00")) == checks.plain(3.0) == 3
    assert checks.plain(Decimal("12.50")) == "12.5"
    legacy = [(2024, 3, "12.5"), (2025, 1, 4)]
    new = [(2024, 3, "12.5"), (2025, 2, 4), (2026, 1, 1)]
    assert checks.diff_rows(legacy, new) == [
        {"row": 2, "legacy": (2025, 1, 4), "new": (2025, 2, 4)},
        {"row": 3, "legacy": None, "new": (2026, 1, 1)},
    ]
    assert checks.diff_rows(legacy, list(legacy)) == []


def test_each_gate_needs_exactly_one_way_and_steps_follow_the_config() -> None:
    with pytest.raises(ValueError, match="exactly one of `command` or `sql`"):
        _settings(backup={"command": ["true"], "sql": "SELECT 1"})
    with pytest.raises(ValueError, match="exactly one of `sql` or `http`"):
        _settings(smoke=[{"name": "login"}])
    with pytest.raises(ValueError, match="http:// or https://"):
        _settings(smoke=[{"name": "x", "http": "file:///etc/passwd"}])
    plain = _settings()
    assert steps_for(plain.cutover) == (
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
    assert not {"backup", "reconcile", "smoke"} & set(gate_model.enabled_gates(plain))
    full = _settings(
        backup={"command": ["true"]},
        reconcile=[{"name": "n", "legacy_sql": "SELECT 1", "new_sql": "SELECT 1"}],
        smoke=[{"name": "s", "sql": "SELECT true"}],
    )
    steps = steps_for(full.cutover)
    assert steps.index("backup") < steps.index("verify_live") < steps.index("freeze")
    assert steps.index("row_counts") < steps.index("reconcile") < steps.index("verify")
    assert steps.index("sequences") < steps.index("smoke") == steps.index("flip") - 1
    assert set(gate_model.enabled_gates(full)) >= {"backup", "reconcile", "smoke"}
    late = _settings(backup={"sql": "SELECT 'snap'", "after_freeze": True})
    assert steps_for(late.cutover).index("backup") == steps_for(late.cutover).index("freeze") + 1


def test_secrets_of_the_checks_never_show() -> None:
    s = _settings(
        backup={"command": ["pg_dump", "--dbname=postgresql://bk:hunter22@db/crm", "-Fc"]},
        smoke=[{"name": "api", "http": "https://app.example/health?token=tok-secret-1"}],
    )
    shown = json.dumps(public_view(s))
    assert "hunter22" not in shown and "tok-secret-1" not in shown
    assert {"hunter22", "tok-secret-1"} <= {
        x for v in secret_values(s) for x in (v, v.split("=")[-1])
    }
    assert "hunter22" not in checks.shown_command(s.cutover.backup.command)  # type: ignore[union-attr]


def test_backup_command_output_is_the_evidence_and_failures_say_why() -> None:
    ok = checks._backup_command(
        [sys.executable, "-c", "print('log'); print('  snapshot-42  ')"], 10
    )
    assert ok.ok and ok.evidence["output"] == "snapshot-42", ok
    bad = checks._backup_command(
        [sys.executable, "-c", "import sys; sys.exit('disk full on postgresql://a:pw123456@h/x')"],
        10,
    )
    assert not bad.ok and bad.evidence["exit"] == 1 and "disk full" in bad.detail
    assert "pw123456" not in bad.detail + json.dumps(bad.evidence)
    missing = checks._backup_command(["/nonexistent/backup-tool"], 10)
    assert not missing.ok and "not found" in missing.detail


def _audit(gate: str, ok: bool, age: float, **evidence: Any) -> AuditRow:
    return AuditRow("run1", datetime.now(UTC), "me", False, gate, ok, "detail", 0.5, evidence, age)


@pytest.mark.parametrize(
    ("row", "state"),
    [
        (None, "unknown"),
        (_audit("reconcile", True, 5), "ok"),
        (_audit("reconcile", False, 5), "failed"),
        (_audit("reconcile", True, 99_999), "stale"),
        (_audit("reconcile", True, 5, skipped=True), "unknown"),
    ],
)
def test_the_model_reads_the_recorded_evidence(row: AuditRow | None, state: str) -> None:
    s = _settings(reconcile=[{"name": "n", "legacy_sql": "SELECT 1", "new_sql": "SELECT 1"}])
    (r,) = gate_model.evaluate_in(_ctx(s, **{"audit:reconcile": row}), ["reconcile"], publish=False)
    assert r.state == state, r
    if row is not None:
        assert r.evidence["run"] == "run1" and r.age_s == row.age_s


def test_a_gate_not_configured_is_not_evaluated() -> None:
    s: Settings = _settings()
    names = [g.gate for g in gate_model.unreadable("down", publish=False, settings=s)]
    assert "backup" not in names and "smoke" not in names and "verify" in names


def test_the_forecast_is_every_step_between_freeze_and_flip() -> None:
    from crossfade.cutover.gates import Cutover

    s = _settings(
        backup={"command": ["true"], "after_freeze": True},
        smoke=[{"name": "s", "sql": "SELECT true"}],
    )
    c = Cutover(s, dry_run=True)
    assert c.spans.order == [
        "freeze",
        "backup",
        "fence",
        "row_counts",
        "verify",
        "target_schema",
        "sequences",
        "smoke",
        "flip",
    ]
    c.report.downtime_steps = {"fence": 1.0, "row_counts": 0.25}
    assert c.report.expected_downtime_seconds is None  # not past the verify yet
    c.report.downtime_steps["verify"] = 2.0
    assert c.report.expected_downtime_seconds == 3.25
    assert c.report.downtime_parts() == "fence 1.0 s + row_counts 0.2 s + verify 2.0 s"
