"""Checkpoints and rewind (DESIGN decision 5).

A checkpoint records, in ``<bookkeeping>.checkpoints`` of the target, the sync group's offsets
as stored in the target (per partition: the next offset to apply, and the broker epoch they
belong to), then the legacy database's WAL position and the time. Offsets are read first: every
change applied at those offsets was committed in the legacy database before that WAL position.

``rewind`` returns the sync group to a checkpoint:

1. the sync group must be stopped: Kafka is asked for the group's state and members
   (``describe_consumer_groups``); an active group is refused (no worker may write while its
   offsets move under it);
2. a checkpoint taken before its epoch's initial COPY load ended (``capture.initial_load:
   copy``) is refused: the copied rows never went through the topics, the replay cannot re-apply
   them (rewind to a later checkpoint, or load again). A load sent as snapshot events (mapped
   tables with ``copy``, or ``events``) is refused the same way (conservative: same mark);
3. the checkpoint's offsets must still be in the topics: same broker epoch as now, and not below
   a partition's log start offset (retention). Otherwise it is refused with what to do;
4. in one target transaction, per partition: the stored offset goes back to the checkpoint's,
   the owner token is cleared (a forgotten worker's late batch is refused), and a replay epoch is
   recorded (``<bookkeeping>.replay``: ``from_offset`` .. ``until_offset``, the offset sync had
   reached). When sync starts again it re-applies that range with the replay guard of
   :mod:`crossfade.target.apply`, overwriting what was written since the checkpoint.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from crossfade.config import Settings
from crossfade.db import connect
from crossfade.errors import BrokerUnavailable, CrossfadeError
from crossfade.events.kafka import current_epoch
from crossfade.target.store import (
    Checkpoint,
    CopyLoadMark,
    Replay,
    StoredOffset,
    checkpoint_at,
    checkpoint_named,
    copy_load_mark,
    ensure_schema,
    finish_replays,
    pending_replays,
    read_checkpoints,
    rewind_offset,
    save_checkpoint,
    start_replay,
    stored_offsets,
)
from crossfade.who import operator

log = logging.getLogger(__name__)

_ACTIVE_STATES = {
    "STABLE",
    "PREPARING_REBALANCE",
    "COMPLETING_REBALANCE",
    "ASSIGNING",
    "RECONCILING",
}


def create_checkpoint(
    settings: Settings, name: str | None = None, note: str | None = None
) -> Checkpoint:
    """Record the current stored offsets, the legacy WAL position and the time."""
    group = settings.sync.group_id
    with connect(settings.target, "target") as tgt:
        ensure_schema(tgt, settings.sync.bookkeeping_schema)
        stored = stored_offsets(tgt, settings.sync.bookkeeping_schema, group)
        if not stored:
            raise CrossfadeError(
                f"sync group {group} has stored no offsets in the target yet",
                "start sync (crossfade sync) and let it apply something before taking a checkpoint",
            )
        epochs = {s.epoch for s in stored}
        if len(epochs) > 1:
            raise CrossfadeError(
                f"the stored offsets of {group} belong to several broker epochs ({', '.join(sorted(epochs))})",
                "sync is moving to a new broker log: wait until it has replayed it, then take the checkpoint",
            )
        with connect(settings.source, "source") as src:
            row = src.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        lsn = str(row[0]) if row else None
        name = name or "cp-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        offsets = [
            {"topic": s.topic, "partition": s.partition, "next_offset": s.next_offset}
            for s in stored
        ]
        cp = save_checkpoint(
            tgt,
            settings.sync.bookkeeping_schema,
            name,
            group,
            epochs.pop(),
            lsn,
            offsets,
            operator(),
            note,
        )
    if cp is None:
        raise CrossfadeError(f"a checkpoint named {name!r} exists already", "choose another --name")
    return cp


def list_checkpoints(settings: Settings) -> list[Checkpoint]:
    with connect(settings.target, "target") as tgt:
        ensure_schema(tgt, settings.sync.bookkeeping_schema)
        return read_checkpoints(tgt, settings.sync.bookkeeping_schema, settings.sync.group_id)


def find_checkpoint(conn: psycopg.Connection, settings: Settings, to: str) -> Checkpoint:
    """A checkpoint by name, or the newest taken at or before a timestamp (ISO 8601)."""
    bk, group = settings.sync.bookkeeping_schema, settings.sync.group_id
    cp = checkpoint_named(conn, bk, group, to)
    if cp is not None:
        return cp
    try:
        ts = datetime.fromisoformat(to.replace("Z", "+00:00"))
    except ValueError:
        raise CrossfadeError(
            f"no checkpoint named {to!r}",
            "crossfade checkpoint list shows them; or give an ISO timestamp",
        ) from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    cp = checkpoint_at(conn, bk, group, ts)
    if cp is None:
        raise CrossfadeError(
            f"no checkpoint was taken at or before {ts.isoformat()}",
            "rewind goes back to checkpoints only (crossfade checkpoint list)",
        )
    return cp


def group_activity(settings: Settings, timeout: float = 10.0) -> tuple[str, list[str]]:
    """The sync group's state and its members' client ids, as Kafka reports them."""
    admin = AdminClient(settings.kafka.client_config())
    group = settings.sync.group_id
    try:
        desc = admin.describe_consumer_groups([group], request_timeout=timeout)[group].result()
    except KafkaException as exc:
        raise BrokerUnavailable(
            f"cannot ask Kafka whether sync group {group} is active ({exc.args[0].str() if exc.args else exc})",
            "rewind needs the broker to confirm the sync group is stopped; check kafka.bootstrap_servers",
        ) from None
    state = getattr(desc.state, "name", str(desc.state))
    return state, [f"{m.client_id}@{m.host}" for m in desc.members]


def assert_group_stopped(settings: Settings) -> None:
    state, members = group_activity(settings)
    # Tansu reports a live group as STABLE with no member list: the state decides there
    if members or state in _ACTIVE_STATES:
        who = f": {', '.join(members)}" if members else ""
        raise CrossfadeError(
            f"sync group {settings.sync.group_id} is active (state {state}, {len(members)} member(s){who})",
            "stop every sync worker (crossfade sync / run) first; a killed worker leaves the group "
            f"only after sync.session_timeout_ms ({settings.sync.session_timeout_text()})",
        )


def log_start_offsets(settings: Settings, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """Each partition's first offset still held by the broker (the low watermark)."""
    c = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"crossfade-rewind-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    try:
        out = {}
        for t, p in tps:
            low, _high = c.get_watermark_offsets(TopicPartition(t, p), timeout=10)
            out[(t, p)] = int(low)
        return out
    except KafkaException as exc:
        raise BrokerUnavailable(f"cannot read the log start offsets ({exc})") from None
    finally:
        c.close()


