"""Sync's per-event row work: the fast paths must give what the general ones gave."""

from __future__ import annotations

import json
from typing import Any

import pytest

from crossfade.errors import DecodeError
from crossfade.events.model import ChangeEvent, FieldType
from crossfade.events.pgtext import converter_for
from crossfade.target.apply import _key_text, collapse


@pytest.mark.parametrize(
    "vals",
    [
        ["1"],
        ["a", "b"],
        ['q"uote', "back\\slash"],
        ["\u00e9t\u00e9", "\U0001f600", "\n\t\x01"],
        [None, "1"],
        [],
    ],
)
def test_key_text_is_json_dumps(vals: list[str | None]) -> None:
    assert _key_text(vals) == json.dumps(vals)


def _ev(key: dict[str, Any], pos: int, after: dict[str, Any] | None = None) -> ChangeEvent:
    return ChangeEvent(
        table="public.t",
        op="u",
        key=key,
        after=after or dict(key),
        lsn=pos,
        source_ts_ms=0,
        position=pos,
    )


def test_collapse_groups_by_key_whatever_the_key() -> None:
    events = [
        _ev({"a": 1, "b": "x"}, 5),
        _ev({"b": "x", "a": 1}, 7),
        _ev({"a": 1, "b": "y"}, 6),  # column order ignored
        _ev({"arr": [1, 2]}, 3),
        _ev({"arr": [1, 2]}, 4),
        _ev({"arr": [1, 3]}, 2),  # unhashable values
        _ev({"id": b"\x01"}, 9),
        _ev({"id": "b'\\x01'"}, 8),  # bytes and its str() are different keys
    ]
    survivors = collapse(events)
    assert [e.position for e in survivors] == [7, 6, 4, 2, 9, 8]


@pytest.mark.parametrize(
    ("ftype", "values"),
    [
        (FieldType("int32"), [0, -5, 2**40, True, False, None]),
        (FieldType("int64"), [1, None]),
        (FieldType("string"), ["", "x", "\u00e9", None]),
    ],
)
def test_fast_converters_render_like_the_general_path(ftype: FieldType, values: list[Any]) -> None:
    from crossfade.events import pgtext

    conv = converter_for(ftype)
    general = pgtext._build(ftype)
    for v in values:
        assert conv(v) == (None if v is None else general(v))
    with pytest.raises(DecodeError):
        conv(1.5 if ftype.connect_type != "string" else 3)
    if ftype.connect_type == "string":
        with pytest.raises(DecodeError, match="NUL"):
            conv("a\x00b")


def test_decoder_finds_unchanged_toast_placeholders() -> None:
    from crossfade.events.avro_codec import ConnectCodec
    from crossfade.events.decode import EventDecoder
    from crossfade.events.framing import SchemaCache, frame_single_object
    from crossfade.events.model import UNAVAILABLE

    def f(t: str, name: str, **kw: Any) -> dict[str, Any]:
        return {"type": t, "optional": True, "field": name, **kw}

    row = {
        "type": "struct",
        "optional": True,
        "name": "cf.public.t.Value",
        "fields": [
            {"type": "int64", "optional": False, "field": "id"},
            f("string", "txt"),
            f("bytes", "b"),
            f("array", "arr", items={"type": "string", "optional": True}),
        ],
    }
    env = {
        "type": "struct",
        "optional": False,
        "name": "cf.public.t.Envelope",
        "fields": [
            {**row, "field": "before"},
            {**row, "field": "after"},
            {
                "type": "struct",
                "optional": False,
                "field": "source",
                "name": "src",
                "fields": [
                    {"type": "int64", "optional": True, "field": "lsn"},
                    {"type": "string", "optional": True, "field": "snapshot"},
                ],
            },
            {"type": "string", "optional": False, "field": "op"},
        ],
    }
    key = {
        "type": "struct",
        "optional": False,
        "name": "cf.public.t.Key",
        "fields": [{"type": "int64", "optional": False, "field": "id"}],
    }
    vcc, kcc = ConnectCodec(env), ConnectCodec(key)
    cache = SchemaCache()
    cache.add_codec(vcc.avro)
    cache.add_codec(kcc.avro)
    from crossfade.config import KafkaConfig

    dec = EventDecoder(KafkaConfig(bootstrap_servers="127.0.0.1:1"), resolver=cache)
    k = frame_single_object(kcc.avro.fingerprint, kcc.encode({"id": 1}))
    b64_placeholder = __import__("base64").b64encode(UNAVAILABLE.encode()).decode()
    cases = [
        ({"id": 1, "txt": "x", "b": None, "arr": ["a"]}, frozenset()),
        ({"id": 1, "txt": UNAVAILABLE, "b": None, "arr": None}, frozenset({"txt"})),
        (
            {"id": 1, "txt": "a" + UNAVAILABLE, "b": b64_placeholder, "arr": [UNAVAILABLE]},
            frozenset({"b", "arr"}),
        ),
    ]
    for after, expected in cases:
        payload = {
            "before": None,
            "after": after,
            "source": {"lsn": 10, "snapshot": "false"},
            "op": "u",
        }
        v = frame_single_object(vcc.avro.fingerprint, vcc.encode(payload))
        assert dec.decode(k, v, "public.t").unavailable == expected
