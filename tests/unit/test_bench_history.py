"""bench/history.py: the latest run per benchmark and a short history table, no file per run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from bench import history


def _doc(date: str, commit: str) -> dict:
    return {
        "commit": commit,
        "date": date,
        "results": {"snapshot": {"rows": 10}, "cdc": {"seconds": 5}},
        "table": [
            ["snapshot", "rows/s", "1,000", "9,000"],
            ["cdc", "drain s", "2.0", "0.1"],
            ["cdc", "tps", "100", "|110"],
        ],
    }


def test_latest_file_per_benchmark_and_newest_rows_first(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# bench\n\n{history.BEGIN}\n{history.END}\n\nafter\n")
    results = tmp_path / "results"
    history.save(_doc("2026-12-01T10:00:00", "aaaaaaaa11"), readme, results)
    paths = history.save(_doc("2026-12-02T10:00:00", "bbbbbbbb22"), readme, results)
    assert sorted(p.name for p in results.iterdir()) == ["cdc.json", "snapshot.json"]
    assert {p.name for p in paths} == {"cdc.json", "snapshot.json"}
    cdc = json.loads((results / "cdc.json").read_text())
    assert cdc["commit"] == "bbbbbbbb22" and list(cdc["results"]) == ["cdc"]
    assert [r[1] for r in cdc["table"]] == ["drain s", "tps"]
    text = readme.read_text()
    rows = [ln for ln in text.splitlines() if ln.startswith("| 2026")]
    assert [r.split(" | ")[1:3] for r in rows] == [
        ["bbbbbbbb", "snapshot"],
        ["bbbbbbbb", "cdc"],
        ["aaaaaaaa", "snapshot"],
        ["aaaaaaaa", "cdc"],
    ]
    assert "drain s: 2.0 / 0.1; tps: 100 / /110" in rows[1]  # a | in a figure cannot split a cell
    assert text.endswith("\nafter\n")


def test_the_table_keeps_the_newest_rows(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"{history.BEGIN}\n{history.END}\n")
    for i in range(history.KEEP):
        history.save(_doc(f"2026-12-01T10:{i:02d}:00", f"{i:08d}"), readme, tmp_path / "r")
    rows = [ln for ln in readme.read_text().splitlines() if ln.startswith("| 2026")]
    assert len(rows) == history.KEEP
    assert rows[0].split(" | ")[1] == f"{history.KEEP - 1:08d}"


def test_a_benchmark_whose_rows_are_labelled_with_spaces_keeps_its_headlines(
    tmp_path: Path,
) -> None:
    # bench.run labels the sync-alone rows "sync alone" and files them under "sync_alone"
    readme = tmp_path / "README.md"
    readme.write_text(f"{history.BEGIN}\n{history.END}\n")
    doc = {
        "commit": "cccccccc",
        "date": "2026-12-03T10:00:00",
        "results": {"sync_alone": {"records": 5}},
        "table": [["sync alone", "events/s (wall)", "9,416", "3,590"]],
    }
    history.save(doc, readme, tmp_path / "results")
    saved = json.loads((tmp_path / "results" / "sync_alone.json").read_text())
    assert saved["table"] == [["sync alone", "events/s (wall)", "9,416", "3,590"]]
    assert "| sync_alone | events/s (wall): 9,416 / 3,590 |" in readme.read_text()


def test_record_writes_one_figure_and_its_row_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"{history.BEGIN}\n{history.END}\n")
    results = tmp_path / "results"
    monkeypatch.setattr(history, "README", readme)
    monkeypatch.setattr(history, "RESULTS", results)
    monkeypatch.setattr(history.save, "__defaults__", (readme, results))
    args = argparse.Namespace(events=10)
    history.record("sync_cpu", args, {"us": 1.5}, "us/event: path / decode", "1.5", "1.0", False)
    assert not results.exists()
    monkeypatch.setattr(history, "REPO", tmp_path)
    history.record("sync_cpu", args, {"us": 1.5}, "us/event: path / decode", "1.5", "1.0", True)
    doc = json.loads((results / "sync_cpu.json").read_text())
    assert doc["results"] == {"sync_cpu": {"us": 1.5}} and doc["args"] == {"events": 10}
    assert doc["table"] == [["sync_cpu", "us/event: path / decode", "1.5", "1.0"]]
    assert "| sync_cpu | us/event: path / decode: 1.5 / 1.0 |" in readme.read_text()


def test_the_commit_is_the_tree_whose_crossfade_runs(tmp_path: Path, monkeypatch) -> None:
    """A baseline run with PYTHONPATH=<old tree>/services records the old tree's commit, and
    the benchmark code's own commit apart (it used to record the bench's tree for both)."""
    import subprocess

    old = tmp_path / "old"
    subprocess.run(["git", "init", "-q", str(old)], check=True)
    (old / "services" / "crossfade").mkdir(parents=True)
    (old / "services" / "crossfade" / "db.py").write_text("")
    git = ["git", "-C", str(old), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "old"], check=True)
    old_head = subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    monkeypatch.setattr(history, "services_tree", lambda: old)
    doc = history.provenance()
    assert doc["commit"] == old_head
    assert doc["bench_commit"] not in ("", old_head)
    monkeypatch.setattr(history, "services_tree", lambda: history.REPO)
    own = history.provenance()
    assert own["commit"] == doc["bench_commit"] and "bench_commit" not in own


def test_services_tree_follows_the_imported_crossfade() -> None:
    import crossfade

    assert history.services_tree() == Path(list(crossfade.__path__)[0]).resolve().parents[1]
