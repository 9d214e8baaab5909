"""The per-value caches (email, phone, name) and the column plan compiled once give the outcomes
the unoptimised code gave: a few thousand demo CRM rows, with defects (invalid and missing
emails, unparseable and invalid phones, values of the wrong type, missing source columns,
unsent TOAST columns, filtered accounts), mapped with the demo mapping, against a mapper built
from reference transforms that call email-validator and phonenumbers directly and the column
computation as it was (kept below). Every outcome is compared whole: target rows and their
values, keys, failures with their rules and messages, filter reasons."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pytest
from bench.mapping_cpu import SOURCE_KEYS, crm_rows, demo_mapper

from crossfade.config.mapping import MappingConfig
from crossfade.embedded.crm import TABLES
from crossfade.mapping import Mapper, compile_mapping
from crossfade.mapping import engine as eng
from crossfade.mapping.transforms import (
    BUILTINS,
    TransformError,
    clear_caches,
    short_repr,
    text_of,
)
from crossfade.mapping.transforms.text import WHITESPACE

# -- the unoptimised code -------------------------------------------------------------------


def ref_email(lowercase: bool = True) -> Any:
    from email_validator import EmailNotValidError, validate_email

    def t(v: Any) -> Any:
        if v is None:
            return None
        s = text_of(v, "email").strip()
        try:
            res = validate_email(s, check_deliverability=False, allow_smtputf8=True)
        except EmailNotValidError as exc:
            raise TransformError(f"{short_repr(s)} is not a valid email address ({exc})") from None
        out = res.normalized
        if lowercase:
            local, _, domain = out.rpartition("@")
            out = f"{local.lower()}@{domain.lower()}"
        return out

    return t


def ref_phone(region: str = "US", format: str = "E164", require_valid: bool = True) -> Any:  # noqa: A002
    import phonenumbers

    fmt = {
        "E164": phonenumbers.PhoneNumberFormat.E164,
        "INTERNATIONAL": phonenumbers.PhoneNumberFormat.INTERNATIONAL,
        "NATIONAL": phonenumbers.PhoneNumberFormat.NATIONAL,
    }[format.upper()]
    region = region.upper()

    def t(v: Any) -> Any:
        if v is None:
            return None
        s = str(v).strip() if isinstance(v, int) else text_of(v, "phone").strip()
        if not s:
            raise TransformError("empty phone number")
        try:
            num = phonenumbers.parse(s, region)
        except phonenumbers.NumberParseException as exc:
            raise TransformError(f"{short_repr(s)} is not a phone number ({exc})") from None
        if require_valid and not phonenumbers.is_valid_number(num):
            raise TransformError(
                f"{short_repr(s)} is not a valid phone number (default region {region})"
            )
        return phonenumbers.format_number(num, fmt)

    return t


def ref_name(case: str = "auto") -> Any:
    from crossfade.mapping.transforms import contact

    def t(v: Any) -> Any:
        if v is None:
            return None
        s = WHITESPACE.sub(" ", text_of(v, "name")).strip()
        if case == "keep" or not s:
            return s
        if case == "title" or s.isupper() or s.islower():
            return contact._name_case(s)
        return s

    return t


def ref_compute(self: eng.CompiledColumn, row: Mapping[str, Any]) -> Any:
    """CompiledColumn.compute as it was before the plan was compiled once."""
    spec = self.spec
    if spec.is_const:
        value: Any = spec.const
    else:
        got = [row.get(c, eng._ABSENT) for c in self.sources]
        missing = [c for c, v in zip(self.sources, got, strict=True) if v is eng._ABSENT]
        if missing:
            raise eng._ColumnFailure(
                eng.Failure(
                    f"{self.target}.{self.name}:source",
                    "source",
                    f"the source row has no column {', '.join(missing)}",
                    self.target,
                    self.name,
                )
            )
        value = got if isinstance(spec.from_, list) else got[0]
    original = value
    for tname, step in self.steps:
        try:
            value = step(value)
        except (TransformError, ValueError, TypeError, ArithmeticError) as exc:
            kind = "cast" if tname.startswith("cast:") else "transform"
            rule = f"{self.target}.{self.name}:{tname if kind == 'cast' else 'transform:' + tname}"
            if spec.on_error == "null":
                return spec.default
            if spec.on_error == "keep":
                return original
            raise eng._ColumnFailure(
                eng.Failure(rule, kind, str(exc), self.target, self.name, original)
            ) from None
    if value is None:
        return spec.default
    return value


@contextmanager
def unoptimised(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with monkeypatch.context() as m:
        m.setattr(eng.CompiledColumn, "compute", ref_compute)
        yield


# -- the rows --------------------------------------------------------------------------------

BAD_EMAILS = ["not-an-email", "", "   ", "a@b", "ann@@example.com", "Ann.Lee@Example.COM ", 42]
BAD_PHONES = ["", "  ", "12345", "abc", "+44 20 7946 0958", "(212) 555-0100 x12", 2125550100]
BAD_NAMES = [None, "", "  JOHN   O'NEIL ", "mary mcdonald", "Danny DeVito", 7, "ludwig VAN"]


def defective_rows(accounts: int) -> list[tuple[str, dict[str, Any], frozenset[str]]]:
    r = random.Random(11)
    out = []
    for table, row in crm_rows(accounts, broken=0.05, seed=3):
        row = dict(row)
        unavailable: frozenset[str] = frozenset()
        if table == "public.contacts":
            x = r.random()
            if x < 0.08:
                row["email"] = r.choice([*BAD_EMAILS, None])
            elif x < 0.16:
                row["phone"] = r.choice([*BAD_PHONES, None])
            elif x < 0.22:
                row[r.choice(["first_name", "last_name"])] = r.choice(BAD_NAMES)
            elif x < 0.24:
                del row[r.choice(["phone", "email", "first_name"])]  # a source column missing
            elif x < 0.26:
                unavailable = frozenset({r.choice(["phone", "email"])})  # unchanged TOAST
                row[next(iter(unavailable))] = None
        out.append((table, row, unavailable))
    return out


@pytest.fixture(scope="module")
def rows() -> list[tuple[str, dict[str, Any], frozenset[str]]]:
    return defective_rows(1000)  # ~3,700 rows


def map_all(mapper: Mapper, rows: list[tuple[str, dict[str, Any], frozenset[str]]]) -> list[Any]:
    return [mapper.map_row(t, row, unavailable=u) for t, row, u in rows]


def reference_mapper(monkeypatch: pytest.MonkeyPatch, build: Callable[[], Mapper]) -> Mapper:
    with monkeypatch.context() as m:
        m.setitem(BUILTINS, "email", ref_email)
        m.setitem(BUILTINS, "phone", ref_phone)
        m.setitem(BUILTINS, "name", ref_name)
        return build()


def assert_same(
    expected: list[Any], mapper: Mapper, rows: list[tuple[str, dict[str, Any], frozenset[str]]]
) -> None:
    clear_caches()
    cold = map_all(mapper, rows)
    warm = map_all(mapper, rows)  # every email, phone and name from the caches now
    for i, (e, c, w) in enumerate(zip(expected, cold, warm, strict=True)):
        assert c == e, (i, rows[i])
        assert w == e, (i, rows[i])
        if e.outcome == "rejected":
            assert (c.rule, c.reason) == (e.rule, e.reason)


def test_demo_mapping_outcomes_are_those_of_the_unoptimised_code(
    rows: list[tuple[str, dict[str, Any], frozenset[str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = reference_mapper(monkeypatch, demo_mapper)
    with unoptimised(monkeypatch):
        expected = map_all(ref, rows)
    kinds = Counter(o.outcome for o in expected)
    rules = Counter(f.rule for o in expected if o.outcome == "rejected" for f in o.failures)
    # the defects are there: every kind of outcome, and rejections for each defect
    assert kinds["mapped"] > 2000 and kinds["rejected"] > 100 and kinds["filtered"] > 10
    for rule in (
        "app.people.email:transform:email",
        "app.people.email:required",
        "app.people.first_name:transform:name",
        "app.people.phone:source",
    ):
        assert rules[rule] > 0, rule
    nulled = sum(
        1
        for (t, row, _), o in zip(rows, expected, strict=True)
        if t == "public.contacts"
        and o.rows
        and row.get("phone")
        and o.rows[0].values["phone"] is None
    )
    assert nulled > 50  # phones that do not parse (on_error: null)

    assert_same(expected, demo_mapper(), rows)


# every kind of column the plan tells apart: a default without transforms, a constant, a list
# of columns, a cast, on_error keep and null, unmapped columns copied
VARIANTS = {
    "tables": {
        "public.contacts": {
            "targets": [
                {
                    "table": "app.variants",
                    "include_unmapped": True,
                    "columns": {
                        "person_id": "id",
                        "phone_or_default": {"from": "phone", "default": "none"},
                        "email_kept": {
                            "from": "email",
                            "transforms": ["email"],
                            "on_error": "keep",
                        },
                        "email_null": {
                            "from": "email",
                            "transforms": ["email", "upper"],
                            "on_error": "null",
                            "default": "n/a",
                        },
                        "both": {"from": ["first_name", "last_name"], "transforms": ["concat"]},
                        "score_int": {"from": "score", "cast": "integer"},
                        "tag": {"const": "x"},
                        "nothing": {"const": None, "default": "d"},
                        "notes": {"from": "notes", "default": ""},
                    },
                    "rules": {"phone_or_default": {"max_length": 12}},
                }
            ]
        }
    }
}


def test_every_kind_of_column_maps_as_before(
    rows: list[tuple[str, dict[str, Any], frozenset[str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    def build() -> Mapper:
        return compile_mapping(MappingConfig.model_validate(VARIANTS), TABLES, SOURCE_KEYS)

    contacts = [r for r in rows if r[0] == "public.contacts"]
    with unoptimised(monkeypatch):
        expected = map_all(reference_mapper(monkeypatch, build), contacts)
    values = [o.rows[0].values for o in expected if o.rows]
    assert sum(v.get("phone_or_default") == "none" for v in values) > 10  # the default is used
    assert sum(v.get("notes") == "" for v in values) > 100
    assert Counter(o.outcome for o in expected)["rejected"] > 100  # score is no whole number
    assert_same(expected, build(), contacts)


def test_a_cached_error_is_raised_again_with_the_same_message() -> None:
    from crossfade.mapping.transforms import email, phone

    clear_caches()
    for t, ref, v in [
        (email(), ref_email(), " not-an-email "),
        (phone(), ref_phone(), "12345"),
        (phone(), ref_phone(), "abc"),
    ]:
        with pytest.raises(TransformError) as want:
            ref(v)
        for _ in range(2):  # a miss, then a hit
            with pytest.raises(TransformError) as got:
                t(v)
            assert str(got.value) == str(want.value)


PHONES = [
    "(212) 555-0123",  # fictional 555-01xx
    "(212) 456-7890",
    "(416) 555-0199",  # Canada: +1, not the first region of +1
    "(876) 555-0123",  # Jamaica: a region of +1 picked by leading digits
    "(800) 555-0100",  # toll free
    "(123) 456-7890",  # no such area code
    "+1 684 733 1234",  # American Samoa
    "020 7946 0958",
    "+44 20 7946 0958",
    "+44 1624 756789",  # Isle of Man: +44, by leading digits
    "07624 123456",
    "+49 30 901820",
    "030 901820",
    "+33 1 23 45 67 89",
    "12345",
    "+999 123",
]


def test_phone_as_before_in_every_region_and_format() -> None:
    from crossfade.mapping.transforms import phone

    clear_caches()
    seen = Counter()
    for region in ["US", "CA", "JM", "GB", "IM", "DE", "FR"]:
        for fmt in ["E164", "NATIONAL", "INTERNATIONAL"]:
            for require_valid in [True, False]:
                for v in PHONES:
                    want: Any
                    try:
                        want = ref_phone(region, fmt, require_valid)(v)
                    except TransformError as exc:
                        want = str(exc)
                    for _ in range(2):  # a miss, then a hit
                        try:
                            got: Any = phone(region, fmt, require_valid)(v)
                        except TransformError as exc:
                            got = str(exc)
                        assert got == want, (region, fmt, require_valid, v)
                    seen["invalid" if "not a valid" in str(want) else "other"] += 1
    assert seen["invalid"] > 20 and seen["other"] > 100
