"""The delta of mapped targets (crossfade.verify.mapped_delta) without a database: which targets
it can compute, which go to the full compare and why, and the closure of the affected keys
(children of a changed parent, parents read on demand for the ``references`` rules), and the
rows the target refused (dead letters of rule ``target``: rejected, as the full verify counts
them)."""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any

import pytest

from crossfade.config.mapping import MappingConfig
from crossfade.mapping.engine import Mapped, Mapper, Rejected
from crossfade.verify import mapped_delta
from crossfade.verify.delta_plan import plain_column, spread, target_of, why_full
from crossfade.verify.mapped_delta import Delta

CRM: dict[str, Any] = {
    "tables": {
        "public.members": {
            "filters": [{"name": "inactive", "when": [{"column": "active", "eq": False}]}],
            "targets": [
                {
                    "table": "crm.people",
                    "columns": {
                        "legacy_id": "id",
                        "full_name": {"from": "full_name", "transforms": ["name"]},
                    },
                }
            ],
        },
        "public.notes": {
            "targets": [
                {
                    "table": "crm.notes",
                    "columns": {"legacy_id": "id", "person_id": "member_id", "body": "body"},
                    "rules": {"person_id": {"references": "crm.people.legacy_id"}},
                }
            ]
        },
    }
}
KEYS = {"public.members": ["id"], "public.notes": ["id"]}


def _mapper(cfg: dict[str, Any]) -> Mapper:
    return Mapper(MappingConfig.model_validate(cfg), list(KEYS), KEYS)


def test_plain_mapped_targets_and_their_children_are_computed_by_delta() -> None:
    m = _mapper(CRM)
    assert why_full(m, "crm.people") is None
    assert why_full(m, "crm.notes") is None
    assert plain_column(target_of(m, "public.notes", "crm.notes"), "person_id") == "member_id"
    assert plain_column(target_of(m, "public.members", "crm.people"), "full_name") is None


@pytest.mark.parametrize(
    ("change", "target", "why"),
    [
        (
            lambda c: c["tables"]["public.members"]["targets"][0]["columns"].update(
                legacy_id={"from": "id", "transforms": ["trim"]}
            ),
            "crm.people",
            "no target key known from public.members",
        ),
        (
            lambda c: c["tables"]["public.notes"]["targets"][0]["rules"].update(
                person_id={
                    "references": {
                        "table": "crm.people",
                        "column": "legacy_id",
                        "on_parent_left": "keep",
                    }
                }
            ),
            "crm.notes",
            "on_parent_left: keep",
        ),
        (
            lambda c: c["tables"]["public.notes"]["targets"][0]["columns"].update(
                person_id={"from": "member_id", "default": 0}
            ),
            "crm.notes",
            "reference column person_id is computed",
        ),
        (
            lambda c: (
                c["tables"]["public.members"]["targets"][0]["columns"].update(
                    legacy_id="id", code="full_name"
                )
                or c["tables"]["public.notes"]["targets"][0]["rules"].update(
                    person_id={"references": "crm.people.code"}
                )
            ),
            "crm.notes",
            "refers to crm.people.code, not its key",
        ),
    ],
)
def test_what_the_delta_cannot_compute_goes_to_the_full_compare(
    change: Any, target: str, why: str
) -> None:
    cfg = copy.deepcopy(CRM)
    change(cfg)
    got = why_full(_mapper(cfg), target)
    assert got is not None and why in got, got


def test_a_full_target_takes_its_parents_and_children_along() -> None:
    m = _mapper(CRM)
    targets = ["crm.people", "crm.notes"]
    assert spread(m, targets, {"crm.notes": "counts"})["crm.people"].startswith(
        "parent of crm.notes"
    )
    assert spread(m, targets, {"crm.people": "counts"})["crm.notes"].startswith(
        "child of crm.people"
    )
    assert spread(m, targets, {}) == {}


