"""The console's charts: per table, the last 15 minutes of rows on both sides, applied rate and lag.

Two sources:

* :class:`SampleHistory`: the console's own samples (one per collection, every couple of
  seconds), kept in memory for the window; empty right after the console starts.
* :class:`PrometheusHistory` (``crossfade console --prometheus URL``): the applied rate and the
  consumer lag as Prometheus recorded them (``crossfade_sync_events_applied_total``,
  ``crossfade_sync_consumer_lag_records``), so the charts have 15 minutes of history at once
  and survive a restart of the console. Rows still come from the samples (Prometheus has only
  PostgreSQL's estimate of the legacy rows). A Prometheus that does not answer is reported on the
  page and the samples are shown instead.

Series are lists of ``[unix time, value]`` (value None for a gap), at most :data:`POINTS` long.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections import deque
from typing import Any

from crossfade.config import redact_url

WINDOW_S = 900.0
POINTS = 180
"""At most this many points per series sent to the page (one per 5 s over 15 minutes)."""

Series = list[list[float | None]]


class SampleHistory:
    """Per table: (time, legacy rows, new rows, events applied, records behind) samples of the
    window."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self._samples: dict[
            str, deque[tuple[float, float | None, float | None, float, float | None]]
        ] = {}

    def add(
        self,
        now: float,
        table: str,
        *,
        legacy: float | None,
        new: float | None,
        applied: float,
        behind: float | None,
    ) -> None:
        q = self._samples.setdefault(table, deque())
        q.append((now, legacy, new, applied, behind))
        while q and now - q[0][0] > self.window_s:
            q.popleft()

    def series(self, table: str) -> dict[str, Series]:
        """``legacy``, ``new``, ``rate`` (applied per second between samples) and ``lag``
        (records behind)."""
        q = list(self._samples.get(table, ()))
        step = max(1, -(-len(q) // POINTS))  # ceil: keep at most POINTS points
        picked = q[::step]
        if q and picked[-1] is not q[-1]:
            picked.append(q[-1])
        rate: Series = []
        for a, b in zip(picked, picked[1:], strict=False):
            dt = b[0] - a[0]
            rate.append([b[0], max(b[3] - a[3], 0) / dt if dt > 0 else None])
        return {
            "legacy": [[s[0], s[1]] for s in picked],
            "new": [[s[0], s[2]] for s in picked],
            "rate": rate,
            "lag": [[s[0], s[4]] for s in picked],
        }

    def rate_now(self, table: str, over_s: float = 30.0) -> float | None:
        """Events applied per second over the last ``over_s`` seconds (None: too few samples)."""
        q = self._samples.get(table)
        if not q or len(q) < 2:
            return None
        last = q[-1]
        first = next((s for s in q if last[0] - s[0] <= over_s), q[0])
        dt = last[0] - first[0]
        return max(last[3] - first[3], 0) / dt if dt >= 1 else None


class PrometheusHistory:
    """Applied rate and consumer lag per table from Prometheus' HTTP API (``query_range``),
    refreshed at most every ``every_s`` seconds; ``error`` says why the last fetch failed (None:
    it worked)."""

    RATE = "sum by (table) (rate(crossfade_sync_events_applied_total[1m]))"
    LAG = "sum by (table) (crossfade_sync_consumer_lag_records)"

    def __init__(self, url: str, every_s: float = 10.0, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.every_s = every_s
        self.timeout_s = timeout_s
        self.error: str | None = None
        self._at = 0.0
        self._data: dict[str, dict[str, Series]] = {}

    def series(self, now: float) -> dict[str, dict[str, Series]] | None:
        """table -> {"rate", "lag"}; None when Prometheus did not answer."""
        if now - self._at >= self.every_s:
            self._at = now
            try:
                data: dict[str, dict[str, Series]] = {}
                for key, query in (("rate", self.RATE), ("lag", self.LAG)):
                    for table, points in self._range(query, now).items():
                        data.setdefault(table, {})[key] = points
                self._data, self.error = data, None
            except (OSError, ValueError, KeyError) as exc:
                self.error = f"Prometheus at {redact_url(self.url)} did not answer ({exc}): own samples shown"
        return None if self.error else self._data

    def _range(self, query: str, now: float) -> dict[str, Series]:
        step = max(WINDOW_S / POINTS, 5.0)
        qs = urllib.parse.urlencode(
            {"query": query, "start": now - WINDOW_S, "end": now, "step": step}
        )
        with urllib.request.urlopen(  # noqa: S310 - the operator's Prometheus URL
            f"{self.url}/api/v1/query_range?{qs}", timeout=self.timeout_s
        ) as r:
            body = json.loads(r.read())
        if body.get("status") != "success":
            raise ValueError(body.get("error") or "query failed")
        out: dict[str, Series] = {}
        for res in body["data"]["result"]:
            table = res["metric"].get("table")
            if table:
                out[table] = [[float(t), _num(v)] for t, v in res["values"]]
        return out


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if f != f else f  # NaN: a gap
