"""The Debezium connector properties: one source for both runtimes (DESIGN decision 6).

:func:`connector_properties` is what crossfade runs embedded (pydbzengine) *and* what
``crossfade connector render`` writes for Kafka Connect (``connectors/``): the embedded runtime only
adds where offsets are kept and the JSON converter it reads in-process (payloads without schemas).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from psycopg.conninfo import conninfo_to_dict

from crossfade.config import Settings, is_secret_key

FENCE_TABLE = "crossfade.fence"
"""Marker table in the legacy database behind ``fence`` (DESIGN decision 4)."""
SIGNAL_TABLE = "crossfade.debezium_signal"
"""Debezium's ``signal.data.collection`` (``verify --repair`` asks for incremental snapshots)."""


def source_connection(settings: Settings) -> dict[str, str]:
    """Host, port, user, password, database and TLS settings of the legacy database, from its DSN."""
    d = conninfo_to_dict(settings.source.conninfo)
    return {
        "database.hostname": str(d.get("host") or "localhost"),
        "database.port": str(d.get("port") or 5432),
        "database.user": str(d.get("user") or "postgres"),
        "database.password": str(d.get("password") or ""),
        "database.dbname": str(d.get("dbname") or d.get("user") or "postgres"),
        # TLS as the DSN asks for it: Debezium's pgjdbc takes libpq's names and modes
        **{
            f"database.{k}": str(d[k])
            for k in ("sslmode", "sslrootcert", "sslcert", "sslkey")
            if d.get(k)
        },
    }


def captured_tables(settings: Settings) -> list[str]:
    tables = list(settings.tables)
    if settings.capture.fence_table:
        tables.append(FENCE_TABLE)
    if settings.capture.signal_table:
        # Debezium streams its own signal rows (and the incremental snapshot's watermarks) from
        # the publication: capture drops them instead of producing them
        tables.append(SIGNAL_TABLE)
    return tables


def connector_properties(settings: Settings) -> dict[str, str]:
    """The Debezium PostgreSQL connector properties crossfade runs with.

    Choices that carry correctness:

    * ``skipped.operations=none``: Debezium skips TRUNCATE by default; crossfade propagates it.
    * ``decimal.handling.mode=string``: exact for every numeric, NaN and ±Infinity included
      (``precise`` cannot carry NaN, ``double`` is not exact).
    * ``interval.handling.mode=string``: ISO 8601, which PostgreSQL reads back exactly (the numeric
      mode flattens months into microseconds).
    * ``publication.autocreate.mode=filtered``: the publication holds only the configured tables.
    * ``tombstones.on.delete=true``: the Kafka convention for compacted topics; sync ignores them.
    * ``signal.data.collection``: the signal table (``capture.signal_table``), through which
      ``verify --repair`` requests incremental snapshots of single keys.
    """
    cap = settings.capture
    props: dict[str, str] = {
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "topic.prefix": settings.kafka.topic_prefix,
        "plugin.name": "pgoutput",
        "slot.name": cap.slot_name,
        "publication.name": cap.publication_name,
        "publication.autocreate.mode": "filtered",
        "table.include.list": ",".join(captured_tables(settings)),
        "snapshot.mode": cap.snapshot_mode,
        "decimal.handling.mode": "string",
        "interval.handling.mode": "string",
        "time.precision.mode": "adaptive_time_microseconds",
        "binary.handling.mode": "bytes",
        "hstore.handling.mode": "json",
        "skipped.operations": "none",
        "tombstones.on.delete": "true",
        "heartbeat.interval.ms": str(cap.heartbeat_interval_ms),
        "include.unknown.datatypes": "false",
        "unavailable.value.placeholder": "__debezium_unavailable_value",
        "max.batch.size": "4096",
        # two batches: the handler always finds the next one ready, and what waits in the queue
        # is live data every young collection of the JVM copies; at full rate (capture behind
        # the source, the queue full) 16384 records were copied (and promoted) every second
        # (docs/benchmarks.md, "capture's collector at full rate")
        "max.queue.size": "8192",
        # how long the task sleeps between looks at its queue when it found nothing: the default
        # 500 ms was up to half a second of every change's latency at a low rate; at 50 ms commit
        # -> produced measured p50 58 ms at 100 changes/s, at 10 ms 13 ms. A look is not free:
        # Debezium's queue spins through the last millisecond of each poll (~0.5 ms of CPU, ~6% of
        # a core idle); 25 ms saved ~3 µs/event for +22 ms p50 (docs/benchmarks.md): kept at 10
        "poll.interval.ms": "10",
    }
    if cap.signal_table:
        props["signal.data.collection"] = SIGNAL_TABLE
    props.update(source_connection(settings))
    props.update(cap.properties)
    return props


