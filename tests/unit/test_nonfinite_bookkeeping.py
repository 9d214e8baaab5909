"""A NaN or infinity in what the bookkeeping stores as ``jsonb`` is written as PostgreSQL's
``to_jsonb`` writes it (FAULTS 24), not as JSON's bare ``NaN`` that ``jsonb`` refuses: a verify
run's report, a cutover audit row's evidence (a forecast divided by a zero rate), the source key
a dead letter's held changes are looked up by."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable

import psycopg
import pytest

from crossfade.config import Settings
from crossfade.target.store.audit import AuditLog, latest_audit
from crossfade.target.store.ledger import held_changes
from crossfade.target.store.verify_runs import VerifyRun, record_verify_run

BK = "nanbook_crossfade"


@pytest.fixture
def db(fresh_bookkeeping: Callable[..., str]) -> str:
    return fresh_bookkeeping(BK)


def test_verify_run_report_with_nan(db: str) -> None:
    run = VerifyRun(
        dt.datetime.now(dt.UTC), False, 1, 3, 3, 1, 0, 0, False, 0.5, "test",
        {"tables": [{"examples": [{"score": {"source": math.nan, "target": math.inf}}]}]},
        "h",
    )  # fmt: skip
    with psycopg.connect(db, autocommit=True) as c:
        rid = record_verify_run(c, BK, run)
        (report,) = c.execute(
            f"SELECT report FROM {BK}.verify_runs WHERE id = %s", (rid,)
        ).fetchone() or (None,)
    assert report["tables"][0]["examples"][0]["score"] == {"source": "NaN", "target": "Infinity"}


def test_audit_evidence_with_an_infinity(db: str) -> None:
    settings = Settings(
        source={"dsn": "postgresql://u@127.0.0.1:1/legacy"},
        target={"dsn": db},
        kafka={"bootstrap_servers": "127.0.0.1:1"},
        tables=["public.t"],
        sync={"bookkeeping_schema": BK},
    )
    with AuditLog(settings, "run-1", "test", dry_run=True) as log:
        log.write("decision", True, "forecast", 0.1, {"expected_downtime_seconds": math.inf})
    with psycopg.connect(db, autocommit=True) as c:
        row = latest_audit(c, BK, "decision")
    assert row is not None and row.evidence == {"expected_downtime_seconds": "Infinity"}


def test_held_changes_of_a_key_holding_nan(db: str) -> None:
    with psycopg.connect(db) as c:
        assert held_changes(c, BK, "public.t", [math.nan, -math.inf]) == []
