"""Secrets in the configuration: what counts as one, and how it is never shown.

Secrets never print (``config show``, ``connector render``, logs, ``--json``, the console, the audit
report, validation errors). What counts as one:

* the DSNs' passwords (``password``, ``sslpassword``), read with libpq's own conninfo parser at
  validation, so a redacted DSN is rebuilt from the parsed form (:func:`redact_dsn`);
* the SASL password and ``cutover.flip_http`` (``SecretStr``);
* the user info of every URL (``https://user:password@registry``);
* every ``kafka.extra`` and ``capture.properties`` value whose key names a password, secret,
  token, credential, JAAS config or private key (:func:`is_secret_key`).

:func:`known_secrets` is every secret value of the loaded configuration, which log redaction
(``crossfade.redact.redact``) masks wherever it appears. This module knows keys, DSNs, URLs and
command arguments, not the settings tree: the tree's secrets (``secret_values``) and its redacted
view (``public_view``) are in :mod:`crossfade.config.settings`, which imports this module.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from pydantic import SecretStr

SECRET_KEY_RE = re.compile(
    r"passw|secret|token|credential|jaas|private|api[._-]?key|user[._-]?info|key\.pem|keystore\.key",
    re.IGNORECASE,
)
"""Keys of ``kafka.extra``, ``capture.properties`` and DSN options whose values are secrets."""
MASK = "***"


def is_secret_key(key: str) -> bool:
    """Whether a setting named ``key`` holds a secret (``ssl.key.password``,
    ``sasl.oauthbearer.client.secret``, ``database.password``, ``basic.auth.user.info``...)."""
    return bool(SECRET_KEY_RE.search(key))


_KNOWN: set[str] = set()
_KNOWN_LOCK = threading.Lock()


def remember_secrets(values: Iterable[str | None]) -> None:
    """Add secret values to what log and error output masks wherever they appear. Values under
    6 characters are left to the masking by key (``password=...``): masked wherever they appear,
    they would mangle every log line that holds the same word."""
    with _KNOWN_LOCK:
        _KNOWN.update(v for v in values if v and len(v) >= 6)


def known_secrets() -> frozenset[str]:
    """Every secret value remembered in this process (longest first is the caller's business)."""
    with _KNOWN_LOCK:
        return frozenset(_KNOWN)


def parse_dsn(raw: str) -> dict[str, str]:
    """libpq's own reading of a connection string or URL (psycopg's ``conninfo_to_dict``).

    Raises ValueError with libpq's reason, every quoted fragment of the input cut out: a
    malformed DSN's message would otherwise quote part of its password.
    """
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        return {k: str(v) for k, v in conninfo_to_dict(raw).items() if v is not None}
    except ProgrammingError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
        reason = re.sub(r'"[^"]*"', '"…"', reason)
        raise ValueError(
            f"is not a valid libpq connection string or URL ({reason}; the value is not shown: "
            "it may hold a password). Quote values holding spaces (password='a b'); in a URL, "
            "percent-encode them (%20)"
        ) from None


def dsn_secrets(raw: str) -> list[str]:
    """The secret values of a DSN (its password, the TLS key's passphrase), as libpq reads them."""
    try:
        return [v for k, v in parse_dsn(raw).items() if is_secret_key(k)]
    except ValueError:
        return []


def redact_dsn(dsn: str | SecretStr) -> str:
    """The DSN with every secret option (``password``, ``sslpassword``) shown as ``***``.

    Works from libpq's parse: a URL stays a URL (its user info and query rebuilt), a key=value
    string is rebuilt from its options (quoted values, spaces and all, are masked whole). A DSN
    libpq cannot read is not shown at all.
    """
    raw = dsn.get_secret_value() if isinstance(dsn, SecretStr) else dsn
    try:
        opts = parse_dsn(raw.strip())
    except ValueError:
        return "<a DSN libpq cannot read: not shown>"
    if "://" in raw:
        return _redact_url(raw.strip(), keep_user=True)
    from psycopg.conninfo import make_conninfo

    return make_conninfo(**{k: MASK if is_secret_key(k) else v for k, v in opts.items()})


def _redact_url(url: str, *, keep_user: bool) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        if keep_user and user:
            netloc = f"{user}:{MASK}@{hosts}" if colon else f"{user}@{hosts}"
        else:
            netloc = f"{MASK}@{hosts}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(is_secret_key(k) for k, _ in pairs):
            query = urlencode(
                [(k, MASK if is_secret_key(k) else v) for k, v in pairs], safe="*", quote_via=quote
            )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_url(url: str) -> str:
    """A URL with its user info and every secret-named query parameter (``token=``) masked."""
    return _redact_url(url, keep_user=False)


def url_secrets(url: str) -> list[str]:
    """The user info (password, or a token given as the user) and secret query values of a URL."""
    parts = urlsplit(url)
    out: list[str] = []
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        user, _, password = userinfo.partition(":")
        out.extend([password, userinfo] if password else [user])
    out.extend(v for k, v in parse_qsl(parts.query) if is_secret_key(k))
    return out


_URL_IN_ARG = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")
_PASSWORD_IN_ARG = re.compile(r"(password\s*=\s*)('[^']*'|[^\s']+)", re.IGNORECASE)


def arg_secrets(arg: str) -> list[str]:
    """The secrets inside one command argument: a URL's user info (``--dbname=postgresql://u:pw@h``)
    or a conninfo password (``password=pw``)."""
    out = [x for m in _URL_IN_ARG.finditer(arg) for x in url_secrets(m.group())]
    return out + [m.group(2).strip("'") for m in _PASSWORD_IN_ARG.finditer(arg)]


def redact_arg(arg: str) -> str:
    """A command argument with the secrets of :func:`arg_secrets` masked."""
    arg = _URL_IN_ARG.sub(lambda m: redact_url(m.group()), arg)
    return _PASSWORD_IN_ARG.sub(lambda m: m.group(1) + MASK, arg)
