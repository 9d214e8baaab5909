"""Transforms for people and places: email addresses, phone numbers, personal names, countries."""

from __future__ import annotations

import re
import sys
from functools import lru_cache
from typing import Any

from crossfade.mapping.transforms.base import Transform, TransformError, short_repr, text_of
from crossfade.mapping.transforms.text import WHITESPACE

# ---------------------------------------------------------------------------------------------
# Email
# ---------------------------------------------------------------------------------------------


def email(lowercase: bool = True) -> Transform:
    """Validate and normalise an email address with email-validator (syntax only, no DNS).

    The domain is always lower-cased (IDNA-normalised); the local part too with ``lowercase``
    (true of every mainstream provider, and what dedup wants). Invalid addresses raise
    TransformError with email-validator's reason. A process validates an address it has seen
    recently only once (a cache of the last 16,384 addresses).
    """
    from crossfade.mapping.transforms.contact_parse import email_of  # email-validator: 0.2 s

    def t(v: Any) -> Any:
        if v is None:
            return None
        out, why = email_of(text_of(v, "email").strip(), lowercase)
        if why is not None:
            raise TransformError(why)
        return out

    return t


def is_valid_email(value: Any) -> bool:
    """True when ``value`` is a syntactically valid email address (email-validator, no DNS)."""
    try:
        email()(value)
    except TransformError:
        return False
    return value is not None


# ---------------------------------------------------------------------------------------------
# Phone numbers
# ---------------------------------------------------------------------------------------------


def phone(region: str = "US", format: str = "E164", require_valid: bool = True) -> Transform:  # noqa: A002
    """Parse a phone number with phonenumbers and format it (E.164 by default: ``+442079460958``).

    ``region`` is the default region for numbers written without a country code (ISO 3166
    alpha-2). ``require_valid`` refuses numbers that parse but cannot exist (wrong length for
    the region); without it, any parseable number is formatted. A process parses a number it
    has seen recently only once (a cache of the last 16,384 numbers).
    """
    import phonenumbers

    from crossfade.mapping.transforms.contact_parse import phone_of

    fmt = {
        "E164": phonenumbers.PhoneNumberFormat.E164,
        "INTERNATIONAL": phonenumbers.PhoneNumberFormat.INTERNATIONAL,
        "NATIONAL": phonenumbers.PhoneNumberFormat.NATIONAL,
    }.get(format.upper())
    if fmt is None:
        raise ValueError("format must be E164, INTERNATIONAL or NATIONAL")
    region = region.upper()

    def t(v: Any) -> Any:
        if v is None:
            return None
        s = str(v).strip() if isinstance(v, int) else text_of(v, "phone").strip()
        if not s:
            raise TransformError("empty phone number")
        out, why = phone_of(s, region, fmt, require_valid)
        if why is not None:
            raise TransformError(why)
        return out

    return t


# ---------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------

_PARTICLES = frozenset(
    {
        "van",
        "von",
        "der",
        "den",
        "de",
        "del",
        "della",
        "da",
        "di",
        "du",
        "la",
        "le",
        "ten",
        "ter",
        "bin",
        "al",
    }
)
_NAME_TOKEN = re.compile(r"([^\s\-']+)")


def _cap_token(tok: str) -> str:
    low = tok.lower()
    if low.startswith("mc") and len(tok) > 2:
        return "Mc" + low[2:].capitalize()
    return low.capitalize()


def _name_case(s: str) -> str:
    words = s.split(" ")
    out = []
    for i, w in enumerate(words):
        if i > 0 and w.lower() in _PARTICLES:
            out.append(w.lower())
        else:
            out.append(_NAME_TOKEN.sub(lambda m: _cap_token(m.group(1)), w))
    return " ".join(out)


def name(case: str = "auto") -> Transform:
    """Tidy a person's name: collapse whitespace, fix the case.

    ``case``: ``auto`` re-cases names written all upper or all lower (``JOHN O'NEIL`` -> ``John
    O'Neil``, ``mary mcdonald`` -> ``Mary McDonald``, particles like ``van`` stay lower) and keeps
    mixed case as typed (``DeVito``); ``title`` always re-cases; ``keep`` only fixes spacing.
    """
    if case not in ("auto", "title", "keep"):
        raise ValueError("case must be auto, title or keep")

    def t(v: Any) -> Any:
        if v is None:
            return None
        return _tidy_name(text_of(v, "name"), case)

    return t


