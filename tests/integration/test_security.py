"""Security basics on the real stack.

* secrets (DSN passwords, the SASL password) never appear in logs, ``--json`` output or the
  console's HTTP responses, through a whole run: capture, sync, fence, status, verify,
  checkpoint, a cutover dry-run, the console;
* the console bound beyond loopback refuses every request without the token (more in
  ``tests/console``);
* PostgreSQL TLS: the legacy database served over TLS with a throwaway CA; the DSN's
  ``sslmode=verify-full`` and ``sslrootcert`` reach psycopg and Debezium (its replication
  connection is encrypted), and a wrong CA is one clear line.

Kafka TLS/SASL pass-through is checked against librdkafka in ``tests/unit/test_security.py``:
Tansu, the embedded broker, speaks neither.
"""

from __future__ import annotations

import json
import os
import pwd
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from crossfade.config import DatabaseConfig
from crossfade.db import connect
from crossfade.embedded import EmbeddedPostgres
from crossfade.errors import PreflightError
from tests.conftest import Proc, Stack
from tests.console.test_console import _console, _req
from tests.tls import make_tls

pytestmark = pytest.mark.integration

DB_PASSWORD = "db-pw-3b9e71c4"
SASL_PASSWORD = "sasl-pw-a61f0d22"
CONSOLE_TOKEN = "console-token-5c8d9e0f1a2b3c4d"


def _with_secrets(stack: Stack) -> None:
    """Put a password in both DSNs (the embedded server trusts, so it is carried, not checked)
    and a SASL password in the Kafka settings (ignored by librdkafka under PLAINTEXT)."""
    raw = yaml.safe_load(stack.config_path.read_text())
    for side in ("source", "target"):
        raw[side]["dsn"] = raw[side]["dsn"].replace("postgres@", f"postgres:{DB_PASSWORD}@")
    raw["kafka"]["sasl_password"] = SASL_PASSWORD
    raw["kafka"]["sasl_username"] = "crossfade"
    stack.config_path.write_text(yaml.safe_dump(raw))


def _assert_clean(what: str, text: str) -> None:
    for secret in (DB_PASSWORD, SASL_PASSWORD, CONSOLE_TOKEN):
        assert secret not in text, (
            f"{what} shows a secret: ...{text[max(0, text.find(secret) - 200) : text.find(secret) + 50]}..."
        )


def test_secrets_never_in_logs_json_or_console(stack: Stack) -> None:
    stack.sql("CREATE TABLE public.s (id int PRIMARY KEY, v text)")
    stack.sql("INSERT INTO s SELECT g, 'v' || g FROM generate_series(1, 200) g")
    stack.write_config(["public.s"])
    _with_secrets(stack)
    assert DB_PASSWORD in stack.settings.source.conninfo  # really in use
    stack.start("capture")
    stack.start("sync")
    stack.fence()
    stack.sql("UPDATE s SET v = 'changed' WHERE id < 50")
    outputs: dict[str, str] = {}
    for args in (
        ["config", "show"],
        ["status", "--json"],
        ["fence", "--json"],
        ["verify", "--json"],
        ["checkpoint", "create", "--name", "sec"],
        ["cutover", "--dry-run", "--json"],
    ):
        cp = stack.cli(*args, timeout=300)
        outputs[" ".join(args)] = cp.stdout + cp.stderr
        assert cp.returncode == 0, f"{args}: {cp.stderr[-1500:]}"
        if "--json" in args or args[0] == "config":
            json.loads(cp.stdout)  # machine-readable, and still clean
    # a failing command's one-line error must not quote the DSN either
    bad = stack.cli(
        "status",
        env={"CROSSFADE_TARGET__DSN": f"postgresql://postgres:{DB_PASSWORD}@127.0.0.1:1/x"},
    )
    assert bad.returncode != 0
    outputs["status (bad target)"] = bad.stdout + bad.stderr
    # the console, exposed beyond loopback: no token, no answer; with it, nothing secret
    env_token = CONSOLE_TOKEN
    p, base = _console(stack, "--host", "0.0.0.0", token=env_token)
    assert _req(base + "/api/state")[0] == 401
    assert _req(base + "/")[0] == 401
    assert _req(base + "/metrics")[0] == 401
    auth = {"Authorization": f"Bearer {CONSOLE_TOKEN}"}
    for path in ("/", "/api/state", "/metrics", "/app.js"):
        code, body = _req(base + path, headers=auth)
        assert code == 200, (path, code)
        outputs[f"console {path}"] = body
    for name, text in outputs.items():
        _assert_clean(name, text)
    for proc in stack.procs:
        _assert_clean(f"the {proc.name} log", proc.log.read_text(errors="replace"))


