"""verify of an append-only table (no key) fences only when the legacy's first read (S1) holds a
row: with none at S1 no row can be missing from the target, and a row of the target the legacy's
second read (S2, after the target's) lacks is extra whether or not a fence came between (issue 22:
a fresh load's verify paid a fence for pgbench's empty history table)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import Stack

pytestmark = pytest.mark.integration


def test_an_empty_log_table_needs_no_fence_and_a_filled_one_gets_it(
    stack_factory: Callable[..., Stack],
) -> None:
    from crossfade.verify.fence import fence
    from crossfade.verify.run import Verifier

    stack = stack_factory(append_only_tables=["public.log"])
    stack.sql("CREATE TABLE public.log (at int NOT NULL, what text)")
    stack.write_config(["public.log"])
    stack.start("capture")
    sync = stack.start("sync")
    stack.fence()
    settings = stack.settings
    fences: list[str] = []

    def counted() -> tuple[str, float]:
        r = fence(settings, timeout=120, via="verify")
        fences.append(r.token)
        return r.token, r.seconds

    rep = Verifier(settings, fence=counted).run()
    assert rep.match and len(fences) == 0, rep.as_dict()

    stack.sql("INSERT INTO log VALUES (1, 'one')")
    rep = Verifier(settings, fence=counted).run()
    assert rep.match and len(fences) == 1, rep.as_dict()
    assert rep.tables[0].source_rows == rep.tables[0].target_rows == 1

    # the legacy loses the row behind sync's back: empty at S1 again, and the target's row is
    # still found extra without a fence
    assert sync.stop() == 0
    stack.sql("TRUNCATE log")
    rep = Verifier(settings, fence=counted).run()
    log = rep.tables[0]
    assert (log.missing, log.extra, log.source_rows, log.target_rows) == (0, 1, 0, 1), rep.as_dict()
    assert not rep.match and len(fences) == 1
