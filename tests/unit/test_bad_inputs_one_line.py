"""Bad input ends in one line naming the file or field, never ``unexpected error:`` (issue 18,
finding 5): a non-UTF-8 config or mapping file, ``CROSSFADE_KAFKA='{bad'``, ``console --port
99999``, a DSN with a stray space."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CONFIG = """source: {dsn: "%s"}
target: {dsn: "postgresql://u@127.0.0.1:1/new"}
kafka: {bootstrap_servers: "127.0.0.1:1"}
tables: [public.a]
"""


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crossfade.ops.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def _one_line(cp: subprocess.CompletedProcess[str], code: int, *names: str) -> str:
    assert cp.returncode == code, cp.stdout + cp.stderr
    lines = cp.stderr.strip().splitlines()
    assert len(lines) == 1, cp.stderr
    assert "unexpected error" not in lines[0] and "Traceback" not in cp.stderr
    for n in names:
        assert n in lines[0], lines[0]
    return lines[0]


def test_non_utf8_config_and_mapping_files(tmp_path: Path) -> None:
    cfg = tmp_path / "crossfade.yaml"
    cfg.write_bytes((CONFIG % "postgresql://u@h/db").encode() + b"# caf\xe9 in latin-1\n")
    _one_line(_cli("config", "show", "-c", str(cfg)), 2, str(cfg), "UTF-8")
    (tmp_path / "m.yaml").write_bytes(b"tables: {}\n# \xff\xfe\n")
    cfg.write_text(CONFIG % "postgresql://u@h/db" + "mapping: m.yaml\n")
    _one_line(_cli("config", "show", "-c", str(cfg)), 2, "m.yaml", "UTF-8")


def test_a_section_given_whole_from_the_environment_as_bad_json(tmp_path: Path) -> None:
    cfg = tmp_path / "crossfade.yaml"
    cfg.write_text(CONFIG % "postgresql://u@h/db")
    line = _one_line(
        _cli("config", "show", "-c", str(cfg), env={"CROSSFADE_KAFKA": '{bad "pw-1234abcd"'}),
        2,
        "CROSSFADE_KAFKA",
    )
    assert "pw-1234abcd" not in line  # the value may hold a secret


@pytest.mark.parametrize("port", ["99999", "-1"])
def test_console_port_out_of_range(tmp_path: Path, port: str) -> None:
    cfg = tmp_path / "crossfade.yaml"
    cfg.write_text(CONFIG % "postgresql://u@h/db")
    cp = _cli("console", "-c", str(cfg), "--port", port)
    assert cp.returncode == 2 and "--port" in cp.stderr and "unexpected error" not in cp.stderr


@pytest.mark.parametrize(
    "dsn",
    ["postgresql://u:pw@ho st/db", "host=a dbname=x y", "postgresql://u:pw@host:54 32/db"],
)
def test_a_dsn_with_a_stray_space(tmp_path: Path, dsn: str) -> None:
    cfg = tmp_path / "crossfade.yaml"
    cfg.write_text(CONFIG % dsn)
    _one_line(_cli("status", "-c", str(cfg)), 2, "source.dsn")