@dataclass
class RewindResult:
    checkpoint: Checkpoint
    replay_id: str
    partitions: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def records(self) -> int:
        return sum(p["until_offset"] - p["from_offset"] for p in self.partitions)

    def as_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint.name,
            "replay_id": self.replay_id,
            "records_to_replay": self.records,
            "partitions": self.partitions,
            "not_in_checkpoint": self.skipped,
        }


def check_retention(cp: Checkpoint, starts: dict[tuple[str, int], int]) -> list[str]:
    """Partitions whose checkpoint offset the broker no longer holds."""
    gone = []
    for o in cp.offsets:
        low = starts.get((o["topic"], o["partition"]))
        if low is not None and o["next_offset"] < low:
            gone.append(
                f"{o['topic']}[{o['partition']}] needs offset {o['next_offset']}, the log starts at {low}"
            )
    return gone


def _check_reachable(settings: Settings, cp: Checkpoint) -> None:
    """Refuse a checkpoint whose records the broker no longer holds (another epoch, or below a
    partition's log start)."""
    epoch = current_epoch(settings.kafka.client_config(), settings.kafka.control_topic, timeout=5)
    if epoch != cp.epoch:
        raise CrossfadeError(
            f"checkpoint {cp.name} holds offsets of broker epoch {cp.epoch}, but the broker's log is now "
            f"epoch {epoch or 'none'}: the records it points at are gone",
            "the topics were recreated or the broker lost its data; a rewind cannot bring them back: "
            "re-snapshot (restart capture with a new capture.state_dir) and verify",
        )
    tps = [(o["topic"], o["partition"]) for o in cp.offsets]
    gone = check_retention(cp, log_start_offsets(settings, tps))
    if gone:
        raise CrossfadeError(
            f"checkpoint {cp.name} is no longer in the topics ({'; '.join(gone)}): retention deleted those records",
            "rewind to a newer checkpoint, or re-snapshot (restart capture with a new capture.state_dir); "
            "raise the change topics' retention.ms above your rewind window",
        )


