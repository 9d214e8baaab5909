"""Unit tests of crossfade.events.framing: wire formats, schema resolution, the Decoder."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crossfade.errors import ConfigError, DecodeError, TransientError
from crossfade.events.avro_codec import AvroCodec
from crossfade.events.framing import (
    Decoder,
    RegistryResolver,
    SchemaCache,
    SchemaResolver,
    SchemaStoreUnavailable,
    detect_framing,
    fingerprint_bytes,
    frame_confluent,
    frame_single_object,
    parse_confluent,
    parse_single_object,
)

SCHEMA = {
    "type": "record",
    "name": "Value",
    "namespace": "cf.public.t",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "name", "type": ["null", "string"], "default": None},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "blob", "type": ["null", "bytes"], "default": None},
    ],
    "connect.name": "cf.public.t.Value",
}
SCHEMA_JSON = json.dumps(SCHEMA)
DATUM = {"id": 7, "name": "seven", "tags": ["a", "b"], "blob": b"\x00\xff"}
OTHER_JSON = json.dumps(
    {"type": "record", "name": "K", "fields": [{"name": "k", "type": "string"}]}
)


@pytest.fixture
def codec() -> AvroCodec:
    return AvroCodec(SCHEMA_JSON)


# ------------------------------------------------------------------------------------------------
# Framing
# ------------------------------------------------------------------------------------------------


def test_single_object_round_trip(codec: AvroCodec) -> None:
    body = codec.encode(DATUM)
    framed = frame_single_object(codec.fingerprint, body)
    assert framed[:2] == b"\xc3\x01"
    assert framed[2:10] == codec.fingerprint_bytes == codec.fingerprint.to_bytes(8, "little")
    assert frame_single_object(codec.fingerprint_bytes, body) == framed
    assert detect_framing(framed) == "single-object"
    assert parse_single_object(framed) == (codec.fingerprint, body)


def test_single_object_accepts_java_signed_fingerprints() -> None:
    unsigned = (1 << 64) - 5
    assert fingerprint_bytes(-5) == fingerprint_bytes(unsigned) == unsigned.to_bytes(8, "little")
    assert parse_single_object(frame_single_object(-5, b""))[0] == unsigned


@pytest.mark.parametrize("bad", [1 << 64, -(1 << 63) - 1, b"1234567", "00" * 8, True])
def test_bad_fingerprints_are_programming_errors(bad: Any) -> None:
    with pytest.raises(ValueError):
        fingerprint_bytes(bad)


def test_confluent_round_trip(codec: AvroCodec) -> None:
    body = codec.encode(DATUM)
    framed = frame_confluent(258, body)
    assert framed[:5] == b"\x00\x00\x00\x01\x02"
    assert detect_framing(framed) == "confluent"
    assert parse_confluent(framed) == (258, body)
    assert parse_confluent(frame_confluent(2**31 - 1, b"")) == (2**31 - 1, b"")


@pytest.mark.parametrize("bad", [-1, 2**31, True])
def test_bad_schema_ids_are_programming_errors(bad: int) -> None:
    with pytest.raises(ValueError):
        frame_confluent(bad, b"")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, "tombstone"),
        (b"", "empty"),
        (b"\xc3", "truncated"),
        (b"\xc3\x01", "truncated"),
        (b"\xc3\x01" + b"\x00" * 7, "truncated"),
        (b"\xc3\x02" + b"\x00" * 12, "c3 02 00"),
        (b"\x00", "truncated"),
        (b"\x00\x00\x00\x01", "truncated"),
        (b"\x01" + b"\x00" * 20, "GUID"),
        (b'{"id": 1}', "7b 22 69 64"),
        (b"\xff" * 40, "ff ff ff ff ff ff ff ff ff ff ff ff ff ff ff ff ..."),
    ],
)
def test_detect_framing_rejects_everything_else(data: bytes | None, message: str) -> None:
    with pytest.raises(DecodeError, match=message) as info:
        detect_framing(data)
    assert info.value.kind == "terminal"


def test_parse_functions_reject_the_other_framing(codec: AvroCodec) -> None:
    body = codec.encode(DATUM)
    with pytest.raises(DecodeError, match="single-object"):
        parse_single_object(frame_confluent(1, body))
    with pytest.raises(DecodeError, match="truncated"):
        parse_single_object(b"\xc3\x01\x00")
    with pytest.raises(DecodeError, match="Confluent"):
        parse_confluent(frame_single_object(codec.fingerprint, body))
    with pytest.raises(DecodeError, match="truncated"):
        parse_confluent(b"\x00\x00")


# ------------------------------------------------------------------------------------------------
# SchemaCache and Decoder
# ------------------------------------------------------------------------------------------------


def test_decoder_single_object(codec: AvroCodec) -> None:
    cache = SchemaCache()
    stored = cache.add(SCHEMA_JSON)
    assert stored.fingerprint == codec.fingerprint
    assert cache.add(SCHEMA_JSON) is stored  # replaying the schema topic is idempotent
    assert cache.add(json.dumps(SCHEMA, indent=1)) is stored  # same canonical form
    assert len(cache) == 1 and codec.fingerprint in cache and list(cache) == [stored]
    decoder = Decoder(cache)
    framed = frame_single_object(codec.fingerprint, codec.encode(DATUM))
    assert decoder.decode(framed) == DATUM
    datum, used = decoder.decode_with_schema(framed)
    assert datum == DATUM and used is stored
    assert isinstance(cache, SchemaResolver)


def test_decoder_unknown_fingerprint(codec: AvroCodec) -> None:
    decoder = Decoder(SchemaCache())
    with pytest.raises(DecodeError, match=f"unknown schema.*{codec.fingerprint_hex}"):
        decoder.decode(frame_single_object(codec.fingerprint, codec.encode(DATUM)))


def test_cache_miss_handler_can_catch_up(codec: AvroCodec) -> None:
    asked: list[int] = []

    def catch_up(fingerprint: int) -> None:
        asked.append(fingerprint)
        cache.add(SCHEMA_JSON)

    cache = SchemaCache(on_miss=catch_up)
    framed = frame_single_object(codec.fingerprint, codec.encode(DATUM))
    assert Decoder(cache).decode(framed) == DATUM
    assert Decoder(cache).decode(framed) == DATUM
    assert asked == [codec.fingerprint]  # only the first miss asks the store


def test_cache_miss_handler_transient_error_passes_through(codec: AvroCodec) -> None:
    def unreachable(fingerprint: int) -> None:
        raise SchemaStoreUnavailable("schema topic unreachable")

    framed = frame_single_object(codec.fingerprint, codec.encode(DATUM))
    with pytest.raises(SchemaStoreUnavailable) as info:
        Decoder(SchemaCache(on_miss=unreachable)).decode(framed)
    assert isinstance(info.value, TransientError) and info.value.kind == "transient"


def test_cache_miss_handler_that_finds_nothing(codec: AvroCodec) -> None:
    cache = SchemaCache(on_miss=lambda fp: None)
    with pytest.raises(DecodeError, match="unknown schema"):
        cache.resolve_single_object(codec.fingerprint)


def test_schema_cache_confluent_ids(codec: AvroCodec) -> None:
    cache = SchemaCache()
    cache.add(SCHEMA_JSON, schema_id=12)
    decoder = Decoder(cache)
    assert decoder.decode(frame_confluent(12, codec.encode(DATUM))) == DATUM
    with pytest.raises(DecodeError, match="unknown schema.*13"):
        decoder.decode(frame_confluent(13, codec.encode(DATUM)))


def test_schema_cache_rejects_invalid_schema_text() -> None:
    with pytest.raises(DecodeError, match="Avro schema"):
        SchemaCache().add("{nope")


@pytest.mark.parametrize(
    "mangle",
    [
        lambda b: b[:-1],  # truncated body
        lambda b: b + b"\x00",  # trailing byte
        lambda b: b[:10] + b"\x80" * 12,  # endless varint
        lambda b: b[:10] + b"\x02\x10",  # string longer than the data
    ],
)
def test_decoder_corrupt_bodies(codec: AvroCodec, mangle: Any) -> None:
    cache = SchemaCache()
    cache.add(SCHEMA_JSON)
    framed = frame_single_object(codec.fingerprint, codec.encode(DATUM))
    with pytest.raises(DecodeError, match=codec.fingerprint_hex):
        Decoder(cache).decode(mangle(framed))


def test_decoder_wrong_schema_detected_by_trailing_bytes(codec: AvroCodec) -> None:
    cache = SchemaCache()
    other = cache.add(OTHER_JSON)
    # A body of SCHEMA framed with OTHER's fingerprint.
    framed = frame_single_object(other.fingerprint, codec.encode(DATUM))
    with pytest.raises(DecodeError):
        Decoder(cache).decode(framed)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_garbage_after_a_valid_header_only_raises_decode_error(garbage: bytes) -> None:
    cache = SchemaCache()
    codec = cache.add(SCHEMA_JSON)
    decoder = Decoder(cache)
    for framed in (frame_single_object(codec.fingerprint, garbage), garbage):
        with contextlib.suppress(DecodeError):
            decoder.decode(framed)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.one_of(st.none(), st.text()),
    st.lists(st.text(), max_size=5),
    st.one_of(st.none(), st.binary()),
    st.integers(min_value=0, max_value=2**31 - 1),
)
def test_round_trip_property(
    id_: int, name: str | None, tags: list[str], blob: bytes | None, schema_id: int
) -> None:
    cache = SchemaCache()
    codec = cache.add(SCHEMA_JSON, schema_id=schema_id)
    datum = {"id": id_, "name": name, "tags": tags, "blob": blob}
    body = codec.encode(datum)
    decoder = Decoder(cache)
    assert decoder.decode(frame_single_object(codec.fingerprint, body)) == datum
    assert decoder.decode(frame_confluent(schema_id, body)) == datum


# ------------------------------------------------------------------------------------------------
# RegistryResolver (with an in-memory stand-in for SchemaRegistryClient)
# ------------------------------------------------------------------------------------------------


@dataclass
class FakeSchema:
    schema_str: str
    schema_type: str = "AVRO"
    references: list[Any] = field(default_factory=list)


class RegistryFailure(Exception):
    """Shaped like confluent_kafka.schema_registry.error.SchemaRegistryError."""

    def __init__(self, http_status_code: int, error_code: int, error_message: str) -> None:
        super().__init__(error_message)
        self.http_status_code = http_status_code
        self.error_code = error_code


class FakeRegistry:
    def __init__(self, schemas: dict[int, Any], fail: Exception | None = None) -> None:
        self.schemas = schemas
        self.fail = fail
        self.calls = 0

    def get_schema(self, schema_id: int) -> Any:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        if schema_id not in self.schemas:
            raise RegistryFailure(404, 40403, "Schema not found")
        return self.schemas[schema_id]


def test_registry_resolver_fetches_and_caches(codec: AvroCodec) -> None:
    registry = FakeRegistry({5: FakeSchema(SCHEMA_JSON)})
    resolver = RegistryResolver(registry)
    decoder = Decoder(resolver)
    framed = frame_confluent(5, codec.encode(DATUM))
    assert decoder.decode(framed) == DATUM
    assert decoder.decode(framed) == DATUM
    assert registry.calls == 1
    assert resolver.resolve_confluent(5).fingerprint == codec.fingerprint


@pytest.mark.parametrize(
    ("failure", "error", "kind"),
    [
        (RegistryFailure(404, 40403, "Schema not found"), DecodeError, "terminal"),
        (RegistryFailure(503, 50003, "unavailable"), SchemaStoreUnavailable, "transient"),
        (RegistryFailure(500, 50001, "store error"), SchemaStoreUnavailable, "transient"),
        (RegistryFailure(429, -1, "slow down"), SchemaStoreUnavailable, "transient"),
        (RegistryFailure(401, 40101, "unauthorized"), ConfigError, "terminal"),
        (RegistryFailure(422, 42201, "invalid"), DecodeError, "terminal"),
        (ConnectionError("connection refused"), SchemaStoreUnavailable, "transient"),
        (TimeoutError("timed out"), SchemaStoreUnavailable, "transient"),
    ],
)
def test_registry_resolver_classifies_failures(
    failure: Exception, error: type[Exception], kind: str
) -> None:
    resolver = RegistryResolver(FakeRegistry({}, fail=failure))
    with pytest.raises(error) as info:
        resolver.resolve_confluent(9)
    assert getattr(info.value, "kind", None) == kind
    assert "9" in str(info.value)


def test_registry_resolver_unknown_id_message() -> None:
    with pytest.raises(DecodeError, match="unknown schema"):
        RegistryResolver(FakeRegistry({})).resolve_confluent(77)


@pytest.mark.parametrize(
    "schema",
    [
        FakeSchema('{"type": "object"}', schema_type="JSON"),
        FakeSchema(SCHEMA_JSON, references=[{"name": "x", "subject": "s", "version": 1}]),
        FakeSchema("{broken"),
    ],
)
def test_registry_resolver_rejects_unusable_schemas(schema: FakeSchema) -> None:
    with pytest.raises(DecodeError):
        RegistryResolver(FakeRegistry({1: schema})).resolve_confluent(1)


def test_registry_resolver_single_object(codec: AvroCodec) -> None:
    framed = frame_single_object(codec.fingerprint, codec.encode(DATUM))
    with pytest.raises(DecodeError, match="unknown schema"):
        Decoder(RegistryResolver(FakeRegistry({}))).decode(framed)
    cache = SchemaCache()
    cache.add(SCHEMA_JSON)
    assert Decoder(RegistryResolver(FakeRegistry({}), single_object=cache)).decode(framed) == DATUM


# ------------------------------------------------------------------------------------------------
# Against confluent-kafka's own AvroSerializer (in-memory mock registry, no server)
# ------------------------------------------------------------------------------------------------


def _schema_registry() -> Any:
    try:
        from confluent_kafka.schema_registry import SchemaRegistryClient
        from confluent_kafka.schema_registry.avro import AvroSerializer
        from confluent_kafka.serialization import MessageField, SerializationContext
    except ImportError as exc:
        pytest.skip(
            "confluent-kafka's schema-registry extras are not installed "
            f"(pip install 'confluent-kafka[avro,schemaregistry]'): {exc}"
        )
    return SchemaRegistryClient, AvroSerializer, MessageField, SerializationContext


def test_decodes_bytes_from_confluent_avro_serializer(codec: AvroCodec) -> None:
    client_cls, serializer_cls, message_field, context_cls = _schema_registry()
    client = client_cls.new_client({"url": "mock://crossfade-unit"})
    serializer = serializer_cls(client, SCHEMA_JSON)
    data = serializer(DATUM, context_cls("cf.public.t", message_field.VALUE))
    assert data is not None
    assert detect_framing(data) == "confluent"
    schema_id, body = parse_confluent(data)
    # Byte-for-byte what crossfade would frame for the same datum.
    assert data == frame_confluent(schema_id, codec.encode(DATUM))
    resolver = RegistryResolver(client)
    assert Decoder(resolver).decode(data) == DATUM
    assert resolver.resolve_confluent(schema_id).fingerprint == codec.fingerprint
    with pytest.raises(DecodeError, match="unknown schema"):
        resolver.resolve_confluent(schema_id + 1000)  # the client's own 404 error


def test_schema_value_shape_ignores_enum_labels_but_not_a_decimal_scale() -> None:
    """One fingerprint, two texts: a new enum label (Debezium re-reads labels on restart) is the
    same to sync; a decimal's scale is not (Avro's fingerprint hides it)."""
    import json as _json

    from crossfade.events.schema_store import _value_shape

    def rec(field: dict) -> str:
        return _json.dumps(
            {"type": "record", "name": "V", "fields": [{"name": "c", "type": field}]}
        )

    enum_a = rec(
        {
            "type": "string",
            "connect.name": "io.debezium.data.Enum",
            "connect.parameters": {"allowed": "a,b"},
        }
    )
    enum_b = rec(
        {
            "type": "string",
            "connect.name": "io.debezium.data.Enum",
            "connect.parameters": {"allowed": "a,b,c"},
        }
    )
    assert _value_shape(enum_a) == _value_shape(enum_b)
    dec_2 = rec(
        {
            "type": "bytes",
            "logicalType": "decimal",
            "precision": 10,
            "scale": 2,
            "connect.parameters": {"scale": "2"},
        }
    )
    dec_4 = rec(
        {
            "type": "bytes",
            "logicalType": "decimal",
            "precision": 10,
            "scale": 4,
            "connect.parameters": {"scale": "4"},
        }
    )
    assert _value_shape(dec_2) != _value_shape(dec_4)
