"""helm/crossfade, rendered and linted by the real Helm engine, validated against Kubernetes.

Helm: the ``helm-python-sdk`` wheel (Helm v4's engine behind a C library; STACK.md). Kubernetes
schemas: ``kubernetes-validate`` (offline, strict: unknown fields fail). What is checked against
what docs/deploy.md promises: replicas, Secrets referenced by name, probe paths, the security
context, and that the ConfigMap's crossfade.yaml loads with crossfade's own config loader.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from crossfade.config import Settings, load_settings
from tests.deploy import values_schema

helm_python = pytest.importorskip(
    "helm_python", reason="helm-python-sdk (dev extra) carries the Helm engine"
)
kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate (dev extra) checks the rendered manifests"
)

ROOT = values_schema.ROOT
CHART = values_schema.CHART
PROD_VALUES = Path(__file__).with_name("values-prod.yaml")
DOCS = ROOT / "docs" / "deploy.md"
KUBE_VERSION = "1.30.0"
RELEASE, NAMESPACE = "mig", "crossfade"
FULL = f"{RELEASE}-crossfade"
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "KafkaTopic", "KafkaUser", "KafkaConnector"}
STRIMZI_KINDS = {"KafkaTopic", "KafkaUser", "KafkaConnector"}
STRIMZI_SCHEMAS = Path(__file__).with_name("strimzi-crds.schema.json")
SECRET_ENV = {
    "CROSSFADE_SOURCE__DSN": "postgresql://legacy:pw@legacy-db:5432/crm",
    "CROSSFADE_TARGET__DSN": "postgresql://new:pw@new-db:5432/crm",
    "CROSSFADE_KAFKA__SASL_PASSWORD": "kafka-pw",
}


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def prod_values() -> dict[str, Any]:
    return yaml.safe_load(PROD_VALUES.read_text())


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every manifest the chart renders with ``values`` (NOTES.txt left out)."""
    chart = helm_python.Chart.load(CHART)
    out = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("metadata", {}).setdefault("annotations", {})
                docs.append({"_template": path, **doc})
    return docs


def render_error(values: dict[str, Any]) -> str:
    with pytest.raises(helm_python.HelmError) as info:
        render(values)
    return str(info.value)


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def container(deploy: dict[str, Any]) -> dict[str, Any]:
    (c,) = deploy["spec"]["template"]["spec"]["containers"]
    return c


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}


def secret_refs(c: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {
        e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in c["env"]
        if "valueFrom" in e
    }


def load_rendered_config(
    docs: list[dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str] | None = None,
) -> Settings:
    """crossfade.yaml from the rendered ConfigMap, loaded the way the pods load it."""
    cm = by_kind(docs, "ConfigMap")[f"{FULL}-config"]
    path = tmp_path / "crossfade.yaml"
    path.write_text(cm["data"]["crossfade.yaml"])
    for k in list(__import__("os").environ):
        if k.startswith("CROSSFADE_"):
            monkeypatch.delenv(k)
    for k, v in {**SECRET_ENV, **(env or {})}.items():
        monkeypatch.setenv(k, v)
    return load_settings(path)


def strip(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "_template"}


# ------------------------------------------------------------------------------------------------
# Helm itself: lint, schema
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [None, "prod"], ids=["default", "prod"])
def test_helm_lint_is_clean(values: str | None) -> None:
    report = helm_python.lint(
        CHART,
        prod_values() if values else None,
        strict=True,
        namespace=NAMESPACE,
        kube_version=f"v{KUBE_VERSION}",
    )
    assert report["errors"] == []
    # severity 1 is "info" (e.g. "icon is recommended"); warnings and errors must not happen
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_values_schema_is_generated_from_the_config_model() -> None:
    checked_in = json.loads((CHART / "values.schema.json").read_text())
    assert checked_in == values_schema.build(), (
        "helm/crossfade/values.schema.json is stale (crossfade's config model changed?): "
        "run .venv/bin/python tests/deploy/values_schema.py --write"
    )


