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
    judge_identity,
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


def test_an_identity_keys_verdict_needs_the_same_legacy_row_version_or_a_target_row_seen_before() -> (
    None
):
    """A re-check round of an identity table (judge_identity): equal content at both legacy
    reads decides only with equal versions (xmin): A -> B -> A, or deleted and re-inserted, wait.
    A key the legacy lacks twice while the target holds a row sync wrote waits until the target
    is seen holding that very row (same position) in the next round; a row sync never wrote (no
    position) is an extra at once."""
    pending = dict.fromkeys([(k,) for k in range(1, 8)], "x")
    s1 = {(1,): "h1 10", (2,): "h2 20", (3,): "h3 30", (5,): "h5 50", (7,): "h7 70"}
    s2 = {(1,): "h1 11", (2,): "h2 20", (3,): "h3 30", (5,): "h5 50", (7,): "h7 70"}
    tg = {
        (1,): "hB 9",  # A -> B -> A in the legacy: a new tuple, undecided
        (2,): "hX 9",  # same tuple both times: really different
        (4,): "h4 900",  # absent in the legacy twice, sync wrote it: seen once, undecided
        (5,): "h5 55",  # equal: in flight
        (6,): "h6 ",  # absent in the legacy, no position: a real extra
        (7,): "h7 70",
    }  # (3,): the target lacks an unchanged legacy row: missing
    seen: dict = {}
    still, confirmed, in_flight = judge_identity(pending, s1, tg, s2, seen)
    assert still == {(1,): "x", (4,): "x"}
    assert confirmed == {(2,): "different", (3,): "missing", (6,): "extra"}
    assert in_flight == 2 and seen == {(4,): "900"}

    # the next round: (4,) still there at the same position after the legacy lacked it: extra;
    # at another position it would have been written again meanwhile: undecided still
    s1 = s2 = {(1,): "h1 11"}
    still, confirmed, in_flight = judge_identity(
        still, s1, {(1,): "h1 9", (4,): "h4 900"}, s2, seen
    )
    assert (still, confirmed, in_flight) == ({}, {(4,): "extra"}, 1)
    seen = {(4,): "900"}
    still, confirmed, _ = judge_identity({(4,): "x"}, {}, {(4,): "h4 901"}, {}, seen)
    assert (still, confirmed, seen) == ({(4,): "x"}, {}, {(4,): "901"})