class _Memory(Delta):
    """The delta over legacy rows in memory and a target holding nothing."""

    def __init__(self, mapper: Mapper, legacy: dict[str, list[dict[str, Any]]]) -> None:
        settings: Any = SimpleNamespace(sync=SimpleNamespace(bookkeeping_schema="crossfade"))
        super().__init__(settings, mapper, None, None, ["crm.people", "crm.notes"])
        self.legacy = legacy
        self.refused = {s: set() for s in legacy}  # no dead letters of rule target
        self.lookups: list[tuple[str, tuple[str, ...]]] = []

    def lookup(
        self, source: str, cols: tuple[str, ...], values: list[tuple[Any, ...]]
    ) -> list[dict[str, Any]]:
        self.lookups.append((source, cols))
        want = {tuple(str(v) for v in vs) for vs in values}
        return [r for r in self.legacy[source] if tuple(str(r[c]) for c in cols) in want]

    def held(self, t: str, col: str, keys: list[tuple[Any, ...]]) -> list[Any]:
        return []


def test_a_changed_parent_brings_its_unchanged_children_and_a_child_reads_its_parent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mapped_delta, "children_of_values", lambda *_a: [])
    legacy = {
        "public.members": [
            {"id": 1, "full_name": "ann lee", "active": True},
            {"id": 2, "full_name": "bob day", "active": False},  # filtered: its note has no parent
            {"id": 3, "full_name": "cy po", "active": True},
        ],
        "public.notes": [
            {"id": 10, "member_id": 1, "body": "a"},
            {"id": 20, "member_id": 2, "body": "b"},
            {"id": 30, "member_id": 3, "body": "c"},
        ],
    }
    d = _Memory(_mapper(CRM), legacy)
    d.add_row("public.members", legacy["public.members"][1])  # member 2 changed since
    d.add_key("crm.notes", (30,))  # note 30 written in the target since
    d.close({"crm.people": 100, "crm.notes": 100})
    assert not d.unsafe, d.unsafe
    assert set(d.affected["crm.people"]) == {("2",)}
    # note 20 is unchanged itself: only its parent's change makes it affected
    assert set(d.affected["crm.notes"]) == {("20",), ("30",)}
    assert isinstance(d.outcomes[("public.notes", "[20]")], Rejected)
    # note 30's parent was read (and mapped) to answer its references rule, not compared
    assert isinstance(d.outcomes[("public.notes", "[30]")], Mapped)
    assert ("public.members", ("id",)) in d.lookups
    assert "[3]" not in d.rows["public.members"]


def test_a_closure_past_its_limit_goes_to_the_full_compare(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mapped_delta, "children_of_values", lambda *_a: [])
    legacy = {
        "public.members": [{"id": i, "full_name": "x y", "active": True} for i in range(5)],
        "public.notes": [],
    }
    d = _Memory(_mapper(CRM), legacy)
    for r in legacy["public.members"]:
        d.add_row("public.members", r)
    d.close({"crm.people": 3, "crm.notes": 3})
    assert d.unsafe == {"crm.people": "more than 3 keys changed"}


def test_the_parents_of_many_changed_children_are_read_in_one_lookup(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mapped_delta, "children_of_values", lambda *_a: [])
    legacy = {
        "public.members": [{"id": i, "full_name": "x y", "active": i != 2} for i in range(1, 6)],
        "public.notes": [{"id": i * 10, "member_id": i, "body": "n"} for i in range(1, 7)],
    }
    d = _Memory(_mapper(CRM), legacy)
    d.add_rows("public.notes", legacy["public.notes"])
    assert d.lookups.count(("public.members", ("id",))) == 1, d.lookups
    got = {e: type(d.outcomes[("public.notes", e)]) for e in d.rows["public.notes"]}
    # member 2 is filtered and member 6 does not exist: their notes are rejected
    assert got == {
        "[10]": Mapped,
        "[20]": Rejected,
        "[30]": Mapped,
        "[40]": Mapped,
        "[50]": Mapped,
        "[60]": Rejected,
    }


