"""Wire formats of Avro record values, schema resolution, and the record :class:`Decoder`.

Two framings are understood:

* **Avro single-object encoding** (Avro specification): ``C3 01``, the schema's 8-byte
  CRC-64-AVRO fingerprint little-endian, then the Avro binary datum. crossfade writes this; the
  schemas are kept in a topic-backed store that feeds a :class:`SchemaCache`.
* **Confluent wire format**: magic byte ``00``, the 4-byte big-endian Schema Registry id, then the
  Avro binary datum. Written by Kafka Connect's AvroConverter and confluent-kafka's
  ``AvroSerializer``; resolved through :class:`RegistryResolver` (or a :class:`SchemaCache` told
  the ids).

Failures: bytes that are in neither framing, truncated, or corrupt, and schemas that are unknown,
raise :class:`~crossfade.errors.DecodeError` (terminal: dead-letter the record). A schema store
that cannot be reached raises :class:`SchemaStoreUnavailable` (transient: retry).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal, Protocol, runtime_checkable

from crossfade.errors import ConfigError, DecodeError, TransientError
from crossfade.events.avro_codec import AvroCodec

__all__ = [
    "CONFLUENT_MAGIC",
    "SINGLE_OBJECT_HEADER_SIZE",
    "SINGLE_OBJECT_MARKER",
    "Decoder",
    "Framing",
    "RegistryResolver",
    "SchemaCache",
    "SchemaResolver",
    "SchemaStoreUnavailable",
    "detect_framing",
    "fingerprint_bytes",
    "frame_confluent",
    "frame_single_object",
    "parse_confluent",
    "parse_single_object",
]

Framing = Literal["single-object", "confluent"]

SINGLE_OBJECT_MARKER = b"\xc3\x01"
SINGLE_OBJECT_HEADER_SIZE = 10  # marker + 8-byte fingerprint
CONFLUENT_MAGIC = 0
CONFLUENT_HEADER_SIZE = 5  # magic + 4-byte schema id
_U64 = 1 << 64


class SchemaStoreUnavailable(TransientError):
    """The schema store (Schema Registry, schema topic) cannot be reached right now: retry."""


def _head(data: bytes | bytearray | memoryview, n: int = 16) -> str:
    head = bytes(data[:n]).hex(" ")
    return head + (" ..." if len(data) > n else "") if head else "(empty)"


def fingerprint_bytes(fingerprint: int | bytes) -> bytes:
    """The 8 wire bytes of a CRC-64-AVRO fingerprint.

    An ``int`` is the 64-bit fingerprint value (unsigned, or Java's signed ``long``), written
    little-endian; ``bytes`` must already be the 8 wire bytes (e.g.
    ``AvroCodec.fingerprint_bytes``). Raises ``ValueError`` otherwise (a programming error).
    """
    if isinstance(fingerprint, bytes | bytearray):
        if len(fingerprint) != 8:
            raise ValueError(f"a CRC-64-AVRO fingerprint is 8 bytes, got {len(fingerprint)}")
        return bytes(fingerprint)
    if isinstance(fingerprint, bool) or not isinstance(fingerprint, int):
        raise ValueError(f"fingerprint must be int or bytes, got {type(fingerprint).__name__}")
    if not -(1 << 63) <= fingerprint < _U64:
        raise ValueError(f"fingerprint {fingerprint} does not fit 64 bits")
    return (fingerprint % _U64).to_bytes(8, "little")


def frame_single_object(fingerprint: int | bytes, body: bytes) -> bytes:
    """Frame an Avro binary ``body`` in the Avro single-object encoding (``C3 01`` + fingerprint).

    See :func:`fingerprint_bytes` for ``fingerprint``.
    """
    return SINGLE_OBJECT_MARKER + fingerprint_bytes(fingerprint) + body


def parse_single_object(data: bytes) -> tuple[int, bytes]:
    """Split a single-object encoded value into (fingerprint as unsigned int, Avro body).

    Raises :class:`~crossfade.errors.DecodeError` when the marker is missing or the header is
    truncated.
    """
    if len(data) < SINGLE_OBJECT_HEADER_SIZE or data[:2] != SINGLE_OBJECT_MARKER:
        if data[:2] == SINGLE_OBJECT_MARKER:
            raise DecodeError(
                f"truncated Avro single-object record: {len(data)} bytes, the header alone is "
                f"{SINGLE_OBJECT_HEADER_SIZE} (first bytes: {_head(data)})"
            )
        raise DecodeError(
            f"not an Avro single-object record (no C3 01 marker; first bytes: {_head(data)})"
        )
    return int.from_bytes(data[2:10], "little"), bytes(data[SINGLE_OBJECT_HEADER_SIZE:])


def frame_confluent(schema_id: int, body: bytes) -> bytes:
    """Frame an Avro binary ``body`` in the Confluent wire format (``00`` + 4-byte id).

    Raises ``ValueError`` for an id outside 0..2**31-1 (a programming error).
    """
    if isinstance(schema_id, bool) or not 0 <= schema_id < (1 << 31):
        raise ValueError(f"Schema Registry id {schema_id!r} is not in 0..2**31-1")
    return bytes((CONFLUENT_MAGIC,)) + schema_id.to_bytes(4, "big") + body


def parse_confluent(data: bytes) -> tuple[int, bytes]:
    """Split a Confluent-framed value into (schema id, Avro body).

    Raises :class:`~crossfade.errors.DecodeError` when the magic byte is wrong or the header is
    truncated.
    """
    if len(data) < CONFLUENT_HEADER_SIZE or data[0] != CONFLUENT_MAGIC:
        if len(data) and data[0] == CONFLUENT_MAGIC:
            raise DecodeError(
                f"truncated Confluent-framed record: {len(data)} bytes, the header alone is "
                f"{CONFLUENT_HEADER_SIZE} (first bytes: {_head(data)})"
            )
        raise DecodeError(
            f"not a Confluent-framed record (magic byte is not 00; first bytes: {_head(data)})"
        )
    return int.from_bytes(data[1:5], "big"), bytes(data[CONFLUENT_HEADER_SIZE:])


def detect_framing(data: bytes | bytearray | memoryview | None) -> Framing:
    """Which framing ``data`` uses: ``"single-object"`` or ``"confluent"``.

    Raises :class:`~crossfade.errors.DecodeError` (naming the first bytes in hex) for an empty or
    missing value, a truncated header, or any other leading bytes (including Confluent's
    GUID-prefixed ``01`` format and plain JSON), which crossfade does not read.
    """
    if data is None:
        raise DecodeError("record has no value (a tombstone): nothing to decode")
    n = len(data)
    if n == 0:
        raise DecodeError("record value is empty: nothing to decode")
    first = data[0]
    if first == 0xC3:
        if n >= 2 and data[1] == 0x01:
            if n < SINGLE_OBJECT_HEADER_SIZE:
                raise DecodeError(
                    f"truncated Avro single-object record: {n} bytes, the header alone is "
                    f"{SINGLE_OBJECT_HEADER_SIZE} (first bytes: {_head(data)})"
                )
            return "single-object"
        if n < 2:
            raise DecodeError(f"truncated record: a lone C3 byte (first bytes: {_head(data)})")
    elif first == CONFLUENT_MAGIC:
        if n < CONFLUENT_HEADER_SIZE:
            raise DecodeError(
                f"truncated Confluent-framed record: {n} bytes, the header alone is "
                f"{CONFLUENT_HEADER_SIZE} (first bytes: {_head(data)})"
            )
        return "confluent"
    elif first == 0x01:
        raise DecodeError(
            "record uses Confluent's GUID-prefixed wire format (magic 01), which crossfade does "
            f"not read: configure the serializer for schema-id prefixes (first bytes: {_head(data)})"
        )
    raise DecodeError(
        "record value is neither Avro single-object (C3 01 ...) nor Confluent-framed (00 ...) "
        f"(first bytes: {_head(data)})"
    )


# --------------------------------------------------------------------------------------------
# Schema resolution
# --------------------------------------------------------------------------------------------


@runtime_checkable
class SchemaResolver(Protocol):
    """Finds the writer schema of a record.

    Both methods raise :class:`~crossfade.errors.DecodeError` (message starting "unknown schema")
    when the schema is truly unknown, and a :class:`~crossfade.errors.TransientError` subclass
    (usually :class:`SchemaStoreUnavailable`) when the store cannot be reached.
    """

    def resolve_single_object(self, fingerprint: int) -> AvroCodec:
        """The codec whose CRC-64-AVRO fingerprint (unsigned int) is ``fingerprint``."""
        ...

    def resolve_confluent(self, schema_id: int) -> AvroCodec:
        """The codec registered under Schema Registry id ``schema_id``."""
        ...


MissHandler = Callable[[int], None]


class SchemaCache:
    """In-memory schema store: fingerprint -> :class:`AvroCodec` (and optionally id -> codec).

    The topic-backed schema store feeds it with :meth:`add` as it reads the schema topic. Since a
    record can arrive before its schema has been read, a cache miss first calls ``on_miss``
    (if given) with the fingerprint: the store can catch up with its topic there (calling
    :meth:`add`), or raise :class:`SchemaStoreUnavailable` if it cannot reach the topic. Only a
    fingerprint still missing afterwards is "unknown" (:class:`~crossfade.errors.DecodeError`).

    Thread-safe: the store may add from one thread while decoders resolve from others.
    """

    def __init__(self, on_miss: MissHandler | None = None) -> None:
        self._by_fingerprint: dict[int, AvroCodec] = {}
        self._by_id: dict[int, AvroCodec] = {}
        self._by_text: dict[str, AvroCodec] = {}
        self._on_miss = on_miss
        self._lock = threading.Lock()

    def add(self, schema_json: str, *, schema_id: int | None = None) -> AvroCodec:
        """Parse and store an Avro schema given as JSON text; return its codec.

        Adding a schema already present returns the stored codec (the same text is not parsed
        twice, so replaying the schema topic is cheap). ``schema_id`` also makes it resolvable
        as a Confluent id. Raises :class:`~crossfade.errors.DecodeError` if the text is not a
        valid Avro schema.
        """
        codec = self._by_text.get(schema_json)
        if codec is None:
            codec = AvroCodec(schema_json)
        stored = self.add_codec(codec, schema_id=schema_id)
        self._by_text[schema_json] = stored
        return stored

    def add_codec(self, codec: AvroCodec, *, schema_id: int | None = None) -> AvroCodec:
        """Store an already built codec; return the stored one (the first added wins)."""
        with self._lock:
            stored = self._by_fingerprint.setdefault(codec.fingerprint, codec)
            if schema_id is not None:
                self._by_id[schema_id] = stored
        return stored

    def get(self, fingerprint: int) -> AvroCodec | None:
        """The codec with this fingerprint, or None (never calls ``on_miss``)."""
        return self._by_fingerprint.get(fingerprint)

    def __contains__(self, fingerprint: object) -> bool:
        return fingerprint in self._by_fingerprint

    def __len__(self) -> int:
        return len(self._by_fingerprint)

    def __iter__(self) -> Iterator[AvroCodec]:
        return iter(list(self._by_fingerprint.values()))

    def resolve_single_object(self, fingerprint: int) -> AvroCodec:
        """See :class:`SchemaResolver`; consults ``on_miss`` once on a miss."""
        codec = self._by_fingerprint.get(fingerprint)
        if codec is None and self._on_miss is not None:
            self._on_miss(fingerprint)
            codec = self._by_fingerprint.get(fingerprint)
        if codec is None:
            raise DecodeError(
                f"unknown schema: no Avro schema with fingerprint "
                f"{fingerprint % _U64:016x} in the schema store"
            )
        return codec

    def resolve_confluent(self, schema_id: int) -> AvroCodec:
        """See :class:`SchemaResolver`; only ids given to :meth:`add` are known."""
        codec = self._by_id.get(schema_id)
        if codec is None:
            raise DecodeError(
                f"unknown schema: Schema Registry id {schema_id} is not known to this schema "
                "cache (Confluent-framed records need a Schema Registry: configure one)"
            )
        return codec


class RegistryClient(Protocol):
    """The part of ``confluent_kafka.schema_registry.SchemaRegistryClient`` crossfade uses."""

    def get_schema(self, schema_id: int) -> Any:
        """A ``Schema`` with ``schema_str``, ``schema_type`` and ``references``."""
        ...


_UNAVAILABLE_STATUS = frozenset((408, 425, 429, 500, 502, 503, 504))


class RegistryResolver:
    """Resolves Confluent ids through a Schema Registry client; caches the codecs per id.

    ``client`` is a ``confluent_kafka.schema_registry.SchemaRegistryClient`` (or anything with
    its ``get_schema(id)``); :meth:`from_config` builds one (that import needs the
    ``confluent-kafka[schemaregistry]`` extras). Single-object records are resolved by
    ``single_object`` (e.g. the topic-backed :class:`SchemaCache`) when given.

    Errors: registry 404 (subject/schema not found) -> DecodeError "unknown schema"; a
    non-Avro schema or one with references -> DecodeError; 401/403 -> ConfigError (wrong
    credentials stop the worker instead of dead-lettering every record); 408/429/5xx, timeouts,
    and connection failures -> :class:`SchemaStoreUnavailable`.
    """

    def __init__(
        self, client: RegistryClient, *, single_object: SchemaResolver | None = None
    ) -> None:
        self._client = client
        self._single_object = single_object
        self._codecs: dict[int, AvroCodec] = {}

    @classmethod
    def from_config(
        cls, conf: Mapping[str, Any], *, single_object: SchemaResolver | None = None
    ) -> RegistryResolver:
        """Build a ``SchemaRegistryClient`` from ``conf`` (``{"url": ..., ...}``).

        Raises :class:`~crossfade.errors.ConfigError` when the confluent-kafka schema-registry
        extras are not installed or the configuration is rejected.
        """
        try:
            from confluent_kafka.schema_registry import SchemaRegistryClient
        except ImportError as exc:
            raise ConfigError(
                f"the Schema Registry client is not available ({exc})",
                "install confluent-kafka[schemaregistry]",
            ) from exc
        try:
            client = SchemaRegistryClient(dict(conf))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"invalid Schema Registry configuration: {exc}") from exc
        return cls(client, single_object=single_object)

    def resolve_confluent(self, schema_id: int) -> AvroCodec:
        """See :class:`SchemaResolver`."""
        codec = self._codecs.get(schema_id)
        if codec is not None:
            return codec
        try:
            schema = self._client.get_schema(schema_id)
        except Exception as exc:
            raise self._classify(schema_id, exc) from exc
        schema_type = getattr(schema, "schema_type", None) or "AVRO"
        if schema_type.upper() != "AVRO":
            raise DecodeError(f"Schema Registry id {schema_id} is a {schema_type} schema, not Avro")
        if getattr(schema, "references", None):
            raise DecodeError(
                f"Schema Registry id {schema_id} uses schema references, which crossfade does "
                "not resolve"
            )
        schema_str = getattr(schema, "schema_str", None)
        if not isinstance(schema_str, str):
            raise DecodeError(f"Schema Registry returned no schema text for id {schema_id}")
        codec = AvroCodec(schema_str)
        self._codecs[schema_id] = codec
        return codec

    def resolve_single_object(self, fingerprint: int) -> AvroCodec:
        """See :class:`SchemaResolver`; delegated to ``single_object`` when configured."""
        if self._single_object is None:
            raise DecodeError(
                f"unknown schema: single-object record with fingerprint "
                f"{fingerprint % _U64:016x}, but only a Schema Registry is "
                "configured (no fingerprint store)"
            )
        return self._single_object.resolve_single_object(fingerprint)

    @staticmethod
    def _classify(schema_id: int, exc: Exception) -> Exception:
        status = getattr(exc, "http_status_code", None)
        if status is None:
            # Not a registry answer: the request did not get through (connection, DNS, timeout).
            return SchemaStoreUnavailable(
                f"Schema Registry unreachable while fetching schema id {schema_id}: {exc!r:.200}"
            )
        if status == 404:
            return DecodeError(f"unknown schema: Schema Registry has no schema id {schema_id}")
        if status in (401, 403):
            return ConfigError(
                f"Schema Registry refused access (HTTP {status}) fetching schema id {schema_id}",
                "check the registry credentials",
            )
        if status in _UNAVAILABLE_STATUS or status >= 500 or status < 0:
            return SchemaStoreUnavailable(
                f"Schema Registry failed (HTTP {status}) fetching schema id {schema_id}: "
                f"{exc!s:.200}"
            )
        return DecodeError(
            f"Schema Registry rejected the request for schema id {schema_id} "
            f"(HTTP {status}): {exc!s:.200}"
        )


# --------------------------------------------------------------------------------------------
# Decoder
# --------------------------------------------------------------------------------------------


class Decoder:
    """Decodes Kafka record values in either framing through a :class:`SchemaResolver`.

    Datums are raw Avro values (see :class:`~crossfade.events.avro_codec.AvroCodec`). Raises
    :class:`~crossfade.errors.DecodeError` for undecodable bytes or unknown schemas and lets the
    resolver's transient errors through.
    """

    __slots__ = ("resolver",)

    def __init__(self, resolver: SchemaResolver) -> None:
        self.resolver = resolver

    def decode(self, data: bytes) -> Any:
        """The datum of one record value."""
        return self.decode_with_schema(data)[0]

    def decode_change_with_schema(self, data: bytes) -> tuple[Any, AvroCodec]:
        """:meth:`decode_with_schema` of a change event's value: a Debezium envelope is read
        without what a change event is not made of (:meth:`AvroCodec.decode_change`)."""
        if (  # detect_framing's single-object case, without its call (every event)
            data is not None
            and len(data) >= SINGLE_OBJECT_HEADER_SIZE
            and data[0] == 0xC3
            and data[1] == 0x01
        ) or detect_framing(data) == "single-object":
            codec = self.resolver.resolve_single_object(int.from_bytes(data[2:10], "little"))
            return codec.decode_change(data, SINGLE_OBJECT_HEADER_SIZE), codec
        codec = self.resolver.resolve_confluent(int.from_bytes(data[1:5], "big"))
        return codec.decode_change(data, CONFLUENT_HEADER_SIZE), codec

    def decode_with_schema(self, data: bytes) -> tuple[Any, AvroCodec]:
        """The datum of one record value and the writer schema's codec."""
        if detect_framing(data) == "single-object":
            codec = self.resolver.resolve_single_object(int.from_bytes(data[2:10], "little"))
            return codec.decode(data, SINGLE_OBJECT_HEADER_SIZE), codec
        codec = self.resolver.resolve_confluent(int.from_bytes(data[1:5], "big"))
        return codec.decode(data, CONFLUENT_HEADER_SIZE), codec
