"""Output that reads anywhere: tables that never cut a name, plain aligned text when piped, one
LSN format, global options on either side of the command."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from crossfade.events.model import format_lsn, parse_lsn
from crossfade.ops.status import forecast_line, print_status
from crossfade.textout import Grid, console

LONG = "public.customer_contact_preferences_history"
TARGET = "app.customer_contact_preference_events"


def _status() -> dict[str, Any]:
    return {
        "epoch": "4f1c0e",
        "sync": {
            "running": True,
            "workers": 2,
            "partitions_held": 8,
            "lag_records": 0,
            "last_heartbeat_age_s": 1.0,
            "problems": [],
        },
        "tables": [
            {
                "table": LONG,
                "mapped": True,
                "source_rows": 120_000,
                "target_rows": None,
                "accounted": 120_000,
                "events_applied": 131_072,
                "events_skipped": 3,
                "dead_lettered": 4,
                "deferred": 0,
                "filtered": 12,
                "last_lsn": 0x16B374D848,
                "last_source_ts": "2026-11-23T10:00:00+00:00",
            },
        ],
        "targets": [{"table": TARGET, "expected_rows": 119_984, "target_rows": 119_984}],
        "end_to_end": {"fence": "a1b2c3d4", "partitions": 8, "lag_s": 0.4, "age_s": 12.0},
        "gates": [
            {
                "gate": "sync_alive",
                "state": "ok",
                "age_s": 1.0,
                "detail": "capture streams; 2 sync worker(s) hold all 8 partition(s)",
            }
        ],
        "partitions": [
            {
                "topic": "crossfade." + LONG,
                "partition": 7,
                "stored_offset": 1024,
                "kafka_committed_offset": 1024,
                "log_end_offset_reported": 1024,
                "lag_hint": 0,
            }
        ],
    }


def _terminal(width: int) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=width, force_terminal=True, color_system=None), buf


def test_piped_status_is_plain_aligned_text_with_every_name_whole() -> None:
    buf = io.StringIO()
    con = console(force_plain=True)
    con.file = buf
    print_status(_status(), con)
    out = buf.getvalue()
    assert LONG in out and TARGET in out and "crossfade." + LONG in out
    assert "…" not in out and "\x1b" not in out
    assert not set(out) & set("┏┃━│└┡╇"), "no box drawing when piped"
    assert "16/B374D848" in out  # PostgreSQL's LSN format, not 97500600392
    lines = out.splitlines()
    title = lines.index("crossfade status (broker epoch 4f1c0e)")
    header, rule, row = lines[title + 1 : title + 4]
    assert all(line == line.rstrip() for line in lines)
    assert set(rule) == {"-"} and row.startswith(LONG)
    # aligned: every column starts where its header starts
    for name in ("source rows", "applied", "last LSN"):
        assert header.index(name) + len(name) <= len(row)


@pytest.mark.parametrize("width", [80, 120, 200])
def test_terminal_tables_never_cut_a_name(width: int) -> None:
    con, buf = _terminal(width)
    print_status(_status(), con)
    out = buf.getvalue()
    assert "…" not in out
    assert max(len(line) for line in out.splitlines()) <= width
    # a name may wrap on a narrow terminal, but every character of it is there, in order
    flat = re.sub(r"[\s┃│━─┏┓┗┛┡┩╇┳┻┣┫╋┼┬┴┌┐└┘├┤]", "", out)
    for name in (LONG, TARGET, "16/B374D848"):
        assert name in flat, (name, out)


def test_short_values_are_never_folded_when_they_fit() -> None:
    con, buf = _terminal(160)
    g = Grid(["table", ("rows", "right"), ("last LSN", "right")])
    g.add_row(LONG + "_and_then_some_more_words_to_make_it_long", "120000", "16/B374D848")
    g.print(con)
    assert "16/B374D848" in buf.getvalue() and "120000" in buf.getvalue()


def test_lsn_format_round_trips_like_postgresql() -> None:
    assert format_lsn(0) == "0/0"
    assert format_lsn(27443384) == "0/1A2C0B8"
    assert format_lsn((0x16 << 32) | 0xB374D848) == "16/B374D848"
    assert parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert parse_lsn(format_lsn(2**40 + 12345)) == 2**40 + 12345
    assert format_lsn(None) == "-" and parse_lsn(None) is None
    with pytest.raises(ValueError):
        parse_lsn("27443384")


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crossfade.ops.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_global_options_before_or_after_the_command(tmp_path: Path) -> None:
    import os

    cfg = tmp_path / "crossfade.yaml"
    cfg.write_text(
        "source: {dsn: 'postgresql://u:pw@127.0.0.1:1/legacy'}\n"
        "target: {dsn: 'postgresql://u:pw@127.0.0.1:1/new'}\n"
        "kafka: {bootstrap_servers: '127.0.0.1:1'}\ntables: [public.a]\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CROSSFADE_CONFIG"}
    before = _cli("-c", str(cfg), "config", "show", env=env)
    after = _cli("config", "show", "-c", str(cfg), env=env)
    assert before.returncode == after.returncode == 0, before.stderr + after.stderr
    assert json.loads(before.stdout) == json.loads(after.stdout)
    # -v after the command: the stack trace of a failure, as before it
    for args in (
        ["-v", "status", "-c", str(cfg)],
        ["status", "-c", str(cfg), "-v"],
        ["-c", str(cfg), "status", "--verbose"],
    ):
        r = _cli(*args, env=env)
        assert r.returncode == 3, (args, r.stderr)
        assert "Traceback" in r.stderr, args
        assert r.stderr.strip().splitlines()[-1].startswith("crossfade: error: cannot connect")
    r = _cli("status", "-c", str(cfg), env=env)
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = _cli("status", "-c", str(cfg), "--log-format", "json", env=env)
    assert r.returncode == 3


def test_demo_console_prints_its_url_and_serves_the_page() -> None:
    """`crossfade demo --console`: the read-only console on loopback, its URL printed."""
    import urllib.request

    from crossfade.config import Settings
    from crossfade.ops.demo import serve_console

    settings = Settings(
        source={"dsn": "postgresql://u:pw@127.0.0.1:1/legacy"},
        target={"dsn": "postgresql://u:pw@127.0.0.1:1/target"},
        kafka={"bootstrap_servers": "127.0.0.1:1"},
        tables=["public.accounts"],
    )
    buf = io.StringIO()
    con = console(force_plain=True)
    con.file = buf
    assert serve_console(con, settings, None) is None  # without --console: nothing served
    page = serve_console(con, settings, 0)
    assert page is not None
    try:
        (url,) = re.findall(r"http://127\.0\.0\.1:\d+/", buf.getvalue())
        assert url == f"http://127.0.0.1:{page.port}/"
        with urllib.request.urlopen(url, timeout=10) as r:
            assert b"crossfade console" in r.read()
        assert page.state.allow_actions is False
    finally:
        page.stop()


def test_status_names_the_write_downtime_forecast_and_where_it_comes_from() -> None:
    dry = {
        "source": "dry_run",
        "seconds": 5.8,
        "steps": [["freeze", 0.12], ["fence", 1.35], ["verify", 2.27]],
        "excludes": ["flip command"],
        "age_s": 42.0,
    }
    assert forecast_line(dry) == (
        "write downtime forecast: 5.8 s (cutover --dry-run 42 s ago: freeze 0.12 s, "
        "fence 1.35 s, verify 2.27 s; not in it: flip command)"
    )
    measured = {"source": "measured", "seconds": 3.5, "fence_s": 1.2, "verify_s": 2.3}
    assert forecast_line(measured).startswith(
        "write downtime forecast: about 3.5 s (the latest fence 1.2 s + the latest verify 2.3 s"
    )
    for none in (None, {"source": "measured", "seconds": None}):
        assert "none yet (run crossfade cutover --dry-run" in forecast_line(none)
