"""Children and their parents in the live sync, whatever the order (FAULTS 38 and 39).

Changes of different tables travel in different topics, so sync sees a child and its parent in
no particular order; and a parent's fate (merged into a golden record, handed to another
survivor, deleted, dead-lettered, filtered) reaches sync after its children were written. Each
test ends with ``crossfade verify`` (the pure mapping of the legacy rows, children pointed at
survivors) equal to the target, and the accounting of ``crossfade dlq list`` closing.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any

import pytest

from tests.conftest import Proc, Stack, wait_for
from tests.integration.fault_harness import HOOKS_DIR
from tests.integration.test_audit import LEGACY_DDL, MAPPING, TARGET_DDL

pytestmark = pytest.mark.integration


def _configure(stack: Stack, mapping: dict[str, Any], tables: list[str] | None = None) -> None:
    stack.write_config(tables or ["public.members", "public.notes"], mapping=mapping)


def _ledger(stack: Stack, table: str) -> dict[int, tuple[str, str | None, str | None]]:
    """source key -> (outcome, rule, reason)."""
    with stack.tgt() as c:
        return {
            k[0]: (o, r, why)
            for k, o, r, why in c.execute(
                "SELECT source_key, outcome, rule, reason FROM crossfade.ledger WHERE source_table = %s",
                (table,),
            )
        }


def _parents(stack: Stack, table: str = "crm.notes") -> dict[int, int]:
    with stack.tgt() as c:
        return dict(c.execute(f"SELECT legacy_id, person_id FROM {table}").fetchall())


def _verify(stack: Stack) -> dict[str, Any]:
    r = stack.cli("verify", "--json", timeout=300)
    rep = json.loads(r.stdout) if r.stdout.strip() else {}
    assert r.returncode == 0 and rep.get("match"), r.stdout[-4000:] + r.stderr[-2000:]
    for t in rep["tables"]:
        assert all(a["closes"] for a in t["mapping"]["accounting"]), t
    return rep


def _dlq_list(stack: Stack) -> dict[str, Any]:
    r = stack.cli("dlq", "list", "--json")
    assert r.returncode in (0, 1), r.stderr
    out = json.loads(r.stdout)
    assert out["accounting_closes"], out["accounting"]
    return out


def _member(mid: int, email: str | None, updated: str, name: str = "") -> str:
    return (
        f"INSERT INTO public.members VALUES ({mid}, '{name or f'Person {mid}'}', "
        f"{'NULL' if email is None else repr(email)}, NULL, '1980-01-01', 'GB', true, '2023-06-01', '{updated}')"
    )


def test_fault_38_child_committed_with_its_parent_but_seen_first_waits_for_it(stack: Stack) -> None:
    """FAULTS 38: a member and its notes committed in one transaction; the notes' topic is
    consumed while the members' topic is held back (as when the worker holding its partitions
    lags). The notes wait for the default window (their rule sets none): deferred, never a dead
    letter; they apply in the very transaction that applies their member."""
    with stack.src() as c:
        c.execute(LEGACY_DDL)
    with stack.tgt() as c:
        c.execute(TARGET_DDL)
    mapping = copy.deepcopy(MAPPING)
    mapping.pop("dedup")  # `references: crm.people.legacy_id`: no window_s of its own
    _configure(stack, mapping)
    stack.start("capture")
    release = stack.dir / "release-members"
    env = stack._env()
    env.update(
        CF_HOLD_TOPIC=".public.members",
        CF_HOLD_RELEASE=str(release),
        PYTHONPATH=os.pathsep.join([str(HOOKS_DIR), *filter(None, [env.get("PYTHONPATH")])]),
    )
    sync = Proc("sync", ["sync"], env, stack.dir / "sync.log")
    stack.procs.append(sync)
    wait_for(lambda: "HOLD paused" in sync.tail(200), 120, "sync to hold the members' topic")

    with stack.src() as c, c.transaction():
        c.execute(_member(42, "pat@example.com", "2024-01-01 10:00"))
        c.execute("INSERT INTO public.notes VALUES (1, 42, 'one'), (2, 42, 'two')")
    stack.sql("INSERT INTO public.notes VALUES (3, 4242, 'a member that never comes')")
    wait_for(
        lambda: (
            {k for k, v in _ledger(stack, "public.notes").items() if v[0] == "deferred"}
            == {1, 2, 3}
        ),
        60,
        lambda: "the notes to be deferred" + stack._diag(),
    )
    assert _parents(stack) == {}
    assert not [v for v in _ledger(stack, "public.notes").values() if v[0] == "dead_letter"]

    release.touch()
    stack.fence()
    assert _parents(stack) == {1: 42, 2: 42}
    with stack.tgt() as c:  # one transaction: the same now() on the parent's and the children's row
        at = dict(
            c.execute(
                "SELECT source_table || source_key::text, at FROM crossfade.ledger "
                "WHERE source_key::text IN ('[42]', '[1]', '[2]')"
            ).fetchall()
        )
    assert at["public.notes[1]"] == at["public.notes[2]"] == at["public.members[42]"], at
    ledger = _ledger(stack, "public.notes")
    assert ledger[3][0] == "deferred" and ledger[1][0] == ledger[2][0] == "mapped"
    listing = _dlq_list(stack)
    assert listing["dead_letters"] == 0 and listing["deferred"] == 1
    _verify(stack)


def test_fault_39_children_follow_merges_handovers_and_departures(stack: Stack) -> None:
    """FAULTS 39: during the stream a duplicate arrives (and becomes the survivor), a child comes
    before the member it points at, a member moves to another group, survivors are deleted (with
    and without their children) or broken into a dead letter and fixed, a survivor hands over by
    recency alone. Every note ends pointing at its member's current survivor (or waits, or is a
    dead letter "parent left"), verify is equal and the accounting closes."""
    with stack.src() as c:
        c.execute(LEGACY_DDL)
        for mid, email, updated in [
            (1, "a@example.com", "2023-01-01"),  # A: 1, 2 (survivor 1: oldest)
            (2, " A@EXAMPLE.COM", "2023-02-01"),
            (3, "b@example.com", "2023-01-05"),  # B: 3
            (4, "c@example.com", "2023-01-03"),  # C: 4, 5
            (5, "c@example.com", "2023-01-04"),
            (6, "d@example.com", "2023-01-02"),  # D: 6, 7, 8
            (7, "D@example.com", "2023-01-06"),
            (8, "d@example.com", "2023-01-07"),
        ]:
            c.execute(_member(mid, email, updated))
        c.execute(
            "INSERT INTO public.notes VALUES (1, 2, 'n'), (2, 1, 'n'), (3, 3, 'n'), (4, 5, 'n'), "
            "(5, 4, 'n'), (6, 6, 'n'), (7, 7, 'n'), (8, 8, 'n')"
        )
    with stack.tgt() as c:
        c.execute(TARGET_DDL)
    _configure(stack, MAPPING)
    stack.start("capture")
    stack.start("sync")
    stack.fence()
    assert _parents(stack) == {1: 1, 2: 1, 3: 3, 4: 4, 5: 4, 6: 6, 7: 6, 8: 6}

    # one transaction each, no fence between: the stream interleaves them as it likes
    with stack.src() as c:
        with c.transaction():  # a duplicate of B, older: the new survivor, with its own note
            c.execute(_member(10, "B@Example.com", "2022-12-31"))
            c.execute("INSERT INTO public.notes VALUES (9, 10, 'n')")
        c.execute("INSERT INTO public.notes VALUES (10, 11, 'before its member')")
        c.execute(_member(11, " b@example.com", "2024-01-01"))  # another duplicate of B
        c.execute("UPDATE public.members SET email = 'a@example.com' WHERE id = 5")  # C -> A
        with c.transaction():  # D's survivor goes, with its note
            c.execute("DELETE FROM public.notes WHERE id = 6")
            c.execute("DELETE FROM public.members WHERE id = 6")
        c.execute("UPDATE public.members SET email = 'broken' WHERE id = 1")  # A's survivor
        c.execute("DELETE FROM public.members WHERE id = 10")  # B's survivor; its note stays
    stack.fence()
    # A = {2, 5} survivor 5; B = {3, 11} survivor 3; C = {4}; D = {7, 8} survivor 7
    assert _parents(stack) == {1: 5, 3: 3, 4: 5, 5: 4, 7: 7, 8: 7, 10: 3}
    notes = _ledger(stack, "public.notes")
    assert notes[2][0] == "dead_letter" and notes[2][1] == "crm.notes.person_id:references"
    assert "parent left" in (notes[2][2] or "") and "dead letter" in (notes[2][2] or "")
    assert notes[9][0] == "deferred"  # its member was deleted: it waits out its window
    assert notes[6][0] == "deleted"
    _verify(stack)
    listing = _dlq_list(stack)
    assert {g["rule"] for g in listing["by_rule"]} == {
        "crm.people.email:transform:email",
        "crm.notes.person_id:references",
    }
    # a replay that changes nothing reports, for every record, the rule `dlq list` shows
    r = stack.cli("dlq", "replay", "--dry-run", "--json")
    rep = json.loads(r.stdout)
    assert rep["selected"] == 2 and rep["still_failing"] == 2, rep
    assert all(x["outcome"] == "dead_letter" and x["rule"] == x["was"] for x in rep["records"]), rep

    with stack.src() as c:
        c.execute("UPDATE public.members SET email = 'a@example.com' WHERE id = 1")  # fixed
        c.execute("UPDATE public.members SET updated_at = '2025-01-01' WHERE id = 7")  # D: 8 now
    stack.fence()
    assert _parents(stack) == {1: 1, 2: 1, 3: 3, 4: 1, 5: 4, 7: 8, 8: 8, 10: 3}
    assert _ledger(stack, "public.notes")[2][0] == "mapped"
    _verify(stack)
    assert _dlq_list(stack)["dead_letters"] == 0


TASKS_LEGACY = "CREATE TABLE public.tasks (id int PRIMARY KEY, member_id int, title text)"
TASKS_TARGET = "CREATE TABLE crm.tasks (legacy_id int PRIMARY KEY, person_id int, title text)"


def test_parent_left_policies_delete_and_keep_close_the_accounting(stack: Stack) -> None:
    """``on_parent_left: delete`` takes a migrated child out with its parent (not a dead letter),
    ``keep`` leaves it; both come back or stay when the parent returns; verify and the
    accounting agree with sync at every step."""
    with stack.src() as c:
        c.execute(LEGACY_DDL)
        c.execute(TASKS_LEGACY)
        c.execute(_member(1, "a@example.com", "2023-01-01"))
        c.execute(_member(2, "b@example.com", "2023-01-01"))
        c.execute("INSERT INTO public.notes VALUES (1, 1, 'n1'), (2, 2, 'n2')")
        c.execute("INSERT INTO public.tasks VALUES (1, 1, 't1'), (2, 2, 't2')")
    with stack.tgt() as c:
        c.execute(TARGET_DDL)
        c.execute(TASKS_TARGET)
    mapping = copy.deepcopy(MAPPING)
    mapping.pop("dedup")
    mapping["defaults"]["on_parent_left"] = "delete"  # the notes' rule takes the default
    mapping["tables"]["public.tasks"] = {
        "targets": [
            {
                "table": "crm.tasks",
                "columns": {"legacy_id": "id", "person_id": "member_id", "title": "title"},
                "rules": {
                    "person_id": {
                        "references": {
                            "table": "crm.people",
                            "column": "legacy_id",
                            "on_parent_left": "keep",
                        }
                    }
                },
            }
        ]
    }
    _configure(stack, mapping, ["public.members", "public.notes", "public.tasks"])
    stack.start("capture")
    stack.start("sync")
    stack.fence()
    assert _parents(stack) == {1: 1, 2: 2} and _parents(stack, "crm.tasks") == {1: 1, 2: 2}, (
        _ledger(stack, "public.notes"),
        _ledger(stack, "public.members"),
        stack._diag(),
    )

    # member 1 is filtered now, member 2 broken into a dead letter
    stack.sql("UPDATE public.members SET active = false, last_seen = '2010-01-01' WHERE id = 1")
    stack.sql("UPDATE public.members SET email = NULL WHERE id = 2")
    stack.sql("UPDATE public.tasks SET title = 't2 changed' WHERE id = 2")  # kept: still applies
    stack.fence()
    assert _parents(stack) == {}
    assert _parents(stack, "crm.tasks") == {1: 1, 2: 2}
    with stack.tgt() as c:
        assert c.execute("SELECT title FROM crm.tasks WHERE legacy_id = 2").fetchone() == (
            "t2 changed",
        )
    notes = _ledger(stack, "public.notes")
    assert {k: v[0] for k, v in notes.items()} == {1: "parent_left", 2: "parent_left"}, notes
    assert "parent left" in (notes[1][2] or "") and "filtered" in (notes[1][2] or "")
    listing = _dlq_list(stack)
    acc = {a["table"]: a for a in listing["accounting"]}
    assert acc["public.notes"]["parent_left"] == 2 and acc["public.notes"]["dead_lettered"] == 0
    assert {g["rule"] for g in listing["by_rule"]} == {"crm.people.email:required"}
    _verify(stack)

    stack.sql("UPDATE public.members SET active = true WHERE id = 1")
    stack.sql("UPDATE public.members SET email = 'b@example.com' WHERE id = 2")
    stack.fence()
    assert _parents(stack) == {1: 1, 2: 2} and _parents(stack, "crm.tasks") == {1: 1, 2: 2}
    assert _dlq_list(stack)["dead_letters"] == 0
    _verify(stack)
    # parents removed without a change of their own (a TRUNCATE): their children are looked at too
    stack.sql("TRUNCATE public.members")
    stack.fence()
    assert _parents(stack) == {} and _parents(stack, "crm.tasks") == {1: 1, 2: 2}
    assert {k: v[0] for k, v in _ledger(stack, "public.notes").items()} == {
        1: "deferred",
        2: "deferred",
    }
    _dlq_list(stack)
    _verify(stack)
