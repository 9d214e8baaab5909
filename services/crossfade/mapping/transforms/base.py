"""What every transform shares: the types, the error, and the text helpers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Transform = Callable[[Any], Any]
TransformFactory = Callable[..., Transform]


class TransformError(ValueError):
    """A value the transform cannot turn into a valid output (the message names the value)."""


def short_repr(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def text_of(v: Any, what: str) -> str:
    if isinstance(v, str):
        return v
    raise TransformError(f"{what} expects text, got {type(v).__name__} {short_repr(v)}")
