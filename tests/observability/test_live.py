"""A real ``crossfade run`` on the embedded stack, scraped directly and by a real Prometheus.

Proves that the probes answer, that every metric the dashboard and the alert rules query is one
the running services export, and that Prometheus evaluates every dashboard query and every rule
without error (with data where the pipeline must have produced some). The Prometheus server is
Debian's ``prometheus`` package; without it that test skips, saying so.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from crossfade.embedded._proc import free_port
from tests.conftest import Proc, Stack, wait_for
from tests.observability.promql import (
    ALERTS,
    dashboard_queries,
    exported_families,
    grafana_to_promql,
    metric_names,
    rule_queries,
)

pytestmark = pytest.mark.integration

TABLES = ["public.orders", "public.customers"]
# Queries allowed to be empty here: only verify/cutover commands (not running) set these.
MAY_BE_EMPTY = {
    "crossfade_verify_mismatched_rows",
    "crossfade_verify_last_run_timestamp_seconds",
    "crossfade_verify_passed",
    "crossfade_cutover_gate_ok",
    # the console's (not running here): what is open in the ledger
    "crossfade_dead_letters_open",
    "crossfade_dead_letters_unacknowledged",
    "crossfade_deferred_rows",
}


def _get(url: str, timeout: float = 5) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, ""


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def _sample(text: str, name: str, **labels: str) -> float | None:
    return _samples(text).get((name, frozenset(labels.items())))


@pytest.fixture(scope="module")
def live(pg_server: Any, bootstrap: str, work_root: Path) -> Iterator[tuple[Stack, str]]:
    # the COPY load: its rows count as the initial load's (Debezium's snapshot path: test_metrics)
    st = Stack(pg_server, bootstrap, work_root, initial_load="copy")
    st.sql(
        "CREATE TABLE public.orders (id int PRIMARY KEY, item text NOT NULL, qty int);"
        "CREATE TABLE public.customers (id int PRIMARY KEY, name text);"
        "INSERT INTO orders SELECT g, 'item ' || g, g FROM generate_series(1, 300) g;"
        "INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 50) g;"
    )
    port = free_port()
    st.write_config(TABLES, ops={"metrics_port": port})
    st.start("run")
    base = f"http://127.0.0.1:{port}"
    console_port = free_port()
    # the console serves the gates, the ledger's counts and the slot on its own /metrics
    st.procs.append(
        Proc(
            "console",
            ["console", "--port", str(console_port), "--interval", "1"],
            st._env(),
            st.dir / "console.log",
        )
    )
    st.console = f"http://127.0.0.1:{console_port}"  # type: ignore[attr-defined]
    try:
        st.fence()
        st.sql("UPDATE orders SET qty = qty + 1 WHERE id <= 100")
        st.sql("DELETE FROM customers WHERE id <= 5")
        st.sql("INSERT INTO orders SELECT g, 'late ' || g, 1 FROM generate_series(301, 340) g")
        st.fence()
        yield st, base
    finally:
        st.close()


def test_probes_answer_and_metrics_count_what_happened(live: tuple[Stack, str]) -> None:
    st, base = live
    assert _get(base + "/healthz") == (200, "ok\n")
    wait_for(
        lambda: _get(base + "/readyz")[0] == 200, 60, lambda: "/readyz to answer 200" + st._diag()
    )
    ready = json.loads(_get(base + "/readyz")[1])
    assert set(ready["checks"]) == {"capture", "sync"}
    assert ready["checks"]["sync"]["partitions assigned"] is True

    # the slot poller runs every 10 s on its own connection (the first poll may predate streaming)
    slot = st.settings.capture.slot_name

    def scrape_with_wal() -> str | None:
        text = _get(base + "/metrics")[1]
        polled = (
            _sample(text, "crossfade_replication_slot_retained_wal_bytes", slot=slot) is not None
        )
        return (
            text
            if polled and _sample(text, "crossfade_replication_slot_active", slot=slot) == 1
            else None
        )

    text = wait_for(scrape_with_wal, 30, "the slot poller to see the streaming replication slot")
    m = lambda name, **labels: _sample(text, name, **labels)  # noqa: E731
    # the COPY load: the initial rows are copied, counted as the load's rows, and sent
    # as no change event (Debezium's snapshot path: tests/observability/test_metrics.py)
    assert m("crossfade_capture_snapshot_rows_total", table="public.orders") == 300
    assert m("crossfade_capture_snapshot_rows_total", table="public.customers") == 50
    assert m("crossfade_capture_events_total", table="public.orders", op="snapshot") == 0
    assert m("crossfade_capture_events_total", table="public.orders", op="update") == 100
    assert m("crossfade_capture_events_total", table="public.orders", op="insert") == 40
    assert m("crossfade_capture_events_total", table="public.customers", op="delete") == 5
    assert m("crossfade_capture_snapshot_running") == 0
    assert m("crossfade_sync_events_applied_total", table="public.orders", op="upsert") == 140
    assert m("crossfade_sync_events_applied_total", table="public.customers", op="delete") == 5
    assert (m("crossfade_replication_slot_retained_wal_bytes", slot=slot) or -1) >= 0
    assert m("crossfade_ready", component="sync") == 1
    assert m("crossfade_ready", component="capture") == 1
    assert (m("crossfade_sync_batch_duration_seconds_count") or 0) >= 2
    # every record capture produced went through a timed batch (heartbeats and fences come on top)
    assert (m("crossfade_capture_batch_size_records_sum") or 0) >= 100 + 40 + 5
    batches = m("crossfade_capture_batch_duration_seconds_count") or 0
    assert batches >= 1 and m("crossfade_capture_flush_duration_seconds_count") == batches
    assert (
        0
        < (m("crossfade_capture_flush_duration_seconds_sum") or 0)
        <= (m("crossfade_capture_batch_duration_seconds_sum") or 0)
    )
    assert (m("crossfade_sync_fence_markers_total") or 0) >= 2 * st.partitions * len(TABLES)
    lag = m("crossfade_sync_fence_lag_seconds")
    assert lag is not None and 0 <= lag < 60
    for table in TABLES:
        e2e = m("crossfade_sync_end_to_end_lag_seconds", table=table)
        assert e2e is not None and 0 <= e2e < 60, (table, e2e)
        for p in range(st.partitions):
            # caught up after the fence: the consumer's own watermark says nothing is left
            assert m("crossfade_sync_consumer_lag_records", table=table, partition=str(p)) == 0
    assert m("crossfade_sync_assigned_partitions") == st.partitions * len(TABLES)
    assert m("crossfade_dead_lettered_total", table="public.orders", rule="decode") == 0
    assert "postgresql://" not in text and "password" not in text.lower()


def test_every_promql_metric_is_exported_by_the_running_services(live: tuple[Stack, str]) -> None:
    """Every name the dashboard and the rules query is exported by `crossfade run` or the
    console (each process exports only its own component's series)."""
    st, base = live
    code, text = _get(base + "/metrics")
    assert code == 200
    assert "crossfade_cutover_gate_ok" not in text  # the console's, not capture's or sync's
    console = st.console  # type: ignore[attr-defined]
    code, console_text = wait_for(
        lambda: (
            (r := _get(console + "/metrics"))[0] == 200
            and "crossfade_cutover_gate_ok{" in r[1]
            and r
        ),
        30,
        "the console's first collection",
    )
    assert "crossfade_sync_" not in console_text and "crossfade_capture_" not in console_text
    exported = exported_families(text) | exported_families(console_text)
    with_samples = {name for name, _ in [*_samples(text), *_samples(console_text)]}
    for origin, queries in (
        ("dashboard", list(dashboard_queries())),
        ("alert rules", list(rule_queries())),
    ):
        for title, expr in queries:
            missing = metric_names(expr) - exported
            assert not missing, (
                f"{origin} {title!r} queries {sorted(missing)}, not exported by crossfade"
            )
            silent = metric_names(expr) - with_samples - MAY_BE_EMPTY
            assert not silent, (
                f"{origin} {title!r}: {sorted(silent)} declared but never set by a running pipeline"
            )


PROMETHEUS = shutil.which("prometheus")


@pytest.mark.skipif(
    PROMETHEUS is None,
    reason="prometheus server not installed (Debian: apt-get install prometheus)",
)
def test_prometheus_evaluates_every_dashboard_query_and_rule(
    live: tuple[Stack, str], tmp_path: Path
) -> None:
    st, base = live
    target = base.removeprefix("http://")
    port = free_port()
    cfg = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {"job_name": "crossfade", "static_configs": [{"targets": [target]}]},
            {
                "job_name": "crossfade-console",
                "static_configs": [{"targets": [st.console.removeprefix("http://")]}],  # type: ignore[attr-defined]
            },
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    prom = f"http://127.0.0.1:{port}"

    def query(expr: str) -> dict[str, Any]:
        code, body = _get(f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert body, f"no answer from Prometheus for {expr!r} (HTTP {code})"
        return json.loads(body)

    try:
        wait_for(
            lambda: _get(prom + "/-/ready")[0] == 200,
            60,
            "Prometheus to start: " + (tmp_path / "prometheus.log").read_text()[-2000:],
        )
        wait_for(lambda: query('up{job="crossfade"}')["data"]["result"], 30, "the first scrape")
        # keep the pipeline busy while Prometheus collects a few samples, so rates are non-zero
        for i in range(6):
            st.sql("UPDATE orders SET qty = qty + 1 WHERE id %% 7 = %s", (i,))
            time.sleep(1)
        st.fence()
        time.sleep(3)
        assert query('up{job="crossfade"}')["data"]["result"][0]["value"][1] == "1"
        failures = []
        for title, expr in dashboard_queries():
            promql = grafana_to_promql(expr)
            r = query(promql)
            if r.get("status") != "success":
                failures.append(f"{title}: {promql}: {r.get('error')}")
            elif not r["data"]["result"] and not metric_names(expr) <= MAY_BE_EMPTY:
                failures.append(f"{title}: {promql}: empty result")
        assert not failures, "\n".join(failures)
        # a rate over the live writes must show throughput
        applied = query("sum(rate(crossfade_sync_events_applied_total[1m]))")["data"]["result"]
        assert float(applied[0]["value"][1]) > 0

        def rules_evaluated() -> list[dict[str, Any]] | None:
            groups = json.loads(_get(prom + "/api/v1/rules")[1])["data"]["groups"]
            rules = [r for g in groups for r in g["rules"]]
            return (
                rules
                if rules and all(r.get("lastEvaluation", "").startswith("20") for r in rules)
                else None
            )

        rules = wait_for(rules_evaluated, 30, "Prometheus to evaluate the alert rules")
        assert {r["name"] for r in rules} == {n for n, _ in rule_queries()}
        bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
        assert not bad, bad
        firing = [r["name"] for r in rules if r.get("state") == "firing"]
        assert not firing, f"alerts firing on a healthy pipeline: {firing}"
        _console_charts_from_prometheus(st, prom)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def _console_charts_from_prometheus(st: Stack, prom: str) -> None:
    """``crossfade console --prometheus``: the charts hold what Prometheus recorded (the applied
    rate of the writes above), not only the console's own samples since it started."""
    from tests.conftest import Proc

    port = free_port()
    p = Proc(
        "console-prom",
        ["console", "--port", str(port), "--interval", "1", "--prometheus", prom],
        st._env(),
        st.dir / "console-prom.log",
    )
    st.procs.append(p)
    base = f"http://127.0.0.1:{port}"

    def charted() -> dict[str, Any] | None:
        code, body = _get(base + "/api/state")
        if code != 200:
            return None
        s = json.loads(body)
        return s if s.get("history", {}).get("source") == "prometheus" else None

    state = wait_for(charted, 30, "the console to read Prometheus: " + p.tail())
    orders = next(t for t in state["tables"] if t["table"] == "public.orders")
    rates = [v for _, v in orders["series"]["rate"] if v]
    assert rates and max(rates) > 0, orders["series"]["rate"]
    # the samples are Prometheus' (every 5 s back through its history), not the console's 1 s ones
    times = [t for t, _ in orders["series"]["rate"]]
    assert len(times) >= 2 and min(b - a for a, b in zip(times, times[1:], strict=False)) >= 4.9
    assert p.stop() == 0
