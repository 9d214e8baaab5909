"""A key as sync writes it down: stable JSON text, one spelling for the ledger's entries, the
tombstones of mapped targets, the crosswalk of deduplicated ones and parents' identity
(``key_text([value])``). Its own module because the writers (:mod:`~crossfade.sync.sinks`),
the parents they check (:mod:`crossfade.sync.parents`) and verify all spell keys this way."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from crossfade.mapping.engine import jsonable

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
"""``json.dumps`` with these options builds an encoder per call; keys are made per row and per
parent reference, so one is kept (the same text)."""


def key_text(values: Iterable[Any]) -> str:
    """A key as stable JSON text (ledger entries, tombstones of mapped targets)."""
    return _ENCODER.encode([jsonable(v) for v in values])
