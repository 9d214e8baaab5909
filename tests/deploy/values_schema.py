"""The Helm chart's ``values.schema.json``, built from crossfade's config model.

The ``config`` subtree of the values *is* crossfade's ``Settings`` (services/crossfade/config.py),
so its schema is generated from ``Settings.model_json_schema()``: the chart cannot accept a key
crossfade would refuse, nor miss one it knows. The secrets are cut out or refused (``source.dsn``,
``target.dsn``, ``kafka.sasl_password``, ``cutover.flip_http``, user info in a URL, and every
``kafka.extra`` / ``capture.properties`` key naming a password, secret, token or credential: they
come from Kubernetes Secrets as environment variables). The rest of the values (images, replicas,
probes...) is described here by hand.

``tests/deploy/test_helm_chart.py`` fails when the checked-in file differs from :func:`build`;
regenerate it with::

    .venv/bin/python tests/deploy/values_schema.py --write
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "crossfade"
SCHEMA_FILE = CHART / "values.schema.json"

SECRET_FIELDS = {
    "DatabaseConfig": ["dsn"],
    "KafkaConfig": ["sasl_password"],
    "CutoverConfig": ["flip_http"],
}
"""Settings fields the chart takes from Secrets (environment), never from values."""
NO_USERINFO = r"^[A-Za-z][A-Za-z0-9+.-]*://[^/@]*(/.*)?$"
"""A URL without ``user:password@`` (credentials come from a Secret)."""


def _case_insensitive(pattern: str) -> str:
    """``passw`` -> ``[Pp][Aa][Ss][Ss][Ww]``: JSON Schema patterns have no flags."""
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in pattern)


def _secret_key_pattern() -> str:
    from crossfade.config import SECRET_KEY_RE

    return _case_insensitive(SECRET_KEY_RE.pattern)


def _no_secret_keys(node: dict[str, Any], where: str) -> None:
    node["propertyNames"] = {"not": {"pattern": _secret_key_pattern()}}
    node["description"] = (
        node.get("description", "")
        + f" Keys naming a password, secret, token or credential are refused here: give them in "
        f"secrets.{where}."
    ).strip()


def _strip(node: Any) -> Any:
    """Drop what only pydantic needs: titles, and formats Helm's validator does not know."""
    if isinstance(node, dict):
        return {
            k: _strip(v)
            for k, v in node.items()
            if k not in ("title", "writeOnly") and not (k == "format" and v in ("path", "password"))
        }
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def config_schema() -> dict[str, Any]:
    """Schema of the ``config`` values: ``Settings`` without its secrets."""
    sys.path.insert(0, str(ROOT / "services"))
    from crossfade.config import TABLE_RE, Settings

    schema = copy.deepcopy(Settings.model_json_schema())
    defs = schema.pop("$defs")
    for model, fields in SECRET_FIELDS.items():
        for f in fields:
            defs[model]["properties"].pop(f)
            if f in defs[model].get("required", []):
                defs[model]["required"].remove(f)
            if not defs[model].get("required"):
                defs[model].pop("required", None)
    # secrets never inline: named in extra/properties, or as URL user info
    _no_secret_keys(defs["KafkaConfig"]["properties"]["extra"], "kafkaExtra")
    _no_secret_keys(defs["CaptureConfig"]["properties"]["properties"], "captureProperties")
    for branch in defs["KafkaConfig"]["properties"]["schema_registry_url"]["anyOf"]:
        if branch.get("type") == "string":
            branch["pattern"] = NO_USERINFO
    for branch in defs["SmokeCheck"]["properties"]["http"]["anyOf"]:
        if branch.get("type") == "string":
            branch["pattern"] = NO_USERINFO
    # field validators are not in pydantic's schema: say the same here
    schema["properties"]["tables"]["items"]["pattern"] = TABLE_RE.pattern
    schema["properties"]["tables"]["uniqueItems"] = True
    # a file name, as in a config file: the chart explains how to pass the file (--set-file)
    schema["properties"]["mapping"]["anyOf"].append(
        {
            "type": "string",
            "description": "A mapping file's name is refused by the chart with the way to pass "
            "it: --set-file mappingFile=<file> (see mappingFile).",
        }
    )
    # the chart serves probes and metrics on this port, so it cannot be left unset
    defs["OpsConfig"]["properties"]["metrics_port"] = {
        "type": "integer",
        "minimum": 1,
        "maximum": 65535,
        "description": defs["OpsConfig"]["properties"]["metrics_port"].get("description", ""),
    }
    # source/target hold no required key once the DSNs are gone
    schema["required"] = [r for r in schema["required"] if r not in ("source", "target")]
    for key in ("source", "target", "kafka", "capture", "sync", "ops"):
        schema["properties"][key].pop("default", None)
    schema["description"] = (
        "crossfade.yaml: crossfade's Settings, key for key (services/crossfade/config.py). "
        "Secrets (the DSNs, kafka.sasl_password, cutover.flip_http, URL credentials, secret "
        "kafka.extra and capture.properties keys) come from `secrets`."
    )
    return _strip({"defs": defs, "schema": schema})


