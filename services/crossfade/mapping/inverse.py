"""Fallback: the pipeline in reverse (new -> legacy) after the flip, for invertible mappings.

After the flip the new system takes the writes; if it must be abandoned, the legacy database must
not have missed them. ``crossfade fallback start`` runs the same capture and sync services with a
*reversed* configuration (:func:`reverse_settings`):

* source = the new database, target = the legacy one;
* its own replication slot and publication on the new database, topic prefix
  (``<prefix>.fallback``), consumer group, capture state directory, and bookkeeping schema in the
  legacy database (``crossfade_fallback``), so it runs beside the forward direction;
* Debezium leaves out the forward sync's ``_cf_pos``/``_cf_hash`` columns (``column.exclude.list``);
* legacy tables get no column of crossfade's: the source position of every row the reverse sync
  wrote is kept in ``crossfade_fallback.positions`` and guards there
  (:class:`crossfade.target.apply.SideTable` guard);
* the fence table lives in the new database (``crossfade.fence``), so ``fence --reverse`` and
  ``verify --reverse`` prove lag zero the same way as forward;
* both directions tag their writes with a replication origin and both captures drop tagged
  changes (:mod:`crossfade.sync.origin`): they never echo.

A table can go back when its mapping is a bijection column for column: identity (no entry under
``mapping.tables``), or one target table whose columns are renames of legacy columns, optionally
cast. Filters, several targets, several sources into one target, dedup, transforms, constants,
defaults, columns derived from several columns or lossy error handling are refused, one line per
table naming the reason (:func:`plan`). Append-only tables (no primary key) are refused too.

A cast is inverted by PostgreSQL's own input of the legacy column's type, from the new value's
text form: exact when the cast was (``'42'`` -> 42 -> ``'42'``), and ``verify --reverse`` shows
any row where it was not (``'042'``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from crossfade.config import CaptureConfig, CutoverConfig, Settings
from crossfade.config.mapping import MappingConfig, TableMapping
from crossfade.errors import NotInvertible

EXCLUDED_COLUMNS = r".*\._cf_pos,.*\._cf_hash"
"""Debezium ``column.exclude.list`` of the reverse capture: the forward sync's own columns."""


@dataclass(frozen=True)
class TableInverse:
    """How one new-database table goes back into its legacy table."""

    legacy: str
    """The legacy (forward source) table, schema.table."""
    new: str
    """The new-database (forward target) table."""
    columns: dict[str, str] | None = None
    """New column -> legacy column; None: identity (every column by name)."""
    include_unmapped: bool = True
    """Legacy columns not named in ``columns`` map by name (identity, or ``include_unmapped``)."""
    casts: dict[str, str] = field(default_factory=dict)
    """New column -> the cast the forward mapping applied (inverted by the legacy type's input)."""

    @property
    def identity(self) -> bool:
        return self.columns is None and self.legacy == self.new

    def legacy_column(self, new_column: str) -> str | None:
        """The legacy column a new column goes back to (None: it has none)."""
        if self.columns is None:
            return new_column
        if new_column in self.columns:
            return self.columns[new_column]
        if self.include_unmapped and new_column not in self.columns.values():
            return new_column
        return None


@dataclass
class FallbackPlan:
    inverses: list[TableInverse]
    refused: dict[str, str]
    """Legacy table -> why it cannot go back."""

    def by_new(self) -> dict[str, TableInverse]:
        return {i.new: i for i in self.inverses}

    def refusal(self) -> NotInvertible:
        lines = [f"{t} cannot fall back: {why}" for t, why in self.refused.items()]
        return NotInvertible(
            "\n".join(lines),
            "remove the table(s) from fallback.tables, or run the invertible ones with "
            "`crossfade fallback start --tables invertible`",
        )


