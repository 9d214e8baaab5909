"""The terminal snapshot progress display renders counts per table and never raises."""

from __future__ import annotations

import io

from rich.console import Console

from crossfade.capture.progress import SnapshotProgress


def test_progress_shows_rows_per_table_and_tolerates_unknown_topics() -> None:
    out = io.StringIO()
    p = SnapshotProgress(
        {"public.a": 100, "public.b": 0},
        {"public.a": "cf.public.a", "public.b": "cf.public.b"},
        console=Console(file=out, force_terminal=True, width=100),
    )
    p.update({"cf.public.a": 40, "cf.other": 5})
    p.update({"cf.public.a": 100, "cf.public.b": 3})
    p.finish()
    p.update({"cf.public.a": 101})  # after finish: ignored, no error
    text = out.getvalue()
    assert "snapshot public.a" in text and "100/100" in text and "snapshot public.b" in text
