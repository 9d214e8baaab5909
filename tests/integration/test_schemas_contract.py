"""The Avro schemas capture publishes for the demo CRM are the contract kept in schemas/crm/.

A change to the Connect -> Avro conversion (or to Debezium's output) that alters them fails here;
regenerate deliberately with ``CROSSFADE_UPDATE_SCHEMAS=1 pytest tests/integration/test_schemas_contract.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from crossfade.embedded.crm import TABLES, CrmWriter, create_schema
from crossfade.events.framing import SchemaCache
from crossfade.events.schema_store import SchemaTopicReader
from tests.conftest import Stack

pytestmark = pytest.mark.integration

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas" / "crm"


def _normalise(schema: dict, prefix: str) -> dict:
    # the topic prefix is per test run; the contract uses the default "crossfade"
    return json.loads(json.dumps(schema).replace(prefix, "crossfade"))


def test_published_schemas_match_the_contract(stack: Stack) -> None:
    with stack.src() as c:
        create_schema(c)
    s = stack.write_config(TABLES)
    stack.start("capture")
    stack.start("sync")
    stack.fence()
    # streamed rows (with the default COPY initial load, existing rows never go through Kafka)
    CrmWriter(stack.source_dsn, seed=3).seed(5)
    stack.fence()
    reader = SchemaTopicReader(s.kafka.client_config(), s.kafka.schemas_topic, SchemaCache())
    reader.refresh(timeout=10)
    reader.close()
    found: dict[str, dict] = {}
    for text in reader.texts.values():
        schema = _normalise(json.loads(text), s.kafka.topic_prefix)
        found[f"{schema.get('namespace', '')}.{schema['name']}".strip(".") + ".avsc"] = schema
    assert len(found) == 2 * len(TABLES), sorted(found)
    if os.environ.get("CROSSFADE_UPDATE_SCHEMAS"):
        SCHEMAS.mkdir(parents=True, exist_ok=True)
        for name, schema in found.items():
            (SCHEMAS / name).write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
    expected = {p.name: json.loads(p.read_text()) for p in SCHEMAS.glob("*.avsc")}
    assert found == expected
