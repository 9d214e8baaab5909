"""The console's charts from its own samples: the window, the downsampling, the applied rate."""

from __future__ import annotations

from crossfade.ops.console_history import POINTS, SampleHistory


def test_samples_keep_the_window_and_at_most_points() -> None:
    h = SampleHistory(window_s=900)
    for i in range(1000):  # a sample a second for 1000 s, 10 events applied a second
        h.add(float(i), "public.a", legacy=100 + i, new=99 + i, applied=10 * i, behind=i % 3)
    s = h.series("public.a")
    assert set(s) == {"legacy", "new", "rate", "lag"}
    times = [t for t, _ in s["legacy"]]
    assert times[-1] == 999 and times[0] >= 999 - 900  # older samples left the window
    assert len(times) <= POINTS + 1
    assert all(abs(v - 10) < 1e-9 for _, v in s["rate"])  # 10 events a second throughout
    assert s["new"][-1] == [999.0, 1098]
    assert h.rate_now("public.a") == 10.0
    assert h.series("public.unknown") == {"legacy": [], "new": [], "rate": [], "lag": []}


def test_rate_needs_two_samples_a_second_apart() -> None:
    h = SampleHistory()
    h.add(0.0, "t", legacy=1, new=1, applied=5, behind=None)
    assert h.rate_now("t") is None
    h.add(0.5, "t", legacy=1, new=1, applied=6, behind=None)
    assert h.rate_now("t") is None
    h.add(2.0, "t", legacy=1, new=1, applied=25, behind=None)
    assert h.rate_now("t") == 10.0
    # a rewind makes the applied total fall: no negative rate
    h.add(3.0, "t", legacy=1, new=1, applied=0, behind=None)
    assert min(v for _, v in h.series("t")["rate"]) == 0
