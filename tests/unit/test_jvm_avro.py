"""capture.converter: jvm (the default) — the re-framing of the JVM's Avro bytes
(crossfade.capture.jvm_avro).

The JVM side runs in the integration tests (the every-type round trip with either converter);
here the Python side alone: Confluent's frame swapped for capture's, a converter schema that is
not capture's own refused, and the default."""

from __future__ import annotations

import functools
import json
from typing import Any

import pytest

from crossfade.capture.jvm_avro import JvmAvroEncoder, JvmAvroReader
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


class _Registry:
    """Confluent's mock registry as the encoder uses it: the schema text by id."""

    def __init__(self, schemas: dict[int, Any]) -> None:
        self.schemas = schemas

    def getSchemaById(self, sid: int) -> Any:  # noqa: N802 (Java's name)
        text = json.dumps(self.schemas[sid])

        class _Parsed:
            def canonicalString(self) -> str:  # noqa: N802
                return text

        return _Parsed()


def _encoder(confluent_schema: Any) -> tuple[JvmAvroEncoder, ConnectCodec]:
    cc = ConnectCodec(CONNECT)
    reader: Any = type("R", (), {"registry": _Registry({7: confluent_schema})})()

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


def test_confluent_frame_becomes_capture_single_object_frame() -> None:
    reader_schema = _confluent_style(ConnectCodec(CONNECT).avro.schema)
    enc, cc = _encoder(reader_schema)
    body = cc.encode({"after": {"id": 5}, "op": "c"})
    src = b'{"lsn": 42, "snapshot": "false"}'
    framed, payload = enc.encode(
        (b"\x00" + (7).to_bytes(4, "big") + body, src, "c"), "t-value", json.dumps(CONNECT)
    )
    assert framed == frame_single_object(cc.avro.fingerprint, body)
    assert parse_single_object(framed)[1] == body
    assert payload == {"source": {"lsn": 42, "snapshot": "false"}, "op": "c"}
    assert enc.encode(None, "t-value", json.dumps(CONNECT)) == (None, None)
    # a fence or signal row: decoded whole from the JVM's bytes
    assert enc.payload((b"\x00" + (7).to_bytes(4, "big") + body, src, "c"), None) == {
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
        enc.encode((b"\x00" + (7).to_bytes(4, "big") + body, b"{}", "c"), "t-value", "{}")


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