def embedded_properties(settings: Settings, offsets_file: Path) -> dict[str, str]:
    """:func:`connector_properties` plus what only the embedded engine needs."""
    props = connector_properties(settings)
    props.update(
        {
            "name": f"crossfade-{settings.kafka.topic_prefix}",
            "offset.storage": "org.apache.kafka.connect.storage.FileOffsetBackingStore",
            "offset.storage.file.filename": str(offsets_file),
            # Offsets are flushed only for records our handler returned from, i.e. after the
            # broker acknowledged them; a short interval bounds the replay after a crash.
            "offset.flush.interval.ms": "1000",
        }
    )
    props.update(settings.capture.properties)
    # the JSON carries the payload alone; capture reads each record's schema from its
    # SourceRecord (crossfade.capture.batch): not a setting, capture's reading depends on it
    props.update(
        {
            "converter.schemas.enable": "false",
            "key.converter.schemas.enable": "false",
            "value.converter.schemas.enable": "false",
        }
    )
    return props


def env_reference(key: str) -> str:
    """The environment variable Kafka Connect's ``env`` config provider resolves a secret
    connector property from: ``database.sslpassword`` -> ``CROSSFADE_CONNECT_DATABASE_SSLPASSWORD``."""
    return "CROSSFADE_CONNECT_" + re.sub(r"[^A-Za-z0-9]+", "_", key).strip("_").upper()


REGISTRY_USER_INFO_ENV = "CROSSFADE_SCHEMA_REGISTRY_USER_INFO"
"""Where the Connect worker finds the Schema Registry's ``user:password`` (``basic.auth.user.info``)."""


def kafka_connect_config(settings: Settings, *, secrets_from_env: bool = True) -> dict[str, Any]:
    """The connector as Kafka Connect's REST API takes it (``POST /connectors``).

    With ``secrets_from_env`` the rendered file holds no secret: the password is the Connect
    config-provider reference ``${env:CROSSFADE_SOURCE_PASSWORD}``, every other secret-named
    property (``capture.properties``) ``${env:CROSSFADE_CONNECT_<KEY>}`` (:func:`env_reference`),
    and the Schema Registry URL's user info becomes the converters' basic auth from
    ``${env:CROSSFADE_SCHEMA_REGISTRY_USER_INFO}``. The worker needs ``config.providers=env`` and
    those variables.
    """
    props = connector_properties(settings)
    registry = settings.kafka.schema_registry_url or "http://schema-registry:8081"
    parts = urlsplit(registry)
    user_info = unquote(parts.netloc.rpartition("@")[0]) if "@" in parts.netloc else None
    if user_info is not None:
        registry = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    if secrets_from_env:
        props["database.password"] = "${env:CROSSFADE_SOURCE_PASSWORD}"
        for k in [k for k in props if is_secret_key(k) and k != "database.password"]:
            props[k] = "${env:" + env_reference(k) + "}"
        if user_info is not None:
            user_info = "${env:" + REGISTRY_USER_INFO_ENV + "}"
    props.update(
        {
            "key.converter": "io.confluent.connect.avro.AvroConverter",
            "key.converter.schema.registry.url": registry,
            "value.converter": "io.confluent.connect.avro.AvroConverter",
            "value.converter.schema.registry.url": registry,
            "tasks.max": "1",
        }
    )
    if user_info is not None:
        for side in ("key", "value"):
            props[f"{side}.converter.basic.auth.credentials.source"] = "USER_INFO"
            props[f"{side}.converter.basic.auth.user.info"] = user_info
    return {"name": f"crossfade-{settings.kafka.topic_prefix}", "config": props}
