"""``verify --progress`` as plain lines: a line when a table starts, at most one a second while
rows advance, and the last state when it ends (the integration test cannot rely on a table taking
longer than a second to compare)."""

from __future__ import annotations

import pytest

from crossfade.ops import cli_cutover
from crossfade.ops.cli_cutover import LineProgress


def test_line_progress_throttles_to_one_line_a_second(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = [100.0]
    monkeypatch.setattr(cli_cutover.time, "monotonic", lambda: clock[0])
    with LineProgress(every=1.0) as p:
        p.table("public.big", 1000)
        for _ in range(10):  # ten chunks of 100 rows, 0.3 s apart
            clock[0] += 0.3
            p.advance(100)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "verify: public.big 0/1000 rows (0%)"
    assert lines[-1] == "verify: public.big 1000/1000 rows (100%)"
    middle = lines[1:-1]
    # 3 s of chunks: a line at 1.2, 2.4 s (rows 400, 800); nothing in between
    assert middle == [
        "verify: public.big 400/1000 rows (40%)",
        "verify: public.big 800/1000 rows (80%)",
    ]


def test_line_progress_says_nothing_before_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    with LineProgress() as p:
        p.advance(5)  # no table yet: no line, no division by zero
    assert capsys.readouterr().err == ""
