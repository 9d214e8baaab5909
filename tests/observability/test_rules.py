"""Alert rules and dashboard: promtool checks, and every PromQL name is a declared metric.

promtool comes with Debian's ``prometheus`` package (``apt-get install prometheus``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.observability.promql import (
    ALERTS,
    ALERTS_TEST,
    DASHBOARD,
    ROOT,
    dashboard_queries,
    metric_names,
    rule_queries,
)

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian: apt-get install prometheus)"
)


@needs_promtool
def test_promtool_checks_rules() -> None:
    r = subprocess.run([PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@needs_promtool
def test_promtool_unit_tests_pass() -> None:
    r = subprocess.run(
        [PROMTOOL, "test", "rules", str(ALERTS_TEST)],
        capture_output=True,
        text=True,
        cwd=ALERTS.parent,
    )
    assert r.returncode == 0, r.stdout + r.stderr


@needs_promtool
def test_every_alert_has_a_unit_test() -> None:
    import yaml

    tested = {
        t["alertname"]
        for case in yaml.safe_load(ALERTS_TEST.read_text())["tests"]
        for t in case.get("alert_rule_test", [])
        if t.get("exp_alerts")
    }
    alerts = {name for name, _ in rule_queries()}
    assert alerts - tested == set(), "alerts never seen firing in alerts_test.yaml"


def test_dashboard_json_is_generated_from_code() -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "ops" / "grafana" / "dashboard.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr


def test_dashboard_is_valid_grafana_json() -> None:
    d = json.loads(DASHBOARD.read_text())
    assert d["uid"] == "crossfade" and d["panels"]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    titles = " ".join(p["title"].lower() for p in d["panels"])
    for topic in ("lag", "captured", "applied", "errors", "dead-letter", "retained wal", "tables"):
        assert topic in titles, f"no panel about {topic}"
    for p in d["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]


def test_promql_names_are_declared_metrics() -> None:
    """Fast twin of the live test: names against the registry of this process."""
    from prometheus_client import REGISTRY, generate_latest

    import crossfade.ops.metrics  # noqa: F401 - declares the metrics
    from tests.observability.promql import exported_families

    exported = exported_families(generate_latest(REGISTRY).decode())
    used = {n for _, e in [*dashboard_queries(), *rule_queries()] for n in metric_names(e)}
    assert used, "no metric names parsed"
    assert used - exported == set()


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (table, op) (rate(a_total{table=~"$table"}[$__rate_interval]))', {"a_total"}),
        ("histogram_quantile(0.99, sum by (le) (rate(b_bucket[5m])))", {"b_bucket"}),
        ("time() - max(c_seconds) > 1e9 and on (x) d", {"c_seconds", "d"}),
        ('absent(e{component="sync"})', {"e"}),
        ("max(f) - max(g offset 5m) > bool 3", {"f", "g"}),
    ],
)
def test_metric_name_parser(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names
