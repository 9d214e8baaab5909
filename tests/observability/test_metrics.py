"""crossfade.metrics without the stack: naming conventions, meters, HTTP endpoints."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import REGISTRY, generate_latest

from crossfade import metrics
from crossfade.config import Settings
from crossfade.ops import probes


def _settings(**ops: Any) -> Settings:
    return Settings(
        source={"dsn": "postgresql://u:secret@127.0.0.1:1/legacy"},
        target={"dsn": "postgresql://u:secret@127.0.0.1:1/new"},
        kafka={"bootstrap_servers": "127.0.0.1:1", "topic_prefix": "t"},
        tables=["public.a", "public.b"],
        ops=ops,
    )


def _value(name: str, labels: dict[str, str] | None = None) -> float | None:
    return REGISTRY.get_sample_value(name, labels or {})


def test_names_follow_prometheus_conventions() -> None:
    # "reason": crossfade_retries_total's database / broker / other (seen once a test in the
    # same process has retried: the suite's order decided whether this test saw it)
    bounded = {"table", "op", "partition", "rule", "kind", "component", "gate", "slot", "version"}
    bounded.add("reason")
    fams = [f for f in REGISTRY.collect() if f.name.startswith("crossfade_")]
    assert len(fams) >= 25
    for f in fams:
        assert f.documentation, f.name
        if f.type == "counter":
            assert not f.name.endswith("_total"), f.name  # the client appends _total
        if f.type == "gauge" and ("time" in f.name or f.name.endswith("_ts")):
            assert f.name.endswith("_timestamp_seconds"), f.name
        for suffix in ("_ms", "_milliseconds", "_kb", "_mb", "_minutes"):
            assert not f.name.endswith(suffix), f"{f.name}: use base units"
    text = generate_latest(REGISTRY).decode()
    for line in text.splitlines():
        if line.startswith("crossfade_") and "{" in line:
            labels = {
                kv.split("=")[0]
                for kv in line[line.index("{") + 1 : line.index("}")].split(",")
                if kv
            }
            assert labels <= bounded | {"le"}, line


def test_capture_meter_counts_a_batch_by_table_and_op() -> None:
    s = _settings()
    meter = metrics.CaptureMeter(s)
    before = _value("crossfade_capture_events_total", {"table": "public.a", "op": "snapshot"}) or 0
    snap_before = _value("crossfade_capture_snapshot_rows_total", {"table": "public.a"}) or 0
    stats = SimpleNamespace(
        heartbeats=2, fences=1, last_source_ts_ms=1_700_000_000_000, snapshot_done=False
    )
    meter.batch(
        stats,
        True,
        {
            ("t.public.a", "r"): 5,
            ("t.public.a", "u"): 2,
            ("t.public.a", None): 1,
            ("other", "c"): 9,
        },
    )
    assert (
        _value("crossfade_capture_events_total", {"table": "public.a", "op": "snapshot"})
        == before + 5
    )
    assert _value("crossfade_capture_snapshot_rows_total", {"table": "public.a"}) == snap_before + 5
    assert _value("crossfade_capture_snapshot_running") == 1
    assert _value("crossfade_capture_last_event_source_timestamp_seconds") == 1_700_000_000
    hb = _value("crossfade_capture_heartbeats_total")
    meter.batch(stats, False, {})
    assert _value("crossfade_capture_heartbeats_total") == hb  # no new heartbeat: not counted twice
    assert _value("crossfade_capture_snapshot_running") == 0
    n0 = _value("crossfade_capture_batch_duration_seconds_count") or 0
    sum0 = _value("crossfade_capture_flush_duration_seconds_sum") or 0
    cpu0 = _value("crossfade_capture_handler_cpu_seconds_total") or 0
    meter.batch(stats, False, {}, 40, 0.2, 0.05, 0.03)
    assert _value("crossfade_capture_batch_duration_seconds_count") == n0 + 1
    assert _value("crossfade_capture_batch_size_records_bucket", {"le": "50.0"}) >= 1
    assert abs((_value("crossfade_capture_flush_duration_seconds_sum") or 0) - sum0 - 0.05) < 1e-9
    assert abs((_value("crossfade_capture_handler_cpu_seconds_total") or 0) - cpu0 - 0.03) < 1e-9


def test_sync_meter_publishes_growth_once_per_committed_batch() -> None:
    meter = metrics.SyncMeter()
    stats = SimpleNamespace(
        applied=defaultdict(int), deleted=defaultdict(int), skipped=defaultdict(int)
    )
    up0 = _value("crossfade_sync_events_applied_total", {"table": "public.b", "op": "upsert"}) or 0
    n0 = _value("crossfade_sync_batch_size_records_count") or 0
    stats.applied["public.b"] += 10
    stats.deleted["public.b"] += 1
    meter.note("public.b", 1_000)
    meter.committed(stats, 11, 0.05)
    meter.committed(stats, 0, 0.01)
    assert (
        _value("crossfade_sync_events_applied_total", {"table": "public.b", "op": "upsert"})
        == up0 + 10
    )
    assert _value("crossfade_sync_batch_size_records_count") == n0 + 2
    assert (
        _value("crossfade_sync_last_applied_source_timestamp_seconds", {"table": "public.b"}) == 1.0
    )
    assert (_value("crossfade_sync_end_to_end_lag_seconds", {"table": "public.b"}) or 0) > 1e9


def test_verify_and_gate_helpers() -> None:
    metrics.set_verify_result({"public.a": 0, "public.b": 3}, finished_at=42.0)
    assert _value("crossfade_verify_mismatched_rows", {"table": "public.b"}) == 3
    assert _value("crossfade_verify_last_run_timestamp_seconds") == 42.0
    assert _value("crossfade_verify_passed") == 0
    metrics.set_verify_result({"public.a": 0}, finished_at=43.0, passed=True)
    assert _value("crossfade_verify_passed") == 1
    metrics.set_gate("fence", True)
    assert _value("crossfade_cutover_gate_ok", {"gate": "fence"}) == 1
    metrics.set_gate("fence", None)
    assert _value("crossfade_cutover_gate_ok", {"gate": "fence"}) is None


def test_counting_errors_counts_the_kind() -> None:
    from crossfade.errors import BrokerUnavailable

    def boom() -> None:
        raise BrokerUnavailable("down")

    v0 = _value("crossfade_errors_total", {"component": "capture", "kind": "transient"}) or 0
    with pytest.raises(BrokerUnavailable):
        metrics.counting_errors("capture", boom)()
    assert _value("crossfade_errors_total", {"component": "capture", "kind": "transient"}) == v0 + 1


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_ops_server_endpoints_and_readiness() -> None:
    readiness = metrics.Readiness()
    flag = threading.Event()
    readiness.register("sync", "partitions assigned", flag.is_set)
    readiness.register("sync", "broken check", lambda: 1 / 0 == 0)
    server = probes.OpsServer("127.0.0.1", 0, probes.ops_app(readiness)).start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert _get(base + "/healthz") == (200, "ok\n")
        code, body = _get(base + "/readyz")
        assert code == 503
        assert json.loads(body)["checks"]["sync"] == {
            "partitions assigned": False,
            "broken check": False,
        }
        readiness.register("sync", "broken check", lambda: True)
        flag.set()
        code, body = _get(base + "/readyz")
        assert code == 200 and json.loads(body)["ready"] is True
        code, text = _get(base + "/metrics")
        assert code == 200 and "crossfade_sync_batch_duration_seconds_bucket" in text
        assert _get(base + "/nope")[0] == 404
    finally:
        server.stop()


def test_optional_gauge_has_no_sample_until_set() -> None:
    """A verify that never ran is no series, not a failed verify at 0."""
    from prometheus_client import CollectorRegistry

    reg = CollectorRegistry()
    g = metrics.OptionalGauge("crossfade_test_optional", "A test gauge.", reg)
    text = generate_latest(reg).decode()
    assert "# TYPE crossfade_test_optional gauge" in text
    assert "\ncrossfade_test_optional " not in text
    g.set(1)
    assert reg.get_sample_value("crossfade_test_optional") == 1
    g.clear()
    assert reg.get_sample_value("crossfade_test_optional") is None


@pytest.mark.parametrize(
    ("components", "own", "foreign"),
    [
        (
            ["sync"],
            "crossfade_sync_",
            ("crossfade_capture_", "crossfade_cutover_", "crossfade_verify_"),
        ),
        (["capture"], "crossfade_capture_", ("crossfade_sync_", "crossfade_dead_lettered")),
        (["console"], "crossfade_cutover_", ("crossfade_sync_", "crossfade_capture_")),
    ],
)
def test_each_process_serves_only_its_components_series(
    components: list[str], own: str, foreign: tuple[str, ...]
) -> None:
    """A sync worker's /metrics holds no capture series (at 0 they read as a stopped capture)."""
    metrics.set_gate("fence", True)  # something of every component is set in this registry
    metrics.CAPTURE_LAST_HEARTBEAT.set(1.0)
    metrics.SYNC_LAST_BATCH_TS.set(1.0)
    server = probes.OpsServer(
        "127.0.0.1", 0, probes.ops_app(metrics.Readiness(), components=components)
    ).start()
    try:
        code, text = _get(f"http://127.0.0.1:{server.port}/metrics")
    finally:
        server.stop()
    assert code == 200
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}
    assert any(n.startswith(own) for n in names), names
    assert not [n for n in names if n.startswith(foreign)]
    assert "crossfade_build_info" in names


