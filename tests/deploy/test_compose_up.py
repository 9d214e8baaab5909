"""docker-compose.yml brought up for real (testcontainers), where a Docker engine runs.

The whole production path: legacy PostgreSQL -> Debezium on Kafka Connect -> Confluent Avro via the
Schema Registry -> Apache Kafka -> crossfade sync -> new PostgreSQL. The snapshot arrives, then
live inserts, updates and deletes. Builds both images on first run (minutes).

Skipped where no Docker engine answers (these development machines: the docker client is
installed, no daemon runs); tests/deploy/test_compose.py checks the file statically everywhere.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from tests.deploy.values_schema import ROOT


def _docker_engine_problem() -> str | None:
    if not shutil.which("docker"):
        return "no docker client on PATH"
    try:
        r = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`docker info` failed: {exc}"
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
        return f"no Docker engine answers `docker info` ({last})"
    return None


_PROBLEM = _docker_engine_problem()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        _PROBLEM is not None, reason=f"docker-compose stack test needs a Docker engine: {_PROBLEM}"
    ),
]


def wait_for(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            v = pred()
            if v:
                return v
        except Exception as exc:  # noqa: BLE001 - services still starting
            last = exc
        time.sleep(2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last})")


@pytest.fixture(scope="module")
def stack() -> Iterator[Any]:
    from testcontainers.compose import DockerCompose

    compose = DockerCompose(
        str(ROOT), compose_file_name="docker-compose.yml", build=True, wait=False
    )
    compose.start()
    try:
        yield compose
    finally:
        try:
            print(compose.get_logs()[0][-20000:])
        finally:
            compose.stop()


def _dsn(stack: Any, service: str) -> str:
    host = stack.get_service_host(service, 5432)
    port = stack.get_service_port(service, 5432)
    return f"postgresql://crossfade:crossfade@{host}:{port}/crm"


def _count(dsn: str, sql: str, params: Any = None) -> int:
    with psycopg.connect(dsn, connect_timeout=5) as c:
        row = c.execute(sql, params).fetchone()
        return int(row[0]) if row else 0


def test_changes_flow_from_legacy_to_new_through_kafka_connect(stack: Any) -> None:
    legacy, new = _dsn(stack, "legacy-db"), _dsn(stack, "new-db")

    connect = f"http://{stack.get_service_host('connect', 8083)}:{stack.get_service_port('connect', 8083)}"

    def connector_running() -> bool:
        with urllib.request.urlopen(f"{connect}/connectors/crossfade-crm/status", timeout=5) as r:
            status = json.load(r)
        return status["connector"]["state"] == "RUNNING" and all(
            t["state"] == "RUNNING" for t in status["tasks"]
        )

    wait_for(connector_running, 600, "the Debezium connector to run on Kafka Connect")

    # the initial snapshot of the seeded CRM
    expected = _count(legacy, "SELECT count(*) FROM public.accounts")
    wait_for(
        lambda: _count(new, "SELECT count(*) FROM public.accounts") == expected,
        600,
        "the snapshot in new-db",
    )

    # live changes
    with psycopg.connect(legacy, autocommit=True) as c:
        new_id = c.execute(
            "INSERT INTO public.accounts (name, annual_revenue) VALUES ('compose-e2e', 12.34) RETURNING id"
        ).fetchone()[0]
        c.execute("UPDATE public.accounts SET name = 'renamed-e2e' WHERE id = 1")
        c.execute("DELETE FROM public.addresses WHERE id = 1")
    wait_for(
        lambda: (
            _count(
                new,
                "SELECT count(*) FROM public.accounts WHERE id = %s AND annual_revenue = 12.34",
                (new_id,),
            )
            == 1
        ),
        300,
        "the insert in new-db",
    )
    wait_for(
        lambda: (
            _count(
                new, "SELECT count(*) FROM public.accounts WHERE id = 1 AND name = 'renamed-e2e'"
            )
            == 1
        ),
        300,
        "the update in new-db",
    )
    wait_for(
        lambda: _count(new, "SELECT count(*) FROM public.addresses WHERE id = 1") == 0,
        300,
        "the delete in new-db",
    )