def test_config_values_map_one_to_one_onto_settings() -> None:
    """Every Settings field has a `config` value with the same name and nothing else does,
    apart from the secrets, which must come from Secrets."""
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["config"]
    secrets = {
        (model, field)
        for model, fields in values_schema.SECRET_FIELDS.items()
        for field in fields
        for model in [
            {"DatabaseConfig": "source", "KafkaConfig": "kafka", "CutoverConfig": "cutover"}[model]
        ]
    } | {("target", "dsn")}
    for section, model in Settings.model_fields.items():
        assert section in defaults, f"config.{section} missing from values.yaml"
        sub = getattr(model.annotation, "model_fields", None)
        if sub is None:
            continue
        expected = {f for f in sub if (section, f) not in secrets}
        assert set(defaults[section]) == expected, (
            f"config.{section} keys differ from {model.annotation.__name__}"
        )
    assert set(defaults) == set(Settings.model_fields)


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"sync": {"replicas": "two"}}, "replicas"),
        ({"config": {"sync": {"batch_sise": 10}}}, "batch_sise"),  # a typo in crossfade's config
        (
            {"config": {"source": {"dsn": "postgresql://u:pw@h/db"}}},
            "dsn",
        ),  # secrets never in values
        ({"config": {"kafka": {"sasl_password": "pw"}}}, "sasl_password"),
        # issue 18: every other secret is refused inline too
        ({"config": {"kafka": {"extra": {"ssl.key.password": "pw"}}}}, "ssl.key.password"),
        (
            {"config": {"kafka": {"extra": {"sasl.oauthbearer.client.secret": "s"}}}},
            "sasl.oauthbearer.client.secret",
        ),
        ({"config": {"capture": {"properties": {"database.password": "pw"}}}}, "database.password"),
        ({"config": {"capture": {"properties": {"some.API_Token": "t"}}}}, "some.API_Token"),
        (
            {"config": {"kafka": {"schema_registry_url": "https://u:pw@registry:8081"}}},
            "schema_registry_url",
        ),
        ({"config": {"cutover": {"flip_http": "https://router/flip?token=t"}}}, "flip_http"),
        ({"capture": {"kafkaConnect": {"url": "http://admin:pw@connect:8083"}}}, "url"),
        ({"image": {"digest": "latest"}}, "digest"),
        ({"config": {"tables": ["accounts"]}}, "tables"),  # not schema.table
        ({"config": {"tables": []}}, "tables"),
        ({"config": {"capture": {"snapshot_mode": "sometimes"}}}, "snapshot_mode"),
        ({"config": {"ops": {"metrics_port": None}}}, "metrics_port"),
        ({"capture": {"mode": "debezium-server"}}, "mode"),
        ({"secrets": {"sourceDsn": {"name": ""}}}, "sourceDsn"),
    ],
)
def test_schema_refuses_bad_values(values: dict[str, Any], complaint: str) -> None:
    assert complaint in render_error(values)


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"sync": {"replicas": 5}}, "more than config.kafka.partitions"),
        ({"capture": {"mode": "kafkaConnect"}}, "schema_registry_url"),
        (
            {
                "persistence": {"enabled": True},
                "capture": {"mode": "kafkaConnect"},
                "config": {"kafka": {"schema_registry_url": "http://sr:8081"}},
            },
            "persistence",
        ),
        ({"console": {"enabled": True}}, "secrets.consoleToken.name"),
    ],
)
def test_chart_refuses_inconsistent_values(values: dict[str, Any], complaint: str) -> None:
    assert complaint in render_error(values)


# ------------------------------------------------------------------------------------------------
# Every rendered manifest is a valid Kubernetes object
# ------------------------------------------------------------------------------------------------

SCENARIOS: dict[str, dict[str, Any]] = {
    "default": {},
    "prod": yaml.safe_load(PROD_VALUES.read_text()),
    "kafka-connect": {
        "capture": {"mode": "kafkaConnect"},
        "config": {"kafka": {"schema_registry_url": "http://schema-registry:8081"}},
    },
    "everything-on": {
        "console": {"enabled": True, "extraArgs": ["--allow-actions"]},
        "persistence": {"enabled": True, "existingClaim": "capture-offsets"},
        "monitoring": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
        "serviceAccount": {"create": False, "name": "migrations"},
        "sync": {
            "replicas": 4,
            "podDisruptionBudget": {"enabled": False},
            "nodeSelector": {"pool": "etl"},
        },
        "imagePullSecrets": [{"name": "regcred"}],
        "extraEnv": [{"name": "CROSSFADE_SYNC__BATCH_SIZE", "value": "20000"}],
        "networkPolicy": {
            "enabled": True,
            "metricsFrom": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                    }
                }
            ],
            "consoleFrom": [{"podSelector": {"matchLabels": {"role": "cutover-coordinator"}}}],
            "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}],
        },
        "image": {"digest": "sha256:" + "ab" * 32},
        "secrets": {
            "consoleToken": {"name": "crossfade-console"},
            "cutoverFlipHttp": {"name": "crossfade-cutover", "key": "flip-url"},
            "kafkaExtra": {"ssl.key.password": {"name": "kafka-tls", "key": "key-password"}},
            "captureProperties": {
                "database.sslpassword": {"name": "crossfade-db", "key": "sslkey-password"}
            },
        },
    },
}


