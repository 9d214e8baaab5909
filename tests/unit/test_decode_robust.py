"""Any record that is not a well-formed change event is a DecodeError (a dead letter with the
reason), never another exception that stops the sync batch (issue 18 finding 4, FAULTS 37).

The review's cases go through real Avro bytes (a ``source.lsn`` that is text, a ``source`` that is
not a record, a non-numeric ``crossfade.pos`` header); hypothesis then throws arbitrary envelopes
and headers at the decoder. The live case is ``test_fault_37_*`` in
``tests/integration/test_fault_cases.py``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crossfade.config import KafkaConfig
from crossfade.errors import DecodeError
from crossfade.events.decode import (
    POSITION_HEADER,
    EventDecoder,
    event_from_envelope,
    header_in,
)
from crossfade.events.framing import SchemaCache, frame_single_object
from crossfade.events.model import ChangeEvent


def _envelope_schema(source: Any) -> str:
    return json.dumps(
        {
            "type": "record",
            "name": "Envelope",
            "namespace": "cf.public.t",
            "fields": [
                {
                    "name": "after",
                    "type": [
                        "null",
                        {
                            "type": "record",
                            "name": "Value",
                            "fields": [{"name": "id", "type": "int"}],
                        },
                    ],
                    "default": None,
                },
                {"name": "source", "type": source},
                {"name": "op", "type": "string"},
            ],
        }
    )


SOURCE_OK = {
    "type": "record",
    "name": "Source",
    "namespace": "cf.debezium",
    "fields": [
        {"name": "lsn", "type": ["null", "long"], "default": None},
        {"name": "ts_ms", "type": "long"},
        {"name": "snapshot", "type": ["null", "string"], "default": None},
    ],
}
SOURCE_TEXT_LSN = {
    **SOURCE_OK,
    "name": "SourceText",
    "fields": [{"name": "lsn", "type": "string"}, {"name": "ts_ms", "type": "long"}],
}
KEY = json.dumps(
    {
        "type": "record",
        "name": "Key",
        "namespace": "cf.public.t",
        "fields": [{"name": "id", "type": "int"}],
    }
)


def _decoder() -> tuple[EventDecoder, SchemaCache]:
    cache = SchemaCache()
    return EventDecoder(KafkaConfig(bootstrap_servers="127.0.0.1:1"), resolver=cache), cache


def _framed(cache: SchemaCache, schema_json: str, datum: Any) -> bytes:
    codec = cache.add(schema_json)
    return frame_single_object(codec.fingerprint, codec.encode(datum))


def test_the_reviews_records_are_decode_errors_with_their_reason() -> None:
    dec, cache = _decoder()
    key = _framed(cache, KEY, {"id": 1})
    good = _framed(
        cache,
        _envelope_schema(SOURCE_OK),
        {"after": {"id": 1}, "op": "c", "source": {"lsn": 42, "ts_ms": 1}},
    )
    e = dec.decode(key, good, "public.t")
    assert isinstance(e, ChangeEvent) and e.lsn == 42 and e.key == {"id": 1}
    cases = {
        "source.lsn is not a number": _framed(
            cache,
            _envelope_schema(SOURCE_TEXT_LSN),
            {"after": {"id": 1}, "op": "c", "source": {"lsn": "0/16B3748", "ts_ms": 1}},
        ),
        "source of a change event on public.t is not a record": _framed(
            cache, _envelope_schema("string"), {"after": {"id": 1}, "op": "c", "source": "pg"}
        ),
    }
    for reason, value in cases.items():
        with pytest.raises(DecodeError, match=reason):
            dec.decode(key, value, "public.t")
    for header in ("abc", "", "1e9", "-5", "9" * 5000, "\ufffd"):
        with pytest.raises(DecodeError, match="header crossfade.pos"):
            dec.decode(key, good, "public.t", header)
    # a header that is not even UTF-8 is read, not raised on
    assert header_in([(POSITION_HEADER, b"\xff\xfe1")], POSITION_HEADER) == "\ufffd\ufffd1"
    with pytest.raises(DecodeError, match="header crossfade.pos"):
        dec.decode(key, good, "public.t", header_in([(POSITION_HEADER, b"\xff")], POSITION_HEADER))


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**130), max_value=2**130)
    | st.floats(allow_nan=True)
    | st.text(max_size=12)
    | st.binary(max_size=12)
)
json_like = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
ops = st.sampled_from(["c", "u", "d", "r", "t", "x", ""]) | json_like
source = (
    st.fixed_dictionaries(
        {},
        optional={
            "lsn": st.integers(min_value=-5, max_value=2**65) | json_like,
            "ts_ms": st.integers(min_value=-5, max_value=2**63) | json_like,
            "snapshot": st.sampled_from(["true", "false", "last", "incremental", True, False])
            | json_like,
            "txId": st.integers(min_value=0, max_value=2**40) | json_like,
        },
    )
    | json_like
)
envelope = (
    st.fixed_dictionaries(
        {},
        optional={
            "op": ops,
            "source": source,
            "after": st.none()
            | st.dictionaries(st.text(max_size=6), json_like, max_size=4)
            | json_like,
            "before": json_like,
        },
    )
    | json_like
)
headers = st.none() | st.text(max_size=30) | st.integers(min_value=-5, max_value=2**130).map(str)


@given(env=envelope, key=st.none() | json_like, pos=headers, placeholders=st.booleans())
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzzed_envelopes_and_headers_decode_or_raise_decode_error(
    env: Any, key: Any, pos: str | None, placeholders: bool
) -> None:
    try:
        e = event_from_envelope(env, "public.t", key=key, pos_header=pos, placeholders=placeholders)
    except DecodeError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    # what comes out is a change event sync can apply: numbers where numbers belong
    assert e.op in ("c", "u", "d", "r", "t")
    assert isinstance(e.lsn, int) and 0 <= e.lsn < 2**64
    assert isinstance(e.position, int) and e.position >= 0
    assert isinstance(e.source_ts_ms, int)
    assert e.tx_id is None or isinstance(e.tx_id, int)
    assert e.key is None or isinstance(e.key, dict)
    assert e.after is None or isinstance(e.after, dict)
    assert e.op not in ("c", "u", "r") or isinstance(e.after, dict)


@given(value=st.binary(max_size=64), key=st.none() | st.binary(max_size=16))
@settings(max_examples=300, deadline=None)
def test_fuzzed_bytes_are_decode_errors(value: bytes, key: bytes | None) -> None:
    dec, cache = _decoder()
    cache.add(_envelope_schema(SOURCE_OK))
    with pytest.raises(DecodeError):
        dec.decode(key, value, "public.t")