def _obj(props: dict[str, Any], required: list[str] | None = None, **kw: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": props}
    if required:
        d["required"] = required
    d.update(kw)
    return d


STR = {"type": "string"}
BOOL = {"type": "boolean"}
ANY_OBJ = {"type": "object"}
ANY_LIST = {"type": "array"}
STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
RESOURCES = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"requests": ANY_OBJ, "limits": ANY_OBJ, "claims": ANY_LIST},
}
SECONDS = {"type": "integer", "minimum": 0}
POSITIVE = {"type": "integer", "minimum": 1}
SCHEDULING = {"nodeSelector": STR_MAP, "tolerations": ANY_LIST, "affinity": ANY_OBJ}


def _probe(*, initial_delay: bool = True) -> dict[str, Any]:
    props: dict[str, Any] = {
        "periodSeconds": POSITIVE,
        "timeoutSeconds": POSITIVE,
        "failureThreshold": POSITIVE,
    }
    if initial_delay:
        props["initialDelaySeconds"] = SECONDS
    return _obj(props)


def _secret_ref(what: str, *, optional: bool = False) -> dict[str, Any]:
    name = {"type": "string"} if optional else {"type": "string", "minLength": 1}
    return _obj(
        {"name": name, "key": {"type": "string", "minLength": 1}},
        ["name", "key"],
        description=f"Existing Secret (name) and key holding {what}.",
    )


