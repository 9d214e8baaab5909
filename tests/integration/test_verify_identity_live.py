"""verify's re-check of an identity table while the legacy keeps changing: a key whose legacy row
goes somewhere and back between the two legacy reads around the fence is in flight, not a
difference, and real differences in the same run are still found.

The re-check reads the legacy (S1), fences, reads the target (T), reads the legacy again (S2).
S1 == S2 by content does not mean the row held still: a row inserted after S1, applied, and
deleted after the fence (absent, present, absent), deleted after S1 and re-inserted after the fence
(present, absent, present) or updated A -> B -> A reads the same twice while the target rightly
holds the state in between. These interleavings are staged here deterministically: sync is
stopped before the run (the chunk pass finds the keys differing), the fence of the first re-check
round is wrapped to change the legacy before it (after S1), let sync apply that, stop sync and
change the legacy back (after the fence, before T).
"""

from __future__ import annotations

import json

import pytest

from tests.conftest import Proc, Stack

pytestmark = pytest.mark.integration

GONE, BACK, ABA = 101, 102, 103  # absent-present-absent, present-absent-present, A -> B -> A
MISSING, EXTRA, CHANGED = 1, 999, 3  # planted in the target, on keys the writer leaves alone


def test_a_row_gone_and_back_around_the_fence_is_in_flight_and_real_differences_are_found(
    stack: Stack,
) -> None:
    from crossfade.verify.fence import fence
    from crossfade.verify.run import Verifier

    stack.sql("CREATE TABLE public.items (id int PRIMARY KEY, v text NOT NULL)")
    stack.sql("INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 200) g")
    stack.write_config(["public.items"])
    stack.start("capture")
    procs: dict[str, Proc] = {"sync": stack.start("sync")}
    stack.fence()
    settings = stack.settings

    # real differences, planted behind sync's back; the extra carries a position sync wrote
    with stack.tgt() as t:
        t.execute("DELETE FROM items WHERE id = %s", (MISSING,))
        t.execute(
            "INSERT INTO items (id, v, _cf_pos) SELECT %s, 'ghost', _cf_pos FROM items WHERE id = 2",
            (EXTRA,),
        )
        t.execute("UPDATE items SET v = 'planted' WHERE id = %s", (CHANGED,))
    # sync held back: the chunk pass finds the staged keys differing (S1 reads these states)
    procs["sync"].stop()
    stack.sql("DELETE FROM items WHERE id = %s", (GONE,))
    stack.sql("UPDATE items SET v = 'A' WHERE id = ANY(%s)", ([BACK, ABA],))
    staged: list[str] = []

    def fence_around_the_first_round() -> tuple[str, float]:
        if not staged:  # after round 1's S1: there and applied ...
            staged.append("there")
            stack.sql("INSERT INTO items VALUES (%s, 'late')", (GONE,))
            stack.sql("DELETE FROM items WHERE id = %s", (BACK,))
            stack.sql("UPDATE items SET v = 'B' WHERE id = %s", (ABA,))
        if not procs["sync"].alive():
            procs["sync"] = stack.start("sync")
        r = fence(settings, timeout=120, via="verify")
        if staged == ["there"]:  # ... and back right after the fence, not applied before T
            staged.append("back")
            procs["sync"].stop()
            stack.sql("DELETE FROM items WHERE id = %s", (GONE,))
            stack.sql("INSERT INTO items VALUES (%s, 'A')", (BACK,))
            stack.sql("UPDATE items SET v = 'A' WHERE id = %s", (ABA,))
        return r.token, r.seconds

    rep = Verifier(settings, fence=fence_around_the_first_round, chunk_rows=50, leaf_rows=10).run()
    assert staged == ["there", "back"], staged
    items = rep.tables[0]
    shown = json.dumps(items.as_dict(), default=str)
    assert (items.missing, items.extra, items.different, items.unsettled) == (1, 1, 1, 0), shown
    assert {(e["kind"], int(e["key"]["id"])) for e in items.examples} == {
        ("missing", MISSING),
        ("extra", EXTRA),
        ("different", CHANGED),
    }, shown
    assert items.in_flight >= 3, shown  # the staged keys: re-checked, then in flight
    # the way back reached the target: the staged rows were in flight indeed
    stack.fence()
    with stack.tgt() as t:
        rows = dict(t.execute("SELECT id, v FROM items WHERE id = ANY(%s)", ([GONE, BACK, ABA],)))
    assert rows == {BACK: "A", ABA: "A"}, rows
