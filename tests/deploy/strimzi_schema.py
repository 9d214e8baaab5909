"""Derives tests/deploy/strimzi-crds.schema.json from Strimzi's published CRDs.

Kubernetes-validate carries no schema for Strimzi's custom resources, so the chart's KafkaTopic,
KafkaUser and KafkaConnector are validated against the ``openAPIV3Schema`` of Strimzi's own CRDs
(strimzi/strimzi-kafka-operator, Apache-2.0, ``install/cluster-operator/043-Crd-kafkatopic.yaml``,
``044-Crd-kafkauser.yaml``, ``047-Crd-kafkaconnector.yaml``): ``kafka.strimzi.io/v1`` from the
1.2.0 release (the only version Strimzi 1.x serves), ``kafka.strimzi.io/v1beta2`` from the 0.50.0
release (the version Strimzi 0.3x-0.50 store). Descriptions, ``status`` and CEL rules are left out;
everything else is kept as published.

    python tests/deploy/strimzi_schema.py STRIMZI_GIT_DIR   # rewrite the JSON from a checkout
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

OUT = Path(__file__).with_name("strimzi-crds.schema.json")
RELEASES = {
    # apiVersion: (release, commit in strimzi/strimzi-kafka-operator)
    "kafka.strimzi.io/v1": ("1.2.0", "8541da1e33"),
    "kafka.strimzi.io/v1beta2": ("0.50.0", "783c992dd8"),
}
CRDS = {
    "KafkaTopic": "install/cluster-operator/043-Crd-kafkatopic.yaml",
    "KafkaUser": "install/cluster-operator/044-Crd-kafkauser.yaml",
    "KafkaConnector": "install/cluster-operator/047-Crd-kafkaconnector.yaml",
}


def _trim(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: _trim(v)
            for k, v in node.items()
            if k not in ("description", "x-kubernetes-validations")
        }
    if isinstance(node, list):
        return [_trim(v) for v in node]
    return node


def build(git_dir: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "_source": "strimzi/strimzi-kafka-operator (Apache-2.0): "
        + ", ".join(f"{v} from {r} ({c})" for v, (r, c) in RELEASES.items())
        + "; files "
        + ", ".join(CRDS.values())
        + "; derived by tests/deploy/strimzi_schema.py (descriptions, status, CEL rules removed)",
    }
    for api_version, (_release, commit) in RELEASES.items():
        version = api_version.split("/")[1]
        out[api_version] = {}
        for kind, path in CRDS.items():
            text = subprocess.run(
                ["git", "--git-dir", git_dir, "show", f"{commit}:{path}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            crd = yaml.safe_load(text)
            (v,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
            schema = _trim(v["schema"]["openAPIV3Schema"])
            schema["properties"].pop("status", None)
            out[api_version][kind] = schema
    return out


if __name__ == "__main__":
    OUT.write_text(json.dumps(build(sys.argv[1]), indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT}")
