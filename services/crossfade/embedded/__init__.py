"""Embedded servers for the demo and the integration tests.

* :class:`EmbeddedPostgres` – a throw-away (or reusable) PostgreSQL cluster on 127.0.0.1 with
  ``wal_level=logical``, trust auth and durability switched off for speed.
* :class:`EmbeddedBroker` – the Tansu Kafka-protocol broker, in memory only: a restart loses
  every topic, record and consumer offset.

Both run their child processes in their own session (a terminal Ctrl-C does not reach them)
and stop them at interpreter exit if the caller did not.
"""

from crossfade.embedded._proc import free_port
from crossfade.embedded.broker import CONSUMER_TUNING, EmbeddedBroker, resolve_tansu_binary
from crossfade.embedded.postgres import EmbeddedPostgres, PgBinaries, resolve_pg_binaries

__all__ = [
    "CONSUMER_TUNING",
    "EmbeddedBroker",
    "EmbeddedPostgres",
    "PgBinaries",
    "free_port",
    "resolve_pg_binaries",
    "resolve_tansu_binary",
]
