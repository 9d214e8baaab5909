"""verify's pure parts (crossfade.verify.report): how two sides differ, how a value is shown, when a
table matches, and the report of a mapped target built from what the re-check decided."""

from __future__ import annotations

from datetime import UTC, datetime

from crossfade.verify.mapped import MappedRun, SourceAccount, TargetResult
from crossfade.verify.report import (
    VALUE_CHARS,
    MappedCheck,
    TableReport,
    VerifyReport,
    clip,
    difference_kind,
    judge_keys,
    mapped_report,
    recorded_outcome,
    shown,
)


def test_difference_kind_names_the_side_that_lacks_the_row() -> None:
    assert difference_kind("a", "a") is None
    assert difference_kind(None, None) is None
    assert difference_kind("a", None) == "missing"
    assert difference_kind(None, "b") == "extra"
    assert difference_kind("a", "b") == "different"


def test_long_values_are_clipped_with_their_length_and_scalars_kept() -> None:
    assert clip(None) is None
    assert clip("x" * VALUE_CHARS) == "x" * VALUE_CHARS
    long = "y" * (VALUE_CHARS + 5)
    assert clip(long) == "y" * VALUE_CHARS + f"... ({VALUE_CHARS + 5} chars)"
    assert shown(7) == 7 and shown(None) is None and shown(True) is True
    assert shown(datetime(2020, 1, 2, tzinfo=UTC)) == "2020-01-02 00:00:00+00:00"


def test_a_table_matches_only_without_errors_and_after_a_complete_repair() -> None:
    assert TableReport("a.b").match
    assert not TableReport("a.b", unsettled=1).match  # still changing: never a pass
    assert not TableReport("a.b", error="boom").match
    repaired = TableReport("a.b", different=3, repair={"remaining": 0})
    assert repaired.match and not TableReport("a.b", repair={"remaining": 1}).match
    assert not TableReport("a.b", repair={"remaining": 0}, unchecked=2).match
    run = VerifyReport([TableReport("a.b"), TableReport("a.c", missing=1)], datetime.now(UTC))
    assert not run.match and run.as_dict()["tables"][1]["missing"] == 1


def test_mapped_report_counts_confirmed_keys_and_names_ledger_disagreements() -> None:
    target = TargetResult(
        "crm.people", ["public.contacts"], expected_rows=10, target_rows=9, key=("id",)
    )
    target.cols = ["id", "email"]
    target.differing = {(1,): "different", (2,): "missing", (3,): "different"}
    target.n_different, target.n_missing, target.n_extra = 3, 1, 0  # one past MAX_KEYS
    account = SourceAccount("public.contacts", source_rows=10, ledger_dead={"k9"})
    first = MappedRun({"crm.people": target}, {"public.contacts": account}, seconds=1.5)
    check = MappedCheck(first)
    check.confirmed = {"crm.people": {(1,): "different", (2,): "missing"}}
    check.in_flight = {"crm.people": 1}  # key 3 was in flight
    check.rows[("crm.people", (1,))] = ((1, "a@x.org"), (1, "A@x.org"))
    check.entries = {"public.contacts": {"k9": ("mapped", recorded_outcome(account, "k9"))}}

    tr = mapped_report("crm.people", first, check)

    assert (tr.different, tr.missing, tr.extra, tr.unsettled) == (2, 1, 0, 0)
    assert tr.unchecked == 1 and tr.in_flight == 1 and tr.candidates == 3
    assert tr.examples[0] == {
        "key": {"id": 1},
        "kind": "different",
        "columns": {"email": {"source": "a@x.org", "target": "A@x.org"}},
    }
    assert tr.error == (
        "public.contacts: 1 dead letter(s) map now (e.g. ['k9']): run `crossfade dlq replay`"
    )
    assert not tr.match and tr.mapped is not None and tr.mapped["expected_rows"] == 10


def test_a_mapped_rows_verdict_waits_when_the_target_row_is_newer_than_e1s_snapshot() -> None:
    """A re-check round (judge_keys) with E1 == E2: a target row written by
    a change E1's snapshot did not see (its position above ``since``) may be a state the legacy
    passed through between the two snapshots (absent, inserted, deleted after the fence), so it
    waits for the next round; a row older than E1, or one sync never wrote (no position), is a
    real difference; a row equal to E2 is in flight whatever its position."""
    first = MappedRun({}, {}, seconds=0.0)
    check = MappedCheck(first)
    note = ("n", 7)
    pending = {(1,), (2,), (3,), (4,)}
    exp = {(1,): None, (2,): None, (3,): None, (4,): note}
    now = {(4,): note}  # E2: (1,)..(3,) absent still
    seen = {(1,): note, (2,): note, (3,): note, (4,): note}
    written = {(1,): 150, (2,): 90, (4,): 150}  # (3,): planted, no position
    judge_keys(check, "crm.notes", pending, exp, now, seen, written, 100)

    assert pending == {(1,)}  # inserted after E1's snapshot: undecided
    assert check.confirmed == {"crm.notes": {(2,): "extra", (3,): "extra"}}
    assert check.in_flight == {"crm.notes": 1}
    assert check.rows[("crm.notes", (2,))] == (None, note)
