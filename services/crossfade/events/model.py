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
    """

    table: str  # source "schema.table"
    op: Op
    key: dict[str, Any] | None
    after: dict[str, Any] | None
    lsn: int
    source_ts_ms: int
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