@lru_cache(maxsize=4096)
def _tidy_name(v: str, case: str) -> str:
    s = WHITESPACE.sub(" ", v).strip()
    if case == "keep" or not s:
        return s
    if case == "title" or s.isupper() or s.islower():
        return _name_case(s)
    return s


_SUFFIXES = frozenset({"jr", "jr.", "sr", "sr.", "ii", "iii", "iv", "phd", "md"})
_TITLES = frozenset({"mr", "mr.", "mrs", "mrs.", "ms", "ms.", "miss", "dr", "dr.", "prof", "prof."})


def split_name_parts(full: str) -> dict[str, str | None]:
    """Split a full name into ``first``, ``middle``, ``last`` (``Last, First M.`` understood).

    Leading titles (Mr, Dr) and trailing suffixes (Jr, III) are dropped; particles stay with the
    last name (``Ludwig van Beethoven`` -> last ``van Beethoven``).
    """
    s = WHITESPACE.sub(" ", full).strip()
    if "," in s:
        last, _, rest = s.partition(",")
        words = rest.split()
        words = [w for w in words if w.lower() not in _TITLES and w.lower() not in _SUFFIXES]
        return {
            "first": words[0] if words else None,
            "middle": " ".join(words[1:]) or None,
            "last": last.strip() or None,
        }
    words = s.split()
    while words and words[0].lower() in _TITLES:
        words = words[1:]
    while len(words) > 1 and words[-1].lower().strip(",") in _SUFFIXES:
        words = words[:-1]
    if not words:
        return {"first": None, "middle": None, "last": None}
    if len(words) == 1:
        return {"first": words[0], "middle": None, "last": None}
    # particles before the last word belong to the last name
    i = len(words) - 1
    while i > 1 and words[i - 1].lower() in _PARTICLES:
        i -= 1
    return {"first": words[0], "middle": " ".join(words[1:i]) or None, "last": " ".join(words[i:])}


def split_name(part: str = "first") -> Transform:
    """One part (``first``, ``middle``, ``last``) of a full name; see :func:`split_name_parts`."""
    if part not in ("first", "middle", "last"):
        raise ValueError("part must be first, middle or last")

    def t(v: Any) -> Any:
        if v is None:
            return None
        return split_name_parts(text_of(v, "split_name"))[part]

    return t


# Countries
# ---------------------------------------------------------------------------------------------

_COUNTRY_ALIASES = {
    "uk": "GB",
    "england": "GB",
    "scotland": "GB",
    "wales": "GB",
    "great britain": "GB",
    "usa": "US",
    "u.s.a.": "US",
    "u.s.": "US",
    "america": "US",
    "holland": "NL",
}


@lru_cache(maxsize=4096)
def _country_lookup(key: str) -> Any:
    import pycountry

    alias = _COUNTRY_ALIASES.get(key.casefold())
    if alias:
        return pycountry.countries.get(alpha_2=alias)
    try:
        return pycountry.countries.lookup(key)
    except LookupError:
        pass
    if len(key) > 3:
        try:
            hits = pycountry.countries.search_fuzzy(key)
        except LookupError:
            return None
        return hits[0] if len(hits) == 1 else None
    return None


def country(output: str = "alpha2") -> Transform:
    """A country code or name (``gb``, ``GBR``, ``United Kingdom``, ``UK``) to ISO 3166 (pycountry).

    ``output``: ``alpha2`` (``GB``), ``alpha3`` (``GBR``) or ``name``. Unknown countries raise
    TransformError.
    """
    attr = {"alpha2": "alpha_2", "alpha3": "alpha_3", "name": "name"}.get(output)
    if attr is None:
        raise ValueError("output must be alpha2, alpha3 or name")

    def t(v: Any) -> Any:
        if v is None:
            return None
        s = WHITESPACE.sub(" ", text_of(v, "country")).strip()
        if not s:
            return None
        hit = _country_lookup(s)
        if hit is None:
            raise TransformError(f"{short_repr(s)} is not a known country (ISO 3166 code or name)")
        return getattr(hit, attr)

    return t


def clear_caches() -> None:
    """Empty the per-value caches of this module (benchmarks measure values seen once)."""
    for f in (_tidy_name, _country_lookup):
        f.cache_clear()
    parse = sys.modules.get("crossfade.mapping.transforms.contact_parse")
    if parse is not None:  # email and phone: only once a mapping has used them
        parse.clear_caches()
