"""The ground floor's database access: one way to connect, one way to tell a passing failure from
a lasting one, one retry policy built on it.

Every part that talks to PostgreSQL (capture, sync, verify, cutover, the console) connects through
:func:`connect`, which turns a refused connection into one line naming the database and the fix,
and retries through :func:`retrying`, which waits on what :func:`is_transient` calls passing (a
server restarting, a cut connection, a deadlock) and gives up at once on the rest.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import orjson
import psycopg
from psycopg.abc import Buffer
from psycopg.types.array import ListDumper
from psycopg.types.json import Jsonb, JsonbLoader
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_never, wait_exponential

from crossfade.config import DatabaseConfig, redact_dsn
from crossfade.errors import DatabaseUnavailable, PreflightError, TransientError, classify_db_error

#: What a server that cannot take connections *yet* answers (SQLSTATE 57P03, which libpq does
#: not pass on for a refused start-up): starting, in crash recovery, shutting down for a restart.
_NOT_NOW = (
    "the database system is starting up",
    "the database system is not yet accepting connections",
    "the database system is in recovery mode",
    "the database system is shutting down",
    "consistent recovery state has not been yet reached",
)


class TextListDumper(ListDumper):
    """psycopg's text dumper of list parameters (``%s`` with a list: ``text[]``, ``= ANY(%s)``,
    a ``text[]`` column in a COPY), byte for byte, with a cheaper escape of the elements that
    need quotes. psycopg escapes each quoted element's double quotes and backslashes with
    ``re.sub`` and a template replacement, ~3 us an element; sync's keys are JSON texts
    (``["..."]``), which all need it, and lists of thousands of them go out with every batch
    (12% of sync's CPU in a mapped load, issue 22). Two ``bytes.replace`` give the same bytes."""

    def _dump_list(
        self,
        obj: list[Any],
        tokens: list[Buffer],
        needs_quotes: Callable[[Buffer], object],
    ) -> None:
        if not obj:
            tokens.append(b"{}")
            return
        dump = self.sub_dumper.dump if self.sub_dumper else self._dump_item
        delimiter = self.delimiter
        tokens.append(b"{")
        for item in obj:
            if item is None:
                tokens.append(b"NULL")
            elif isinstance(item, list):
                self._dump_list(item, tokens, needs_quotes)
            elif (ad := dump(item)) is None:
                tokens.append(b"NULL")
            else:
                if needs_quotes(ad):
                    # psycopg's: b'"' + re.sub(rb'(["\\])', rb"\\\1", ad) + b'"'
                    ad = b'"' + bytes(ad).replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
                tokens.append(ad)
            tokens.append(delimiter)
        tokens[-1] = b"}"


_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS

NON_FINITE_TEXT = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
"""The JSON strings PostgreSQL's ``to_jsonb`` writes for a non-finite ``float8``/``real`` (and
``numeric``): ``jsonb`` has no number for them (JSON's bare ``NaN`` is refused)."""

_STRICT_JSON = json.JSONEncoder(allow_nan=False)
"""``json.dumps``' encoder, refusing NaN and infinities (ValueError) instead of writing them."""


def _non_finite(obj: Any) -> bool:
    if isinstance(obj, float):
        return not math.isfinite(obj)
    if isinstance(obj, dict):
        return any(_non_finite(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return any(_non_finite(v) for v in obj)
    return False


def finite_json(obj: Any) -> Any:
    """``obj`` with every non-finite float spelled as PostgreSQL's ``to_jsonb`` spells it (the
    strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``); the rest as it is (a tuple: a list)."""
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        return "NaN" if obj != obj else ("Infinity" if obj > 0 else "-Infinity")
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_json(v) for v in obj]
    return obj


def float_from_json(v: Any) -> Any:
    """A ``float8``/``real`` value read back from ``jsonb``: :data:`NON_FINITE_TEXT`'s strings as
    the floats they spell (what :func:`jsonb_dumps` stored), anything else as it is."""
    if type(v) is str:
        return NON_FINITE_TEXT.get(v, v)
    return v


def jsonb_dumps(obj: Any) -> bytes | str:
    """The JSON text of ``obj`` for a ``jsonb`` column: orjson's (~5x ``json.dumps`` on the small
    objects sync stores per row: ledger keys, failures and headers, dedup members' rows), which
    PostgreSQL reads as the same ``jsonb`` value as ``json.dumps``' text (spacing aside: never for
    a ``json`` column, which keeps the text). What orjson refuses (an integer beyond 64 bits, a key
    that is not a string, a lone surrogate, a ``datetime``, a ``Decimal``...) and non-ASCII text
    (orjson writes UTF-8, psycopg sends the bytes as they are: json.dumps' escapes read right in
    any client encoding) go through ``json.dumps`` as before, which gives the same text or fails
    the same way (tests/unit/test_jsonb_dumps.py).

    A NaN or infinity (orjson writes ``null``, ``json.dumps`` a bare ``NaN`` that ``jsonb``
    refuses: a row holding one failed its batch on every retry) is written as PostgreSQL's own
    ``to_jsonb`` writes it: the string ``"NaN"``, ``"Infinity"`` or ``"-Infinity"``
    (:func:`finite_json`; :func:`float_from_json` reads it back). Only a row holding one takes
    that slower branch."""
    try:
        out = orjson.dumps(obj, option=_ORJSON_OPTIONS)
    except TypeError:
        return _json_dumps(obj)
    if not out.isascii():  # json.dumps escapes it: right whatever the client encoding
        return _json_dumps(obj)
    if b"null" in out and _non_finite(obj):
        return orjson.dumps(finite_json(obj), option=_ORJSON_OPTIONS)
    return out


def _json_dumps(obj: Any) -> str:
    try:
        return _STRICT_JSON.encode(obj)
    except ValueError:  # a NaN or infinity (or a circular reference, refused again below)
        return _STRICT_JSON.encode(finite_json(obj))


def jsonb(obj: Any) -> Jsonb:
    """A ``jsonb`` parameter or COPY value of ``obj``, dumped by :func:`jsonb_dumps`."""
    return Jsonb(obj, dumps=jsonb_dumps)


_DIGITS = bytes(48 if 48 <= i <= 57 else 32 for i in range(256))
"""``bytes.translate`` table: digits to ``0``, every other byte to a space."""
_LONG_NUMBER = b"0" * 19
"""19 digits in a row: perhaps an integer beyond 64 bits, which orjson reads as a float."""


class OrjsonbLoader(JsonbLoader):
    """psycopg's text loader of ``jsonb`` results, parsing with orjson (~3x ``json.loads`` on the
    small objects sync reads back per row: dedup members' keys and rows, crosswalk survivors),
    which gives the same Python values for the JSON text PostgreSQL prints. A text with 19
    digits in a row (an integer beyond 64 bits, which orjson would give as a float, or just a
    long string of digits) and what orjson refuses (text that is not UTF-8, nesting deeper than
    1024) go through ``json.loads`` as before: the same value, or the same error
    (tests/unit/test_jsonb_loads.py)."""

    def load(self, data: Buffer) -> Any:
        b = data if isinstance(data, bytes) else bytes(data)
        if _LONG_NUMBER not in b.translate(_DIGITS):
            try:
                return orjson.loads(b)
            except orjson.JSONDecodeError:
                pass
        return json.loads(b)


def connect(db: DatabaseConfig, role: str, *, autocommit: bool = True) -> psycopg.Connection:
    """Open a connection, turning failures into one line that names the database and the fix.

    A server that answers it cannot take connections yet (starting up, recovering from a crash,
    shutting down) raises :class:`DatabaseUnavailable` (transient: callers wait for it); any
    other failure :class:`PreflightError`. List parameters dump through
    :class:`TextListDumper` (the same bytes as psycopg's, cheaper), ``jsonb`` results load
    through :class:`OrjsonbLoader` (the same values as psycopg's, cheaper)."""
    try:
        conn = psycopg.connect(
            db.conninfo, autocommit=autocommit, connect_timeout=db.connect_timeout_s
        )
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        reason = reason.replace(db.conninfo, redact_dsn(db.dsn))
        if any(m in str(exc).lower() for m in _NOT_NOW):
            raise DatabaseUnavailable(
                f"the {role} database {redact_dsn(db.dsn)} does not accept connections yet ({reason})",
                "it is starting up or recovering: waiting for it",
            ) from None
        raise PreflightError(
            f"cannot connect to the {role} database {redact_dsn(db.dsn)} ({reason})",
            f"check {role}.dsn, that the server runs and accepts this user",
        ) from None
    conn.adapters.register_dumper(list, TextListDumper)
    conn.adapters.register_loader("jsonb", OrjsonbLoader)
    return conn


def end_idle_transactions_after(conn: psycopg.Connection, seconds: float) -> None:
    """Have the server end this session when it stays idle inside a transaction for ``seconds``
    (``idle_in_transaction_session_timeout``): a client frozen mid-transaction (SIGSTOP, a GC
    pause, a hung host) then releases its locks instead of holding them for as long as its TCP
    connection lives. The client, when it wakes, gets SQLSTATE 25P03 or a closed connection
    (:func:`is_transient`: reconnect and retry). ``0`` leaves the server's setting alone."""
    if seconds > 0:
        conn.execute(
            "SELECT set_config('idle_in_transaction_session_timeout', %s, false)",
            (str(max(1, round(seconds * 1000))),),
        )


def is_transient(exc: BaseException) -> bool:
    """True for what a retry can outlast: a psycopg error :func:`classify_db_error` calls
    transient, or any :class:`TransientError` (a database or broker not answering yet, the Schema
    Registry down)."""
    if isinstance(exc, psycopg.Error):
        return classify_db_error(exc) == "transient"
    return isinstance(exc, TransientError)


def retrying(
    before_sleep: Callable[[RetryCallState], Any] | None = None,
    *,
    max_wait_s: float = 10.0,
    **kw: Any,
) -> Retrying:
    """The one retry policy: on :func:`is_transient` failures, exponential pauses from 0.2 s up
    to ``max_wait_s``, until the caller's ``stop`` (tenacity's; forever by default: callers that
    must give up pass one) and re-raising the last error. ``before_sleep`` logs and counts."""
    return Retrying(
        retry=retry_if_exception(is_transient),
        wait=wait_exponential(multiplier=0.2, max=max_wait_s),
        stop=kw.pop("stop", stop_never),
        before_sleep=before_sleep,
        reraise=True,
        **kw,
    )
