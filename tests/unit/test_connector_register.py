"""``crossfade connector register`` against a tiny Kafka Connect REST stand-in (http.server)."""

from __future__ import annotations

import base64
import json
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from crossfade.capture.connector import kafka_connect_config
from crossfade.config import load_settings
from crossfade.ops.cli import main


@dataclass
class FakeConnect:
    """Kafka Connect's ``PUT /connectors/<name>/config``: 201 when new, 200 when updated.

    ``script`` holds answers to give first (status, body), e.g. a 409 while "rebalancing".
    """

    url: str = ""
    connectors: dict[str, dict[str, str]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    script: list[tuple[int, dict[str, Any]]] = field(default_factory=list)


@pytest.fixture
def connect() -> Iterator[FakeConnect]:
    state = FakeConnect()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.requests.append(
                {
                    "path": self.path,
                    "content_type": self.headers.get("Content-Type"),
                    "authorization": self.headers.get("Authorization"),
                    "body": body,
                }
            )
            if state.script:
                self._answer(*state.script.pop(0))
                return
            parts = self.path.strip("/").split("/")
            if len(parts) != 3 or parts[0] != "connectors" or parts[2] != "config":
                self._answer(404, {"error_code": 404, "message": "HTTP 404 Not Found"})
                return
            name = urllib.parse.unquote(parts[1])
            created = name not in state.connectors
            state.connectors[name] = body
            self._answer(201 if created else 200, {"name": name, "config": body, "tasks": []})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    p = tmp_path / "crossfade.yaml"
    p.write_text(
        yaml.safe_dump(
            {
                "source": {"dsn": "postgresql://debezium:s3cret@legacy-db:5432/crm"},
                "target": {"dsn": "postgresql://crossfade:other@new-db:5432/crm"},
                "kafka": {
                    "bootstrap_servers": "kafka:9092",
                    "topic_prefix": "crm",
                    "schema_registry_url": "http://schema-registry:8081",
                },
                "tables": ["public.accounts", "public.contacts"],
            }
        )
    )
    return p


def run(*args: str) -> int:
    try:
        main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_register_creates_then_updates(
    connect: FakeConnect, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = kafka_connect_config(load_settings(config_file))
    args = [
        "connector",
        "register",
        "-c",
        str(config_file),
        "--connect-url",
        connect.url,
        "--no-prepare",
    ]
    assert run(*args) == 0
    assert "connector crossfade-crm created" in capsys.readouterr().out
    assert run(*args) == 0  # idempotent: the same PUT again updates in place
    assert "connector crossfade-crm updated" in capsys.readouterr().out

    assert [r["path"] for r in connect.requests] == ["/connectors/crossfade-crm/config"] * 2
    assert connect.requests[0]["content_type"] == "application/json"
    # exactly what `connector render` prints, config part only, and no password in it
    assert connect.connectors == {"crossfade-crm": expected["config"]}
    assert connect.requests[0]["body"]["database.password"] == "${env:CROSSFADE_SOURCE_PASSWORD}"
    assert "s3cret" not in json.dumps(connect.requests)


def test_register_from_connector_file(connect: FakeConnect, tmp_path: Path) -> None:
    f = tmp_path / "c.json"
    f.write_text(
        json.dumps({"name": "my connector", "config": {"connector.class": "X", "tasks.max": "1"}})
    )
    assert run("connector", "register", "--file", str(f), "--connect-url", connect.url + "/") == 0
    assert connect.requests[0]["path"] == "/connectors/my%20connector/config"
    assert connect.connectors == {"my connector": {"connector.class": "X", "tasks.max": "1"}}


def test_register_retries_while_connect_rebalances(connect: FakeConnect, config_file: Path) -> None:
    connect.script = [
        (
            409,
            {
                "error_code": 409,
                "message": "Cannot complete request momentarily due to stale configuration",
            },
        ),
        (503, {"error_code": 503, "message": "starting"}),
    ]
    assert (
        run(
            "connector",
            "register",
            "-c",
            str(config_file),
            "--connect-url",
            connect.url,
            "--no-prepare",
            "--timeout",
            "30",
        )
        == 0
    )
    assert len(connect.requests) == 3
    assert "crossfade-crm" in connect.connectors


def test_register_reports_a_rejected_config(
    connect: FakeConnect, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    connect.script = [
        (400, {"error_code": 400, "message": "Connector configuration is invalid: slot.name bad"})
    ]
    assert (
        run(
            "connector",
            "register",
            "-c",
            str(config_file),
            "--connect-url",
            connect.url,
            "--no-prepare",
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "HTTP 400" in err and "slot.name bad" in err
    assert len(connect.requests) == 1  # a 4xx is final: no retry


def test_register_basic_auth_from_url(
    connect: FakeConnect, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = connect.url.replace("http://", "http://admin:p%40ss@")
    assert (
        run("connector", "register", "-c", str(config_file), "--connect-url", url, "--no-prepare")
        == 0
    )
    assert (
        connect.requests[0]["authorization"] == "Basic " + base64.b64encode(b"admin:p@ss").decode()
    )
    assert "p@ss" not in capsys.readouterr().out


def test_register_gives_up_when_connect_is_unreachable(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    code = run(
        "connector",
        "register",
        "-c",
        str(config_file),
        "--connect-url",
        f"http://127.0.0.1:{port}",
        "--no-prepare",
        "--timeout",
        "0.3",
    )
    assert code == 1
    assert "not reachable" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--connect-url", "http://x:8083"], "nothing to register"),
        (["--connect-url", "ftp://x", "--no-prepare", "-c", "{config}"], "not an http(s) URL"),
        (["--connect-url", "http://x:8083", "--prepare", "--file", "{file}"], "--prepare needs"),
        (
            ["--connect-url", "http://x:8083", "--file", "{bad}"],
            "not a Kafka Connect connector JSON",
        ),
    ],
)
def test_register_usage_errors(
    args: list[str],
    message: str,
    config_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CROSSFADE_CONFIG", raising=False)
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"name": "n", "config": {}}))
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    args = [a.format(config=config_file, file=good, bad=bad) for a in args]
    assert run("connector", "register", *args) != 0
    assert message in capsys.readouterr().err


def test_render_snapshots_with_debezium_under_the_copy_load(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The COPY initial load is crossfade's own capture's: Kafka Connect runs Debezium alone, so
    the rendered connector must snapshot the existing rows itself (``capture.snapshot_mode``),
    never the embedded engine's ``no_data``."""
    raw = yaml.safe_load(config_file.read_text())
    raw.setdefault("capture", {})["initial_load"] = "copy"
    config_file.write_text(yaml.safe_dump(raw))
    settings = load_settings(config_file)
    assert settings.capture.initial_load == "copy"
    assert kafka_connect_config(settings)["config"]["snapshot.mode"] == "initial"
    assert main(["connector", "render", "-c", str(config_file)]) in (0, None)
    assert json.loads(capsys.readouterr().out)["config"]["snapshot.mode"] == "initial"
