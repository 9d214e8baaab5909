"""The one configuration model.

Loaded from a YAML file (``-c FILE`` or ``CROSSFADE_CONFIG``); every value can be overridden from
the environment with the ``CROSSFADE_`` prefix and ``__`` between levels, e.g.
``CROSSFADE_TARGET__DSN=postgresql://...`` or ``CROSSFADE_SYNC__BATCH_SIZE=5000``. The Helm chart's
values map onto this tree one to one.

Secrets (DSNs, SASL passwords) are ``SecretStr``: they never print in logs, ``repr`` or ``--json``.
Use :func:`redact_dsn` to show a DSN to a person.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from crossfade.errors import ConfigError
from crossfade.mapping.model import MappingConfig

_TABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*\.[A-Za-z_][A-Za-z0-9_$]*$")


def redact_dsn(dsn: str | SecretStr) -> str:
    """Return the DSN with any password replaced by ``***`` (URL and key=value forms)."""
    raw = dsn.get_secret_value() if isinstance(dsn, SecretStr) else dsn
    raw = re.sub(r"(://[^:/@]+:)([^@]*)(@)", r"\1***\3", raw)
    return re.sub(r"(password\s*=\s*)(\S+)", r"\1***", raw, flags=re.IGNORECASE)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseConfig(_Strict):
    dsn: SecretStr
    """libpq connection string or URL. Kept secret: it may hold a password."""
    connect_timeout_s: int = Field(10, ge=1)
    """Seconds to wait for a connection before the attempt counts as failed."""

    @field_validator("dsn")
    @classmethod
    def _dsn_shape(cls, v: SecretStr) -> SecretStr:
        raw = v.get_secret_value().strip()
        if not raw:
            raise ValueError("is empty; give a URL like postgresql://user:pass@host:5432/db")
        if "://" in raw and not raw.startswith(("postgresql://", "postgres://")):
            raise ValueError("must start with postgresql:// (or be a key=value libpq string)")
        return v

    @property
    def conninfo(self) -> str:
        return self.dsn.get_secret_value()


class KafkaConfig(_Strict):
    bootstrap_servers: str
    """host:port[,host:port...] of the Kafka (or embedded Tansu) brokers."""
    topic_prefix: str = Field("crossfade", pattern=r"^[A-Za-z0-9._-]+$")
    """Debezium's ``topic.prefix``: change topics are ``<prefix>.<schema>.<table>``."""
    partitions: int = Field(4, ge=1, le=1000)
    """Partitions of each change topic crossfade creates (the sync group's parallelism)."""
    replication_factor: int = Field(1, ge=1)
    """Replication factor of the topics crossfade creates (3 on a production cluster)."""
    schema_registry_url: str | None = None
    """Confluent Schema Registry URL. Unset: schemas travel in the ``<prefix>.__schemas`` topic
    and events use Avro single-object encoding (no registry server needed)."""
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    extra: dict[str, str] = Field(default_factory=dict)
    """Any other librdkafka property, passed through unchanged (e.g. ``ssl.certificate.location``)."""

    def client_config(self) -> dict[str, Any]:
        """librdkafka settings shared by every client crossfade creates (secrets included)."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
            # librdkafka's own log lines go through Python logging (redacted, formatted)
            "logger": logging.getLogger("crossfade.kafka.client"),
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_ca_location:
            conf["ssl.ca.location"] = self.ssl_ca_location
        conf.update(self.extra)
        return conf

    @property
    def control_topic(self) -> str:
        """One-partition topic whose first record names the broker log's epoch."""
        return f"{self.topic_prefix}.__control"

    @property
    def schemas_topic(self) -> str:
        """Compacted topic of Avro schemas keyed by fingerprint (registry-less framing)."""
        return f"{self.topic_prefix}.__schemas"

    @property
    def dlq_topic(self) -> str:
        return f"{self.topic_prefix}.__dlq"

    def table_topic(self, table: str) -> str:
        return f"{self.topic_prefix}.{table}"


