"""What sync says while it joins the consumer group, and how it reports expected rejects."""

from __future__ import annotations

import logging

import pytest

from crossfade.sync.progress_log import JoinProgress, RejectLog


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records]


def test_joining_the_group_is_never_silent(caplog: pytest.LogCaptureFixture) -> None:
    """~15 s without a word while the broker answers JoinGroup read as a hang."""
    caplog.set_level(logging.INFO, logger="crossfade.sync.worker")
    clock = Clock()
    j = JoinProgress("crossfade-sync", 3, every_s=5, clock=clock)
    for _ in range(16):  # a tick per consume, one a second, no assignment for 15 s
        j.tick(False)
        clock.t += 1
    j.tick(True)
    j.tick(True)
    lines = _lines(caplog)
    assert lines[0] == (
        "INFO",
        "joining consumer group crossfade-sync for 3 topic(s): waiting for the broker's "
        "partition assignment",
    )
    still = [m for _, m in lines if m.startswith("still joining")]
    assert [m.split("(")[1].split(")")[0] for m in still] == ["5 s", "10 s", "15 s"]
    assert lines[-1] == ("INFO", "joined consumer group crossfade-sync in 16.0 s")
    assert len(lines) == 5  # nothing more once joined
    caplog.clear()
    j.tick(False)  # a rebalance takes the assignment away
    assert _lines(caplog)[0][1].startswith("rebalancing: rejoining consumer group crossfade-sync")


def test_a_join_begun_before_the_loop_counts_from_its_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The worker subscribes before it sets up the target (the join goes on meanwhile): the
    join's time counts from the subscription, and its start is not announced twice."""
    caplog.set_level(logging.INFO, logger="crossfade.sync.worker")
    clock = Clock()
    j = JoinProgress("crossfade-sync", 3, every_s=5, clock=clock, since=clock.t - 2)
    for _ in range(4):
        j.tick(False)
        clock.t += 1
    j.tick(True)
    lines = _lines(caplog)
    assert lines[0][1].startswith("still joining consumer group crossfade-sync (5 s)")
    assert lines[-1] == ("INFO", "joined consumer group crossfade-sync in 6.0 s")
    assert len(lines) == 2


def test_expected_rejects_are_info_with_a_summary_per_rule(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """90 rows failing a rule were 90 ERROR lines; now a few INFO lines and a summary."""
    caplog.set_level(logging.INFO, logger="crossfade.sync.worker")
    clock = Clock()
    rejects = RejectLog(period_s=60, first=3, clock=clock)
    for i in range(90):
        rejects.note("public.contacts", "email.required", f'["{i}"]', "email is required")
    rejects.note("public.accounts", "name.min_length", '["7"]', "too short")
    rejects.flush()  # the period is not over
    clock.t += 61
    rejects.flush()
    lines = _lines(caplog)
    assert not [m for lvl, m in lines if lvl == "ERROR"]
    info = [m for lvl, m in lines if lvl == "INFO"]
    assert len(info) == 4  # the first three of one rule, the first of the other
    assert info[0] == (
        'dead-lettered public.contacts key ["0"] (rule email.required): email is required'
    )
    assert info[2].endswith("(further ones of this rule are summed up each minute)")
    summary = [m for lvl, m in lines if lvl == "WARNING"]
    assert summary == [
        "1 row(s) of public.accounts dead-lettered by rule name.min_length in the last 61 s "
        "(crossfade dlq list shows them; fix and replay, or dlq ack)",
        "90 row(s) of public.contacts dead-lettered by rule email.required in the last 61 s "
        "(crossfade dlq list shows them; fix and replay, or dlq ack)",
    ]
    caplog.clear()
    rejects.flush(force=True)  # nothing new: no line
    rejects.note("public.contacts", "email.required", '["91"]', "email is required")
    assert _lines(caplog)[0][0] == "INFO"  # a new period: shown again


def test_every_dead_letter_stays_at_debug_and_undecodable_ones_are_bounded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each undecodable record was an ERROR line of its own (57k lines, 16 MB in a 1M-row load):
    now the first few per table at ERROR, a summary per table each period, every one at DEBUG;
    the expected rejects beyond the first few are at DEBUG too (``-v`` shows each)."""
    caplog.set_level(logging.DEBUG, logger="crossfade.sync.worker")
    clock = Clock()
    rejects = RejectLog(period_s=60, first=3, clock=clock)
    for i in range(500):
        rejects.undecodable("public.accounts", "cf.public.accounts", i % 4, i, "bad bytes")
    rejects.undecodable("public.contacts", "cf.public.contacts", 0, 9, "unknown schema")
    for i in range(10):
        rejects.note("public.contacts", "email.required", f'["{i}"]', "email is required")
    clock.t += 61
    rejects.flush()
    lines = _lines(caplog)
    errors = [m for lvl, m in lines if lvl == "ERROR"]
    assert errors[:3] == [
        f"dead-lettered cf.public.accounts[{i}]@{i}: bad bytes" for i in range(2)
    ] + [
        "dead-lettered cf.public.accounts[2]@2: bad bytes "
        "(further ones of this table are summed up each minute)"
    ]
    assert errors[3:] == [
        "dead-lettered cf.public.contacts[0]@9: unknown schema",
        "500 undecodable record(s) of public.accounts dead-lettered in the last 61 s "
        "(crossfade dlq list shows them; fix the producer or schema and replay)",
        "1 undecodable record(s) of public.contacts dead-lettered in the last 61 s "
        "(crossfade dlq list shows them; fix the producer or schema and replay)",
    ]
    debug = [m for lvl, m in lines if lvl == "DEBUG"]
    assert len(debug) == 497 + 7  # every one beyond the first few, one line each
    assert "dead-lettered cf.public.accounts[3]@499: bad bytes" in debug
    assert (
        'dead-lettered public.contacts key ["9"] (rule email.required): email is required' in debug
    )
    caplog.clear()
    caplog.set_level(logging.INFO, logger="crossfade.sync.worker")
    rejects.undecodable("public.accounts", "cf.public.accounts", 1, 501, "bad bytes")
    assert _lines(caplog) == [("ERROR", "dead-lettered cf.public.accounts[1]@501: bad bytes")]
