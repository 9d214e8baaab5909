"""Which initial load capture runs (crossfade.capture.initial_load.copy_load_mode and
CaptureService._copy_load): with the default ``capture.initial_load: copy`` and a mapping, the
tables load as snapshot events by COPY (issue 22: every real migration is mapped); a table whose
column types the events do not cover still makes it Debezium's snapshot; ``debezium`` stays the
explicit choice and ``events`` sends identity tables as snapshot events too."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from crossfade.capture import service, snapshot_events
from crossfade.capture.initial_load import copy_load_mode
from crossfade.capture.service import CaptureService
from crossfade.config import Settings

MAPPING = {"tables": {"public.t": {"targets": [{"table": "crm.t", "columns": {"id": "id"}}]}}}


def _settings(tmp_path: Path, initial_load: str | None, mapped: bool) -> Settings:
    return Settings(
        source={"dsn": "postgresql://u@127.0.0.1:1/legacy"},
        target={"dsn": "postgresql://u@127.0.0.1:1/target"},
        kafka={"bootstrap_servers": "127.0.0.1:1"},
        tables=["public.t"],
        capture={
            "state_dir": str(tmp_path),
            **({"initial_load": initial_load} if initial_load else {}),
        },
        **({"mapping": MAPPING} if mapped else {}),
    )


@pytest.mark.parametrize(
    ("initial_load", "mapped", "mode"),
    [
        (None, True, "stream"),  # the default, mapped: snapshot events by COPY
        (None, False, "copy"),  # the default, identity tables: COPY into the target
        ("copy", True, "stream"),
        ("events", False, "stream"),
        ("events", True, "stream"),
        ("debezium", True, None),
        ("debezium", False, None),
    ],
)
def test_the_default_load_of_mapped_tables_is_snapshot_events(
    tmp_path: Path, initial_load: str | None, mapped: bool, mode: str | None
) -> None:
    assert copy_load_mode(_settings(tmp_path, initial_load, mapped)) == mode


def test_the_default_with_a_mapping_says_how_it_loads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "crossfade.capture.initial_load")
    copy_load_mode(_settings(tmp_path, None, True))
    lines = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(lines) == 1 and "snapshot events by COPY" in lines[0].getMessage()
    assert "initial_load: debezium" in lines[0].getMessage()


def _capture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, plans: Any) -> tuple[Any, Path]:
    """capture's choice at start with the default and a mapping; ``plans``: what the snapshot
    events' planner finds (None: a column type they do not cover). Returns (gate, offsets)."""
    cap = CaptureService(_settings(tmp_path, None, True))
    cap.epoch = "e1"
    cap.producer = SimpleNamespace(frame_prefix=lambda *a: b"", stats=SimpleNamespace())  # type: ignore[assignment]

    class _Src:
        def __enter__(self) -> _Src:
            return self

        def __exit__(self, *a: Any) -> None:
            pass

    monkeypatch.setattr(snapshot_events, "connect", lambda *a, **k: _Src())
    monkeypatch.setattr(snapshot_events, "plan_table", lambda src, prefix, table: plans(table))
    made: list[Any] = []
    monkeypatch.setattr(service, "CopyLoad", lambda *a, **k: made.append(k) or "load")
    monkeypatch.setattr(service, "LoadGate", lambda load, **k: ("gate", load, made[-1]))
    offsets = tmp_path / "offsets-e1.dat"
    offsets.write_text("stale")  # a Debezium offsets file of a load that did not finish
    (tmp_path / "load-e1.json").write_text('{"done": false}')
    return cap._copy_load(offsets), offsets


def test_the_default_mapped_load_runs_the_snapshot_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = object()  # a table the snapshot events cover
    gate, offsets = _capture(tmp_path, monkeypatch, lambda table: plan)
    assert gate[0] == "gate" and gate[1] == "load"
    stream = gate[2]["stream"]  # the rows go to the topics as events, not into the target
    assert isinstance(stream, snapshot_events.StreamLoad) and stream.plans == {"public.t": plan}
    assert not offsets.exists()  # the unfinished load's offsets belong to the slot it drops


def test_an_unsupported_type_still_falls_back_to_debezium_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "crossfade.capture.snapshot_events")
    gate, offsets = _capture(
        tmp_path, monkeypatch, lambda table: f"{table}.span is of type interval"
    )
    assert gate is None  # Debezium's snapshot, from nothing
    assert not offsets.exists() and not (tmp_path / "load-e1.json").exists()
    msgs = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any(
        "goes through Debezium's snapshot" in m and "public.t.span is of type interval" in m
        for m in msgs
    ), msgs
