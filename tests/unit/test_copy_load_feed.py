"""The COPY load's feeder (crossfade.capture.initial_load.CopyLoad._feed): each table is prepared
(created, emptied, watermark raised) and its chunks queued before the next table is prepared,
so the streams copy the first tables while the next are prepared; a table is never copied
before it is emptied; whatever happens, every stream gets its end marker (a failed preparation
must not leave a stream waiting for chunks forever)."""

from __future__ import annotations

import contextlib
import queue
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from crossfade.capture import initial_load
from crossfade.capture.initial_load import Chunk, CopyLoad, LoadState
from tests.conftest import offline_settings

TABLES = ["public.a", "public.b", "public.c"]


class _Conn:
    def __enter__(self) -> _Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def execute(self, *a: Any, **k: Any) -> None:
        pass

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def rollback(self) -> None:
        pass


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    log: list[str] = []

    def ensure(src: Any, tgt: Any, table: str, *a: Any) -> str:
        if table == "public.b" and "fail b" in log:
            raise RuntimeError("cannot create public.b")
        log.append(f"prepare {table}")
        return table

    def chunks(plan: Any, table: str, shape: Any, pos: int) -> list[Chunk]:
        return [
            Chunk(table, sql.SQL("COPY x TO STDOUT"), sql.SQL("COPY x FROM STDIN"), f"{table}#{i}")
            for i in range(2)
        ]

    monkeypatch.setattr(initial_load, "connect", lambda *a, **k: _Conn())
    monkeypatch.setattr(initial_load, "ensure_schema", lambda *a: None)
    monkeypatch.setattr(initial_load, "note_copy_load_slot", lambda *a: None)
    monkeypatch.setattr(initial_load, "ensure_target_table", ensure)
    monkeypatch.setattr(initial_load, "_follow_source", lambda src, tgt, table, shape: shape)
    monkeypatch.setattr(
        initial_load, "raise_watermark", lambda tgt, bk, table, *a: log.append(f"empty {table}")
    )
    monkeypatch.setattr(initial_load, "clear_tombstones", lambda *a: None)
    monkeypatch.setattr(initial_load, "table_chunks", chunks)
    return log


def _load(tmp_path: Path) -> CopyLoad:
    return CopyLoad(
        offline_settings().model_copy(update={"tables": TABLES}), LoadState(tmp_path, "e1")
    )


class _Queue(queue.Queue[Chunk | None]):
    """Records what was prepared when each chunk was queued."""

    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log
        self.seen: list[tuple[str, list[str]]] = []

    def put(self, item: Chunk | None, block: bool = True, timeout: float | None = None) -> None:
        self.seen.append((item.label if item else "end", list(self.log)))
        super().put(item, block, timeout)


def test_each_table_is_queued_once_emptied_and_before_the_next_is_prepared(
    tmp_path: Path, calls: list[str]
) -> None:
    work = _Queue(calls)
    errors: list[BaseException] = []
    _load(tmp_path)._feed(_Conn(), work, 1 << 64, 2, errors)  # type: ignore[arg-type]
    assert not errors
    assert [label for label, _ in work.seen] == [
        "public.a#0", "public.a#1", "public.b#0", "public.b#1", "public.c#0", "public.c#1",
        "end", "end",
    ]  # fmt: skip
    done_at = dict(work.seen)
    assert done_at["public.a#0"] == ["prepare public.a", "empty public.a"]  # b not yet prepared
    assert done_at["public.b#0"][-2:] == ["prepare public.b", "empty public.b"]
    assert "prepare public.c" not in done_at["public.b#1"]


def test_a_failed_preparation_stops_the_feed_and_still_ends_every_stream(
    tmp_path: Path, calls: list[str]
) -> None:
    calls.append("fail b")
    work = _Queue(calls)
    errors: list[BaseException] = []
    _load(tmp_path)._feed(_Conn(), work, 1 << 64, 3, errors)  # type: ignore[arg-type]
    assert [str(e) for e in errors] == ["cannot create public.b"]
    got = [work.get(timeout=1) for _ in range(5)]
    assert [c.label if c else None for c in got] == ["public.a#0", "public.a#1", None, None, None]
    assert work.empty()


def test_the_feed_stops_between_tables_once_a_stream_failed(
    tmp_path: Path, calls: list[str]
) -> None:
    errors: list[BaseException] = []
    work = _Queue(calls)
    real_put = work.put

    def put(item: Chunk | None, block: bool = True, timeout: float | None = None) -> None:
        real_put(item, block, timeout)
        if item is not None and item.label == "public.a#1":
            errors.append(RuntimeError("a stream failed"))

    work.put = put  # type: ignore[method-assign]
    _load(tmp_path)._feed(_Conn(), work, 1 << 64, 1, errors)  # type: ignore[arg-type]
    assert "prepare public.b" not in calls  # not emptied for nothing
    assert [label for label, _ in work.seen] == ["public.a#0", "public.a#1", "end"]


def test_a_deadlock_while_emptying_a_table_is_tried_again_not_the_load_failed(
    tmp_path: Path, calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sync worker applying the sweep marker at the slot's point raises the table's watermark
    and then reads the table, the reverse of the load's TRUNCATE then watermark: PostgreSQL
    aborts one of the two (seen in CI: the whole COPY load failed, capture exited). The load's
    transaction is tried again; a lasting failure still fails the load."""
    from psycopg import errors as pgerr

    deadlocks = {"public.b": 1, "public.c": 99}

    def raise_watermark(tgt: Any, bk: str, table: str, *a: Any) -> None:
        if deadlocks.get(table, 0) > 0:
            deadlocks[table] -= 1
            raise pgerr.DeadlockDetected("deadlock detected")
        calls.append(f"empty {table}")

    monkeypatch.setattr(initial_load, "raise_watermark", raise_watermark)
    work = _Queue(calls)
    errors: list[BaseException] = []
    _load(tmp_path)._feed(_Conn(), work, 1 << 64, 1, errors)  # type: ignore[arg-type]
    assert "empty public.b" in calls  # the second attempt
    assert [label for label, _ in work.seen][:4] == [
        "public.a#0", "public.a#1", "public.b#0", "public.b#1",
    ]  # fmt: skip
    assert [type(e).__name__ for e in errors] == ["DeadlockDetected"]  # c: 5 attempts, then fails
    assert deadlocks["public.c"] == 99 - 5