@pytest.fixture(scope="module")
def tls_pg(work_root: Path) -> Iterator[tuple[EmbeddedPostgres, Path]]:
    pg = EmbeddedPostgres(log_to=work_root / "pg-tls.log").start()
    assert pg.data_dir is not None
    tls = make_tls(pg.data_dir / "tls")
    if pg.run_as_user:  # the server runs unprivileged when we are root: it must own its key
        pw = pwd.getpwnam(pg.run_as_user)
        for f in (tls.ca.parent, tls.ca, tls.cert, tls.key):
            os.chown(f, pw.pw_uid, pw.pw_gid)
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        c.execute(f"ALTER SYSTEM SET ssl_cert_file = '{tls.cert}'")
        c.execute(f"ALTER SYSTEM SET ssl_key_file = '{tls.key}'")
        c.execute("ALTER SYSTEM SET ssl = on")
        c.execute("SELECT pg_reload_conf()")
    ca = work_root / "tls-client-ca.pem"
    ca.write_bytes(tls.ca.read_bytes())
    yield pg, ca
    pg.stop()


def _tls_dsn(pg: EmbeddedPostgres, db: str, ca: Path, mode: str = "verify-full") -> str:
    return f"{pg.dsn(db)}?sslmode={mode}&sslrootcert={ca}"


def test_postgres_tls_settings_reach_psycopg_and_debezium(
    tls_pg: tuple[EmbeddedPostgres, Path], bootstrap: str, work_root: Path, request: Any
) -> None:
    pg, ca = tls_pg
    # psycopg through crossfade's own connect(): verify-full against our CA
    cfg = DatabaseConfig(dsn=_tls_dsn(pg, "postgres", ca))
    with connect(cfg, "source") as c:
        assert c.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (
            True,
        )
    # a CA that did not sign the server's certificate: one clear line naming the database
    other_ca = make_tls(work_root / "other-ca").ca
    with pytest.raises(PreflightError) as err:
        connect(DatabaseConfig(dsn=_tls_dsn(pg, "postgres", other_ca)), "source")
    assert "cannot connect to the source database" in str(err.value) and "SSL" in str(err.value)
    assert "\n" not in str(err.value)

    # the whole pipeline with the legacy database over TLS (Debezium's pgjdbc included)
    stack = Stack(pg, bootstrap, work_root)
    request.addfinalizer(stack.close)
    stack.sql("CREATE TABLE public.t (id int PRIMARY KEY, v text)")
    stack.sql("INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 100) g")
    stack.write_config(["public.t"])
    raw = yaml.safe_load(stack.config_path.read_text())
    raw["source"]["dsn"] = _tls_dsn(pg, stack.legacy_db, ca)
    raw["target"]["dsn"] = _tls_dsn(pg, stack.target_db, ca, "require")
    stack.config_path.write_text(yaml.safe_dump(raw))
    stack.start("capture")
    stack.start("sync")
    stack.fence()
    stack.sql("UPDATE t SET v = 'over tls' WHERE id <= 10")
    stack.fence()
    stack.assert_equal()
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        rows = c.execute(
            "SELECT a.backend_type, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) "
            "WHERE a.datname IN (%s, %s) AND a.pid <> pg_backend_pid()",
            (stack.legacy_db, stack.target_db),
        ).fetchall()
    walsenders = [r for r in rows if r[0] == "walsender"]
    assert walsenders and all(ssl for _, ssl in walsenders), (
        f"Debezium's replication connection is not TLS: {rows}"
    )
    assert all(ssl for _, ssl in rows), f"a crossfade connection without TLS: {rows}"


