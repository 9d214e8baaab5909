"""Built-in transforms: behaviour on legacy values, and idempotence of every normaliser."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crossfade.mapping import transforms as T
from crossfade.mapping.transforms import Registry, TransformError, split_name_parts


def test_whitespace_and_case() -> None:
    assert T.trim()("  a b  ") == "a b"
    assert T.collapse_whitespace()(" a \t\n b\u00a0 c ") == "a b c"
    assert T.lower()("ÄB") == "äb" and T.upper()("ab") == "AB"
    assert T.casefold()("Straße") == "strasse"
    assert T.trim()(5) == 5 and T.trim()(None) is None


def test_null_if_default_const_replace_digits_truncate() -> None:
    assert T.null_if(["N/A"])("N/A") is None
    assert T.null_if()("   ") is None and T.null_if()("x") == "x"
    assert T.null_if(["-"], blank=False)("  ") == "  "
    assert T.default("?")(None) == "?" and T.default("?")("a") == "a"
    assert T.const(1)("anything") == 1
    assert T.replace(r"[^0-9]", "")("a1b2") == "12"
    assert T.digits()("(020) 79-46") == "0207946"
    assert T.truncate(3)("abcdef") == "abc"


def test_concat_and_coalesce() -> None:
    assert T.concat(", ")(["1 High St", None, "  ", "London"]) == "1 High St, London"
    assert T.concat()([None, ""]) is None
    assert T.concat("-")([dt.date(2020, 1, 2), 3]) == "2020-01-02-3"
    assert T.coalesce()([None, " ", "b", "c"]) == "b"


def test_lookup() -> None:
    t = T.lookup({"A": "active", "I": "inactive"})
    assert t(" a ") == "active" and t(None) is None
    with pytest.raises(TransformError, match="not in the lookup table"):
        t("X")
    assert T.lookup({"A": 1}, default=0, on_missing="default")("Z") == 0
    assert T.lookup({"A": 1}, on_missing="keep")("Z") == "Z"
    assert T.lookup({"a": 1}, on_missing="keep", case_sensitive=True)("A") == "A"


def test_email() -> None:
    e = T.email()
    assert e("  John.Doe@Example.COM ") == "john.doe@example.com"
    assert T.email(lowercase=False)("John.Doe@Example.COM") == "John.Doe@example.com"
    for bad in ["foo@", "bar.example.com", "a@b@c.com", "x y@z.com", "@x.com"]:
        with pytest.raises(TransformError, match="not a valid email"):
            e(bad)
    assert T.is_valid_email("a@example.com") and not T.is_valid_email("nope")


@pytest.mark.parametrize(
    "raw",
    ["020 7946 0123", "+44 20 7946 0123", "(020) 7946-0123", "02079460123", "0044 20 7946 0123"],
)
def test_phone_formats_to_e164(raw: str) -> None:
    assert T.phone("GB")(raw) == "+442079460123"


def test_phone_invalid_and_formats() -> None:
    with pytest.raises(TransformError, match="not a valid phone"):
        T.phone("GB")("12345")
    with pytest.raises(TransformError):
        T.phone("GB")("not a number")
    assert T.phone("GB", format="INTERNATIONAL")("02079460123") == "+44 20 7946 0123"
    assert T.phone("US", require_valid=False)("555-0100") is not None


def test_names() -> None:
    n = T.name()
    assert n("  JOHN   O'NEIL ") == "John O'Neil"
    assert n("mary mcdonald") == "Mary McDonald"
    assert n("ludwig VAN beethoven".lower()) == "Ludwig van Beethoven"
    assert n("Danny DeVito") == "Danny DeVito"  # mixed case is kept
    assert T.name("title")("danny DeVito") == "Danny Devito"
    assert split_name_parts("Doe, John Q.") == {"first": "John", "middle": "Q.", "last": "Doe"}
    assert split_name_parts("Dr. Ludwig van Beethoven Jr") == {
        "first": "Ludwig",
        "middle": None,
        "last": "van Beethoven",
    }
    assert split_name_parts("Cher") == {"first": "Cher", "middle": None, "last": None}
    assert T.split_name("last")("Anna Maria Smith") == "Smith"
    assert T.split_name("middle")("Anna Maria Smith") == "Maria"


def test_dates() -> None:
    d = T.date(["%d/%m/%Y", "%d.%m.%Y"])
    assert d("12/03/1985") == dt.date(1985, 3, 12)
    assert d("12.03.1985") == dt.date(1985, 3, 12)
    assert d("1985-03-12") == dt.date(1985, 3, 12)
    assert d("March 12, 1985") == dt.date(1985, 3, 12)  # python-dateutil fallback
    assert T.date(dayfirst=True)("03/04/2020") == dt.date(2020, 4, 3)
    assert d(dt.datetime(2020, 1, 2, 3, 4)) == dt.date(2020, 1, 2)
    with pytest.raises(TransformError, match="not a date"):
        d("31/02/1990")
    with pytest.raises(TransformError):
        T.date(fallback=False)("March 12, 1985")
    aware = T.datetime(timezone="Europe/London")("2020-06-01 12:00")
    assert aware.utcoffset() == dt.timedelta(hours=1)


def test_country() -> None:
    c = T.country()
    assert [c(x) for x in ["gb", "GBR", "United Kingdom", "UK", " germany "]] == [
        "GB",
        "GB",
        "GB",
        "GB",
        "DE",
    ]
    assert T.country("alpha3")("France") == "FRA"
    with pytest.raises(TransformError, match="not a known country"):
        c("Atlantis")


def test_casts() -> None:
    assert T.cast("integer")(" 1,234 ") == 1234
    assert T.cast("numeric")("12.50") == decimal.Decimal("12.50")
    assert T.cast("boolean")("Y") is True and T.cast("boolean")("no") is False
    assert T.cast("text")(dt.date(2020, 1, 2)) == "2020-01-02"
    assert T.cast("uuid")("12345678-1234-5678-1234-567812345678") == uuid.UUID(
        "12345678-1234-5678-1234-567812345678"
    )
    assert T.cast("timestamptz")("2020-01-01 10:00").tzinfo is not None
    assert T.cast("json")('{"a": 1}') == {"a": 1}
    assert T.cast("integer")(None) is None
    for to, bad in [
        ("integer", "1.5x"),
        ("integer", 1.5),
        ("boolean", "maybe"),
        ("numeric", "abc"),
        ("uuid", "x"),
    ]:
        with pytest.raises(TransformError):
            T.cast(to)(bad)
    with pytest.raises(ValueError, match="unknown cast"):
        T.cast("money")


def test_registry_spec_forms() -> None:
    r = Registry()
    assert r.build("trim")[1](" a ") == "a"
    assert r.build({"phone": {"region": "GB"}})[1]("020 7946 0123") == "+442079460123"
    assert r.build({"split_name": "last"})[1]("Ann Lee") == "Lee"
    assert r.build({"lookup": {"A": "active"}})[1]("a") == "active"
    assert r.build({"concat": ", "})[1](["a", "b"]) == "a, b"
    # defaults fill arguments the spec leaves out
    assert r.build("phone", {"region": "GB"})[1]("020 7946 0123") == "+442079460123"
    with pytest.raises(ValueError, match="unknown transform 'emial'"):
        r.build("emial")
    with pytest.raises(ValueError, match="transform phone"):
        r.build({"phone": {"format": "SMOKE"}})
    with pytest.raises(ValueError, match="one name"):
        r.build({"trim": None, "lower": None})


def shout(suffix: str = "!") -> T.Transform:
    return lambda v: None if v is None else str(v).upper() + suffix


def test_user_transforms_by_import_path() -> None:
    here = ["tests.unit"]  # the operator's transform_modules
    r = Registry({"shout": f"{__name__}:shout"}, here)
    assert r.build("shout")[1]("hi") == "HI!"
    assert r.build({"shout": "?"})[1]("hi") == "HI?"
    assert r.build(f"{__name__}:shout")[1]("a") == "A!"  # an import path used directly
    with pytest.raises(ValueError, match="built-in"):
        Registry({"email": f"{__name__}:shout"}, here)
    with pytest.raises(ValueError, match="cannot import"):
        Registry({"x": "no_such_module_xyz.m:f"}, ["no_such_module_xyz"]).build("x")
    with pytest.raises(ValueError, match="has no"):
        Registry({"x": f"{__name__}:nothing_here"}, here).build("x")
    # outside the allowed prefixes (or with none listed) nothing is imported
    for allowed in ([], ["tests.unit.other"], ["tests.uni"]):
        with pytest.raises(ValueError, match="not allowed"):
            Registry({"shout": f"{__name__}:shout"}, allowed).build("shout")


# --- idempotence: normalise(normalise(x)) == normalise(x) ------------------------------------

text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


@pytest.mark.parametrize(
    "factory",
    [T.trim, T.collapse_whitespace, T.lower, T.upper, T.casefold, T.name, T.digits, T.null_if],
)
@given(s=text)
@settings(max_examples=150, deadline=None)
def test_text_normalisers_are_idempotent(factory: T.TransformFactory, s: str) -> None:
    f = factory()
    once = f(s)
    assert f(once) == once


def _idempotent_where_defined(f: T.Transform, s: str) -> None:
    try:
        once = f(s)
    except TransformError:
        return
    assert f(once) == once


@given(
    local=st.from_regex(r"[A-Za-z0-9._%+-]{1,12}", fullmatch=True),
    domain=st.from_regex(r"[A-Za-z0-9-]{1,10}\.(com|org|CO\.UK|de)", fullmatch=True),
    pad=st.sampled_from(["", " ", "  \t"]),
)
@settings(max_examples=150, deadline=None)
def test_email_is_idempotent(local: str, domain: str, pad: str) -> None:
    _idempotent_where_defined(T.email(), f"{pad}{local}@{domain}{pad}")


@given(s=st.from_regex(r"(\+44|0044|0)?[ ()-]{0,2}[0-9 ()-]{6,14}", fullmatch=True))
@settings(max_examples=150, deadline=None)
def test_phone_is_idempotent(s: str) -> None:
    _idempotent_where_defined(T.phone("GB"), s)


@given(
    d=st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2100, 1, 1)),
    fmt=st.sampled_from(["%d/%m/%Y", "%Y-%m-%d", "%d.%m.%Y", "%B %d, %Y"]),
)
@settings(max_examples=100, deadline=None)
def test_date_is_idempotent_and_exact(d: dt.date, fmt: str) -> None:
    f = T.date(["%d/%m/%Y", "%d.%m.%Y"])
    once = f(d.strftime(fmt))
    assert once == d
    assert f(once) == once


@given(
    s=st.sampled_from(["gb", "GBR", "United Kingdom", "uk", "Germany", "deu", "fr", "USA", "Japan"])
)
@settings(max_examples=30, deadline=None)
def test_country_is_idempotent(s: str) -> None:
    for out in ("alpha2", "alpha3", "name"):
        f = T.country(out)
        assert f(f(s)) == f(s)


@given(s=text)
@settings(max_examples=100, deadline=None)
def test_split_name_never_fails_on_text(s: str) -> None:
    parts = split_name_parts(s)
    assert set(parts) == {"first", "middle", "last"}
