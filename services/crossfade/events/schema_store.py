"""Schemas without a registry server: a compacted topic of Avro schemas keyed by fingerprint.

Capture publishes each Avro schema it derives (key = CRC-64-AVRO fingerprint as 16 hex digits,
value = the full schema JSON, ``connect.*`` properties included) *before* any event that uses it
and waits for the acknowledgement. Events carry the fingerprint in Avro single-object encoding.
Sync reads the topic into a :class:`~crossfade.events.framing.SchemaCache`; an unknown
fingerprint triggers a re-read of what is new, then of the whole topic (after a broker restarted
empty the topic is new and shorter than the reader's position), and is a :class:`DecodeError`
(dead letter) only once the topic has been read without finding it.

The fingerprint covers Avro's parsing canonical form, which drops ``connect.*`` properties: two
schemas that differ only in Debezium semantics (a column changed from ``bigint`` to a timestamp,
say) share a fingerprint. Capture refuses such a change loudly instead of letting old events decode
with new semantics.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from crossfade.errors import BrokerUnavailable, DecodeError, SchemaMismatch
from crossfade.events.avro_codec import AvroCodec
from crossfade.events.framing import SchemaCache

log = logging.getLogger(__name__)

_PUBLISH_ATTEMPTS = 8


def schema_text(avro_schema: dict[str, Any]) -> str:
    return json.dumps(avro_schema, sort_keys=True, separators=(",", ":"))


class SchemaTopicReader:
    """Reads the schemas topic into a cache (from the beginning, then incrementally)."""

    def __init__(self, client_conf: dict[str, Any], topic: str, cache: SchemaCache) -> None:
        self.topic = topic
        self.cache = cache
        self.texts: dict[int, str] = {}
        self._consumer = Consumer(
            {
                **client_conf,
                "group.id": f"crossfade-schemas-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "allow.auto.create.topics": False,
                # a read ends at the end of the topic, reported at once: not after an idle pause,
                # nor after a fetch the broker holds for lack of data (500 ms by default)
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 20,
            }
        )
        self._consumer.assign([TopicPartition(topic, 0, 0)])

    def refresh(self, timeout: float = 2.0, idle: float = 0.3) -> int:
        """Read what is new; stop after ``idle`` seconds without a record. Returns records read."""
        n = 0
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last < idle:
            m = self._consumer.poll(0.1)
            if m is None:
                continue
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    break
                continue
            last = time.monotonic()
            value = m.value()
            if value:
                text = value.decode()
                codec = self.cache.add(text)
                self.texts[codec.fingerprint] = text
                n += 1
        return n

    def rewind(self) -> None:
        """Read the topic from its start again: a broker that lost its log (restarted empty)
        holds a new, shorter topic, and a position past its end would find nothing new (Tansu
        reports no out-of-range). Re-adding a known schema is cheap (:class:`SchemaCache`)."""
        self._consumer.assign([TopicPartition(self.topic, 0, 0)])

    def close(self) -> None:
        self._consumer.close()


_DESCRIPTIVE_PARAMS = ("allowed",)
"""Connect parameters that describe a column without changing how its values are written: an
enum's labels (``ALTER TYPE ... ADD VALUE``; Debezium re-reads them when it restarts)."""


def _value_shape(text: str) -> Any:
    """The schema without what does not change how a value is encoded or read: the descriptive
    Connect parameters, column-length/-scale hints and docs. Two schemas with one fingerprint and
    one shape are the same to sync; one fingerprint and two shapes is a type change Avro hides."""

    def strip(node: Any) -> Any:
        if isinstance(node, list):
            return [strip(x) for x in node]
        if not isinstance(node, dict):
            return node
        out = {}
        for k, v in node.items():
            if k in ("doc", "connect.doc", "connect.version"):
                continue
            if k == "connect.parameters" and isinstance(v, dict):
                v = {
                    pk: pv
                    for pk, pv in v.items()
                    if pk not in _DESCRIPTIVE_PARAMS
                    and not pk.startswith("__debezium.source.column.")
                }
            out[k] = strip(v)
        return out

    return strip(json.loads(text))


