"""The error tree.

Every error crossfade raises on purpose is a :class:`CrossfadeError`. Each carries a *kind*:

* ``transient`` – the same call may succeed later (a dropped connection, a broker that is
  restarting). Callers retry these with backoff (tenacity), never forever in silence: each retry is
  logged and counted.
* ``terminal`` – retrying cannot help (bad config, a missing table, a record that cannot be
  decoded). The command stops with a one-line message, or the record goes to the dead-letter topic.

The CLI prints ``str(error)``: one line naming what is wrong and what to do. The stack trace is
shown only with ``--verbose``.
"""

from __future__ import annotations

from typing import Literal

Kind = Literal["transient", "terminal"]


class CrossfadeError(Exception):
    """Base class. ``hint`` is the "what to do" half of the one-line message."""

    kind: Kind = "terminal"
    exit_code: int = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}: {self.hint}" if self.hint else self.message


class ConfigError(CrossfadeError):
    """The configuration file or environment is wrong (exit code 2, like a usage error)."""

    exit_code = 2


class NotInvertible(ConfigError):
    """Fallback refused: a table's mapping cannot be run backwards (one line per table)."""


class PreflightError(CrossfadeError):
    """A check before anything is written failed (wrong DSN, no wal_level=logical, no PK...)."""

    exit_code = 3


class TransientError(CrossfadeError):
    """Worth retrying: the same operation may succeed later."""

    kind = "transient"


class BrokerUnavailable(TransientError):
    """The Kafka broker cannot be reached right now."""


class DatabaseUnavailable(TransientError):
    """A database connection failed or was dropped."""


class StaleAssignment(CrossfadeError):
    """Another sync worker owns the partition now (rebalance or a paused worker): the batch
    was rolled back and must not be retried by this worker."""


class DecodeError(CrossfadeError):
    """A Kafka record's bytes cannot be decoded (corrupt Avro, unknown schema): dead-letter it."""


class BrokerDataLost(CrossfadeError):
    """The broker no longer holds the log crossfade wrote (e.g. the in-memory broker restarted)."""


class SchemaMismatch(CrossfadeError):
    """A change event does not fit the target table (column dropped, renamed, type changed)."""


def classify_db_error(exc: BaseException) -> Kind:
    """Sort a psycopg error into transient or terminal.

    Connection-level failures (``OperationalError``: the server went away, the connection was
    cut, the server is starting up or shutting down), serialization failures, deadlocks, a lock
    not granted in time and a session the server ended for sitting idle in its transaction
    (SQLSTATE 25P03, ``idle_in_transaction_session_timeout``: a worker frozen mid-batch; on a new
    session its batch is retried, and refused if its partitions moved on) are transient;
    everything else (a constraint violation, a type error) is terminal.
    """
    import psycopg
    from psycopg import errors as pgerr

    if isinstance(
        exc,
        pgerr.SerializationFailure
        | pgerr.DeadlockDetected
        | pgerr.AdminShutdown
        | pgerr.CannotConnectNow
        | pgerr.LockNotAvailable
        | pgerr.IdleInTransactionSessionTimeout
        | pgerr.TransactionTimeout,
    ):
        return "transient"
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return "transient"
    if isinstance(exc, TransientError):
        return "transient"
    return "terminal"


def lacks_resource(exc: BaseException | None) -> bool:
    """A PostgreSQL server short of a resource (SQLSTATE class 53: out of memory, out of shared
    memory (its lock table), disk full, too many connections). Transient (an operator can fix
    it while crossfade waits), but no retry alone will: callers escalate it."""
    return (getattr(getattr(exc, "diag", None), "sqlstate", None) or "").startswith("53")


def one_line(exc: BaseException | None) -> str:
    """``Type: first line`` of an error, with the database server's hint when it gave one
    (``out of shared memory`` says what to raise only there)."""
    if exc is None:
        return ""
    text = str(exc).strip().splitlines()
    out = f"{type(exc).__name__}: {text[0] if text else ''}"
    hint = getattr(getattr(exc, "diag", None), "message_hint", None)
    return f"{out} (hint: {hint})" if hint else out
