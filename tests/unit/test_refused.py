"""Rows the target refuses (crossfade.sync.refused): which errors are the row's, and the bisect
that finds them while the rest of the run applies."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
from psycopg import errors as pgerr

from crossfade.sync.refused import (
    StillRefused,
    apply_or_isolate,
    isolate,
    refusal,
    refused_by_row,
)

ROWS = [
    pgerr.StringDataRightTruncation,  # 22001
    pgerr.NumericValueOutOfRange,  # 22003
    pgerr.InvalidTextRepresentation,  # 22P02
    pgerr.InvalidDatetimeFormat,  # 22007
    pgerr.DatetimeFieldOverflow,  # 22008
    pgerr.DivisionByZero,  # 22012
    pgerr.NotNullViolation,  # 23502
    pgerr.CheckViolation,  # 23514
    pgerr.UniqueViolation,  # 23505
    pgerr.ExclusionViolation,  # 23P01
]
NOT_ROWS = [
    pgerr.ForeignKeyViolation,  # 23503: the order of tables
    pgerr.SerializationFailure,
    pgerr.DeadlockDetected,
    pgerr.LockNotAvailable,
    pgerr.QueryCanceled,  # statement timeout
    pgerr.DiskFull,
    pgerr.AdminShutdown,
    pgerr.UndefinedColumn,
    psycopg.OperationalError,
]


@pytest.mark.parametrize("cls", ROWS, ids=lambda c: c.__name__)
def test_the_rows_errors(cls: type[psycopg.Error]) -> None:
    assert refused_by_row(cls("refused"))


@pytest.mark.parametrize("cls", NOT_ROWS, ids=lambda c: c.__name__)
def test_errors_that_are_not_the_rows(cls: type[psycopg.Error]) -> None:
    assert not refused_by_row(cls("not the row"))


def test_a_non_database_error_is_not_the_rows() -> None:
    assert not refused_by_row(ValueError("x"))


class _Conn:
    """Savepoints: what an attempt wrote is kept only when it returns."""

    def __init__(self) -> None:
        self.savepoints = 0

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self.savepoints += 1
        yield


BAD = {3, 7, 8}


def _attempt(part: list[int]) -> list[int]:
    if BAD & set(part):
        raise pgerr.CheckViolation("new row violates check constraint")
    return list(part)


def _refuse(item: int, exc: psycopg.Error) -> list[tuple[int, str]]:
    return [(item, type(exc).__name__)]  # type: ignore[list-item]


def test_bisect_refuses_exactly_the_bad_rows_and_applies_the_rest_in_order() -> None:
    conn = _Conn()
    failures: list[int] = []
    out = isolate(conn, list(range(10)), _attempt, _refuse, lambda: failures.append(1))  # type: ignore[arg-type]
    flat = [x for part in out for x in part]
    assert flat == [0, 1, 2, (3, "CheckViolation"), 4, 5, 6, (7, "CheckViolation")] + [
        (8, "CheckViolation"),
        9,
    ]
    assert failures  # the caches of a rolled-back attempt are dropped


def test_a_run_the_target_takes_is_one_attempt() -> None:
    conn = _Conn()
    assert isolate(conn, [0, 1, 2], _attempt, _refuse) == [[0, 1, 2]]  # type: ignore[arg-type]
    assert conn.savepoints == 1
    assert isolate(conn, [], _attempt, _refuse) == []  # type: ignore[arg-type]


def test_an_error_that_is_not_the_rows_propagates() -> None:
    def attempt(part: list[int]) -> list[int]:
        raise pgerr.DeadlockDetected("deadlock")

    with pytest.raises(pgerr.DeadlockDetected):
        isolate(_Conn(), [1, 2], attempt, _refuse)  # type: ignore[arg-type]


def test_a_row_refused_even_as_a_dead_letter_stops_clearly() -> None:
    def refuse(item: int, exc: psycopg.Error) -> Any:
        raise pgerr.NotNullViolation("still")

    with pytest.raises(StillRefused, match="even as a dead letter"):
        isolate(_Conn(), [3], _attempt, refuse)  # type: ignore[arg-type]


def test_apply_or_isolate_runs_again_isolating_only_for_the_rows_errors() -> None:
    calls: list[bool] = []

    def attempt(iso: bool) -> None:
        calls.append(iso)
        if not iso:
            raise pgerr.UniqueViolation("duplicate key")

    apply_or_isolate(attempt, mapped=True)
    assert calls == [False, True]
    calls.clear()
    with pytest.raises(pgerr.UniqueViolation):  # no mapped table: nothing to isolate
        apply_or_isolate(attempt, mapped=False)
    assert calls == [False]

    def lost(iso: bool) -> None:
        calls.append(iso)
        raise pgerr.AdminShutdown("gone")

    calls.clear()
    with pytest.raises(pgerr.AdminShutdown):
        apply_or_isolate(lost, mapped=True)
    assert calls == [False]
    calls.clear()
    apply_or_isolate(lambda iso: calls.append(iso), mapped=True)  # type: ignore[func-returns-value]
    assert calls == [False]


def _exc(**diag: Any) -> Any:
    base = dict.fromkeys(
        ("schema_name", "table_name", "column_name", "constraint_name", "context", "message_detail")
    )
    return SimpleNamespace(diag=SimpleNamespace(**{**base, **diag}))


def test_the_reason_names_table_constraint_or_column_without_the_rows_values() -> None:
    check = _exc(
        sqlstate="23514",
        schema_name="crm",
        table_name="customers",
        constraint_name="age_not_negative",
        message_primary='new row for relation "customers" violates check constraint "age_not_negative"',
        message_detail="Failing row contains (4, Dee, secret-phone, -1).",
    )
    why = refusal("crm.customers", check)
    assert why == (
        'crm.customers refused the row: new row for relation "customers" violates check '
        'constraint "age_not_negative" [SQLSTATE 23514]'
    )
    copy = _exc(
        sqlstate="22001",
        message_primary="value too long for type character varying(12)",
        context='COPY cf_stage_ab12, line 3, column phone: "555-0102-0000-0000-000"',
    )
    why = refusal("crm.customers", copy)
    assert why == (
        "crm.customers refused the row (column phone): value too long for type character "
        "varying(12) [SQLSTATE 22001]"
    )
    assert "555-0102" not in why


def test_the_target_rules_series_starts_at_zero_for_mapped_tables_only() -> None:
    from prometheus_client import REGISTRY

    from crossfade import metrics
    from crossfade.config import Settings

    s = Settings(
        source={"dsn": "postgresql://u@127.0.0.1:1/legacy"},
        target={"dsn": "postgresql://u@127.0.0.1:1/target"},
        kafka={"bootstrap_servers": "127.0.0.1:1"},
        tables=["public.refused_m", "public.refused_i"],
        mapping={
            "tables": {
                "public.refused_m": {"targets": [{"table": "crm.m", "columns": {"id": "id"}}]}
            }
        },
    )
    metrics.init_labels(s, ["sync"])

    def value(table: str) -> float | None:
        return REGISTRY.get_sample_value(
            "crossfade_dead_lettered_total", {"table": table, "rule": "target"}
        )

    assert value("public.refused_m") == 0
    assert value("public.refused_i") is None  # an identity table's refusal is a stop
