"""capture's default converter: Debezium's JSON records to framed Avro, per record.

:class:`JsonAvroEncoder` turns the JSON converter's payload (its Connect schema beside it, as
:mod:`crossfade.capture.batch` reads it, or in a ``{"schema", "payload"}`` envelope) into Avro
framed for the change topic (single-object encoding with the published schema's fingerprint, or
the Confluent wire format with a registered id): the schema compiled once
(:class:`~crossfade.events.avro_codec.ConnectCodec`, its fused encoder), then per record one
dict lookup, one JSON parse and one encoder call (issue 22: the handler thread's CPU).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

from crossfade.errors import CrossfadeError

__all__ = ["JsonAvroEncoder", "encode_known", "loads"]


def loads(text: str | bytes) -> Any:
    """Parse a Debezium payload: orjson (~3x faster than ``json`` on a record's payload, the
    largest cost of capture's Python per record), and ``json`` for what orjson refuses but
    ``json`` reads (NaN/Infinity tokens, lone surrogate escapes), so a record parses as before
    or fails as before. orjson reads an integer beyond 64 bits as a float: only for payloads
    whose schema has no Decimal (Connect's other integers are at most 64 bits)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


SMALL, SMALL_KEPT = 64, 4096
"""Records of at most this many bytes of JSON (keys) keep their encoding, this many per schema."""


def encode_known(hit: tuple[Any, Any, dict[Any, Any]], text: str | bytes) -> Any:
    """(framed Avro, payload) of the JSON payload ``text`` of a schema seen before: ``hit`` is
    its framed encoder, its JSON parser and what its small records gave. A key comes again and
    again (a teller, a branch, a hot row): its text is looked up instead of parsed and encoded
    (the bytes are those of the schema and the text alone; the payload kept is only read)."""
    small = len(text) <= SMALL
    if small:
        done = hit[2].get(text)
        if done is not None:
            return done
    try:
        payload = hit[1](text)
    except orjson.JSONDecodeError:  # what orjson refuses and json reads (as loads)
        payload = json.loads(text)
    if payload is None:
        return None, None
    done = hit[0](payload), payload
    if small:
        kept = hit[2]
        if len(kept) >= SMALL_KEPT:
            kept.clear()
        kept[text] = done
    return done


class JsonAvroEncoder:
    """The JSON path of :class:`~crossfade.capture.service.ChangeProducer`."""

    def __init__(self, compile_schema: Callable[[Any, Any, str], tuple[Any, Any]]) -> None:
        """``compile_schema(connect schema, its text, subject) -> (codec, frame)``: the producer's
        own (publishes or registers capture's schema before first use)."""
        self._compile = compile_schema
        self.by_subject = False
        """Schemas are registered per subject (Schema Registry): the cache keys by subject too."""
        self._by_text: dict[Any, tuple[Any, Any, dict[Any, Any]]] = {}
        """Schema text (and subject) -> (its framed encoder, its JSON parser, the results of its
        small records: :func:`encode_known`)."""

    def encode(
        self,
        raw_json: str | bytes | None,
        subject: str = "",
        schema_text: str | bytes | None = None,
    ) -> tuple[bytes | None, dict[str, Any] | None]:
        """Debezium JSON -> single-object framed Avro, and the payload.

        ``schema_text`` given: ``raw_json`` is the payload alone and this is its Connect JSON schema
        (capture's own records: :mod:`crossfade.capture.batch` reads the schema beside the
        record). Otherwise ``raw_json`` is ``{"schema":...,"payload":...}`` (a converter with
        ``schemas.enable=true``): Debezium writes the schema first, and the schema never contains
        the envelope's ``,"payload":`` separator, so the schema's own text is cut out and only the
        payload is parsed. Either way the schema's text keys the codec cache.
        """
        if raw_json is None:
            return None, None
        if schema_text is not None:
            # capture's own records, their schema seen before: the per-record path
            hit = self._by_text.get((subject, schema_text) if self.by_subject else schema_text)
            if hit is not None:
                return encode_known(hit, raw_json)
            payload_text: str | bytes = raw_json
        else:
            if isinstance(raw_json, bytes):  # as BatchReader hands them over (json reads UTF-8)
                sep = raw_json.find(b',"payload":') if raw_json.startswith(b'{"schema":') else -1
            else:
                sep = raw_json.find(',"payload":') if raw_json.startswith('{"schema":') else -1
            if sep <= 0:
                doc = json.loads(raw_json)
                schema, payload = doc.get("schema"), doc.get("payload")
                if schema is None:
                    raise CrossfadeError(
                        "Debezium emitted a record without its schema",
                        "leave the converter's schemas.enable to crossfade (not in capture.properties)",
                    )
                codec, frame = self._compile(schema, None, subject)
                if payload is None:
                    return None, None
                return frame(codec.encode(payload)), payload
            schema_text, payload_text = raw_json[10:sep], raw_json[sep + 11 : -1]
        cache_key = (subject, schema_text) if self.by_subject else schema_text
        hit = self._by_text.get(cache_key)
        if hit is None:
            cc, frame = self._compile(json.loads(schema_text), schema_text, subject)
            # a Decimal may arrive as a JSON number (decimal.format=NUMERIC), which orjson
            # reads as a float beyond 64 bits: such schemas keep the exact stdlib parser
            exact = (
                b"org.apache.kafka.connect.data.Decimal" in schema_text
                if isinstance(schema_text, bytes)
                else "org.apache.kafka.connect.data.Decimal" in schema_text
            )
            hit = self._by_text[cache_key] = (
                cc.framed(frame),
                json.loads if exact else orjson.loads,
                {},
            )
        return encode_known(hit, payload_text)

    @staticmethod
    def payload(raw_json: str | bytes, schema_text: str | None) -> Any:
        """The payload of a record handled as JSON (fence, signal): alone, or in its envelope."""
        doc = json.loads(raw_json)
        return doc if schema_text is not None else doc["payload"]