QUOTED_PW = "quoted pw 4e7a"  # spaces: the old redaction printed "password=*** pw 4e7a'"
PROP_SECRET = "dbz-prop-9f31c2"
FLIP_TOKEN = "flip-token-0b8e55"


def test_secrets_in_every_form_never_show_on_the_live_stack(stack: Stack, tmp_path: Path) -> None:
    """Issue 18 on the real stack: a key=value DSN whose password is quoted with spaces, a secret
    Debezium property and a flip URL token never show in config show, connector render, status,
    verify, audit (JSON and HTML), a failing command with --verbose, the console or the logs."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    stack.sql("CREATE TABLE public.q (id int PRIMARY KEY, v text)")
    stack.sql("INSERT INTO q SELECT g, 'v' || g FROM generate_series(1, 100) g")
    stack.write_config(["public.q"])
    raw = yaml.safe_load(stack.config_path.read_text())
    for side in ("source", "target"):
        raw[side]["dsn"] = make_conninfo(
            **{**conninfo_to_dict(raw[side]["dsn"]), "password": QUOTED_PW}
        )
    props = raw.setdefault("capture", {}).setdefault("properties", {})
    props["database.sslpassword"] = PROP_SECRET
    props["crossfade.test.api.token"] = PROP_SECRET  # a name Debezium's own masking misses
    raw.setdefault("cutover", {})["flip_http"] = f"http://127.0.0.1:1/flip?token={FLIP_TOKEN}"
    stack.config_path.write_text(yaml.safe_dump(raw))
    assert f"password='{QUOTED_PW}'" in stack.settings.source.conninfo
    # Debezium at INFO prints its whole configuration (the JVM's log4j2, not Python's logging)
    env = {**stack._env(), "CROSSFADE_DEBEZIUM_LOG": "INFO"}
    stack.procs.append(Proc("capture", ["capture"], env, stack.dir / "capture.log"))
    stack.start("sync")
    stack.fence()
    html = tmp_path / "audit.html"
    outputs: dict[str, str] = {}
    for args in (
        ["config", "show"],
        ["connector", "render"],
        ["status", "--json"],
        ["verify", "--json"],
        ["audit", "--json", "--html", str(html)],
    ):
        cp = stack.cli(*args, timeout=300)
        assert cp.returncode == 0, f"{args}: {cp.stderr[-1500:]}"
        outputs[" ".join(args)] = cp.stdout + cp.stderr
    outputs["audit html"] = html.read_text()
    assert "password=***" in outputs["config show"] and "password=***" in outputs["audit html"]
    bad_target = make_conninfo(**{**conninfo_to_dict(stack.settings.target.conninfo), "port": "1"})
    bad = stack.cli("--verbose", "status", env={"CROSSFADE_TARGET__DSN": bad_target})
    assert bad.returncode != 0 and "Traceback" in bad.stderr, bad.stderr[-2000:]
    outputs["status --verbose (bad target)"] = bad.stdout + bad.stderr
    p, base = _console(stack, "--host", "0.0.0.0", token=CONSOLE_TOKEN)
    auth = {"Authorization": f"Bearer {CONSOLE_TOKEN}"}
    code, body = _req(base + "/api/state", headers=auth)
    assert code == 200
    outputs["console /api/state"] = body
    _req(f"{base}/?token={CONSOLE_TOKEN}")
    for proc in stack.procs:
        outputs[f"the {proc.name} log"] = proc.log.read_text(errors="replace")
    for name, text in outputs.items():
        for secret in (QUOTED_PW, "pw 4e7a", PROP_SECRET, FLIP_TOKEN, CONSOLE_TOKEN):
            assert secret not in text, f"{name} shows {secret!r}"
