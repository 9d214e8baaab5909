"""Off-peak pacing (crossfade.capture.pacing): window arithmetic across midnight and zones, the
token bucket, and the pacer's blocking on an injected clock (no real sleeps)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from crossfade.capture.pacing import Pacer, Schedule, TokenBucket, Window, duration
from crossfade.config import CaptureConfig, validation_messages


def utc(h: int, m: int = 0, day: int = 4) -> datetime:
    return datetime(2026, 12, day, h, m, tzinfo=UTC)


def test_window_crossing_midnight() -> None:
    w = Window.parse("22:00-06:00")
    assert w.is_open(utc(23)) and w.is_open(utc(0, 30)) and w.is_open(utc(5, 59))
    assert not w.is_open(utc(6)) and not w.is_open(utc(12)) and not w.is_open(utc(21, 59))
    assert w.next_open(utc(12)) == utc(22)
    assert w.next_open(utc(23)) == utc(23)
    assert w.closes_at(utc(23)) == utc(6, day=5)
    assert w.closes_at(utc(1)) == utc(6)
    assert w.closes_at(utc(12)) is None


def test_window_in_a_zone_and_same_day() -> None:
    w = Window.parse("22:00-06:00 Europe/Berlin")  # UTC+1 in December
    assert w.is_open(utc(21)) and not w.is_open(utc(20, 59))
    assert w.next_open(utc(12)) == utc(21)
    day = Window.parse("09:30-17:00", "America/New_York")  # UTC-5
    assert day.is_open(utc(15)) and not day.is_open(utc(22, 30))
    assert day.next_open(utc(22, 30)) == utc(14, 30, day=5)
    assert Window.parse("00:00-00:00").is_open(utc(13))
    assert day.label == "09:30-17:00 America/New_York"


def test_schedule_soonest_window_and_description() -> None:
    s = Schedule.parse(["22:00-06:00 Europe/Berlin", "12:00-13:00"])
    now = utc(17, 48)
    at, w = s.next_open(now) or (None, None)
    assert at == utc(21) and w is not None and w.zone == "Europe/Berlin"
    assert s.describe(now) == "waiting for window 22:00-06:00 Europe/Berlin, opens in 3h12m"
    assert s.describe(utc(12, 15)) == "inside window 12:00-13:00 UTC, closes in 45m00s"
    assert Schedule().is_open(now) and Schedule().next_open(now) is None


def test_duration() -> None:
    assert duration(11_520) == "3h12m" and duration(245) == "4m05s" and duration(3) == "3s"


def test_token_bucket_on_a_clock() -> None:
    t = [0.0]
    b = TokenBucket(100, clock=lambda: t[0])
    assert b.take(100) == 0  # one second's burst
    assert b.take(50) == pytest.approx(0.5)
    t[0] = 0.5  # the debt is paid
    assert b.take(100) == pytest.approx(1.0)
    t[0] = 10  # a long idle refills one second's worth, not ten
    assert b.take(100) == 0 and b.take(1) == pytest.approx(0.01)
    assert TokenBucket(0, clock=lambda: t[0]).take(10**9) == 0


def test_pacer_waits_for_window_then_rate() -> None:
    """The pacer sleeps through its injected wait: a closed window is waited out, then the cap
    keeps 6000 rows at 2000 rows/s from finishing in under 2 s of (simulated) time."""
    clock = [0.0]
    start = utc(21, 59)
    waits: list[float] = []

    def wait(s: float) -> bool:
        waits.append(s)
        clock[0] += s
        return False

    p = Pacer(
        Schedule.parse(["22:00-06:00"]),
        2000,
        clock=lambda: clock[0],
        wall=lambda: start + timedelta(seconds=clock[0]),
        wait=wait,
    )
    st = p.state()
    assert st["paused"] and st["next_window"] == "22:00-06:00 UTC" and st["next_window_s"] == 60
    for _ in range(6):
        assert p.admit(1000) is False
    assert waits[0] == 60  # the window
    assert clock[0] - 60 == pytest.approx(2.0)  # 6000 rows, 2000 of them the first second's burst
    assert not p.state()["paused"] and p.paused_since is None


def test_pacer_stops_while_waiting() -> None:
    p = Pacer(Schedule.parse(["22:00-06:00"]), None, wall=lambda: utc(12), wait=lambda s: True)
    assert p.admit(1) is True and p.paused_since == utc(12)


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("load_windows", ["25:00-01:00"], "'25:00-01:00' that is not HH:MM-HH:MM"),
        ("load_windows", ["22:00-06:00 Mars/Olympus"], "unknown time zone 'Mars/Olympus'"),
        ("load_timezone", "Berlin", "unknown time zone 'Berlin'"),
        ("load_rate", -5, "load_rate Input should be greater than or equal to 0 (got -5)"),
    ],
)
def test_bad_settings_one_line(field: str, value: object, says: str) -> None:
    with pytest.raises(ValidationError) as err:
        CaptureConfig.model_validate({field: value})
    msgs = validation_messages(err.value)
    assert len(msgs) == 1 and "\n" not in msgs[0] and says in msgs[0], msgs