class CaptureConfig(_Strict):
    slot_name: str = Field("crossfade", pattern=r"^[a-z0-9_]+$")
    """Logical replication slot on the legacy database (lower case, digits, underscore)."""
    publication_name: str = Field("crossfade", pattern=r"^[A-Za-z0-9_]+$")
    state_dir: Path = Path(".crossfade/capture")
    """Where Debezium's source offsets are kept (one file per broker epoch)."""
    snapshot_mode: Literal["initial", "no_data", "when_needed", "always"] = "initial"
    """Debezium's snapshot.mode when Debezium does the initial load (``initial_load: debezium``)."""
    initial_load: Literal["copy", "debezium"] = "debezium"
    """How the legacy tables' existing rows reach the target. ``debezium`` (default): Debezium's own
    snapshot, as change events through Kafka (a rewind or a second consumer can replay them).
    ``copy``: capture creates the replication slot with an exported snapshot and copies every table
    straight into the target with parallel COPY at that snapshot, then Debezium streams from the
    slot's consistent point (tens of times faster for a large first load; the snapshot rows do not
    go through Kafka). Tables with a ``mapping.tables`` entry always load through Debezium (the
    mapping applies per event in sync)."""
    initial_load_workers: int = Field(2, ge=1, le=64)
    """Parallel COPY streams of ``initial_load: copy`` (chunks of a table by block range)."""
    heartbeat_interval_ms: int = Field(5000, ge=0)
    fence_table: bool = True
    """Create ``crossfade.fence`` in the legacy database and capture it: the end-to-end marker
    behind ``fence``/"lag is zero" and the demo's catch-up wait."""
    signal_table: bool = True
    """Create ``crossfade.debezium_signal`` in the legacy database and give it to Debezium as its
    ``signal.data.collection``: ``verify --repair`` re-emits rows through it (an incremental
    snapshot of the differing keys)."""
    properties: dict[str, str] = Field(default_factory=dict)
    """Extra Debezium connector properties; they win over crossfade's defaults."""


class SyncConfig(_Strict):
    append_only_tables: list[str] = Field(default_factory=list)
    """Source tables without a primary key that only ever receive INSERTs (logs, history):
    applied insert-only, each row identified by its source position and content, so a redelivered
    insert is a no-op. An UPDATE or DELETE on such a table stops sync with a clear message."""
    group_id: str = "crossfade-sync"
    """Kafka consumer group of the sync workers."""
    batch_size: int = Field(5000, ge=1, le=1_000_000)
    """Most records applied in one target transaction."""
    batch_timeout_ms: int = Field(50, ge=1)
    """Longest wait for a batch to fill before applying what arrived. Under load batches fill
    (``batch_size``) long before it; at low rates every change waits up to this long."""
    fetch_wait_max_ms: int = Field(50, ge=1, le=10_000)
    """How long the broker may hold the consumer's fetch when it has nothing new (librdkafka's
    ``fetch.wait.max.ms``, default 500). Apache Kafka answers as soon as data arrives, so a low
    value only adds idle requests; Tansu 0.6 was measured holding fetches with data waiting
    (latency p50 264 ms at 500, 161 ms at 50), so it is part of every change's latency there."""
    create_tables: bool = True
    """Create missing target tables (identity mapping) with the source's column types."""
    bookkeeping_schema: str = Field("crossfade", pattern=r"^[a-z_][a-z0-9_]*$")
    """Schema in the target holding offsets, tombstones and stats."""
    max_poll_interval_ms: int = Field(300_000, ge=10_000)
    session_timeout_ms: int = Field(30_000, ge=6_000)
    tag_origin: bool = True
    """Tag sync's writes with a PostgreSQL replication origin (``crossfade_<n>``) so a capture
    running the other way (``crossfade fallback``) skips them instead of sending them back. Needs
    a superuser, or EXECUTE on ``pg_replication_origin_create`` and
    ``pg_replication_origin_session_setup``; without it sync warns once and writes untagged."""


