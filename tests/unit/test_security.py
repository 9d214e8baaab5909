"""Security basics that need no running stack: TLS/SASL settings reach every Kafka client,
PostgreSQL TLS settings reach Debezium, secrets never print.

The live checks (a TLS PostgreSQL connection, secrets absent from logs, ``--json`` output and the
console) are in ``tests/integration/test_security.py``.
"""

from __future__ import annotations

import ast
import json
import logging
from pathlib import Path

import confluent_kafka
import pytest

from crossfade.capture.connector import connector_properties, kafka_connect_config
from crossfade.config import Settings
from tests.tls import make_tls

SERVICES = Path(__file__).resolve().parents[2] / "services" / "crossfade"
SASL_PASSWORD = "sasl-pw-7f3a9c"
DB_PASSWORD = "db-pw-51e0b2"


def _settings(tmp_path: Path, **kafka: object) -> Settings:
    tls = make_tls(tmp_path / "tls")
    dsn = (
        f"postgresql://crossfade:{DB_PASSWORD}@legacy-db:5432/crm?sslmode=verify-full"
        f"&sslrootcert={tls.ca}&sslcert={tls.cert}&sslkey={tls.key}"
    )
    return Settings(
        source={"dsn": dsn},
        target={"dsn": f"postgresql://crossfade:{DB_PASSWORD}@new-db/crm?sslmode=require"},
        kafka={
            "bootstrap_servers": "kafka-0:9093",
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "crossfade",
            "sasl_password": SASL_PASSWORD,
            "ssl_ca_location": str(tls.ca),
            "extra": {"ssl.endpoint.identification.algorithm": "https"},
            **kafka,
        },
        tables=["public.accounts"],
    )


def test_kafka_tls_and_sasl_settings_reach_the_client_config(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    conf = s.kafka.client_config()
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["sasl.username"] == "crossfade"
    assert conf["sasl.password"] == SASL_PASSWORD
    assert conf["ssl.ca.location"] == s.kafka.ssl_ca_location
    assert conf["ssl.endpoint.identification.algorithm"] == "https"
    # librdkafka itself accepts them (a misspelt key or an unreadable CA file fails here)
    for client in (
        confluent_kafka.Producer,
        lambda c: confluent_kafka.Consumer({**c, "group.id": "g"}),
    ):
        client(conf)


def _kafka_client_calls(tree: ast.AST) -> list[ast.Call]:
    names = {"Consumer", "Producer", "AdminClient"}
    return [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        and (getattr(n.func, "id", None) in names or getattr(n.func, "attr", None) in names)
    ]


def test_every_kafka_client_is_built_from_the_shared_security_config() -> None:
    """A client built from its own dict would silently connect without TLS/SASL."""
    offenders = []
    seen = 0
    for path in sorted(SERVICES.rglob("*.py")):
        if path.name == "broker.py" and path.parent.name == "embedded":
            continue  # the embedded (local, plaintext) broker's own readiness probe
        for call in _kafka_client_calls(ast.parse(path.read_text())):
            if not call.args:
                continue
            seen += 1
            src = ast.unparse(call.args[0])
            if not any(x in src for x in ("client_config()", "client_conf", "self._conf")):
                offenders.append(f"{path.relative_to(SERVICES)}:{call.lineno}: {src[:80]}")
    assert seen >= 8, "the scan found too few Kafka clients: did the code move?"
    assert not offenders, "Kafka clients that bypass kafka.client_config():\n" + "\n".join(
        offenders
    )


def test_postgres_tls_settings_reach_debezium(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    props = connector_properties(s)
    assert props["database.sslmode"] == "verify-full"
    assert props["database.sslrootcert"].endswith("ca.pem")
    assert props["database.sslcert"].endswith("server.pem")
    assert props["database.sslkey"].endswith("server.key")
    # psycopg gets the DSN itself: libpq reads sslmode/sslrootcert from it unchanged
    assert "sslrootcert=" in s.source.conninfo and "sslmode=verify-full" in s.source.conninfo


def test_secrets_never_print(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from crossfade.config import public_view
    from crossfade.ops.logs import RedactingFilter

    s = _settings(tmp_path)
    rendered = [
        repr(s),
        str(s),
        json.dumps(public_view(s), default=str),
        json.dumps(kafka_connect_config(s)),
    ]
    for text in rendered:
        assert DB_PASSWORD not in text and SASL_PASSWORD not in text, text[:300]
    # a log line that quotes a DSN or a librdkafka config is redacted on the way out
    logger = logging.getLogger("crossfade.test.security")
    handler = logging.StreamHandler(stream := __import__("io").StringIO())
    handler.addFilter(RedactingFilter())
    logger.addHandler(handler)
    try:
        logger.warning("cannot connect with %s", s.source.conninfo)
        logger.warning("client config %s", s.kafka.client_config())
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert DB_PASSWORD not in out, out
    assert SASL_PASSWORD not in out, out
