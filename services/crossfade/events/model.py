"""The change-event model shared by capture and sync.

A Debezium change event, once decoded from Avro, becomes a :class:`ChangeEvent`. Values keep the
representation of Kafka Connect as Debezium emits it (``MicroTimestamp`` as an int of
microseconds, ``ZonedTimestamp`` as an ISO string, ``bytes`` as ``bytes``, numerics as exact
strings...); :mod:`crossfade.events.pgtext` turns them into PostgreSQL literals using the field's
semantic type, which travels in :class:`FieldType`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Op = Literal["c", "u", "d", "r", "t"]
"""Debezium operations: create, update, delete, read (snapshot), truncate."""

ORIGIN_PREFIX = "crossfade_"
"""PostgreSQL replication origins crossfade's sync sessions write under (crossfade.sync.origin):
capture drops changes whose ``source.origin`` starts with it, so forward and fallback never echo."""

UNAVAILABLE = "__debezium_unavailable_value"
"""Debezium's placeholder for an unchanged TOASTed value (``unavailable.value.placeholder``)."""


@dataclass(frozen=True, slots=True)
class FieldType:
    """The type of one column as the Connect schema gives it.

    ``connect_type`` is Connect's primitive (``int16``, ``int64``, ``string``, ``bytes``,
    ``array``...); ``semantic`` is the logical name (``io.debezium.time.MicroTimestamp``,
    ``org.apache.kafka.connect.data.Decimal``...) or None; ``items`` is the element type of an
    array; ``parameters`` are Connect schema parameters (e.g. ``allowed`` of an Enum, ``scale``).
    """

    connect_type: str
    semantic: str | None = None
    optional: bool = True
    items: FieldType | None = None
    parameters: tuple[tuple[str, str], ...] = ()

    def param(self, name: str) -> str | None:
        return dict(self.parameters).get(name)


@dataclass(frozen=True, slots=True)
class RowSchema:
    """Ordered column names and types of a table's row (Debezium's ``<topic>.Value``)."""

    name: str
    fields: tuple[tuple[str, FieldType], ...]

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.fields)

    def type_of(self, column: str) -> FieldType:
        for n, t in self.fields:
            if n == column:
                return t
        raise KeyError(column)


@dataclass(slots=True)
class ChangeEvent:
    """One decoded change.

    ``key`` holds the primary-key columns (None only for a truncate). ``after`` is the new row for
    c/u/r, None for d/t. ``lsn`` is the source position of the change (the guard of DESIGN
    decision 2 compares it). ``unavailable`` names the columns whose value Debezium did not send
    (unchanged TOAST): sync must keep the target's value for them.

    ``position`` is what the guard compares (see :func:`position`): the raw ``lsn`` alone is not
    enough at the snapshot boundary.
    """

    table: str  # source "schema.table"
    op: Op
    key: dict[str, Any] | None
    after: dict[str, Any] | None
    lsn: int
    source_ts_ms: int
    position: int = 0
    snapshot: str = "false"
    tx_id: int | None = None
    row_schema: RowSchema | None = None
    key_schema: RowSchema | None = None
    unavailable: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_delete(self) -> bool:
        return self.op == "d"

    @property
    def is_upsert(self) -> bool:
        return self.op in ("c", "u", "r")


SHIFT = 64


def position(lsn: int, *, snapshot: bool, floor: int = 0) -> int:
    """The source position the guard orders changes by: ``primary << 64 | secondary``.

    A change's own LSN orders two changes *of one key* correctly (row locks serialise them), but
    not a streamed change against the snapshot: a transaction that changed a row before the
    snapshot's consistent point S and committed after it is streamed with an LSN below S, yet it
    is newer than the snapshot row. So:

    * snapshot rows: ``(S, 0)``;
    * streamed changes: ``(max(lsn, floor), lsn)`` where ``floor`` is the LSN of the snapshot this
      stream continues (capture persists it per broker epoch).

    Every streamed change then beats the snapshot it follows, and two streamed changes of a key
    keep their LSN order.
    """
    if snapshot:
        return lsn << SHIFT
    return (max(lsn, floor) << SHIFT) | lsn


def position_lsn(pos: int) -> int:
    """The primary LSN of a position (for display)."""
    return pos >> SHIFT


def format_lsn(lsn: int | None) -> str:
    """An LSN as PostgreSQL writes it (``16/B374D848``): how every command shows one to people
    (``--json`` carries the number)."""
    if lsn is None:
        return "-"
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str | None) -> int | None:
    """``16/B374D848`` -> its number (what ``pg_lsn - '0/0'`` gives); None stays None.

    Raises ``ValueError`` for text that is not an LSN."""
    if text is None:
        return None
    hi, sep, lo = text.strip().partition("/")
    if not sep:
        raise ValueError(f"{text!r} is not an LSN (X/Y in hexadecimal)")
    return (int(hi, 16) << 32) | int(lo, 16)
