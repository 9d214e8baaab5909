"""``crossfade.ops.cli.tune_gc``, what every long-running command does to the garbage collector:
start-up's objects frozen, and gen0 waiting for more net allocations than a sync batch of 5,000
mapped rows holds (it ran one collection over each such batch at 50,000: ~3% of sync's CPU in
bench.mapped_batch_cpu, none at 200,000; GEN0_THRESHOLD's docstring)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from crossfade.ops.cli import GEN0_THRESHOLD, tune_gc


@pytest.fixture
def collector() -> Iterator[None]:
    before = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


@pytest.mark.usefixtures("collector")
def test_gen0_waits_beyond_a_mapped_batch() -> None:
    gc.set_threshold(700, 10, 10)
    tune_gc()
    assert gc.get_threshold() == (GEN0_THRESHOLD, 10, 10)
    assert GEN0_THRESHOLD >= 200_000
    assert gc.get_freeze_count() > 0


@pytest.mark.usefixtures("collector")
def test_a_higher_threshold_is_kept() -> None:
    gc.set_threshold(10 * GEN0_THRESHOLD, 10, 10)
    tune_gc()
    assert gc.get_threshold()[0] == 10 * GEN0_THRESHOLD
