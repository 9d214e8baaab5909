"""The store: the new database's bookkeeping schema (``crossfade`` by default) and EVERY query on it.

One module per table family, each a set of named functions ``fn(conn, schema, ...)`` with small
dataclasses for rows; the DDL of every table is in :mod:`.schema` (read its docstring for what
each table holds). Capture, sync, verify, cutover, status and the console call these functions;
no module outside ``crossfade.target`` writes SQL naming a bookkeeping table
(tests/unit/test_layering.py checks it). To add a table or a query: docs/architecture.md.

The modules (each module's docstring says which tables it reads and writes):

- ``schema``: the DDL (``STATEMENTS``, ``TABLES``), ``ensure_schema``, ``has_table``
- ``offsets``: consumer offsets (claim a partition's resume point, lock and advance it in the
  batch commit, snapshot floors, read, rewind)
- ``ledger``: per source key outcomes; the one count of open dead letters (``ledger_counts``)
- ``dlq``: acknowledging dead letters (``dlq_acks``, ``dlq_acked``)
- ``fences``: fence runs (``fence_runs``) and the fences sync applied (``fences``)
- ``heartbeats``: what each capture process and sync worker last reported
- ``meta``: key/value facts (schema version, the mapping sync runs with, COPY loads ended,
  when capture last completed a snapshot: ``note_snapshot_done``, ``snapshot_done``)
- ``audit``: the cutover's audit log (``cutover_audit``)
- ``dedup``: deduplication's members and crosswalk (sync's dedup sink, children resolving
  through the crosswalk, ``crossfade dedup explain``, what status counts of them)
- ``children``: the parent each child of a ``references`` rule refers to (``child_refs``), and
  the children to map again when a parent changes
- ``checkpoints``: checkpoints (save, list, find by name or time)
- ``replay``: a rewind's replay ranges
- ``stats``: per table what sync applied (``table_stats``)
- ``tombstones``: tombstones and watermarks
- ``sweeps``: the partitions sync passed a snapshot's sweep marker on (``sweep_passed``; which
  tables' snapshots finished in sync, ``snapshot_states``)
- ``verify_runs``: verify runs and their reports
- ``added_columns``: columns sync added to identity targets mid-stream
- ``control``: ``crossfade pause``/``resume``, what an operator holds (``read_control``)
- ``activity``: the sessions holding a lock another session waits for (``lock_holders``:
  ``pg_stat_activity``, no bookkeeping table), ending one idle in its transaction
"""

from crossfade.target.store.activity import LockHolder, end_idle_in_transaction, lock_holders
from crossfade.target.store.added_columns import added_columns, note_added_column
from crossfade.target.store.audit import (
    AuditEntry,
    AuditLog,
    AuditRow,
    insert_audit_row,
    last_flip_age_s,
    latest_audit,
    latest_forecast,
)
from crossfade.target.store.checkpoints import (
    Checkpoint,
    checkpoint_at,
    checkpoint_named,
    read_checkpoints,
    save_checkpoint,
)
from crossfade.target.store.children import (
    children_ledger_rows,
    orphaned_parent_values,
    replace_child_refs,
    share_ledger_states,
)
from crossfade.target.store.control import (
    Control,
    pause_unpaused,
    paused_components,
    read_control,
    resume_own,
    set_paused,
)
from crossfade.target.store.dedup import (
    block_sizes,
    crosswalk_entries,
    crosswalk_group,
    forget_members_below,
    group_mates,
    grouped_in_blocks,
    live_members,
    member_block_keys,
    member_positions,
    members_by_blocks,
    members_written_since,
    merged_members,
    share_member,
    share_survivors,
    stored_blocks,
    survivor_keys,
    write_crosswalk,
    write_members,
)
from crossfade.target.store.dlq import DlqAck, acknowledge_dead_letters, last_dlq_ack
from crossfade.target.store.fences import (
    AppliedFence,
    FenceRun,
    fence_applied_on,
    fence_finished,
    fence_position,
    fence_spread,
    fence_started,
    last_applied_fence,
    latest_fences,
    record_fence,
)
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
    dead_letters_for_replay,
    dead_letters_of_rule,
    decode_dead_letters,
    deferred_rows,
    entry_outcome,
    held_changes,
    held_entries,
    ledger_counts,
    set_outcome,
    still_dead_letters,
)
from crossfade.target.store.meta import (
    CopyLoadMark,
    copy_load_hides_fence,
    copy_load_mark,
    mapping_fingerprint,
    meta,
    note_copy_load,
    note_copy_load_slot,
    note_mapping,
    note_snapshot_done,
    snapshot_done,
)
from crossfade.target.store.offsets import (
    StoredOffset,
    claim_partitions,
    claimed_count,
    lock_offsets,
    offsets_age,
    raise_snapshot_floor,
    rewind_offset,
    store_next_offsets,
    stored_offsets,
)
from crossfade.target.store.replay import (
    Replay,
    finish_replay,
    finish_replays,
    last_rewind_at,
    pending_replays,
    start_replay,
    unfinished_replays,
)
from crossfade.target.store.schema import (
    SCHEMA_VERSION,
    STATEMENTS,
    TABLES,
    ddl,
    ensure_schema,
    has_table,
)
from crossfade.target.store.stats import (
    TableStats,
    add_table_stats,
    table_stats,
)
from crossfade.target.store.sweeps import snapshot_states, sweep_passed
from crossfade.target.store.tombstones import (
    clear_tombstones,
    delete_leaving_tombstones,
    raise_watermark,
)
from crossfade.target.store.verify_runs import (
    RECENT_KEYS,
    VerifyReport,
    VerifyRun,
    latest_verify_report,
    recent_verify_runs,
    record_verify_run,
)

