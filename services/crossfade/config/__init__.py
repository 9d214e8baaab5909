"""The one configuration model (ground floor): the settings tree and its loading
(:mod:`~crossfade.config.settings`), secrets and their redaction (:mod:`~crossfade.config.secrets`),
error messages (:mod:`~crossfade.config.messages`) and the mapping language's model
(:mod:`~crossfade.config.mapping`). The names below are the package's API: import them from here.
"""

from crossfade.config.load_windows import parse_load_window, time_zone
from crossfade.config.mapping import TABLE_RE, MappingConfig
from crossfade.config.messages import validation_messages
from crossfade.config.secrets import (
    MASK,
    SECRET_KEY_RE,
    dsn_secrets,
    is_secret_key,
    known_secrets,
    parse_dsn,
    redact_arg,
    redact_dsn,
    redact_url,
    remember_secrets,
    url_secrets,
)
from crossfade.config.settings import (
    BackupGate,
    CaptureConfig,
    CutoverConfig,
    DatabaseConfig,
    FallbackConfig,
    KafkaConfig,
    OpsConfig,
    Reconciliation,
    Settings,
    SmokeCheck,
    SyncConfig,
    load_settings,
    public_view,
    secret_values,
)

__all__ = [
    "MASK",
    "SECRET_KEY_RE",
    "TABLE_RE",
    "BackupGate",
    "CaptureConfig",
    "CutoverConfig",
    "DatabaseConfig",
    "FallbackConfig",
    "KafkaConfig",
    "MappingConfig",
    "OpsConfig",
    "Reconciliation",
    "Settings",
    "SmokeCheck",
    "SyncConfig",
    "dsn_secrets",
    "is_secret_key",
    "known_secrets",
    "load_settings",
    "parse_load_window",
    "parse_dsn",
    "public_view",
    "redact_arg",
    "redact_dsn",
    "redact_url",
    "remember_secrets",
    "secret_values",
    "time_zone",
    "url_secrets",
    "validation_messages",
]
