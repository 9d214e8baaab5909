"""Capture's encoding of Debezium JSON records: both framings, decoded back by sync's decoder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from confluent_kafka.schema_registry import SchemaRegistryClient

from crossfade.capture.service import ChangeProducer
from crossfade.config import Settings
from crossfade.events.framing import Decoder, RegistryResolver, SchemaCache, detect_framing
from crossfade.events.schema_store import RegistryRegistrar

RECORD = json.loads((Path(__file__).with_name("debezium_record.json")).read_text())


def _settings(**kafka: Any) -> Settings:
    return Settings(
        source={"dsn": "postgresql://u@127.0.0.1:1/legacy"},
        target={"dsn": "postgresql://u@127.0.0.1:1/target"},
        kafka={"bootstrap_servers": "127.0.0.1:1", **kafka},
        tables=["public.t"],
        capture={"converter": "python"},  # the JSON path these records take
    )


class _Publisher:
    """Stands in for the schemas topic (no broker in a unit test): keeps what is published."""

    def __init__(self) -> None:
        self.cache = SchemaCache()

    def publish(self, avro_schema: dict[str, Any]) -> Any:
        return self.cache.add(json.dumps(avro_schema))


def test_registry_configured_uses_confluent_wire_format_with_topic_name_subjects() -> None:
    client = SchemaRegistryClient.new_client({"url": "mock://crossfade-test"})
    prod = ChangeProducer(_settings(), _Publisher(), {"cf.public.t": 1})  # type: ignore[arg-type]
    prod._registry = RegistryRegistrar("mock://crossfade-test", client=client)
    value, payload = prod._encode(RECORD["value"], "cf.public.t-value")
    key, _ = prod._encode(RECORD["key"], "cf.public.t-key")
    assert value is not None and key is not None and payload is not None
    assert detect_framing(value) == "confluent" and detect_framing(key) == "confluent"
    assert set(client.get_subjects()) == {"cf.public.t-value", "cf.public.t-key"}
    env = Decoder(RegistryResolver(client)).decode(value)
    assert env["op"] == payload["op"] and env["after"]["id"] == payload["after"]["id"] == 1
    assert (
        env["after"]["b"] == b"\xde\xad\xbe\xef" and env["after"]["txt"] == payload["after"]["txt"]
    )
    # the same schema again is not registered again (cached id)
    before = len(client.get_versions("cf.public.t-value"))
    prod._encode(RECORD["value"], "cf.public.t-value")
    assert len(client.get_versions("cf.public.t-value")) == before


def test_default_is_single_object_encoding_with_published_schema() -> None:
    pub = _Publisher()
    prod = ChangeProducer(_settings(), pub, {"cf.public.t": 1})  # type: ignore[arg-type]
    value, payload = prod._encode(RECORD["value"], "cf.public.t-value")
    assert value is not None and value[:2] == b"\xc3\x01"
    env = Decoder(pub.cache).decode(value)
    assert env["after"]["nv"] == "NAN" and env["after"]["u"] == payload["after"]["u"]


def test_debezium_json_parses_as_the_stdlib_json_parses_it() -> None:
    from crossfade.capture.json_avro import loads as _loads

    for text in (
        RECORD["value"],
        RECORD["value"].encode(),
        '{"a": NaN, "b": -Infinity}',  # orjson refuses these tokens: the stdlib reads them
        '{"s": "\\ud800"}',  # a lone surrogate escape
    ):
        got, want = _loads(text), json.loads(text)
        assert json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True)


def test_a_numeric_decimal_beyond_64_bits_stays_exact() -> None:
    """decimal.format=NUMERIC: orjson would read this integer as a float; the payload of a
    schema with a Decimal is parsed by the stdlib."""
    schema = {
        "type": "struct",
        "optional": False,
        "name": "cf.public.d.Value",
        "fields": [
            {
                "type": "bytes",
                "optional": False,
                "field": "n",
                "name": "org.apache.kafka.connect.data.Decimal",
                "version": 1,
                "parameters": {"scale": "0"},
            }
        ],
    }
    n = 123456789012345678901234567890
    raw = (
        '{"schema":'
        + json.dumps(schema, separators=(",", ":"))
        + ',"payload":{"n":'
        + str(n)
        + "}}"
    )
    pub = _Publisher()
    prod = ChangeProducer(_settings(), pub, {"cf.public.d": 1})  # type: ignore[arg-type]
    for text in (raw, raw.encode()):
        value, payload = prod._encode(text, "cf.public.d-value")
        assert payload == {"n": n}
        assert value is not None
        assert int.from_bytes(Decoder(pub.cache).decode(value)["n"], "big", signed=True) == n


def test_payload_with_its_schema_beside_it_encodes_as_the_envelope_does() -> None:
    """capture's records carry the payload alone and their schema beside it (schemas.enable=false,
    the schema read from the SourceRecord): the bytes are those of the whole envelope."""
    pub = _Publisher()
    prod = ChangeProducer(_settings(), pub, {"cf.public.t": 1})  # type: ignore[arg-type]
    doc = json.loads(RECORD["value"])
    schema_text, payload_text = json.dumps(doc["schema"]), json.dumps(doc["payload"]).encode()
    beside, payload = prod._encode(payload_text, "cf.public.t-value", schema_text)
    enveloped, payload2 = prod._encode(RECORD["value"], "cf.public.t-value")
    assert beside is not None and beside == enveloped and payload == payload2
    key_doc = json.loads(RECORD["key"])
    key, _ = prod._encode(
        json.dumps(key_doc["payload"]), "cf.public.t-key", json.dumps(key_doc["schema"])
    )
    assert key == prod._encode(RECORD["key"], "cf.public.t-key")[0]
    # a fence or signal record's payload, alone or in its envelope
    assert (
        prod._payload(payload_text, schema_text)
        == prod._payload(RECORD["value"], None)
        == doc["payload"]
    )


def test_kept_key_encodings_stay_right_past_the_bound() -> None:
    """Small records (keys) keep their encoding per schema; a second pass reads what was kept,
    past the bound the kept ones are dropped: every key encodes as a fresh producer's."""
    from crossfade.capture import json_avro

    key_doc = json.loads(RECORD["key"])
    schema = json.dumps(key_doc["schema"])
    texts = [json.dumps({"id": i}).encode() for i in range(json_avro.SMALL_KEPT + 50)]
    texts.append(json.dumps({"id": 1, "pad": "x" * json_avro.SMALL}).encode())  # not kept
    prod = ChangeProducer(_settings(), _Publisher(), {"cf.public.t": 1})  # type: ignore[arg-type]
    got = [prod._encode(t, "cf.public.t-key", schema) for t in texts + texts[:10] + texts[-60:]]
    fresh = ChangeProducer(_settings(), _Publisher(), {"cf.public.t": 1})  # type: ignore[arg-type]
    for t, (key, payload) in zip(texts + texts[:10] + texts[-60:], got, strict=True):
        assert payload == json.loads(t)
        assert key == fresh._encode(t, "cf.public.t-key", schema)[0]
        fresh._json._by_text.clear()  # nothing kept: encoded from the text
