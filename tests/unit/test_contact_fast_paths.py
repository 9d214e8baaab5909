"""The email and phone fast paths (contact_parse.plain_email, nanp_number) give what the
libraries give, on every input they accept: many generated inputs, the odd ones included (unicode
domains, quoted local parts, +tags, whitespace, Punycode, special-use names, long labels,
extensions, international prefixes), compared with the library's full call."""

from __future__ import annotations

import random

import email_validator
import idna
import phonenumbers
import pytest
from email_validator import EmailNotValidError, validate_email

from crossfade.mapping.transforms import BUILTINS, TransformError
from crossfade.mapping.transforms.contact_parse import (
    email_of,
    nanp_number,
    nanp_parsing,
    phone_of,
    plain_email,
)


def library_email(s: str) -> str | None:
    try:
        return validate_email(s, check_deliverability=False, allow_smtputf8=True).normalized
    except EmailNotValidError:
        return None


ODD_EMAILS = [
    "john.doe@example.com",
    "John.Doe+tag@Example.COM",
    "a@b.co",
    "a@b.c",
    "a@b.c1",
    "a@b.1c",
    "a@b.com-",
    "a@-b.com",
    "a@b-.com",
    "a@b..com",
    "a@.b.com",
    "a@b.com.",
    ".a@b.com",
    "a.@b.com",
    "a..b@c.com",
    "a@b",
    "a@localhost",
    "a@x.localhost",
    "a@x.test",
    "a@x.invalid",
    "a@x.onion",
    "a@x.local",
    "a@x.arpa",
    "a@test.com",
    "a@ab--cd.com",
    "a@xn--bcher-kva.example",
    "a@XN--BCHER-KVA.example",
    "a@ab-cd.com",
    "a@a-b-c.d-e.fg",
    "a@b.c-d",
    "a@Bücher.example",
    "ü@example.com",
    "a@exa_mple.com",
    '"john doe"@example.com',
    '"a"@example.com',
    '"a@b"@example.com',
    "John <john@example.com>",
    "<john@example.com>",
    "john@[127.0.0.1]",
    "john@[IPv6:::1]",
    "postmaster@example.com",
    "PostMaster@Example.com",
    "Info@example.com",
    "infos@example.com",
    "a b@example.com",
    " a@example.com",
    "a@example.com ",
    "a@example.com\n",
    "a@@example.com",
    "a@b@example.com",
    "@example.com",
    "a@",
    "",
    "plainaddress",
    "a@exam ple.com",
    "a@example.com,b@example.com",
    "!#$%&'*+-/=?^_`{|}~@example.org",
    "a/b=c@example.org",
    "a@" + "b" * 63 + ".com",
    "a@" + "b" * 64 + ".com",
    "a@b." + "c" * 63,
    "a@b." + "c" * 64,
    "x" * 64 + "@example.com",
    "x" * 65 + "@example.com",
    "a@" + ".".join(["b" * 60] * 4) + ".com",
    "a@" + ".".join(["b" * 62] * 4),
    "x" * 64 + "@" + ".".join(["b" * 60] * 3) + ".com",
    "a@ex\u0430mple.com",
    "a@example\uff0ecom",
    "a\u0301@example.com",
    "a@example.com\u200b",
]


def _random_email(r: random.Random) -> str:
    alphabet = "aZz09._+-@\"<> x!'~`\u00e9\u0131n-"
    if r.random() < 0.5:
        return "".join(r.choice(alphabet) for _ in range(r.randint(1, 24)))
    local = "".join(r.choice("abXY09._+-~'") for _ in range(r.randint(0, 12)))
    labels = [
        "".join(r.choice("abcXN09-") for _ in range(r.randint(0, 8)))
        for _ in range(r.randint(1, 4))
    ]
    return f"{local}@{'.'.join(labels)}"


@pytest.mark.parametrize("s", ODD_EMAILS)
def test_plain_email_is_the_library_on_odd_inputs(s: str) -> None:
    fast = plain_email(s)
    if fast is not None:
        assert fast == library_email(s)


def test_plain_email_is_the_library_on_many_generated_inputs() -> None:
    r = random.Random(22)
    accepted = 0
    for _ in range(30_000):
        s = _random_email(r)
        fast = plain_email(s)
        if fast is not None:
            accepted += 1
            assert fast == library_email(s), s
    assert accepted > 1_000  # the generator reaches the fast path, and not only it