def check_not_before_copy_load(cp: Checkpoint, load: CopyLoadMark | None) -> None:
    """Refuse a checkpoint taken before its epoch's initial COPY load ended (``load``: the
    epoch's load as the target records it, None when the epoch was not loaded by COPY). The
    copied rows never went through the topics, so the replay could not re-apply them: the target
    would silently keep whatever the rewind was meant to undo in them."""
    if load is None or (load.done_at is not None and load.done_at <= cp.created_at):
        return
    ended = "has not ended" if load.done_at is None else f"ended at {load.done_at.isoformat()}"
    raise CrossfadeError(
        f"checkpoint {cp.name} ({cp.created_at.isoformat()}) was taken before the initial COPY "
        f"load of broker epoch {cp.epoch} {ended}: a rewind does not replay that load (rows "
        "copied into the target are not in the topics)",
        "rewind to a checkpoint taken after the load (crossfade checkpoint list), or load again "
        "(restart capture with a new capture.state_dir); capture.initial_load: debezium makes "
        "the initial load replayable (mapped tables too)",
    )


def plan_rewind(
    result: RewindResult, stored: list[StoredOffset], pending: dict[tuple[str, int], int]
) -> None:
    """Fill ``result`` with each partition's replay range: from the checkpoint's offset to where
    sync is (or the end of an unfinished replay, if further). Refuses a checkpoint ahead of sync,
    or of a group reset since (no stored offset of its epoch)."""
    cp = result.checkpoint
    tps = [(o["topic"], o["partition"]) for o in cp.offsets]
    now = {(s.topic, s.partition): (s.next_offset, s.epoch) for s in stored}
    result.skipped = [f"{t}[{p}]" for (t, p) in now if (t, p) not in tps]
    for o in cp.offsets:
        tp = (o["topic"], o["partition"])
        cur = now.get(tp)
        if cur is None or cur[1] != cp.epoch:
            raise CrossfadeError(
                f"{tp[0]}[{tp[1]}] has no stored offset of epoch {cp.epoch} any more",
                "the sync group was reset since the checkpoint; take a new one",
            )
        frm = int(o["next_offset"])
        if frm > cur[0]:
            raise CrossfadeError(
                f"checkpoint {cp.name} is ahead of sync on {tp[0]}[{tp[1]}] ({frm} > {cur[0]})",
                "a rewind only goes back: pick an older checkpoint",
            )
        # a rewind during an unfinished replay keeps the furthest end
        until = max(cur[0], pending.get(tp, 0))
        result.partitions.append(
            {"topic": tp[0], "partition": tp[1], "from_offset": frm, "until_offset": until}
        )


def rewind(settings: Settings, to: str, *, dry_run: bool = False) -> RewindResult:
    """Move the sync group back to a checkpoint and record the replay (see the module docstring)."""
    bk, group = settings.sync.bookkeeping_schema, settings.sync.group_id
    with connect(settings.target, "target") as tgt:
        ensure_schema(tgt, bk)
        cp = find_checkpoint(tgt, settings, to)
        check_not_before_copy_load(cp, copy_load_mark(tgt, bk, cp.epoch) if cp.epoch else None)
        assert_group_stopped(settings)
        _check_reachable(settings, cp)
        result = RewindResult(cp, uuid.uuid4().hex[:12])
        with tgt.transaction():
            stored = stored_offsets(tgt, bk, group, lock=True)
            plan_rewind(result, stored, pending_replays(tgt, bk, group, cp.epoch))
            if dry_run:
                return result  # nothing written
            finish_replays(tgt, bk, group)
            for p in result.partitions:
                rewind_offset(tgt, bk, group, p["topic"], p["partition"], p["from_offset"])
                if p["until_offset"] > p["from_offset"]:
                    start_replay(
                        tgt,
                        bk,
                        Replay(
                            group,
                            p["topic"],
                            p["partition"],
                            result.replay_id,
                            cp.epoch,
                            cp.name,
                            p["from_offset"],
                            p["until_offset"],
                            operator(),
                        ),
                    )
    return result
