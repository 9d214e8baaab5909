"""The README's first command: ``crossfade demo`` on its own embedded parts, through the demo
mapping, must end with verify equal and every account closing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_demo_runs_the_mapped_pipeline_and_proves_it() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "crossfade.ops.cli", "demo", "--duration", "8", "--accounts", "120"],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "COLUMNS": "200"},
    )
    out = r.stdout + r.stderr
    # the demo's own report (its table, verify's lines, PASS/FAIL) first: the log tail alone hides
    # which rows differed
    assert r.returncode == 0, r.stdout[-6000:] + "\n--- log tail ---\n" + r.stderr[-3000:]
    flat = " ".join(out.split())  # the console may wrap long lines
    assert "PASS: the new database holds exactly the mapped legacy rows" in flat
    for target in ("app.accounts", "app.people", "app.addresses"):
        assert f"{target}: " in flat
    assert flat.count("rows: equal") == 3, out[-4000:]
    assert "(does not close)" not in flat and flat.count("(closes)") == 3, out[-4000:]
