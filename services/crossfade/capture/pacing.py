"""Off-peak pacing of the initial load: when it may run (``capture.load_windows``) and how fast
(``capture.load_rate``). Pure arithmetic on an injected clock; the one blocking call,
:meth:`Pacer.admit`, sleeps through an injected ``wait`` so tests run without real time.

Windows are local times of day in an IANA zone. ``22:00-06:00`` crosses midnight (open from 22:00
until 06:00 the next morning); ``00:00-00:00`` is the whole day. Around a DST change the local
times are taken as the zone reads them (a window starting in a skipped hour opens when the clock
reaches the next existing time).

The rate cap is a token bucket of ``rate`` tokens per second holding at most one second's worth:
a caller takes the rows it is about to move (or has just moved) and waits for the debt to clear,
so over any stretch longer than a second the rows moved stay under ``rate`` per second plus one
second's burst.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from crossfade.config import parse_load_window, time_zone


@dataclass(frozen=True)
class Window:
    """One off-peak window: ``start``/``end`` minutes of the local day in ``zone``."""

    start: int
    end: int
    zone: str
    text: str

    @classmethod
    def parse(cls, text: str, default_zone: str = "UTC") -> Window:
        start, end, zone = parse_load_window(text, default_zone)
        return cls(start, end, zone, text.strip())

    @property
    def label(self) -> str:
        """``22:00-06:00 Europe/Berlin``."""
        return f"{_hm(self.start)}-{_hm(self.end)} {self.zone}"

    def _local(self, now: datetime) -> datetime:
        return now.astimezone(time_zone(self.zone))

    def is_open(self, now: datetime) -> bool:
        t = self._local(now)
        m = t.hour * 60 + t.minute
        if self.start == self.end:
            return True
        if self.start < self.end:
            return self.start <= m < self.end
        return m >= self.start or m < self.end  # crosses midnight

    def _at(self, day: date, minute: int) -> datetime:
        z = time_zone(self.zone)
        local = datetime(day.year, day.month, day.day, minute // 60, minute % 60, tzinfo=z)
        # a time the zone skips (DST) is normalised to the next existing one by the round trip
        return local.astimezone(UTC).astimezone(z)

    def next_open(self, now: datetime) -> datetime:
        """When this window next opens (``now`` when it is open)."""
        if self.is_open(now):
            return now
        today = self._local(now).date()
        for d in (today, today + timedelta(days=1), today + timedelta(days=2)):
            at = self._at(d, self.start)
            if at > now:
                return at
        raise AssertionError("a daily window opens within two days")  # pragma: no cover

    def closes_at(self, now: datetime) -> datetime | None:
        """When this window closes, if open now (None: closed, or open all day)."""
        if self.start == self.end or not self.is_open(now):
            return None
        local = self._local(now)
        day = local.date()
        if self.start > self.end and local.hour * 60 + local.minute >= self.start:
            day += timedelta(days=1)
        return self._at(day, self.end)


def _hm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def duration(seconds: float) -> str:
    """``3h12m``, ``4m05s``, ``12s``."""
    s = int(max(0, round(seconds)))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


@dataclass(frozen=True)
class Schedule:
    """The windows of ``capture.load_windows``; none: always open."""

    windows: tuple[Window, ...] = ()

    @classmethod
    def parse(cls, texts: Sequence[str], default_zone: str = "UTC") -> Schedule:
        return cls(tuple(Window.parse(t, default_zone) for t in texts))

    def is_open(self, now: datetime) -> bool:
        return not self.windows or any(w.is_open(now) for w in self.windows)

    def next_open(self, now: datetime) -> tuple[datetime, Window] | None:
        """The soonest opening and its window (``now`` when one is open; None: no windows)."""
        if not self.windows:
            return None
        return min(((w.next_open(now), w) for w in self.windows), key=lambda x: x[0])

    def describe(self, now: datetime) -> str:
        """One line for people: ``open (22:00-06:00 Europe/Berlin, closes in 2h10m)`` or
        ``waiting for window 22:00-06:00 Europe/Berlin, opens in 3h12m``."""
        nxt = self.next_open(now)
        if nxt is None:
            return "no load window: any time"
        at, w = nxt
        if at <= now:
            closes = w.closes_at(now)
            return f"inside window {w.label}" + (
                f", closes in {duration((closes - now).total_seconds())}" if closes else ""
            )
        return f"waiting for window {w.label}, opens in {duration((at - now).total_seconds())}"


@dataclass
class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` held (default one second's worth)."""

    rate: float
    clock: Callable[[], float] = time.monotonic
    burst: float | None = None
    _tokens: float = field(init=False, default=0.0)
    _at: float | None = field(init=False, default=None)

    def take(self, n: float) -> float:
        """Take ``n`` tokens (going into debt if need be); seconds until the debt is paid (0:
        none). A bucket of rate 0 never makes anyone wait."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        cap = self.burst if self.burst is not None else self.rate
        if self._at is None:
            self._tokens = cap
        else:
            self._tokens = min(cap, self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens -= n
        return max(0.0, -self._tokens / self.rate)


class Pacer:
    """Windows and rate cap together, with what status and metrics show. Thread-safe: the COPY
    streams share one pacer (their shares of the rate add up to ``load_rate``)."""

    def __init__(
        self,
        schedule: Schedule,
        rate: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        wait: Callable[[float], Any] | None = None,
        held: Callable[[], bool] = lambda: False,
    ) -> None:
        """``wait(seconds)`` blocks at most that long and returns True when the caller must stop
        (a ``threading.Event().wait``; default: a private event, never set). ``held()`` True:
        an operator paused capture (``crossfade pause capture``): wait as for a closed window."""
        self._held = held
        self.schedule = schedule
        self.rate = rate or 0.0
        self.bucket = TokenBucket(self.rate, clock)
        self._wall = wall
        self._wait = wait if wait is not None else threading.Event().wait
        self._lock = threading.Lock()
        self.paused_since: datetime | None = None
        """Wall time the load began waiting for a window (None: not waiting)."""
        self.throttled_s = 0.0
        """Seconds spent waiting for the rate cap."""

    @classmethod
    def from_settings(cls, settings: Any, **kw: Any) -> Pacer:
        cap = settings.capture
        return cls(Schedule.parse(cap.load_windows, cap.load_timezone), cap.load_rate, **kw)

    @property
    def limited(self) -> bool:
        return bool(self.schedule.windows) or self.rate > 0

    def wait_window(self) -> bool:
        """Block until a window is open; True when told to stop meanwhile. Re-reads the clock at
        least once a minute (a window may open while the machine slept)."""
        while True:
            now = self._wall()
            nxt = self.schedule.next_open(now)
            held = self._held()
            if not held and (nxt is None or nxt[0] <= now):
                self.paused_since = None
                return False
            if self.paused_since is None:
                self.paused_since = now
            left = 1.0 if held or nxt is None else (nxt[0] - now).total_seconds()
            if self._wait(min(60.0, max(0.01, left))):
                return True

    def admit(self, rows: int) -> bool:
        """Before moving ``rows`` (or just after: the debt then delays the next move): wait for
        a window, then for the rate cap. True when told to stop meanwhile."""
        if self.wait_window():
            return True
        with self._lock:
            delay = self.bucket.take(rows)
        if delay > 0:
            self.throttled_s += delay
            return bool(self._wait(delay))
        return False

    def state(self) -> dict[str, Any]:
        """What status, the console and metrics show: paused (waiting for a window), the next
        window and seconds until it opens, the cap, one line for people."""
        now = self._wall()
        nxt = self.schedule.next_open(now)
        waiting = nxt is not None and nxt[0] > now
        return {
            "paused": waiting,
            "windows": [w.label for w in self.schedule.windows],
            "next_window": nxt[1].label if nxt else None,
            "next_window_s": round((nxt[0] - now).total_seconds(), 1) if waiting and nxt else 0,
            "rate_cap": self.rate or None,
            "throttled_s": round(self.throttled_s, 1),
            "summary": self.schedule.describe(now)
            + (f"; capped at {self.rate:g} rows/s" if self.rate else ""),
        }
