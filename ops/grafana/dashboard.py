"""Builds ops/grafana/crossfade.json, the crossfade Grafana dashboard (plain Python, no deps).

    python ops/grafana/dashboard.py          # rewrite crossfade.json
    python ops/grafana/dashboard.py --check  # exit 1 if crossfade.json is out of date

Every query uses only metrics declared in ``crossfade.metrics``; tests/observability scrapes a
running crossfade and a real Prometheus to prove it.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("crossfade.json")
DS = {"type": "prometheus", "uid": "${datasource}"}
T = 'table=~"$table"'
RI = "$__rate_interval"
# Every selector is narrowed to the chosen migration: two migrations in one Prometheus (two Helm
# releases, two namespaces) never mix. `release` is the label the chart's ServiceMonitor sets from
# the Helm release; without it (docker-compose, static configs) ".*" still matches.
SCOPE = 'job=~"$job", namespace=~"$namespace", release=~"$release"'
CONSOLE_URL = "http://127.0.0.1:8421/"
"""The console link's default; the Helm chart puts monitoring.grafanaDashboard.consoleUrl here."""
_METRIC = re.compile(r"\b(crossfade_[a-z0-9_]+)(\{([^}]*)\})?")


def scoped(expr: str) -> str:
    """``expr`` with the migration's job/namespace/release matchers in every crossfade selector."""

    def one(m: re.Match[str]) -> str:
        inner = m.group(3)
        return f"{m.group(1)}{{{SCOPE}{', ' + inner if inner else ''}}}"

    return _METRIC.sub(one, expr)


class Layout:
    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.y = 0
        self.x = 0
        self.row_h = 0
        self.next_id = 1

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(
            {
                "type": "row",
                "title": title,
                "id": self._id(),
                "collapsed": False,
                "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1},
                "panels": [],
            }
        )
        self.y += 1

    def _newline(self) -> None:
        if self.x:
            self.y += self.row_h
            self.x = 0
            self.row_h = 0

    def _id(self) -> int:
        i = self.next_id
        self.next_id += 1
        return i

    def add(self, panel: dict[str, Any], w: int, h: int) -> None:
        if self.x + w > 24:
            self._newline()
        panel["id"] = self._id()
        panel["gridPos"] = {"x": self.x, "y": self.y, "w": w, "h": h}
        panel.setdefault("datasource", DS)
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> dict[str, Any]:
    t: dict[str, Any] = {
        "datasource": DS,
        "expr": scoped(expr),
        "refId": ref,
        "legendFormat": legend or "__auto",
    }
    if instant:
        t.update({"instant": True, "range": False, "format": "table"})
    return t


def timeseries(
    title: str, desc: str, targets: list[dict[str, Any]], unit: str, **opts: Any
) -> dict[str, Any]:
    return {
        "type": "timeseries",
        "title": title,
        "description": desc,
        "targets": targets,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "custom": {
                    "fillOpacity": opts.get("fill", 10),
                    "lineWidth": 1,
                    "stacking": {"mode": opts.get("stack", "none")},
                },
                "thresholds": opts.get("thresholds", _thr()),
            },
            "overrides": [],
        },
        "options": {
            "legend": {
                "displayMode": "table",
                "placement": "bottom",
                "calcs": ["lastNotNull", "max"],
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def stat(
    title: str,
    desc: str,
    expr: str,
    unit: str,
    thresholds: dict[str, Any],
    legend: str = "",
    mappings: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "type": "stat",
        "title": title,
        "description": desc,
        "targets": [target(expr, legend)],
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "thresholds": thresholds,
                "mappings": mappings or [],
                "color": {"mode": "thresholds"},
            },
            "overrides": [],
        },
        "options": {
            "colorMode": "background",
            "graphMode": "area",
            "reduceOptions": {"calcs": ["lastNotNull"]},
            "textMode": "value_and_name" if legend else "value",
        },
    }


def _thr(*steps: tuple[float | None, str]) -> dict[str, Any]:
    st = steps or ((None, "green"),)
    return {"mode": "absolute", "steps": [{"value": v, "color": c} for v, c in st]}


