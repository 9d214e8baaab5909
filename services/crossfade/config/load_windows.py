"""Load windows (``capture.load_windows``, ``capture.load_timezone``): a window's text and its
time zone, checked when the settings load and read by capture's pacing."""

from __future__ import annotations

import re
from typing import Any


def time_zone(name: str) -> Any:
    """The ``zoneinfo.ZoneInfo`` of an IANA name; ValueError naming it when unknown."""
    import zoneinfo

    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"names an unknown time zone {name!r} (an IANA name, e.g. Europe/Berlin or UTC)"
        ) from None


_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})(?:\s+(\S+))?\s*$")


def parse_load_window(text: str, zone: str) -> tuple[int, int, str]:
    """``"22:00-06:00 [Zone/Name]"`` -> (start minute of the day, end minute, zone name; ``zone``
    when the text names none). ValueError naming the text when it is not one."""
    m = _WINDOW.match(text)
    bad = (
        f"has a window {text!r} that is not HH:MM-HH:MM with an optional IANA zone "
        '(e.g. "22:00-06:00" or "22:00-06:00 Europe/Berlin")'
    )
    if m is None:
        raise ValueError(bad)
    h1, m1, h2, m2 = (int(g) for g in m.groups()[:4])
    if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
        raise ValueError(bad)
    name = m.group(5) or zone
    try:
        time_zone(name)
    except ValueError:
        raise ValueError(
            f"has a window {text!r} naming an unknown time zone {name!r} "
            "(an IANA name, e.g. Europe/Berlin or UTC)"
        ) from None
    return h1 * 60 + m1, (h2 * 60 + m2) % 1440, name
