"""The compiled Avro writer writes exactly fastavro's bytes, and hands fastavro what it cannot."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
from fastavro import schemaless_writer

from crossfade.events.avro_codec import AvroCodec, ConnectCodec
from crossfade.events.connect_schema import EncodeError

RECORD = json.loads((Path(__file__).with_name("debezium_record.json")).read_text())

SCHEMA = {
    "type": "record",
    "name": "R",
    "namespace": "n",
    "fields": [
        {"name": "l", "type": "long"},
        {"name": "i", "type": ["null", "int"], "default": None},
        {"name": "s", "type": ["null", "string"], "default": None},
        {"name": "b", "type": ["null", "bytes"], "default": None},
        {"name": "d", "type": ["null", "double"], "default": None},
        {"name": "f", "type": ["null", "float"], "default": None},
        {"name": "t", "type": ["null", "boolean"], "default": None},
        {
            "name": "a",
            "type": ["null", {"type": "array", "items": ["null", "string"]}],
            "default": None,
        },
        {
            "name": "m",
            "type": ["null", {"type": "map", "values": ["null", "long"]}],
            "default": None,
        },
        {
            "name": "dec",
            "type": [
                "null",
                {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2},
            ],
            "default": None,
        },
        {"name": "day", "type": ["null", {"type": "int", "logicalType": "date"}], "default": None},
        {
            "name": "sub",
            "type": [
                "null",
                {"type": "record", "name": "S", "fields": [{"name": "x", "type": "long"}]},
            ],
            "default": None,
        },
        {"name": "sub2", "type": ["null", "n.S"], "default": None},
        {"name": "last", "type": [{"type": "string"}, "null"], "default": "z"},
    ],
}


def _fastavro(codec: AvroCodec, datum: object) -> bytes:
    out = io.BytesIO()
    schemaless_writer(out, codec.parsed, datum)
    return out.getvalue()


def _full(**over: object) -> dict[str, object]:
    d: dict[str, object] = {
        "l": 0,
        "i": None,
        "s": None,
        "b": None,
        "d": None,
        "f": None,
        "t": None,
        "a": None,
        "m": None,
        "dec": None,
        "day": None,
        "sub": None,
        "sub2": None,
        "last": None,
    }
    d.update(over)
    return d


@pytest.mark.parametrize(
    "datum",
    [
        _full(),
        _full(l=2**63 - 1, i=-(2**31), s="", b=b"", d=0.0, f=1.5, t=False, a=[], m={}),
        _full(
            l=-(2**63),
            i=63,
            s="héllo ✓ \U0001f600" * 20,
            b=bytes(range(256)),
            d=math.inf,
            f=-0.0,
            t=True,
        ),
        _full(
            l=64, i=-65, a=["x", None, "y" * 100], m={"k": 1, "é": None, "z": -(2**40)}, d=math.nan
        ),
        _full(dec=b"\x00\xff", day=-719162, sub={"x": 5}, sub2={"x": -5, "extra": 1}, last="q"),
        _full(l=300, a=["a"] * 100, s="s" * 10000),
    ],
)
def test_same_bytes_as_fastavro(datum: dict[str, object]) -> None:
    codec = AvroCodec(SCHEMA)
    assert codec._fast is not None
    assert codec.encode(datum) == _fastavro(codec, datum)


@pytest.mark.parametrize(
    "datum",
    [
        _full(f=1e300),  # beyond float32
        _full(f=math.nan),
        _full(i=True),  # bool where an int goes
        _full(l=3.0),  # float where a long goes
        _full(s="\ud800"),  # lone surrogate
        {k: v for k, v in _full().items() if k != "last"},  # missing field: its default
        _full(a=("x",)),
        _full(b=bytearray(b"x")),
    ],
)
def test_falls_back_to_fastavro(datum: dict[str, object]) -> None:
    codec = AvroCodec(SCHEMA)
    try:
        expected = _fastavro(codec, datum)
    except Exception:
        with pytest.raises(EncodeError):
            codec.encode(datum)
        return
    assert codec.encode(datum) == expected


def test_debezium_record_same_bytes() -> None:
    for raw in (RECORD["key"], RECORD["value"]):
        doc = json.loads(raw)
        cc = ConnectCodec(doc["schema"])
        datum = cc.to_datum(doc["payload"])
        assert cc.avro._fast is not None
        assert cc.encode(doc["payload"]) == _fastavro(cc.avro, datum)
