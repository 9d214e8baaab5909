"""Configuration errors as people read them: one plain line per problem, no pydantic internals,
no secret value echoed; unreadable YAML and environment variables named."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr, ValidationError
from pydantic_settings.exceptions import SettingsError

from crossfade.config.secrets import is_secret_key
from crossfade.errors import ConfigError

_SECRET_FIELDS = frozenset({"dsn", "sasl_password", "flip_http", "schema_registry_url"})


def _secret_loc(loc: tuple[Any, ...]) -> bool:
    return any(str(x) in _SECRET_FIELDS or is_secret_key(str(x)) for x in loc)


# pydantic names the members of a union in an error's location (``str``, ``float``, ``ColumnSpec``,
# ``function-after[_one_source(), ColumnSpec]``): internals a person cannot act on
_UNION_TAG = re.compile(
    r"^(function-\w+\[.*\]|[A-Z]\w*|str|int|float|bool|date|datetime|decimal|none|bytes"
    r"|(list|dict|tuple|set|literal|tagged-union|union|nullable|chain|lax-or-strict|json-or-python)\[.*\])$"
)
_EXPECTS = {
    "str": "text",
    "int": "a whole number",
    "float": "a number",
    "decimal": "a number",
    "bool": "true or false",
    "date": "a date (YYYY-MM-DD)",
    "datetime": "a timestamp",
    "none": "nothing (null)",
    "list": "a list",
    "dict": "a mapping",
}
_TYPE_MESSAGES = {
    "string_type": "text",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "decimal_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "date_type": "a date (YYYY-MM-DD)",
    "date_parsing": "a date (YYYY-MM-DD)",
    "date_from_datetime_parsing": "a date (YYYY-MM-DD)",
    "datetime_type": "a timestamp",
    "datetime_parsing": "a timestamp",
    "datetime_from_date_parsing": "a timestamp",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
}
_YAML_BOOLEANS = "YAML reads unquoted yes/no/on/off/y/n as true/false"


def _tag_name(tag: str) -> str:
    base = tag.split("[", 1)[0]
    if tag.startswith("function-") or tag[:1].isupper() or base in ("dict", "tagged-union"):
        return "a mapping"
    return _EXPECTS.get(base, tag)


def _got(e: Any) -> str:
    v = e.get("input")
    # a secret field's value is never echoed, nor anything that is not a plain scalar
    if "input" not in e or isinstance(v, dict | list | SecretStr) or _secret_loc(e["loc"]):
        return ""
    hint = (
        f': {_YAML_BOOLEANS}; quote a code like that, e.g. "NO" for Norway'
        if isinstance(v, bool)
        else ""
    )
    return f" (got {v!r}{hint})"


def _one_error(e: Any, loc: tuple[Any, ...]) -> str:
    where = ".".join(str(x) for x in loc) or "(top level)"
    kind = e["type"]
    if kind == "missing":
        return f"{where} is required but missing"
    if kind == "extra_forbidden":
        return f"{where} is not a known setting (typo?)"
    if kind in _TYPE_MESSAGES:
        return f"{where} expects {_TYPE_MESSAGES[kind]}{_got(e)}"
    msg = str(e["msg"]).removeprefix("Value error, ")
    return f"{where} {msg}{_got(e)}"


def validation_messages(err: ValidationError) -> list[str]:
    """One plain message per problem of a pydantic error, without pydantic's internals.

    The members of a union (``legacy_id: id`` or ``{from: id}``; a number or a date) each report
    their own failure under a location naming the member's type; this keeps the failure of the
    member the value was meant for (the one that failed deeper than its type), or says once what
    the value may be ("expects text or a mapping")."""
    errors = err.errors()
    tagged: dict[tuple[Any, ...], list[tuple[Any, int]]] = {}
    plain: list[tuple[Any, tuple[Any, ...]]] = []
    for e in errors:
        loc = tuple(e["loc"])
        i = next(
            (n for n, x in enumerate(loc) if n and isinstance(x, str) and _UNION_TAG.match(x)),
            None,
        )
        if i is None:
            plain.append((e, loc))
        else:
            tagged.setdefault(loc[:i], []).append((e, i))
    out = [_one_error(e, loc) for e, loc in plain]
    for prefix, group in tagged.items():

        def strip(loc: tuple[Any, ...]) -> tuple[Any, ...]:
            return tuple(x for x in loc if not (isinstance(x, str) and _UNION_TAG.match(x)))

        deep = [
            (e, i) for e, i in group if len(e["loc"]) > i + 1 or e["type"] not in _TYPE_MESSAGES
        ]
        # a failure inside one member is what the value was written for
        if deep and len(deep) < len(group) or len(group) == 1:
            out.extend(_one_error(e, strip(tuple(e["loc"]))) for e, _i in deep or group)
            continue
        kinds = list(dict.fromkeys(_tag_name(str(e["loc"][i])) for e, i in group))
        where = ".".join(str(x) for x in prefix)
        out.append(f"{where} expects {' or '.join(kinds)}{_got(group[0][0])}")
    return list(dict.fromkeys(out))


def format_validation_error(err: ValidationError, origin: str) -> str:
    return f"{origin}: " + "; ".join(validation_messages(err))


def read_yaml(p: Path, what: str) -> Any:
    """A YAML file's content; ConfigError naming the file for unreadable, non-UTF-8 or bad YAML."""
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{what} {p} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})",
            "save it as UTF-8",
        ) from None
    except OSError as exc:
        raise ConfigError(f"{what} {p} cannot be read ({exc.strerror})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(
            f"{p}{where} is not valid YAML", str(getattr(exc, "problem", exc))
        ) from None


def settings_error(exc: SettingsError) -> ConfigError:
    """pydantic-settings could not read an environment variable (``CROSSFADE_KAFKA='{bad'``):
    name it, without its value (it may hold a secret)."""
    text = str(exc)
    m = re.search(r'error parsing value for field "([^"]+)" from source "([^"]+)"', text)
    field = m.group(1) if m else None
    if field is not None:
        var = f"CROSSFADE_{field.upper()}"
        return ConfigError(
            f"environment variable {var} is not valid JSON (a section given whole from the "
            "environment is a JSON object; the value is not shown)",
            f"fix or unset {var}, or set single values as {var}__<KEY>",
        )
    return ConfigError("the CROSSFADE_* environment cannot be read", "check its JSON values")