class SchemaPublisher:
    """Capture side: publish each schema once, durably, before events that use it."""

    def __init__(self, client_conf: dict[str, Any], topic: str) -> None:
        self.topic = topic
        self.cache = SchemaCache()
        # not idempotent: a retried schema record is the same key and text in a compacted topic, and
        # an idempotent producer's id request costs its first publish ~0.5 s (measured on Tansu)
        # nor auto-creating: a broker restarted empty would create the topic uncompacted
        self._producer = Producer({**client_conf, "acks": "all", "allow.auto.create.topics": False})
        reader = SchemaTopicReader(client_conf, topic, self.cache)
        try:
            reader.refresh(timeout=5.0, idle=0.5)
            self.published: dict[int, str] = dict(reader.texts)
        finally:
            reader.close()

    def publish(self, avro_schema: dict[str, Any]) -> AvroCodec:
        text = schema_text(avro_schema)
        codec = self.cache.add(text)
        prev = self.published.get(codec.fingerprint)
        if prev == text:
            return codec
        if prev is not None and _value_shape(prev) != _value_shape(text):
            raise SchemaMismatch(
                f"schema {avro_schema.get('name')} changed in a way Avro cannot tell apart from its previous "
                f"version (same fingerprint {codec.fingerprint:016x}): a column changed type but not its Avro type",
                "runbook: stop writes to that table, let sync drain, then migrate the column explicitly "
                "(see docs/operations.md)",
            )
        # A refusal is tried again a few times: the record is the same key and text in a
        # compacted topic, so a duplicate is harmless, and Tansu (0.6) was seen refusing the
        # first produces after a restart ("Unknown broker error": its in-memory store held an
        # object at the offset it handed out, one more offset per attempt; issue 21)
        errors: list[str] = []

        def delivered(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                errors.append(err.str())

        for attempt in range(1, _PUBLISH_ATTEMPTS + 1):
            errors.clear()
            self._producer.produce(
                self.topic,
                key=f"{codec.fingerprint:016x}".encode(),
                value=text.encode(),
                partition=0,
                on_delivery=delivered,
            )
            if self._producer.flush(30):
                errors[:] = ["timeout"]
                break
            if not errors:
                break
            if attempt < _PUBLISH_ATTEMPTS:
                log.warning(
                    "the broker refused schema %s (%s): trying again",
                    avro_schema.get("name"),
                    errors[0],
                )
                time.sleep(0.2 * attempt)
        if errors:
            raise BrokerUnavailable(
                f"cannot publish schema {avro_schema.get('name')} to {self.topic}: {errors}"
            )
        self.published[codec.fingerprint] = text
        log.info("published schema %s (%016x)", avro_schema.get("name"), codec.fingerprint)
        return codec


class TopicSchemaResolver:
    """Sync side: resolve single-object fingerprints from the schemas topic, Confluent ids from
    a Schema Registry when one is configured."""

    def __init__(
        self,
        client_conf: dict[str, Any],
        topic: str,
        registry_url: str | None,
        wait_s: float = 10.0,
    ) -> None:
        self.cache = SchemaCache()
        self.reader = SchemaTopicReader(client_conf, topic, self.cache)
        self.reader.refresh(timeout=5.0)
        self.wait_s = wait_s
        self._registry: Any = None
        if registry_url:
            from confluent_kafka.schema_registry import SchemaRegistryClient

            from crossfade.events.framing import RegistryResolver

            self._registry = RegistryResolver(
                SchemaRegistryClient.new_client({"url": registry_url})
            )

    def resolve_single_object(self, fingerprint: int) -> AvroCodec:
        codec = self.cache.get(fingerprint)
        if codec is not None:
            return codec
        deadline = time.monotonic() + self.wait_s
        rewound = False
        while time.monotonic() < deadline:
            self.reader.refresh(timeout=1.0)
            codec = self.cache.get(fingerprint)
            if codec is not None:
                return codec
            if not rewound:  # not in what is new: the whole topic, once (a broker reset)
                self.reader.rewind()
                rewound = True
        raise DecodeError(
            f"unknown schema fingerprint {fingerprint:016x}: not in {self.reader.topic}",
            "the record was not written by this crossfade's capture, or its schema topic was lost",
        )

    def resolve_confluent(self, schema_id: int) -> AvroCodec:
        if self._registry is None:
            raise DecodeError(
                f"record in Confluent wire format (schema id {schema_id}) but no Schema Registry is configured",
                "set kafka.schema_registry_url",
            )
        return self._registry.resolve_confluent(schema_id)


class RegistryRegistrar:
    """Capture side with a Schema Registry: register each schema under its TopicNameStrategy
    subject (``<topic>-key`` / ``<topic>-value``, as Kafka Connect's AvroConverter does) and
    return the id for the Confluent wire format. Ids are cached per subject and schema text, so
    the registry is asked once per schema version. An unreachable registry is a transient error:
    capture stops before producing anything that would reference an unregistered schema.
    """

    def __init__(self, url: str, client: Any = None) -> None:
        if client is None:
            from confluent_kafka.schema_registry import SchemaRegistryClient

            client = SchemaRegistryClient.new_client({"url": url})  # mock:// URLs: in-memory
        self._client = client
        self._ids: dict[tuple[str, str], int] = {}

    def register(self, subject: str, avro_schema: dict[str, Any]) -> int:
        text = schema_text(avro_schema)
        sid = self._ids.get((subject, text))
        if sid is not None:
            return sid
        from confluent_kafka.schema_registry import Schema

        try:
            sid = int(self._client.register_schema(subject, Schema(text, "AVRO")))
        except Exception as exc:  # SchemaRegistryError, connection errors
            code = getattr(exc, "http_status_code", None)
            if code in (409, 422):
                raise SchemaMismatch(
                    f"the Schema Registry refused the new schema of {subject} as incompatible ({exc})",
                    "runbook: set the subject's compatibility deliberately, or migrate the column explicitly",
                ) from None
            raise BrokerUnavailable(
                f"cannot register {subject} with the Schema Registry: {exc}"
            ) from None
        self._ids[(subject, text)] = sid
        return sid
