"""Dedup matching and survivorship; Connect values into the mapping's normal form."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid

import pytest

from crossfade.config.mapping import DedupSpec
from crossfade.errors import DecodeError
from crossfade.events.model import ChangeEvent, FieldType, RowSchema
from crossfade.mapping.dedup import Deduper, Matcher, Member, crosswalk, survive
from crossfade.mapping.values import event_key, event_row, interval, python_value

SPEC = DedupSpec.model_validate(
    {
        "match": [
            {"name": "same-email", "all": [{"column": "email"}]},
            {
                "name": "phone-and-name",
                "all": [
                    {"column": "phone"},
                    {"column": "full_name", "method": "fuzzy", "threshold": 90},
                ],
            },
        ],
        "survivorship": {
            "recency": "updated_at",
            "columns": {
                "nickname": "oldest_non_empty",
                "tier": {"rule": "preferred_source", "sources": ["public.crm"]},
            },
        },
    }
)


def test_match_rules_and_blocking() -> None:
    m = Matcher(SPEC)
    a = {"email": "a@x.com", "phone": "+1", "full_name": "John  Smith"}
    assert m.match(a, {"email": "A@x.com "})[0] == "same-email"  # type: ignore[index]
    assert (
        m.match(a, {"email": None, "phone": "+1", "full_name": "SMITH JOHN"})[0] == "phone-and-name"
    )  # type: ignore[index]
    assert m.match(a, {"email": "b@x.com", "phone": "+1", "full_name": "Mary Smith"}) is None
    assert m.match({"email": ""}, {"email": " "}) is None  # blank never matches
    assert len(m.block_keys(a)) == 2 and m.block_keys({"full_name": "x"}) == []


def test_deduper_groups_true_duplicates_only() -> None:
    d = Deduper("crm.people", SPEC)
    rows = [
        (
            1,
            {
                "email": "a@x.com",
                "phone": "+1",
                "full_name": "John Smith",
                "updated_at": dt.datetime(2020, 1, 1),
            },
        ),
        (
            2,
            {
                "email": "A@X.COM",
                "phone": "+2",
                "full_name": "J. Smith",
                "updated_at": dt.datetime(2021, 1, 1),
            },
        ),
        (
            3,
            {
                "email": "c@x.com",
                "phone": "+2",
                "full_name": "Jane Smithers",
                "updated_at": dt.datetime(2019, 1, 1),
            },
        ),
        (
            4,
            {"email": "d@x.com", "phone": "+1", "full_name": "Mary Smith", "updated_at": None},
        ),  # household
        (5, {"email": "e@x.com", "phone": "+5", "full_name": "Zoe Adams", "updated_at": None}),
    ]
    for k, v in rows:
        d.add((k,), v, "public.members", (k,))
    groups = d.groups()
    assert [sorted(m.key[0] for m in g.members) for g in groups] == [[1, 2]]
    g = groups[0]
    assert g.survivor.key == (1,)  # oldest
    assert g.golden["email"] == "A@X.COM" and g.golden["phone"] == "+2"  # most recent non-empty
    assert "rule same-email: email equal" in g.evidence[0].explain()
    assert crosswalk(groups) == {("crm.people", (1,)): (1,), ("crm.people", (2,)): (1,)}


def test_fuzzy_needs_similar_names() -> None:
    d = Deduper("crm.people", SPEC)
    d.add((1,), {"phone": "+9", "full_name": "Robert Brown"}, "s")
    d.add((2,), {"phone": "+9", "full_name": "BROWN,  robert"}, "s")
    d.add((3,), {"phone": "+9", "full_name": "Roberta Browning"}, "s")
    groups = d.groups()
    assert [sorted(m.key[0] for m in g.members) for g in groups] == [[1, 2]]
    assert groups[0].evidence[0].rule == "phone-and-name"


def test_survivorship_rules() -> None:
    members = [
        Member(
            (1,),
            "public.web",
            None,
            {
                "updated_at": dt.date(2020, 1, 1),
                "nickname": "Bob",
                "tier": "gold",
                "email": "old@x",
            },
        ),
        Member(
            (2,),
            "public.crm",
            None,
            {
                "updated_at": dt.date(2022, 1, 1),
                "nickname": "Robert",
                "tier": "silver",
                "email": "",
            },
        ),
        Member(
            (3,),
            "public.web",
            None,
            {"updated_at": None, "nickname": None, "tier": "bronze", "email": "new@x"},
        ),
    ]
    survivor, golden = survive(SPEC, members)
    assert survivor.key == (3,)  # no recency counts as oldest
    assert golden["nickname"] == "Bob"  # oldest non-empty
    assert golden["tier"] == "silver"  # preferred source
    assert golden["email"] == "old@x"  # most recent non-empty (member 2's is blank)


# --- Connect -> normal form --------------------------------------------------------------------


def ft(connect: str, semantic: str | None = None, **params: str) -> FieldType:
    return FieldType(connect, semantic, parameters=tuple(params.items()))


@pytest.mark.parametrize(
    ("value", "ftype", "pg", "expected"),
    [
        (18000, ft("int32", "io.debezium.time.Date"), None, dt.date(2019, 4, 14)),
        (
            1_600_000_000_123_456,
            ft("int64", "io.debezium.time.MicroTimestamp"),
            None,
            dt.datetime(2020, 9, 13, 12, 26, 40, 123456),
        ),
        (
            1_600_000_000_123,
            ft("int64", "io.debezium.time.Timestamp"),
            None,
            dt.datetime(2020, 9, 13, 12, 26, 40, 123000),
        ),
        (
            "2020-09-13T12:26:40.5Z",
            ft("string", "io.debezium.time.ZonedTimestamp"),
            None,
            dt.datetime(2020, 9, 13, 12, 26, 40, 500000, tzinfo=dt.UTC),
        ),
        (3_600_000_001, ft("int64", "io.debezium.time.MicroTime"), None, dt.time(1, 0, 0, 1)),
        (
            (256).to_bytes(2, "big"),
            ft("bytes", "org.apache.kafka.connect.data.Decimal", scale="2"),
            None,
            decimal.Decimal("2.56"),
        ),
        ("12.50", ft("string"), "numeric(10,2)", decimal.Decimal("12.50")),
        ("NAN", ft("string"), "numeric", decimal.Decimal("NaN")),
        ("12.50", ft("string"), "text", "12.50"),
        (
            "12345678-1234-5678-1234-567812345678",
            ft("string", "io.debezium.data.Uuid"),
            None,
            uuid.UUID("12345678-1234-5678-1234-567812345678"),
        ),
        ('{"a": [1]}', ft("string", "io.debezium.data.Json"), "jsonb", {"a": [1]}),
        (
            "P1Y2M3DT4H5M6.5S",
            ft("string", "io.debezium.time.Interval"),
            None,
            dt.timedelta(days=365 + 60 + 3, hours=4, minutes=5, seconds=6.5),
        ),
        (9223372036825200000, ft("int64", "io.debezium.time.MicroTimestamp"), None, "infinity"),
        (None, ft("int32", "io.debezium.time.Date"), None, None),
    ],
)
def test_python_value(value: object, ftype: FieldType, pg: str | None, expected: object) -> None:
    got = python_value(value, ftype, pg)
    if isinstance(expected, decimal.Decimal) and expected.is_nan():
        assert isinstance(got, decimal.Decimal) and got.is_nan()
    else:
        assert got == expected


def test_arrays_and_errors() -> None:
    arr = FieldType("array", items=ft("int32", "io.debezium.time.Date"))
    assert python_value([0, None], arr) == [dt.date(1970, 1, 1), None]
    with pytest.raises(DecodeError):
        python_value("x", ft("int32", "io.debezium.time.Date"))
    with pytest.raises(DecodeError):
        interval("P1X")


def test_event_row_marks_unavailable() -> None:
    schema = RowSchema(
        "v",
        (("id", ft("int64")), ("d", ft("int32", "io.debezium.time.Date")), ("big", ft("string"))),
    )
    e = ChangeEvent(
        "public.t",
        "u",
        {"id": 1},
        {"id": 1, "d": 1, "big": "__debezium_unavailable_value"},
        10,
        0,
        row_schema=schema,
        key_schema=RowSchema("k", (("id", ft("int64")),)),
        unavailable=frozenset({"big"}),
    )
    row, unavailable = event_row(e)
    assert row == {"id": 1, "d": dt.date(1970, 1, 2), "big": None} and unavailable == {"big"}
    assert event_key(e) == {"id": 1}
    with pytest.raises(ValueError):
        event_row(ChangeEvent("public.t", "d", {"id": 1}, None, 10, 0))