class CutoverConfig(_Strict):
    """``crossfade cutover``: how legacy writes are frozen and traffic is flipped.

    Commands are argument lists run without a shell; SQL runs in its own transaction.
    """

    freeze_sql: str | None = None
    """SQL run on the legacy database to stop application writes, e.g. ``REVOKE INSERT, UPDATE,
    DELETE ON ALL TABLES IN SCHEMA public FROM app`` or setting a maintenance flag the
    application reads. A real cutover fails its freeze gate when neither this nor
    ``freeze_command`` is set."""
    unfreeze_sql: str | None = None
    """SQL undoing ``freeze_sql`` (run on the legacy database when a later gate fails)."""
    freeze_command: list[str] | None = None
    """Command (argv) that stops application writes, run after ``freeze_sql``."""
    unfreeze_command: list[str] | None = None
    """Command (argv) undoing ``freeze_command``."""
    flip_sql: str | None = None
    """SQL run on the new database once every gate is green (e.g. mark it the primary)."""
    flip_command: list[str] | None = None
    """Command (argv) that routes traffic to the new system."""
    flip_http: SecretStr | None = None
    """URL that gets a JSON POST when traffic should move (a router's or a deploy tool's hook).
    Kept secret: it may carry a token."""
    fence_timeout_s: float = Field(120.0, gt=0)
    """Longest wait for a fence (gates 1 and 4)."""
    command_timeout_s: float = Field(60.0, gt=0)
    """Longest run of a freeze, unfreeze or flip action."""
    fallback: bool = False
    """Gate 7: after the flip, check the fallback plan and start ``crossfade fallback start`` in
    the background (new -> legacy), so the legacy database misses nothing written after the flip."""


class FallbackConfig(_Strict):
    """``crossfade fallback``: the reverse sync (new -> legacy) after the flip.

    Every name defaults to one derived from the forward configuration, so the forward config file
    runs fallback as it is."""

    tables: list[str] | None = None
    """Source (legacy) tables to sync back; unset: every table under ``tables:``. Each must be
    invertibly mapped (identity, renames, casts)."""
    topic_prefix: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]+$")
    """Topic prefix of the reverse change topics (default ``<kafka.topic_prefix>.fallback``)."""
    slot_name: str | None = Field(None, pattern=r"^[a-z0-9_]+$")
    """Replication slot on the new database (default ``<capture.slot_name>_fallback``)."""
    publication_name: str | None = Field(None, pattern=r"^[A-Za-z0-9_]+$")
    """Publication on the new database (default ``<capture.publication_name>_fallback``)."""
    state_dir: Path | None = None
    """Debezium offsets of the reverse capture (default ``<capture.state_dir>-fallback``)."""
    group_id: str | None = None
    """Consumer group of the reverse sync (default ``<sync.group_id>-fallback``)."""
    bookkeeping_schema: str = Field("crossfade_fallback", pattern=r"^[a-z_][a-z0-9_]*$")
    """Schema in the legacy database holding the reverse sync's offsets, fences and the source
    position of every row it wrote (legacy tables get no extra column)."""
    metrics_port: int | None = Field(None, ge=0, le=65535)
    """Port of /metrics, /healthz and /readyz of ``crossfade fallback start`` (unset: not served)."""


class OpsConfig(_Strict):
    metrics_port: int | None = Field(None, ge=0, le=65535)
    """Port of /metrics, /healthz and /readyz on long-running commands (unset: not served)."""
    metrics_host: str = "127.0.0.1"
    log_format: Literal["auto", "json", "text"] = "auto"
    console_port: int | None = Field(None, ge=0, le=65535)
    """Also serve the (read-only) cutover console from capture, sync and run on this port
    (unset: not served; ``crossfade console`` serves it on its own)."""
    console_host: str = "127.0.0.1"
    """Bind address of the mounted console; anything but loopback requires CROSSFADE_CONSOLE_TOKEN."""