STRIMZI_VALUES: dict[str, Any] = {
    "capture": {"mode": "kafkaConnect"},
    "config": {
        "kafka": {
            "schema_registry_url": "http://schema-registry:8081",
            "partitions": 6,
            "sasl_username": "crossfade",
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
        },
        "tables": ["public.accounts", "public.Invoice_Lines"],
        "capture": {"properties": {"snapshot.fetch.size": "20000"}},
    },
    "strimzi": {
        "kafkaCluster": "prod-kafka",
        "topics": {"enabled": True, "retentionMs": 1209600000},
        "kafkaUser": {"enabled": True},
        "kafkaConnector": {
            "enabled": True,
            "connectCluster": "prod-connect",
            "database": {"hostname": "legacy-db.db", "port": 6432, "user": "dbz", "dbname": "crm"},
        },
    },
    "secrets": {
        "kafkaSaslPassword": {"name": "crossfade", "key": "password"},
        "captureProperties": {"database.sslpassword": {"name": "crossfade-db", "key": "sslkey"}},
        "consoleToken": {"name": "crossfade-console"},
    },
    "console": {
        "enabled": True,
        "ingress": {"enabled": True, "className": "nginx", "host": "cutover.example.com"},
        "url": "https://cutover.example.com/",
    },
    "verify": {"cronJob": {"enabled": True, "pushgateway": "http://pushgateway.monitoring:9091"}},
    "networkPolicy": {"enabled": True},
    "monitoring": {
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True, "runbookBaseUrl": "https://wiki.example/ops.html"},
    },
}
SCENARIOS["strimzi"] = STRIMZI_VALUES
SCENARIOS["strimzi-v1beta2"] = {
    **STRIMZI_VALUES,
    "strimzi": {**STRIMZI_VALUES["strimzi"], "apiVersion": "kafka.strimzi.io/v1beta2"},
}


def _strict(schema: Any) -> Any:
    """Strimzi's openAPIV3Schema as a strict JSON Schema: an object with listed properties takes
    no other (Kubernetes would prune an unknown field silently: a typo must fail here)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            out.get("type") == "object"
            and "properties" in out
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            out.setdefault("additionalProperties", False)
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def validate_strimzi(doc: dict[str, Any]) -> None:
    """A Strimzi resource against the schema of its kind and apiVersion from Strimzi's CRDs."""
    import jsonschema

    schemas = json.loads(STRIMZI_SCHEMAS.read_text())
    schema = _strict(schemas[doc["apiVersion"]][doc["kind"]])
    jsonschema.validate(strip(doc), schema)
    name = doc["metadata"]["name"]
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name) and len(name) <= 253, name


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_manifest_validates_against_kubernetes(scenario: str) -> None:
    docs = render(SCENARIOS[scenario])
    assert docs
    for doc in docs:
        if doc["kind"] in STRIMZI_KINDS:
            validate_strimzi(doc)
        elif doc["kind"] in CRD_KINDS:
            continue  # prometheus-operator CRDs: no offline schema; checked structurally below
        else:
            kubernetes_validate.validate(strip(doc), KUBE_VERSION, strict=True)
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE, doc["_template"]


