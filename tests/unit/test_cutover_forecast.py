"""The write downtime forecast's arithmetic (crossfade.cutover.forecast): the parts of a run add
up to freeze -> end of flip, and the model turns a dry run's parts into the real run's."""

from __future__ import annotations

import pytest

from crossfade.cutover.forecast import (
    DeltaCost,
    FenceCost,
    Spans,
    fence_seconds,
    forecast,
    parts,
    verify_seconds,
)

ORDER = ["freeze", "fence", "row_counts", "verify", "sequences", "flip"]


def _spans(at: dict[str, float], flip_end: float) -> Spans:
    s = Spans(ORDER)
    for name, t in at.items():
        s.start(name, t)
    s.end("flip", flip_end)
    return s


RUN = {"verify_live": 0.0, "checkpoint": 20.0, "freeze": 20.5, "fence": 20.6, "row_counts": 21.4}
RUN |= {"verify": 22.1, "sequences": 24.1, "flip": 24.3}


def test_the_parts_run_from_one_step_start_to_the_next_and_add_up_to_the_span() -> None:
    s = _spans(RUN, flip_end=24.35)
    assert s.parts == pytest.approx(
        {"freeze": 0.1, "fence": 0.8, "row_counts": 0.7, "verify": 2.0, "sequences": 0.2}
        | {"flip": 0.05}
    )
    # steps before the freeze are not parts of the write downtime
    assert "verify_live" not in s.parts and "checkpoint" not in s.parts
    assert sum(s.parts.values()) == pytest.approx(24.35 - 20.5)
    # a real run reports them as measured
    assert parts(s, False, None, []) == s.parts


def test_no_parts_until_the_run_got_past_the_verify() -> None:
    s = Spans(ORDER)
    s.start("freeze", 1.0)
    s.start("fence", 1.1)
    s.start("row_counts", 2.0)
    assert parts(s, True, None, []) == {} and parts(s, False, None, []) == {}


def test_the_verify_leaves_out_the_live_rechecks_and_scales_the_comparison_to_the_freeze() -> None:
    # snapshots at 0 s, freeze at 20.5 s, the dry run's scan at 22.1 s: the real run finds the
    # keys written in 20.5 of those 22.1 seconds; the scan and the rest stay as measured
    cost = DeltaCost(live_only=0.6, compare=0.5, keys=2000, scanned_at=22.1)
    got = verify_seconds(2.0, cost, live_verify_started=0.0, freeze_at=20.5)
    assert got == pytest.approx(2.0 - 0.6 - 0.5 + 0.5 * 20.5 / 22.1)
    # without the times (a verify that scanned nothing) only the live-only time goes
    assert verify_seconds(2.0, DeltaCost(0.6, 0.5, 0, None), 0.0, 20.5) == pytest.approx(1.4)
    # never below zero, never scaled up
    assert verify_seconds(0.1, DeltaCost(0.6, 0.0, 0, None), 0.0, 1.0) == 0.0
    assert verify_seconds(1.0, DeltaCost(0, 0.5, 9, 5.0), 0.0, 9.0) == pytest.approx(1.0)


def test_the_dry_run_forecast_takes_the_parts_as_measured_but_the_verify_modelled() -> None:
    s = _spans(RUN, flip_end=24.301)
    cost = DeltaCost(live_only=0.6, compare=0.5, keys=2000, scanned_at=22.1)
    f = forecast(s, delta=cost, excluded=["flip_command"])
    assert f.steps == pytest.approx(
        {
            "freeze": 0.1,  # the stand-in transaction and the step's audit row
            "fence": 0.8,
            "row_counts": 0.7,
            "verify": 2.0 - 0.6 - 0.5 + 0.5 * 20.5 / 22.1,
            "sequences": 0.2,
            "flip": 0.001,
        }
    )
    assert f.seconds == pytest.approx(sum(f.steps.values())) and f.excluded == ["flip_command"]
    assert parts(s, True, cost, []) == f.steps


