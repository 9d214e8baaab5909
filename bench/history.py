"""Benchmark results kept as the latest run per benchmark plus a short history table.

``bench/results/<benchmark>.json`` holds the newest run of each benchmark (commit, date,
machine, arguments, every figure); ``bench/README.md`` holds, between its history markers, one
row per benchmark run (newest first, at most :data:`KEEP` rows) with the headline figures and
the baseline measured in the same run. No file per run.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
README = REPO / "bench" / "README.md"
BEGIN, END = "<!-- history:begin -->", "<!-- history:end -->"
HEADER = (
    "| date (UTC) | commit | benchmark | crossfade / baseline (headline rows of the run) |\n"
    "|---|---|---|---|"
)
KEEP = 40
HEADLINES = 3


def services_tree() -> Path:
    """The tree whose ``services/crossfade`` the run imports: this repo's, or the one
    ``PYTHONPATH`` names (an old tree run as a baseline by the same benchmark code)."""
    import importlib.util

    spec = importlib.util.find_spec("crossfade")  # a namespace package: no __init__.py
    places = list(spec.submodule_search_locations or []) if spec else []
    return Path(places[0]).resolve().parents[1] if places else REPO


def provenance() -> dict[str, Any]:
    """What every result file starts with: the commit of the crossfade that ran (and whether
    its ``services/`` differs from it), the date, and the machine with its load average at the
    end of the run. When ``PYTHONPATH`` runs another tree's crossfade, ``commit`` is that tree's
    and ``bench_commit`` names the benchmark code's own."""
    tree = services_tree()

    def git(*args: str, cwd: Path = tree) -> str:
        return subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True
        ).stdout.strip()

    try:
        import psutil

        mem_gib: float | None = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        mem_gib = None
    return {
        "commit": git("rev-parse", "HEAD"),
        "services_dirty": bool(git("status", "--porcelain", "services")),
        **({} if tree == REPO else {"bench_commit": git("rev-parse", "HEAD", cwd=REPO)}),
        "date": datetime.now(UTC).isoformat(),
        "machine": {
            "node": platform.node(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "mem_gib": mem_gib,
            "load_avg_at_end": os.getloadavg(),
        },
    }


def _of(row: list[Any], name: str) -> bool:
    """Whether a table row (its first cell: ``sync alone``) is of benchmark ``name``
    (``sync_alone``)."""
    return bool(row) and str(row[0]).replace(" ", "_") == name


def _row(doc: dict[str, Any], name: str) -> str:
    rows = [r for r in doc.get("table", []) if _of(r, name)][:HEADLINES]
    figures = "; ".join(f"{label}: {mine} / {base}" for _, label, mine, base in rows)
    date = str(doc.get("date", ""))[:16].replace("T", " ")
    commit = str(doc.get("commit", ""))[:8] + (" (dirty)" if doc.get("services_dirty") else "")
    return f"| {date} | {commit} | {name} | {figures.replace('|', '/') or '-'} |"


def _table_rows(text: str) -> list[str]:
    m = re.search(re.escape(BEGIN) + r"(.*?)" + re.escape(END), text, re.S)
    if not m:
        return []
    return [ln for ln in m.group(1).strip().splitlines()[2:] if ln.startswith("| ")]


def save(doc: dict[str, Any], readme: Path = README, results: Path = RESULTS) -> list[Path]:
    """Write the latest file of every benchmark ``doc`` ran and put its rows on top of the
    history table (the README must hold the two markers). Returns the files written."""
    results.mkdir(parents=True, exist_ok=True)
    written = []
    new_rows = []
    for name, figures in doc.get("results", {}).items():
        one = {**doc, "results": {name: figures}}
        one["table"] = [r for r in doc.get("table", []) if _of(r, name)]
        path = results / f"{name}.json"
        path.write_text(json.dumps(one, indent=2, default=str) + "\n")
        written.append(path)
        new_rows.append(_row(doc, name))
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{readme} has no history markers {BEGIN} ... {END}")
    rows = (new_rows + _table_rows(text))[:KEEP]
    table = "\n".join([BEGIN, HEADER, *rows, END])
    readme.write_text(
        re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _m: table, text, flags=re.S)
    )
    return written


def record(
    name: str, args: Any, figures: dict[str, Any], label: str, mine: str, base: str, write: bool
) -> None:
    """One single-figure benchmark's result: ``figures`` under ``name`` with the provenance and
    arguments, and its history row (``label``: crossfade's figure ``mine`` against the
    baseline ``base`` of the same run); written (:func:`save`) when ``write``."""
    doc = {
        **provenance(),
        "args": vars(args),
        "results": {name: figures},
        "table": [[name, label, mine, base]],
    }
    if write:
        for path in save(doc):
            print(f"wrote {path.relative_to(REPO)}")
