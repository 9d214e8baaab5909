"""bench/start_phases.py: the snapshot benchmark's phases, in seconds from its t0, from the
processes' JSON lines and Debezium's log4j lines of a kept log directory."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from bench.start_phases import line_time, main, phases, table

T0 = datetime(2026, 12, 7, 21, 49, 46, tzinfo=UTC).timestamp()


def _json(at: float, msg: str) -> str:
    ts = datetime.fromtimestamp(T0 + at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return json.dumps({"ts": ts, "level": "info", "logger": "x", "msg": msg})


def _log4j(at: float, msg: str) -> str:
    local = datetime.fromtimestamp(T0 + at).astimezone()  # Debezium logs the local time
    return local.strftime("%Y-%m-%dT%H:%M:%S,") + f"{local.microsecond // 1000:03d} INFO  {msg}"


def _run(tmp_path: Path) -> tuple[Path, dict]:
    d = tmp_path / "stack1"
    d.mkdir()
    (d / "capture.log").write_text(
        "\n".join(
            [
                _json(0.5, "metrics on http://127.0.0.1:1/metrics"),
                _json(1.25, "initial load by COPY at LSN 0/1 (snapshot 1)"),
                "\tbootstrap.servers = [localhost:9092]",  # a continuation line
                _log4j(2.5, "[debezium] AbstractConfig - EmbeddedWorkerConfig values: "),
                _json(3.0, "initial load done: 10 rows in 1.7 s"),
                _log4j(3.5, "[debezium] PostgresStreamingChangeEventSource - Processing messages"),
            ]
        )
    )
    (d / "sync.log").write_text(_json(2.0, "joined consumer group g in 1.0 s") + "\n")
    res = {"t0_unix": T0, "fenced_unix": T0 + 4.0, "fence_own_s": 2.5, "verified_unix": T0 + 5.0}
    return tmp_path, res


def test_phases_in_seconds_from_t0_from_both_kinds_of_line(tmp_path: Path) -> None:
    got = phases(*_run(tmp_path))
    want = {
        "capture up (metrics served)": 0.5,
        "slot created, snapshot exported": 1.25,
        "sync joined its group": 2.0,
        "Debezium engine built": 2.5,
        "COPY load done": 3.0,
        "Debezium streaming": 3.5,
        "fence call start": 1.5,
        "fenced": 4.0,
        "verified": 5.0,
    }
    assert got.keys() == want.keys()
    for k, v in want.items():
        assert abs(got[k] - v) < 0.002, (k, got[k])


def test_lines_without_a_time_are_skipped() -> None:
    assert line_time("\tbootstrap.servers = [localhost:9092]") is None
    assert line_time("{not json") is None


def test_several_runs_give_the_median_and_range_in_time_order(tmp_path: Path, capsys) -> None:
    lines = table([{"a": 1.0, "b": 0.5}, {"a": 3.0, "b": 0.7}, {"a": 2.0}])
    assert lines[0].split()[2] == "b" and "[0.50-0.70, 2 run(s)]" in lines[0]
    assert lines[1].split()[0] == "2.00" and "[1.00-3.00, 3 run(s)]" in lines[1]
    logs, res = _run(tmp_path)
    result = tmp_path / "snapshot.json"
    result.write_text(json.dumps({"results": {"snapshot": res}}))
    assert main([f"{logs}:{result}"]) == 0
    assert "COPY load done" in capsys.readouterr().out
