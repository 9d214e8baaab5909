"""What every transform shares: the types, the error, and the text helpers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Transform = Callable[[Any], Any]
TransformFactory = Callable[..., Transform]

CACHE_SIZE = 16_384
"""Entries in each per-value cache of an expensive pure transform (email, phone): a mapped row
is often mapped again (an update that leaves the email as it was, a child mapped once more when
its parent was missing, verify), and parsing is most of what mapping a contact costs. Both
caches full hold about 7 MiB (the demo's addresses and numbers)."""


class TransformError(ValueError):
    """A value the transform cannot turn into a valid output (the message names the value)."""


def short_repr(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def text_of(v: Any, what: str) -> str:
    if isinstance(v, str):
        return v
    raise TransformError(f"{what} expects text, got {type(v).__name__} {short_repr(v)}")
