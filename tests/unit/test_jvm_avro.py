"""capture.converter: jvm (the default) — the re-framing of the JVM's Avro bytes
(crossfade.capture.jvm_avro).

The JVM side runs in the integration tests (the every-type round trip with either converter);
here the Python side alone: Avro's single-object header swapped for capture's frame, a converter schema that is
not capture's own refused, and the default."""

from __future__ import annotations

import functools
import json
from typing import Any

import pytest

from crossfade.capture.jvm_avro import JvmAvroEncoder, JvmAvroReader, source_block
from crossfade.capture.service import ChangeProducer
from crossfade.errors import SchemaMismatch
from crossfade.events.avro_codec import ConnectCodec
from crossfade.events.framing import frame_single_object, parse_single_object
from tests.conftest import offline_settings

CONNECT = {
    "type": "struct",
    "name": "cf.public.t.Envelope",
    "optional": False,
    "fields": [
        {
            "type": "struct",
            "name": "cf.public.t.Value",
            "optional": True,
            "field": "after",
            "fields": [{"type": "int32", "optional": False, "field": "id"}],
        },
        {"type": "string", "optional": False, "field": "op"},
    ],
}


_HEADER = b"\xc3\x01" + bytes(range(8))
"""Avro's single-object header as the JVM's ``BinaryMessageEncoder`` writes it."""


def _encoder(confluent_schema: Any) -> tuple[JvmAvroEncoder, ConnectCodec]:
    cc = ConnectCodec(CONNECT)
    avro_schemas = {json.dumps(CONNECT): json.dumps(confluent_schema)}
    reader: Any = type("R", (), {"avro_schemas": avro_schemas})()

    def compile_schema(schema: Any, text: str, subject: str) -> tuple[Any, Any]:
        return cc, functools.partial(frame_single_object, cc.avro.fingerprint)

    return JvmAvroEncoder(reader, compile_schema), cc


def _confluent_style(schema: dict[str, Any]) -> dict[str, Any]:
    """As Confluent writes it: the nested record's namespace left to inheritance."""
    s = json.loads(json.dumps(schema))
    nested = s["fields"][0]["type"][1]
    nested.pop("namespace", None)
    nested["name"] = "Value"
    return s


def test_jvm_single_object_header_becomes_capture_frame() -> None:
    reader_schema = _confluent_style(ConnectCodec(CONNECT).avro.schema)
    enc, cc = _encoder(reader_schema)
    body = cc.encode({"after": {"id": 5}, "op": "c"})
    src = b"42\x01false\x01123\x01null"
    framed, payload = enc.encode((_HEADER + body, src, "c"), "t-value", json.dumps(CONNECT))
    assert framed == frame_single_object(cc.avro.fingerprint, body)
    assert parse_single_object(framed)[1] == body
    assert payload == {
        "source": {"lsn": 42, "snapshot": "false", "ts_ms": 123, "origin": None},
        "op": "c",
    }
    assert enc.encode(None, "t-value", json.dumps(CONNECT)) == (None, None)
    # a fence or signal row: decoded whole from the JVM's bytes
    assert enc.payload((_HEADER + body, src, "c"), json.dumps(CONNECT)) == {
        "after": {"id": 5},
        "op": "c",
    }


def test_a_converter_schema_other_than_capture_own_is_refused() -> None:
    cc = ConnectCodec(CONNECT)
    other = json.loads(json.dumps(cc.avro.schema))
    other["fields"][1]["name"] = "operation"  # same bytes, another schema: sync would differ
    enc, cc = _encoder(other)
    body = cc.encode({"after": {"id": 5}, "op": "c"})
    with pytest.raises(SchemaMismatch, match="not the one capture derives"):
        enc.encode((_HEADER + body, None, "c"), "t-value", json.dumps(CONNECT))


def test_the_jvm_converter_is_the_default_and_python_stays_a_choice() -> None:
    """Without ``capture.converter`` capture reads the engine's Connect records and the JVM
    encodes Avro (~13% less CPU per event, docs/benchmarks.md); ``python`` still takes the JSON
    path."""
    settings = offline_settings()
    assert settings.capture.converter == "jvm"
    assert isinstance(ChangeProducer(settings, object(), {})._reader, JvmAvroReader)  # type: ignore[arg-type]
    python = settings.model_copy(
        update={"capture": settings.capture.model_copy(update={"converter": "python"})}
    )
    assert not isinstance(ChangeProducer(python, object(), {})._reader, JvmAvroReader)  # type: ignore[arg-type]


def test_source_column_reads_as_the_json_source_block() -> None:
    """The JVM's ``source`` column (its four fields as text) reads as the fields of the JSON
    converter's ``source`` object: numbers as int, Java's null as None, ``origin`` whole."""
    assert source_block(b"0\x01last\x01-1\x01crossfade_s\x01x\x01null") == {
        "lsn": 0,
        "snapshot": "last",
        "ts_ms": -1,
        "origin": "crossfade_s\x01x\x01null",
    }
    assert source_block("null\x01null\x017\x01sync_\u00e9".encode()) == {
        "lsn": None,
        "snapshot": None,
        "ts_ms": 7,
        "origin": "sync_\u00e9",
    }
