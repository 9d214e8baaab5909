"""docs/operations.md's metrics reference is generated from the declarations: it cannot drift."""

from __future__ import annotations

from pathlib import Path

from crossfade import metrics
from crossfade.ops import metrics_reference

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def test_the_committed_reference_is_the_generated_one() -> None:
    assert metrics_reference.replace_section(DOC.read_text()) == DOC.read_text(), (
        "the metrics reference in docs/operations.md is stale: regenerate it with "
        "`.venv/bin/python -m crossfade.ops.metrics_reference --write docs/operations.md`"
    )


def test_every_exported_metric_has_a_row_with_its_server() -> None:
    text = metrics_reference.render()
    for component, members in metrics.EXPORTED_BY.items():
        for m in members:
            for family in m.describe():
                row = next(r for r in text.splitlines() if r.startswith(f"| `{family.name}"))
                assert component in row.split("|")[4], (family.name, component)
                assert family.documentation.split()[0] in row, family.name


def test_a_metric_nobody_claims_is_served_by_every_process() -> None:
    row = next(r for r in metrics_reference.render().splitlines() if "crossfade_build_info" in r)
    assert "every process" in row
