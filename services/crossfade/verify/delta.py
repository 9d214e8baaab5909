"""Verify only what changed since a full verify: the cutover's check inside the write freeze.

A full verify (``crossfade verify``, or the cutover's ``verify_live`` step, while writes still
flow) takes, before it reads anything, a snapshot of each database (``pg_current_snapshot()``).
Every row it then judged equal and that nobody wrote since on either side is still equal. So,
inside the freeze, after the fence, the cutover compares only:

* the rows written since on either side: their ``xmin`` is a transaction at or above the
  snapshot's ``xmin`` (:meth:`crossfade.verify.chunked.TableComparer.changed_keys`: sync's
  upserts, and anything else that wrote to the new database, a planted difference included);
* the keys the full verify could not decide (*unsettled*: changing in every re-check round);
* the counts of both sides (the cutover's ``row_counts`` step, before it): a row deleted on one
  side since leaves no ``xmin`` behind, so a lost delete shows as counts that differ (unless a
  lost insert hides it, and a lost insert's key is written in legacy, so it is compared).

Tables without a primary key (append-only: rows are only added) are compared by their totals:
the full verify also sums, per side, a 64-bit hash of every row older than its snapshot (rows
no transaction touches again); inside the freeze only the rows written since are hashed and
added (:func:`totals`). Equal count and sum on both sides: equal multisets of rows (as the
chunked checksums judge a range). An old row updated or deleted since changes its side's total:
reported as a difference, never missed.

The cost is one scan of each table's keys and row headers plus a comparison of the changed rows:
it grows with the writes of the last minutes, not with the tables' size as the checksums of
every row do. Mapped targets are compared the same way, through the mapping, by the target keys
the changes since affect and what depends on them (children of a changed parent, the parents a
child's reference needs): :mod:`crossfade.verify.mapped_delta`, which also says which targets it
still compares in full and why (deduplicated targets: :mod:`crossfade.verify.dedup_delta`). A
server older than PostgreSQL 13 (no ``pg_current_snapshot``) gets no snapshot: its tables are
verified in full.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from crossfade.catalog import written_since
from crossfade.verify.chunked import Key

MIN_SERVER = 130000
"""``pg_current_snapshot()`` and ``pg_visible_in_snapshot()`` came with PostgreSQL 13."""


@dataclass
class DedupBase:
    """What the full verify saw of one deduplicated target (:mod:`crossfade.verify.dedup_delta`
    reads it): the duplicate groups as the mapping of its snapshot makes them, and the members
    whose stored block keys (``dedup_members``, the index the delta finds block mates in) did
    not match their legacy row then."""

    groups: dict[Key, Key] = field(default_factory=dict)
    """Member key -> survivor key, for the members of merged groups."""
    merged: int = 0
    """Members merged into another's golden record (they have no row)."""
    oversized: int = 0
    """Blocks too large to be compared pairwise (then the delta compares the target in full)."""
    stale: set[Key] = field(default_factory=set)
    """Members (target keys) whose stored block keys differed from their row's, or that only
    one side had: the delta regroups them whatever their ``xmin``."""


@dataclass
class DeltaBase:
    """What a verify of the changes needs from the full verify before it."""

    run_id: int | None
    """The full verify's ``verify_runs.id`` (the evidence chain: shown with the delta's)."""
    snapshots: dict[str, str]
    """``source``/``target`` -> ``pg_current_snapshot()`` taken before it read anything."""
    unsettled: dict[str, set[Key]] = field(default_factory=dict)
    """Keys per table the full verify could not decide: compared again whatever their xmin."""
    keyless: dict[str, dict[str, tuple[int, int]]] = field(default_factory=dict)
    """Per table without a primary key, per side: (rows, sum of row hashes) of the rows older
    than the snapshot (:func:`totals` with ``since=False``)."""
    mapped_keys: dict[str, set[Key]] = field(default_factory=dict)
    """Per mapped target, the keys the full verify found differing or left unsettled: compared
    again by the delta of mapped targets (:mod:`crossfade.verify.mapped_delta`)."""
    mapped_entries: dict[str, set[str]] = field(default_factory=dict)
    """Per mapped source table, the ledger entries whose outcome the full verify found
    disagreeing or left unsettled."""
    dedup: dict[str, DedupBase] = field(default_factory=dict)
    """Per deduplicated target, its duplicate groups as the full verify found them."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "snapshots": self.snapshots,
            "unsettled": {t: len(k) for t, k in self.unsettled.items()},
            "keyless": {t: {k: list(v) for k, v in s.items()} for t, s in self.keyless.items()},
            "mapped_keys": {t: len(k) for t, k in self.mapped_keys.items()},
            "mapped_entries": {s: len(e) for s, e in self.mapped_entries.items()},
            "dedup": {t: len(d.groups) for t, d in self.dedup.items()},
        }


def snapshot_of(conn: psycopg.Connection) -> str | None:
    """The connection's server's current snapshot as text, or None before PostgreSQL 13."""
    if conn.info.server_version < MIN_SERVER:
        return None
    row = conn.execute("SELECT pg_current_snapshot()::text").fetchone()
    return str(row[0]) if row else None


def totals(
    conn: psycopg.Connection, table: str, columns: list[str], snapshot: str, *, since: bool
) -> tuple[int, int]:
    """(rows, sum of ``hashtextextended(row text, 0)``) of ``table``'s rows written since
    ``snapshot`` (``since``) or of the others (older: no transaction can change them but by an
    UPDATE or DELETE, which moves them to the rows written since). The row text is of
    ``columns`` only, each by its ``::text`` (the target's bookkeeping columns stay out), in the
    session of :func:`crossfade.verify.chunked.prepare_session`."""
    schema, name = table.split(".", 1)
    row = sql.SQL("ROW({})::text").format(
        sql.SQL(", ").join(sql.SQL("r.{}::text").format(sql.Identifier(c)) for c in columns)
    )
    q = sql.SQL(
        "SELECT count(*), COALESCE(sum(hashtextextended({row}, 0)::numeric), 0) "
        "FROM {rel} AS r WHERE {since}"
    ).format(
        row=row,
        rel=sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name)),
        since=written_since(snapshot, since=since),
    )
    r = conn.execute(q).fetchone()
    assert r is not None
    return int(r[0]), int(r[1])


def norm_key(values: Any) -> tuple[Any, ...]:
    """A key as a set member: each value by its text (a key read from the target, mapped from a
    legacy row or decoded from a ledger entry's JSON is then one member)."""
    return tuple(None if v is None else str(v) for v in values)


class Unsafe(Exception):
    """The delta of a target cannot be computed safely: compare it in full (the message says why)."""
