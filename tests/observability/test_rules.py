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


def _healthy_cases() -> list[dict]:
    import yaml

    return [
        c
        for c in yaml.safe_load(ALERTS_TEST.read_text())["tests"]
        if str(c.get("name", "")).startswith("healthy")
    ]


def test_healthy_deployments_are_checked_against_every_alert() -> None:
    """The healthy cases of alerts_test.yaml (promtool runs them above) expect every alert quiet."""
    cases = _healthy_cases()
    assert {c["name"] for c in cases} == {
        "healthy sync-only and capture-only pods",
        "healthy sync-only pods, capture on Kafka Connect",
    }
    alerts = {name for name, _ in rule_queries()}
    for c in cases:
        quiet = {t["alertname"] for t in c["alert_rule_test"] if t["exp_alerts"] == []}
        assert quiet == alerts, (c["name"], alerts - quiet)
        assert all(t["exp_alerts"] == [] for t in c["alert_rule_test"])


def _exported_samples(component: str) -> set[str]:
    """Sample names (histogram buckets left out) a process running ``component`` serves on
    /metrics from its start, in a fresh interpreter (this one's registry has every series)."""
    code = (
        "import sys\n"
        "from prometheus_client import generate_latest\n"
        "from crossfade.config import Settings\n"
        "from crossfade import metrics\n"
        "c = sys.argv[1]\n"
        "s = Settings(source={'dsn': 'postgresql://u@h/d'}, target={'dsn': 'postgresql://u@h/d'},\n"
        "             kafka={'bootstrap_servers': 'k:9092'}, tables=['public.orders'])\n"
        "metrics.init_labels(s, [c] if c in metrics.COMPONENTS else [])\n"
        "print(generate_latest(metrics.ComponentView([c])).decode())\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, component], capture_output=True, text=True, check=True
    )
    return {
        line.split("{")[0].split(" ")[0]
        for line in r.stdout.splitlines()
        if line.startswith("crossfade_") and "_bucket" not in line.split("{")[0]
    }


def _families_of(component: str) -> set[str]:
    """Family names a process running ``component`` may export (its own and everyone's)."""
    from prometheus_client import REGISTRY

    from crossfade import metrics

    own = {f.name for m in metrics.EXPORTED_BY[component] for f in m.describe()}
    everyone = {
        f.name
        for f in REGISTRY.collect()
        if f.name.startswith("crossfade_") and f.name not in metrics.OWNERS
    }
    return own | everyone


@pytest.mark.parametrize(
    ("instance", "component"),
    [("sync-0", "sync"), ("capture-0", "capture"), ("console-0", "console")],
)
def test_healthy_cases_list_what_each_component_exports(instance: str, component: str) -> None:
    """What the healthy cases feed promtool is what the processes serve: every series a
    component exports from its start is there, and none of another component's (a sync worker
    exporting capture's heartbeat at 0 made CrossfadeCaptureNoHeartbeat fire for every one)."""
    import re

    case = _healthy_cases()[0]
    series = {
        s["series"].split("{")[0]
        for s in case["input_series"]
        if re.search(rf'instance="{instance}"', s["series"])
    }
    assert series, instance
    missing = _exported_samples(component) - series
    assert not missing, f"{component} exports {sorted(missing)}, absent from the healthy case"
    allowed = _families_of(component)
    suffixes = ("", "_total", "_sum", "_count", "_info")
    foreign = {
        s
        for s in series
        if not any(s.removesuffix(x) in allowed for x in suffixes if s.endswith(x))
    }
    assert not foreign, f"the healthy {component} case holds {sorted(foreign)}, not {component}'s"


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


def test_every_alert_has_a_runbook_section() -> None:
    """Each rule's runbook_url points at its own section of docs/operations.md, and the section
    says what the alert means, what to check and what to do."""
    import re

    import yaml

    doc = (ROOT / "docs" / "operations.md").read_text()
    sections = dict(re.findall(r"^### (\w+)\n(.*?)(?=^##|\Z)", doc, re.M | re.S))
    base = "https://crossfade.invalid/docs/operations.md#"
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            name = rule["alert"]
            assert rule["annotations"]["runbook_url"] == base + name.lower(), name
            assert name in sections, f"docs/operations.md has no section ### {name}"
            for part in ("**Means**", "**Check**", "**Do**"):
                assert part in sections[name], f"{name}: no {part}"


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


def test_dashboard_is_scoped_to_one_migration_and_links_the_console() -> None:
    """Two migrations in one Prometheus never mix on the dashboard: every crossfade selector
    carries the job, namespace and release variables; the console is one click away."""
    import re

    d = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert {"job", "namespace", "release", "table", "console_url"} <= set(variables)
    for name in ("job", "namespace", "release"):
        assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*"
    for title, expr in dashboard_queries(d):
        if title in ("variable job", "variable namespace", "variable release"):
            continue  # the variables that choose the migration
        for sel in re.findall(r"crossfade_[a-z0-9_]+(\{[^}]*\})?", expr):
            assert 'job=~"$job"' in sel and 'release=~"$release"' in sel, (title, expr)
    (link,) = [x for x in d["links"] if x["title"] == "crossfade console"]
    assert link["url"] == "${console_url}"


def test_promql_names_are_declared_metrics() -> None:
    """Fast twin of the live test: names against the registry of this process."""
    from prometheus_client import REGISTRY, generate_latest

    import crossfade.metrics  # noqa: F401 - declares the metrics
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