__all__ = [
    "AppliedFence",
    "AuditEntry",
    "AuditRow",
    "Checkpoint",
    "Control",
    "CopyLoadMark",
    "DlqAck",
    "FenceRun",
    "Heartbeat",
    "LedgerCounts",
    "LockHolder",
    "RECENT_KEYS",
    "Replay",
    "SCHEMA_VERSION",
    "STATEMENTS",
    "StoredOffset",
    "TABLES",
    "TableCounts",
    "TableStats",
    "VerifyReport",
    "VerifyRun",
    "acknowledge_dead_letters",
    "add_table_stats",
    "added_columns",
    "checkpoint_at",
    "checkpoint_named",
    "children_ledger_rows",
    "claim_partitions",
    "claimed_count",
    "clear_tombstones",
    "block_sizes",
    "crosswalk_entries",
    "crosswalk_group",
    "ddl",
    "dead_letter_groups",
    "dead_letters_for_replay",
    "decode_dead_letters",
    "deferred_rows",
    "delete_leaving_tombstones",
    "drop_heartbeat",
    "ensure_schema",
    "entry_outcome",
    "fence_applied_on",
    "fence_spread",
    "fence_finished",
    "fence_position",
    "fence_started",
    "finish_replay",
    "finish_replays",
    "copy_load_hides_fence",
    "copy_load_mark",
    "forget_members_below",
    "group_mates",
    "grouped_in_blocks",
    "has_table",
    "held_changes",
    "dead_letters_of_rule",
    "held_entries",
    "insert_audit_row",
    "last_applied_fence",
    "last_dlq_ack",
    "last_flip_age_s",
    "last_rewind_at",
    "latest_audit",
    "latest_forecast",
    "latest_fences",
    "latest_verify_report",
    "ledger_counts",
    "live_members",
    "member_block_keys",
    "members_by_blocks",
    "members_written_since",
    "lock_holders",
    "end_idle_in_transaction",
    "lock_offsets",
    "mapping_fingerprint",
    "member_positions",
    "merged_members",
    "meta",
    "note_added_column",
    "note_copy_load",
    "note_copy_load_slot",
    "note_mapping",
    "note_snapshot_done",
    "offsets_age",
    "orphaned_parent_values",
    "pause_unpaused",
    "paused_components",
    "pending_replays",
    "raise_snapshot_floor",
    "raise_watermark",
    "read_checkpoints",
    "read_control",
    "read_heartbeats",
    "recent_verify_runs",
    "record_fence",
    "record_verify_run",
    "replace_child_refs",
    "resume_own",
    "rewind_offset",
    "save_checkpoint",
    "set_outcome",
    "set_paused",
    "share_ledger_states",
    "share_member",
    "share_survivors",
    "snapshot_done",
    "stored_blocks",
    "start_replay",
    "still_dead_letters",
    "store_next_offsets",
    "stored_offsets",
    "survivor_keys",
    "snapshot_states",
    "sweep_passed",
    "table_stats",
    "unfinished_replays",
    "AuditLog",
    "write_crosswalk",
    "write_heartbeat",
    "write_members",
]
