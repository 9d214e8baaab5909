"""Framed Avro change records for sync's tests without a broker: simple message objects with
.topic()/.partition()/.offset()/.key()/.value()/.headers(), and a planner that decodes them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from crossfade.config import KafkaConfig
from crossfade.events.decode import POSITION_HEADER, EventDecoder
from crossfade.events.framing import SchemaCache, frame_single_object
from crossfade.events.kafka import CONTROL_HEADER, ControlRecord
from crossfade.events.model import position
from crossfade.sync.planner import Planner

TOPIC = "cf.public.t"
KEY = json.dumps(
    {
        "type": "record",
        "name": "Key",
        "namespace": "cf.public.t",
        "fields": [{"name": "id", "type": "int"}],
    }
)
ENVELOPE = json.dumps(
    {
        "type": "record",
        "name": "Envelope",
        "namespace": "cf.public.t",
        "fields": [
            {
                "name": "after",
                "type": [
                    "null",
                    {"type": "record", "name": "Value", "fields": [{"name": "id", "type": "int"}]},
                ],
                "default": None,
            },
            {
                "name": "source",
                "type": {
                    "type": "record",
                    "name": "Source",
                    "namespace": "cf.debezium",
                    "fields": [
                        {"name": "lsn", "type": ["null", "long"], "default": None},
                        {"name": "ts_ms", "type": "long"},
                        {"name": "snapshot", "type": ["null", "string"], "default": None},
                    ],
                },
            },
            {"name": "op", "type": "string"},
        ],
    }
)


@dataclass
class Msg:
    """The part of confluent_kafka.Message the planner reads."""

    _topic: str
    _partition: int
    _offset: int
    _key: bytes | None
    _value: bytes | None
    _headers: list[tuple[str, bytes | None]] | None = None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        return self._headers


class Batch:
    def __init__(self) -> None:
        self.cache = SchemaCache()
        self.offsets: dict[int, int] = {}

    def _framed(self, schema: str, datum: Any) -> bytes:
        codec = self.cache.add(schema)
        return frame_single_object(codec.fingerprint, codec.encode(datum))

    def _next(self, partition: int) -> int:
        off = self.offsets.get(partition, 0)
        self.offsets[partition] = off + 1
        return off

    def change(
        self, key: int, lsn: int, op: str = "u", partition: int = 0, *, snapshot: bool = False
    ) -> Msg:
        """A change of ``key``; ``snapshot``: a row of a snapshot at ``lsn`` (position ``lsn << 64``,
        what a sweep marker at ``lsn`` keeps)."""
        value = self._framed(
            ENVELOPE,
            {
                "after": None if op in ("d", "t") else {"id": key},
                "op": "r" if snapshot else op,
                "source": {"lsn": lsn, "ts_ms": 1, "snapshot": "true" if snapshot else "false"},
            },
        )
        pos = position(lsn, snapshot=True) if snapshot else lsn * 2
        headers = [(POSITION_HEADER, str(pos).encode())]
        k = None if op == "t" else self._framed(KEY, {"id": key})
        return Msg(TOPIC, partition, self._next(partition), k, value, headers)

    def broken(self, key: int, partition: int = 0) -> Msg:
        """A record whose key decodes and whose value does not."""
        return Msg(
            TOPIC, partition, self._next(partition), self._framed(KEY, {"id": key}), b"\x00junk"
        )

    def control(self, kind: str, lsn: int, partition: int = 0, partitions: int = 0) -> Msg:
        rec = ControlRecord(
            kind, "public.t", lsn, token="tok" if kind == "fence" else "", partitions=partitions
        )
        headers = [(CONTROL_HEADER, kind.encode())]
        return Msg(TOPIC, partition, self._next(partition), None, rec.encode(), headers)

    def planner(self, mapped: bool = False) -> Planner:
        dec = EventDecoder(KafkaConfig(bootstrap_servers="127.0.0.1:1"), resolver=self.cache)
        return Planner(dec, {TOPIC: "public.t"}, ["public.t"] if mapped else [])
