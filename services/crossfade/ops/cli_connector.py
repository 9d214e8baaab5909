"""``crossfade connector``: the Debezium connector as Kafka Connect takes it (render, prepare the
source and Kafka for it, register it). Registered on the ``crossfade`` group by
:mod:`crossfade.ops.cli`."""

from __future__ import annotations

import json
import logging

import click

from crossfade.config import Settings
from crossfade.errors import CrossfadeError
from crossfade.ops.cli_common import config_option
from crossfade.ops.cli_common import load_config as _settings

log = logging.getLogger("crossfade")


@click.group()
def connector() -> None:
    """The Debezium connector as Kafka Connect takes it."""


@connector.command("render")
@config_option
def connector_render(config: str | None) -> None:
    """Print the Kafka Connect connector JSON (the same properties capture runs embedded)."""
    from crossfade.capture.connector import kafka_connect_config

    click.echo(json.dumps(kafka_connect_config(_settings(config)), indent=2))


def _prepare_for_kafka_connect(settings: Settings) -> str:
    """What embedded capture does before Debezium starts, for a connector run by Kafka Connect:
    source preflight (fence table), change topics with ``kafka.partitions``, the schemas and
    dead-letter topics, and the broker epoch sync waits for. Returns the epoch."""
    from crossfade.capture.preflight import check_source
    from crossfade.events.kafka import Admin, ensure_epoch

    check_source(settings)
    k = settings.kafka
    admin = Admin(k.client_config())
    admin.ping()
    admin.ensure_topics(
        [k.table_topic(t) for t in settings.tables], k.partitions, k.replication_factor
    )
    admin.ensure_topics([k.schemas_topic], 1, k.replication_factor, {"cleanup.policy": "compact"})
    admin.ensure_topics([k.dlq_topic], 1, k.replication_factor)
    return ensure_epoch(admin, k.client_config(), k.control_topic, k.replication_factor)[0]


def _put_connector(connect_url: str, name: str, config: dict[str, str], timeout: float) -> int:
    """``PUT /connectors/<name>/config`` (create or update: idempotent); return the HTTP status.

    Retries until ``timeout`` while Kafka Connect is unreachable, answers 5xx, or 409 (it is
    rebalancing); any other answer is final. ``user:password@`` in the URL becomes basic auth.
    """
    import base64
    import contextlib
    import time
    import urllib.error
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(connect_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CrossfadeError(
            f"--connect-url {connect_url!r} is not an http(s) URL", "e.g. http://connect:8083"
        )
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    base = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if parts.username:
        cred = (
            f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        )
        headers["Authorization"] = "Basic " + base64.b64encode(cred.encode()).decode()
    url = f"{base}/connectors/{urllib.parse.quote(name, safe='')}/config"
    body = json.dumps(config).encode()
    deadline = time.monotonic() + timeout
    delay = 0.25
    while True:
        req = urllib.request.Request(url, data=body, method="PUT", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            with contextlib.suppress(ValueError, AttributeError):
                detail = json.loads(detail).get("message", detail)
            problem = f"Kafka Connect at {base} answered HTTP {exc.code} to PUT {url}: {detail.strip()[:500]}"
            if exc.code != 409 and exc.code < 500:
                raise CrossfadeError(
                    problem, "check the connector config (crossfade connector render)"
                ) from None
        except (urllib.error.URLError, OSError) as exc:
            problem = f"Kafka Connect at {base} is not reachable ({getattr(exc, 'reason', exc)})"
        if time.monotonic() >= deadline:
            raise CrossfadeError(
                problem, f"gave up after {timeout:g} s; is Kafka Connect running there?"
            )
        log.info("%s; retrying in %.1f s", problem, delay)
        time.sleep(min(delay, max(0.05, deadline - time.monotonic())))
        delay = min(delay * 2, 5.0)


@connector.command("prepare")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def connector_prepare(config: str | None, as_json: bool) -> None:
    """What embedded capture does before Debezium starts, for a connector Kafka Connect runs
    (registered by you or by Strimzi's KafkaConnector): the fence table, the change topics, the
    schemas and dead-letter topics, the broker epoch. Idempotent."""
    settings = _settings(config)
    epoch = _prepare_for_kafka_connect(settings)
    if as_json:
        click.echo(json.dumps({"prepared": True, "epoch": epoch}))
        return
    click.echo(
        f"prepared source and Kafka for crossfade-{settings.kafka.topic_prefix} (broker epoch {epoch})"
    )


@connector.command("register")
@config_option
@click.option(
    "--connect-url",
    required=True,
    envvar="CROSSFADE_CONNECT_URL",
    help="Kafka Connect REST URL, e.g. http://connect:8083.",
)
@click.option(
    "--file",
    "connector_file",
    type=click.Path(dir_okay=False, exists=True),
    help="Register this connector JSON ({name, config}, as in connectors/) instead of rendering it from -c.",
)
@click.option(
    "--prepare/--no-prepare",
    default=None,
    help="First create the fence table, topics and broker epoch, as embedded capture does (default: when -c is given).",
)
@click.option(
    "--timeout",
    type=float,
    default=120.0,
    show_default=True,
    help="Seconds to keep retrying while Kafka Connect is not reachable.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def connector_register(
    config: str | None,
    connect_url: str,
    connector_file: str | None,
    prepare: bool | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Create or update the Debezium connector on Kafka Connect (idempotent: PUT its config)."""
    from pathlib import Path

    from crossfade.capture.connector import kafka_connect_config
    from crossfade.errors import ConfigError

    settings = _settings(config) if config else None
    if connector_file:
        try:
            doc = json.loads(Path(connector_file).read_text(encoding="utf-8"))
            name, props = doc["name"], doc["config"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"{connector_file} is not a Kafka Connect connector JSON ({exc})",
                'expected {"name": ..., "config": {...}}',
            ) from None
    elif settings is not None:
        doc = kafka_connect_config(settings)
        name, props = doc["name"], doc["config"]
    else:
        raise ConfigError(
            "nothing to register",
            "pass -c FILE (or CROSSFADE_CONFIG) or --file connectors/NAME.json",
        )
    if prepare is None:
        prepare = settings is not None
    epoch: str | None = None
    if prepare:
        if settings is None:
            raise ConfigError(
                "--prepare needs the crossfade config", "pass -c FILE, or --no-prepare"
            )
        epoch = _prepare_for_kafka_connect(settings)
        if not as_json:
            click.echo(f"prepared source and Kafka for {name} (broker epoch {epoch})")
    status = _put_connector(connect_url, name, {str(k): str(v) for k, v in props.items()}, timeout)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "connector": name,
                    "created": status == 201,
                    "http_status": status,
                    "epoch": epoch,
                }
            )
        )
        return
    click.echo(
        f"connector {name} {'created' if status == 201 else 'updated'} on Kafka Connect (HTTP {status})"
    )


COMMANDS = [connector]