def test_strimzi_validation_catches_mistakes() -> None:
    """The Strimzi schemas used above refuse what Strimzi refuses (so the check can fail)."""
    import jsonschema

    user = by_kind(render(STRIMZI_VALUES), "KafkaUser")["crossfade"]
    bad = json.loads(json.dumps(strip(user)))
    bad["spec"]["authorization"]["acls"][0]["operations"] = ["Raed"]
    with pytest.raises(jsonschema.ValidationError):
        validate_strimzi(bad)
    (topic, *_) = by_kind(render(STRIMZI_VALUES), "KafkaTopic").values()
    bad = json.loads(json.dumps(strip(topic)))
    bad["spec"]["partition"] = 3  # a typo Kubernetes would prune silently
    with pytest.raises(jsonschema.ValidationError):
        validate_strimzi(bad)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_rendered_config_loads_with_crossfade(
    scenario: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = render(SCENARIOS[scenario])
    settings = load_rendered_config(docs, tmp_path, monkeypatch)
    # the secrets came from the environment, exactly as the pods get them
    assert settings.source.conninfo == SECRET_ENV["CROSSFADE_SOURCE__DSN"]
    assert settings.target.conninfo == SECRET_ENV["CROSSFADE_TARGET__DSN"]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    expected_tables = (SCENARIOS[scenario].get("config", {}).get("tables")) or values["config"][
        "tables"
    ]
    assert list(settings.tables) == expected_tables
    # the probes, Service and ServiceMonitor use the port crossfade serves /metrics on
    for deploy in by_kind(docs, "Deployment").values():
        c = container(deploy)
        if c["name"] in ("sync", "capture"):
            assert {p["name"]: p["containerPort"] for p in c["ports"]}[
                "metrics"
            ] == settings.ops.metrics_port
            assert settings.ops.metrics_host == "0.0.0.0"
            # every container reads the file through CROSSFADE_CONFIG and -c alike
            assert env_of(c)["CROSSFADE_CONFIG"] == "/etc/crossfade/crossfade.yaml"
            assert c["args"][-2:] == ["-c", "/etc/crossfade/crossfade.yaml"]


# ------------------------------------------------------------------------------------------------
# What docs/deploy.md promises
# ------------------------------------------------------------------------------------------------


def _check_pod_hardening(deploy: dict[str, Any]) -> None:
    spec = deploy["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001
    assert spec["automountServiceAccountToken"] is False
    sc = container(deploy)["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m["name"] for m in container(deploy)["volumeMounts"]}
    assert mounts["/tmp"] == "tmp" and mounts["/etc/crossfade"] == "config"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["tmp"] == {"name": "tmp", "emptyDir": {}}
    assert volumes["config"]["configMap"]["name"] == f"{FULL}-config"
    assert "checksum/config" in deploy["spec"]["template"]["metadata"]["annotations"]


def _check_probes(c: dict[str, Any], port: str = "metrics", ready: str = "/readyz") -> None:
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": port}
    assert c["readinessProbe"]["httpGet"] == {"path": ready, "port": port}


def test_defaults_render_what_the_docs_say(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = render()
    deployments = by_kind(docs, "Deployment")
    assert set(deployments) == {f"{FULL}-sync", f"{FULL}-capture"}  # no console by default

    sync, capture = deployments[f"{FULL}-sync"], deployments[f"{FULL}-capture"]
    assert sync["spec"]["replicas"] == 2
    assert sync["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    assert capture["spec"]["replicas"] == 1
    assert capture["spec"]["strategy"] == {"type": "Recreate"}
    assert container(sync)["args"][0] == "sync" and container(capture)["args"][0] == "capture"
    assert container(sync)["image"] == "crossfade:0.1.0"
    for d in (sync, capture):
        _check_pod_hardening(d)
        _check_probes(container(d))
        assert secret_refs(container(d)) == {
            "CROSSFADE_SOURCE__DSN": ("crossfade-db", "source-dsn"),
            "CROSSFADE_TARGET__DSN": ("crossfade-db", "target-dsn"),
        }
        assert (
            container(d)["resources"]["requests"] and container(d)["resources"]["limits"]["memory"]
        )

    # capture state: an emptyDir by default (the docs warn: a restart re-snapshots)
    state = {v["name"]: v for v in capture["spec"]["template"]["spec"]["volumes"]}["capture-state"]
    assert state == {"name": "capture-state", "emptyDir": {}}
    mounts = {m["name"]: m["mountPath"] for m in container(capture)["volumeMounts"]}
    assert (
        mounts["capture-state"]
        == load_rendered_config(docs, tmp_path, monkeypatch).capture.state_dir.as_posix()
    )
    assert not by_kind(docs, "PersistentVolumeClaim")

    pdb = by_kind(docs, "PodDisruptionBudget")[f"{FULL}-sync"]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "sync"

    svc = by_kind(docs, "Service")[f"{FULL}-metrics"]
    assert svc["spec"]["ports"] == [
        {"name": "metrics", "port": 9400, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert not {d["kind"] for d in docs} & CRD_KINDS  # prometheus-operator objects are opt-in
    assert not by_kind(docs, "Secret")  # the chart never creates or holds a secret
    assert not by_kind(docs, "Job")


def test_prod_values_render_what_the_docs_say(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = render(prod_values())
    deployments = by_kind(docs, "Deployment")
    sync, capture = deployments[f"{FULL}-sync"], deployments[f"{FULL}-capture"]
    assert sync["spec"]["replicas"] == 3
    assert container(sync)["image"] == "registry.example.com/platform/crossfade:0.1.0"
    for d in (sync, capture):
        _check_pod_hardening(d)
        _check_probes(container(d))
        assert secret_refs(container(d)) == {
            "CROSSFADE_SOURCE__DSN": ("billing-legacy-db", "dsn"),
            "CROSSFADE_TARGET__DSN": ("billing-new-db", "dsn"),
            "CROSSFADE_KAFKA__SASL_PASSWORD": ("crossfade-kafka-user", "password"),
        }
        mounts = {m["name"]: m["mountPath"] for m in container(d)["volumeMounts"]}
        assert mounts["kafka-ca"] == "/etc/kafka-ca"
    assert (
        sync["spec"]["template"]["spec"]["topologySpreadConstraints"][0]["topologyKey"]
        == "topology.kubernetes.io/zone"
    )

    # persistence: a PVC for Debezium's offsets, kept when the release is deleted
    pvc = by_kind(docs, "PersistentVolumeClaim")[f"{FULL}-capture-state"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    state = {v["name"]: v for v in capture["spec"]["template"]["spec"]["volumes"]}["capture-state"]
    assert state["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]

    settings = load_rendered_config(docs, tmp_path, monkeypatch)
    assert settings.kafka.security_protocol == "SASL_SSL"
    assert settings.kafka.sasl_password is not None
    assert (
        settings.kafka.sasl_password.get_secret_value()
        == SECRET_ENV["CROSSFADE_KAFKA__SASL_PASSWORD"]
    )
    assert settings.capture.properties == {"snapshot.fetch.size": "20000"}
    assert settings.kafka.client_config()["client.id"] == "crossfade-billing"

    sm = by_kind(docs, "ServiceMonitor")[FULL]
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["endpoints"][0] == {
        "port": "metrics",
        "path": "/metrics",
        "interval": "30s",
        "scrapeTimeout": "10s",
        # the dashboard's release variable
        "relabelings": [{"targetLabel": "release", "replacement": RELEASE}],
    }
    assert sm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] == RELEASE
    svc = by_kind(docs, "Service")[f"{FULL}-metrics"]
    selected = sm["spec"]["selector"]["matchExpressions"][0]
    assert svc["metadata"]["labels"][selected["key"]] in selected["values"]

    rule = by_kind(docs, "PrometheusRule")[FULL]
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    alerts = ROOT / "ops" / "prometheus" / "alerts.yaml"
    source = yaml.safe_load(
        (alerts if alerts.exists() else CHART / "files" / "alerts.yaml").read_text()
    )
    assert rule["spec"]["groups"] == source["groups"]  # the rules survive Helm unchanged


@pytest.mark.skipif(
    not shutil.which("promtool"), reason="promtool (Debian's prometheus package) is not installed"
)
def test_rendered_prometheus_rule_passes_promtool(tmp_path: Path) -> None:
    rule = by_kind(render(prod_values()), "PrometheusRule")[FULL]
    f = tmp_path / "rules.yaml"
    f.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    r = subprocess.run(["promtool", "check", "rules", str(f)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_kafka_connect_mode_registers_the_connector_with_a_job() -> None:
    docs = render(SCENARIOS["kafka-connect"])
    assert f"{FULL}-capture" not in by_kind(docs, "Deployment")
    job = by_kind(docs, "Job")[f"{FULL}-connector-register"]
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "post-install,post-upgrade"
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    c = container(job)
    assert c["args"][:4] == ["connector", "register", "-c", "/etc/crossfade/crossfade.yaml"]
    assert (
        c["args"][c["args"].index("--connect-url") + 1]
        == "http://my-connect-cluster-connect-api:8083"
    )
    assert "--prepare" in c["args"]
    assert set(secret_refs(c)) == {"CROSSFADE_SOURCE__DSN", "CROSSFADE_TARGET__DSN"}
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    _check_pod_hardening(job)


def test_console_renders_behind_its_flag() -> None:
    docs = render(SCENARIOS["everything-on"])
    console = by_kind(docs, "Deployment")[f"{FULL}-console"]
    c = container(console)
    assert c["args"][:3] == ["console", "-c", "/etc/crossfade/crossfade.yaml"]
    assert c["args"][c["args"].index("--port") + 1] == "8421"
    assert c["args"][-1] == "--allow-actions"
    assert secret_refs(c)["CROSSFADE_CONSOLE_TOKEN"] == ("crossfade-console", "console-token")
    _check_probes(c, port="http", ready="/healthz")
    _check_pod_hardening(console)
    svc = by_kind(docs, "Service")[f"{FULL}-console"]
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    sm = by_kind(docs, "ServiceMonitor")[FULL]
    console_ep = sm["spec"]["endpoints"][1]
    assert console_ep["port"] == "http"
    assert console_ep["authorization"]["credentials"] == {
        "name": "crossfade-console",
        "key": "console-token",
    }
    # an existing claim: no PVC of the chart's own
    assert not by_kind(docs, "PersistentVolumeClaim")
    assert not by_kind(docs, "ServiceAccount")
    assert not by_kind(docs, "PodDisruptionBudget")


def test_grafana_dashboard_configmap() -> None:
    docs = render()
    cm = by_kind(docs, "ConfigMap")[f"{FULL}-dashboard"]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(cm["data"]["crossfade.json"])
    assert dashboard == json.loads((CHART / "files" / "dashboard.json").read_text())
    assert dashboard["uid"]


@pytest.mark.parametrize(
    ("chart_file", "source"),
    [
        ("dashboard.json", "ops/grafana/crossfade.json"),
        ("alerts.yaml", "ops/prometheus/alerts.yaml"),
    ],
)
def test_chart_files_are_copies_of_the_ops_files(chart_file: str, source: str) -> None:
    src = ROOT / source
    if not src.exists():
        pytest.skip(f"{source} does not exist yet: the chart ships its placeholder")
    assert (CHART / "files" / chart_file).read_bytes() == src.read_bytes(), (
        f"helm/crossfade/files/{chart_file} differs from {source}: cp {source} helm/crossfade/files/{chart_file}"
    )


def test_docs_describe_the_chart() -> None:
    """docs/deploy.md names what the tests above check, so the two cannot silently part."""
    text = DOCS.read_text()
    for phrase in [
        "CROSSFADE_SOURCE__DSN",
        "CROSSFADE_TARGET__DSN",
        "CROSSFADE_KAFKA__SASL_PASSWORD",
        "CROSSFADE_CONSOLE_TOKEN",
        "crossfade-db",
        "source-dsn",
        "target-dsn",
        "/healthz",
        "/readyz",
        "readOnlyRootFilesystem",
        "runAsNonRoot",
        "persistence.enabled",
        "values-prod.yaml",
        "kafkaConnect",
        "grafana_dashboard",
        "monitoring.serviceMonitor.enabled",
        "monitoring.prometheusRule.enabled",
        "Strimzi",
        "crossfade connector register",
        "config.kafka.partitions",
        # issue 19
        "wal_level = logical",
        "REPLICATION",
        "CREATE PUBLICATION",
        "networkPolicy.monitoringNamespaces",
        "networkPolicy.ingressNamespaces",
        "verify.cronJob.enabled",
        "verify.cronJob.pushgateway",
        "runbookBaseUrl",
        "KafkaTopic",
        "KafkaUser",
        "KafkaConnector",
        "strimzi-crds.schema.json",
        "crossfade connector prepare",
    ]:
        assert phrase in text, f"docs/deploy.md does not mention {phrase}"


# ------------------------------------------------------------------------------------------------
# Issue 18: no secret in a rendered manifest, every one from a Secret; a NetworkPolicy option
# ------------------------------------------------------------------------------------------------


def test_secrets_come_from_secrets_and_the_configmap_holds_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crossfade.config import is_secret_key

    docs = render(SCENARIOS["everything-on"])
    cm = by_kind(docs, "ConfigMap")[f"{FULL}-config"]["data"]["crossfade.yaml"]

    def keys(node: Any) -> list[str]:
        if isinstance(node, dict):
            return [k for k, v in node.items() for k in [str(k), *keys(v)]]
        if isinstance(node, list):
            return [k for v in node for k in keys(v)]
        return []

    assert not [k for k in keys(yaml.safe_load(cm)) if is_secret_key(k)], cm
    assert "@" not in cm
    sync = container(by_kind(docs, "Deployment")[f"{FULL}-sync"])
    refs = secret_refs(sync)
    assert refs["CROSSFADE_CUTOVER__FLIP_HTTP"] == ("crossfade-cutover", "flip-url")
    assert refs["CROSSFADE_KAFKA__EXTRA__ssl.key.password"] == ("kafka-tls", "key-password")
    assert refs["CROSSFADE_CAPTURE__PROPERTIES__database.sslpassword"] == (
        "crossfade-db",
        "sslkey-password",
    )
    assert sync["image"] == "crossfade@sha256:" + "ab" * 32
    # the pods' environment reaches crossfade's settings, merged with the ConfigMap's
    env = {
        "CROSSFADE_KAFKA__EXTRA__ssl.key.password": "kp-123456",
        "CROSSFADE_CAPTURE__PROPERTIES__database.sslpassword": "dp-123456",
    }
    settings = load_rendered_config(docs, tmp_path, monkeypatch, env)
    assert settings.kafka.client_config()["ssl.key.password"] == "kp-123456"
    assert settings.capture.properties["database.sslpassword"] == "dp-123456"


def test_kafka_connect_url_with_credentials_comes_from_a_secret() -> None:
    docs = render(
        {
            "capture": {"mode": "kafkaConnect"},
            "secrets": {
                "schemaRegistryUrl": {"name": "sr", "key": "url"},
                "kafkaConnectUrl": {"name": "connect", "key": "url"},
            },
        }
    )
    (job,) = by_kind(docs, "Job").values()
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert "--connect-url" not in c["args"]
    refs = secret_refs(c)
    assert refs["CROSSFADE_CONNECT_URL"] == ("connect", "url")
    assert refs["CROSSFADE_KAFKA__SCHEMA_REGISTRY_URL"] == ("sr", "url")


def test_network_policy_option() -> None:
    assert "NetworkPolicy" not in {d["kind"] for d in render()}  # off by default
    (np,) = by_kind(render(SCENARIOS["everything-on"]), "NetworkPolicy").values()
    spec = np["spec"]
    assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == RELEASE
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    ports = [[p["port"] for p in rule["ports"]] for rule in spec["ingress"]]
    # /metrics of capture and sync, and the console's own /metrics on its port
    assert ports == [["metrics", "http"], ["http"]]
    # enabled with the defaults: Prometheus from the monitoring namespace, no console
    (np,) = by_kind(render({"networkPolicy": {"enabled": True}}), "NetworkPolicy").values()
    assert np["spec"]["ingress"] == [
        {
            "from": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                    }
                }
            ],
            "ports": [{"port": "metrics", "protocol": "TCP"}],
        }
    ]
    # with the console: its port from the ingress controller's namespace too
    (np,) = by_kind(render(STRIMZI_VALUES), "NetworkPolicy").values()
    console_rule = np["spec"]["ingress"][1]
    assert console_rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    ]
    assert console_rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    # nothing listed: nobody may connect
    (np,) = by_kind(
        render(
            {
                "networkPolicy": {
                    "enabled": True,
                    "monitoringNamespaces": [],
                    "ingressNamespaces": [],
                }
            }
        ),
        "NetworkPolicy",
    ).values()
    assert np["spec"]["ingress"] == [] and np["spec"]["policyTypes"] == ["Ingress"]


def test_the_mapping_as_a_file_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--set-file mappingFile=crm-mapping.yaml` (what a values entry gets from Helm): the chart
    mounts it beside crossfade.yaml, which names it, and crossfade loads it; a file name under
    config.mapping is refused with the way to pass it."""
    text = (ROOT / "examples" / "crm-mapping.yaml").read_text()
    docs = render(
        {
            "mappingFile": text,
            "config": {"tables": ["public.accounts", "public.contacts", "public.addresses"]},
        }
    )
    cm = by_kind(docs, "ConfigMap")[f"{FULL}-config"]
    assert cm["data"]["mapping.yaml"].strip() == text.strip()
    (tmp_path / "mapping.yaml").write_text(cm["data"]["mapping.yaml"])
    settings = load_rendered_config(docs, tmp_path, monkeypatch)
    assert settings.mapping is not None and "public.contacts" in settings.mapping.tables
    assert settings.mapping.dedup
    plain = render({"config": {"tables": ["public.accounts"]}})
    checksum = {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        for d in by_kind(docs, "Deployment").values()
    }
    assert all(
        checksum[n] != d["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        for n, d in by_kind(plain, "Deployment").items()
    )
    err = render_error({"config": {"mapping": "crm-mapping.yaml"}})
    assert "--set-file mappingFile=crm-mapping.yaml" in err, err
    err = render_error({"mappingFile": "tables: [", "config": {"mapping": None}})
    assert "mappingFile is not YAML" in err, err


# ------------------------------------------------------------------------------------------------
# Issue 19: the console behind an Ingress, verify on a schedule, the rules' runbooks, Strimzi
# ------------------------------------------------------------------------------------------------


def test_console_ingress_and_dashboard_link() -> None:
    docs = render(STRIMZI_VALUES)
    (ing,) = by_kind(docs, "Ingress").values()
    assert ing["spec"]["ingressClassName"] == "nginx"
    (rule,) = ing["spec"]["rules"]
    assert rule["host"] == "cutover.example.com"
    assert rule["http"]["paths"][0]["backend"]["service"] == {
        "name": f"{FULL}-console",
        "port": {"name": "http"},
    }
    dashboard = json.loads(
        by_kind(docs, "ConfigMap")[f"{FULL}-dashboard"]["data"]["crossfade.json"]
    )
    (var,) = [v for v in dashboard["templating"]["list"] if v["name"] == "console_url"]
    assert var["query"] == var["current"]["value"] == "https://cutover.example.com/"
    assert not by_kind(render(), "Ingress")


def test_verify_cronjob_runs_verify_and_pushes_its_result() -> None:
    assert not by_kind(render(), "CronJob")
    (cj,) = by_kind(render(STRIMZI_VALUES), "CronJob").values()
    assert cj["spec"]["concurrencyPolicy"] == "Forbid"
    job = cj["spec"]["jobTemplate"]
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] == 0
    (c,) = pod["containers"]
    assert c["args"] == [
        "verify",
        "-c",
        "/etc/crossfade/crossfade.yaml",
        "--no-progress",
        "--pushgateway",
        "http://pushgateway.monitoring:9091",
    ]
    assert secret_refs(c)["CROSSFADE_SOURCE__DSN"] == ("crossfade-db", "source-dsn")
    _check_pod_hardening({"spec": job["spec"]})
    # the schema refuses credentials in the Pushgateway's URL (they would sit in the pod spec)
    assert "pushgateway" in render_error(
        {"verify": {"cronJob": {"enabled": True, "pushgateway": "http://u:pw@pgw:9091"}}}
    )


def test_prometheus_rule_runbooks_and_kafka_connect_without_console() -> None:
    rule = by_kind(render(STRIMZI_VALUES), "PrometheusRule")[FULL]
    rules = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    for r in rules:
        assert r["annotations"]["runbook_url"] == (
            "https://wiki.example/ops.html#" + r["alert"].lower()
        )
    assert "CrossfadeCaptureAbsent" in {r["alert"] for r in rules}
    # on Kafka Connect without the console nothing could ever show capture streaming
    values = {**STRIMZI_VALUES, "console": {"enabled": False}}
    rule = by_kind(render(values), "PrometheusRule")[FULL]
    names = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert "CrossfadeCaptureAbsent" not in names and "CrossfadeSyncAbsent" in names


def test_strimzi_topics_one_per_change_topic() -> None:
    docs = render(STRIMZI_VALUES)
    topics = {t["spec"]["topicName"]: t for t in by_kind(docs, "KafkaTopic").values()}
    assert set(topics) == {
        "crossfade.public.accounts",
        "crossfade.public.Invoice_Lines",
        "crossfade.__control",
        "crossfade.__dlq",
        # Debezium on Kafka Connect also writes these
        "crossfade.crossfade.fence",
        "crossfade.crossfade.debezium_signal",
        "__debezium-heartbeat.crossfade",
    }  # a Schema Registry is set: no crossfade.__schemas
    change = topics["crossfade.public.Invoice_Lines"]
    assert change["metadata"]["labels"]["strimzi.io/cluster"] == "prod-kafka"
    assert change["spec"]["partitions"] == 6 and change["spec"]["replicas"] == 3
    assert change["spec"]["config"] == {"retention.ms": "1209600000"}
    assert change["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert topics["crossfade.__control"]["spec"]["config"] == {"cleanup.policy": "compact"}
    assert topics["crossfade.__control"]["spec"]["partitions"] == 1
    # registry-less (embedded capture): the schemas topic instead of Debezium's own
    docs = render({"strimzi": {"topics": {"enabled": True}}})
    names = {t["spec"]["topicName"] for t in by_kind(docs, "KafkaTopic").values()}
    assert names == {
        "crossfade.public.accounts",
        "crossfade.__control",
        "crossfade.__schemas",
        "crossfade.__dlq",
    }


def test_strimzi_user_has_exactly_the_acls_crossfade_needs() -> None:
    (user,) = by_kind(render(STRIMZI_VALUES), "KafkaUser").values()
    assert user["metadata"]["name"] == "crossfade"
    assert user["spec"]["authentication"] == {"type": "scram-sha-512"}
    acls = {
        (a["resource"]["type"], a["resource"]["name"], a["resource"]["patternType"]): a[
            "operations"
        ]
        for a in user["spec"]["authorization"]["acls"]
    }
    assert acls == {
        ("topic", "crossfade.", "prefix"): ["Describe", "Read", "Write"],
        ("group", "crossfade-sync", "prefix"): ["Describe", "Read"],
        ("group", "crossfade-probe-", "prefix"): ["Describe", "Read"],
    }
    # without KafkaTopics crossfade creates its topics; without a registry, its schema readers
    (user,) = by_kind(render({"strimzi": {"kafkaUser": {"enabled": True}}}), "KafkaUser").values()
    acls = {a["resource"]["name"]: a["operations"] for a in user["spec"]["authorization"]["acls"]}
    assert acls["crossfade."] == ["Describe", "Read", "Write", "Create"]
    assert acls["crossfade-schemas-"] == ["Describe", "Read"]


def test_strimzi_connector_is_what_crossfade_renders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The KafkaConnector's properties equal `crossfade connector render` for the same config
    (the database's address from the chart's values: the DSN is a Secret)."""
    from crossfade.capture.connector import kafka_connect_config

    docs = render(STRIMZI_VALUES)
    (kc,) = by_kind(docs, "KafkaConnector").values()
    assert kc["metadata"]["labels"]["strimzi.io/cluster"] == "prod-connect"
    assert kc["metadata"]["name"] == "crossfade-crossfade"
    settings = load_rendered_config(
        docs,
        tmp_path,
        monkeypatch,
        {
            "CROSSFADE_SOURCE__DSN": "postgresql://dbz:secret@legacy-db.db:6432/crm",
            "CROSSFADE_CAPTURE__PROPERTIES__database.sslpassword": "kp-123456",
            "CROSSFADE_KAFKA__SASL_PASSWORD": "pw",
        },
    )
    rendered = kafka_connect_config(settings)
    props = dict(rendered["config"])
    assert kc["spec"]["class"] == props.pop("connector.class")
    assert kc["spec"]["tasksMax"] == int(props.pop("tasks.max"))
    assert kc["spec"]["config"] == props
    assert props["database.sslpassword"] == "${env:CROSSFADE_CONNECT_DATABASE_SSLPASSWORD}"
    # the registration Job now only prepares the source and Kafka
    job = by_kind(docs, "Job")[f"{FULL}-connector-register"]
    assert container(job)["args"] == ["connector", "prepare", "-c", "/etc/crossfade/crossfade.yaml"]
    assert "kafkaConnect" in render_error(
        {"strimzi": {"kafkaConnector": {"enabled": True}}}
    )  # embedded capture runs Debezium itself