def test_a_row_the_target_refused_is_rejected_and_its_child_with_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A row the mapping passes but the target refused (sync.refused) is a dead letter, as the
    full verify counts it: not expected in the target, and no parent to its children. The
    ledger's dead letters of rule ``target`` are read once per legacy table, not per row."""
    monkeypatch.setattr(mapped_delta, "children_of_values", lambda *_a: [])
    reads: list[tuple[str, str]] = []

    def dead_letters_of_rule(_conn: Any, _schema: str, source: str, rule: str) -> set[str]:
        reads.append((source, rule))
        return {"[3]"} if source == "public.members" else set()

    monkeypatch.setattr(mapped_delta, "dead_letters_of_rule", dead_letters_of_rule, raising=False)
    legacy = {
        "public.members": [{"id": i, "full_name": "x y", "active": True} for i in (1, 3, 4)],
        "public.notes": [
            {"id": 10, "member_id": 1, "body": "a"},
            {"id": 30, "member_id": 3, "body": "c"},
            {"id": 31, "member_id": 3, "body": "d"},
        ],
    }
    d = _Memory(_mapper(CRM), legacy)
    d.refused.clear()  # read through the ledger (faked above)
    d.add_rows("public.members", legacy["public.members"])
    d.add_rows("public.notes", legacy["public.notes"])
    got = d.outcomes[("public.members", "[3]")]
    assert isinstance(got, Rejected) and got.rule == "target", got
    assert isinstance(d.outcomes[("public.members", "[1]")], Mapped)
    assert isinstance(d.outcomes[("public.members", "[4]")], Mapped)
    # its notes: their parent is not in the target (the full verify's key sets lack it too)
    assert isinstance(d.outcomes[("public.notes", "[30]")], Rejected)
    assert isinstance(d.outcomes[("public.notes", "[31]")], Rejected)
    assert isinstance(d.outcomes[("public.notes", "[10]")], Mapped)
    assert ("3",) in d.affected["crm.people"]
    assert {v["legacy_id"] for v in d.expected_values("crm.people")} == {1, 4}
    assert {v["legacy_id"] for v in d.expected_values("crm.notes")} == {10}
    assert sorted(reads) == [("public.members", "target"), ("public.notes", "target")], reads


def test_the_accounts_of_a_delta_are_partial_and_close_by_the_ledgers_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A verify of the changes accounts for the entries involved only, so its legacy count is
    checked against the rows sync's ledger accounts for (the delta's count check), not against
    those few entries: with nothing wrong the account closes (it said ``closes: false`` before,
    legacy's 6 rows against 2 entries); a lost delete (the ledger holds a row legacy lost) or an
    entry whose outcome disagrees does not, and says so."""
    monkeypatch.setattr(mapped_delta, "children_of_values", lambda *_a: [])
    recorded = {"[1]": (6, "mapped", None), "[2]": (7, "filtered", "inactive")}
    monkeypatch.setattr(
        mapped_delta, "ledger_positions", lambda _c, _s, _t, es: {e: recorded[e] for e in es}
    )
    members = [{"id": i, "full_name": "x y", "active": i != 2} for i in range(1, 7)]
    d = _Memory(_mapper(CRM), {"public.members": members, "public.notes": []})
    monkeypatch.setattr(d, "count", lambda _conn, table: len(d.legacy[table]))
    d.add_rows("public.members", members[:2])  # members 1 and 2 changed since the full verify

    accounted = {"public.members": {"mapped": 5, "filtered": 1}}
    acc = d.accounts(["public.members"], accounted)["public.members"]
    assert (acc.mapped, acc.filtered, acc.ledger_filtered) == (1, {"[2]"}, {"[2]"})
    assert acc.closes and acc.problem() is None, acc
    shown = acc.as_dict()
    assert shown["closes"] and shown["partial"], shown
    assert (shown["source_rows"], shown["accounted"]) == (6, 6), shown

    lost = {"public.members": {"mapped": 6, "filtered": 1}}  # a delete sync never applied
    acc = d.accounts(["public.members"], lost)["public.members"]
    assert not acc.closes and acc.as_dict()["closes"] is False
    assert acc.problem() == "public.members: 6 legacy rows, 7 accounted for", acc.problem()

    recorded["[2]"] = (7, "mapped", None)  # sync mapped the row the mapping filters now
    acc = d.accounts(["public.members"], accounted)["public.members"]
    assert not acc.closes and "filtered rows differ" in (acc.problem() or "")
