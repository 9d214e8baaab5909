"""The store: the new database's bookkeeping schema (``crossfade`` by default) and EVERY query on it.

One module per table family, each a set of named functions ``fn(conn, schema, ...)`` with small
dataclasses for rows; the DDL of every table is in :mod:`.schema` (read its docstring for what
each table holds). Capture, sync, verify, cutover, status and the console call these functions;
no module outside ``crossfade.target`` writes SQL naming a bookkeeping table
(tests/unit/test_layering.py checks it). To add a table or a query: docs/architecture.md.

=================  ===========================================================================
:mod:`.schema`     the DDL (``STATEMENTS``, ``TABLES``), ``ensure_schema``, ``has_table``
:mod:`.offsets`    consumer offsets: claim a partition's resume point, read the stored offsets
:mod:`.ledger`     per source key outcomes; the one count of open dead letters (``ledger_counts``)
:mod:`.dlq`        acknowledging dead letters (``dlq_acks``, ``dlq_acked``)
:mod:`.fences`     fence runs (``fence_runs``)
:mod:`.heartbeats` what each capture process and sync worker last reported
:mod:`.meta`       key/value facts: schema version, the mapping sync runs with
:mod:`.audit`      the cutover's audit log (``cutover_audit``)
:mod:`.dedup`      deduplication's members and crosswalk (what status counts of them)
=================  ===========================================================================
"""

from crossfade.target.store.audit import AuditRow, latest_audit, write_audit
from crossfade.target.store.dedup import merged_members
from crossfade.target.store.dlq import acknowledge_dead_letters
from crossfade.target.store.fences import FenceRun, fence_finished, fence_started, latest_fences
from crossfade.target.store.heartbeats import (
    Heartbeat,
    drop_heartbeat,
    read_heartbeats,
    write_heartbeat,
)
from crossfade.target.store.ledger import (
    LedgerCounts,
    TableCounts,
    dead_letter_groups,
    ledger_counts,
)
from crossfade.target.store.meta import mapping_fingerprint, meta, note_mapping
from crossfade.target.store.offsets import StoredOffset, claim_partitions, stored_offsets
from crossfade.target.store.schema import SCHEMA_VERSION, TABLES, ddl, ensure_schema, has_table

__all__ = [
    "SCHEMA_VERSION",
    "TABLES",
    "AuditRow",
    "FenceRun",
    "Heartbeat",
    "LedgerCounts",
    "StoredOffset",
    "TableCounts",
    "acknowledge_dead_letters",
    "claim_partitions",
    "ddl",
    "dead_letter_groups",
    "drop_heartbeat",
    "ensure_schema",
    "fence_finished",
    "fence_started",
    "has_table",
    "latest_audit",
    "latest_fences",
    "ledger_counts",
    "mapping_fingerprint",
    "merged_members",
    "meta",
    "note_mapping",
    "read_heartbeats",
    "stored_offsets",
    "write_audit",
    "write_heartbeat",
]