def build() -> dict[str, Any]:
    lay = Layout()
    ok_map = [
        {
            "type": "value",
            "options": {
                "0": {"text": "NOT READY", "color": "red"},
                "1": {"text": "READY", "color": "green"},
            },
        }
    ]
    gate_map = [
        {
            "type": "value",
            "options": {
                "0": {"text": "RED", "color": "red"},
                "1": {"text": "GREEN", "color": "green"},
            },
        }
    ]

    lay.row("Overview")
    lay.add(
        stat(
            "Ready",
            "Each component's /readyz as a metric (broker, databases, partitions, engine).",
            "min by (component) (crossfade_ready)",
            "none",
            _thr((None, "red"), (1, "green")),
            legend="{{component}}",
            mappings=ok_map,
        ),
        6,
        4,
    )
    lay.add(
        stat(
            "End-to-end lag",
            "Source commit -> target commit of the newest applied event (worst table).",
            "max(crossfade_sync_end_to_end_lag_seconds)",
            "s",
            _thr((None, "green"), (10, "orange"), (60, "red")),
        ),
        4,
        4,
    )
    lay.add(
        stat(
            "Fence lag",
            "The last fence: legacy commit -> applied on its partition in the target.",
            "max(crossfade_sync_fence_lag_seconds)",
            "s",
            _thr((None, "green"), (10, "orange"), (60, "red")),
        ),
        4,
        4,
    )
    lay.add(
        stat(
            "Dead-lettered (1h)",
            "Records sent to the dead-letter topic in the last hour.",
            "sum(increase(crossfade_dead_lettered_total[1h]))",
            "short",
            _thr((None, "green"), (1, "red")),
        ),
        3,
        4,
    )
    lay.add(
        stat(
            "Retained WAL",
            "WAL the legacy database keeps for crossfade's replication slot.",
            "max(crossfade_replication_slot_retained_wal_bytes)",
            "bytes",
            _thr((None, "green"), (1 << 30, "orange"), (10 << 30, "red")),
        ),
        4,
        4,
    )
    lay.add(
        stat(
            "Snapshot",
            "1 while Debezium's initial snapshot is being published.",
            "max(crossfade_capture_snapshot_running)",
            "none",
            _thr((None, "green"), (1, "blue")),
            mappings=[
                {"type": "value", "options": {"0": {"text": "done"}, "1": {"text": "running"}}}
            ],
        ),
        3,
        4,
    )

    lay.row("Lag")
    lay.add(
        timeseries(
            "End-to-end lag",
            "Per table: source commit to target commit of the newest event of each batch. "
            "Fence: the last fence's lag. Behind capture: source time captured but not yet applied.",
            [
                target(
                    f"max by (table) (crossfade_sync_end_to_end_lag_seconds{{{T}}})", "{{table}}"
                ),
                target("max(crossfade_sync_fence_lag_seconds)", "fence", "B"),
                target(
                    "max(crossfade_capture_last_event_source_timestamp_seconds) - "
                    "max(crossfade_sync_last_applied_source_timestamp_seconds)",
                    "behind capture",
                    "C",
                ),
            ],
            "s",
        ),
        12,
        8,
    )
    lay.add(
        timeseries(
            "Consumer lag (records)",
            "Records after each sync consumer's position, from the watermark its own "
            "fetches learned. A hint; the fence proves lag zero.",
            [
                target(
                    f"sum by (table, partition) (crossfade_sync_consumer_lag_records{{{T}}})",
                    "{{table}}[{{partition}}]",
                )
            ],
            "short",
        ),
        12,
        8,
    )

    lay.row("Throughput")
    lay.add(
        timeseries(
            "Captured events/s",
            "Change events published by capture, by table and operation.",
            [
                target(
                    f"sum by (table, op) (rate(crossfade_capture_events_total{{{T}}}[{RI}]))",
                    "{{table}} {{op}}",
                )
            ],
            "ops",
            stack="normal",
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "Applied events/s",
            "Events written to the target (committed), by table and operation; skipped: "
            "duplicates the source-position guard dropped.",
            [
                target(
                    f"sum by (table, op) (rate(crossfade_sync_events_applied_total{{{T}}}[{RI}]))",
                    "{{table}} {{op}}",
                ),
                target(
                    f"sum by (table) (rate(crossfade_sync_events_skipped_total{{{T}}}[{RI}]))",
                    "{{table}} skipped",
                    "B",
                ),
            ],
            "ops",
            stack="normal",
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "Apply batch duration",
            "Decode + apply + commit of one batch (retries included).",
            [
                target(
                    f"histogram_quantile(0.5, sum by (le) (rate(crossfade_sync_batch_duration_seconds_bucket[{RI}])))",
                    "p50",
                ),
                target(
                    f"histogram_quantile(0.99, sum by (le) (rate(crossfade_sync_batch_duration_seconds_bucket[{RI}])))",
                    "p99",
                    "B",
                ),
            ],
            "s",
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "Apply batch size",
            "Records per batch (one target transaction).",
            [
                target(
                    f"sum(rate(crossfade_sync_batch_size_records_sum[{RI}])) / sum(rate(crossfade_sync_batch_size_records_count[{RI}]))",
                    "mean",
                ),
                target(
                    f"histogram_quantile(0.9, sum by (le) (rate(crossfade_sync_batch_size_records_bucket[{RI}])))",
                    "p90",
                    "B",
                ),
            ],
            "short",
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "Batches/s",
            "Committed batches per second.",
            [target(f"sum(rate(crossfade_sync_batch_duration_seconds_count[{RI}]))", "batches")],
            "ops",
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "Capture handler busy",
            "Fraction of time capture works on Debezium batches (encode, produce, wait for "
            "the broker); of which waiting for the broker's acknowledgements. Behind while well below 100%: the "
            "limit is before capture's handler (Debezium's decoding, the walsender).",
            [
                target(f"sum(rate(crossfade_capture_batch_duration_seconds_sum[{RI}]))", "busy"),
                target(
                    f"sum(rate(crossfade_capture_flush_duration_seconds_sum[{RI}]))",
                    "waiting for the broker",
                    "B",
                ),
            ],
            "percentunit",
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "Heartbeat age",
            "Seconds since capture last received a Debezium heartbeat.",
            [
                target(
                    "time() - max(crossfade_capture_last_heartbeat_timestamp_seconds)",
                    "heartbeat age",
                )
            ],
            "s",
            thresholds=_thr((None, "green"), (60, "red")),
        ),
        8,
        8,
    )

    lay.row("Errors and dead letters")
    lay.add(
        timeseries(
            "Dead-lettered",
            "Records sent to the dead-letter topic, by rule and table.",
            [
                target(
                    f"sum by (rule, table) (increase(crossfade_dead_lettered_total{{{T}}}[{RI}]))",
                    "{{rule}} {{table}}",
                )
            ],
            "short",
            stack="normal",
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "Errors/s",
            "Transient errors are retried; a terminal one stops the service.",
            [
                target(
                    f"sum by (component, kind) (rate(crossfade_errors_total[{RI}]))",
                    "{{component}} {{kind}}",
                )
            ],
            "ops",
        ),
        8,
        8,
    )
    lay.add(
        timeseries(
            "Retries/s",
            "Retries after transient errors, by what failed.",
            [
                target(
                    f"sum by (component, reason) (rate(crossfade_retries_total[{RI}]))",
                    "{{component}} {{reason}}",
                )
            ],
            "ops",
        ),
        8,
        8,
    )

    lay.row("Legacy database")
    lay.add(
        timeseries(
            "Replication slot retained WAL",
            "pg_current_wal_lsn() - restart_lsn of crossfade's slot: it grows, "
            "and fills the legacy database's disk, whenever capture stops confirming.",
            [target("max by (slot) (crossfade_replication_slot_retained_wal_bytes)", "{{slot}}")],
            "bytes",
            thresholds=_thr((None, "green"), (1 << 30, "orange"), (10 << 30, "red")),
        ),
        12,
        8,
    )
    lay.add(
        timeseries(
            "Replication slot active",
            "1 while Debezium streams from the slot.",
            [target("max by (slot) (crossfade_replication_slot_active)", "{{slot}}")],
            "none",
        ),
        12,
        8,
    )

    lay.row("Per-table progress")
    table_panel = {
        "type": "table",
        "title": "Tables",
        "description": "Source rows (PostgreSQL's estimate), snapshot rows published, events captured, "
        "applied and dead-lettered since the processes started.",
        "targets": [
            target(f"max by (table) (crossfade_source_table_rows_estimate{{{T}}})", "", "A", True),
            target(f"sum by (table) (crossfade_capture_snapshot_rows_total{{{T}}})", "", "B", True),
            target(f"sum by (table) (crossfade_capture_events_total{{{T}}})", "", "C", True),
            target(f"sum by (table) (crossfade_sync_events_applied_total{{{T}}})", "", "D", True),
            target(f"sum by (table) (crossfade_dead_lettered_total{{{T}}})", "", "E", True),
        ],
        "transformations": [
            {"id": "merge", "options": {}},
            {
                "id": "organize",
                "options": {
                    "excludeByName": {"Time": True},
                    "renameByName": {
                        "Value #A": "source rows (est.)",
                        "Value #B": "snapshot rows",
                        "Value #C": "captured",
                        "Value #D": "applied",
                        "Value #E": "dead-lettered",
                    },
                },
            },
        ],
        "fieldConfig": {"defaults": {"unit": "short"}, "overrides": []},
        "options": {"showHeader": True},
    }
    lay.add(table_panel, 14, 8)
    lay.add(
        {
            "type": "bargauge",
            "title": "Snapshot progress",
            "description": "Snapshot rows published / the source's row estimate.",
            "targets": [
                target(
                    f"sum by (table) (crossfade_capture_snapshot_rows_total{{{T}}}) / "
                    f"(max by (table) (crossfade_source_table_rows_estimate{{{T}}}) > 0)",
                    "{{table}}",
                )
            ],
            "fieldConfig": {
                "defaults": {
                    "unit": "percentunit",
                    "min": 0,
                    "max": 1,
                    "thresholds": _thr((None, "blue"), (1, "green")),
                },
                "overrides": [],
            },
            "options": {
                "orientation": "horizontal",
                "displayMode": "gradient",
                "reduceOptions": {"calcs": ["lastNotNull"]},
            },
        },
        10,
        8,
    )

    lay.row("Cutover")
    lay.add(
        stat(
            "Cutover gates",
            "Go/no-go gates as the console and cutover --dry-run last evaluated them.",
            "max by (gate) (crossfade_cutover_gate_ok)",
            "none",
            _thr((None, "red"), (1, "green")),
            legend="{{gate}}",
            mappings=gate_map,
        ),
        10,
        4,
    )
    lay.add(
        stat(
            "Verify: mismatched rows",
            "Rows that differ in the latest verify, all tables.",
            "sum(crossfade_verify_mismatched_rows)",
            "short",
            _thr((None, "green"), (1, "red")),
        ),
        7,
        4,
    )
    lay.add(
        stat(
            "Verify: passed",
            "Whether the latest verify found every table equal (the console reads it from the "
            "verify runs; the verify CronJob pushes it).",
            "min(crossfade_verify_passed)",
            "none",
            _thr((None, "red"), (1, "green")),
            mappings=[
                {
                    "type": "value",
                    "options": {
                        "0": {"text": "DIFFERENCES", "color": "red"},
                        "1": {"text": "EQUAL", "color": "green"},
                    },
                }
            ],
        ),
        5,
        4,
    )
    lay.add(
        stat(
            "Open dead letters",
            "Dead letters open now per source table (the ledger's one count, as the console "
            "and status show it); not acknowledged ones keep the dead_letters gate red.",
            "max by (table) (crossfade_dead_letters_open)",
            "short",
            _thr((None, "green"), (1, "red")),
            legend="{{table}}",
        ),
        10,
        4,
    )
    lay.add(
        stat(
            "Deferred rows",
            "Rows waiting for a parent row within their window, per source table.",
            "sum(crossfade_deferred_rows)",
            "short",
            _thr((None, "green"), (1, "orange")),
        ),
        4,
        4,
    )
    lay.add(
        stat(
            "Verify: age",
            "Time since the latest verify finished.",
            "time() - max(crossfade_verify_last_run_timestamp_seconds)",
            "s",
            _thr((None, "green"), (3600, "orange")),
        ),
        7,
        4,
    )

    return {
        "title": "crossfade",
        "uid": "crossfade",
        "description": "Zero-downtime migration: capture (Debezium) -> Kafka -> sync -> new database.",
        "tags": ["crossfade", "cdc", "migration"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "graphTooltip": 1,
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                _label_variable("job", "crossfade_build_info", ""),
                _label_variable("namespace", "crossfade_build_info", 'job=~"$job"'),
                _label_variable(
                    "release", "crossfade_build_info", 'job=~"$job", namespace=~"$namespace"'
                ),
                _label_variable("table", "crossfade_sync_events_applied_total", SCOPE),
                {
                    "name": "console_url",
                    "label": "console",
                    "type": "textbox",
                    "description": "Address of this migration's crossfade console (the link above).",
                    "query": CONSOLE_URL,
                    "current": {"text": CONSOLE_URL, "value": CONSOLE_URL},
                    "hide": 2,
                },
            ]
        },
        "annotations": {"list": []},
        "links": [
            {
                "title": "crossfade console",
                "type": "link",
                "url": "${console_url}",
                "tooltip": "Gates, tables, dead letters and the latest verify of this migration",
                "targetBlank": True,
                "icon": "external link",
                "includeVars": False,
                "keepTime": False,
            }
        ],
        "panels": lay.panels,
    }


def _label_variable(name: str, metric: str, matchers: str) -> dict[str, Any]:
    query = (
        f"label_values({metric}{{{matchers}}}, {name})"
        if matchers
        else f"label_values({metric}, {name})"
    )
    return {
        "name": name,
        "label": name,
        "type": "query",
        "datasource": DS,
        "query": {"query": query, "refId": name},
        "definition": query,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"text": "All", "value": "$__all"},
        "refresh": 2,
        "sort": 1,
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        if OUT.read_text() != text:
            print(f"{OUT} is out of date: run python {__file__}", file=sys.stderr)
            sys.exit(1)
        sys.exit(0)
    OUT.write_text(text)
    print(f"wrote {OUT}")
