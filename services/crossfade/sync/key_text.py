"""A key as sync writes it down: stable JSON text, one spelling for the ledger's entries, the
tombstones of mapped targets, the crosswalk of deduplicated ones and parents' identity
(``key_text([value])``). Its own module because the writers (:mod:`~crossfade.sync.sinks`),
the parents they check (:mod:`crossfade.sync.parents`) and verify all spell keys this way."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any
from uuid import UUID

from crossfade.mapping.engine import jsonable

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
"""``json.dumps`` with these options builds an encoder per call; keys are made per row and per
parent reference, so one is kept (the same text)."""

_encode_str = json.encoder.encode_basestring
"""What ``_ENCODER`` (``ensure_ascii=False``) spells a string with."""


def key_text(values: Iterable[Any]) -> str:
    """A key as stable JSON text (ledger entries, tombstones of mapped targets).

    Keys of strings, ints and UUIDs (nearly all) are spelled here directly, the text
    ``_ENCODER`` gives them: the encoder's set-up and :func:`jsonable`'s walk per key were ~6% of
    sync's CPU in a mapped load (issue 22); anything else goes through the encoder."""
    vals = values if type(values) is list or type(values) is tuple else list(values)
    parts = []
    for v in vals:
        t = type(v)
        if t is str:
            parts.append(_encode_str(v))
        elif t is int:
            parts.append(int.__repr__(v))
        elif t is UUID:
            parts.append('"' + str(v) + '"')  # hex digits and dashes: nothing to escape
        else:
            return _ENCODER.encode([jsonable(v) for v in vals])
    return "[" + ",".join(parts) + "]"
