"""The tests' wait_for: a diagnosis given as a callable is taken at the timeout, not before the
wait (test_fault_35's failure showed capture's state as the wait began, and misled)."""

from __future__ import annotations

import time

import pytest

from tests.conftest import wait_for


def test_the_diagnosis_is_taken_at_the_timeout() -> None:
    t0 = time.monotonic()
    taken: list[float] = []

    def diag() -> str:
        taken.append(time.monotonic() - t0)
        return "the thing\n--- where it stands now"

    with pytest.raises(AssertionError, match="waiting for the thing\\n--- where it stands now"):
        wait_for(lambda: False, 0.3, diag, interval=0.05)
    assert len(taken) == 1 and taken[0] >= 0.3


def test_a_true_predicate_needs_no_diagnosis() -> None:
    assert wait_for(lambda: 7, 1, lambda: pytest.fail("diagnosed without a timeout")) == 7
