"""Logging: readable on a terminal, JSON lines otherwise; secrets masked in every record
(:func:`crossfade.redact.redact`) and control characters escaped.

What is masked, in messages, exception traces and ``--verbose`` traces alike:

* every secret value of the loaded configuration and the console token, wherever it appears
  (``crossfade.config.known_secrets``): a password quoted with spaces, inside a stack trace...;
* by shape, for what was never configured: URL user info, ``password=...`` (quoted values whole),
  and any ``key=value``/``key: value``/``'key': 'value'`` whose key names a password, secret,
  token or credential.

Raw control characters (from a request line, say) are escaped (``\\x1b``), so a log line cannot
rewrite a terminal or forge another line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

from crossfade.redact import escape_controls, redact


class RedactingFilter(logging.Filter):
    """Masks secrets and escapes control characters in each record's message and trace."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = escape_controls(redact(msg))
        if clean != msg:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            # formatted once, here, so every handler shows the masked trace
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_WORKER_THREAD = re.compile(r"sync-\d+\b")
"""The threads of one of several sync workers of a process (``sync.workers``: ``sync-1``...,
and the threads they start, ``sync-1-watchdog``): their lines name the worker."""


_PROCESS: list[str] = []
"""The name of this process when it is one of several sync processes (``sync.processes``):
``sync-2``; every line it logs carries it."""


def set_process_name(name: str) -> None:
    _PROCESS[:] = [name]


def worker_of(record: logging.LogRecord) -> str | None:
    """The sync worker a record was logged by, when the process runs several, prefixed by the
    process's name when it is one of several sync processes (``sync-2/sync-1``); else None."""
    m = _WORKER_THREAD.match(record.threadName or "")
    if _PROCESS:
        return f"{_PROCESS[0]}/{m.group(0)}" if m else _PROCESS[0]
    return m.group(0) if m else None


class RedactingFormatter(logging.Formatter):
    """The text format, masked whole: a trace attached by any path is masked too. A line of one
    of several sync workers starts its message with the worker's name (``[sync-2] ...``)."""

    def format(self, record: logging.LogRecord) -> str:
        worker = worker_of(record)
        if worker is None:
            return redact(super().format(record))
        msg, args = record.msg, record.args
        record.msg, record.args = f"[{worker}] {record.getMessage()}", None
        try:
            return redact(super().format(record))
        finally:
            record.msg, record.args = msg, args


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        d = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        worker = worker_of(record)
        if worker is not None:
            d["worker"] = worker
        if record.exc_info:
            d["exc"] = redact(record.exc_text or self.formatException(record.exc_info))
        return json.dumps(d)


def setup_logging(verbose: bool = False, fmt: str = "auto", quiet: bool = False) -> None:
    """Configure the root logger once per process."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    if use_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            RedactingFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    for noisy in ("kafka", "faker", "urllib3", "jpype"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