def invert_table(
    table: str,
    tm: TableMapping | None,
    mapping: MappingConfig | None,
    writers: dict[str, list[str]],
) -> TableInverse | str:
    """The inverse of one legacy table's mapping, or why there is none."""
    if tm is None:
        return TableInverse(table, table)
    if tm.filters:
        return (
            f"filter {tm.filters[0].name} keeps rows out of the new database, so running it backwards "
            "would delete them from legacy"
        )
    if len(tm.targets) != 1:
        return f"it maps to {len(tm.targets)} target tables (1->n)"
    t = tm.targets[0]
    others = [s for s in writers.get(t.table, []) if s != table]
    if others:
        return f"{t.table} is also written by {', '.join(others)} (n->1)"
    if mapping is not None and t.table in mapping.dedup:
        return f"{t.table} is deduplicated (merged rows cannot be split again)"
    cols: dict[str, str] = {}
    casts: dict[str, str] = {}
    for name, spec in t.column_specs().items():
        if spec.is_const:
            return f"column {t.table}.{name} is a constant, not a legacy column"
        if isinstance(spec.from_, list):
            return f"column {t.table}.{name} is derived from {', '.join(spec.from_)}"
        if spec.transforms:
            names = [x if isinstance(x, str) else next(iter(x)) for x in spec.transforms]
            return (
                f"column {t.table}.{name} is transformed ({', '.join(names)}), which has no inverse"
            )
        if spec.default is not None:
            return f"column {t.table}.{name} replaces NULL by a default (NULL cannot come back)"
        if spec.cast and spec.on_error != "reject":
            return f"column {t.table}.{name} casts with on_error: {spec.on_error} (failed casts lost the value)"
        src = spec.from_ or name
        if src in cols.values():
            other = next(k for k, v in cols.items() if v == src)
            return f"legacy column {src} feeds both {t.table}.{other} and {t.table}.{name}"
        cols[name] = src
        if spec.cast:
            casts[name] = spec.cast
    return TableInverse(table, t.table, cols, t.include_unmapped, casts)


def plan(settings: Settings, tables: list[str] | None = None) -> FallbackPlan:
    """Which tables can go back, and how; ``tables`` (legacy names) defaults to
    ``fallback.tables`` or every table."""
    wanted = tables or settings.fallback.tables or list(settings.tables)
    mapping = settings.mapping
    writers: dict[str, list[str]] = {}
    for src, src_tm in (mapping.tables if mapping else {}).items():
        for tgt in src_tm.targets:
            writers.setdefault(tgt.table, []).append(src)
    inverses: list[TableInverse] = []
    refused: dict[str, str] = {}
    for table in wanted:
        if table in settings.sync.append_only_tables:
            refused[table] = (
                "it has no primary key (sync.append_only_tables), so changes cannot be keyed back"
            )
            continue
        tm = mapping.tables.get(table) if mapping else None
        inv = invert_table(table, tm, mapping, writers)
        if isinstance(inv, str):
            refused[table] = inv
        else:
            inverses.append(inv)
    return FallbackPlan(inverses, refused)


def reverse_settings(settings: Settings, fallback_plan: FallbackPlan) -> Settings:
    """The forward configuration turned around (see the module docstring).

    Built with ``model_copy``, not re-validated from the environment: ``CROSSFADE_SOURCE__DSN``
    and friends name the forward roles and must not leak into the reversed ones.
    """
    fb = settings.fallback
    cap = settings.capture
    capture = CaptureConfig(
        slot_name=fb.slot_name or f"{cap.slot_name}_fallback",
        publication_name=fb.publication_name or f"{cap.publication_name}_fallback",
        state_dir=fb.state_dir or Path(f"{cap.state_dir}-fallback"),
        snapshot_mode="initial",
        # the reverse sync keeps legacy's positions in a side table: the COPY load, which writes
        # _cf_pos into target tables, must not run into legacy tables
        initial_load="debezium",
        heartbeat_interval_ms=cap.heartbeat_interval_ms,
        stop_timeout_s=cap.stop_timeout_s,  # one bound for a stop, either way (the pod's grace)
        fence_table=True,
        signal_table=False,  # verify --repair is forward only
        properties={"column.exclude.list": EXCLUDED_COLUMNS},
    )
    sync = settings.sync.model_copy(
        update={
            "group_id": fb.group_id or f"{settings.sync.group_id}-fallback",
            "bookkeeping_schema": fb.bookkeeping_schema,
            "create_tables": False,
            "append_only_tables": [],
            "tag_origin": True,
        }
    )
    return settings.model_copy(
        update={
            "source": settings.target,
            "target": settings.source,
            "kafka": settings.kafka.model_copy(
                update={
                    "topic_prefix": fb.topic_prefix or f"{settings.kafka.topic_prefix}.fallback"
                }
            ),
            "tables": [i.new for i in fallback_plan.inverses],
            "mapping": None,
            "capture": capture,
            "sync": sync,
            "cutover": CutoverConfig(),
            "ops": settings.ops.model_copy(
                update={"metrics_port": fb.metrics_port, "console_port": None}
            ),
        }
    )


def reversed_for(
    settings: Settings, tables: list[str] | None = None, *, subset: bool = False
) -> tuple[Settings, FallbackPlan]:
    """Plan and reverse in one step; refuse (:class:`NotInvertible`) unless every wanted table
    is invertible or ``subset`` says to go on with the invertible ones."""
    p = plan(settings, tables)
    if p.refused and not subset:
        raise p.refusal()
    if not p.inverses:
        raise NotInvertible(
            "no table can fall back: " + "; ".join(f"{t}: {w}" for t, w in p.refused.items())
        )
    return reverse_settings(settings, p), p