def test_forecast_evidence_keeps_the_parts_in_order() -> None:
    from crossfade.cutover import forecast

    assert forecast.evidence(None, {"fence": 1.0}, []) is None  # no forecast: nothing to keep
    ev = forecast.evidence(2.34567, {"freeze": 0.1, "fence": 1.2, "verify": 1.04567}, ["flip_http"])
    assert ev == {
        "expected_downtime_seconds": 2.346,
        "expected_downtime_parts": [["freeze", 0.1], ["fence", 1.2], ["verify", 1.046]],
        "forecast_excludes": ["flip_http"],
    }


def test_the_dry_runs_fence_part_is_forecast_from_the_faster_of_its_two_fences() -> None:
    # the fence step's part (0.8 s) holds both fences (0.5 s, then 0.2 s) and its bookkeeping
    # (0.1 s): the real run's fence, with writes stopped, is like the faster, so the slower is
    # left out, whichever of the two it was
    s = _spans(RUN, flip_end=24.301)
    fences = FenceCost(first=0.5, second=0.2)
    assert fences.used == "second" and FenceCost(0.2, 0.5).used == "first"
    f = forecast(s, delta=None, excluded=[], fence=fences)
    assert f.steps["fence"] == pytest.approx(0.8 - 0.5)
    assert fence_seconds(0.8, fences) == pytest.approx(0.3)
    assert fence_seconds(0.8, FenceCost(0.2, 0.5)) == pytest.approx(0.3)
    assert fence_seconds(0.8, FenceCost(0.35, 0.35)) == pytest.approx(0.45)
    # the other parts as before; one fence (a run before this model): taken as measured
    others = forecast(s, delta=None, excluded=[])
    assert others.steps["fence"] == pytest.approx(0.8)
    assert {k: v for k, v in f.steps.items() if k != "fence"} == pytest.approx(
        {k: v for k, v in others.steps.items() if k != "fence"}
    )
    assert parts(s, True, None, [], fences) == f.steps
    # a real run's parts stay as measured
    assert parts(s, False, None, [], fences)["fence"] == pytest.approx(0.8)
    assert fence_seconds(0.4, FenceCost(0.5, 0.2)) == 0.0  # never below zero


def test_the_fence_taken_leaves_out_its_spread() -> None:
    # beside the writes sync applies what came after the fence row on the partitions it polls
    # before the last marker; frozen, nothing follows the markers: the time from the first
    # partition's record to the last one's (the spread) is left out of the fence taken
    s = _spans(RUN, flip_end=24.301)
    fences = FenceCost(first=0.5, second=0.2, first_spread=0.1, second_spread=0.05)
    assert fences.firsts == pytest.approx((0.4, 0.15)) and fences.used == "second"
    # 0.1 s bookkeeping + the second fence (0.2 s) less its spread (0.05 s)
    assert fence_seconds(0.8, fences) == pytest.approx(0.25)
    assert forecast(s, delta=None, excluded=[], fence=fences).steps["fence"] == pytest.approx(0.25)
    # the slower call can be the nearer: most of it was its spread
    mostly_spread = FenceCost(first=0.5, second=0.2, first_spread=0.4, second_spread=0.0)
    assert mostly_spread.used == "first" and fence_seconds(0.8, mostly_spread) == pytest.approx(0.2)
    assert fence_seconds(0.8, FenceCost(0.5, 0.2)) == pytest.approx(0.3)  # no spread: as before


def test_forecast_evidence_says_which_fence_the_forecast_took() -> None:
    from crossfade.cutover import forecast as fc

    ev = fc.evidence(1.0, {"fence": 0.3}, [], FenceCost(0.6504, 0.2996, 0.1, 0.0502))
    assert ev is not None and ev["dry_run_fences"] == {
        "first_s": 0.65,
        "second_s": 0.3,
        "first_spread_s": 0.1,
        "second_spread_s": 0.05,
        "forecast_from": "second",
    }
    assert fc.evidence(1.0, {}, [], FenceCost(0.3, 0.4))["dry_run_fences"]["forecast_from"] == (  # type: ignore[index]
        "first"
    )
    assert "dry_run_fences" not in (fc.evidence(1.0, {"fence": 0.3}, []) or {})
