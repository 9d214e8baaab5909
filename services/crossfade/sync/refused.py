"""Rows of a mapped table the new database refuses: dead letters, not a crash loop.

A mapping's target tables are the new system's, with its constraints: a row the mapping passes
may still be refused by PostgreSQL (a value too long for ``varchar(n)``, NULL under NOT NULL, a
CHECK, a unique index on a non-key column). Such an error belongs to the row (SQLSTATE class 22,
data exception, and class 23, integrity, but a foreign key: :func:`refused_by_row`); retrying the
batch meets it again, so it must not stop sync.

Only on the error path: the batch's transaction fails as a whole, the worker
(:func:`apply_or_isolate`) runs it once more with ``Tx.isolate`` set, and there each mapped table's
run is applied under savepoints, bisected (:func:`isolate`) down to the rows the target refuses;
each becomes a dead letter with rule ``target`` and the database's reason (:func:`refusal`), the
rest applies, and the offsets move on. The happy path takes no savepoint.

An identity table (its target mirrors the source) has no isolation: a value it refuses means the
source's type changed (FAULTS 21), a clear stop with its runbook line (:func:`type_changed`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import psycopg

from crossfade import metrics
from crossfade.catalog import read_shape
from crossfade.config import Settings
from crossfade.db import connect
from crossfade.errors import CrossfadeError, SchemaMismatch, one_line

log = logging.getLogger(__name__)

RULE = metrics.TARGET_RULE
"""The rule of a dead letter the target refused (and its ``crossfade_dead_lettered_total`` label:
the constraint is in the reason, not in a label)."""

NOT_THE_ROWS = frozenset({"23503"})
"""Class 23 states that are not the row's alone: a foreign key violation depends on the order in
which tables apply (the mapping's ``references`` rules hold children back instead)."""

T = TypeVar("T")
R = TypeVar("R")

_COPY_COLUMN = re.compile(r"\bcolumn (\w+)")


def sqlstate(exc: BaseException) -> str:
    """The error's SQLSTATE (the server's, or its class's)."""
    diag = getattr(exc, "diag", None)
    return getattr(diag, "sqlstate", None) or getattr(exc, "sqlstate", None) or ""


def refused_by_row(exc: BaseException) -> bool:
    """Whether the target refused a write for a reason of the row's own (SQLSTATE class 22 or
    23, but a foreign key), not for one of the database's (a lost connection, a deadlock, a
    lock or statement timeout, a full disk: class 08, 40, 55, 57, 53), which a retry outlasts
    or an operator fixes."""
    state = sqlstate(exc)
    return (
        isinstance(exc, psycopg.Error) and state[:2] in ("22", "23") and state not in NOT_THE_ROWS
    )


def refusal(targets: str, exc: psycopg.Error) -> str:
    """One line for a person: the table, the constraint or column, PostgreSQL's message (its
    primary message only: the detail and context repeat the row's values)."""
    d = exc.diag
    table = f"{d.schema_name}.{d.table_name}" if d.schema_name and d.table_name else targets
    msg = (d.message_primary or one_line(exc)).strip()
    column = d.column_name
    if not column and d.context:  # COPY into the staging table names the column in its context
        m = _COPY_COLUMN.search(d.context)
        column = m.group(1) if m else None
    what = d.constraint_name or (f"column {column}" if column else None)
    where = f" ({what})" if what and what not in msg else ""
    return f"{table} refused the row{where}: {msg} [SQLSTATE {d.sqlstate}]"


class StillRefused(SchemaMismatch):
    """A row the target refuses even as a dead letter (its target rows removed)."""


def isolate(
    conn: psycopg.Connection,
    items: list[T],
    attempt: Callable[[list[T]], R],
    refuse: Callable[[T, psycopg.Error], R],
    after_failure: Callable[[], None] = lambda: None,
) -> list[R]:
    """Apply ``items`` with ``attempt`` under a savepoint; when the target refuses a row
    (:func:`refused_by_row`), roll back to it and bisect, down to single items, which
    ``refuse`` records instead (a dead letter). Any other error propagates. Items keep their
    order. ``after_failure``: drop what the rolled-back attempt left in memory (caches).
    Returns the results of the attempts that held, in order."""
    out: list[R] = []
    todo: list[list[T]] = [items] if items else []
    while todo:
        part = todo.pop()
        try:
            with conn.transaction():
                out.append(attempt(part))
            continue
        except psycopg.Error as exc:
            if not refused_by_row(exc):
                raise
            after_failure()
            if len(part) > 1:
                mid = len(part) // 2
                todo += [part[mid:], part[:mid]]  # the first half next: the order holds
                continue
            failed = exc
        try:
            with conn.transaction():
                out.append(refuse(part[0], failed))
        except psycopg.Error as again:
            if not refused_by_row(again):
                raise
            raise StillRefused(
                f"the target refuses a row even as a dead letter, its target rows removed "
                f"({one_line(again)}; first refused with: {one_line(failed)})",
                "a deduplicated table's golden record refused for another member's value? "
                "fix the target's constraint or column, then restart sync",
            ) from None
    return out


def apply_or_isolate(attempt: Callable[[bool], None], mapped: bool) -> None:
    """``attempt(isolate)`` runs a batch's transaction; when the target refused a row of it and
    mapped tables are in play, run it again isolating the mapped rows it refuses (see above). An
    identity table's refusal fails the second attempt too and propagates."""
    try:
        attempt(False)
    except psycopg.Error as exc:
        if not mapped or not refused_by_row(exc):
            raise
        log.warning(
            "the target refused a row of the batch (%s): applying it again, refused mapped rows "
            "as dead letters",
            one_line(exc),
        )
        attempt(True)


def type_changed(
    settings: Settings, appliers: Mapping[str, Any], exc: psycopg.Error
) -> CrossfadeError | None:
    """The target refused a value of an identity table: if a column changed type at the
    source, say which (a clear stop with its runbook line) instead of the driver's message;
    else None."""
    with connect(settings.source, "source") as src:
        for table, applier in appliers.items():
            now = read_shape(src, table)
            current = {c.name: c.type_sql for c in now.columns} if now is not None else {}
            for col in applier.shape.columns:
                if current.get(col.name, col.type_sql) != col.type_sql:
                    return SchemaMismatch(
                        f"column {col.name} of {table} changed type at the source ({col.type_sql} -> "
                        f"{current[col.name]}) and the target refuses its new values ({one_line(exc)})",
                        "runbook: stop writes to the table, let sync drain, migrate the target column to the "
                        "new type (ALTER TABLE ... ALTER COLUMN ... TYPE ...), restart sync (docs/operations.md)",
                    )
    return None