def build() -> dict[str, Any]:
    cfg = config_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "crossfade Helm chart values",
        "type": "object",
        "additionalProperties": False,
        "required": ["config", "secrets", "image", "sync", "capture"],
        "properties": {
            "config": cfg["schema"],
            "secrets": _obj(
                {
                    "sourceDsn": _secret_ref("the legacy database DSN (CROSSFADE_SOURCE__DSN)"),
                    "targetDsn": _secret_ref("the new database DSN (CROSSFADE_TARGET__DSN)"),
                    "kafkaSaslPassword": _secret_ref(
                        "the Kafka SASL password (CROSSFADE_KAFKA__SASL_PASSWORD); empty name: none",
                        optional=True,
                    ),
                    "consoleToken": _secret_ref(
                        "the console's token (CROSSFADE_CONSOLE_TOKEN); required with console.enabled",
                        optional=True,
                    ),
                    "schemaRegistryUrl": _secret_ref(
                        "a Schema Registry URL with credentials (CROSSFADE_KAFKA__SCHEMA_REGISTRY_URL)",
                        optional=True,
                    ),
                    "cutoverFlipHttp": _secret_ref(
                        "the cutover's flip URL (CROSSFADE_CUTOVER__FLIP_HTTP)", optional=True
                    ),
                    "kafkaConnectUrl": _secret_ref(
                        "a Kafka Connect REST URL with credentials (CROSSFADE_CONNECT_URL)",
                        optional=True,
                    ),
                    "kafkaExtra": {
                        "type": "object",
                        "additionalProperties": _secret_ref("the property's value"),
                        "description": "Secret librdkafka properties: CROSSFADE_KAFKA__EXTRA__<key>.",
                    },
                    "captureProperties": {
                        "type": "object",
                        "additionalProperties": _secret_ref("the property's value"),
                        "description": "Secret Debezium properties: CROSSFADE_CAPTURE__PROPERTIES__<key>.",
                    },
                },
                ["sourceDsn", "targetDsn"],
            ),
            "image": _obj(
                {
                    "repository": {"type": "string", "minLength": 1},
                    "tag": STR,
                    "digest": {"type": "string", "pattern": "^(sha256:[0-9a-f]{64})?$"},
                    "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
                },
                ["repository"],
            ),
            "mappingFile": {
                "type": "string",
                "description": "The content of a mapping file (`--set-file mappingFile=FILE`): "
                "mounted beside crossfade.yaml as mapping.yaml, which config.mapping then names.",
            },
            "imagePullSecrets": ANY_LIST,
            "nameOverride": STR,
            "fullnameOverride": STR,
            "serviceAccount": _obj({"create": BOOL, "name": STR, "annotations": STR_MAP}),
            "commonLabels": STR_MAP,
            "podAnnotations": STR_MAP,
            "podLabels": STR_MAP,
            "podSecurityContext": ANY_OBJ,
            "securityContext": ANY_OBJ,
            "probes": _obj(
                {
                    "liveness": _probe(),
                    "readiness": _probe(),
                    "startup": _probe(initial_delay=False),
                }
            ),
            "extraEnv": ANY_LIST,
            "extraVolumes": ANY_LIST,
            "extraVolumeMounts": ANY_LIST,
            "sync": _obj(
                {
                    "replicas": {"type": "integer", "minimum": 0},
                    "resources": RESOURCES,
                    "podDisruptionBudget": _obj(
                        {"enabled": BOOL, "maxUnavailable": {"type": ["integer", "string"]}}
                    ),
                    **SCHEDULING,
                    "topologySpreadConstraints": ANY_LIST,
                    "terminationGracePeriodSeconds": SECONDS,
                },
                ["replicas"],
            ),
            "capture": _obj(
                {
                    "mode": {"enum": ["embedded", "kafkaConnect"]},
                    "resources": RESOURCES,
                    "javaToolOptions": STR,
                    **SCHEDULING,
                    "terminationGracePeriodSeconds": SECONDS,
                    "kafkaConnect": _obj(
                        {
                            "url": {"type": "string", "pattern": r"^https?://[^/@]*(/.*)?$"},
                            "timeoutSeconds": POSITIVE,
                            "prepare": BOOL,
                            "backoffLimit": SECONDS,
                            "resources": RESOURCES,
                        }
                    ),
                },
                ["mode"],
            ),
            "persistence": _obj(
                {
                    "enabled": BOOL,
                    "storageClass": STR,
                    "accessModes": {"type": "array", "items": STR, "minItems": 1},
                    "size": STR,
                    "existingClaim": STR,
                }
            ),
            "console": _obj(
                {
                    "enabled": BOOL,
                    "replicas": {"type": "integer", "minimum": 0},
                    "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                    "extraArgs": {"type": "array", "items": STR},
                    "resources": RESOURCES,
                    **SCHEDULING,
                    "service": _obj(
                        {
                            "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                        }
                    ),
                    "ingress": _obj(
                        {
                            "enabled": BOOL,
                            "className": STR,
                            "host": STR,
                            "annotations": STR_MAP,
                            "tls": ANY_LIST,
                        }
                    ),
                    "url": {"type": "string", "pattern": r"^(https?://.*)?$"},
                }
            ),
            "service": _obj(
                {
                    "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                    "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                    "annotations": STR_MAP,
                }
            ),
            "networkPolicy": _obj(
                {
                    "enabled": BOOL,
                    "monitoringNamespaces": {"type": "array", "items": STR},
                    "ingressNamespaces": {"type": "array", "items": STR},
                    "metricsFrom": ANY_LIST,
                    "consoleFrom": ANY_LIST,
                    "egress": ANY_LIST,
                }
            ),
            "monitoring": _obj(
                {
                    "serviceMonitor": _obj(
                        {
                            "enabled": BOOL,
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            "labels": STR_MAP,
                        }
                    ),
                    "prometheusRule": _obj(
                        {
                            "enabled": BOOL,
                            "labels": STR_MAP,
                            "runbookBaseUrl": {"type": "string", "pattern": r"^(https?://.*)?$"},
                        }
                    ),
                    "grafanaDashboard": _obj(
                        {"enabled": BOOL, "labels": STR_MAP, "annotations": STR_MAP}
                    ),
                }
            ),
            "verify": _obj(
                {
                    "cronJob": _obj(
                        {
                            "enabled": BOOL,
                            "schedule": {"type": "string", "minLength": 1},
                            "args": {"type": "array", "items": STR},
                            "pushgateway": {"type": "string", "pattern": NO_USERINFO + "|^$"},
                            "concurrencyPolicy": {"enum": ["Allow", "Forbid", "Replace"]},
                            "startingDeadlineSeconds": SECONDS,
                            "activeDeadlineSeconds": POSITIVE,
                            "successfulJobsHistoryLimit": SECONDS,
                            "failedJobsHistoryLimit": SECONDS,
                            "backoffLimit": SECONDS,
                            "resources": RESOURCES,
                        }
                    )
                }
            ),
            "strimzi": _obj(
                {
                    "apiVersion": {"enum": ["kafka.strimzi.io/v1", "kafka.strimzi.io/v1beta2"]},
                    "kafkaCluster": {"type": "string", "minLength": 1},
                    "topics": _obj(
                        {"enabled": BOOL, "retentionMs": {"type": "integer", "minimum": -1}}
                    ),
                    "kafkaUser": _obj(
                        {
                            "enabled": BOOL,
                            "name": {
                                "type": "string",
                                "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
                            },
                            "authentication": {"enum": ["scram-sha-512", "tls", "tls-external"]},
                        }
                    ),
                    "kafkaConnector": _obj(
                        {
                            "enabled": BOOL,
                            "connectCluster": {"type": "string", "minLength": 1},
                            "database": _obj(
                                {
                                    "hostname": {"type": "string", "minLength": 1},
                                    "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                                    "user": {"type": "string", "minLength": 1},
                                    "dbname": {"type": "string", "minLength": 1},
                                },
                                ["hostname", "port", "user", "dbname"],
                            ),
                        }
                    ),
                }
            ),
            # Helm passes `global` to every chart, parent charts included.
            "global": ANY_OBJ,
        },
        "$defs": cfg["defs"],
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


if __name__ == "__main__":
    if "--write" in sys.argv:
        SCHEMA_FILE.write_text(render())
        print(f"wrote {SCHEMA_FILE.relative_to(ROOT)}")
    else:
        sys.stdout.write(render())
