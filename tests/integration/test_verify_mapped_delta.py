"""The verify inside the freeze compares mapped targets by the keys changed since the full verify.

test_audit's CRM (members mapped to ``crm.people`` with a filter and transforms, notes to
``crm.notes`` with a ``references`` rule to their member; without the deduplication, whose
targets are compared in full) and some thousands of bulk members with a note each, synced. A
full verify is the base. Then sync applies a few legacy changes, is stopped (a lost change), and
differences are planted after the base: a target row altered by hand, a legacy update sync never
applied, a member that left the filter while its note stayed in the target (the note itself
unchanged on both sides: only the closure of its changed parent finds it). The verify of the
changes must compare a small part of the tables and name exactly those. A legacy delete that
never reached the target leaves no ``xmin``: the counts catch it and the target is compared in
full, saying why.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from tests.conftest import Stack
from tests.integration.test_audit import MAPPING, seed

pytestmark = pytest.mark.integration

BULK = 3000
FIRST_BULK = 20_001


def _crm_without_dedup(stack: Stack) -> Any:
    seed(stack)
    stack.sql(
        "INSERT INTO public.members SELECT g, 'Bulk Person' || g, 'bulk' || g || '@example.com', "
        "'020 7946 ' || lpad((g % 10000)::text, 4, '0'), '1980-01-01', 'GB', true, '2024-01-01', "
        f"'2024-01-01 10:00' FROM generate_series({FIRST_BULK}, {FIRST_BULK + BULK - 1}) g;"
        "INSERT INTO public.notes SELECT g * 10, g, 'bulk note ' || g "
        f"FROM generate_series({FIRST_BULK}, {FIRST_BULK + BULK - 1}) g"
    )
    stack.write_config(["public.members", "public.notes"])
    cfg = yaml.safe_load(stack.config_path.read_text())
    mapping = copy.deepcopy(MAPPING)
    del mapping["dedup"]
    cfg["mapping"] = mapping
    stack.config_path.write_text(yaml.safe_dump(cfg))
    stack.start("capture")
    sync = stack.start("sync")
    stack.fence()
    return sync


def _examples(rep: Any, name: str) -> set[tuple[str, Any]]:
    t = next(t for t in rep.tables if t.name == name)
    return {(e["kind"], e["key"]["legacy_id"]) for e in t.examples}


def test_mapped_targets_are_verified_by_their_changes_inside_the_freeze(stack: Stack) -> None:
    from crossfade.verify.run import Verifier, delta_base

    sync = _crm_without_dedup(stack)
    settings = stack.settings
    full = Verifier(settings, fence_timeout=60)
    rep = full.run()
    full_seconds = rep.seconds
    assert rep.match, [t.as_dict() for t in rep.tables if not t.match]
    base = delta_base(full)
    assert base is not None

    a, b, c = FIRST_BULK + 1, FIRST_BULK + 2, FIRST_BULK + 3
    # applied by sync: ordinary changes since the full verify
    stack.sql(
        "UPDATE public.members SET dob = '1981-02-03' WHERE id BETWEEN %s AND %s",
        (FIRST_BULK + 100, FIRST_BULK + 119),
    )
    stack.sql("UPDATE public.notes SET body = 'edited' WHERE id = %s", ((FIRST_BULK + 200) * 10,))
    stack.fence()
    sync.stop()
    # the planted differences: by hand in the target; lost legacy changes (sync stopped)
    with stack.tgt() as t:
        t.execute("UPDATE crm.people SET full_name = 'Planted' WHERE legacy_id = %s", (a,))
    stack.sql("UPDATE public.members SET dob = '1999-09-09' WHERE id = %s", (b,))
    stack.sql(
        "UPDATE public.members SET active = false, last_seen = '2010-01-01' WHERE id = %s", (c,)
    )

    rep = Verifier(settings, fence_recheck=False, changed_since=base).run(record=False)
    people = next(t for t in rep.tables if t.name == "crm.people")
    notes = next(t for t in rep.tables if t.name == "crm.notes")
    assert people.mapped and people.mapped["compared"] == "changes since the full verify", people
    assert notes.mapped and notes.mapped["compared"] == "changes since the full verify", notes
    # a small part of the tables: the changed keys and what depends on them
    assert people.delta_keys is not None and 4 <= people.delta_keys < 100, people.as_dict()
    assert notes.delta_keys is not None and 1 <= notes.delta_keys < 100, notes.as_dict()
    assert people.target_rows > BULK and notes.target_rows > BULK
    assert (people.missing, people.extra, people.different) == (0, 1, 2), people.as_dict()
    assert _examples(rep, "crm.people") == {("different", a), ("different", b), ("extra", c)}
    # the note of the member that left: unchanged itself, found through its parent
    assert (notes.missing, notes.extra, notes.different) == (0, 1, 0), notes.as_dict()
    assert _examples(rep, "crm.notes") == {("extra", c * 10)}
    assert notes.error and "the mapping rejects are not dead letters" in notes.error, notes.error
    assert people.error and "filtered differently than sync recorded" in people.error
    print(
        f"delta: people {people.delta_keys} of {people.target_rows} rows, notes "
        f"{notes.delta_keys} of {notes.target_rows}, {rep.seconds:.2f} s (full: {full_seconds:.2f} s)"
    )

    # a legacy delete that never reached the target: no xmin, the counts send it to the full
    # compare, which names it
    stack.sql("DELETE FROM public.notes WHERE id = %s", ((FIRST_BULK + 500) * 10,))
    rep = Verifier(settings, fence_recheck=False, changed_since=base).run(record=False)
    notes = next(t for t in rep.tables if t.name == "crm.notes")
    assert notes.mapped and notes.mapped["compared"].startswith("in full: public.notes has"), (
        notes.mapped
    )
    assert notes.delta_keys is None
    people = next(t for t in rep.tables if t.name == "crm.people")
    assert people.mapped and people.mapped["compared"].startswith("in full: parent of crm.notes")
    assert ("extra", (FIRST_BULK + 500) * 10) in _examples(rep, "crm.notes"), notes.as_dict()


def test_a_cutover_verifies_mapped_targets_by_their_changes_and_names_a_planted_one(
    stack: Stack,
) -> None:
    """A real cutover on the mapped CRM: the full verify while writes may flow, then, inside the
    freeze, the verify of the changes; a note altered in the new database by the freeze command
    (between the two) is named, and the step says how each mapped target was compared."""
    import json
    import re
    import sys

    _crm_without_dedup(stack)
    note = (FIRST_BULK + 7) * 10
    plant = (
        "import psycopg\n"
        f"with psycopg.connect({stack.target_dsn!r}, autocommit=True) as c:\n"
        f"    c.execute(\"UPDATE crm.notes SET body = 'planted' WHERE legacy_id = {note}\")\n"
    )
    raw = yaml.safe_load(stack.config_path.read_text())
    raw["cutover"] = {
        "freeze_sql": "SELECT 1",
        "unfreeze_sql": "SELECT 1",
        "freeze_command": [sys.executable, "-c", plant],
        "fence_timeout_s": 60,
    }
    stack.config_path.write_text(yaml.safe_dump(raw))
    ack = stack.cli("dlq", "ack", "--note", "test: the CRM's known bad rows")
    assert ack.returncode == 0, ack.stderr
    r = stack.cli("cutover", "--json", timeout=300)
    rep = json.loads(r.stdout)
    assert not rep["go"], rep
    steps = {g["name"]: g for g in rep["gates"]}
    assert "verify_live" in steps and steps["verify_live"]["ok"], rep["gates"]
    detail = steps["verify"]["detail"]
    assert not steps["verify"]["ok"] and "crm.notes: 0 missing, 0 extra, 1 different" in detail
    assert "mapped targets: crm.people by 0 changed key(s) of" in detail, detail
    # the planted note and the few the ledger wrote since (deferred orphans retried)
    n = re.search(r"crm\.notes by (\d+) changed key\(s\) of (\d+) rows", detail)
    assert n and 1 <= int(n[1]) < 20 and int(n[2]) > BULK, detail