def test_serve_ops_needs_a_port_and_reports_a_busy_one() -> None:
    from crossfade.errors import ConfigError

    assert probes.serve_ops(_settings()) is None
    server = probes.serve_ops(_settings(metrics_port=0))
    assert server is not None
    try:
        with pytest.raises(ConfigError, match="metrics"):
            probes.serve_ops(_settings(metrics_port=server.port))
    finally:
        server.stop()
    # known label sets exist at 0 from the start
    assert (
        _value("crossfade_dead_lettered_total", {"table": "public.a", "rule": "decode"}) is not None
    )


def test_verify_result_is_pushed_to_a_pushgateway() -> None:
    """`verify --pushgateway` (the chart's CronJob): the verify series and nothing else, PUT under
    job crossfade-verify and the migration's topic prefix."""
    from http.server import BaseHTTPRequestHandler, HTTPServer

    got: list[tuple[str, str, str]] = []

    class Gateway(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:  # noqa: N802 - stdlib naming
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            got.append((self.command, self.path, body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Gateway)
    t = threading.Thread(target=server.handle_request, daemon=True)
    t.start()
    metrics.set_verify_result({"public.a": 0, "public.b": 2}, finished_at=99.0)
    metrics.CAPTURE_LAST_HEARTBEAT.set(5.0)
    metrics.push_verify_result(f"http://127.0.0.1:{server.server_port}", "crm")
    t.join(10)
    server.server_close()
    ((method, path, body),) = got
    assert method == "PUT" and path == "/metrics/job/crossfade-verify/topic_prefix/crm"
    samples = {
        line.split(" ")[0] for line in body.splitlines() if line and not line.startswith("#")
    }
    assert samples == {
        'crossfade_verify_mismatched_rows{table="public.a"}',
        'crossfade_verify_mismatched_rows{table="public.b"}',
        "crossfade_verify_last_run_timestamp_seconds",
        "crossfade_verify_passed",
    }
    assert "crossfade_verify_passed 0.0" in body
