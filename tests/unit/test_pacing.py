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


class _Producer:
    """Stands in for confluent_kafka's Producer: records what was produced, and when."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def produce(self, topic: str, **kw: object) -> None:
        self.log.append("produce")

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0


def test_debezium_snapshot_waits_for_its_window_and_pays_the_rate_after_the_batch() -> None:
    """Debezium's snapshot path (initial_load: debezium): the handler holds before the batch's
    first snapshot row while the window is closed, and after the batch for the rate cap."""
    import json
    from pathlib import Path

    from crossfade.capture.service import ChangeProducer
    from tests.unit.test_capture_batch import _Rec
    from tests.unit.test_capture_encode import _Publisher, _settings

    rec = json.loads((Path(__file__).with_name("debezium_record.json")).read_text())
    log: list[str] = []
    clock = [0.0]

    def wait(s: float) -> bool:
        log.append(f"wait {s:g}")
        clock[0] += s
        return False

    pacer = Pacer(
        Schedule.parse(["22:00-06:00"]),
        2,
        clock=lambda: clock[0],
        wall=lambda: utc(21, 59) + timedelta(seconds=clock[0]),
        wait=wait,
    )
    topics = {"cf.public.t": 1, "crossfade.public.t": 1}  # the record's, the sweep's
    prod = ChangeProducer(_settings(), _Publisher(), topics)  # type: ignore[arg-type]
    prod.producer = _Producer(log)  # type: ignore[assignment]
    prod.pacer = pacer
    prod.handle([_Rec("cf.public.t", rec["key"], rec["value"])] * 5)
    # the window first (60 s of the injected clock), then five rows, then 5 rows at 2 rows/s
    # with two of them the first second's burst: 1.5 s
    assert log == ["wait 60", *["produce"] * 5, "wait 1.5"], log
    # a streamed batch (no snapshot flag) is neither held by a window nor by the cap
    streamed = json.loads(rec["value"])
    streamed["payload"]["source"]["snapshot"] = "false"
    log.clear()
    clock[0] = 3600.0 * 10  # 07:59: outside the window
    prod.handle([_Rec("cf.public.t", rec["key"], json.dumps(streamed))] * 3)
    assert log == ["produce"] * 4, log  # the end-of-snapshot sweep marker, then the three


def test_the_end_of_snapshot_sweep_marker_says_how_many_partitions_it_went_to() -> None:
    """Sync applies a sweep once every partition passed its marker (issue 22): the marker, sent
    to each partition of the table's topic, carries their count."""
    import json
    from pathlib import Path

    from crossfade.capture.service import ChangeProducer
    from crossfade.events.kafka import ControlRecord
    from tests.unit.test_capture_batch import _Rec
    from tests.unit.test_capture_encode import _Publisher, _settings

    rec = json.loads((Path(__file__).with_name("debezium_record.json")).read_text())
    sent: list[tuple[str, int | None, bytes]] = []

    class Producer(_Producer):
        def produce(self, topic: str, **kw: object) -> None:
            sent.append((topic, kw.get("partition"), kw["value"]))  # type: ignore[arg-type]

    prod = ChangeProducer(_settings(), _Publisher(), {"cf.public.t": 3, "crossfade.public.t": 3})  # type: ignore[arg-type]
    prod.producer = Producer([])  # type: ignore[assignment]
    streamed = json.loads(rec["value"])
    streamed["payload"]["source"]["snapshot"] = "false"
    prod.handle([_Rec("cf.public.t", rec["key"], rec["value"])])  # a snapshot row
    prod.handle([_Rec("cf.public.t", rec["key"], json.dumps(streamed))])  # the stream follows
    markers = [(t, p, ControlRecord.decode(v)) for t, p, v in sent if t == "crossfade.public.t"]
    assert [(p, m.kind, m.partitions) for _t, p, m in markers] == [
        (0, "sweep", 3),
        (1, "sweep", 3),
        (2, "sweep", 3),
    ]
    # a marker of an older capture carries no count: 0, sync then counts the claimed partitions
    old = json.dumps({"kind": "sweep", "table": "public.t", "lsn": 5}).encode()
    assert ControlRecord.decode(old).partitions == 0
