"""connectors/: the Debezium connector JSON that Kafka Connect takes, never drifting from crossfade.

Each file is what ``crossfade connector render -c examples/crossfade.yaml`` prints (DESIGN
decision 6: the properties crossfade runs embedded are the ones it renders for Kafka Connect).
Regenerate after changing the example config or the connector properties:

    crossfade connector render -c examples/crossfade.yaml > connectors/crossfade-crm.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.values_schema import ROOT

EXAMPLE = ROOT / "examples" / "crossfade.yaml"
CONNECTORS = sorted((ROOT / "connectors").glob("*.json"))


def render() -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CROSSFADE_")}
    r = subprocess.run(
        [sys.executable, "-m", "crossfade.ops.cli", "connector", "render", "-c", str(EXAMPLE)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_there_is_a_connector() -> None:
    assert [p.name for p in CONNECTORS] == ["crossfade-crm.json"]


@pytest.mark.parametrize("path", CONNECTORS, ids=lambda p: p.name)
def test_checked_in_connector_is_the_rendered_one(path: os.PathLike[str]) -> None:
    rendered = render()
    assert Path(path).read_text() == rendered, (
        f"{path} is stale: crossfade connector render -c examples/crossfade.yaml > {path}"
    )
    doc = json.loads(rendered)
    assert f"{doc['name']}.json" == os.path.basename(path)
    # no secret in the file: Kafka Connect resolves the password from its own environment
    assert doc["config"]["database.password"] == "${env:CROSSFADE_SOURCE_PASSWORD}"
    assert "crossfade:crossfade@" not in rendered
