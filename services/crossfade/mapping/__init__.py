"""Declarative mapping and data quality: what a legacy row becomes in the new database.

The API the other parts use:

* :class:`~crossfade.config.mapping.MappingConfig` — the ``mapping:`` config section.
* :func:`~crossfade.mapping.schema_check.load_mapper` — build the :class:`Mapper` with the legacy
  primary keys and check it against both catalogs (call at startup, raise on its errors).
* :meth:`Mapper.map_row` — a source row (normal form) -> :class:`Mapped` | :class:`Rejected` |
  :class:`Filtered`; :meth:`Mapper.map_key` — a source key -> target keys (deletes).
* :func:`~crossfade.mapping.values.event_row` / :func:`~crossfade.mapping.values.event_key` —
  a Debezium change event in the normal form the mapper takes.
* :mod:`crossfade.mapping.dedup` — match rules, survivorship, the crosswalk design.
* :mod:`crossfade.mapping.filters` and :mod:`crossfade.mapping.literals` — filters, and the
  literals of filters and rules checked against their column's type.
* :mod:`crossfade.mapping.reference` — docs/mapping.md, generated from the model.
"""

from crossfade.config.mapping import install_check
from crossfade.mapping.check import check_mapping
from crossfade.mapping.engine import (
    Failure,
    Filtered,
    KeySets,
    Mapped,
    Mapper,
    Outcome,
    ParentKeys,
    Rejected,
    TargetRow,
    compile_mapping,
)

# the model (ground floor) validates a mapping's names through the engine's check
install_check(check_mapping)

__all__ = [
    "Failure",
    "Filtered",
    "KeySets",
    "Mapped",
    "Mapper",
    "Outcome",
    "ParentKeys",
    "Rejected",
    "TargetRow",
    "compile_mapping",
]
