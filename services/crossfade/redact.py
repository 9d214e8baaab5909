"""Masking secrets in any text crossfade prints or logs, and escaping control characters.

What is masked (:func:`redact`):

* every secret value of the loaded configuration and the console token, wherever it appears
  (``crossfade.config.known_secrets``): a password quoted with spaces, inside a stack trace...;
* by shape, for what was never configured: URL user info, ``password=...`` (quoted values whole),
  and any ``key=value``/``key: value``/``'key': 'value'`` whose key names a password, secret,
  token or credential.

Raw control characters (from a request line, say) are escaped (:func:`escape_controls`), so a
log line cannot rewrite a terminal or forge another line.
"""

from __future__ import annotations

import re

from crossfade.config import MASK, known_secrets

_KEY = r"[\w.-]*(?:passw|secret|token|credential|jaas|api[._-]?key|user[._-]?info)[\w.-]*"
_SECRET_PATTERNS = [
    # URL user info: postgresql://user:***@host, https://***@host (a token given as the user)
    (re.compile(r"(://[^:/@\s'\"]+:)([^@\s'\"]*)(@)"), r"\1***\3"),
    (re.compile(r"(https?://)([^:/@\s'\"]+)(@)"), r"\1***\3"),
    # a quoted value, spaces and all: password='my secret pw', "token": "a b"
    (
        re.compile(rf"(\b{_KEY}['\"]?\s*[=:]\s*)(['\"])(?:\\.|(?!\2).)*\2", re.IGNORECASE),
        r"\1\2***\2",
    ),
    # password=..., password: ..., 'sasl.password': ..., ?token=...
    (re.compile(rf"(\b{_KEY}['\"]?\s*[=:]\s*)(?!\*\*\*)[^\s'\",}}&)]+", re.IGNORECASE), r"\1***"),
]
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def escape_controls(text: str) -> str:
    """Raw control characters as ``\\xNN`` (newlines and tabs stay: traces are multi-line)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def redact(text: str) -> str:
    """``text`` with every secret masked (see the module docstring)."""
    for secret in sorted(known_secrets(), key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    for pat, repl in _SECRET_PATTERNS:
        text = pat.sub(repl, text)
    return text
