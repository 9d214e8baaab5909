"""The reverse capture's guard against a second snapshot of the new database into legacy: which
starts may snapshot (decisions only; the embedded-stack proof is in
tests/integration/test_fallback.py::test_fallback_second_snapshot_refused_without_resnapshot)."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from crossfade.capture import snapshot_guard
from crossfade.capture.snapshot_guard import AUDIT_GATE, SecondSnapshot, SnapshotGuard
from crossfade.config import Settings
from crossfade.mapping.inverse import reversed_for

AT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _settings() -> Settings:
    return Settings.model_validate(
        {
            "source": {"dsn": "postgresql://u:p@legacy/crm"},
            "target": {"dsn": "postgresql://u:p@new/crm"},
            "kafka": {"bootstrap_servers": "k:9092", "topic_prefix": "cf"},
            "tables": ["public.a"],
        }
    )


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What the databases say: the recorded snapshot (legacy), the flip's age (new), the audit."""
    w: dict[str, Any] = {"done": None, "flip_age": None, "audited": [], "roles": []}

    @contextlib.contextmanager
    def connect(db: Any, role: str) -> Any:
        w["roles"].append(role)
        yield object()

    class Audit:
        def __init__(self, settings: Settings, *_: Any) -> None:
            w["audit_schema"] = settings.sync.bookkeeping_schema

        def __enter__(self) -> Audit:
            return self

        def __exit__(self, *_: Any) -> None:
            pass

        def write(self, gate: str, ok: bool, detail: str, seconds: float) -> None:
            w["audited"].append((gate, ok, detail))

    monkeypatch.setattr(snapshot_guard, "connect", connect)
    monkeypatch.setattr(snapshot_guard, "snapshot_done", lambda conn, schema: w["done"])
    monkeypatch.setattr(snapshot_guard, "has_table", lambda conn, schema, t: True)
    monkeypatch.setattr(snapshot_guard, "last_flip_age_s", lambda conn, schema: w["flip_age"])
    monkeypatch.setattr(snapshot_guard, "AuditLog", Audit)
    return w


def _guard(resnapshot: bool = False) -> SnapshotGuard:
    fwd = _settings()
    rev, _ = reversed_for(fwd)
    return SnapshotGuard(rev, fwd, resnapshot=resnapshot)


def test_first_start_snapshots(world: dict[str, Any], tmp_path: Path) -> None:
    _guard().check(tmp_path / "offsets-e1.dat", "e1")
    assert world["roles"] == ["legacy"]


def test_restart_with_offsets_needs_no_check(world: dict[str, Any], tmp_path: Path) -> None:
    world["done"] = (AT, 3600.0)
    (tmp_path / "offsets-e1.dat").write_bytes(b"x")
    _guard().check(tmp_path / "offsets-e1.dat", "e1")
    _guard(resnapshot=True).check(tmp_path / "offsets-e1.dat", "e1")
    assert world["roles"] == [] and world["audited"] == []


def test_second_snapshot_refused_in_one_line(world: dict[str, Any], tmp_path: Path) -> None:
    world["done"] = (AT, 3600.0)
    world["flip_age"] = 7200.0  # the flip came before the snapshot: the same fallback
    with pytest.raises(SecondSnapshot) as exc:
        _guard().check(tmp_path / "offsets-e2.dat", "e2")
    msg = str(exc.value)
    assert "\n" not in msg
    assert "already snapshotted" in msg and "epoch e2" in msg and str(tmp_path) in msg
    assert "--resnapshot" in msg and "restore the state dir" in msg
    assert world["audited"] == []


def test_resnapshot_override_is_audited(world: dict[str, Any], tmp_path: Path) -> None:
    world["done"] = (AT, 3600.0)
    _guard(resnapshot=True).check(tmp_path / "offsets-e2.dat", "e2")
    [(gate, ok, detail)] = world["audited"]
    assert gate == AUDIT_GATE and ok and "--resnapshot" in detail
    assert world["audit_schema"] == "crossfade"  # the new database's audit log, not legacy's


def test_a_newer_flip_starts_a_new_fallback(world: dict[str, Any], tmp_path: Path) -> None:
    world["done"] = (AT, 3600.0)
    world["flip_age"] = 60.0  # a cutover flipped after the recorded snapshot: legacy froze again
    _guard().check(tmp_path / "offsets-e3.dat", "e3")
    assert world["audited"] == []


def test_status_describes_the_recorded_snapshot(world: dict[str, Any]) -> None:
    assert _guard().describe()["completed_at"] is None
    assert "first fallback start snapshots" in str(_guard().describe()["next"])
    world["done"] = (AT, 3600.0)
    world["flip_age"] = 7200.0
    d = _guard().describe()
    assert d["completed_at"] == AT.isoformat() and d["age_s"] == 3600.0
    assert "refuses to snapshot again unless --resnapshot" in str(d["next"])
    world["flip_age"] = 60.0
    assert "snapshots afresh" in str(_guard().describe()["next"])
