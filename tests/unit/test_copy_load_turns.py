"""The COPY load's chunk bookkeeping (crossfade.capture.initial_load.CopyLoad): tables sent as
snapshot events take turns in the configured order (a table's chunks wait until every earlier
table's are acknowledged), while tables copied into the target never wait. A regression: the
turn count went negative for a table copied in several block ranges, and the next table's
chunks then waited forever (a 500k-row identity load hung after its first table)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from psycopg import sql

from crossfade.capture.initial_load import Chunk, CopyLoad, LoadState
from crossfade.config import Settings

TABLES = ["public.big", "public.small"]


def _load(tmp_path: Path) -> CopyLoad:
    s = Settings(
        source={"dsn": "postgresql://u@127.0.0.1:1/legacy"},
        target={"dsn": "postgresql://u@127.0.0.1:1/target"},
        kafka={"bootstrap_servers": "127.0.0.1:1"},
        tables=TABLES,
    )
    return CopyLoad(s, LoadState(tmp_path, "e1"))


def _chunk(table: str, i: int, events: bool) -> Chunk:
    order = {"topic": f"t.{table}"} if events else None
    target = None if events else sql.SQL("COPY x FROM STDIN")
    return Chunk(table, sql.SQL("COPY (SELECT 1) TO STDOUT"), target, f"{table}#{i}", order)


def _ask(order: dict[str, Any]) -> dict[str, Any]:
    return {"rows": 10}


def _waits(load: CopyLoad, table: str) -> bool:
    """Whether a chunk of ``table`` would wait for its turn (checked for 1.5 s)."""
    t = threading.Thread(target=load._wait_turn, args=(table, []), daemon=True)
    t.start()
    t.join(1.5)
    return t.is_alive()


def test_tables_copied_into_the_target_in_several_ranges_never_wait(tmp_path: Path) -> None:
    load = _load(tmp_path)
    for i in range(5):  # one table in five block ranges, then the next table
        load._one_chunk(_ask, _chunk("public.big", i, events=False), [])
    assert not _waits(load, "public.small")
    load._one_chunk(_ask, _chunk("public.small", 0, events=False), [])
    assert load.rows == {"public.big": 50, "public.small": 10}


def test_snapshot_events_go_out_table_by_table(tmp_path: Path) -> None:
    load = _load(tmp_path)
    load._open = {"public.big": 3, "public.small": 1}  # as run() counts the queued chunks
    assert not _waits(load, "public.big")  # the first table's chunks run in parallel
    assert _waits(load, "public.small")
    for i in range(3):
        load._one_chunk(_ask, _chunk("public.big", i, events=True), [])
    assert not _waits(load, "public.small")
    assert load._open == {"public.big": 0, "public.small": 1}