def test_plain_email_takes_the_common_addresses_and_leaves_the_rest() -> None:
    assert plain_email("John.Doe+tag@Example.COM") == "John.Doe+tag@example.com"
    assert plain_email("jane_o'neil.3@mail.example-corp.co.uk") is not None
    for s in ('"a b"@example.com', "a@Bücher.example", "a@xn--bcher-kva.example", "a@x.test"):
        assert plain_email(s) is None, s
    assert plain_email("PostMaster@Example.com") is None  # the library lower-cases it


def test_the_domain_checks_pass_for_every_character_the_fast_path_accepts() -> None:
    """What plain_email's reasoning rests on: idna.uts46_remap only lower-cases letters,
    digits, hyphens and dots, and each of them is safe and UTS-46 valid."""
    chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-."
    assert idna.uts46_remap(chars, std3_rules=False, transitional=False) == chars.lower()
    from email_validator import syntax

    syntax.check_unsafe_chars(chars)
    assert all(syntax.uts46_valid_char(c) for c in chars)
    assert all("." not in d for d in email_validator.SPECIAL_USE_DOMAIN_NAMES)


def test_email_transform_gives_the_library_result_and_error() -> None:
    email_of.cache_clear()
    t = BUILTINS["email"]()
    assert t("  John.Doe@Example.COM ") == "john.doe@example.com"
    with pytest.raises(TransformError) as e:
        t("a@x.test")
    with pytest.raises(EmailNotValidError) as lib:
        validate_email("a@x.test", check_deliverability=False, allow_smtputf8=True)
    assert str(lib.value) in str(e.value)


# -- phone ------------------------------------------------------------------------------------


def _written(area: int, exchange: int, line: int) -> list[str]:
    return [
        f"({area}) {exchange:03d}-{line:04d}",
        f"({area}){exchange:03d}-{line:04d}",
        f"{area}-{exchange:03d}-{line:04d}",
        f"{area}.{exchange:03d}.{line:04d}",
    ]


def test_nanp_number_is_the_library_parse_for_every_area_code() -> None:
    r = random.Random(22)
    regions = [reg for reg in sorted(phonenumbers.SUPPORTED_REGIONS) if nanp_parsing(reg)]
    assert "US" in regions and "CA" in regions
    for area in range(200, 1000):
        for exchange in (0, 1, 111, 555, r.randrange(1000)):
            for s in _written(area, exchange, r.randrange(10000)):
                for region in ("US", r.choice(regions)):
                    fast = nanp_number(s, region)
                    assert fast is not None, s
                    assert fast == phonenumbers.parse(s, region), (s, region)


ODD_PHONES = [
    "(112) 234-5678",
    "(012) 234-5678",
    "112-234-5678",
    "(212) 234-5678 x12",
    "212-234-5678x123",
    "212-234.5678",
    "212 234 5678",
    "(212 234-5678",
    "212) 234-5678",
    "+1-212-234-5678",
    "001-212-234-5678",
    "1-212-234-5678",
    "(212)  234-5678",
    "(212) 234-56789",
    "(212) 23-45678",
    "２１２-２３４-５６７８",
    "(212) 234-5678\n",
    "(212) 234-567a",
]


@pytest.mark.parametrize("s", ODD_PHONES)
@pytest.mark.parametrize("region", ["US", "CA", "GB", "JM", "AG", "DE"])
def test_nanp_number_takes_only_what_it_should(s: str, region: str) -> None:
    fast = nanp_number(s, region)
    if fast is not None:
        assert fast == phonenumbers.parse(s, region)


def test_nanp_number_leaves_the_other_regions_and_forms_to_the_library() -> None:
    assert nanp_number("(212) 234-5678", "GB") is None
    assert nanp_number("(268) 234-5678", "AG") is None  # a transform rule for 7 digits
    assert nanp_number("+1-212-234-5678", "US") is None
    assert nanp_number("(112) 234-5678", "US") is None


def test_phone_of_is_the_library_for_valid_and_invalid_numbers() -> None:
    e164 = phonenumbers.PhoneNumberFormat.E164
    phone_of.cache_clear()
    for s in ("(212) 234-5678", "(212) 123-4567", "(999) 999-9999", "415.555.0100"):
        num = phonenumbers.parse(s, "US")
        want = phonenumbers.format_number(num, e164) if phonenumbers.is_valid_number(num) else None
        assert phone_of(s, "US", e164, True)[0] == want, s
