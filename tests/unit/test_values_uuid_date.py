"""crossfade.mapping.values' UUID and date conversions: their fast paths give what
``uuid.UUID(v)`` and ``1970-01-01 + timedelta(days=v)`` give (the value, or the same error),
and are taken for the values Debezium sends (a canonical UUID text, an int of days)."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from typing import Any

import pytest

from crossfade.mapping import values

ODD_UUIDS = [
    "{12345678-1234-5678-1234-567812345678}",
    "urn:uuid:12345678-1234-5678-1234-567812345678",
    "12345678-1234-5678-1234-56781234567g",
    "12345678-1234-5678-1234-5678123456789",
    "12345678-1234-5678-1234-56781234567",
    "1234567812345678123456781234567812-4",
    "12345678123456781234567812345678----",
    " 2345678-1234-5678-1234-567812345678",
    "12345678-1234-5678-1234-56781234567 ",
    "+2345678-1234-5678-1234-567812345678",
    "1_345678-1234-5678-1234-567812345678",
    "{2345678-1234-5678-1234-567812345678",
    "}2345678-1234-5678-1234-56781234567{",
    "12345678-1234-5678-1234-5678123456}8",
    "١2345678-1234-5678-1234-567812345678",  # an Arabic-Indic digit: int() reads it
    "12345678:1234-5678-1234-567812345678",
    "ABCDEF01-ABCD-ABCD-ABCD-ABCDEFABCDEF",
    "abcdef01-abcd-abcd-abcd-abcdefabcdef",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "00000000-0000-0000-0000-000000000000",
    "",
    "-" * 36,
]


def outcome(f: Any, *args: Any) -> tuple[str, Any]:
    try:
        out = f(*args)
    except Exception as exc:  # noqa: BLE001 - the error is the outcome compared
        return "error", (type(exc), str(exc))
    return "value", (type(out), out, getattr(out, "is_safe", None), repr(out))


def test_uuid_as_uuid_gives() -> None:
    rng = random.Random(7)
    cases = ODD_UUIDS + [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(2000)]
    cases += [c.upper() for c in cases[-100:]]
    for _ in range(2000):  # canonical shapes with a character swapped for an odd one
        s = list(str(uuid.UUID(int=rng.getrandbits(128))))
        s[rng.randrange(36)] = rng.choice("-_ +{}:gGx0\u0661\u00e9")
        cases.append("".join(s))
    for v in cases:
        assert outcome(values._uuid, v, None) == outcome(uuid.UUID, v), v
    u = uuid.uuid4()
    assert values._uuid(u, None) is u


def test_uuid_fast_path_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_a: Any, **_k: Any) -> None:
        raise AssertionError("UUID.__init__ called")

    monkeypatch.setattr(uuid.UUID, "__init__", refuse)
    v = "12345678-1234-5678-1234-567812345678"
    got = values._uuid(v, None)
    assert got.int == 0x12345678123456781234567812345678 and str(got) == v
    assert got.is_safe is uuid.SafeUUID.unknown


def old_date(v: Any) -> dt.date:
    return v if isinstance(v, dt.date) else dt.date(1970, 1, 1) + dt.timedelta(days=v)


def test_date_as_timedelta_gives() -> None:
    lo = 1 - dt.date(1970, 1, 1).toordinal()
    hi = dt.date.max.toordinal() - dt.date(1970, 1, 1).toordinal()
    rng = random.Random(3)
    cases: list[Any] = [0, 1, -1, lo, lo - 1, lo + 1, hi, hi + 1, hi - 1, 10**9, -(10**9), 10**10]
    cases += [rng.randrange(lo - 10, hi + 10) for _ in range(5000)]
    cases += [True, False, 1.5, -0.5, dt.date(2020, 2, 29), "3", None]
    for v in cases:
        assert outcome(values._date, v, None) == outcome(old_date, v), v


def test_date_fast_path_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoDelta:
        def __init__(self, *_a: Any, **_k: Any) -> None:
            raise AssertionError("timedelta built")

    monkeypatch.setattr(values.dt, "timedelta", NoDelta)
    assert values._date(18262, None) == dt.date(2020, 1, 1)
