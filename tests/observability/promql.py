"""The PromQL expressions crossfade ships (dashboard and alert rules) and the metric names in them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "ops" / "grafana" / "crossfade.json"
ALERTS = ROOT / "ops" / "prometheus" / "alerts.yaml"
ALERTS_TEST = ROOT / "ops" / "prometheus" / "alerts_test.yaml"

_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
    "atan2",
}
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def dashboard_queries(dashboard: dict[str, Any] | None = None) -> Iterator[tuple[str, str]]:
    """(panel title, expr) of every query in the dashboard, nested rows and template variables too."""
    d = dashboard if dashboard is not None else json.loads(DASHBOARD.read_text())

    def walk(panels: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    yield p.get("title", "?"), t["expr"]
            yield from walk(p.get("panels", []))

    yield from walk(d.get("panels", []))
    for var in d.get("templating", {}).get("list", []):
        q = var.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.fullmatch(r"\s*label_values\((.+),\s*[a-zA-Z_]+\)\s*", q or "")
        if m:
            yield f"variable {var['name']}", m.group(1)


def rule_queries() -> Iterator[tuple[str, str]]:
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            yield rule.get("alert") or rule.get("record"), rule["expr"]


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (functions, keywords, label names and durations excluded)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    s = re.sub(r"\{[^}]*\}", "", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", "", s)  # range and subquery selectors
    s = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s
    )  # label lists
    names = set()
    for m in _IDENT.finditer(s):
        name = m.group(0)
        rest = s[m.end() :].lstrip()
        if rest.startswith("("):  # a function call
            continue
        if name.lower() in _KEYWORDS or name.startswith("$"):
            continue
        prev = s[: m.start()]
        if prev.endswith("$") or re.search(r"[0-9.]$", prev):  # $__rate_interval, 1e9
            continue
        names.add(name)
    return names


def grafana_to_promql(expr: str) -> str:
    """Replace Grafana's variables with what Prometheus needs to evaluate the query."""
    return (
        expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "5m")
        .replace('"$table"', '".*"')
        .replace('"$job"', '".*"')
        .replace('"$namespace"', '".*"')
        .replace('"$release"', '".*"')
    )


def exported_families(exposition: str) -> set[str]:
    """Metric names a scrape exposes, histogram/summary series (_bucket, _sum, _count) included."""
    from prometheus_client.parser import text_string_to_metric_families

    out: set[str] = set()
    for fam in text_string_to_metric_families(exposition):
        out.add(fam.name)
        if (
            fam.type == "counter"
        ):  # the parser strips _total (and a labelled counter may have no sample yet)
            out.add(fam.name + "_total")
        for sample in fam.samples:
            out.add(sample.name)
    return out
