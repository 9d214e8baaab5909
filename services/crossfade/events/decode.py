"""Kafka record -> :class:`ChangeEvent`.

Accepts both framings (Avro single-object encoding from embedded capture, Confluent wire format
from Kafka Connect's AvroConverter) and Debezium's change envelope. Anything that is not a
decodable Debezium envelope raises :class:`DecodeError`, which sync dead-letters with the reason.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import Message

from crossfade.config import KafkaConfig
from crossfade.errors import DecodeError
from crossfade.events.framing import Decoder
from crossfade.events.model import SHIFT, UNAVAILABLE, ChangeEvent, RowSchema, position
from crossfade.events.schema_store import TopicSchemaResolver

EPOCH_HEADER = "crossfade.epoch"
POSITION_HEADER = "crossfade.pos"
"""Set by crossfade's capture: the guard position, snapshot floor applied. Records produced by
Kafka Connect do not carry it; their position is derived from the envelope alone."""
_UNAVAILABLE_BYTES = UNAVAILABLE.encode()
_NONE: frozenset[str] = frozenset()


def header(m: Message, name: str) -> str | None:
    return header_in(m.headers(), name)


def header_in(hs: Any, name: str) -> str | None:
    """The value of header ``name`` in a record's ``headers()`` list (read it once per record:
    each ``Message.headers()`` call builds the list anew)."""
    if not hs:
        return None
    for k, v in hs:
        if k == name:
            return v.decode() if isinstance(v, bytes) else (None if v is None else str(v))
    return None


def _is_placeholder(v: Any) -> bool:
    if isinstance(v, str | bytes):
        return v in (UNAVAILABLE, _UNAVAILABLE_BYTES)
    return (
        isinstance(v, list)
        and len(v) == 1
        and isinstance(v[0], str | bytes)
        and v[0] in (UNAVAILABLE, _UNAVAILABLE_BYTES)
    )


class EventDecoder:
    def __init__(self, kafka: KafkaConfig, resolver: Any | None = None) -> None:
        self.resolver = resolver or TopicSchemaResolver(
            kafka.client_config(), kafka.schemas_topic, kafka.schema_registry_url
        )
        self.decoder = Decoder(self.resolver)

    def decode(
        self, key: bytes | None, value: bytes | None, table: str, pos_header: str | None = None
    ) -> ChangeEvent:
        if value is None:
            raise DecodeError("tombstone has no change event")
        env, codec = self.decoder.decode_with_schema(value)
        if not isinstance(env, dict) or "op" not in env or "source" not in env:
            raise DecodeError(f"record on {table} is not a Debezium change envelope (no op/source)")
        op = env["op"]
        if op not in ("c", "u", "d", "r", "t"):
            raise DecodeError(f"unknown Debezium operation {op!r}")
        source = env["source"] or {}
        lsn = source.get("lsn")
        snap = str(source.get("snapshot") or "false")
        if lsn is None and snap == "incremental" and pos_header is not None:
            lsn = (
                int(pos_header) >> SHIFT
            )  # incremental snapshot rows carry none: capture placed them
        if lsn is None:
            raise DecodeError("change event has no source position (source.lsn)")
        key_dict: dict[str, Any] | None = None
        key_schema: RowSchema | None = None
        if op != "t" and key is not None:
            kd, kcodec = self.decoder.decode_with_schema(key)
            if not isinstance(kd, dict):
                raise DecodeError(f"key of {table} is not a record")
            key_dict, key_schema = kd, kcodec.row_schema
        after = env.get("after") if op in ("c", "u", "r") else None
        if op in ("c", "u", "r") and after is None:
            raise DecodeError(f"{op!r} change event of {table} has no 'after' row")
        # a placeholder value is in the record's bytes as is (Avro strings and bytes are raw):
        # look at each column only when the bytes hold one
        if after and _UNAVAILABLE_BYTES in value:
            unavailable = frozenset(c for c, v in after.items() if _is_placeholder(v))
        else:
            unavailable = _NONE
        if pos_header is not None:
            pos = int(pos_header)
        else:
            pos = position(int(lsn), snapshot=snap not in ("false", "incremental"))
        return ChangeEvent(
            table=table,
            op=op,
            key=key_dict,
            after=after,
            lsn=int(lsn),
            source_ts_ms=int(source.get("ts_ms") or 0),
            snapshot=snap,
            position=pos,
            tx_id=source.get("txId"),
            row_schema=codec.row_schema,
            key_schema=key_schema,
            unavailable=unavailable,
        )
