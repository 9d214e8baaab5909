"""Email addresses and phone numbers parsed by their libraries, cached, with a fast path each.

Imported when a mapping builds an ``email`` or ``phone`` transform (importing email-validator
and phonenumbers takes 0.3 s; a mapping without them does not pay it).

The fast paths give what the library gives, for the inputs they accept, without running the
library (most of what mapping a contact costs: email-validator spends ~30 us an address on its
Unicode and IDNA checks of the domain, phonenumbers ~20 us parsing a number); anything else goes
to the library. Each names below the checks of the library it stands for, and
tests/unit/test_contact_fast_paths.py compares both on many inputs, the odd ones included.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import email_validator
import phonenumbers
from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES

from crossfade.mapping.transforms.base import CACHE_SIZE, short_repr

# ---------------------------------------------------------------------------------------------
# Email
# ---------------------------------------------------------------------------------------------

_ATEXT = r"[a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~]"  # email_validator.rfc_constants.ATEXT, one char
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"  # a hostname label, <= 63 chars
_LAST_LABEL = r"(?:[a-zA-Z0-9][a-zA-Z0-9-]{0,61})?[a-zA-Z]"  # ... ending with a letter
_PLAIN_EMAIL = re.compile(rf"({_ATEXT}+(?:\.{_ATEXT}+)*)@((?:{_LABEL}\.)+{_LAST_LABEL})")
_MAILBOX_NAMES = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)


def plain_email(s: str) -> str | None:
    """What ``validate_email(s, check_deliverability=False, allow_smtputf8=True).normalized``
    is when ``s`` is a plain ASCII address, else None (ask the library).

    Plain: ``local@domain``, all ASCII, the local part a dot-atom of RFC 5322 atext (no quotes,
    no display name, no ``<``: split_email splits at the one ``@``; validate_email_local_part
    returns it as it is, NFC leaves ASCII alone), at most 64 characters (so ``strict`` would not
    matter) and not an RFC 2142 mailbox name (which the library lower-cases); the domain
    hostname labels of at most 63 letters, digits and inner hyphens, two labels or more, the
    last ending with a letter, no ``--`` anywhere (neither Punycode ``xn--`` nor the library's
    "two letters then two dashes" refusal), not a special-use name; the whole address at most
    254 characters. For such a domain every check of validate_email_domain_name passes
    (letters, digits, ``-`` and ``.`` are safe and UTS-46 valid, and idna.uts46_remap only
    lower-cases them), so the normalised address is the local part as given, ``@``, the domain
    lower-cased.
    """
    if len(s) > 254:
        return None
    m = _PLAIN_EMAIL.fullmatch(s)
    if m is None:
        return None
    local, domain = m.group(1), m.group(2).lower()
    if len(local) > 64 or "--" in domain or local.lower() in _MAILBOX_NAMES:
        return None
    for d in email_validator.SPECIAL_USE_DOMAIN_NAMES:
        if domain == d or domain.endswith("." + d):
            return None
    return f"{local}@{domain}"


@lru_cache(maxsize=CACHE_SIZE)
def email_of(s: str, lowercase: bool) -> tuple[str | None, str | None]:
    """(the normalised address, None) or (None, why ``s`` is not one): an error is a value
    here, so that invalid addresses are cached too."""
    out = plain_email(s)
    if out is None:
        try:
            out = validate_email(s, check_deliverability=False, allow_smtputf8=True).normalized
        except EmailNotValidError as exc:
            return None, f"{short_repr(s)} is not a valid email address ({exc})"
    if lowercase:
        local, _, domain = out.rpartition("@")
        out = f"{local.lower()}@{domain.lower()}"
    return out, None


# ---------------------------------------------------------------------------------------------
# Phone numbers
# ---------------------------------------------------------------------------------------------

_NANP_WRITTEN = re.compile(r"\(([2-9]\d\d)\) ?(\d{3})-(\d{4})|([2-9]\d\d)([-.])(\d{3})\5(\d{4})")


@lru_cache(maxsize=64)
def nanp_parsing(region: str) -> bool:
    """Whether phonenumbers parses a North American number written nationally in ``region``
    as calling code 1 and the ten digits: the region's calling code is 1, its national prefix
    (stripped when parsing) ``1`` with no transform rule, its international prefix ``011``. A
    number whose area code starts with 2-9 starts with neither, so nothing is stripped."""
    md = phonenumbers.PhoneMetadata.metadata_for_region(region, None)
    return (
        md is not None
        and md.country_code == 1
        and md.national_prefix_for_parsing == "1"
        and md.national_prefix_transform_rule is None
        and md.international_prefix == "011"
    )


def nanp_number(s: str, region: str) -> phonenumbers.PhoneNumber | None:
    """What ``phonenumbers.parse(s, region)`` gives for ``(212) 555-0100``, ``(212)555-0100``,
    ``212-555-0100`` or ``212.555.0100`` (an area code starting with 2-9, no extension) in a
    region of :func:`nanp_parsing`; None for anything else (ask the library)."""
    m = _NANP_WRITTEN.fullmatch(s)
    if m is None or not nanp_parsing(region):
        return None
    g = m.groups()
    digits = "".join(g[:3]) if g[0] is not None else g[3] + g[5] + g[6]
    return phonenumbers.PhoneNumber(country_code=1, national_number=int(digits))


@lru_cache(maxsize=CACHE_SIZE)
def phone_of(s: str, region: str, fmt: Any, require_valid: bool) -> tuple[str | None, str | None]:
    """(``s`` formatted, None) or (None, why it is not a phone number); ``s`` is stripped and
    not empty."""
    num = nanp_number(s, region)
    if num is None:
        try:
            num = phonenumbers.parse(s, region)
        except phonenumbers.NumberParseException as exc:
            return None, f"{short_repr(s)} is not a phone number ({exc})"
    if require_valid and not (
        (owns_its_code(region) and phonenumbers.is_valid_number_for_region(num, region))
        or phonenumbers.is_valid_number(num)
    ):
        return None, f"{short_repr(s)} is not a valid phone number (default region {region})"
    return phonenumbers.format_number(num, fmt), None


@lru_cache(maxsize=64)
def owns_its_code(region: str) -> bool:
    """Whether a number valid for ``region`` is valid (``is_valid_number``), so the cheap test
    for the one region may go first: is_valid_number tests a number against the region
    phonenumbers gives it, which is, of the regions sharing its calling code (+1: US, CA, JM...),
    the first whose patterns (or leading digits) match it; the first region of its code matching
    by pattern (US for +1, GB for +44) gets every number valid for it. Testing the region's own
    patterns first skips the walk through the others (most of is_valid_number's cost for +1)."""
    md = phonenumbers.PhoneMetadata.metadata_for_region(region, None)
    if md is None or md.country_code is None:
        return False
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(md.country_code, ())
    return bool(regions) and regions[0] == region and md.leading_digits is None


def clear_caches() -> None:
    """Empty the per-value caches of this module."""
    email_of.cache_clear()
    phone_of.cache_clear()
