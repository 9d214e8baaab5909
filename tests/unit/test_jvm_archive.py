"""Capture's JVM class-data archive (crossfade.capture.jvm_archive): named by the JVM and the jars,
offered to capture's JVM only when built, and built from a class list that a JVM under JPype
starts Debezium's engine with (an archived lambda proxy crashed it at its first lambda)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from crossfade.capture import jvm_archive

REPO = Path(__file__).resolve().parents[2]


def test_options_name_the_archive_only_once_it_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jvm_archive, "ARCHIVE_DIR", tmp_path)
    assert jvm_archive.options() == []
    path = jvm_archive.archive_path()
    assert path.parent == tmp_path
    path.write_bytes(b"x")
    assert jvm_archive.options() == [f"-XX:SharedArchiveFile={path}", "-Xlog:cds*=off"]


def test_another_set_of_jars_has_another_archive(monkeypatch: pytest.MonkeyPatch) -> None:
    jars = jvm_archive._jars()
    assert jars and all(j.endswith(".jar") for j in jars)
    before = jvm_archive.archive_path()
    monkeypatch.setattr(jvm_archive, "_jars", lambda: jars[:-1])
    assert jvm_archive.archive_path() != before


def test_the_class_list_has_debeziums_classes_and_no_lambda_proxy() -> None:
    lines = jvm_archive.CLASS_LIST.read_text().splitlines()
    assert "io/debezium/engine/DebeziumEngine" in lines
    assert "io/debezium/connector/postgresql/PostgresConnectorTask" in lines
    assert not [ln for ln in lines if ln.startswith("@lambda-proxy")]


def test_a_jvm_on_the_built_archive_builds_debeziums_engine(tmp_path: Path) -> None:
    """The archive is dumped, the JVM maps it (``-Xshare:on`` refuses to start otherwise) and
    builds Debezium's engine as capture does, in a process of its own: a crash fails it."""
    path = jvm_archive.build(tmp_path / "capture.jsa")
    assert path.is_file() and path.stat().st_size > 1_000_000
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from pathlib import Path
        from tests.conftest import offline_settings
        from crossfade.capture.batch import bulk_engine, start_jvm
        from crossfade.capture.connector import embedded_properties
        s = offline_settings()
        start_jvm(["-Xrs", "-Xshare:on", "-XX:SharedArchiveFile={path}", "-Xlog:cds*=off",
                   *s.capture.jvm_options])
        e = bulk_engine(embedded_properties(s, Path({str(tmp_path / "off.dat")!r})),
                        lambda *a: None, [], "jvm")
        e.consumer, e.engine
        print("engine built", flush=True)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-2000:]
    assert "engine built" in done.stdout