class Settings(BaseSettings):
    """The whole configuration. See the module docstring for how it is loaded."""

    model_config = SettingsConfigDict(
        env_prefix="CROSSFADE_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    source: DatabaseConfig
    """The legacy database (still taking writes)."""
    target: DatabaseConfig
    """The new system's database."""
    kafka: KafkaConfig
    tables: list[str] = Field(min_length=1)
    """Source tables as ``schema.table``; identity-mapped into the target."""
    mapping: MappingConfig | None = None
    """How source rows become target rows: renames, transforms, filters, rules, dedup
    (crossfade/mapping/model.py). Tables without an entry are identity-mapped. In a config file
    it may also be the path of a YAML file holding the section (relative to the config file)."""
    capture: CaptureConfig = CaptureConfig()
    sync: SyncConfig = SyncConfig()
    cutover: CutoverConfig = CutoverConfig()
    fallback: FallbackConfig = FallbackConfig()
    ops: OpsConfig = OpsConfig()

    @field_validator("tables")
    @classmethod
    def _tables(cls, v: list[str]) -> list[str]:
        for t in v:
            if not _TABLE_RE.match(t):
                raise ValueError(f"{t!r} is not schema.table (e.g. public.accounts)")
        if len(set(v)) != len(v):
            raise ValueError("lists a table twice")
        return v

    @model_validator(mode="after")
    def _mapped_tables_known(self) -> Settings:
        unknown = [t for t in (self.mapping.tables if self.mapping else {}) if t not in self.tables]
        if unknown:
            raise ValueError(
                f"mapping.tables names {', '.join(unknown)}, which is not under `tables:`"
            )
        return self

    @model_validator(mode="after")
    def _append_only_known(self) -> Settings:
        unknown = [t for t in self.sync.append_only_tables if t not in self.tables]
        if unknown:
            raise ValueError(
                f"sync.append_only_tables names {', '.join(unknown)}, which is not under `tables:`"
            )
        return self

    @model_validator(mode="after")
    def _fallback_tables_known(self) -> Settings:
        unknown = [t for t in self.fallback.tables or [] if t not in self.tables]
        if unknown:
            raise ValueError(
                f"fallback.tables names {', '.join(unknown)}, which is not under `tables:`"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # environment first, then the YAML file passed as init kwargs
        return (env_settings, init_settings)


def _format_validation_error(err: ValidationError, origin: str) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "missing":
            msg = "is required but missing"
        elif e["type"] == "extra_forbidden":
            msg = "is not a known setting (typo?)"
        else:
            msg = msg.removeprefix("Value error, ")
            if "input" in e and not isinstance(e["input"], dict | list) and "dsn" not in loc:
                msg += f" (got {e['input']!r})"
        parts.append(f"{loc} {msg}")
    return f"{origin}: " + "; ".join(parts)


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Load and validate the configuration.

    ``path`` (or ``CROSSFADE_CONFIG``) names the YAML file; environment variables override it.
    Raises :class:`ConfigError` with one line naming every bad field.
    """
    path = path or os.environ.get("CROSSFADE_CONFIG")
    data: dict[str, Any] = {}
    origin = "configuration"
    if path:
        p = Path(path)
        origin = str(p)
        if not p.is_file():
            raise ConfigError(f"config file {p} not found", "pass -c FILE or set CROSSFADE_CONFIG")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise ConfigError(
                f"{p}{where} is not valid YAML", str(getattr(exc, "problem", exc))
            ) from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p} must be a mapping of settings", "see README for an example")
        data = loaded
    data.update(overrides)
    if isinstance(data.get("mapping"), str):  # `mapping: crm-mapping.yaml`
        data["mapping"] = _mapping_file(Path(path).parent if path else Path.cwd(), data["mapping"])
    try:
        return Settings(**data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, origin)) from None


def _mapping_file(base: Path, name: str) -> Any:
    p = base / name
    try:
        return yaml.safe_load(p.read_text()) or {}
    except OSError as exc:
        raise ConfigError(
            f"mapping file {p} cannot be read ({exc.strerror})", "fix `mapping:` in the config"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(
            f"{p}{where} is not valid YAML", str(getattr(exc, "problem", exc))
        ) from None


def public_view(settings: Settings) -> dict[str, Any]:
    """The settings as plain data with secrets redacted (for ``--json`` and logs)."""
    d = settings.model_dump(mode="json")
    d["source"]["dsn"] = redact_dsn(settings.source.dsn)
    d["target"]["dsn"] = redact_dsn(settings.target.dsn)
    if settings.kafka.sasl_password is not None:
        d["kafka"]["sasl_password"] = "***"
    if settings.cutover.flip_http is not None:
        d["cutover"]["flip_http"] = "***"
    return d
