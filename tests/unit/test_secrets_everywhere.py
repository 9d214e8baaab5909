"""No secret in any output (issue 18, finding 2), each of the review's reproductions.

Secrets: DSN passwords (in any form libpq reads, quoted with spaces too), the SASL password,
``cutover.flip_http``, URL user info (the Schema Registry's), and every ``kafka.extra`` /
``capture.properties`` value whose key names a password, secret, token or credential. Outputs:
``config show``, ``connector render``, validation errors, log lines and traces (text and JSON),
``--verbose``. The live outputs (status, verify, the console, the audit report) are in
``tests/integration/test_security.py``.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from crossfade.config import load_settings, redact_dsn, secrets
from crossfade.errors import ConfigError
from crossfade.ops.logs import JsonFormatter, RedactingFilter, RedactingFormatter
from crossfade.redact import redact

SECRETS = {
    "dsn": "my secret pw",  # quoted, with spaces: the old regex showed "*** secret pw'"
    "target": "tgt-Pw-7d1e",
    "registry": "reg-Pw-33a0",
    "ssl_key": "key-Pw-91b2",
    "oauth": "oauth-Sec-5c7f",
    "props": "dbz-Pw-0e4d",
    "flip": "flip-Tok-8a6b",
    "sasl": "sasl-Pw-2f9c",
}


def _raw(tmp_path: Path) -> dict:
    return {
        "source": {"dsn": f"host=legacy dbname=crm user=crossfade password='{SECRETS['dsn']}'"},
        "target": {"dsn": f"postgresql://crossfade:{SECRETS['target']}@new-db:5432/crm"},
        "kafka": {
            "bootstrap_servers": "kafka:9092",
            "schema_registry_url": f"https://sr-user:{SECRETS['registry']}@registry:8081",
            "sasl_password": SECRETS["sasl"],
            "extra": {
                "ssl.key.password": SECRETS["ssl_key"],
                "sasl.oauthbearer.client.secret": SECRETS["oauth"],
                "ssl.endpoint.identification.algorithm": "https",
            },
        },
        "tables": ["public.accounts"],
        "capture": {"properties": {"database.sslpassword": SECRETS["props"]}},
        "cutover": {"flip_http": f"https://router/flip?token={SECRETS['flip']}"},
    }


def _write(tmp_path: Path, raw: dict) -> Path:
    p = tmp_path / "crossfade.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "crossfade.ops.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def _assert_clean(what: str, text: str) -> None:
    # whole, and the tail the old regex let through (password=*** secret pw')
    for name, secret in {**SECRETS, "dsn tail": "secret pw"}.items():
        assert secret not in text, f"{what} shows the {name} secret ({secret!r}):\n{text[:2000]}"


def test_config_show_and_connector_render_show_no_secret(tmp_path: Path) -> None:
    cfg = _write(tmp_path, _raw(tmp_path))
    show = _cli("config", "show", "-c", str(cfg))
    assert show.returncode == 0, show.stderr
    _assert_clean("config show", show.stdout + show.stderr)
    view = json.loads(show.stdout)
    assert view["kafka"]["extra"]["ssl.endpoint.identification.algorithm"] == "https"
    assert view["kafka"]["schema_registry_url"] == "https://***@registry:8081"
    assert view["source"]["dsn"].count("***") == 1 and "host=legacy" in view["source"]["dsn"]
    render = _cli("connector", "render", "-c", str(cfg))
    assert render.returncode == 0, render.stderr
    _assert_clean("connector render", render.stdout + render.stderr)
    conf = json.loads(render.stdout)["config"]
    assert conf["value.converter.schema.registry.url"] == "https://registry:8081"
    assert conf["value.converter.basic.auth.credentials.source"] == "USER_INFO"
    assert conf["value.converter.basic.auth.user.info"].startswith("${env:")
    assert conf["database.sslpassword"] == "${env:CROSSFADE_CONNECT_DATABASE_SSLPASSWORD}"


def test_the_loaded_values_still_reach_the_clients(tmp_path: Path) -> None:
    """Redaction is for people: librdkafka, libpq and Debezium get the real values."""
    from crossfade.capture.connector import connector_properties

    s = load_settings(_write(tmp_path, _raw(tmp_path)))
    assert s.kafka.client_config()["ssl.key.password"] == SECRETS["ssl_key"]
    assert f"password='{SECRETS['dsn']}'" in s.source.conninfo
    assert connector_properties(s)["database.password"] == SECRETS["dsn"]
    assert connector_properties(s)["database.sslpassword"] == SECRETS["props"]


@pytest.mark.parametrize(
    ("where", "value", "secret"),
    [
        (("kafka", "sasl_password"), 987654321, "987654321"),  # the review's: "(got 987654321)"
        (("kafka", "extra"), {"ssl.key.password": 12345678}, "12345678"),
        (("capture", "properties"), {"database.password": 55554444}, "55554444"),
        (("cutover", "flip_http"), 77771111, "77771111"),
        (("kafka", "schema_registry_url"), 66662222, "66662222"),
    ],
)
def test_validation_errors_never_echo_a_secret(
    tmp_path: Path, where: tuple[str, str], value: object, secret: str
) -> None:
    raw = _raw(tmp_path)
    raw[where[0]][where[1]] = value
    with pytest.raises(ConfigError) as err:
        load_settings(_write(tmp_path, raw))
    assert ".".join(where) in str(err.value)
    assert secret not in str(err.value), str(err.value)


@pytest.mark.parametrize(
    "dsn",
    [
        "host=legacy user=u password=my secret pw",  # a stray space, unquoted
        "host=legacy user=u password='my secret pw",  # unterminated quote
        "postgresql://u:my secret pw@legacy/crm",  # spaces in a URL
        "host=legacy passwrd=mysecretpw",  # a misspelt key: libpq names it, not its value
    ],
)
def test_a_malformed_dsn_fails_at_load_without_its_value(tmp_path: Path, dsn: str) -> None:
    raw = _raw(tmp_path)
    raw["source"]["dsn"] = dsn
    with pytest.raises(ConfigError) as err:
        load_settings(_write(tmp_path, raw))
    msg = str(err.value)
    assert "source.dsn is not a valid libpq connection string" in msg, msg
    assert "\n" not in msg
    for piece in ("secret", "mysecretpw", "pw"):
        assert piece not in msg.replace("password", ""), msg


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        (
            "host=legacy dbname=crm user=u password='my secret pw'",
            "host=legacy dbname=crm user=u password=***",
        ),
        (
            "postgresql://u:p%40ss@h:5432/crm?sslmode=require",
            "postgresql://u:***@h:5432/crm?sslmode=require",
        ),
        (
            "postgresql://u@h/crm?password=qq&sslpassword=kk",
            "postgresql://u@h/crm?password=***&sslpassword=***",
        ),
        ("host=h sslpassword=kk sslmode=verify-full", "host=h sslpassword=*** sslmode=verify-full"),
    ],
)
def test_redact_dsn_works_from_libpqs_parse(dsn: str, shown: str) -> None:
    out = redact_dsn(dsn)
    assert sorted(out.split("?")[-1].split()) == sorted(shown.split("?")[-1].split()), out
    for secret in ("my secret pw", "secret", "p%40ss", "p@ss", "qq", "kk"):
        assert secret not in out


def test_logs_mask_secrets_in_messages_and_traces(tmp_path: Path) -> None:
    load_settings(_write(tmp_path, _raw(tmp_path)))  # remembers the loaded secrets
    for formatter in (RedactingFormatter("%(levelname)s %(message)s"), JsonFormatter()):
        out = io.StringIO()
        handler = logging.StreamHandler(out)
        handler.setFormatter(formatter)
        handler.addFilter(RedactingFilter())
        logger = logging.getLogger(f"crossfade.test.secrets.{type(formatter).__name__}")
        logger.addHandler(handler)
        logger.propagate = False
        try:
            try:
                raise RuntimeError(
                    f"cannot connect with password='{SECRETS['dsn']}' "
                    f"(client config {{'ssl.key.password': '{SECRETS['ssl_key']}'}})"
                )
            except RuntimeError:
                logger.exception("failed: %s", SECRETS["flip"])
            logger.warning("GET /?token=%s HTTP/1.1\x1b[2J\r", "tok-not-configured-1234")
        finally:
            logger.removeHandler(handler)
        text = out.getvalue()
        _assert_clean(f"the log ({type(formatter).__name__})", text)
        assert "tok-not-configured-1234" not in text  # masked by its key, never configured
        assert "\x1b" not in text and "\\x1b[2J" in text  # control characters escaped


def test_redact_by_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    # by shape alone: no secret value remembered by an earlier test's config (one was "secret")
    monkeypatch.setattr(secrets, "_KNOWN", set())
    assert redact("password='a b c' host=x") == "password='***' host=x"
    assert redact("https://tok123456@host/x") == "https://***@host/x"
    assert redact("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
    assert (
        redact("{'sasl.oauthbearer.client.secret': 'zzz'}")
        == "{'sasl.oauthbearer.client.secret': '***'}"
    )
    assert redact("fence token abcd applied") == "fence token abcd applied"


def test_verbose_traces_are_masked(tmp_path: Path) -> None:
    """``--verbose`` prints the trace of an error: masked like every log line."""
    raw = _raw(tmp_path)
    raw["target"]["dsn"] = (
        f"host=127.0.0.1 port=1 user=u password='{SECRETS['target']} x' connect_timeout=2"
    )
    cfg = _write(tmp_path, raw)
    cp = _cli("--verbose", "--log-format", "text", "status", "-c", str(cfg))
    assert cp.returncode != 0
    assert "Traceback" in cp.stderr, cp.stderr[-2000:]
    _assert_clean("status --verbose", cp.stdout + cp.stderr)


def test_a_password_that_is_also_a_visible_name_is_masked_by_key_only(tmp_path: Path) -> None:
    """The compose demo's password is its user name (and the topic prefix): masked wherever the
    word appears, every log line (logger ``crossfade.sync``...) would be mangled."""
    from crossfade.config import known_secrets

    raw = _raw(tmp_path)
    raw["target"]["dsn"] = "postgresql://crossfade:crossfade@new-db:5432/crm"
    load_settings(_write(tmp_path, raw))
    assert "crossfade" not in known_secrets()
    line = redact("crossfade.sync.worker: cannot connect to postgresql://crossfade:crossfade@h/db")
    assert line == "crossfade.sync.worker: cannot connect to postgresql://crossfade:***@h/db"
