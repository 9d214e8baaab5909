"""The per-event shortcuts of sync's hot path (issue 22) give what the long way gives.

A change envelope is read through a projection that skips what a change event is not made of;
a key record seen before is not decoded again; an append-only row's content hash is made without
``json.dumps``; the planner reads a record's headers in one pass. Each is checked against the
long way on the same input, errors included.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from bench.sync_cpu import ENVELOPE, KEY, account_payload
from confluent_kafka import Message

from crossfade.config import KafkaConfig
from crossfade.errors import DecodeError
from crossfade.events.avro_codec import ConnectCodec, envelope_projection
from crossfade.events.decode import (
    POSITION_HEADER,
    EventDecoder,
    event_from_envelope,
)
from crossfade.events.framing import SchemaCache, frame_single_object
from crossfade.events.kafka import CONTROL_HEADER, ControlRecord
from crossfade.sync.planner import BatchPlan, Planner
from crossfade.target.apply import texts_json


def _codecs() -> tuple[ConnectCodec, ConnectCodec, SchemaCache]:
    vcc, kcc = ConnectCodec(ENVELOPE), ConnectCodec(KEY)
    cache = SchemaCache()
    cache.add_codec(vcc.avro)
    cache.add_codec(kcc.avro)
    return vcc, kcc, cache


def test_the_projected_envelope_makes_the_same_change_event() -> None:
    vcc, _kcc, _cache = _codecs()
    projection = envelope_projection(vcc.avro.schema)
    assert projection is not None
    kept = {f["name"] for f in projection["fields"]}
    assert {"after", "source", "op"} <= kept and "ts_us" not in kept
    for i, op in enumerate(["c", "u", "d", "r"]):
        payload = {**account_payload(i), "op": op}
        if op == "d":
            payload = {**payload, "before": payload["after"], "after": None}
        body = vcc.encode(payload)
        whole, part = vcc.avro.decode(body), vcc.avro.decode_change(body)
        assert part["source"] == {
            k: whole["source"][k] for k in ("snapshot", "lsn", "ts_ms", "txId")
        }
        assert event_from_envelope(whole, "public.t", key={"aid": i}) == event_from_envelope(
            part, "public.t", key={"aid": i}
        )


def test_the_projected_envelope_still_refuses_trailing_and_truncated_bytes() -> None:
    vcc, _kcc, _cache = _codecs()
    body = vcc.encode(account_payload(1))
    for bad in (body + b"\x00", body[:-1], body[: len(body) // 2]):
        with pytest.raises(DecodeError):
            vcc.avro.decode_change(bad)


def test_a_schema_that_is_not_an_envelope_is_read_whole() -> None:
    _vcc, kcc, _cache = _codecs()
    assert envelope_projection(kcc.avro.schema) is None
    body = kcc.encode({"aid": 7})
    assert kcc.avro.decode_change(body) == kcc.avro.decode(body) == {"aid": 7}


def test_a_repeated_key_decodes_equal_but_not_shared() -> None:
    vcc, kcc, cache = _codecs()
    dec = EventDecoder(KafkaConfig(bootstrap_servers="127.0.0.1:1"), resolver=cache)
    key = frame_single_object(kcc.avro.fingerprint, kcc.encode({"aid": 3}))
    value = frame_single_object(vcc.avro.fingerprint, vcc.encode(account_payload(3)))
    a, b = dec.decode(key, value, "public.t"), dec.decode(key, value, "public.t")
    assert a.key == b.key == {"aid": 3} and a.key is not b.key
    assert a.key_schema is b.key_schema is kcc.avro.row_schema
    assert a == b


@pytest.mark.parametrize(
    "vals",
    [
        ["1", None, "x y", 'quo"te\\', "é ü ☃", "\x00\n\t", ""],
        [None, None],
        [],
        ["a", 1, None],  # not a text: json.dumps's own rendering
    ],
)
def test_texts_json_is_json_dumps(vals: list[Any]) -> None:
    assert texts_json(vals) == json.dumps(vals)


def _message(headers: list[tuple[str, bytes | None]], value: bytes | None) -> Message:
    return Message(
        topic="cf.public.t", partition=0, offset=5, key=None, value=value, headers=headers
    )


def test_the_planner_reads_control_and_position_headers_as_before() -> None:
    vcc, _kcc, cache = _codecs()
    dec = EventDecoder(KafkaConfig(bootstrap_servers="127.0.0.1:1"), resolver=cache)
    planner = Planner(dec, {"cf.public.t": "public.t"})
    value = frame_single_object(vcc.avro.fingerprint, vcc.encode(account_payload(2)))
    # the first position header counts; a later one is ignored
    m = _message([(POSITION_HEADER, b"77"), (POSITION_HEADER, b"88")], value)
    e = planner.decode_one(m, BatchPlan())
    assert e is not None and not isinstance(e, ControlRecord) and e.position == 77
    # a control header makes a control record whatever else the headers hold
    fence = ControlRecord("fence", "public.t", 9, "tok")
    m = _message([(POSITION_HEADER, b"77"), (CONTROL_HEADER, b"fence")], fence.encode())
    assert planner.decode_one(m, BatchPlan()) == fence
    # a position header that is not a number is the record's dead letter
    m = _message([(POSITION_HEADER, b"x12")], value)
    d = planner.decode_one(m, BatchPlan())
    assert type(d).__name__ == "DeadLetter" and POSITION_HEADER in d.reason  # type: ignore[union-attr]
